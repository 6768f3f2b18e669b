"""A ProcessPoolExecutor fills one shared numpy array, a block of rows per task.

The tasks receive the Mapping itself as an argument: an anonymous mapping
travels to the workers as its file descriptor (a file mapping would travel
by path), whichever start method the pool uses, so every worker writes into
the very pages the parent then reads.  Nothing is copied back.

    python examples/pool_numpy_array.py [fork|spawn|forkserver]
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import sys

import numpy as np

import pymmapdev

ROWS, COLS = 1024, 512
BLOCK = 128                      # rows per task


def fill_rows(m: pymmapdev.Mapping, start: int, stop: int) -> int:
    """Row r of the array becomes r * COLS + [0, 1, ..., COLS - 1]."""
    arr = m.ndarray("f8", shape=(ROWS, COLS))
    arr[start:stop] = np.arange(start * COLS, stop * COLS, dtype="f8").reshape(-1, COLS)
    del arr                      # release the buffer before the mapping goes
    return stop - start


def main() -> int:
    method = sys.argv[1] if len(sys.argv) > 1 else "spawn"
    if len(sys.argv) > 2 or method not in multiprocessing.get_all_start_methods():
        sys.exit(__doc__)
    ctx = multiprocessing.get_context(method)
    with pymmapdev.anonymous(ROWS * COLS * 8) as m:
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as pool:
            done = sum(pool.map(fill_rows, [m] * (ROWS // BLOCK), range(0, ROWS, BLOCK),
                                range(BLOCK, ROWS + 1, BLOCK)))
        arr = m.ndarray("f8", shape=(ROWS, COLS))
        ok = done == ROWS and bool((arr.ravel() == np.arange(ROWS * COLS)).all())
        total = float(arr.sum())
        del arr
    print(f"{method}: {done} rows filled by the pool, sum {total:.0f} "
          f"(expected {ROWS * COLS * (ROWS * COLS - 1) // 2})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
