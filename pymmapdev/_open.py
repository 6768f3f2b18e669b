"""Constructors: turn a path into a Mapping.

Opening, sizing and error translation happen here in Python, where ``os``
already attaches errno and the path to every OSError; the C type only maps
the descriptor it is given (and keeps its own dup of it).
"""
from __future__ import annotations

import errno
import operator
import os
import stat

from . import _core

PAGESIZE = _core.PAGESIZE

_NO_FALLOCATE = {errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def _checked_size(size, what="size"):
    size = operator.index(size)
    if size <= 0:
        raise ValueError(f"{what} must be positive, not {size}")
    return size


def _reserve(fd, path, current, size):
    """Grow the file from *current* to *size* bytes with its blocks reserved.

    posix_fallocate both extends the file and reserves its blocks, so a full
    disk or tmpfs fails here with ENOSPC instead of a SIGBUS at the first
    write.  It never shrinks the file, unlike ftruncate, which matters when
    two processes create the same file with different sizes at once.
    """
    try:
        os.posix_fallocate(fd, current, size - current)
    except OSError as exc:
        if exc.errno not in _NO_FALLOCATE:
            raise OSError(exc.errno, f"cannot reserve {size} bytes: {exc.strerror}",
                          path) from None
        # The file system cannot reserve blocks: extend sparsely, and only
        # if nobody has grown the file past size in the meantime.
        if os.fstat(fd).st_size < size:
            os.ftruncate(fd, size)


def open_file(path, size=None, *, create=True, readonly=False, mode=0o600,
              populate=False):
    """Map *path* MAP_SHARED and return a :class:`Mapping`.

    The file is created (with *mode*) if missing and *create* is true, and
    extended to *size* bytes with its blocks reserved if shorter; a longer
    file is never shrunk.  ``size=None`` maps the whole existing file.
    """
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if size is not None:
        size = _checked_size(size)
    flags = os.O_CLOEXEC | (os.O_RDONLY if readonly else os.O_RDWR)
    if create and not readonly:
        flags |= os.O_CREAT
    fd = os.open(path, flags, mode)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if stat.S_ISCHR(st.st_mode):
            raise ValueError(f"{path} is a character device: use open_device()")
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path} is not a regular file and cannot be mapped")
        if size is None:
            if st.st_size == 0:
                raise ValueError(f"{path} is empty: pass size= to give it a size")
            size = st.st_size
        elif st.st_size < size:
            if readonly:
                raise ValueError(
                    f"{path} has {st.st_size} bytes, fewer than size={size}: a read-only "
                    f"mapping cannot extend it (open it writable or pass a smaller size)")
            _reserve(fd, path, st.st_size, size)
        return _core.Mapping(fd, size, 0, readonly=readonly, kind="file", path=path,
                             populate=populate)
    finally:
        os.close(fd)


def anonymous(size, *, name="pymmapdev"):
    """Shared memory with no path: a memfd, shared with children by fork or
    by passing ``m.fileno()`` (e.g. over a UNIX socket)."""
    size = _checked_size(size)
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        _reserve(fd, None, 0, size)
        return _core.Mapping(fd, size, 0, kind="file", path=None)
    finally:
        os.close(fd)


def open_device(path="/dev/mmapdev0", size=None, *, offset=0, readonly=False):
    """Map the buffer of an mmapdev device (the kernel module in ``kmod/``).

    *offset* must be a multiple of the page size; *size* defaults to the rest
    of the buffer after *offset*.
    """
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    offset = operator.index(offset)
    if size is not None:
        size = _checked_size(size)
    try:
        fd = os.open(path, os.O_CLOEXEC | (os.O_RDONLY if readonly else os.O_RDWR))
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            exc.errno, f"{exc.strerror} (is the mmapdev module loaded? "
            f"sudo modprobe mmapdev, or insmod kmod/mmapdev.ko)", path) from None
    except PermissionError as exc:
        raise PermissionError(
            exc.errno, f"{exc.strerror} (the node's permissions come from the module's "
            f"mode= parameter or the udev rule kmod/99-mmapdev.rules; join its group)",
            path) from None
    try:
        try:
            info = _core.device_info(fd)
        except OSError as exc:
            if exc.errno == errno.ENOTTY:
                raise ValueError(f"{path} is not an mmapdev device") from None
            raise OSError(exc.errno, exc.strerror, path) from None
        if offset < 0 or offset % info["page_size"]:
            raise ValueError(f"offset {offset} must be a non-negative multiple of the "
                             f"page size {info['page_size']}")
        available = info["size"] - offset
        if available <= 0:
            raise ValueError(f"offset {offset} is outside the device buffer of "
                             f"{info['size']} bytes")
        if size is None:
            size = available
        elif size > available:
            raise ValueError(f"offset {offset} + size {size} is outside the device "
                             f"buffer of {info['size']} bytes")
        return _core.Mapping(fd, size, offset, readonly=readonly, kind="device", path=path)
    finally:
        os.close(fd)
