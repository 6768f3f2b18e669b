"""asyncio waits on shared memory: ``Mapping.wait_async``, ``Slot.wait_newer_async``.

The one primitive is :func:`wait`: ``await wait(watch, timeout)`` until a
:class:`pymmapdev._core.Watch` is over, with the blocking call's result
(True; False when *timeout* seconds pass first).  A watch is a blocking
wait split into polls (csrc/watch.h): its C side checks shared memory and
names the word and value to sleep on; this module decides *how* to sleep
without blocking the event loop, by the watch's ``backend``:

``futex`` (files, memfds)
    A futex cannot be polled, so a small pool of shared daemon threads
    sleeps for all of the process's waiters.  Where the kernel has
    ``futex_waitv`` (Linux 5.16) one thread sleeps on up to 127 words at
    once plus a private control word that the loops bump to make it pick up
    new or cancelled waiters; so a process needs one thread per 127
    concurrent waiters, and none while nobody waits (an idle thread exits
    after LINGER seconds; at once when the interpreter exits, as a
    subinterpreter cannot end while a thread of it lives).  Older kernels
    (5.10's Debian 11) can sleep on one futex per thread only: there each
    thread serves one waiter, sleeping in FALLBACK_SLICE slices so that a
    cancelled or timed-out waiter frees it within a slice, and the pool is
    bounded at FALLBACK_THREADS threads; waiters beyond that share threads,
    which take turns of ROTATE_SLICE on each (a bounded cost in latency
    instead of unbounded threads).
``mmapdev`` (our module's devices)
    No thread: the device's descriptor polls readable when its event
    counter moves (a WAKE on any word, a heartbeat) and GET_INFO re-arms it
    (kmod/fops.c).  All waiters on one descriptor share one
    ``loop.add_reader``; any event ends the waits whose wake-up alone is
    their condition, so they may end spuriously, as ``wait()`` may.
``poll`` (memory nobody can wake a sleeper on: other devices' memory, PCI
BARs, a VM's shared memory; and a read-only Slot reader, which cannot
announce itself to the writer)
    A timer per waiter, backing off from POLL_MIN to POLL_MAX seconds.

Whatever the backend, a waiter that watches a peer that may die (a writer
stalled mid-publish) is also polled thoroughly every ``Watch.SLICE_NS``, as
the blocking loop does.  Cancellation (``task.cancel()``, ``wait_for``)
removes the waiter from its backend and closes the watch, which withdraws
any sleeper it announced in shared memory and unpins the mapping.
"""
from __future__ import annotations

import asyncio
import atexit
import copy
import errno
import os
import sys
import threading
import weakref
from typing import Protocol, TypeVar

from . import _core

LINGER = 2.0                # seconds an idle waiter thread stays for reuse
FALLBACK_THREADS = 8        # the pool's bound without futex_waitv
FALLBACK_SLICE = 0.05       # a sole waiter's sleep slice without futex_waitv
ROTATE_SLICE = 0.001        # a shared thread's turn per waiter without it
POLL_MIN = 50e-6            # the 'poll' backend's first interval
POLL_MAX = _core.Watch.POLL_NS / 1e9   # ... and its longest: the blocking loop's
WAITV_WORDS = 127           # futex_waitv takes 128 words: ours + control
_PEER_SLICE = _core.Watch.SLICE_NS / 1e9
_R = TypeVar("_R")


class _Backend(Protocol):
    def prepare(self, waiter: _Waiter) -> None: ...
    def start(self, waiter: _Waiter) -> None: ...
    def rearm(self, waiter: _Waiter) -> None: ...
    def stop(self, waiter: _Waiter) -> None: ...


