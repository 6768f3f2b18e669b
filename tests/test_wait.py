"""wait/wake on a u32 word: within a process, across processes, timeouts, Ctrl-C.

No timing assertions: only generous hang guards (GUARD) and "well under the
guard" bounds where the issue asks for promptness (Ctrl-C).
"""
import asyncio
import math
import multiprocessing as mp
import signal
import threading
import time

import pytest

import pymmapdev
from pymmapdev import _core
from _sync_workers import (GUARD, asleep_on, pong, process_asleep_on, run_child, spin_until,  # noqa: F401
                           wait_for_change, waiter)


@pytest.fixture
def m(shm_path):
    with pymmapdev.open_file(shm_path, 4096) as mapping:
        yield mapping


def test_returns_true_at_once_when_word_differs(m):
    m.store_u32(0, 5)
    assert m.wait(0, 4) is True
    assert m.wait(0, 4, timeout=None, spin=0) is True
    assert m.wait(offset=0, expected=4, timeout=0) is True


@pytest.mark.parametrize("spin", [0, None, 10000])
def test_times_out_when_nobody_wakes(m, spin):
    assert m.wait(0, 0, 0.05, spin=spin) is False
    assert m.wait(0, 0, timeout=0) is False
    assert m.wait(0, 0, timeout=0.0001) is False


def test_long_spin_respects_timeout(m):
    t0 = time.monotonic()
    assert m.wait(0, 0, 0.05, spin=1 << 30) is False
    assert time.monotonic() - t0 < GUARD / 4          # 2**30 rounds take far longer


def test_wake_without_waiters_returns_zero(m):
    assert m.wake(0) == 0
    assert m.wake(0, 0) == 0
    assert m.wake(4, count=1 << 40) == 0                    # clamped, not an error


