#!/usr/bin/env python3
"""pymmapdev benchmark (``make bench``): every figure next to its anchors,
all measured in the same run, printed as a table with ratios and saved as
bench/results/results.json plus bench/results/bench.png.

Figures (issue 4, item 6):
  typed    read_u32/write_u32 vs struct.Struct.unpack_from/pack_into on a stdlib mmap
  fetch    fetch_add by 2 processes vs multiprocessing.Value + its lock, and the
           `atomics` package on the same memory
  pingpong round trip between 2 processes: spinning, hybrid wait/wake, sleep-only
           wait/wake vs multiprocessing Pipe and Queue, a posix_ipc semaphore pair,
           and bench/pingpong.c (C futex and spin: the physical limit); p50/p99,
           with the processes on different cores and on one shared core
  copy     bulk copy into the mapping vs libc memcpy/memmove on the same pages from
           this process (ctypes.memmove, interleaved with ours: the judged anchor),
           and bench/memcpy.c (C, another process, no call overhead); stdlib mmap
  slot     Slot publish/read throughput (one process, and reader vs writer in two)

Per-op micro timings subtract the empty-loop cost measured alongside them and
take the best of 7 repeats, timed round-robin with their anchors (so a burst
of load elsewhere on the machine hits all of them); fetch_add is the median of
5 trials; round trips are timed one by one (p50/p99 over the last 90%), and
the best of 5 trials by p50 is kept.
Usage: python bench/run.py [--quick]
"""
import argparse
import ctypes
import json
import multiprocessing as mp
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import timeit
import mmap

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
sys.path.insert(0, ROOT)                 # the in-tree build

import pymmapdev                          # noqa: E402

SHM = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
NCPU = len(os.sched_getaffinity(0))
SPLIT = (0, 1) if NCPU >= 2 else None    # parent CPU, child CPU
SHARED = (0, 0)
QUICK = False

# ---------------------------------------------------------------- utilities


def ensure_packages():
    """pip install the anchors' packages if missing; returns the unavailable ones."""
    wanted = {"matplotlib": "matplotlib", "posix_ipc": "posix_ipc", "atomics": "atomics"}
    missing = []
    for module, package in wanted.items():
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    if missing:
        print(f"installing {' '.join(missing)} ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", *missing], check=False)
    unavailable = []
    for module in wanted:
        try:
            __import__(module)
        except ImportError:
            unavailable.append(module)
    return unavailable


def pin(cpu):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def scratch(name, size):
    path = os.path.join(SHM, f"pymmapdev-bench-{os.getpid()}-{name}")
    m = pymmapdev.open_file(path, size)
    return path, m


def best_per_op(stmts, glb, number, repeat=7):
    """Best seconds per execution of each statement, net of the empty loop.

    The statements are timed round-robin, so a burst of load on the machine
    hits all of them rather than one.
    """
    best = dict.fromkeys(stmts, float("inf"))
    empty = timeit.Timer("pass")
    timers = {k: timeit.Timer(stmt, globals=glb) for k, stmt in stmts.items()}
    for _ in range(repeat):
        base = empty.timeit(number)
        for k, timer in timers.items():
            best[k] = min(best[k], max(timer.timeit(number) - base, 0.0))
    return {k: v / number for k, v in best.items()}