class _Waiter:
    """One await: its watch, its loop and future, and its backend's state."""

    __slots__ = ("watch", "loop", "future", "backend", "thread", "entry", "handle",
                 "interval", "peer_timer", "__weakref__")

    def __init__(self, watch: _core.Watch, loop: asyncio.AbstractEventLoop) -> None:
        self.watch = watch
        self.loop = loop
        self.future: asyncio.Future[bool] = loop.create_future()
        self.backend: _Backend = _backend(watch, loop)
        self.thread: _FutexThread | None = None
        self.entry: _Entry | None = None
        self.handle: asyncio.TimerHandle | None = None
        self.interval = POLL_MIN
        self.peer_timer: asyncio.TimerHandle | None = None

    # -- in the loop's thread ------------------------------------------------

    def _settle(self, woken: bool, thorough: bool = False) -> bool:
        """Look at the watch; True once the future is done."""
        if self.future.done():
            return True
        try:
            ready = (woken and self.watch.wake_is_ready) or self.watch.poll(thorough)
        except BaseException as exc:           # MappingFault, PeerDied, ...
            self.future.set_exception(exc)
            return True
        if ready:
            self.future.set_result(True)
        return ready

    def due(self, woken: bool) -> None:
        """The backend saw a wake-up (woken) or something to look at."""
        if not self._settle(woken):
            self.backend.rearm(self)
            self.watch_peer()

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)

    def expire(self) -> None:
        """The timeout: one last look, as the blocking loop takes."""
        if not self._settle(False):
            self.future.set_result(False)

    def watch_peer(self) -> None:
        if self.peer_timer is None and self.watch.watch_peer and not self.future.done():
            self.peer_timer = self.loop.call_later(_PEER_SLICE, self._check_peer)

    def _check_peer(self) -> None:
        self.peer_timer = None
        if not self._settle(False, thorough=True):
            self.watch_peer()

    def cancel_timers(self) -> None:
        for handle in (self.handle, self.peer_timer):
            if handle is not None:
                handle.cancel()
        self.handle = self.peer_timer = None


async def wait(watch: _core.Watch, timeout: float | None = None) -> bool:
    """Await *watch* (closed when this returns): True when its wait is over,
    False when *timeout* seconds (None: no limit) pass first."""
    try:
        loop = asyncio.get_running_loop()
        waiter = _Waiter(watch, loop)
        expiry = None
        try:
            waiter.backend.prepare(waiter)
            if watch.arm():
                return True
            if timeout is not None and timeout <= 0:
                return False
            waiter.backend.start(waiter)
            if timeout is not None:
                expiry = loop.call_later(timeout, waiter.expire)
            waiter.watch_peer()
            return await waiter.future
        finally:
            if expiry is not None:
                expiry.cancel()
            waiter.cancel_timers()
            waiter.backend.stop(waiter)
    finally:
        watch.close()


# ---- futexes: the shared waiter threads --------------------------------------
#
# The waiter threads hold their waiters only weakly.  A wait left pending in
# a loop nobody will run again (its thread ended without closing it) is then
# garbage: its task, coroutine, future and loop refer to one another and to
# nothing else, and collecting them runs the coroutine's finally, which
# closes the watch and unpins the mapping.  Held from here, all of it would
# stay for good, and the mapping pinned.  A loop closed but still referenced
# is seen by the thread's next look (_plan), within LINGER seconds while it
# has waiters: that timed look is the only periodic check, one per thread.

class _Entry:
    """A waiter thread's part of one waiter: the watch to sleep on, and the
    waiter weakly (see above).  *left*: its wait is over (stop(), which
    cannot take the lock), to be forgotten at the thread's next look."""

    __slots__ = ("watch", "waiter", "left")

    def __init__(self, waiter: _Waiter) -> None:
        self.watch = waiter.watch
        self.waiter = weakref.ref(waiter)
        self.left = False


