"""Bulk copy into a file mapping: ``m[a:b] = src`` and ``m.write`` against
libc memmove on the same pages called from this process (ctypes, the judged
anchor: same pages, same call overhead class), a stdlib mmap slice store,
and bench/memcpy.c (C in another process, no call overhead at all).

Every contender, and the C anchor, is timed once per repeat, round-robin,
each repeat starting with the next contender (the first one after a size
change meets cold caches); the best of the repeats is kept.
"""
import ctypes
import json
import mmap
import os
import subprocess
import time

import pymmapdev

from . import env
from .stats import calibrate

NAME = "copy"
SIZES = {"4k": 4096, "64k": 65536, "1m": 1 << 20, "16m": 16 << 20}
LABELS = {"pymmapdev_slice": "pymmapdev m[a:b] = src", "pymmapdev_write": "pymmapdev m.write",
          "memmove": "libc memmove (ctypes)", "stdlib_mmap": "stdlib mmap mm[a:b] = src",
          "c_memcpy": "C memcpy (bench/memcpy.c)"}
OFF = 8 << 20


def run(figs, cfg):
    exe = env.build_c("memcpy")
    repeat = max(3, cfg.trials + 2)
    path = env.scratch_path("copy")
    m = pymmapdev.open_file(path, OFF + max(SIZES.values()))
    with open(path, "r+b") as f:
        mm = mmap.mmap(f.fileno(), m.size)
    anchor = ctypes.c_char.from_buffer(m)
    dst = ctypes.addressof(anchor)
    kinds, srcs = {}, {}
    for tag, n in SIZES.items():
        src = srcs[tag] = bytearray(os.urandom(n))
        src_addr = ctypes.addressof(ctypes.c_char.from_buffer(src))
        fns = {
            "pymmapdev_slice": lambda n=n, src=src: m.__setitem__(slice(OFF, OFF + n), src),
            "pymmapdev_write": lambda src=src: m.write(OFF, src),
            "memmove": lambda n=n, a=src_addr: ctypes.memmove(dst + OFF, a, n),
            "stdlib_mmap": lambda n=n, src=src: mm.__setitem__(slice(OFF, OFF + n), src),
        }
        kinds[tag] = {k: (fn, max(1, int(calibrate(fn) * min(1.0, cfg.scale * 4))))
                      for k, fn in fns.items()}
    best = {tag: {} for tag in SIZES}
    c_path = env.scratch_path("memcpy")
    c_error = None if exe else "no C compiler: bench/memcpy.c not built"
    try:
        for r in range(repeat):
            for tag, n in SIZES.items():
                # rotate who goes first: the first contender after a size
                # change finds its pages evicted by the previous size's copy
                contenders = list(kinds[tag].items())
                r_first = r % len(contenders)
                for k, (fn, loops) in contenders[r_first:] + contenders[:r_first]:
                    t0 = time.perf_counter()
                    for _ in range(loops):
                        fn()
                    rate = n * loops / (time.perf_counter() - t0)
                    best[tag][k] = max(best[tag].get(k, 0), rate)
            if exe and not c_error:
                try:
                    out = subprocess.run([exe, c_path, "1", *map(str, SIZES.values())],
                                         check=True, capture_output=True, text=True,
                                         timeout=cfg.timeout).stdout
                except (OSError, subprocess.SubprocessError) as exc:
                    c_error = exc
                    continue
                by_size = {int(k): v for k, v in json.loads(out).items()}
                for tag, n in SIZES.items():
                    best[tag]["c_memcpy"] = max(best[tag].get("c_memcpy", 0), by_size[n])
        # the last copy made was of the largest source: it must be there
        last = list(SIZES)[-1]
        assert bytes(m[OFF:OFF + 16]) == bytes(srcs[last][:16]), "copy did not land"
    finally:
        del anchor, kinds, srcs
        mm.close()
        m.close()
        os.unlink(path)
    for tag, n in SIZES.items():
        keys = []
        for k, label in LABELS.items():
            key = f"{NAME}.{tag}.{k}"
            keys.append(key)
            if k in best[tag]:
                figs.put(key, best[tag][k] / 1e9, "GB/s", label)
            else:
                figs.missing(key, c_error, "GB/s", label)
        figs.group(f"copy {n // 1024} KiB into the mapping (GB/s, higher is better)", "GB/s",
                   keys)
