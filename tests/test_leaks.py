"""Leak checks in the style of psutil's memory-leak tests.

Each public method is called 10^5 times (success and error paths); the
number of live Python memory blocks (sys.getallocatedblocks: catches a
reference leak even in a release build) and the process RSS must not grow.
Opening and closing mappings must not leak descriptors or mappings.
"""
import gc
import os
import sys

import pytest

import pymmapdev

CALLS = 100_000
PAGE = pymmapdev.PAGESIZE


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def assert_no_leak(fn, calls=CALLS, noise=200):
    for _ in range(1000):       # warm caches, free lists, lazy imports
        fn()
    gc.collect()
    blocks, memory = sys.getallocatedblocks(), rss()
    for _ in range(calls):
        fn()
    gc.collect()
    grown_blocks = sys.getallocatedblocks() - blocks
    grown_rss = rss() - memory
    # One leaked object per call would be >= calls blocks; allow noise.
    assert grown_blocks < noise, f"{grown_blocks} Python memory blocks leaked over {calls} calls"
    assert grown_rss < 4 << 20, f"RSS grew by {grown_rss} bytes over {calls} calls"


def raises(exc, fn, *args):
    def call():
        try:
            fn(*args)
        except exc:
            return
        raise AssertionError(f"{fn} did not raise {exc}")
    return call


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("leaks") / "m")
    m = pymmapdev.open_file(path, 4 * PAGE)
    ro = pymmapdev.open_file(path, readonly=True)
    closed = pymmapdev.open_file(path)
    closed.close()
    yield m, ro, closed
    m.close()
    ro.close()


