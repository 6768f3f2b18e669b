"""UIO devices: a driver's memory maps and its interrupt, from Python.

A UIO driver (uio_pci_generic, uio_pdrv_genirq, ivshmem's, our module's
``uio=1``...) exposes ``/dev/uioN``: map *i* is mmap()ed at offset
``i * PAGESIZE``, a read() of 4 bytes blocks until the next interrupt and
returns the interrupt count, a write() of 1 or 0 unmasks or masks it.
sysfs (``/sys/class/uio/uioN``) names the device and its maps.

>>> with pymmapdev.UIO("mmapdev") as u:         # or UIO("/dev/uio0")
...     regs = u.map(0)                          # a Mapping of map 0
...     u.enable_irq()
...     count = u.wait_irq(timeout=1.0)          # the new count, or None
...     # (the kernel's 32-bit counter: it wraps from 2**32 - 1 to 0)
"""
from __future__ import annotations

import errno
import math
import operator
import os
import re
import select
import stat
import struct
import threading
import time
import weakref
from types import TracebackType

from . import _aio, _core, _sysfs
from ._open import MAX_OFFSET, _open as open_path, _str_path

_UIO_NAME = re.compile(r"^uio\d+$")
_POLL_MAX_MS = 2**31 - 1
DEV = "/dev"                    # where the uioN nodes are (tests point it elsewhere)

_AnyPath = str | bytes | os.PathLike[str] | os.PathLike[bytes]


def _resolve(path_or_name: _AnyPath) -> str:
    """The node to open for UIO()'s argument (str, bytes or os.PathLike,
    decoded as os does), by one rule:

    - an os.PathLike (a pathlib.Path...): that path, whatever its text
      (relative to the working directory without a ``/``): a Path is
      meant as one, never as a name;
    - ``uioN``: the device's node, /dev/uioN;
    - text with a ``/`` in it that names an existing file: that path;
    - else the name a driver gave its device (/sys/class/uio/uioN/name;
      any text, a ``/`` included): that device's /dev/uioN;
    - else FileNotFoundError naming the argument and the UIO devices there
      are.  A relative path without a ``/`` is a name: write ``./x``."""
    text = _str_path(path_or_name)
    if not isinstance(path_or_name, (str, bytes)):
        return text
    if _UIO_NAME.match(text):
        return f"{DEV}/{text}"
    if os.sep in text and os.path.lexists(text):
        return text
    known = _sysfs.uio_names()
    for device in known:
        if _sysfs.read_text(f"{_sysfs.uio_dir(device)}/name") == text:
            return f"{DEV}/{device}"
    listed = ", ".join(f"{d} ({_sysfs.read_text(f'{_sysfs.uio_dir(d)}/name')})"
                       for d in known) or "none"
    what = "no such path, and no UIO device" if os.sep in text else "no UIO device"
    raise FileNotFoundError(errno.ENOENT, f"{what} is named {text!r} (UIO devices: "
                            f"{listed}; is the driver loaded?)", text)


def _sysfs_device(st: os.stat_result, path: str) -> str:
    """The /sys/class/uio entry (uioN) whose dev is the node's device
    number: its maps are the ones this node maps.  The minor is not always
    N of uioN, so none is guessed: a node sysfs does not list is refused."""
    number = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    for entry in _sysfs.uio_names():
        if _sysfs.read_text(f"{_sysfs.uio_dir(entry)}/dev") == number:
            return entry
    raise OSError(errno.ENODEV, f"no entry in {_sysfs.SYS}/class/uio has this UIO node's "
                  f"device number {number} (its dev file): its maps and name are unknown "
                  f"(a stale node, or another /sys?)", path)


