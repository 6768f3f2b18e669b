"""One asyncio event loop waiting on shared memory without blocking:
a Slot another process publishes to, a word it bumps, and a task that
keeps ticking meanwhile.  File and memfd waits sleep in one shared waiter
thread; mmapdev devices and UIO interrupts in the loop itself.

    python examples/asyncio_waits.py
"""
import asyncio
import multiprocessing
import time

import pymmapdev

SLOT, WORD, SIZE = 0, 512, 4096


def producer(m: pymmapdev.Mapping) -> None:
    slot = pymmapdev.Slot(m, SLOT, 64)
    for n in range(1, 4):
        time.sleep(0.2)
        slot.publish(f"update {n}".encode())
    m.store_u32(WORD, 1)
    m.wake(WORD)


async def main() -> None:
    with pymmapdev.anonymous(SIZE) as m:
        slot = pymmapdev.Slot(m, SLOT, 64)
        child = multiprocessing.get_context("spawn").Process(target=producer, args=(m,))
        child.start()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        async def updates() -> None:
            version = 0
            while version < 3:
                await slot.wait_newer_async(version, timeout=30)
                version, data = slot.read()
                print(f"slot: {data.decode()}", flush=True)

        tick = asyncio.create_task(ticker())
        await asyncio.gather(updates(), m.wait_async(WORD, 0, timeout=30))
        tick.cancel()
        print(f"done: word = {m.load_u32(WORD)}, the loop ticked {ticks} times meanwhile")
        await asyncio.to_thread(child.join)


if __name__ == "__main__":
    asyncio.run(main())
