"""Coordination through a mapping: a robust lock and a torn-free slot.

Both live *in* the mapped memory, so any process that maps the same file
(related or not) can use them; the Python objects here only remember where.

``Lock(m, offset)``
    A process-shared, robust ``pthread_mutex_t``.  It occupies
    :attr:`Lock.SIZE` (64) bytes at an offset that is a multiple of
    :attr:`Lock.ALIGN` (64), and those bytes must be zero before the first
    ``Lock()`` on them (a new file is).  The first ``Lock()`` initialises it;
    initialisation happens exactly once, however many processes race (a state
    word moved 0 -> "initialising by pid" -> "ready" by compare-exchange; a
    waiter takes over if the initialiser died).  When a holder dies inside its
    critical section, the next ``acquire`` succeeds, sets
    :attr:`Lock.owner_died` and issues :class:`OwnerDiedWarning`: repair the
    protected state before releasing.  The lock is owned by a thread and is
    not recursive (acquiring it again from the owner raises RuntimeError); a
    fork()ed child does not hold its parent's locks.  Device mappings are
    refused (``TypeError``): shared and robust futexes do not work on the
    mmapdev buffer's pages.

``Slot(m, offset, capacity)``
    A seqlock "latest value" cell: one writer ``publish()``-es byte strings of
    at most *capacity* bytes, any number of readers ``read()`` the latest
    ``(version, bytes)``, never torn, and ``wait_newer()`` sleeps until a newer
    version is out.  It occupies :meth:`Slot.size_for` (capacity) bytes at an
    offset that is a multiple of 8 (layout below); zero bytes are an empty slot
    at version 0.  Works on file and device mappings alike.
"""
from __future__ import annotations

import operator
import time
import warnings

from . import _core

__all__ = ["Lock", "OwnerDiedWarning", "Slot"]

# lock_acquire() results (csrc/lock.c)
_TIMEOUT, _ACQUIRED, _OWNER_DIED = 0, 1, 2


class OwnerDiedWarning(RuntimeWarning):
    """A Lock was acquired from a holder that died inside its critical section."""


class Lock:
    """A robust, process-shared mutex stored at *offset* in mapping *m*.

    ``acquire(timeout=None) -> bool``, ``release()``, and ``with lock:``.
    After an acquire, :attr:`owner_died` says whether the previous holder died
    while holding it (the lock is usable again; the data it guards may be
    half-updated).  While held, the mapping cannot be closed: closing it would
    unmap a mutex that sits on the thread's robust list.
    """

    SIZE = 64
    ALIGN = 64

    __slots__ = ("_m", "_offset", "_pins", "owner_died")

    def __init__(self, m, offset):
        offset = operator.index(offset)
        _core.lock_init(m, offset)
        self._m = m
        self._offset = offset
        self._pins = []        # one buffer export per held acquisition
        self.owner_died = False

    @property
    def mapping(self):
        return self._m

    @property
    def offset(self):
        return self._offset

    def acquire(self, timeout=None):
        """Take the lock; wait at most *timeout* seconds (None: no limit).

        Returns True when acquired, False on timeout.  Ctrl-C interrupts the
        wait with KeyboardInterrupt.
        """
        result = _core.lock_acquire(self._m, self._offset, timeout)
        if result == _TIMEOUT:
            return False
        # Hold an export so m.close() fails (BufferError) while we hold it.
        self._pins.append(memoryview(self._m))
        self.owner_died = result == _OWNER_DIED
        if self.owner_died:
            warnings.warn(
                f"the previous holder of the Lock at offset {self._offset} died "
                f"while holding it; the state it protects may need repair",
                OwnerDiedWarning, stacklevel=2)
        return True

    def release(self):
        """Release the lock; RuntimeError if this thread does not hold it."""
        _core.lock_release(self._m, self._offset)
        self._pins.pop().release()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    def __repr__(self):
        return f"<pymmapdev.Lock offset={self._offset} of {self._m!r}>"


_HEADER, _ALIGN, _SEQ_LOW = _core.slot_layout()
_WAITERS = 16                    # u32 readers asleep in wait_newer()