class UIO:
    """A UIO device, by path (``/dev/uio0``), device name (``uio0``) or the
    name its driver gave it (``/sys/class/uio/uioN/name``): str, bytes or
    os.PathLike.  An os.PathLike (pathlib.Path) is always a path; of str
    and bytes, ``uioN`` is a device name, text with a ``/`` is a path if
    one exists there, else, as any other text, a driver's name (see
    _resolve); a node sysfs does not list is refused (OSError ENODEV).

    Holds the device open (``fileno()``) until :meth:`close`; mappings made
    with :meth:`map` stay usable after it.  close() ends waits in other
    threads or tasks (they raise ValueError); the descriptor is closed once
    they have left.
    """

    def __init__(self, path_or_name: _AnyPath, *, readonly: bool = False) -> None:
        self._fd = -1
        # Reentrant: a signal handler may close() while this thread holds it
        # (at any call inside a locked section); nothing done under it is
        # left half-way by that (see _hold_fd, close)
        self._lock = threading.RLock()
        # Calls using the descriptor under way: waits, and map() and the
        # interrupt's writes, which call Python code (readonly's __bool__, a
        # signal handler) between taking the number and using it
        self._users = 0
        self._closing = -1          # the descriptor close() left to the last of them
        path = _resolve(path_or_name)
        self.path = path
        # as open_device() opens: O_NOCTTY, no planted symlink followed; and
        # O_NONBLOCK, kept: the waits read the count without blocking
        fd = open_path(path, os.O_RDONLY if readonly else os.O_RDWR)
        try:
            st = os.fstat(fd)
            if _sysfs.char_class(st) != "uio":
                kind = "a character device of class " + repr(_sysfs.char_class(st)) \
                    if stat.S_ISCHR(st.st_mode) else "not a character device"
                raise ValueError(f"{path!r} is not a UIO device ({kind})")
            device = _sysfs_device(st, path)
        except BaseException:
            os.close(fd)
            raise
        try:
            # written by close() to wake the waits
            self._wakeup = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        _open_devices.add(self)
        self.readonly = readonly
        self.device = device
        base = _sysfs.uio_dir(self.device)
        self.name: str = _sysfs.read_text(f"{base}/name") or ""
        self.version: str = _sysfs.read_text(f"{base}/version") or ""

    # ---- maps -------------------------------------------------------------------

    @property
    def maps(self) -> list[tuple[int, int, int]]:
        """[(addr, size, offset), ...] of maps 0, 1, ... from sysfs: the
        memory's address as the driver gave it (0 where it keeps it to
        itself), its size from there, and the offset in its first page
        where the memory starts (map() covers [offset, size))."""
        return [(m.addr, m.size, m.offset) for m in _sysfs.uio_maps(self.device)]

    def map(self, index: int, *, readonly: bool | None = None) -> _core.Mapping:
        """A :class:`Mapping` of map *index*: its memory from its *offset* in
        its first page to its *size* (which counts from the page's start,
        as the kernel does: it refuses an mmap() longer than *size*).  UIO
        selects map i by the mmap offset i * PAGESIZE."""
        index = operator.index(index)
        self._check_open()
        maps = _sysfs.uio_maps(self.device)
        found = [m for m in maps if m.number == index]
        entry = f"{_sysfs.uio_dir(self.device)}/maps/map{index}"
        if not found:
            if index >= 0 and os.path.isdir(entry):
                raise ValueError(f"{self.path!r}: map {index} cannot be mapped: sysfs does "
                                 f"not give its addr, size and offset as numbers ({entry})")
            have = ", ".join(str(m.number) for m in maps) or "none"
            raise IndexError(f"{self.path!r} has no map {index} (its maps: {have})")
        m = found[0]
        if not 0 <= m.offset < m.size:
            raise ValueError(f"{self.path!r}: map {index} cannot be mapped: sysfs gives its "
                             f"offset {m.offset} in its first page and its size {m.size} "
                             f"({entry})")
        if m.number * _core.PAGESIZE + m.size > MAX_OFFSET:
            raise ValueError(f"{self.path!r}: map {index} cannot be mapped: its mmap offset "
                             f"{index} * {_core.PAGESIZE} + its size {m.size} is past the "
                             f"largest file offset ({MAX_OFFSET}) ({entry})")
        readonly = self.readonly if readonly is None else readonly
        if self.readonly and not readonly:
            raise ValueError(f"{self.path!r} is open read-only: map({index}, readonly=True), "
                             f"or open it writable")
        offset = m.number * _core.PAGESIZE + m.offset
        # held: a close() meanwhile (readonly's __bool__, asked by Mapping
        # after it took the number) must not free the number for another
        # file to be mapped in the device's place
        fd = self._hold_fd()
        try:
            return _core.Mapping(fd, m.size - m.offset, offset, readonly=readonly,
                                 kind="device", path=self.path, waker="poll")
        except OSError as exc:
            raise type(exc)(exc.errno, f"{exc.strerror} (the driver refused to map map "
                            f"{index}: {m.size} bytes)", self.path) from None
        finally:
            self._release_fd()

    # ---- the interrupt ----------------------------------------------------------

    def _irqcontrol(self, on: int) -> None:
        self._check_open()
        if self.readonly:
            raise ValueError(f"{self.path!r} is open read-only: masking and unmasking its "
                             f"interrupt writes to it (open it writable)")
        fd = self._hold_fd()        # as map(): never written to another file
        try:
            os.write(fd, struct.pack("=i", on))
        except OSError as exc:
            why = {errno.ENOSYS: "the driver cannot mask its interrupt (no irqcontrol)",
                   errno.EIO: "the device has no interrupt"}.get(exc.errno or 0, exc.strerror)
            raise OSError(exc.errno, why, self.path) from None
        finally:
            self._release_fd()

    def enable_irq(self) -> None:
        """Unmask the interrupt (write 1).  Many drivers mask it each time
        it fires: unmask again after handling one."""
        self._irqcontrol(1)

    def disable_irq(self) -> None:
        """Mask the interrupt (write 0)."""
        self._irqcontrol(0)

    def _read_error(self, exc: OSError) -> OSError:
        """The OSError, naming the path, of a read of the count (both waits)."""
        why = "the device has no interrupt, or its driver went away" \
            if exc.errno == errno.EIO and not isinstance(exc, _aio.ShortCount) \
            else exc.strerror
        return OSError(exc.errno, why, self.path)

    def _read_count(self, fd: int) -> int | None:
        try:
            return _aio.event_count(os.read(fd, 4))
        except BlockingIOError:
            return None
        except OSError as exc:
            raise self._read_error(exc) from None

    def wait_irq(self, timeout: float | None = None) -> int | None:
        """Sleep until an interrupt this open device has not reported yet
        (one that came since the last wait returns at once); its count
        (interrupts since the device appeared), or None when *timeout*
        seconds pass first.  The count is the kernel's 32-bit counter,
        unsigned: it wraps from 2**32 - 1 to 0 (compare counts modulo
        2**32).  Signal handlers run meanwhile (Ctrl-C raises
        KeyboardInterrupt)."""
        timeout = _core.timeout_seconds(timeout)
        fd = self._hold_fd()
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            poller.register(self._wakeup, select.POLLIN)
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                # poll() takes an int of milliseconds: longer waits go in slices
                events = poller.poll(None if left is None else min(math.ceil(left * 1000),
                                                                   _POLL_MAX_MS))
                self._check_open()                      # close() woke us
                if events:
                    count = self._read_count(fd)
                    if count is not None:
                        return count
                if deadline is not None and time.monotonic() >= deadline:
                    return None
        finally:
            self._release_fd()

    async def wait_irq_async(self, timeout: float | None = None) -> int | None:
        """wait_irq() for asyncio: the event loop polls the descriptor (no
        thread); every awaiter of this UIO object gets the same new count."""
        timeout = _core.timeout_seconds(timeout)
        fd = self._hold_fd()
        try:
            return await _aio.wait_count(fd, timeout, self._wakeup)
        except OSError as exc:
            raise self._read_error(exc) from None
        except _aio.CountClosed:
            raise ValueError(f"UIO device {self.path!r} is closed") from None
        finally:
            self._release_fd()

    # ---- lifetime ---------------------------------------------------------------

    def fileno(self) -> int:
        self._check_open()
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def _check_open(self) -> None:
        if self._fd < 0:
            raise ValueError(f"UIO device {self.path!r} is closed")

    def _hold_fd(self) -> int:
        with self._lock:
            # counted in before the descriptor is read (no call between):
            # a close() from a signal handler after this leaves the
            # descriptors open for _release_fd to close
            self._users += 1
            fd = self._fd
        if fd < 0:
            self._release_fd()
            self._check_open()
        return fd

    def _release_fd(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users > 0 or self._closing < 0:
                return
            fd, self._closing = self._closing, -1
        os.close(fd)
        os.close(self._wakeup)

    def close(self) -> None:
        """Close the device.  Waits under way in other threads or tasks
        raise ValueError; the descriptor is closed when the last of them,
        and of map()s and interrupt writes under way, has left (until then
        its number cannot be reused under them)."""
        with self._lock:
            fd, self._fd = self._fd, -1    # no call between: a nested close() returns
            if fd < 0:
                return
            if self._users > 0:
                self._closing = fd
                os.eventfd_write(self._wakeup, 1)
                return
        os.close(fd)
        os.close(self._wakeup)

    def __enter__(self) -> UIO:
        self._check_open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"maps={len(self.maps)}"
        return f"<pymmapdev.UIO {self.path!r} name={self.name!r} {state}>"


_open_devices: weakref.WeakSet[UIO] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """The parent's waits did not come along (and a lock may have been
    held by one of them): nothing is under way in the child.  The wakeup
    eventfd is one object shared with the parent: a close() on either
    side would wake the other's waits, which would then find their device
    open and poll again at once (or, asyncio's, raise 'closed').  The child
    gets one of its own, under the same number."""
    for device in list(_open_devices):
        device._lock = threading.RLock()
        device._users = 0
        if device._closing >= 0:
            fd, device._closing = device._closing, -1
            os.close(fd)
            os.close(device._wakeup)
        elif device._fd >= 0:
            _replace_wakeup(device._wakeup)


def _replace_wakeup(fd: int) -> None:
    try:
        fresh = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    except OSError:         # out of descriptors: it stays shared, as it was
        return
    try:
        os.dup2(fresh, fd, inheritable=False)
    finally:
        os.close(fresh)


os.register_at_fork(after_in_child=_after_fork_in_child)
