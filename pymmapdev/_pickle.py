"""Pickling of Mapping, Lock and Slot, so that they reach a child under every
multiprocessing start method (fork, spawn, forkserver) and through Process,
Pool and ProcessPoolExecutor.

A pickle never carries the bytes, only how to map them again:

- a file mapping: its path, size, offset and readonly flag, plus the file's
  (st_dev, st_ino) and inode generation (ext4 gives a freed inode number to
  the next new file: the generation tells them apart), so that a path that
  now names another file fails loudly instead of silently sharing nothing
  (checked before the path is opened: opening a device that took its place
  is already an action of its driver);
- a device mapping: its path, size, offset and readonly flag, plus the
  device's number (a PCI resource file's (st_dev, st_ino)), checked the
  same way;
- an anonymous mapping (a memfd, which has no path): its descriptor, handed
  over the way multiprocessing passes sockets and connections
  (``multiprocessing.reduction.DupFd``: inherited by a spawned child,
  passed over a UNIX socket otherwise).  A descriptor means nothing outside
  multiprocessing, so a plain ``pickle.dumps`` of one raises TypeError.
- a Lock, a Slot or a Channel: its mapping, offset (and capacity, modes); the lock's state
  lives in the shared memory, so a child's Lock is the same lock (it does not
  hold it even if the pickling thread did: a lock is owned by a thread).

Registered with copyreg (every pickler) and, for anonymous mappings, with
multiprocessing's ForkingPickler only.  The registration goes by exact type,
so it holds whatever class ``pymmapdev.Lock`` and ``pymmapdev.Slot`` are.
"""
from __future__ import annotations

import copyreg
import errno
import fcntl
import os
import stat
import struct
from multiprocessing.reduction import DupFd, ForkingPickler
from typing import Any, Callable

from ._open import OPEN_FLAGS, map_device_fd
from ._core import Mapping
from .channel import Channel
from .sync import Lock, Slot

# _IOR('v', 1, long); the kernel writes an int at the start of the long
FS_IOC_GETVERSION = 0x80007601 | struct.calcsize("l") << 16

# what a reducer returns: a callable and its arguments
Reduced = tuple[Callable[..., Any], tuple[Any, ...]]


def _open_if_same(path: str, flags: int, same: Callable[[os.stat_result], None]) -> int:
    """Open *path* only if it still names what the mapping was pickled from.

    Opening a device is an action of its driver (a tty may become the
    controlling terminal, a watchdog starts counting down): a path replaced
    by a symlink to one must not reach open(2).  So the path is opened
    O_PATH first (no driver is involved), *same* checks that inode (raising
    if it is another), and only that inode is then opened, through its
    /proc/self/fd link.  Without /proc, the path is opened again
    (O_NONBLOCK, O_NOCTTY) and checked again.
    """
    flags |= OPEN_FLAGS
    handle = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        same(os.fstat(handle))
        if os.path.isdir("/proc/self/fd"):
            try:
                return os.open(f"/proc/self/fd/{handle}", flags)
            except OSError as exc:       # with the path, not /proc's link
                raise OSError(exc.errno, exc.strerror, path) from None
    finally:
        os.close(handle)
    fd = os.open(path, flags)
    try:
        same(os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _generation(fd: int) -> int | None:
    """The inode's generation (FS_IOC_GETVERSION: ext4, xfs, btrfs draw a
    new one whenever an inode number is given to a new file), or None where
    the file system keeps none (tmpfs, whose inode numbers only grow)."""
    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETVERSION, bytes(8))[:4])[0])
    except OSError:
        return None


def _replaced(path: str) -> OSError:
    return OSError(errno.ESTALE, "the path names another file than the one the mapping was "
                   "pickled from (it was replaced or renamed)", path)


def _rebuild_file(path: str, size: int, offset: int, readonly: bool,
                  ident: tuple[int, int, int | None]) -> Mapping:
    def same(st: os.stat_result) -> None:
        # a regular file only: a node made on a reused inode number is not
        # opened (its driver would act) before the generation can be read
        if (st.st_dev, st.st_ino) != ident[:2] or not stat.S_ISREG(st.st_mode):
            raise _replaced(path)

    fd = _open_if_same(path, os.O_RDONLY if readonly else os.O_RDWR, same)
    try:
        if _generation(fd) != ident[2]:      # O_PATH descriptors take no ioctl
            raise _replaced(path)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size < offset + size:
            raise ValueError(f"{path!r} has {st.st_size} bytes, fewer than offset {offset} + "
                             f"size {size} of the pickled mapping (was it truncated?)")
        return Mapping(fd, size, offset, readonly=readonly, kind="file", path=path)
    finally:
        os.close(fd)


def _device_ident(st: os.stat_result) -> tuple[int, int]:
    """What names a device: a node's device number (any node of it will do),
    a PCI resource file's inode."""
    if stat.S_ISCHR(st.st_mode):
        return stat.S_IFCHR, st.st_rdev
    return st.st_dev, st.st_ino