class _FutexThread:
    """A daemon thread sleeping for up to *capacity* waiters at once."""

    def __init__(self, pool: _FutexPool, capacity: int) -> None:
        self.pool = pool
        self.capacity = capacity
        self.waiters: dict[_Entry, bool] = {}     # entry -> reported, not re-armed
        self.turn = 0
        # The control word: a private memfd page, so the loops can wake
        # this thread with an ordinary futex wake.  Closed as the thread
        # leaves (not left to the collector: this object may live on in
        # garbage an abandoned wait left); stop() pokes it without the
        # lock, so a poke may find it closed.
        fd = os.memfd_create("pymmapdev-aio", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, _core.PAGESIZE)
            self.control = _core.Mapping(fd, _core.PAGESIZE, kind="file")
        finally:
            os.close(fd)
        self.thread = threading.Thread(target=self._run, name="pymmapdev-aio-waiter",
                                       daemon=True)
        self.thread.start()

    def poke(self) -> None:
        """Make the thread look at its waiters again (if it is still there)."""
        try:
            self.control.fetch_add_u32(0, 1)
            self.control.wake(0, 1)
        except ValueError:          # closed: the thread has left
            pass

    def forget(self) -> None:
        """Drops the entries whose wait is over or can never resume (pool
        lock held): left, collected (see above), or their loop closed."""
        for entry in list(self.waiters):
            if entry.left:
                del self.waiters[entry]
                continue
            waiter = entry.waiter()
            if waiter is None or waiter.loop.is_closed():
                self._drop(entry, waiter)

    def _plan(self) -> tuple[list[_core.Watch], list[_Entry | None], float | None]:
        """What to sleep on next (pool lock held): the watches, whose each
        is (None: the control word), and for how long."""
        self.forget()
        active = [e for e, reported in self.waiters.items() if not reported]
        control = _core.watch_word(self.control, 0, self.control.load_u32(0))
        control.arm()           # names the word to sleep on; pokes come after it
        if not active:          # idle: linger, unless the interpreter is ending
            return [control], [None], 0.0 if self.pool.closing else LINGER
        if self.pool.waitv:         # LINGER: to see loops closed meanwhile
            return [control] + [e.watch for e in active], [None, *active], LINGER
        # One futex per sleep: a sole waiter in slices, several in turns.
        control.close()
        self.turn = (self.turn + 1) % len(active)
        slice_ = FALLBACK_SLICE if len(active) == 1 else ROTATE_SLICE
        return [active[self.turn].watch], [active[self.turn]], slice_

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:        # a bug of ours: fail the waiters, never strand them
            with self.pool.lock:
                if self in self.pool.threads:
                    self.pool.threads.remove(self)
                stranded = []
                for entry in list(self.waiters):
                    waiter = self._drop(entry, entry.waiter(), close=False)
                    if waiter is None:
                        entry.watch.close()     # over, or nobody can end it
                    else:
                        stranded.append(waiter)     # its fail() ends it
            for waiter in stranded:
                try:
                    waiter.loop.call_soon_threadsafe(waiter.fail, exc)
                except RuntimeError:
                    pass

    def _serve(self) -> None:
        # No waiter in a local while asleep: it would hold a forgotten loop.
        while True:
            with self.pool.lock:
                watches, owners, timeout = self._plan()
            try:
                due = _core.wait_many(watches, timeout)
            except OSError as exc:
                if exc.errno != errno.ENOSYS:
                    raise
                with self.pool.lock:          # futex_waitv went away (seccomp?)
                    self.pool.waitv = False
                continue
            finally:
                if owners[0] is None:
                    watches[0].close()
            with self.pool.lock:
                if not self.waiters and not due and timeout in (LINGER, 0.0):
                    self.pool.threads.remove(self)      # idle (for LINGER): leave
                    self.control.close()
                    return
                for index, err in due:
                    entry = owners[index]
                    if entry is not None and entry in self.waiters and not entry.left:
                        self.waiters[entry] = True    # (None: the control word)
                        self._report(entry, err == 0)

    def _report(self, entry: _Entry, woken: bool) -> None:
        waiter = entry.waiter()
        if waiter is None:
            return                  # collected: forget() drops it
        try:
            waiter.loop.call_soon_threadsafe(waiter.due, woken)
        except RuntimeError:        # its loop is closed: nobody waits
            self._drop(entry, waiter)

    def _drop(self, entry: _Entry, waiter: _Waiter | None, close: bool = True) -> _Waiter | None:
        """Forgets an entry (pool lock held); its waiter if that still waits.
        A wait whose loop is closed or gone can never run its finally (or
        did): close its watch here, or the mapping stays pinned for good."""
        del self.waiters[entry]
        if close:
            entry.watch.close()
        if waiter is None or entry.left:
            return None
        waiter.thread = None
        return waiter


