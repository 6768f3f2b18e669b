"""asyncio: Mapping.wait_async and Slot.wait_newer_async on files and memfds
(pymmapdev/_aio.py, csrc/watch.c); the device backends are in
tests/device/test_aio.py.

Every waker that matters is another process; the event loop's
responsiveness is shown by a task that keeps ticking.  Both futex waiter
modes run: futex_waitv (one thread for many waiters) and the pool kernels
without it (5.10) get.  No timing assertions beyond generous hang guards.
"""
import asyncio
import errno
import gc
import math
import os
import sys
import threading
import time
import weakref
from decimal import Decimal

import pytest

import pymmapdev
from pymmapdev import _aio, _core
from _sync_workers import GUARD, run_child, ticking  # noqa: F401

WAITERS = "pymmapdev-aio-waiter"
SLOT = 64                                   # a Slot's offset in the test mapping
WAITERS_WORD = SLOT + 16                    # its count of announced sleepers


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, GUARD))


def waiter_threads():
    return [t for t in threading.enumerate() if t.name == WAITERS]


@pytest.fixture(params=["waitv", "pool"])
def mode(request, monkeypatch):
    """The futex backend with futex_waitv, and the pool of kernels without it."""
    if request.param == "waitv" and not _core.HAVE_FUTEX_WAITV:
        pytest.fail("this kernel has no futex_waitv (5.16+): the host suite expects one")
    pool = _aio._FutexPool()
    pool.waitv = request.param == "waitv"
    monkeypatch.setattr(_aio, "_pool", pool)
    monkeypatch.setattr(_aio, "LINGER", 0.05)
    yield request.param
    deadline = time.monotonic() + GUARD
    while pool.threads and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not pool.threads, "waiter threads outlived their waiters"


@pytest.fixture
def m(shm_path):
    with pymmapdev.open_file(shm_path, 4096) as mapping:
        yield mapping


def child_waker(run_child, path, code):
    """An unrelated process that waits until word 1020 is 1 (we are asleep),
    runs *code* with `m` bound, and says so in word 1016."""
    return run_child(f"""
        import sys, time, pymmapdev
        m = pymmapdev.open_file(sys.argv[1])
        deadline = time.monotonic() + {GUARD}
        while m.load_u32(1020) != 1:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        time.sleep(0.2)                 # the awaiter's sleeper is asleep by now
        {code}
        m.store_u32(1016, 1)
    """, path)


# ---- the results are wait()'s --------------------------------------------------

@pytest.mark.parametrize("word, expected, timeout, result", [
    (5, 4, None, True),          # differs: at once
    (5, 4, 0, True),
    (0, 0, 0, False),            # equal, no time: at once
    (0, 0, 0.05, False),         # equal, nobody wakes
])
def test_same_results_as_wait(m, mode, word, expected, timeout, result):
    m.store_u32(0, word)
    assert m.wait(0, expected, timeout) is result
    assert run(m.wait_async(0, expected, timeout)) is result
    assert run(m.wait_async(offset=0, expected=expected, timeout=timeout)) is result


class Seconds:
    """A timeout that is a number only through __float__."""

    def __float__(self):
        return 0.05


@pytest.mark.parametrize("timeout", [Decimal("0.05"), Seconds()], ids=["Decimal", "__float__"])
def test_any_timeout_wait_takes_awaits_too(m, mode, timeout):
    """A timeout wait() takes (anything with __float__) is one wait_async()
    takes, not a TypeError from the event loop's clock."""
    assert m.wait(0, 0, timeout) is False
    assert run(m.wait_async(0, 0, timeout)) is False
    assert run(pymmapdev.Slot(m, SLOT, 32).wait_newer_async(0, timeout)) is False


def test_woken_by_another_process_loop_keeps_ticking(m, shm_path, mode, run_child):
    child = child_waker(run_child, shm_path, "m.store_u32(0, 7); m.wake(0)")

    async def main():
        m.store_u32(1020, 1)
        return await ticking(m.wait_async(0, 0, timeout=GUARD))

    result, ticks = run(main())
    assert result is True and m.load_u32(0) == 7
    assert ticks >= 5, "the event loop was blocked while waiting"
    assert child.wait(GUARD) == 0, child.stderr.read()
    assert m.load_u32(1016) == 1


