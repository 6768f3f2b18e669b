"""Bodies of the multiprocessing children of test_pickle: they receive the
pickled Mapping, Lock and Slot objects as arguments (never a path).

In an importable module of their own so that spawn and forkserver children
can find them.
"""
import os
import time

# Layout of the mappings shared by the workers of one test.
ARRIVED = 0          # u32: workers that reached the rendezvous
COUNTER = 8          # u64: bumped non-atomically, under the Lock
SLOT = 64            # a Slot of SLOT_CAPACITY bytes
SLOT_CAPACITY = 64
NOTES = 1024         # file mapping: each worker's note at NOTES + 64 * worker
GUARD = 60.0         # hang guard: a bug fails the test, never hangs it


def note(worker):
    return f"worker {worker} pid {os.getpid()}".encode()


def _rendezvous(m, parties):
    """Wait until *parties* workers are here: proves they run at once (a pool
    that ran the tasks one after another would time out here)."""
    m.fetch_add_u32(ARRIVED, 1)
    m.wake(ARRIVED, parties)
    deadline = time.monotonic() + GUARD
    while (seen := m.load_u32(ARRIVED)) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {seen} of {parties} workers arrived")
        m.wait(ARRIVED, seen, 0.1)


def bump(anon, filem, lock, slot, worker, parties, rounds):
    """Write a note into the file mapping *filem*, then increment COUNTER of
    the anonymous mapping *anon* *rounds* times with a read, a yield and a
    write under *lock* (lost updates unless it excludes), and publish once to
    *slot* (one writer at a time: under the lock too)."""
    filem.write(NOTES + 64 * worker, note(worker))
    _rendezvous(anon, parties)
    for _ in range(rounds):
        with lock:
            value = anon.read_u64(COUNTER)
            os.sched_yield()             # invite the other worker in
            anon.write_u64(COUNTER, value + 1)
    with lock:
        slot.publish(f"worker {worker}".encode())
    return os.getpid()