class _FutexPool:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.threads: list[_FutexThread] = []
        self.waitv = bool(_core.HAVE_FUTEX_WAITV) and not os.environ.get(
            "PYMMAPDEV_NO_FUTEX_WAITV")
        self.closing = False        # the interpreter is ending: no lingering

    def shut_down(self) -> None:
        """At interpreter exit: end the threads now, not LINGER seconds later.
        A (sub)interpreter cannot end while a thread of it lives:
        Py_EndInterpreter() aborts the process ("not the last thread").
        Waits still pending fail: their loops can no longer run (or run in
        daemon threads about to stop); their watches close, as _drop()'s."""
        exc = RuntimeError("the interpreter is shutting down")
        with self.lock:
            self.closing = True
            threads = list(self.threads)
            stranded: list[_Waiter] = []
            for thread in threads:
                for entry in list(thread.waiters):
                    waiter = thread._drop(entry, entry.waiter())
                    if waiter is not None:
                        stranded.append(waiter)
                thread.poke()
        for waiter in stranded:
            try:
                waiter.loop.call_soon_threadsafe(waiter.fail, exc)
            except RuntimeError:    # its loop is closed
                pass
        for thread in threads:      # idle now: each leaves at its next look
            thread.thread.join(LINGER)

    # _Backend
    def prepare(self, waiter: _Waiter) -> None:
        pass

    def _room(self) -> _FutexThread:
        """The thread for one more waiter (lock held)."""
        for thread in self.threads:
            if len(thread.waiters) >= thread.capacity:
                thread.forget()         # maybe some left meanwhile
            if len(thread.waiters) < thread.capacity:
                return thread
        if self.waitv or len(self.threads) < FALLBACK_THREADS:
            thread = _FutexThread(self, WAITV_WORDS if self.waitv else 1)
            self.threads.append(thread)
            return thread
        return min(self.threads, key=lambda t: len(t.waiters))

    def start(self, waiter: _Waiter) -> None:
        entry = _Entry(waiter)
        with self.lock:
            thread = self._room()
            thread.waiters[entry] = False
            waiter.thread, waiter.entry = thread, entry
            thread.poke()

    def rearm(self, waiter: _Waiter) -> None:
        with self.lock:
            thread, entry = waiter.thread, waiter.entry
            if thread is not None and entry is not None and entry in thread.waiters:
                thread.waiters[entry] = False
                thread.poke()

    def stop(self, waiter: _Waiter) -> None:
        # Without the lock: a garbage collection inside any locked section
        # may finalize a wait (its loop gone, see above) and run this in the
        # thread holding the lock.  The waiter thread forgets the entry at
        # its next look, which the poke makes now.
        thread, entry = waiter.thread, waiter.entry
        waiter.thread = None
        if thread is not None and entry is not None:
            entry.left = True
            thread.poke()


# ---- mmapdev devices: the descriptor in the loop -----------------------------

