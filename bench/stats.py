"""Statistics shared by every case: percentiles, medians, per-op timing.

Kept free of I/O and of pymmapdev so the smoke test can check it on known
inputs.
"""
import time
import timeit


def median(values):
    """The middle value (the upper one of the two middles for an even count)."""
    s = sorted(values)
    if not s:
        raise ValueError("median of no values")
    return s[len(s) // 2]


def percentiles(samples_ns):
    """p50/p99/mean of round-trip samples in nanoseconds."""
    s = sorted(samples_ns)
    if not s:
        raise ValueError("percentiles of no samples")
    return {"p50_ns": s[len(s) // 2], "p99_ns": s[min(len(s) - 1, len(s) * 99 // 100)],
            "mean_ns": sum(s) / len(s), "rounds": len(s)}


def round_trips(stamps, warm_fraction=0.1):
    """Percentiles of the gaps between consecutive start stamps (ns).

    One clock read per round: a round trip is the time between the starts of
    consecutive rounds (the loop runs back to back).  The first
    *warm_fraction* of rounds (caches, page faults, CPU frequency) is dropped.
    """
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return percentiles(gaps[int(len(gaps) * warm_fraction):])


def best_per_op(stmts, glb, number, repeat=7):
    """Best seconds per execution of each statement, net of the empty loop.

    The statements are timed round-robin, so a burst of load on the machine
    hits all of them rather than one.
    """
    best = dict.fromkeys(stmts, float("inf"))
    base = float("inf")
    empty = timeit.Timer("pass")
    timers = {k: timeit.Timer(stmt, globals=glb) for k, stmt in stmts.items()}
    for _ in range(repeat):
        base = min(base, empty.timeit(number))
        for k, timer in timers.items():
            best[k] = min(best[k], timer.timeit(number))
    # best minus best: subtracting per repeat lets one noisy empty loop drive
    # a fast statement's difference to zero
    return {k: max(v - base, 0.0) / number for k, v in best.items()}


def calibrate(fn, min_time=0.02):
    """Loop count that makes one timing of fn() last at least *min_time*."""
    fn()                                           # warm: pages faulted in
    loops = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        if time.perf_counter() - t0 >= min_time:
            return loops
        loops *= 2
