"""asyncio on mmapdev devices: wait_async and Slot.wait_newer_async sleep in
the event loop's own poll of the device descriptor (kmod/fops.c reports an
event, GET_INFO re-arms), so no thread is started; the wakers are other
processes; cancellation unregisters and unpins.
"""
import asyncio
import gc
import os
import threading
import time

import pytest

import pymmapdev
from pymmapdev import _aio, _core

from . import devlib
from _sync_workers import ticking

pytestmark = pytest.mark.device

PAGE = devlib.PAGE
BASE = 40 * PAGE                 # a region no other device test uses
WORD, OTHER, READY = BASE, BASE + 4, BASE + 8
SLOT = BASE + 64
GUARD = 60



def waker(act):
    """A forked process (cheap under TCG) that maps the device itself, waits
    until the awaiter says it is asleep (READY), and runs act(m)."""
    def body():
        with pymmapdev.open_device() as m:
            while m.load_u32(READY) != 1:
                time.sleep(0.001)
            time.sleep(0.2)
            act(m)
    return devlib.fork_call(body)


@pytest.fixture
def m():
    with pymmapdev.open_device() as mapping:
        mapping[BASE:BASE + PAGE] = bytes(PAGE)
        yield mapping


def no_waiter_threads():
    return not [t for t in threading.enumerate() if t.name == "pymmapdev-aio-waiter"]




def run(coro):
    return asyncio.run(asyncio.wait_for(coro, GUARD))


def test_word_woken_by_another_process_without_a_thread(m):
    assert _core.watch_word(m, WORD, 0).backend == "mmapdev"

    def act(m):
        m.store_u32(WORD, 9)
        m.wake(WORD)

    pid = waker(act)

    async def main():
        m.store_u32(READY, 1)
        result = await ticking(m.wait_async(WORD, 0, GUARD))
        return result, no_waiter_threads()

    (result, ticks), threadless = run(main())
    assert devlib.reap(pid, GUARD) == 0
    assert result is True and m.load_u32(WORD) == 9
    assert ticks >= 5 and threadless


def test_timeout_and_differs(m):
    assert run(m.wait_async(WORD, 0, 0.05)) is False
    assert run(m.wait_async(WORD, 1, GUARD)) is True
    assert m.wait(WORD, 0, 0.05) is False


def test_two_waiters_one_descriptor(m):
    """Both share one add_reader; one GET_INFO must not hide the other's event."""
    def act(m):
        for off in (WORD, OTHER):
            m.store_u32(off, 1)
            m.wake(off)
            time.sleep(0.05)

    pid = waker(act)

    async def main():
        tasks = [asyncio.create_task(m.wait_async(off, 0, GUARD)) for off in (WORD, OTHER)]
        await asyncio.sleep(0.05)
        m.store_u32(READY, 1)
        return await asyncio.gather(*tasks)

    assert run(main()) == [True, True]
    assert devlib.reap(pid, GUARD) == 0


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


@pytest.mark.filterwarnings("ignore:unclosed event loop:ResourceWarning")
def test_a_wait_left_pending_by_an_ended_thread_unpins(m, forgotten_loops):
    """A thread runs its own loop until a wait sleeps and ends, the loop
    dropped unclosed: nothing can resume that wait.  No registry of ours
    may keep the loop (the descriptor's reader refers to it and to the
    wait), so collecting it ends the wait, which unpins the mapping."""
    def abandon():
        loop = asyncio.new_event_loop()
        task = loop.create_task(m.wait_async(WORD, 0))
        loop.run_until_complete(asyncio.sleep(0.1))
        assert not task.done()

    t = threading.Thread(target=abandon)
    t.start()
    t.join(GUARD)
    assert not t.is_alive()
    gc.collect()
    assert not any(_aio._device_readers.values())
    m.close()                   # no thread involved: unpinned by the collection


def test_slot_on_the_device(m):
    slot = pymmapdev.Slot(m, SLOT, 32)
    pid = waker(lambda m: pymmapdev.Slot(m, SLOT, 32).publish(b"dev"))

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
    assert devlib.reap(pid, GUARD) == 0


def test_one_loop_waits_on_everything(kmod):
    """A file futex, a device word, a Slot and UIO interrupts awaited in one
    event loop at once, others cancelled meanwhile, and a task that keeps
    ticking: the loop never blocks."""
    kmod.reload("uio=1 heartbeat_ms=20")
    shm = f"/dev/shm/pymmapdev-aio-{os.getpid()}"
    with pymmapdev.open_file(shm, PAGE) as f, pymmapdev.open_device() as d, \
            pymmapdev.UIO("mmapdev") as u:
        d[BASE:BASE + PAGE] = bytes(PAGE)
        slot, idle_slot = pymmapdev.Slot(d, SLOT, 32), pymmapdev.Slot(d, SLOT + 128, 32)

        def act(d):
            with pymmapdev.open_file(shm) as f:
                f.store_u32(0, 1)
                f.wake(0)
            d.store_u32(WORD, 1)
            d.wake(WORD)
            pymmapdev.Slot(d, SLOT, 32).publish(b"all at once")

        pid = waker(act)

        async def device_word():
            while d.load_u32(WORD) == 0:       # the heartbeat's events end it early
                await d.wait_async(WORD, 0, GUARD)
            return d.load_u32(WORD)

        async def interrupts(n):
            counts = []
            for _ in range(n):
                u.enable_irq()
                counts.append(await u.wait_irq_async(GUARD))
            return counts

        async def main():
            waits = [f.wait_async(0, 0, GUARD), device_word(),
                     slot.wait_newer_async(0, GUARD), interrupts(3)]
            idle = [asyncio.create_task(c) for c in
                    (f.wait_async(4, 0), d.wait_async(OTHER, 0), idle_slot.wait_newer_async(0))]
            await asyncio.sleep(0.05)
            d.store_u32(READY, 1)
            done, ticks = await ticking(asyncio.gather(*waits))
            for task in idle:
                task.cancel()
            cancelled = await asyncio.gather(*idle, return_exceptions=True)
            return done, ticks, cancelled

        (file_ok, word, newer, counts), ticks, cancelled = run(main())
        assert file_ok is True and f.load_u32(0) == 1
        assert word == 1 and newer is True and slot.read() == (1, b"all at once")
        assert len(counts) == 3 and counts == sorted(counts) and None not in counts
        assert ticks >= 10, "the event loop was blocked"
        assert all(isinstance(c, (asyncio.CancelledError, bool)) for c in cancelled)
        assert d.load_u32(SLOT + 128 + 16) == 0 == d.load_u32(SLOT + 16)   # no sleeper left
        assert devlib.reap(pid, GUARD) == 0
    os.unlink(shm)                     # every mapping closed: nothing pinned them
