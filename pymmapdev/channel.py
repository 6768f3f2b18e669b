"""Message channels in shared memory (the C type is ``pymmapdev._core.Channel``).

One region of any mapping (file, memfd, mmapdev device) holds one channel:
``Channel.size_for(capacity)`` bytes at an offset that is a multiple of 64.
Zero bytes are an empty channel, and every process (related or not)
constructs it the same way: ``Channel(m, offset, capacity)``.

A record becomes visible only when complete, so a producer that dies
mid-message leaves nothing torn behind, and a restarted producer continues
on the same channel.  By default a channel has one producer thread and one
consumer thread (the fast path: no atomic read-modify-write per message); a
second live producer is refused with RuntimeError.  With
``multi_producer=True`` / ``multi_consumer=True`` any number share a side,
taking it per message like a lock that survives a holder's death.

Everything in the region is checked before use: garbage written by a peer
raises :class:`ChannelCorrupt`, never a read or write outside the region.

This module adds, in Python, what composes the C primitives: the zero-copy
context managers, numpy arrays and asyncio.
"""
from __future__ import annotations

import asyncio
import contextlib
import math
import operator
import os
import struct
import time

from . import _aio, _core
from ._open import _str_path, open_file_checked

__all__ = ["Channel", "ChannelCorrupt", "open_channel"]

ChannelCorrupt = _core.ChannelCorrupt

_SEND, _RECV = 0, 1

# how long an asyncio wait that watches a peer sleeps between its looks:
# the blocking loop's slice
_PEER_SLICE = _core.Watch.SLICE_NS / 1e9

# send_array's header: magic, header length, ndim, dtype length; then the
# shape (u64 each) and the dtype string, padded to 8 bytes.
_ARRAY = struct.Struct("<4sHHI")
_ARRAY_MAGIC = b"PMAR"


def _array_header(arr):
    dtype = arr.dtype.str.encode("ascii")
    if arr.dtype.hasobject or arr.dtype.fields is not None:
        raise ValueError(f"send_array: dtype {arr.dtype} is not a plain numeric type")
    size = _ARRAY.size + 8 * arr.ndim + len(dtype)
    size += -size % 8
    header = bytearray(size)
    _ARRAY.pack_into(header, 0, _ARRAY_MAGIC, size, arr.ndim, len(dtype))
    struct.pack_into(f"<{arr.ndim}Q", header, _ARRAY.size, *arr.shape)
    start = _ARRAY.size + 8 * arr.ndim
    header[start:start + len(dtype)] = dtype
    return bytes(header)


def _parse_array_header(raw, length):
    """(dtype string, shape, header size) from a received record, checked:
    the bytes come from a peer."""
    if len(raw) < _ARRAY.size:
        magic = size = ndim = dtype_len = 0
    else:
        magic, size, ndim, dtype_len = _ARRAY.unpack_from(raw, 0)
    if (magic != _ARRAY_MAGIC or size > len(raw) or size % 8 or
            _ARRAY.size + 8 * ndim + dtype_len > size):
        raise ChannelCorrupt(f"a message of {length} bytes that is not a send_array() record "
                             f"(sent with send()?)")
    shape = struct.unpack_from(f"<{ndim}Q", raw, _ARRAY.size)
    start = _ARRAY.size + 8 * ndim
    dtype = raw[start:start + dtype_len].decode("ascii", "replace")
    return dtype, shape, size


def _empty_array(numpy, dtype, shape, nbytes):
    """The array a received record describes, checked against its nbytes of
    payload before anything is copied: a peer's dtype may be no dtype, hold
    object pointers, or have no size (numpy widens S0 to S1, which would
    read past the record), and its shape may not fit numpy."""
    try:
        dtype = numpy.dtype(dtype)
    except Exception as exc:
        # not only TypeError and ValueError: numpy's parser raises
        # SyntaxError for ",i4", and a deprecated alias ("a") warns, an
        # error under -W error.  Whatever a peer's string makes it raise,
        # the record is corrupt.
        raise ChannelCorrupt(f"an array message with a bad dtype: {exc}") from None
    if dtype.hasobject or dtype.fields is not None or dtype.itemsize == 0:
        raise ChannelCorrupt(f"an array message with dtype {dtype}: not a plain numeric type")
    count = math.prod(shape)               # Python ints: no overflow
    if count * dtype.itemsize != nbytes:
        raise ChannelCorrupt("an array message whose size does not match its shape")
    try:
        arr = numpy.empty(shape, dtype)
    except (ValueError, MemoryError) as exc:
        raise ChannelCorrupt(f"an array message whose shape numpy refuses: {exc}") from None
    if arr.nbytes != nbytes:
        raise ChannelCorrupt("an array message whose size does not match its shape")
    return arr


