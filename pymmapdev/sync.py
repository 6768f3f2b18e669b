"""Coordination through a mapping: a lock and a torn-free slot.

Both live *in* the mapped memory, so any process that maps the same file or
device (related or not) can use them; the Python objects only remember
where.  They are implemented in C (``pymmapdev._core``); this module is
their documented home.

``Lock(m, offset)``
    A process-shared lock in :attr:`Lock.SIZE` (64) bytes at an offset that
    is a multiple of :attr:`Lock.ALIGN` (64); zero bytes are a free lock, so
    a new file needs no set-up.  Its whole state is plain words (the
    holder's thread id and start time): nothing a peer writes there can make
    this process crash or write elsewhere.  When a holder dies, the next
    ``acquire`` takes the lock over, sets :attr:`Lock.owner_died` and issues
    :class:`OwnerDiedWarning`: repair the protected state before releasing.
    (Where that warning is an error, ``acquire`` raises it, holds nothing, and
    leaves the lock as a dead holder's: the next ``acquire`` is told in turn.)
    The lock is owned by a thread and is not recursive (acquiring it again
    from the owner raises RuntimeError); a fork()ed child does not hold its
    parent's locks.  Works on file, memfd and device mappings; all its users
    must share one pid namespace (a dead holder could not be told from a
    live one otherwise), which the first user records.

``Slot(m, offset, capacity)``
    A seqlock "latest value" cell: one writer ``publish()``-es byte strings
    of at most *capacity* bytes, any number of readers ``read()`` the latest
    ``(version, bytes)``, never torn, and ``wait_newer()`` sleeps until a
    newer version is out.  It occupies :meth:`Slot.size_for` (capacity)
    bytes at an offset that is a multiple of 8; zero bytes are an empty slot
    at version 0.  A writer that dies mid-publish makes ``read()`` raise
    :class:`PeerDied` instead of waiting forever; ``read(timeout=...)``
    returns None when the time runs out first.
"""
from __future__ import annotations

from ._core import Lock, OwnerDiedWarning, PeerDied, Slot

__all__ = ["Lock", "OwnerDiedWarning", "PeerDied", "Slot"]