def test_a_wake_without_change_ends_the_wait(m, mode):
    """wait()'s contract: a wake-up alone returns True."""
    stop = threading.Event()

    def waker():        # wakes until the awaiter got one (the first may come early)
        while not stop.is_set():
            m.wake(0)
            time.sleep(0.01)

    async def main():
        t = threading.Thread(target=waker)
        t.start()
        try:
            return await m.wait_async(0, 0, timeout=GUARD)
        finally:
            stop.set()
            t.join()

    assert run(main()) is True and m.load_u32(0) == 0


def test_many_waiters_share_few_threads(m, mode):
    n = 200

    async def main():
        tasks = [asyncio.create_task(m.wait_async(4 * i, 0, GUARD)) for i in range(1, n + 1)]
        await asyncio.sleep(0.1)
        threads = len(waiter_threads())
        for i in range(1, n + 1):
            m.store_u32(4 * i, 1)
            m.wake(4 * i)
        return await asyncio.gather(*tasks), threads

    results, threads = run(main())
    assert results == [True] * n
    bound = math.ceil(n / _aio.WAITV_WORDS) if mode == "waitv" else _aio.FALLBACK_THREADS
    assert 1 <= threads <= bound


def test_cancel_leaves_nothing_behind(m, mode):
    async def main():
        task = asyncio.create_task(m.wait_async(0, 0))
        await asyncio.sleep(0.05)
        # pinned while it waits, like wait(), and named as what it is: no
        # thread is in a blocking call (the words said only that before)
        with pytest.raises(BufferError, match=r"1 blocking call or asyncio wait \(wait, "
                                              r"wait_async, "):
            m.close()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.wait_for(asyncio.sleep(0, "ok"), 1) == "ok"
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(m.wait_async(0, 0), 0.05)

    run(main())
    m.close()                              # nothing pins it any more
    # (the mode fixture checks that the waiter threads leave)


def test_a_loop_closed_under_a_pending_wait_unpins(m, mode):
    """A loop closed with a wait still pending (no asyncio.run to cancel it)
    can never resume it, and a peer may never wake the word: the waiter
    thread must let go of it, so the mapping can be closed and the thread
    leaves."""
    loop = asyncio.new_event_loop()
    task = loop.create_task(m.wait_async(0, 0, timeout=GUARD))    # not over first
    loop.run_until_complete(asyncio.sleep(0.1))
    loop.close()                            # the timeout's timer will never run
    deadline = time.monotonic() + 5
    while True:
        try:
            m.close()
            break
        except BufferError:
            assert time.monotonic() < deadline, "the closed loop's wait kept its pin"
            time.sleep(0.05)
    assert not task.done()
    del task


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def until(condition, what):
    """Polls *condition* (no timing assertion: GUARD is a hang guard)."""
    deadline = time.monotonic() + GUARD
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def collected_under_pool_lock():
    """Whether a gc.collect() run by a thread holding the pool's lock ends:
    the collector may finalize a wait inside any of the pool's locked
    sections, and the wait's finally must not need the lock then."""
    collected = threading.Event()

    def collect():
        with _aio._pool.lock:
            gc.collect()
        collected.set()

    threading.Thread(target=collect, daemon=True).start()
    return collected.wait(GUARD)


def closes(mapping):
    try:
        mapping.close()
    except BufferError:
        return False
    return True


@pytest.mark.filterwarnings("ignore:unclosed event loop:ResourceWarning")
@pytest.mark.parametrize("loop_end", ["forgotten", "closed"])
@pytest.mark.parametrize("what", ["word", "slot", "timeout", "polled"])
def test_a_wait_left_pending_by_an_ended_thread_unpins(m, shm_path, mode, loop_end, what,
                                                       forgotten_loops):
    """A thread runs its own loop until a wait sleeps and ends, the wait
    pending: its loop dropped unclosed (only garbage now), or closed and
    kept.  Nothing can ever resume that wait: the waiter thread must not
    keep it (and its loop) alive, so the mapping closes, the Slot's
    announced sleeper is withdrawn, and no thread or descriptor is left.
    The collection runs under the pool's lock, as one in any allocation
    in its locked sections may: finalizing the wait must not need it."""
    other = pymmapdev.open_file(shm_path)
    ro = pymmapdev.open_file(shm_path, readonly=True)
    threads, fds = threading.active_count(), open_fds()
    kept = []
    waits = {"word": lambda: m.wait_async(0, 0),
             "slot": lambda: pymmapdev.Slot(m, SLOT, 32).wait_newer_async(0),
             "timeout": lambda: m.wait_async(0, 0, GUARD),
             "polled": lambda: pymmapdev.Slot(ro, SLOT, 32).wait_newer_async(0)}  # timers

    def abandon():
        loop = asyncio.new_event_loop()
        task = loop.create_task(waits[what]())
        loop.run_until_complete(asyncio.sleep(0.1))
        assert not task.done()
        if loop_end == "closed":
            loop.close()
            kept.append(loop)
        else:
            kept.append(weakref.ref(loop))

    thread = threading.Thread(target=abandon)
    thread.start()
    thread.join(GUARD)
    assert not thread.is_alive() and len(kept) == 1
    del thread
    assert collected_under_pool_lock(), "a finalized wait waited for the lock its thread holds"
    if loop_end == "forgotten":
        assert kept[0]() is None, "something of ours keeps the forgotten loop"
    until(lambda: closes(m) and closes(ro), f"the {loop_end} loop's wait kept its pin")
    assert other.load_u32(WAITERS_WORD) == 0
    other.close()
    until(lambda: not _aio._pool.threads, "the waiter thread stayed")
    until(lambda: threading.active_count() <= threads, "a thread was left behind")
    until(lambda: open_fds() <= fds, "a descriptor was left behind")