def test_bad_arguments(m):
    with pytest.raises(ValueError, match="timeout"):
        m.wait(0, 0, -1)
    with pytest.raises(ValueError, match="timeout"):
        m.wait(0, 0, math.nan)
    with pytest.raises(TypeError):
        m.wait(0, 0, "1")
    with pytest.raises(ValueError, match="count"):
        m.wake(0, -1)
    with pytest.raises(ValueError, match="spin"):
        m.wait(0, 0, 0, spin=-1)
    with pytest.raises(ValueError, match=r"offset 2\b.*aligned"):
        m.wait(2, 0, 0)
    with pytest.raises(ValueError, match=r"offset 6\b.*aligned"):
        m.wake(6)
    with pytest.raises(ValueError, match="4096"):
        m.wait(4096, 0, 0)
    with pytest.raises(ValueError, match="negative"):
        m.wake(-4)
    with pytest.raises(OverflowError):
        m.wait(0, 1 << 32, 0)
    with pytest.raises(OverflowError):
        m.wait(0, -1, 0)
    with pytest.raises(TypeError, match="missing required argument 'expected'"):
        m.wait(0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        m.wait(0, 0, tiemout=1)
    with pytest.raises(TypeError, match="multiple values"):
        m.wait(0, 0, offset=0)
    with pytest.raises(TypeError, match="at most"):
        m.wake(0, 1, 2)


def test_works_on_read_only_mapping(shm_path):
    pymmapdev.open_file(shm_path, 4096).close()
    with pymmapdev.open_file(shm_path, readonly=True) as r:
        assert r.wait(0, 0, 0.01) is False
        assert r.wait(0, 1) is True
        assert r.wake(0) == 0


def test_spin_setting(m):
    old = _core.get_spin()
    try:
        _core.set_spin(0)
        assert _core.get_spin() == 0
        assert m.wait(0, 0, 0.01) is False
        _core.set_spin(1 << 62)                              # clamped to the maximum
        assert 0 < _core.get_spin() < 1 << 62
        with pytest.raises(ValueError):
            _core.set_spin(-1)
    finally:
        _core.set_spin(old)


def test_thread_wakes_thread_gil_released(m):
    """The sleeper releases the GIL, or the waker could never run."""
    results = []
    t = threading.Thread(target=lambda: results.append(m.wait(0, 0, GUARD, spin=0)))
    t.start()
    spin_until(lambda: asleep_on(m, 0, t))
    assert m.wake(0) == 1
    t.join(GUARD)
    assert results == [True]
    assert m.load_u32(0) == 0          # woken without a change: True all the same


def test_close_while_waiting_is_refused(m):
    t = threading.Thread(target=m.wait, args=(0, 0, GUARD, 0))
    t.start()
    try:
        spin_until(lambda: asleep_on(m, 0, t))
        with pytest.raises(BufferError):
            m.close()
    finally:
        m.store_u32(0, 1)
        m.wake(0)
        t.join(GUARD)
    m.close()


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_wake_across_processes(shm_path, method):
    ctx = mp.get_context(method)
    with pymmapdev.open_file(shm_path, 4096) as m:
        p = ctx.Process(target=waiter, args=(shm_path, 0, 0, None, 8, 12))
        p.start()
        spin_until(lambda: m.load_u32(8) == 1)
        # wake(…, 1) returns 1 once the child is asleep in the kernel; the
        # word is unchanged, so this also shows wake() really wakes
        spin_until(lambda: m.wake(0, 1) == 1 or not p.is_alive())
        p.join(GUARD)
        assert p.exitcode == 0
        assert m.load_u32(12) == 2                          # child's wait returned True


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_store_then_wake_many_processes(shm_path, method):
    ctx = mp.get_context(method)
    n = 4
    with pymmapdev.open_file(shm_path, 4096) as m:
        procs = [ctx.Process(target=wait_for_change, args=(shm_path, 0, 8, 12)) for _ in range(n)]
        for p in procs:
            p.start()
        spin_until(lambda: m.load_u32(8) == n)
        m.store_u32(0, 1)
        woken = m.wake(0, n)
        assert 0 <= woken <= n
        for p in procs:
            p.join(GUARD)
        assert [p.exitcode for p in procs] == [0] * n
        assert m.load_u32(12) == n


def test_timeout_in_another_process(shm_path):
    with pymmapdev.open_file(shm_path, 4096) as m:
        p = mp.get_context("spawn").Process(target=waiter, args=(shm_path, 0, 0, 0.2, 8, 12))
        p.start()
        p.join(GUARD)
        assert p.exitcode == 0
        assert m.load_u32(12) == 1                          # child's wait returned False


@pytest.mark.parametrize("spin", [0, None])
def test_ping_pong_across_processes(shm_path, spin):
    rounds = 2000
    with pymmapdev.open_file(shm_path, 4096) as m:
        p = mp.get_context("spawn").Process(target=pong, args=(shm_path, rounds, spin))
        p.start()
        for i in range(rounds):
            m.store_u32(0, 2 * i + 1)
            m.wake(0)
            while m.load_u32(0) != 2 * i + 2:
                assert m.wait(0, 2 * i + 1, GUARD, spin=spin), "pong never came"
        p.join(GUARD)
        assert p.exitcode == 0
        assert m.load_u32(0) == 2 * rounds


def test_wake_from_unrelated_process(shm_path, run_child):
    with pymmapdev.open_file(shm_path, 4096) as m:
        child = run_child(f"""
            import pymmapdev, time
            with pymmapdev.open_file({shm_path!r}) as m:
                m.store_u32(8, 1)
                ok = m.wait(0, 0, {GUARD})
                print(ok, m.load_u32(0))
        """)
        spin_until(lambda: m.load_u32(8) == 1)
        m.store_u32(0, 7)
        m.wake(0)
        out, err = child.communicate(timeout=GUARD)
        assert child.returncode == 0, err
        assert out.split() == ["True", "7"]


WAIT_FOREVER = """
    import sys, threading, time, pymmapdev
    with pymmapdev.open_file(sys.argv[1]) as m:
        if sys.argv[2] == "thread":
            # a second thread: SIGINT may land on it rather than on the
            # sleeper, so only the sleep slices can notice it
            threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
        m.store_u32(8, 1)
        try:
            # "spin": 2**30 rounds would spin for many seconds, GIL held
            m.wait(0, 0, spin=(1 << 30) if sys.argv[2] == "spin" else None)
        except KeyboardInterrupt:
            print("interrupted at", time.monotonic())    # one clock for all processes
            raise
"""


@pytest.mark.parametrize("variant", ["main", "thread", "spin"])
def test_ctrl_c_interrupts_an_infinite_wait(shm_path, run_child, variant):
    with pymmapdev.open_file(shm_path, 4096) as m:
        child = run_child(WAIT_FOREVER, shm_path, variant)
        spin_until(lambda: m.load_u32(8) == 1)
        if variant == "spin":
            time.sleep(0.2)           # into the spin, which lasts far longer (~50 s)
        else:
            spin_until(lambda: process_asleep_on(child.pid, shm_path, 0))     # asleep
        t0 = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=GUARD)
        assert "KeyboardInterrupt" in err
        assert out.startswith("interrupted at")
        assert child.returncode != 0
        # from the signal to the KeyboardInterrupt, not the child's exit
        # after it (interpreter teardown, which a loaded machine may stretch)
        elapsed = float(out.split()[2]) - t0
        assert elapsed < 5, f"Ctrl-C took {elapsed:.2f} s"