CASES = {
    "read": lambda m, ro, c: lambda: m.read(100, 64),
    "write": lambda m, ro, c: lambda: m.write(100, b"x" * 64),
    "getitem": lambda m, ro, c: lambda: m[5],
    "slice": lambda m, ro, c: lambda: m[10:200],
    "setslice": lambda m, ro, c: lambda: m.__setitem__(slice(10, 14), b"abcd"),
    "read_u64": lambda m, ro, c: lambda: m.read_u64(8),
    "write_u32": lambda m, ro, c: lambda: m.write_u32(8, 0xFFFFFFFF),
    "fetch_add_u64": lambda m, ro, c: lambda: m.fetch_add_u64(16, 1),
    "compare_exchange_u32": lambda m, ro, c: lambda: m.compare_exchange_u32(24, 0, 1),
    "exchange_u64": lambda m, ro, c: lambda: m.exchange_u64(32, 2**64 - 1),
    "wake": lambda m, ro, c: lambda: m.wake(40, 1),
    "read_words": lambda m, ro, c: lambda: m.read_words(64, 16, 2),
    "write_words": lambda m, ro, c: lambda: m.write_words(64, [1, 2, 3], 8),
    "write_words_overflow": lambda m, ro, c: raises(OverflowError, m.write_words, 64, [1, 256], 1),
    "wait_differs": lambda m, ro, c: lambda: m.wait(44, 12345, 0),
    "flush_async": lambda m, ro, c: lambda: m.flush(0, 10, wait=False),
    "madvise": lambda m, ro, c: lambda: m.madvise(pymmapdev.MADV_NORMAL, 0, 10),
    "memoryview": lambda m, ro, c: lambda: memoryview(m).release(),
    "len_size_repr": lambda m, ro, c: lambda: (len(m), m.size, repr(m), m.path, m.kind),
    # error paths
    "read_out_of_range": lambda m, ro, c: raises(ValueError, m.read, 4 * PAGE, 1),
    "typed_misaligned": lambda m, ro, c: raises(ValueError, m.read_u32, 2),
    "typed_overflow": lambda m, ro, c: raises(OverflowError, m.write_u16, 0, 70000),
    "write_readonly": lambda m, ro, c: raises(TypeError, ro.write, 0, b"x"),
    "atomic_readonly": lambda m, ro, c: raises(TypeError, ro.fetch_add_u32, 0, 1),
    "closed_read": lambda m, ro, c: raises(ValueError, c.read, 0, 1),
    "closed_buffer": lambda m, ro, c: raises(ValueError, memoryview, c),
    "bad_slice_len": lambda m, ro, c: raises(IndexError, m.__setitem__, slice(0, 4), b"abc"),
    "negative_offset": lambda m, ro, c: raises(ValueError, m.write, -1, b"x"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_method_does_not_leak(maps, name):
    assert_no_leak(CASES[name](*maps))


def test_ndarray_does_not_leak(maps):
    m = maps[0]
    # numpy's own caches grew by 205-262 blocks in ~1 run of 10 (none over
    # 10^5 calls): a leak per call would be 20000
    assert_no_leak(lambda: m.ndarray("u4", shape=(4, 4), offset=64), calls=20_000, noise=1000)
    sub = __import__("numpy").dtype(("u4", (2, 3)))     # its dimensions appended to the shape
    assert_no_leak(lambda: m.ndarray(sub, shape=3, offset=64), calls=20_000, noise=1000)


def test_slot_and_lock_do_not_leak(maps):
    m = maps[0]
    slot = pymmapdev.Slot(m, 1024, 64)
    lock = pymmapdev.Lock(m, 2048)

    def use():
        slot.publish(b"payload")
        slot.read()
        slot.read(timeout=0)
        slot.wait_newer(0, timeout=0)
        pymmapdev.Slot(m, 1024, 64)
        with pymmapdev.Lock(m, 2048):
            lock.locked()
        lock.acquire(timeout=0)
        lock.release()
    assert_no_leak(use, calls=50_000)


def test_channel_does_not_leak(tmp_path):
    cap = 8192
    m = pymmapdev.open_file(tmp_path / "channel", pymmapdev.Channel.size_for(cap))
    ch = pymmapdev.Channel(m, 0, cap)
    batch = [b"a", b"bb", b"ccc"]

    def use():
        ch.send(b"payload")
        ch.recv()
        ch.recv(timeout=0)
        ch.send_many(batch)
        ch.recv_many(10)
        with ch.reserve(16) as buf:
            buf[:4] = b"abcd"
        with ch.recv_view() as view:
            bytes(view[:4])
        len(ch)
        try:
            ch.send(bytes(cap))
        except ValueError:
            pass
        pymmapdev.Channel(m, 0, cap)
    assert_no_leak(use, calls=20_000)
    del ch
    m.close()


def test_async_waits_do_not_leak(maps):
    """Awaits that end at once, at their timeout and after a sleep in the
    shared waiter thread: watches, futures and pins all go."""
    import asyncio
    m = maps[0]
    slot = pymmapdev.Slot(m, 1024, 64)
    loop = asyncio.new_event_loop()

    async def sleep_then_wake():
        task = loop.create_task(m.wait_async(48, m.load_u32(48)))
        await asyncio.sleep(0)
        m.fetch_add_u32(48, 1)
        m.wake(48)
        await task

    def use():
        loop.run_until_complete(m.wait_async(44, 12345))
        loop.run_until_complete(m.wait_async(52, 0, 0))
        loop.run_until_complete(slot.wait_newer_async(slot.version + 1, 0))
        loop.run_until_complete(sleep_then_wake())
    try:
        assert_no_leak(use, calls=5_000)
    finally:
        loop.close()


def test_open_close_does_not_leak_fds_or_mappings(tmp_path):
    path = tmp_path / "cycle"

    def count():
        with open("/proc/self/maps") as f:
            return len(os.listdir("/proc/self/fd")), sum(1 for _ in f)

    def cycle():
        with pymmapdev.open_file(path, PAGE) as m:
            m.write_u32(0, 1)
        try:
            pymmapdev.open_file(tmp_path / "missing", create=False)
        except FileNotFoundError:
            pass
    cycle()
    # Earlier tests' garbage (an abandoned event loop's descriptors, a
    # waiter thread's objects) goes first: freed by a collection during
    # the cycles, it read as fewer descriptors than the baseline.  And
    # fewer is no leak: only more is.
    gc.collect()
    before = count()
    assert_no_leak(cycle, calls=20_000)
    after = count()
    assert after[0] <= before[0] and after[1] <= before[1], (before, after)