def test_collecting_a_forgotten_wait_under_the_pool_lock(m, mode):
    """The garbage collector may run in any allocation, also one inside the
    pool's locked sections, and finalize a wait the waiter thread forgot
    (its loop closed): the wait's finally must not need the lock then."""
    loop = asyncio.new_event_loop()
    task = loop.create_task(m.wait_async(0, 0))
    loop.run_until_complete(asyncio.sleep(0.1))
    loop.close()
    task = weakref.ref(task)
    deadline = time.monotonic() + 5
    while any(t.waiters for t in _aio._pool.threads):     # forgotten in LINGER
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert collected_under_pool_lock(), "a finalizer waited for the lock its own thread holds"
    assert task() is None


def test_timeout_zero_and_closed_and_bad_arguments(m, mode):
    with pytest.raises(ValueError, match="timeout"):
        m.wait_async(0, 0, -1)
    with pytest.raises(ValueError, match="timeout"):
        m.wait_async(0, 0, math.nan)
    with pytest.raises(TypeError):
        m.wait_async(0, 0, "1")
    with pytest.raises(ValueError, match=r"offset 2\b.*aligned"):
        m.wait_async(2, 0)
    with pytest.raises(ValueError, match="4096"):
        m.wait_async(4096, 0)
    with pytest.raises(OverflowError):
        m.wait_async(0, 1 << 32)
    with pytest.raises(TypeError, match="missing required argument 'expected'"):
        m.wait_async(0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        m.wait_async(0, 0, spin=1)
    coro = m.wait_async(0, 0)          # never awaited: dropping it unpins
    coro.close()
    # (3.12+ keeps a never-started coroutine's frame, and the watch in it,
    # until the coroutine object goes)
    del coro
    m.close()
    with pytest.raises(ValueError, match="mapping is closed"):
        m.wait_async(0, 0)


def test_truncated_file_raises_mapping_fault(shm_path, mode):
    with pymmapdev.open_file(shm_path, 8192) as m:
        os.truncate(shm_path, 0)
        with pytest.raises(pymmapdev.MappingFault, match="offset 4096"):
            run(m.wait_async(4096, 0))
        os.truncate(shm_path, 8192)


def test_read_only_mapping(m, shm_path, mode, run_child):
    child = child_waker(run_child, shm_path, "m.store_u32(0, 3); m.wake(0)")
    with pymmapdev.open_file(shm_path, readonly=True) as ro:
        m.store_u32(1020, 1)
        assert run(ro.wait_async(0, 0, GUARD)) is True
        assert ro.load_u32(0) == 3
    assert child.wait(GUARD) == 0, child.stderr.read()


def test_two_event_loops_in_two_threads(m, mode):
    results = {}

    def loop_thread(offset):
        results[offset] = run(m.wait_async(offset, 0, GUARD))

    threads = [threading.Thread(target=loop_thread, args=(off,)) for off in (0, 4)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    for off in (0, 4):
        m.store_u32(off, 1)
        m.wake(off)
    for t in threads:
        t.join(GUARD)
    assert results == {0: True, 4: True}


def test_a_failing_waiter_thread_fails_its_waiters(m, mode, monkeypatch):
    """Whatever goes wrong in the shared thread reaches the awaiters: none
    is left waiting forever."""
    def broken(watches, timeout):
        raise RuntimeError("the waiter thread broke")

    working = _core.wait_many
    monkeypatch.setattr(_core, "wait_many", broken)
    with pytest.raises(RuntimeError, match="the waiter thread broke"):
        run(m.wait_async(0, 0))
    monkeypatch.setattr(_core, "wait_many", working)
    assert run(m.wait_async(0, 0, 0.1)) is False            # a new thread serves again


# ---- Slot.wait_newer_async -------------------------------------------------------

def test_slot_wait_newer_async(m, shm_path, mode, run_child):
    slot = pymmapdev.Slot(m, SLOT, 32)
    assert run(slot.wait_newer_async(0, 0.05)) is False
    assert slot.wait_newer(0, 0.05) is False
    child = child_waker(run_child, shm_path,
                        f"pymmapdev.Slot(m, {SLOT}, 32).publish(b'from the child')")

    async def main():
        m.store_u32(1020, 1)
        return await ticking(slot.wait_newer_async(version=0, timeout=GUARD))

    result, ticks = run(main())
    assert result is True and slot.read() == (1, b"from the child")
    assert ticks >= 5
    assert m.load_u32(WAITERS_WORD) == 0             # the announced sleeper withdrew
    assert run(slot.wait_newer_async(0)) is True      # newer already: at once
    assert child.wait(GUARD) == 0, child.stderr.read()


def test_slot_cancel_withdraws_the_sleeper(m, mode):
    slot = pymmapdev.Slot(m, SLOT, 32)

    async def main():
        tasks = [asyncio.create_task(slot.wait_newer_async(0)) for _ in range(3)]
        await asyncio.sleep(0.05)
        announced = m.load_u32(WAITERS_WORD)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return announced

    assert run(main()) == 3
    assert m.load_u32(WAITERS_WORD) == 0


def test_slot_writer_died_mid_publish(m, mode):
    slot = pymmapdev.Slot(m, SLOT, 32)
    m.store_u64(SLOT, 3)               # odd: a publish that never finishes,
    m.store_u64(SLOT + 24, 0)          # by a writer nobody can check
    with pytest.raises(pymmapdev.PeerDied, match=f"offset {SLOT}"):
        run(slot.wait_newer_async(1, GUARD))
    with pytest.raises(pymmapdev.PeerDied):
        slot.wait_newer(1, GUARD)


def test_slot_writer_dies_while_we_wait(m, shm_path, mode, run_child):
    """A writer that dies mid-publish after we went to sleep is noticed by the
    thorough polls (every Watch.SLICE_NS), as in the blocking loop."""
    slot = pymmapdev.Slot(m, SLOT, 32)
    child = run_child(f"""
        import sys, time, pymmapdev
        m = pymmapdev.open_file(sys.argv[1])
        pymmapdev.Slot(m, {SLOT}, 32).publish(b"one")   # records this thread as writer
        while m.load_u32(1020) != 1:
            time.sleep(0.001)
        time.sleep(0.05)
        m.store_u64({SLOT}, m.load_u64({SLOT}) + 1)     # turns odd: mid-publish ...
        m.wake({SLOT})                                  # ... and exits
    """, shm_path)

    async def main():
        while slot.version != 1:
            await asyncio.sleep(0.001)
        m.store_u32(1020, 1)
        return await slot.wait_newer_async(1, GUARD)

    with pytest.raises(pymmapdev.PeerDied, match="died mid-publish"):
        run(main())
    assert child.wait(GUARD) == 0, child.stderr.read()
    assert m.load_u32(WAITERS_WORD) == 0


def test_slot_read_only_reader_polls(m, shm_path, mode, run_child):
    slot = pymmapdev.Slot(m, SLOT, 32)
    child = child_waker(run_child, shm_path, f"pymmapdev.Slot(m, {SLOT}, 32).publish(b'x')")
    with pymmapdev.open_file(shm_path, readonly=True) as ro:
        reader = pymmapdev.Slot(ro, SLOT, 32)
        m.store_u32(1020, 1)
        assert run(reader.wait_newer_async(0, GUARD)) is True
        assert reader.read() == (1, b"x")
    assert slot.version == 1
    assert child.wait(GUARD) == 0, child.stderr.read()


# ---- the primitive ---------------------------------------------------------------

def test_watch_word(m, mode):
    watch = _core.watch_word(m, 8, 0)
    assert watch.backend == "futex" and watch.wake_is_ready and not watch.closed
    assert watch.mapping is m
    with pytest.raises(BufferError):
        m.close()
    assert watch.arm() is False
    m.store_u32(8, 1)
    assert watch.poll() is True
    assert run(_aio.wait(watch, GUARD)) is True
    assert watch.closed                              # wait() closes it
    with pytest.raises(ValueError, match="watch is closed"):
        watch.poll()
    with pytest.raises(TypeError):
        _core.Watch()
    with pytest.raises(TypeError, match="watches"):
        _core.wait_many([m], 0)
    assert _core.wait_many([], 0) == []


def test_wait_many_refusing_a_later_item_keeps_no_reference_to_earlier_ones(m):
    # The watches before the refused item were already taken for the sleep:
    # the error must give them back, or the watch (and the pin it holds on
    # the mapping) lives for ever.
    watch = _core.watch_word(m, 8, 0)
    refs = sys.getrefcount(watch)
    for _ in range(3):
        with pytest.raises(TypeError, match="watches, not str"):
            _core.wait_many([watch, "not a watch"], 0)
    assert sys.getrefcount(watch) == refs
    watch.close()


def test_a_waiter_thread_that_leaves_gives_its_control_word_back(m):
    """An idle waiter thread leaves after LINGER; its control word (a memfd
    and its mapping) was left to the garbage collector, which freed them at
    some later moment (a leak test then counted one descriptor and two map
    lines fewer than its baseline: the thread object lived on in the
    garbage of an earlier test's abandoned wait).  It is closed as the
    thread leaves."""
    def until_the_waiter_threads_left():
        deadline = time.monotonic() + 4 * _aio.LINGER + GUARD
        while _aio._pool.threads and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _aio._pool.threads, "the idle waiter thread never left"

    gc.collect()
    gc.disable()
    try:
        # one an earlier test's wait left is still here for LINGER: its
        # descriptors, counted now, would be gone at the end
        until_the_waiter_threads_left()
        fds = len(os.listdir("/proc/self/fd"))
        m.store_u32(0, 0)

        async def woken():
            task = asyncio.ensure_future(m.wait_async(0, 0, timeout=GUARD))
            deadline = time.monotonic() + GUARD
            while not any(t.waiters for t in _aio._pool.threads):    # a thread has it
                assert time.monotonic() < deadline, "no waiter thread for the wait"
                await asyncio.sleep(0.001)
            # as garbage does (an abandoned wait's waiter names its thread);
            # taken while it serves the wait: once idle it leaves after
            # LINGER (2 s), which asyncio.run()'s teardown may outlast
            kept.extend(_aio._pool.threads)
            m.store_u32(0, 1)
            m.wake(0)
            return await task

        kept = []
        assert asyncio.run(woken()) is True
        until_the_waiter_threads_left()
        assert len(os.listdir("/proc/self/fd")) == fds
        del kept
    finally:
        gc.enable()


@pytest.mark.parametrize("failure", ["short read", "closed"])
def test_awaiters_of_a_failed_count_each_raise_their_own_exception(failure):
    """_CountReader gave every awaiter of a descriptor the same exception
    object: raised in each task, it gathered all their tracebacks in one
    __traceback__, and its __context__ was whatever the last task was
    handling, another task's exception.  Each awaiter now raises its own
    (same type and words), caused by the one the read raised."""
    counts, feed = os.pipe()
    closed = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    os.set_blocking(counts, False)

    async def awaiter(tag):
        try:
            raise LookupError(tag)          # what this task is handling
        except LookupError:
            try:
                await _aio.wait_count(counts, GUARD, closed)
            except (OSError, _aio.CountClosed) as exc:
                return exc
        return None

    async def main():
        waits = [asyncio.create_task(awaiter(tag)) for tag in ("a", "b")]
        await asyncio.sleep(0)              # both wait now
        if failure == "short read":
            os.write(feed, b"ab")
        else:
            os.eventfd_write(closed, 1)
        return await asyncio.wait_for(asyncio.gather(*waits), GUARD)

    try:
        a, b = asyncio.run(main())
    finally:
        for fd in (counts, feed, closed):
            os.close(fd)
    expected = _aio.ShortCount if failure == "short read" else _aio.CountClosed
    assert type(a) is type(b) is expected and a is not b
    assert a.args == b.args and str(a) == str(b)
    assert a.__context__.args == ("a",) and b.__context__.args == ("b",)
    if failure == "short read":
        assert a.errno == errno.EIO
        assert a.__cause__ is b.__cause__ and type(a.__cause__) is _aio.ShortCount