def test_signal_handler_runs_and_wait_resumes(shm_path, run_child):
    """A handler that does not raise: the wait goes on and the deadline holds."""
    with pymmapdev.open_file(shm_path, 4096) as m:
        child = run_child("""
            import signal, sys, time, pymmapdev
            hits = []
            signal.signal(signal.SIGUSR1, lambda *a: hits.append(1))
            with pymmapdev.open_file(sys.argv[1]) as m:
                m.store_u32(8, 1)
                t0 = time.monotonic()
                ok = m.wait(0, 0, 1.0)
                print(ok, len(hits), time.monotonic() - t0)
        """, shm_path)
        spin_until(lambda: m.load_u32(8) == 1)
        for _ in range(3):
            time.sleep(0.05)
            child.send_signal(signal.SIGUSR1)
        out, err = child.communicate(timeout=GUARD)
        assert child.returncode == 0, err
        ok, hits, elapsed = out.split()
        assert ok == "False" and int(hits) >= 1
        assert float(elapsed) >= 0.99        # EINTR retries did not cut the timeout


def test_timeouts_are_seconds_never_bools(m):
    """Every blocking call takes its timeout one way (csrc/block.c
    arg_timeout; the Python-side waits call it as _core.timeout_seconds):
    True, threading's "block", taken as seconds would be a 1 s timeout whose
    False result a caller may never check; and a value that is
    no number names the argument."""
    slot = pymmapdev.Slot(m, 1024, 16)
    ch = pymmapdev.Channel(m, 2048, 128)
    lock = pymmapdev.Lock(m, 0)
    calls = {
        "wait": lambda t: m.wait(128, 0, t),
        "Lock.acquire": lambda t: lock.acquire(t),
        "Slot.read": lambda t: slot.read(t),
        "Slot.wait_newer": lambda t: slot.wait_newer(0, t),
        "Channel.recv": lambda t: ch.recv(timeout=t),
        "Channel.send": lambda t: ch.send(b"x", timeout=t),
        "Channel.send_async": lambda t: asyncio.run(ch.send_async(b"x", timeout=t)),
        "Channel.recv_async": lambda t: asyncio.run(ch.recv_async(timeout=t)),
        "wait_async": lambda t: asyncio.run(m.wait_async(128, 0, t)),
        "Slot.wait_newer_async": lambda t: asyncio.run(slot.wait_newer_async(0, t)),
    }
    for name, call in calls.items():
        for flag in (True, False):
            with pytest.raises(TypeError, match="timeout .*not a bool"):
                call(flag)
        with pytest.raises(TypeError, match="timeout .*not str"):
            call("1")
        with pytest.raises(ValueError, match=r"timeout .*not -1$"):
            call(-1)
    assert not lock.locked() and len(ch) == 0 and slot.version == 0, name


def test_a_timeout_too_large_for_a_float_is_forever(m):
    """Timeouts past 1e9 s (inf included) are taken as forever, but an int
    too large for a float (10**400) raised a bare OverflowError naming no
    argument; a negative one is refused like -1."""
    assert m.wait(128, 1, 10**400) is True                 # differs: at once
    assert asyncio.run(m.wait_async(128, 1, 10**400)) is True
    assert _core.timeout_seconds(10**400) is None
    for call in (lambda: m.wait(128, 0, -10**400), lambda: _core.timeout_seconds(-10**400)):
        with pytest.raises(ValueError, match="timeout must be a non-negative number"):
            call()