class Slot:
    """A seqlock "latest value" cell at *offset* in *m* holding up to *capacity* bytes.

    Layout (offset a multiple of 8; native byte order)::

        +0   u64  seq: 2 * version, odd while a publish is in progress
        +8   u64  length of the current value
        +16  u32  number of readers asleep in wait_newer()
        +20  u32  reserved
        +24  capacity bytes of value (size_for() rounds up to 8)

    One writer at a time: guard ``publish`` with a :class:`Lock` if several
    processes publish.  If a writer dies mid-publish, readers block in
    ``read()`` until the next publish (Ctrl-C still works).  Versions count
    publishes from 0 (the empty slot).
    """

    HEADER = _HEADER

    __slots__ = ("_m", "_offset", "_capacity", "_wait_off", "_waiters_off")

    @staticmethod
    def size_for(capacity):
        """Bytes a slot of *capacity* occupies (header + value, rounded to 8)."""
        capacity = operator.index(capacity)
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, not {capacity}")
        return _HEADER + (capacity + _ALIGN - 1) // _ALIGN * _ALIGN

    def __init__(self, m, offset, capacity):
        offset = operator.index(offset)
        capacity = operator.index(capacity)
        self._m = m
        self._offset = offset
        self._capacity = capacity
        self._wait_off = offset + _SEQ_LOW
        self._waiters_off = offset + _WAITERS
        # Validate without reading the value: read() would block on a slot
        # whose writer died mid-publish.
        if capacity < 0:
            raise ValueError(f"slot capacity must be >= 0, not {capacity}")
        m.load_u64(offset)                       # open, aligned, header in range
        if offset + _HEADER + capacity > m.size:
            raise ValueError(f"offset {offset} + {_HEADER + capacity} bytes (a slot of "
                             f"capacity {capacity}) is outside the mapping of {m.size} bytes")

    @property
    def mapping(self):
        return self._m

    @property
    def capacity(self):
        return self._capacity

    @property
    def offset(self):
        return self._offset

    @property
    def version(self):
        """The version of the latest completed publish."""
        return self._m.load_u64(self._offset) >> 1

    def publish(self, data):
        """Store *data* (bytes-like, at most capacity bytes) as the new value.

        Returns the new version and wakes readers sleeping in wait_newer().
        """
        return _core.slot_publish(self._m, self._offset, self._capacity, data)

    def read(self):
        """Return ``(version, bytes)`` of the latest value, never torn."""
        return _core.slot_read(self._m, self._offset, self._capacity)

    def wait_newer(self, version, timeout=None):
        """Sleep until a version other than *version* is published.

        Returns True when one is (read() then returns it, or a later one),
        False after *timeout* seconds (None: no limit).  On a read-only
        mapping a reader cannot announce itself to the writer, so it polls
        every millisecond instead of being woken.
        """
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be a non-negative number or None, not {timeout!r}")
        m = self._m
        deadline = None if timeout is None else time.monotonic() + timeout
        remaining = timeout
        while True:
            seq = m.load_u64(self._offset)
            if seq >> 1 != version:
                # (if seq is odd, a still newer version is being written;
                # read() returns whichever is complete)
                return True
            if m.readonly:
                poll = 0.001 if remaining is None else min(0.001, remaining)
                m.wait(self._wait_off, seq & 0xFFFFFFFF, poll)
            else:
                m.fetch_add_u32(self._waiters_off, 1)
                try:
                    # re-check after announcing ourselves: a publish that
                    # missed the announcement is seen here
                    seq = m.load_u64(self._offset)
                    if seq >> 1 != version:
                        return True
                    m.wait(self._wait_off, seq & 0xFFFFFFFF, remaining)
                finally:
                    m.fetch_add_u32(self._waiters_off, -1)
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return m.load_u64(self._offset) >> 1 != version

    def __repr__(self):
        return (f"<pymmapdev.Slot offset={self._offset} capacity={self._capacity} "
                f"of {self._m!r}>")