def percentiles(samples_ns):
    s = sorted(samples_ns)
    return {"p50_ns": s[len(s) // 2], "p99_ns": s[len(s) * 99 // 100],
            "mean_ns": sum(s) / len(s), "rounds": len(s)}


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---------------------------------------------------------------- typed access


def bench_typed():
    n = 200_000 if not QUICK else 50_000
    path, m = scratch("typed", 4096)
    with open(path, "r+b") as f:
        mm = mmap.mmap(f.fileno(), 4096)
    s = struct.Struct("=I")
    g = {"r": m.read_u32, "w": m.write_u32, "ld": m.load_u32, "st": m.store_u32,
         "u": s.unpack_from, "p": s.pack_into, "mm": mm}
    res = best_per_op({
        "read_u32": "r(8)",
        "struct_unpack": "u(mm, 8)[0]",
        "write_u32": "w(8, 12345)",
        "struct_pack": "p(mm, 8, 12345)",
        "load_u32": "ld(8)",
        "store_u32": "st(8, 12345)",
    }, g, n)
    mm.close()
    m.close()
    os.unlink(path)
    return res


# ---------------------------------------------------------------- fetch_add


def _fetch_child(kind, path, n, cpu, shared):
    pin(cpu)
    m = pymmapdev.open_file(path)
    m.fetch_add_u32(0, 1)                          # ready
    while m.load_u32(4) == 0:                      # go
        pass
    t0 = time.perf_counter()
    if kind == "pymmapdev":
        add = m.fetch_add_u64
        for _ in range(n):
            add(64, 1)
    elif kind == "mp.Value+lock":
        lock = shared.get_lock()
        for _ in range(n):
            with lock:
                shared.value += 1
    elif kind == "atomics":
        import atomics
        with memoryview(m) as view:
            with atomics.atomicview(buffer=view[72:80], atype=atomics.UINT) as a:
                add = a.fetch_add
                for _ in range(n):
                    add(1)
    elapsed = time.perf_counter() - t0
    m.store_u64(128 + 8 * int(mp.current_process().name[-1]), int(elapsed * 1e9))
    m.close()


def _fetch_trial(ctx, kind, n):
    path, m = scratch("fetch", 4096)
    try:
        value = ctx.Value("Q", 0, lock=True)
        procs = [ctx.Process(target=_fetch_child, name=f"w{i}",
                             args=(kind, path, n, SPLIT[i] if SPLIT else None, value))
                 for i in range(2)]
        for p in procs:
            p.start()
        while m.load_u32(0) < 2:
            time.sleep(0.001)
        m.store_u32(4, 1)
        for p in procs:
            p.join()
        total = {"pymmapdev": m.load_u64(64), "mp.Value+lock": value.value,
                 "atomics": m.load_u64(72)}[kind]
        assert total == 2 * n, (kind, total)
        return max(m.load_u64(128), m.load_u64(136)) / 1e9
    finally:
        m.close()
        os.unlink(path)


FETCH_TRIALS = 5


def bench_fetch_add(have_atomics):
    """Median of FETCH_TRIALS trials (round-robin over the kinds) of 2 processes x n ops.

    The median, not the best: whether the two processes really run at once
    (contending for the cache line) or get time-sliced by other load swings
    each kind in opposite directions.
    """
    ctx = mp.get_context("fork")                   # mp.Value is inherited
    kinds = {"pymmapdev": 200_000, "mp.Value+lock": 50_000}
    if have_atomics:
        kinds["atomics"] = 10_000                  # ~30 us per op here
    if QUICK:
        kinds = {k: n // 4 for k, n in kinds.items()}
    times = {kind: [] for kind in kinds}
    for _ in range(FETCH_TRIALS):
        for kind, n in kinds.items():
            times[kind].append(_fetch_trial(ctx, kind, n))
    out = {}
    for kind, n in kinds.items():
        median = sorted(times[kind])[len(times[kind]) // 2]
        out[kind] = {"ops": 2 * n, "seconds": median, "ops_per_s": 2 * n / median,
                     "ns_per_op": median / (2 * n) * 1e9, "trials": FETCH_TRIALS,
                     "best_ops_per_s": 2 * n / min(times[kind])}
    return out


# ---------------------------------------------------------------- ping-pong

WORD_MODES = {"spin": None, "hybrid": None, "sleep": 0}   # wait() spin setting


def _pp_child(kind, rounds, cpu, ends):
    pin(cpu)
    if kind in WORD_MODES:
        m = pymmapdev.open_file(ends)
        load, store, wait, wake = m.load_u32, m.store_u32, m.wait, m.wake
        spin = WORD_MODES[kind]
        for i in range(rounds):
            want = 2 * i + 1
            if kind == "spin":
                while load(0) != want:
                    pass
                store(0, want + 1)
            else:
                # wait first: the answer is rarely there yet, so this saves
                # a load per round (wait() returns at once if it is)
                wait(0, want - 1, None, spin)
                while load(0) != want:
                    wait(0, want - 1, None, spin)
                store(0, want + 1)
                wake(0)
        m.close()
    elif kind == "Pipe":
        conn = ends
        for _ in range(rounds):
            conn.send_bytes(conn.recv_bytes())
    elif kind == "Queue":
        q_in, q_out = ends
        for _ in range(rounds):
            q_out.put(q_in.get())
    elif kind == "posix_ipc":
        import posix_ipc
        ping, pong = (posix_ipc.Semaphore(name) for name in ends)
        for _ in range(rounds):
            ping.acquire()
            pong.release()


def _pp_python(kind, rounds, cpus):
    """Round trips timed in the parent; returns percentiles over the last 90%.

    One clock read per round: a round trip is the time between the starts of
    consecutive rounds (the loop runs back to back).
    """
    ctx = mp.get_context("fork")
    ts = [0] * (rounds + 1)
    now = time.perf_counter_ns
    cleanup = []
    if kind in WORD_MODES:
        path, m = scratch("pp", 4096)
        cleanup.append(lambda: (m.close(), os.unlink(path)))
        ends = path
    elif kind == "Pipe":
        a, b = ctx.Pipe()
        ends = b
    elif kind == "Queue":
        q1, q2 = ctx.Queue(), ctx.Queue()
        ends = (q1, q2)
    elif kind == "posix_ipc":
        import posix_ipc
        names = [f"/pymmapdev-bench-{os.getpid()}-{s}" for s in ("ping", "pong")]
        sems = [posix_ipc.Semaphore(n, posix_ipc.O_CREX, initial_value=0) for n in names]
        cleanup.append(lambda: [s.unlink() for s in sems])
        ends = names
    child = ctx.Process(target=_pp_child, args=(kind, rounds, cpus[1], ends))
    child.start()
    pin(cpus[0])
    try:
        if kind in WORD_MODES:
            load, store, wait, wake = m.load_u32, m.store_u32, m.wait, m.wake
            spin = WORD_MODES[kind]
            for i in range(rounds):
                want = 2 * i + 2
                ts[i] = now()
                if kind == "spin":
                    store(0, want - 1)
                    while load(0) != want:
                        pass
                else:
                    store(0, want - 1)
                    wake(0)
                    wait(0, want - 1, None, spin)
                    while load(0) != want:
                        wait(0, want - 1, None, spin)
        elif kind == "Pipe":
            msg = b"ping"
            for i in range(rounds):
                ts[i] = now()
                a.send_bytes(msg)
                a.recv_bytes()
        elif kind == "Queue":
            for i in range(rounds):
                ts[i] = now()
                q1.put(i)
                q2.get()
        elif kind == "posix_ipc":
            ping, pong = sems
            for i in range(rounds):
                ts[i] = now()
                ping.release()
                pong.acquire()
        ts[rounds] = now()
        child.join()
    finally:
        os.sched_setaffinity(0, range(os.cpu_count()))
        if child.is_alive():
            child.kill()
        for fn in cleanup:
            fn()
    rtt = [b - a for a, b in zip(ts, ts[1:])]
    return percentiles(rtt[rounds // 10:])


def build_c(name):
    """bench/NAME.c -> bench/results/NAME (rebuilt when the source is newer)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    exe = os.path.join(RESULTS, name)
    src = os.path.join(HERE, f"{name}.c")
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
        subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-Werror", "-o", exe, src], check=True)
    return exe


def _pp_c(exe, mode, rounds, cpus):
    out = subprocess.run([exe, mode, str(rounds), str(cpus[0]), str(cpus[1])],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    return json.loads(out)


PP_MESSAGE = {"spin": "u32 word", "hybrid": "u32 word", "sleep": "u32 word",
              "Pipe": "4-byte bytes", "Queue": "small int (pickled)",
              "posix_ipc": "none (semaphore post)", "C spin": "u32 word",
              "C futex": "u32 word"}


def bench_pingpong(have_posix_ipc, exe, trials=5):
    """Per placement and mode, the trial (of 5, round-robin) with the best p50."""
    scale = 4 if QUICK else 1
    rounds = {"spin": 20000, "hybrid": 20000, "sleep": 5000, "Pipe": 5000,
              "Queue": 3000, "posix_ipc": 5000}
    out = {}
    placements = [("split", SPLIT), ("shared", SHARED)] if SPLIT else [("shared", SHARED)]
    for placement, cpus in placements:
        runs = {}
        for kind, n in rounds.items():
            if kind == "posix_ipc" and not have_posix_ipc:
                continue
            if kind == "spin" and placement == "shared":
                continue    # a spinner on a shared core waits for the scheduler tick
            runs[kind] = lambda kind=kind, n=n: _pp_python(kind, n // scale, cpus)
        if exe:
            if placement == "split":
                runs["C spin"] = lambda: _pp_c(exe, "spin", 200000 // scale, cpus)
            runs["C futex"] = lambda: _pp_c(exe, "futex", 20000 // scale, cpus)
        res = {}
        for _ in range(trials):
            for kind, run in runs.items():
                r = run()
                if kind not in res or r["p50_ns"] < res[kind]["p50_ns"]:
                    res[kind] = r
        for kind in res:
            res[kind]["message"] = PP_MESSAGE[kind]
            res[kind]["trials"] = trials
        out[placement] = {"cpus": list(cpus), "results": res}
    return out


# ---------------------------------------------------------------- bulk copy


def _calibrate(fn, min_time=0.02):
    """Loop count that makes one timing last at least *min_time*."""
    fn()                                           # warm: pages faulted in
    loops = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        if time.perf_counter() - t0 >= min_time:
            return loops
        loops *= 2


def bench_copy(memcpy_exe, repeat=7):
    """GB/s into the mapping; every kind, and the C anchor, timed once per
    repeat, round-robin, best kept."""
    sizes = [4096, 65536, 1 << 20, 16 << 20]
    path, m = scratch("copy", 32 << 20)
    with open(path, "r+b") as f:
        mm = mmap.mmap(f.fileno(), 32 << 20)
    anchor = ctypes.c_char.from_buffer(m)
    dst = ctypes.addressof(anchor)
    off = 8 << 20
    kinds, srcs = {}, {}
    for n in sizes:
        src = srcs[n] = bytearray(os.urandom(n))
        src_addr = ctypes.addressof(ctypes.c_char.from_buffer(src))
        fns = {
            "pymmapdev m[a:b] = src": lambda n=n, src=src: m.__setitem__(slice(off, off + n), src),
            "pymmapdev m.write": lambda src=src: m.write(off, src),
            "memcpy (ctypes.memmove)": lambda n=n, a=src_addr: ctypes.memmove(dst + off, a, n),
            "stdlib mmap mm[a:b] = src": lambda n=n, src=src: mm.__setitem__(slice(off, off + n), src),
        }
        kinds[n] = {k: (fn, _calibrate(fn)) for k, fn in fns.items()}
    best = {n: {} for n in sizes}
    c_path = os.path.join(SHM, f"pymmapdev-bench-{os.getpid()}-memcpy")
    for _ in range(repeat):
        for n in sizes:
            for k, (fn, loops) in kinds[n].items():
                t0 = time.perf_counter()
                for _ in range(loops):
                    fn()
                rate = n * loops / (time.perf_counter() - t0)
                best[n][k] = max(best[n].get(k, 0), rate)
        if memcpy_exe:
            out = subprocess.run([memcpy_exe, c_path, "1", *map(str, sizes)], check=True,
                                 capture_output=True, text=True, timeout=120).stdout
            for k, v in json.loads(out).items():
                best[int(k)]["C memcpy"] = max(best[int(k)].get("C memcpy", 0), v)
    # the last copy done was the largest source: it must be there
    assert bytes(m[off:off + 16]) == bytes(srcs[sizes[-1]][:16])
    del anchor, kinds, srcs
    mm.close()
    m.close()
    os.unlink(path)
    return {n: {k: v / 1e9 for k, v in best[n].items()} for n in sizes}   # GB/s


# ---------------------------------------------------------------- slot


def _slot_writer(path, capacity, size, seconds, cpu):
    pin(cpu)
    m = pymmapdev.open_file(path)
    slot = pymmapdev.Slot(m, 64, capacity)
    data = bytes(size)
    publish = slot.publish
    m.fetch_add_u32(0, 1)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(1000):
            publish(data)
    m.store_u32(4, 1)
    m.close()


def bench_slot():
    out = {}
    n = 100_000 if not QUICK else 20_000
    for size in (64, 4096):
        path, m = scratch("slot", 1 << 16)
        slot = pymmapdev.Slot(m, 64, size)
        data = bytes(size)
        g = {"pub": slot.publish, "rd": slot.read, "data": data}
        lock = mp.get_context("fork").Lock()
        g.update({"lk": lock, "m": m, "lo": 8192, "hi": 8192 + size})
        res = {k: 1 / v for k, v in best_per_op({
            "publish": "pub(data)",
            "read": "rd()",
            "anchor mp.Lock + slice write": "with lk: m[lo:hi] = data",
            "anchor mp.Lock + slice read": "with lk: bytes(m[lo:hi])",
        }, g, n).items()}
        # a reader racing a writer in another process
        seconds = 0.5 if not QUICK else 0.2
        p = mp.get_context("fork").Process(
            target=_slot_writer, args=(path, size, size, seconds, SPLIT[1] if SPLIT else None))
        v0 = slot.version
        p.start()
        while m.load_u32(0) == 0:
            time.sleep(0.001)
        if SPLIT:
            pin(SPLIT[0])
        reads, t0 = 0, time.perf_counter()
        rd = slot.read
        while m.load_u32(4) == 0:
            for _ in range(100):
                rd()
            reads += 100
        elapsed = time.perf_counter() - t0
        os.sched_setaffinity(0, range(os.cpu_count()))
        p.join()
        res["2-process read (racing writer)"] = reads / elapsed
        res["2-process publish (racing reader)"] = (slot.version - v0) / elapsed
        out[size] = res
        m.close()
        os.unlink(path)
    return out


# ---------------------------------------------------------------- report


def ratio_rows(r):
    """(figure, ours, anchor name, anchor, ratio text, target, met) rows."""
    rows = []
    ty = r["typed"]
    for ours, anchor in (("read_u32", "struct_unpack"), ("write_u32", "struct_pack")):
        x = ty[ours] / ty[anchor]
        rows.append((f"typed {ours}", f"{ty[ours] * 1e9:.1f} ns", "struct on mmap",
                     f"{ty[anchor] * 1e9:.1f} ns", f"{x:.2f}x time", "<= 0.5x", x <= 0.5))
    fa = r["fetch_add"]
    for anchor in ("mp.Value+lock", "atomics"):
        if anchor in fa:
            x = fa["pymmapdev"]["ops_per_s"] / fa[anchor]["ops_per_s"]
            target, met = ("> = 20x", x >= 20) if anchor == "mp.Value+lock" else ("-", None)
            rows.append(("fetch_add, 2 procs", f"{fa['pymmapdev']['ops_per_s'] / 1e6:.2f} Mops/s",
                         anchor, f"{fa[anchor]['ops_per_s'] / 1e6:.2f} Mops/s",
                         f"{x:.1f}x faster", target.replace(" ", ""), met))
    for placement, pp in r["pingpong"].items():
        res = pp["results"]

        def us(kind):
            return res[kind]["p50_ns"] / 1000
        if "spin" in res and "Pipe" in res:
            x = us("Pipe") / us("spin")
            rows.append((f"RTT spin [{placement}]", f"{us('spin'):.2f} us p50", "Pipe",
                         f"{us('Pipe'):.1f} us", f"{x:.0f}x faster", "<=0.5us, >=80x",
                         us("spin") <= 0.5 and x >= 80))
        if "spin" in res and "C spin" in res:
            rows.append((f"RTT spin [{placement}]", f"{us('spin'):.2f} us p50", "C spin",
                         f"{us('C spin'):.2f} us", f"{us('spin') / us('C spin'):.2f}x time", "-", None))
        for kind in ("hybrid", "sleep"):
            for anchor in ("Pipe", "Queue", "posix_ipc"):
                if kind in res and anchor in res:
                    rows.append((f"RTT {kind} [{placement}]", f"{us(kind):.1f} us p50", anchor,
                                 f"{us(anchor):.1f} us", f"{us(anchor) / us(kind):.1f}x faster",
                                 "-", None))
        if "sleep" in res and "C futex" in res:
            x = us("sleep") / us("C futex")
            rows.append((f"RTT sleep [{placement}]", f"{us('sleep'):.1f} us p50", "C futex",
                         f"{us('C futex'):.1f} us", f"{x:.2f}x time", "<= 1.2x", x <= 1.2))
    for n, c in r["copy"].items():
        # The target is judged against libc memmove called from this process
        # (ctypes) on the same pages, interleaved with ours; bench/memcpy.c
        # (another process, no call overhead) is shown beside it.  The target
        # is for bulk copies: at 4 KiB any Python call is mostly overhead.
        bulk = int(n) >= 1 << 20
        ours = c["pymmapdev m[a:b] = src"]
        for anchor in ("memcpy (ctypes.memmove)", "C memcpy"):
            if anchor not in c:
                continue
            x = ours / c[anchor]
            judged = bulk and anchor.startswith("memcpy")
            rows.append((f"copy {int(n) // 1024} KiB", f"{ours:.2f} GB/s", anchor,
                         f"{c[anchor]:.2f} GB/s", f"{x:.2f}x",
                         ">= 0.95x" if judged else "-", x >= 0.95 if judged else None))
    for size, s in r["slot"].items():
        for op, anchor in (("publish", "anchor mp.Lock + slice write"),
                           ("read", "anchor mp.Lock + slice read")):
            rows.append((f"Slot {op} {size} B", f"{s[op] / 1e6:.2f} Mops/s", "mp.Lock + slice",
                         f"{s[anchor] / 1e6:.2f} Mops/s", f"{s[op] / s[anchor]:.1f}x", "-", None))
        rows.append((f"Slot 2-proc {size} B", f"{s['2-process read (racing writer)'] / 1e6:.2f} M reads/s",
                     "writer", f"{s['2-process publish (racing reader)'] / 1e6:.2f} M pub/s",
                     "-", "-", None))
    return rows


def print_table(rows):
    head = ("figure", "pymmapdev", "anchor", "anchor value", "ratio", "target", "met")
    cells = [head] + [tuple("" if c is None else ("yes" if c is True else "NO" if c is False else str(c))
                            for c in row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    for k, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))


def print_pingpong(pp):
    for placement, data in pp.items():
        print(f"\nping-pong round trip [{placement}: parent CPU {data['cpus'][0]}, "
              f"child CPU {data['cpus'][1]}]")
        print(f"  {'mode':<10} {'p50 us':>9} {'p99 us':>9} {'mean us':>9} {'rounds':>7}  message")
        for kind, v in data["results"].items():
            print(f"  {kind:<10} {v['p50_ns'] / 1e3:9.2f} {v['p99_ns'] / 1e3:9.2f} "
                  f"{v['mean_ns'] / 1e3:9.2f} {v['rounds']:7d}  {v['message']}")


def chart(r, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    ax = axes[0][0]
    ty = r["typed"]
    names = ["read_u32", "struct_unpack", "write_u32", "struct_pack", "load_u32", "store_u32"]
    ax.barh(names, [ty[n] * 1e9 for n in names],
            color=["C0", "C7", "C0", "C7", "C0", "C0"])
    ax.set_xlabel("ns per op (lower is better)")
    ax.set_title("typed access vs struct on stdlib mmap")
    ax.invert_yaxis()

    ax = axes[0][1]
    fa = r["fetch_add"]
    ax.barh(list(fa), [v["ops_per_s"] / 1e6 for v in fa.values()],
            color=["C0"] + ["C7"] * (len(fa) - 1))
    for i, v in enumerate(fa.values()):
        ax.text(v["ops_per_s"] / 1e6, i, f" {v['ops_per_s'] / 1e6:.2f}", va="center", fontsize=8)
    ax.set_xlabel("M fetch_add/s, 2 processes (higher is better)")
    ax.set_title("fetch_add by 2 processes")
    ax.invert_yaxis()

    ax = axes[1][0]
    pp = r["pingpong"]
    labels, p50, p99, colors = [], [], [], []
    for placement, data in pp.items():
        for kind, v in data["results"].items():
            labels.append(f"{kind} [{placement}]")
            p50.append(v["p50_ns"] / 1e3)
            p99.append(v["p99_ns"] / 1e3)
            colors.append("C0" if kind in WORD_MODES else "C3" if kind.startswith("C ") else "C7")
    y = range(len(labels))
    ax.barh(y, p99, color="lightgray", label="p99")
    ax.barh(y, p50, color=colors, label="p50")
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("round trip, us (log; lower is better)")
    ax.set_title("ping-pong between 2 processes\n(blue: pymmapdev, grey: Python anchors, red: C)")
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8)

    ax = axes[1][1]
    cp = r["copy"]
    sizes = list(cp)
    kinds = list(next(iter(cp.values())))
    width = 0.8 / len(kinds)
    for k, kind in enumerate(kinds):
        ax.bar([i + k * width for i in range(len(sizes))], [cp[s][kind] for s in sizes],
               width, label=kind)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(sizes))],
                  [f"{int(s) // 1024} KiB" for s in sizes])
    ax.set_ylabel("GB/s (higher is better)")
    ax.set_title("bulk copy into the mapping")
    ax.legend(fontsize=8)

    m = r["machine"]
    fig.suptitle(f"pymmapdev bench — {m['cpu']}, {m['cpus']} CPUs, {m['kernel']}, "
                 f"load {m['loadavg_start'][0]:.1f}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    global QUICK
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    args = ap.parse_args()
    QUICK = args.quick
    os.makedirs(RESULTS, exist_ok=True)
    unavailable = ensure_packages()
    started = time.monotonic()
    machine = {
        "cpu": cpu_model(), "cpus": NCPU, "kernel": platform.release(),
        "python": platform.python_version(), "loadavg_start": os.getloadavg(),
        "pymmapdev_spin": pymmapdev._core.get_spin(),
        "shm": SHM, "unavailable_anchors": unavailable,
    }
    print(f"pymmapdev bench: {machine['cpu']}, {NCPU} CPUs, Linux {machine['kernel']}, "
          f"Python {machine['python']}, load average {machine['loadavg_start'][0]:.2f}")
    if unavailable:
        print(f"  (anchors skipped, packages unavailable: {', '.join(unavailable)})")
    exe = build_c("pingpong")
    memcpy_exe = build_c("memcpy")

    results = {"machine": machine}
    for name, fn in (("typed", bench_typed),
                     ("fetch_add", lambda: bench_fetch_add("atomics" not in unavailable)),
                     ("pingpong", lambda: bench_pingpong("posix_ipc" not in unavailable, exe)),
                     ("copy", lambda: bench_copy(memcpy_exe)),
                     ("slot", bench_slot)):
        t0 = time.monotonic()
        print(f"  {name} ...", end="", flush=True)
        results[name] = fn()
        print(f" {time.monotonic() - t0:.1f} s", flush=True)
    machine["loadavg_end"] = os.getloadavg()
    machine["seconds"] = time.monotonic() - started

    rows = ratio_rows(results)
    print()
    print_table(rows)
    print_pingpong(results["pingpong"])
    results["table"] = [dict(zip(("figure", "pymmapdev", "anchor", "anchor_value", "ratio",
                                  "target", "met"), row)) for row in rows]
    with open(os.path.join(RESULTS, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    png = os.path.join(RESULTS, "bench.png")
    if "matplotlib" not in unavailable:
        chart(results, png)
    print(f"\nsaved {os.path.relpath(os.path.join(RESULTS, 'results.json'), ROOT)}"
          f"{' and ' + os.path.relpath(png, ROOT) if 'matplotlib' not in unavailable else ''}"
          f" ({machine['seconds']:.0f} s; load average {machine['loadavg_end'][0]:.2f} at the end)")


if __name__ == "__main__":
    main()
