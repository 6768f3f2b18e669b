"""Slot: publish/read of a "latest value" in one process, against
multiprocessing.Lock + a slice copy, and a reader racing a writer in two
processes (on their own CPUs)."""
import os
import time

import pymmapdev

from . import env, procs
from .stats import best_per_op

NAME = "slot"
STARTED, STOPPED, SLOT = 0, 4, 64


def _writer(path, size, seconds):
    m = pymmapdev.open_file(path)
    slot = pymmapdev.Slot(m, SLOT, size)
    data, publish = bytes(size), slot.publish
    m.fetch_add_u32(STARTED, 1)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(1000):
            publish(data)
    m.store_u32(STOPPED, 1)
    m.close()


def _reader(path, size):
    m = pymmapdev.open_file(path)
    slot = pymmapdev.Slot(m, SLOT, size)
    while m.load_u32(STARTED) == 0:
        time.sleep(0.001)
    v0, reads, rd = slot.version, 0, slot.read
    t0 = time.perf_counter()
    while m.load_u32(STOPPED) == 0:
        for _ in range(100):
            rd()
        reads += 100
    elapsed = time.perf_counter() - t0
    published = slot.version - v0
    m.close()
    return reads / elapsed, published / elapsed


def run(figs, cfg):
    for size in (64, 4096):
        path = env.scratch_path("slot")
        m = pymmapdev.open_file(path, 1 << 16)
        try:
            slot = pymmapdev.Slot(m, SLOT, size)
            lock = procs.CTX.Lock()
            g = {"pub": slot.publish, "rd": slot.read, "data": bytes(size), "lk": lock, "m": m,
                 "lo": 8192, "hi": 8192 + size}
            res = best_per_op({
                "publish": "pub(data)", "read": "rd()",
                "lock_write": "with lk: m[lo:hi] = data",
                "lock_read": "with lk: bytes(m[lo:hi])",
            }, g, cfg.n(100_000))
            cpus = env.SPLIT or (None, None)
            try:
                (reads, pubs), _ = procs.run_sides(
                    [(_reader, (path, size), cpus[0]),
                     (_writer, (path, size, max(0.05, 0.5 * cfg.scale)), cpus[1])], cfg.timeout)
                racing = {"racing_read": reads, "racing_publish": pubs}
            except (procs.Hung, procs.SideFailed) as exc:
                racing = {"racing_read": exc, "racing_publish": exc}
        finally:
            m.close()
            os.unlink(path)
        labels = {"publish": "pymmapdev Slot.publish", "read": "pymmapdev Slot.read",
                  "lock_write": "multiprocessing.Lock + slice write",
                  "lock_read": "multiprocessing.Lock + slice read",
                  "racing_read": "pymmapdev Slot.read, racing a writer process",
                  "racing_publish": "pymmapdev Slot.publish, racing a reader process"}
        for k, v in res.items():
            if v > 0:
                figs.put(f"{NAME}.{size}.{k}", 1 / v, "/s", labels[k])
            else:
                figs.missing(f"{NAME}.{size}.{k}", "too fast to time at this scale", "/s",
                             labels[k])
        for k, v in racing.items():
            if isinstance(v, Exception):
                figs.missing(f"{NAME}.{size}.{k}", v, "/s", labels[k])
            else:
                figs.put(f"{NAME}.{size}.{k}", v, "/s", labels[k])
        figs.group(f"Slot, {size} B values (ops/s, higher is better)", "/s",
                   [f"{NAME}.{size}.{k}" for k in labels])
