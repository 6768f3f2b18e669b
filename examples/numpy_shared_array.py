"""One process fills a numpy array living in shared memory, another sums it.

No pickling, no copies: both processes view the same pages.

    python examples/numpy_shared_array.py [path]    (removed at the end)
"""
import multiprocessing
import os
import sys

import numpy as np

import pymmapdev

PATH = sys.argv[1] if len(sys.argv) > 1 else f"/dev/shm/pymmapdev-numpy-{os.getpid()}"
N = 1_000_000
READY = 0          # u32 flag word at offset 0; the array starts at 64
ARRAY_OFFSET = 64


def producer(path: str) -> None:
    with pymmapdev.open_file(path, create=False) as m:
        arr = m.ndarray("f8", shape=(N,), offset=ARRAY_OFFSET)
        arr[:] = np.arange(N, dtype="f8")
        del arr                      # release the buffer before closing
        m.store_u32(READY, 1)
        m.wake(READY)


def main() -> int:
    with pymmapdev.open_file(PATH, ARRAY_OFFSET + N * 8) as m:
        try:
            m.store_u32(READY, 0)
            child = multiprocessing.get_context("spawn").Process(target=producer, args=(PATH,))
            try:
                child.start()
            except OSError as exc:   # it died while being started (BrokenPipeError)
                sys.exit(f"numpy_shared_array: the producer died while starting: {exc}")
            while m.load_u32(READY) == 0:
                # (looked at again: it may have set the flag and exited meanwhile)
                if not child.is_alive() and m.load_u32(READY) == 0:
                    sys.exit(f"numpy_shared_array: the producer died "
                             f"(exit code {child.exitcode})")
                m.wait(READY, 0, timeout=1.0)
            child.join()
            arr = m.ndarray("f8", shape=(N,), offset=ARRAY_OFFSET)
            total = arr.sum()
            del arr
        finally:
            os.unlink(PATH)          # 8 MB in /dev/shm: gone on an error or Ctrl-C too
    print(f"sum of the shared array: {total:.0f} (expected {N * (N - 1) // 2})")
    return 0 if total == N * (N - 1) // 2 else 1


if __name__ == "__main__":
    sys.exit(main())
