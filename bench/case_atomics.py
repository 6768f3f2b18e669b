"""Atomics: fetch_add by two processes on one word, against multiprocessing.Value
with its lock and the ``atomics`` package on the same memory.

Median of the trials, not the best: whether the two processes really run at
once (contending for the cache line) or get time-sliced by other load swings
each contender in opposite directions.
"""
import os
import time

import pymmapdev

from . import competitors, env, procs
from .stats import median

NAME = "atomics"
READY, GO, WORD, ATOMICS_WORD = 0, 4, 64, 72


def _adder(kind, path, n, shared_value):
    m = pymmapdev.open_file(path)
    m.fetch_add_u32(READY, 1)
    while m.load_u32(GO) == 0:
        pass
    t0 = time.perf_counter()
    if kind == "pymmapdev":
        add = m.fetch_add_u64
        for _ in range(n):
            add(WORD, 1)
    elif kind == "mp_value_lock":
        lock = shared_value.get_lock()
        for _ in range(n):
            with lock:
                shared_value.value += 1
    else:
        import atomics
        with memoryview(m) as view:
            with atomics.atomicview(buffer=view[ATOMICS_WORD:ATOMICS_WORD + 8],
                                    atype=atomics.UINT) as a:
                add = a.fetch_add
                for _ in range(n):
                    add(1)
    elapsed = time.perf_counter() - t0
    m.close()
    return elapsed


def _starter(path):
    m = pymmapdev.open_file(path)
    deadline = time.monotonic() + 30
    while m.load_u32(READY) < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    m.store_u32(GO, 1)
    m.close()


def _trial(cfg, kind, n):
    path = env.scratch_path("atomics")
    m = pymmapdev.open_file(path, 4096)
    try:
        value = procs.CTX.Value("Q", 0, lock=True)
        cpus = env.SPLIT or (None, None)
        t1, t2, _ = procs.run_sides([(_adder, (kind, path, n, value), cpus[0]),
                                     (_adder, (kind, path, n, value), cpus[1]),
                                     (_starter, (path,), None)], cfg.timeout)
        total = {"pymmapdev": m.load_u64(WORD), "mp_value_lock": value.value,
                 "atomics": m.load_u64(ATOMICS_WORD)}[kind]
        if total != 2 * n:
            raise AssertionError(f"{kind}: {total} increments seen, {2 * n} made")
        return max(t1, t2)
    finally:
        m.close()
        os.unlink(path)


KINDS = {  # kind: (label, full op count per process, competitors needed)
    "pymmapdev": ("pymmapdev fetch_add_u64", 200_000, ()),
    "mp_value_lock": ("multiprocessing.Value + its lock", 50_000, ()),
    "atomics": ("atomics package fetch_add", 10_000, ("atomics",)),   # ~30 us per op
}


def run(figs, cfg):
    times = {k: [] for k, (_, _, needs) in KINDS.items() if not competitors.why_missing(needs)}
    errors = {}
    for _ in range(cfg.trials):
        for kind in list(times):
            try:
                times[kind].append(_trial(cfg, kind, cfg.n(KINDS[kind][1])))
            except (procs.Hung, procs.SideFailed, AssertionError) as exc:
                errors[kind] = exc
                del times[kind]
    keys = []
    for kind, (label, full, needs) in KINDS.items():
        key = f"{NAME}.{kind}"
        keys.append(key)
        if kind in times:
            figs.put(key, 2 * cfg.n(full) / median(times[kind]), "/s", label)
        else:
            figs.missing(key, errors.get(kind) or competitors.why_missing(needs), "/s", label)
    figs.group("fetch_add by 2 processes (ops/s, higher is better)", "/s", keys)