def _release(view, whole):
    """Ends the views reserve() and recv_view() yielded, so that a use after
    the block raises.  A buffer someone holds of the view itself (a
    PickleBuffer, a C extension's Py_buffer) makes release() raise
    BufferError: that view then lives on, as an array numpy made of it
    does, pinning the mapping (its memory stays mapped), and the block
    still ends as documented instead of dropping the message."""
    if view is not None:
        try:
            view.release()
        except BufferError:
            pass
    if whole is not None:
        whole.release()         # never exported: view shares its buffer


class Channel(_core.Channel):
    """A message channel of *capacity* ring bytes in ``size_for(capacity)``
    bytes of *mapping* at *offset* (a multiple of 64); zero bytes are an
    empty channel, and every process constructs it alike.  How it works:
    ``help(pymmapdev.channel)``.  The calls:

    ``send(data, *, timeout=None) -> bool``, ``recv(*, timeout=None) -> bytes | None``,
    ``send_many``, ``recv_many``, ``reserve``, ``recv_view``, ``send_array``,
    ``recv_array``, ``close_send``, ``max_message``, ``len(ch)``,
    ``send_async``, ``recv_async``.
    """

    __slots__ = ("_owned",)

    @contextlib.contextmanager
    def reserve(self, nbytes, *, timeout=None):
        """Zero-copy send: a writable memoryview of *nbytes* inside the ring.

        The message is committed when the block ends and dropped if it
        raises; the view must not be used after the block.  Yields None when
        *timeout* seconds pass before there is room.
        """
        # One int for the reservation and the view's end: _reserve takes
        # any __index__, but offset + nbytes below is Python's addition (an
        # object with only __index__ has none, an int subclass's __radd__
        # would choose the view's length).  Not an index: _reserve says so.
        if type(nbytes) is not int and hasattr(type(nbytes), "__index__"):
            nbytes = operator.index(nbytes)
        got = self._reserve(nbytes, timeout)
        if got is None:
            yield None
            return
        # the token ends the reservation if this frame goes before the
        # try below does (an exception as _reserve returns: Ctrl-C)
        offset, _token = got
        commit = False
        whole = view = None
        try:
            # made inside the try: a MemoryError (or Ctrl-C) here must
            # still end the reservation, or the side stays held for good
            whole = memoryview(self.mapping)
            view = whole[offset:offset + nbytes]
            yield view
            commit = True
        finally:
            _release(view, whole)
            self._reserve_end(commit)

    @contextlib.contextmanager
    def recv_view(self, *, timeout=None):
        """Zero-copy receive: a read-only memoryview of the next message,
        valid inside the block; the message is consumed when the block ends.
        Yields None when *timeout* seconds pass first."""
        got = self._view(timeout)
        if got is None:
            yield None
            return
        (offset, length), _token = got         # _token: as in reserve()
        whole = view = None
        try:
            # inside the try, as in reserve()
            whole = memoryview(self.mapping)
            view = whole[offset:offset + length].toreadonly()
            yield view
        finally:
            _release(view, whole)
            self._view_end()

    def send_array(self, arr, *, timeout=None):
        """Send a numpy array (dtype and shape travel with it): one copy into
        the ring.  True when sent, False on timeout."""
        import numpy
        arr = numpy.asarray(arr)
        if not arr.flags.c_contiguous:          # (ascontiguousarray makes 0-d 1-d)
            arr = arr.copy(order="C")
        header = _array_header(arr)
        got = self._reserve(len(header) + arr.nbytes, timeout)
        if got is None:
            return False
        offset, _token = got                    # _token: as in reserve()
        commit = False
        try:
            # guarded copies (Mapping.write), not memoryview assignment: a
            # page of the ring that vanished raises MappingFault
            self.mapping.write(offset, header)
            if arr.nbytes:
                self.mapping.write(offset + len(header), arr.reshape(-1).view(numpy.uint8))
            commit = True
        finally:
            self._reserve_end(commit)
        return True

    def recv_array(self, *, timeout=None):
        """Receive an array sent with send_array(): a new numpy array (one
        copy out of the ring), or None on timeout."""
        import numpy
        got = self._view(timeout)
        if got is None:
            return None
        (offset, length), _token = got         # _token: as in reserve()
        try:
            raw = self.mapping.read(offset, min(length, 4096))
            dtype, shape, size = _parse_array_header(raw, length)
            arr = _empty_array(numpy, dtype, shape, length - size)
            if arr.nbytes:
                self.mapping.read_into(offset + size, arr.reshape(-1).view(numpy.uint8))
            return arr
        finally:
            self._view_end()

    # ---- asyncio -------------------------------------------------------------

    async def _await_side(self, side, nbytes, deadline, delay):
        """Sleep (without blocking the loop) until the side may make progress.
        Returns the *delay* for the next call."""
        announced = self._announce(side, nbytes)
        if announced is None:
            # progress is possible now, unless another thread or process
            # holds the side (multi mode) for as long as it likes (a
            # recv_view): retry at once, then back off as _aio's timers do
            # instead of spinning the loop
            await asyncio.sleep(delay)
            return min(max(2 * delay, _aio.POLL_MIN), _aio.POLL_MAX)
        # the token withdraws the sleeper if dropped before the try (an
        # exception raised as _announce returns: Ctrl-C)
        (offset, expected, watch_peer), token = announced
        # run by the loop's next turn: whether the wait gave the loop one
        turned = []
        turn = asyncio.get_running_loop().call_soon(turned.append, True)
        try:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if watch_peer:
                # a producer still in a send at the end of the stream: its
                # death moves no word, so look again every slice (the
                # next round's recv() takes the end once it is dead)
                remaining = _PEER_SLICE if remaining is None else min(remaining, _PEER_SLICE)
            await self.mapping.wait_async(offset, expected, timeout=remaining)
        finally:
            turn.cancel()
            self._withdraw(token)
        if not turned:
            # the word had moved already (a peer's progress another thread
            # or process took first, in a busy multi mode): the wait did
            # not suspend, and while the word keeps moving no round would;
            # let the loop run once before the next
            await asyncio.sleep(0)
        return 0.0

    async def send_async(self, data, /, *, timeout=None):
        """send() for asyncio: never blocks the event loop; same results."""
        timeout = _core.timeout_seconds(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.0
        while True:
            # send() first: it refuses what it cannot send (not a buffer,
            # not contiguous) with its own errors, before anything measures it
            if self.send(data, timeout=0):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            with memoryview(data) as view:
                size = view.nbytes
            delay = await self._await_side(_SEND, size, deadline, delay)

    async def recv_async(self, *, timeout=None):
        """recv() for asyncio: never blocks the event loop; same results."""
        timeout = _core.timeout_seconds(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.0
        while True:
            msg = self.recv(timeout=0)
            if msg is not None:
                return msg
            if deadline is not None and time.monotonic() >= deadline:
                return None
            delay = await self._await_side(_RECV, 0, deadline, delay)

    # ---- owning a mapping (open_channel) ----------------------------------

    def close(self):
        """Close the mapping if this channel opened it (open_channel)."""
        owned = getattr(self, "_owned", None)
        if owned is not None:
            # forgotten only once closed: a close refused (BufferError, the
            # mapping in use) can be retried
            owned.close()
            self._owned = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# open_file's advice (pass readonly=True) is no option of open_channel()
_READ_ONLY_ADVICE = ("a Channel writes its file, the receiving side too (it moves the "
                     "head): open it as a user who may write it")


@contextlib.contextmanager
def _naming_the_file(path):
    """The ValueErrors of the channel in the file *path* (the core names
    only "the region at offset 0"), naming it as repr() shows it, as an
    OSError's message shows its filename: a newline in it stays on one line."""
    try:
        yield
    except _core._ChannelMismatch as exc:
        # the other side is most often the file an earlier run left; a
        # ValueError, as ever
        error = ValueError(f"{exc}: {path!r} was made so by an earlier open_channel(): "
                           f"remove it to start anew, or pass what it holds")
    except ValueError as exc:       # no Channel, another namespace, ChannelCorrupt
        error = type(exc)(f"{exc} ({path!r})")
    else:
        return
    raise error from None           # its message says all: not chained


def open_channel(path, capacity=1 << 20, *, multi_producer=False, multi_consumer=False,
                 mode=0o600):
    """Open (creating if needed) the file *path* holding one channel of
    *capacity* ring bytes at offset 0; closing the channel closes the file.

    The channel lives in the file: messages an earlier run left unread are
    still there, and so is its ``close_send()`` (later sends raise
    BrokenPipeError); remove the file, or use a fresh path, to start anew."""
    path = _str_path(path)          # named as given, a PathLike or bytes too

    def check_head(head):
        with _naming_the_file(path):
            Channel._check_head(head, 0, capacity, multi_producer, multi_consumer)

    size = Channel.size_for(capacity)
    m = None
    try:
        # an existing file's header is judged before the file is grown to
        # size: a file refused is left as it was
        m = open_file_checked(path, size, mode=mode, check_head=check_head,
                              head_size=Channel.HEADER, read_only_advice=_READ_ONLY_ADVICE)
        with _naming_the_file(path):
            ch = Channel(m, 0, capacity, multi_producer=multi_producer,
                         multi_consumer=multi_consumer)
    except BaseException:
        if m is not None:
            m.close()
        raise
    ch._owned = m
    return ch
