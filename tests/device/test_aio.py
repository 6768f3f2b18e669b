"""asyncio on mmapdev devices: wait_async and Slot.wait_newer_async sleep in
the event loop's own poll of the device descriptor (kmod/fops.c reports an
event, GET_INFO re-arms), so no thread is started; the wakers are other
processes; cancellation unregisters and unpins.
"""
import asyncio
import threading

import pytest

import pymmapdev
from pymmapdev import _aio, _core

from . import devlib

pytestmark = pytest.mark.device

PAGE = devlib.PAGE
BASE = 40 * PAGE                 # a region no other device test uses
WORD, OTHER, READY = BASE, BASE + 4, BASE + 8
SLOT = BASE + 64
GUARD = 60

WAKER = """
import sys, time, pymmapdev
with pymmapdev.open_device() as m:
    while m.load_u32(int(sys.argv[1])) != 1:      # the awaiter is asleep
        time.sleep(0.001)
    time.sleep(0.2)
    exec(sys.argv[2])
"""


@pytest.fixture
def m():
    with pymmapdev.open_device() as mapping:
        mapping[BASE:BASE + PAGE] = bytes(PAGE)
        yield mapping


def no_waiter_threads():
    return not [t for t in threading.enumerate() if t.name == "pymmapdev-aio-waiter"]


async def ticking(coro):
    ticks = 0

    async def tick():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        return await coro, ticks
    finally:
        ticker.cancel()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, GUARD))


def test_word_woken_by_another_process_without_a_thread(m):
    assert _core.watch_word(m, WORD, 0).backend == "mmapdev"
    proc = devlib.python(WAKER, READY, f"m.store_u32({WORD}, 9); m.wake({WORD})")

    async def main():
        m.store_u32(READY, 1)
        result = await ticking(m.wait_async(WORD, 0, GUARD))
        return result, no_waiter_threads()

    (result, ticks), threadless = run(main())
    out, err = proc.communicate(timeout=GUARD)
    assert proc.returncode == 0, err
    assert result is True and m.load_u32(WORD) == 9
    assert ticks >= 5 and threadless


def test_timeout_and_differs(m):
    assert run(m.wait_async(WORD, 0, 0.05)) is False
    assert run(m.wait_async(WORD, 1, GUARD)) is True
    assert m.wait(WORD, 0, 0.05) is False


def test_two_waiters_one_descriptor(m):
    """Both share one add_reader; one GET_INFO must not hide the other's event."""
    proc = devlib.python(WAKER, READY, f"""
for off in ({WORD}, {OTHER}):
    m.store_u32(off, 1); m.wake(off); time.sleep(0.05)
""")

    async def main():
        tasks = [asyncio.create_task(m.wait_async(off, 0, GUARD)) for off in (WORD, OTHER)]
        await asyncio.sleep(0.05)
        m.store_u32(READY, 1)
        return await asyncio.gather(*tasks)

    assert run(main()) == [True, True]
    assert proc.communicate(timeout=GUARD)[1] == "" and proc.returncode == 0


def test_cancel_unregisters_and_unpins(m):
    async def main():
        task = asyncio.create_task(m.wait_async(WORD, 0))
        await asyncio.sleep(0.05)
        with pytest.raises(BufferError):
            m.close()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return dict(_aio._readers(asyncio.get_running_loop()))

    assert run(main()) == {}
    m.close()


def test_slot_on_the_device(m):
    slot = pymmapdev.Slot(m, SLOT, 32)
    proc = devlib.python(WAKER, READY, f"pymmapdev.Slot(m, {SLOT}, 32).publish(b'dev')")

    async def main():
        cancelled = asyncio.create_task(slot.wait_newer_async(0))
        await asyncio.sleep(0.05)
        cancelled.cancel()
        await asyncio.gather(cancelled, return_exceptions=True)
        m.store_u32(READY, 1)
        return await slot.wait_newer_async(0, GUARD)

    assert run(main()) is True
    assert slot.read() == (1, b"dev")
    assert m.load_u32(SLOT + 16) == 0          # every announced sleeper withdrew
    assert proc.communicate(timeout=GUARD)[1] == "" and proc.returncode == 0