def _rebuild_device(path: str, size: int, offset: int, readonly: bool,
                    ident: tuple[int, int]) -> Mapping:
    def same(st: os.stat_result) -> None:
        if _device_ident(st) != ident:
            raise _replaced(path)

    fd = _open_if_same(path, os.O_RDONLY if readonly else os.O_RDWR, same)
    try:
        return map_device_fd(fd, path, size, offset, readonly)
    finally:
        os.close(fd)


def _rebuild_anonymous(dupfd: Any, size: int, offset: int, readonly: bool) -> Mapping:
    fd = dupfd.detach()
    try:
        return Mapping(fd, size, offset, readonly=readonly, kind="file", path=None)
    finally:
        os.close(fd)     # the Mapping keeps its own duplicate


def _absolute(path: str) -> str:
    """*path* from the root, for a child that may run in another directory.
    Not os.path.abspath: it folds "link/.." away as text, where the kernel
    follows the link first and then goes up from its target."""
    path = os.path.join(os.getcwd(), path)
    return path if ".." in path.split("/") else os.path.normpath(path)


def _anchored(m: Mapping, st: os.stat_result) -> str:
    """The path to send for *m* (whose descriptor's stat is *st*): its path
    from the root.  A relative path is resolved against the directory we
    are in now; if we changed directory since the mapping was opened (a
    daemon's chdir("/")) that names no file, or another one.  Then the
    kernel's name for the open file (/proc/self/fd) is tried, and its
    directory with the path's last name (a file open_file() created is
    named there "#<inode> (deleted)": it was made with O_TMPFILE, then
    linked).  Each is sent only if it names the mapped file; failing all,
    the path as resolved, which the child refuses loudly (ENOENT, ESTALE)."""
    assert m.path is not None
    path = _absolute(m.path)
    if os.path.isabs(m.path) or _names(path, st):
        return path
    try:
        now = os.readlink(f"/proc/self/fd/{m.fileno()}")
    except OSError:
        return path
    beside = os.path.join(os.path.dirname(now), os.path.basename(m.path))
    for candidate in (now, beside):
        if candidate.startswith("/") and _names(candidate, st):
            return candidate
    return path


def _names(path: str, st: os.stat_result) -> bool:
    try:
        there = os.stat(path)
    except OSError:
        return False
    return (there.st_dev, there.st_ino) == (st.st_dev, st.st_ino)


def _reduce_mapping(m: Mapping) -> Reduced:
    """Pickle by path; anonymous mappings only through multiprocessing."""
    if m.closed:
        raise ValueError("cannot pickle a closed mapping")
    if m.kind == "device" and m.path is not None:
        st = os.fstat(m.fileno())
        return _rebuild_device, (_anchored(m, st), m.size, m.offset, m.readonly,
                                 _device_ident(st))
    if m.path is None:
        raise TypeError("an anonymous mapping has no path: it can only be passed to "
                        "multiprocessing children (its file descriptor goes with it), "
                        "not pickled for anyone else; map a file to share by path")
    st = os.fstat(m.fileno())
    path = _anchored(m, st)
    inode = (st.st_dev, st.st_ino, _generation(m.fileno()))
    return _rebuild_file, (path, m.size, m.offset, m.readonly, inode)


def _reduce_mapping_mp(m: Mapping) -> Reduced:
    """ForkingPickler: anonymous mappings travel as their descriptor."""
    if m.kind == "file" and m.path is None and not m.closed:
        return _rebuild_anonymous, (DupFd(m.fileno()), m.size, m.offset, m.readonly)
    return _reduce_mapping(m)


def _reduce_lock(lock: Lock) -> Reduced:
    return type(lock), (lock.mapping, lock.offset)


def _reduce_slot(slot: Slot) -> Reduced:
    return type(slot), (slot.mapping, slot.offset, slot.capacity)


def _rebuild_channel(m: Mapping, offset: int, capacity: int, multi_producer: bool,
                     multi_consumer: bool, owned: bool = False) -> Channel:
    ch = Channel(m, offset, capacity, multi_producer=multi_producer,
                 multi_consumer=multi_consumer)
    if owned:               # open_channel's: the copy owns its own mapping too
        setattr(ch, "_owned", m)
    return ch


def _reduce_channel(ch: Channel) -> Reduced:
    # the channel's state is in the region; a child's Channel is a new user
    # of it (it claims its side on first use, as any process does)
    return _rebuild_channel, (ch.mapping, ch.offset, ch.capacity, ch.multi_producer,
                              ch.multi_consumer, getattr(ch, "_owned", None) is not None)


copyreg.pickle(Mapping, _reduce_mapping)
ForkingPickler.register(Mapping, _reduce_mapping_mp)
copyreg.pickle(Lock, _reduce_lock)
copyreg.pickle(Slot, _reduce_slot)
copyreg.pickle(Channel, _reduce_channel)
