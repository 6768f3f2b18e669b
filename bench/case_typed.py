"""Typed access: read_u32/write_u32 against the fastest stdlib idioms on a stdlib mmap.

The judged anchor is a *precompiled* ``struct.Struct("I")``'s bound
``unpack_from``/``pack_into`` (issue 8: the fastest struct idiom; the tuple
it returns is not even unpacked).  ``unpack_from(...)[0]`` (what a caller
needs to get the int) and a ``memoryview.cast("I")`` index are shown beside it.
"""
import mmap
import os
import struct

import pymmapdev

from . import env
from .stats import best_per_op

NAME = "typed"


def run(figs, cfg):
    path = env.scratch_path("typed")
    m = pymmapdev.open_file(path, 4096)
    try:
        with open(path, "r+b") as f:
            mm = mmap.mmap(f.fileno(), 4096)
        words = memoryview(mm).cast("I")
        s = struct.Struct("I")
        g = {"r": m.read_u32, "w": m.write_u32, "ld": m.load_u32, "st": m.store_u32,
             "u": s.unpack_from, "p": s.pack_into, "mm": mm, "words": words}
        res = best_per_op({
            "read_u32": "r(8)",
            "struct_unpack_from": "u(mm, 8)",
            "struct_unpack_from_0": "u(mm, 8)[0]",
            "memoryview_cast": "words[2]",
            "write_u32": "w(8, 12345)",
            "struct_pack_into": "p(mm, 8, 12345)",
            "memoryview_cast_store": "words.__setitem__(2, 12345)",
            "load_u32": "ld(8)",
            "store_u32": "st(8, 12345)",
        }, g, cfg.n(200_000))
        words.release()
        mm.close()
    finally:
        m.close()
        os.unlink(path)
    labels = {
        "read_u32": "pymmapdev read_u32", "struct_unpack_from": "Struct('I').unpack_from",
        "struct_unpack_from_0": "Struct('I').unpack_from(...)[0]",
        "memoryview_cast": "memoryview.cast('I')[i]", "write_u32": "pymmapdev write_u32",
        "struct_pack_into": "Struct('I').pack_into",
        "memoryview_cast_store": "memoryview.cast('I')[i] = v",
        "load_u32": "pymmapdev load_u32 (atomic)", "store_u32": "pymmapdev store_u32 (atomic)",
    }
    for k, v in res.items():
        figs.put(f"{NAME}.{k}", v * 1e9, "ns", labels[k])
    figs.group("read a u32 (ns per call, lower is better)", "ns",
               [f"{NAME}.{k}" for k in ("read_u32", "load_u32", "struct_unpack_from",
                                        "struct_unpack_from_0", "memoryview_cast")])
    figs.group("write a u32 (ns per call, lower is better)", "ns",
               [f"{NAME}.{k}" for k in ("write_u32", "store_u32", "struct_pack_into",
                                        "memoryview_cast_store")])