class _DeviceReader:
    """The waiters of one loop on one mmapdev descriptor.

    poll() on the descriptor says "readable" once the device's event count
    moved past what this open file last saw through GET_INFO, and every
    GET_INFO resets that mark for *all* users of the open file.  So one
    reader serves them all: it takes the count before each new waiter's
    last look (prepare, then arm: a wake-up after that look is an event
    after the mark), and whenever the count is seen to have moved, every
    waiter already registered is told (its event may be the one that
    moved it).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self.loop = loop
        self.fd = fd
        self.registry = _readers(loop)
        self.waiters: set[_Waiter] = set()
        self.events: int | None = None

    def _count(self) -> bool:
        """Takes the event count (re-arming poll); True if it moved."""
        events = _core.device_info(self.fd)["events"]
        moved = self.events is not None and events != self.events
        self.events = events
        return moved

    def _tell_all(self) -> None:
        for waiter in list(self.waiters):
            waiter.due(True)

    def prepare(self, waiter: _Waiter) -> None:
        if self._count():
            self._tell_all()

    def start(self, waiter: _Waiter) -> None:
        if not self.waiters:
            self.loop.add_reader(self.fd, self._readable)
        self.waiters.add(waiter)

    def rearm(self, waiter: _Waiter) -> None:
        pass                        # still registered: the next event tells it

    def stop(self, waiter: _Waiter) -> None:
        self.waiters.discard(waiter)
        if not self.waiters:
            self.loop.remove_reader(self.fd)
            _unregister(self.registry, self.fd, self)

    def _readable(self) -> None:
        try:
            self._count()
        except OSError as exc:
            for waiter in list(self.waiters):
                if not waiter.future.done():
                    waiter.future.set_exception(exc)
            return
        self._tell_all()


# Each loop's readers by descriptor, weakly: held by the loop (add_reader)
# and their waiters only.  A reader refers to its loop and its waiters (and
# so to their futures and tasks); held from here, a loop dropped with a wait
# pending (its thread ended) could never be collected, and that wait would
# pin its mapping, and keep the loop's descriptors, for good.
_device_readers: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, weakref.WeakValueDictionary[int, _DeviceReader]] \
    = weakref.WeakKeyDictionary()


def _readers(loop: asyncio.AbstractEventLoop) -> weakref.WeakValueDictionary[int, _DeviceReader]:
    return _device_readers.setdefault(loop, weakref.WeakValueDictionary())


def _unregister(registry: weakref.WeakValueDictionary[int, _R], fd: int, reader: _R) -> None:
    """A reader left without waiters leaves its loop's registry.  Through the
    registry itself, not the loop: this may run while the loop is being
    collected (its wait's finally), when no new weak reference to it should
    be made."""
    if registry.get(fd) is reader:
        del registry[fd]


# ---- interrupt counts: UIO -----------------------------------------------------

class CountClosed(Exception):
    """wait_count()'s *closed* descriptor became readable: its owner closes."""


class _CountReader:
    """The awaiters of one loop on one descriptor whose read() of 4 bytes
    returns an event count once there is news (UIO: the interrupt count;
    the descriptor is non-blocking).  A read consumes the news for the
    whole open file, so one reader serves them all and hands every awaiter
    the same new count.  *closed* (an eventfd) becomes readable when the
    descriptor's owner closes it: the awaiters then raise CountClosed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, closed: int,
                 registry: weakref.WeakValueDictionary[int, _CountReader]) -> None:
        self.loop = loop
        self.fd = fd
        self.closed = closed
        self.registry = registry
        self.futures: set[asyncio.Future[int | None]] = set()

    def add(self, future: asyncio.Future[int | None]) -> None:
        if not self.futures:
            self.loop.add_reader(self.fd, self._readable)
            self.loop.add_reader(self.closed, self._fail, CountClosed())
        self.futures.add(future)

    def discard(self, future: asyncio.Future[int | None]) -> None:
        self.futures.discard(future)
        if not self.futures:
            self.loop.remove_reader(self.fd)
            self.loop.remove_reader(self.closed)
            _unregister(self.registry, self.fd, self)

    def _readable(self) -> None:
        if all(future.done() for future in self.futures):
            # Every wait has its answer (a cancel, a timeout, close) and
            # leaves at its task's next step, which removes this reader:
            # a count read now would reach nobody, and the next wait would
            # sleep past the interrupt it should return at once.
            return
        try:
            data = os.read(self.fd, 4)
        except BlockingIOError:
            return                  # another reader of the open file took it
        except OSError as exc:
            self._fail(exc)
            return
        try:
            count = event_count(data)
        except OSError as exc:
            self._fail(exc)
            return
        for future in self.futures:
            if not future.done():
                future.set_result(count)

    def _fail(self, exc: Exception) -> None:
        """Every awaiter raises its own copy of *exc* (type and words): one
        object raised in several tasks would gather all their tracebacks in
        its __traceback__, and each raise would make what that task was
        handling its __context__, seen by the others.  An *exc* that was
        raised (the read that failed) is each copy's cause: where it came
        from stays visible."""
        for future in self.futures:
            if not future.done():
                own = copy.copy(exc)
                if exc.__traceback__ is not None:
                    own.__cause__ = exc
                future.set_exception(own)


class ShortCount(OSError):
    """A read() of an event count returned another length than 4 bytes: an
    EIO whose words are its own, not a driver's EIO (its class says so to
    who translates those)."""


def event_count(data: bytes) -> int:
    """The count a read() of 4 bytes returned.  The kernel keeps it in a
    signed 32-bit int (UIO's atomic_t event) that goes on counting past
    2**31 - 1 by wrapping: unsigned, it is the 32-bit counter it is, from
    2**32 - 1 back to 0, never negative.  A read of another length is
    ShortCount (EIO)."""
    if len(data) != 4:
        raise ShortCount(errno.EIO, f"read {len(data)} bytes where a 4-byte event count was due")
    return int.from_bytes(data, sys.byteorder, signed=False)


_count_readers: weakref.WeakKeyDictionary[                  # weakly, as _device_readers
    asyncio.AbstractEventLoop, weakref.WeakValueDictionary[int, _CountReader]] \
    = weakref.WeakKeyDictionary()


async def wait_count(fd: int, timeout: float | None, closed: int) -> int | None:
    """The next event count read from *fd* (see _CountReader), or None when
    *timeout* seconds pass first; CountClosed once *closed* is readable."""
    loop = asyncio.get_running_loop()
    readers = _count_readers.setdefault(loop, weakref.WeakValueDictionary())
    reader = readers.get(fd)
    if reader is None:
        reader = readers[fd] = _CountReader(loop, fd, closed, readers)
    future: asyncio.Future[int | None] = loop.create_future()
    reader.add(future)
    def expire() -> None:
        if not future.done():
            future.set_result(None)

    expiry = loop.call_later(timeout, expire) if timeout is not None else None
    try:
        return await future
    finally:
        if expiry is not None:
            expiry.cancel()
        reader.discard(future)


# ---- memory nobody wakes: timers ---------------------------------------------

class _Poller:
    def prepare(self, waiter: _Waiter) -> None:
        pass

    def start(self, waiter: _Waiter) -> None:
        waiter.interval = POLL_MIN
        waiter.handle = waiter.loop.call_later(waiter.interval, self._tick, waiter)

    def _tick(self, waiter: _Waiter) -> None:
        waiter.handle = None
        waiter.due(False)

    def rearm(self, waiter: _Waiter) -> None:
        waiter.interval = min(waiter.interval * 2, POLL_MAX)
        waiter.handle = waiter.loop.call_later(waiter.interval, self._tick, waiter)

    def stop(self, waiter: _Waiter) -> None:
        if waiter.handle is not None:
            waiter.handle.cancel()
            waiter.handle = None


_poller = _Poller()
_pool = _FutexPool()


def _backend(watch: _core.Watch, loop: asyncio.AbstractEventLoop) -> _Backend:
    kind = watch.backend
    if kind == "futex":
        return _pool
    if kind == "mmapdev":
        fd = watch.mapping.fileno()
        readers = _readers(loop)
        reader = readers.get(fd)
        if reader is None:
            reader = readers[fd] = _DeviceReader(loop, fd)
        return reader
    return _poller


def _after_fork_in_child() -> None:
    """The threads did not come along; their waiters belong to the parent.
    End them (their watches, inherited, raise) instead of leaving them to
    wait for a thread that is gone, and forget them in the old pool, whose
    lock a thread of the parent may have held at the fork."""
    global _pool
    # the fresh state first: nothing below may leave the child the old one
    old, _pool = _pool, _FutexPool()
    _device_readers.clear()
    _count_readers.clear()
    for thread in old.threads:
        for entry in thread.waiters:
            waiter = entry.waiter()
            if waiter is None or entry.left:
                continue
            waiter.thread = None
            try:
                waiter.loop.call_soon(waiter.due, False)
            except Exception:           # a closed loop, (debug) another thread's, ...
                pass


os.register_at_fork(after_in_child=_after_fork_in_child)


def _shut_down() -> None:
    _pool.shut_down()               # the pool of now (a forked child has its own)


atexit.register(_shut_down)
