"""pymmapdev.Channel: a message channel in shared memory (issue 9)."""
import collections
import contextlib
import multiprocessing as mp
import os
import random
import signal
import struct
import sys
import threading
import time
import zlib

import pytest

import pymmapdev
from pymmapdev import Channel, ChannelCorrupt, _core
from _sync_workers import (GUARD, held_in_its_exit, run_child, run_thread_to_its_end,  # noqa: F401
                           spin_until, task_state_and_flags, ticking)
from conftest import run_python, scaled

CAP = 4096
# Header words (csrc/channel.c): sleepers count themselves there before they
# sleep, so a test can see that another process is asleep in recv() / send().
PRODUCER_WAITERS = 196
CONSUMER_WAITERS = 260
CH_SPACE_SEQ, CH_DATA_SEQ = 192, 256            # the words those sleepers sleep on
PEER_TID_MASK = (1 << 22) - 1                   # an owner word's thread id (csrc/peer.h)
CH_PRODUCER, CH_CONSUMER = 80, 144              # the sides' owner words
CH_HEAD, CH_RECEIVED = 128, 136                 # the consumer's indices
CH_SENDING = 104                                # single mode: the thread in a send


@pytest.fixture
def m(shm_path):
    with pymmapdev.open_file(shm_path, Channel.size_for(CAP) + 128) as mapping:
        yield mapping


@pytest.fixture
def ch(m):
    return Channel(m, 0, CAP)


def test_size_and_attributes(m):
    assert Channel.size_for(CAP) == Channel.HEADER + CAP
    ch = Channel(m, 0, CAP)
    assert (ch.capacity, ch.offset, ch.mapping) == (CAP, 0, m)
    assert ch.max_message == CAP // 2 - 8
    assert (ch.multi_producer, ch.multi_consumer) == (False, False)
    assert len(ch) == 0


def test_bad_construction(m, shm_path):
    with pytest.raises(ValueError, match="multiple of 8"):
        Channel(m, 0, 1001)
    with pytest.raises(ValueError, match="at least"):
        Channel(m, 0, 64)
    with pytest.raises(ValueError, match="aligned"):
        Channel(m, 8, CAP)
    with pytest.raises(ValueError, match="outside"):
        Channel(m, 0, CAP * 2)
    with pytest.raises(TypeError, match="Mapping"):
        Channel(bytearray(100), 0, CAP)
    Channel(m, 0, CAP)
    with pytest.raises(ValueError, match="holds a Channel of capacity"):
        Channel(m, 0, CAP - 8)
    with pytest.raises(ValueError, match="holds a Channel of capacity"):
        Channel(m, 0, CAP, multi_producer=True)
    with pymmapdev.open_file(shm_path, readonly=True) as r:
        with pytest.raises(TypeError, match="read-only"):
            Channel(r, 0, CAP)


def test_another_capacity_or_mode_names_both(m):
    """Two processes constructing one channel with different capacities (or
    modes) were told 'a Channel of another capacity or mode (or is not
    zeroed)': not which capacity the region holds, so not how to agree."""
    Channel(m, 0, CAP, multi_consumer=True)
    with pytest.raises(ValueError, match=rf"holds a Channel of capacity {CAP}, "
                       rf"multi_consumer=True, not capacity {CAP - 8}: every process"):
        Channel(m, 0, CAP - 8)
    with pytest.raises(ValueError, match=rf"holds a Channel of capacity {CAP}, "
                       rf"multi_consumer=True, not capacity {CAP}, multi_producer=True"):
        Channel(m, 0, CAP, multi_producer=True)


def test_a_region_holding_no_channel_says_so(m):
    m.write_u64(0, 0x1234)
    with pytest.raises(ValueError, match=r"holds no Channel \(its first word is "
                       r"0x0000000000001234, not zero\)"):
        Channel(m, 0, CAP)


def test_open_channel_of_another_capacity_names_the_file(shm_path):
    pymmapdev.open_channel(shm_path, 4096).close()
    with pytest.raises(ValueError, match=rf"capacity 4096, not capacity 8192.*'{shm_path}' "
                       r"was made so by an earlier open_channel\(\): remove it"):
        pymmapdev.open_channel(shm_path, 8192)


def test_a_channel_of_another_layout_is_refused_with_its_own_class(m):
    """open_channel() told the mismatch of an earlier run's file from other
    ValueErrors by the C core's wording ("must construct it alike"): a FIFO
    whose path held those words was said to be an earlier open_channel()'s
    channel.  The core raises a private ValueError subclass for it."""
    Channel(m, 0, CAP)
    with pytest.raises(_core._ChannelMismatch, match="holds a Channel of capacity"):
        Channel(m, 0, CAP - 8)
    assert issubclass(_core._ChannelMismatch, ValueError)
    m.write_u64(0, 0x1234)
    with pytest.raises(ValueError, match="holds no Channel") as no_channel:
        Channel(m, 0, CAP)
    assert type(no_channel.value) is ValueError


def test_open_channel_says_earlier_run_only_of_a_mismatch(tmp_path):
    fifo = tmp_path / "must construct it alike"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="is a FIFO and cannot be mapped$") as refused:
        pymmapdev.open_channel(fifo, 4096)
    assert type(refused.value) is ValueError
    path = tmp_path / "channel"
    pymmapdev.open_channel(path, 4096).close()
    with pytest.raises(ValueError, match="was made so by an earlier open_channel") as other:
        pymmapdev.open_channel(path, 4096, multi_consumer=True)
    assert type(other.value) is ValueError      # what users caught before


def _resident_bytes(m):
    """Rss of the VMA holding m's first byte, from /proc/self/smaps."""
    import ctypes
    address = ctypes.addressof(ctypes.c_char.from_buffer(m))
    with open("/proc/self/smaps") as smaps:
        inside = False
        for line in smaps:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= address < hi
            elif inside and head == "Rss:":
                return int(line.split()[1]) * 1024
    raise AssertionError("mapping not found in /proc/self/smaps")


@pytest.mark.parametrize("backing", ["file", "memfd"])
def test_new_channel_faults_its_ring_in(shm_path, backing):
    """The first lap must not take a page fault per page in each process
    (it halved the 64 B rate until the ring wrapped): the constructor
    populates the region, in every process that attaches."""
    cap = 1 << 20
    size = Channel.size_for(cap)
    m = (pymmapdev.open_file(shm_path, size) if backing == "file"
         else pymmapdev.anonymous(size))
    with m:
        assert _resident_bytes(m) < cap // 2            # nothing touched yet
        ch = Channel(m, 0, cap)
        assert _resident_bytes(m) >= size - 4096
        ch.send(b"x")
        assert ch.recv() == b"x"
        del ch


def test_close_while_the_constructor_faults_the_ring_in_is_refused():
    """The constructor populates the ring without the GIL: the mapping must
    be pinned meanwhile, or another thread's close() unmaps it under the
    populate (and the new Channel is left on a closed mapping)."""
    import sys
    cap = 32 << 20
    m = pymmapdev.anonymous(Channel.size_for(cap))
    go, outcome = threading.Event(), []

    def closer():
        go.wait()
        try:                  # runs when the constructor first lets go of the GIL
            m.close()
            outcome.append("closed")
        except BufferError as exc:
            outcome.append(str(exc))

    interval = sys.getswitchinterval()
    thread = threading.Thread(target=closer)
    thread.start()
    sys.setswitchinterval(30)         # the closer cannot preempt us: it runs only
    try:                              # where the constructor releases the GIL
        go.set()
        ch = Channel(m, 0, cap)
    finally:
        sys.setswitchinterval(interval)
    thread.join(GUARD)
    assert outcome and outcome[0] != "closed", outcome
    ch.send(b"still mapped")
    assert ch.recv() == b"still mapped"
    del ch
    m.close()


def test_round_trip_and_order(ch):
    assert ch.recv(timeout=0) is None
    msgs = [b"", b"x", b"hello", bytes(range(256)), b"y" * ch.max_message]
    for msg in msgs:
        assert ch.send(msg) is True
        assert ch.recv() == msg
    for i in range(50):
        assert ch.send(struct.pack("<I", i), timeout=0)
    assert len(ch) == 50
    assert [struct.unpack("<I", ch.recv())[0] for _ in range(50)] == list(range(50))
    assert len(ch) == 0


def test_any_bytes_like(ch):
    import array
    ch.send(bytearray(b"ab"))
    ch.send(memoryview(b"cde")[1:])
    ch.send(array.array("I", [7]))
    assert [ch.recv() for _ in range(3)] == [b"ab", b"de", struct.pack("I", 7)]


def test_too_large_and_full(ch):
    with pytest.raises(ValueError, match="max_message"):
        ch.send(bytes(ch.max_message + 1))
    n = 0
    while ch.send(bytes(100), timeout=0):
        n += 1
    assert n == CAP // 112                          # 8 header + 104 padded
    assert ch.send(bytes(100), timeout=0.1) is False
    ch.recv()
    assert ch.send(bytes(100), timeout=0) is True


def test_messages_past_4_gib_are_refused_not_truncated(tmp_path):
    """A record's length is a u32: a ring over 8 GiB made max_message (half
    the ring) exceed it, and a reserve() of 4 GiB + 5 bytes was committed as
    a 5-byte message (its high bits lost in the header), the rest of it read
    as garbage after.  max_message stops at 4 GiB - 1.  The file is sparse
    and mapped without open_file()'s reservation (CI's disk may not have
    8 GiB free): only the pages the constructor and the messages touch are
    allocated."""
    cap = (8 << 30) + 64
    path = str(tmp_path / "big")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, Channel.size_for(cap))
        big = _core.Mapping(fd, Channel.size_for(cap), 0, kind="file", path=path)
    finally:
        os.close(fd)
    with big:
        ch = Channel(big, 0, cap)
        assert ch.max_message == 2**32 - 1
        with pytest.raises(ValueError, match="max_message 4294967295"):
            with ch.reserve(2**32 + 5):
                pass
        with ch.reserve(ch.max_message) as buf:
            buf[:5] = b"hello"
            buf[-3:] = b"end"
        ch.send(b"next")
        with ch.recv_view() as view:
            assert (len(view), bytes(view[:5]), bytes(view[-3:])) == (2**32 - 1, b"hello", b"end")
        assert ch.recv(timeout=0) == b"next"
        del buf, view


def test_send_waits_out_a_timeout_under_a_second(shm_path, run_child):
    """A timeout of 0.9 s is a wait, not a refusal: a consumer in another
    process frees room once it sees the producer asleep, and the send goes
    through (a deadline that lost the fraction returned False at once)."""
    ready, go = Channel.size_for(CAP), Channel.size_for(CAP) + 4
    pymmapdev.open_file(shm_path, Channel.size_for(CAP) + 64).close()
    consumer = run_child(f"""
        import sys, pymmapdev
        from pymmapdev import Channel
        from _sync_workers import spin_until
        with pymmapdev.open_file(sys.argv[1]) as m:
            ch = Channel(m, 0, {CAP})
            for attempt in range(3):
                m.store_u32({ready}, attempt + 1)
                spin_until(lambda: m.load_u32({PRODUCER_WAITERS}) or m.load_u32({go}) > attempt)
                if m.load_u32({PRODUCER_WAITERS}):
                    ch.recv()                              # room for the sleeper
                spin_until(lambda: m.load_u32({go}) > attempt)
            print([x for x in ch.recv_many(1000, timeout=0) if x.startswith(b"late")])
    """, shm_path)
    with pymmapdev.open_file(shm_path) as m:
        ch = Channel(m, 0, CAP)
        sent = []
        for attempt in range(3):           # a loaded machine may miss 0.9 s once
            late = (b"late %d" % attempt).ljust(100, b".")
            while ch.send(bytes(len(late)), timeout=0):
                pass                       # full again: the send below must sleep
            spin_until(lambda: m.load_u32(ready) == attempt + 1)
            if ch.send(late, timeout=0.9):
                sent.append(late)
            m.store_u32(go, attempt + 1)
        del ch
    out, err = consumer.communicate(timeout=GUARD)
    assert consumer.returncode == 0, err
    assert sent, "every send with timeout=0.9 gave up at once"
    assert out.strip() == repr(sent)                                 # it saw the bytes


def test_wraparound_matches_a_model(ch):
    """Random sizes around the ring's end: padding records are never delivered."""
    rnd = random.Random(1)
    model = collections.deque()
    for step in range(scaled(20000)):
        if rnd.random() < 0.55:
            msg = rnd.randbytes(rnd.choice([0, 1, 7, 8, 9, 100, 500, ch.max_message]))
            ok = ch.send(msg, timeout=0)
            used = sum(8 + (len(x) + 7) // 8 * 8 for x in model)
            if ok:
                model.append(msg)
            else:
                assert used + 8 + (len(msg) + 7) // 8 * 8 > CAP // 2, "refused with room"
        else:
            got = ch.recv(timeout=0)
            assert got == (model.popleft() if model else None)
        assert len(ch) == len(model)


def test_batches_match_a_model(ch):
    """send_many/recv_many in random batches (more than one internal chunk
    of 64, across the ring's end): same messages, same order."""
    rnd = random.Random(2)
    model = collections.deque()
    for step in range(scaled(3000)):
        if rnd.random() < 0.5:
            batch = [rnd.randbytes(rnd.choice([0, 3, 8, 40, 200])) for _ in range(rnd.randrange(150))]
            sent = ch.send_many(batch, timeout=0)
            assert 0 <= sent <= len(batch)
            model.extend(batch[:sent])
        else:
            k = rnd.randrange(1, 200)
            got = ch.recv_many(k, timeout=0)
            want = [model.popleft() for _ in range(min(k, len(model)))]
            assert got == want
        assert len(ch) == len(model)


def test_batch_waits_for_room_mid_way(m):
    """2000 messages in one send_many through a ring that holds ~256: the
    batch sleeps for room again and again while another side drains it."""
    ch = Channel(m, 0, CAP, multi_consumer=True)
    got = []

    def consume():
        while len(got) < 2000:
            got.extend(ch.recv_many(1000, timeout=GUARD))
    t = threading.Thread(target=consume)
    t.start()
    assert ch.send_many([b"%04d" % i for i in range(2000)], timeout=GUARD) == 2000
    t.join(GUARD)
    assert got == [b"%04d" % i for i in range(2000)]


def test_many(ch):
    assert ch.send_many([b"a", b"bb", b"ccc"]) == 3
    assert ch.send_many(iter([])) == 0
    assert ch.recv_many(2) == [b"a", b"bb"]
    assert ch.recv_many(10) == [b"ccc"]
    assert ch.recv_many(10, timeout=0) == []
    assert ch.send_many([bytes(1000)] * 10, timeout=0) == 4     # 4 records of 1008 bytes
    with pytest.raises(TypeError):
        ch.send_many([b"ok", 5])
    assert len(ch.recv_many(100)) == 5              # the one before the bad item got in


def test_end_of_stream(ch):
    ch.send(b"last")
    ch.close_send()
    assert ch.recv() == b"last"
    with pytest.raises(EOFError):
        ch.recv()
    with pytest.raises(EOFError):
        ch.recv(timeout=0)
    with pytest.raises(BrokenPipeError):
        ch.send(b"more")


def test_send_many_after_end_of_stream_is_refused(ch):
    ch.send(b"before")
    ch.close_send()
    with pytest.raises(BrokenPipeError, match="close_send"):
        ch.send_many([b"l1", b"l2"])
    assert ch.recv() == b"before"
    with pytest.raises(EOFError):
        ch.recv(timeout=0)


@pytest.mark.parametrize("how", ["send", "send_many"])
def test_end_of_stream_wakes_a_producer_waiting_for_room(ch, how):
    """A producer asleep on a full ring learns of close_send() (here from
    another thread) at once, instead of sending after the end once the
    consumer drains the ring."""
    out, full = [], threading.Event()

    def produce():         # one thread: the producer side is a thread's
        while ch.send(bytes(1000), timeout=0):
            pass
        full.set()
        try:
            if how == "send":
                ch.send(bytes(1000), timeout=GUARD)
            else:
                ch.send_many([bytes(1000)], timeout=GUARD)
            out.append("sent")
        except BrokenPipeError:
            out.append("broken pipe")
    t = threading.Thread(target=produce)
    t.start()
    assert full.wait(GUARD)
    spin_until(lambda: ch.mapping.load_u32(PRODUCER_WAITERS) == 1)    # asleep for room
    ch.close_send()
    t.join(GUARD)
    assert out == ["broken pipe"]
    received = ch.recv_many(100, timeout=0)
    assert received and all(msg == bytes(1000) for msg in received)
    with pytest.raises(EOFError):
        ch.recv(timeout=0)


# A call that fails with a multi-mode side held raises, then leaves the side
# (a store into the region).  Raised inside an except block, CPython 3.11
# builds the exception instance at once: an allocation, and a collection
# there runs finalizers; this one closes the mapping.  Armed right before
# the call, with gen0 past a threshold of 1, so the first allocation of a
# GC object collects.
FAILING_CALL_WITH_THE_SIDE_HELD = """
import gc, os, sys, pymmapdev
from pymmapdev import Channel
path, how, cause = sys.argv[1:]
cap = 8192
m = pymmapdev.open_file(path, Channel.size_for(cap))
ch = Channel(m, 0, cap, multi_producer=True)
if cause == "closed":
    ch.close_send()
    expected, data = BrokenPipeError, b"x"
else:
    os.truncate(path, 4096)                 # the ring past its first page is gone
    expected, data = pymmapdev.MappingFault, bytes(4000)    # a record into the second
close_refused = []

class Closer:
    def __del__(self):
        try:
            m.close()
        except BufferError:
            close_refused.append(True)

def arm():
    closer = Closer()
    closer.cycle = closer                   # garbage only a collection frees
    [[] for _ in range(10)]                 # gen0's count past the threshold

nbytes = len(data)
try:
    raise KeyError("an exception being handled")
except KeyError:
    gc.disable()
    arm()
    gc.set_threshold(1)
    gc.enable()
    # From here to the call's raise, nothing may allocate a GC object (3.10
    # makes a frame object for a Python function: no lambda), or the
    # collection runs before the call
    try:
        if how == "send":
            ch.send(data)
        else:
            ch._reserve(nbytes, None)
    except expected:
        pass
    gc.set_threshold(700)
print(m.closed, close_refused, m.load_u64(80) if not m.closed else None)
"""


@pytest.mark.skipif(sys.version_info >= (3, 12),
                    reason="3.12+ collect only at the eval breaker, never inside the call")
@pytest.mark.parametrize("how,cause", [("send", "closed"), ("reserve", "closed"),
                                       ("send", "fault")])
def test_finalizer_closing_the_mapping_as_a_held_side_fails_is_refused(shm_path, how, cause):
    """send() and _reserve() admit the region without a pin (a short
    access, mapping.h).  With multi_producer=True, a failure after the side
    was taken (the end of the stream, a fault writing the record) raised,
    and a collection in that raise ran a finalizer that closed the mapping:
    the side was then left in unmapped memory, a SIGSEGV (or a store into
    whatever was mapped there next).  The failing call now holds a pin
    before it raises: that close() is refused, and the side is left."""
    child = run_python(FAILING_CALL_WITH_THE_SIDE_HELD, shm_path, how, cause, check=False)
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ["False", "[True]", "0"], child.stderr


def test_reserve_open_across_close_send_is_not_committed_after_the_end(ch, m):
    """A consumer may see the end of the stream while a reserve() is open: a
    commit after close_send() put a message behind the EOF (len() 1, recv()
    delivering it after EOFError).  The commit is a BrokenPipeError."""
    with pytest.raises(BrokenPipeError):
        with ch.reserve(5) as buf:
            buf[:] = b"after"
            ch.close_send()
            with pytest.raises(EOFError):
                Channel(m, 0, CAP).recv(timeout=0)    # a consumer sees the end
    assert len(ch) == 0
    with pytest.raises(EOFError):
        ch.recv(timeout=0)


def test_end_of_stream_wakes_a_sleeping_consumer(ch):
    out = []

    def consume():
        try:
            out.append(ch.recv(timeout=GUARD))       # bounded: a lost wake-up fails, not hangs
        except EOFError:
            out.append("eof")
    t = threading.Thread(target=consume)
    t.start()
    spin_until(lambda: ch.mapping.load_u32(CONSUMER_WAITERS) == 1)    # asleep in recv
    ch.close_send()
    t.join(GUARD)
    assert out == ["eof"]


def test_reserve_and_recv_view(ch, m):
    with ch.reserve(5) as buf:
        buf[:] = b"hello"
    with ch.reserve(3) as buf:
        buf[:] = b"abc"
        with pytest.raises(RuntimeError, match="reserve.. is open"):
            ch._reserve(1, 0)
        with pytest.raises(RuntimeError, match="reserve.. is open"):
            ch.send(b"into the reservation")
    with pytest.raises(ZeroDivisionError):
        with ch.reserve(4) as buf:
            buf[:] = b"lost"
            1 / 0
    with ch.recv_view() as view:
        assert view.readonly and bytes(view) == b"hello"
        with pytest.raises(TypeError):
            view[0] = 1
        with pytest.raises(RuntimeError, match="recv_view.. is open"):
            ch.recv()                                  # would deliver it twice
    assert ch.recv() == b"abc"
    assert ch.recv(timeout=0) is None               # the dropped one never went out
    with ch.recv_view(timeout=0) as view:
        assert view is None
    # reserve/recv_view pin the mapping
    with ch.reserve(1) as buf:
        with pytest.raises(BufferError):
            m.close()
        buf[0] = 1


@pytest.mark.parametrize("how", ["reserve", "recv_view"])
def test_error_making_the_view_still_ends_the_reserve_or_view(ch, m, monkeypatch, how):
    """A MemoryError (or Ctrl-C) while reserve()/recv_view() builds its
    memoryview came after the side was taken: it stayed held for good
    ("a recv_view() is open", the mapping could never close)."""
    import pymmapdev.channel as channel_module
    ch.send(b"x")

    def failing(obj):
        raise MemoryError("no memory for the view")

    monkeypatch.setattr(channel_module, "memoryview", failing, raising=False)
    with pytest.raises(MemoryError):
        with (ch.reserve(8) if how == "reserve" else ch.recv_view()):
            pass
    monkeypatch.undo()
    # the side is free again; the viewed message went, as when a block raises
    assert ch.recv(timeout=0) == (b"x" if how == "reserve" else None)
    assert ch.send(b"y") is True and ch.recv(timeout=0) == b"y"
    m.close()


def _interrupt_as_it_returns(name):
    """A profile hook raising KeyboardInterrupt as the C method *name*
    returns: where a Ctrl-C pending when the call ends is raised, before
    the caller's next statement (its try) runs."""
    def hook(frame, event, arg):
        if event == "c_return" and getattr(arg, "__name__", None) == name:
            sys.setprofile(None)
            raise KeyboardInterrupt
    sys.setprofile(hook)


@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
@pytest.mark.parametrize("how", ["reserve", "recv_view", "send_array", "recv_array"])
def test_interrupt_as_the_side_is_taken_does_not_hold_it(m, how, multi):
    """Between _reserve()/_view() returning and the try that ends them,
    a KeyboardInterrupt left the side held for good: every later call was
    'a reserve() is open', close() refused for ever, and in multi mode
    every other producer (or consumer) waited on it.  The result is
    dropped then, and the open operation ends with it, unpublished."""
    np = pytest.importorskip("numpy") if how.endswith("array") else None
    ch = Channel(m, 0, CAP, multi_producer=multi, multi_consumer=multi)
    if how in ("recv_view", "recv_array"):
        ch.send_array(np.arange(3)) if np is not None else ch.send(b"kept")
    call = {"reserve": lambda: ch.reserve(8).__enter__(),
            "recv_view": lambda: ch.recv_view().__enter__(),
            "send_array": lambda: ch.send_array(np.arange(4)),
            "recv_array": ch.recv_array}[how]
    _interrupt_as_it_returns("_view" if how.startswith("recv") else "_reserve")
    try:
        with pytest.raises(KeyboardInterrupt):
            call()
    finally:
        sys.setprofile(None)
    if multi:                         # another thread may take the side
        out = []
        other = Channel(m, 0, CAP, multi_producer=True, multi_consumer=True)
        t = threading.Thread(target=lambda: out.append(other.send(b"other", timeout=1)))
        t.start()
        t.join(GUARD)
        assert out == [True]
        del other
    # nothing was published; a viewed message stays for the next receive
    first = ch.recv_array().tolist() if how == "recv_array" else ch.recv(timeout=0)
    assert first == {"recv_view": b"kept", "recv_array": [0, 1, 2]}.get(how, b"other" if multi
                                                                           else None)
    assert ch.send(b"mine", timeout=0) is True
    rest = ch.recv_many(10, timeout=0)
    assert rest == ([b"other"] if multi and how.startswith("recv") else []) + [b"mine"]
    del ch
    m.close()


@pytest.mark.parametrize("how", ["reserve", "recv_view"])
def test_multi_mode_threads_sharing_one_object_wait_for_an_open_side(m, how):
    """multi_producer/multi_consumer: any number share a side.  Threads
    sharing one Channel object were refused with RuntimeError ("a reserve()
    is open on this Channel") while another thread of it had a reserve() or
    recv_view() open, where another object's thread waits for the side.
    Now they wait too, and get the side when the block ends."""
    ch = Channel(m, 0, CAP, multi_producer=True, multi_consumer=True)
    ch.send(b"viewed")
    ch.send(b"next")
    word = 80 if how == "reserve" else 144      # the side's owner word
    out = []

    def other():
        try:
            out.append(ch.send(b"other", timeout=GUARD) if how == "reserve"
                       else ch.recv(timeout=GUARD))
        except Exception as exc:                # noqa: BLE001 (reported below)
            out.append(exc)

    with (ch.reserve(4) if how == "reserve" else ch.recv_view()) as buf:
        t = threading.Thread(target=other)
        t.start()
        # the other thread sleeps on the side (the word's waiters bit), or failed
        spin_until(lambda: out or m.read_u64(word) & (1 << 31))
        if how == "reserve":
            buf[:] = b"abcd"
        else:
            assert bytes(buf) == b"viewed"
    t.join(GUARD)
    if how == "reserve":
        assert out == [True]
        assert ch.recv_many(10, timeout=0) == [b"viewed", b"next", b"abcd", b"other"]
    else:
        assert out == [b"next"]
        assert ch.recv(timeout=0) is None


@pytest.mark.parametrize("how", ["reserve", "recv_view"])
def test_reserve_or_view_ended_in_another_thread_frees_the_side(m, how):
    """In multi mode an open reserve()/recv_view() holds the side in the
    name of the thread that opened it; ending the block in another thread
    (a context manager handed over) released nothing, so every other user
    of the side waited for good and the opener was told it still held it."""
    ch = Channel(m, 0, CAP, multi_producer=True, multi_consumer=True)
    ch.send(b"viewed")
    cm = ch.reserve(4) if how == "reserve" else ch.recv_view()
    buf = cm.__enter__()
    if how == "reserve":
        buf[:] = b"abcd"
    t = threading.Thread(target=cm.__exit__, args=(None, None, None))
    t.start()
    t.join(GUARD)
    out = []
    other = Channel(m, 0, CAP, multi_producer=True, multi_consumer=True)
    t = threading.Thread(target=lambda: out.append(
        (other.send(b"other", timeout=1), other.recv(timeout=1))))
    t.start()
    t.join(GUARD)
    assert out == [(True, b"viewed" if how == "reserve" else b"other")]
    assert ch.send(b"mine", timeout=1) is True
    rest = [b"abcd", b"other", b"mine"] if how == "reserve" else [b"mine"]
    assert ch.recv_many(10, timeout=0) == rest
    del ch, other


def test_reserve_opened_by_send_many_iterator_is_not_overwritten(ch):
    """send_many's iterator runs Python code with the producer side held, and
    single mode lets the same thread in: a reserve() opened there owns the
    tail, so the chunk gathered meanwhile must not be written over it (it
    was, and ending the reserve then raised ChannelCorrupt)."""
    def items():
        with ch.reserve(8) as buf:
            buf[:] = b"reserved"
            for i in range(64):                        # a whole chunk (BATCH)
                yield b"%08d" % i
            buf[:] = b"CLOBBER!"

    with pytest.raises(RuntimeError, match="reserve.. is open"):
        ch.send_many(items())              # the dropped generator drops the reserve
    assert ch.recv_many(100, timeout=0) == []
    assert ch.send_many(b"%d" % i for i in range(3)) == 3
    assert ch.recv_many(10, timeout=0) == [b"0", b"1", b"2"]


def test_arrays(ch):
    np = pytest.importorskip("numpy")
    big = Channel(pymmapdev.anonymous(Channel.size_for(1 << 22)), 0, 1 << 22)
    for arr in (np.arange(12, dtype=np.int32).reshape(3, 4), np.zeros((0, 5)), np.array(3.5),
                np.arange(10, dtype=">u2"), np.ones((2, 3, 4), dtype=np.complex64),
                np.arange(20)[::2], np.random.default_rng(0).random((256, 512))):
        assert big.send_array(arr) is True
        got = big.recv_array()
        assert got.dtype == arr.dtype and got.shape == arr.shape
        assert np.array_equal(got, arr)
    assert big.recv_array(timeout=0) is None
    with pytest.raises(ValueError):
        ch.send_array(np.zeros(CAP))
    ch.send(b"not an array, not at all")
    with pytest.raises(ChannelCorrupt):
        ch.recv_array()


# ---- sides: who may send and receive --------------------------------------------

def test_second_producer_thread_is_refused(ch):
    ch.send(b"mine")
    errors = []
    t = threading.Thread(target=lambda: errors.append(_raises(lambda: ch.send(b"x"))))
    t.start()
    t.join(GUARD)
    assert errors == ["RuntimeError"]
    assert ch.recv() == b"mine" and ch.recv(timeout=0) is None


def _raises(call):
    try:
        call()
    except Exception as exc:
        return type(exc).__name__
    return None


@pytest.mark.parametrize("how", ["reserve", "recv_view"])
def test_another_object_of_the_thread_is_refused_while_a_side_is_open(m, how):
    """Objects of one thread share its claim of a single-mode side, but an
    open reserve() or recv_view() was only known to its own object: another
    object of the thread (a pickle loaded here, a second open_channel) sent
    into the reserved space, and the block's bytes then overwrote that
    published message (the consumer got b"xxxxx" for b"hello"); or it
    received the viewed message, which came twice.  Each was blamed on a
    peer (ChannelCorrupt) only as the block ended.  It is refused now."""
    a, b = Channel(m, 0, CAP), Channel(m, 0, CAP)
    a.send(b"one")
    cm = a.reserve(5) if how == "reserve" else a.recv_view()
    if how == "reserve":
        calls = [lambda: b.send(b"hello", timeout=0), lambda: b.send_many([b"h"]),
                 lambda: b.reserve(1).__enter__()]
    else:
        calls = [lambda: b.recv(timeout=0), lambda: b.recv_many(5, timeout=0),
                 lambda: b.recv_view().__enter__()]
    with cm as buf:
        for call in calls:
            with pytest.raises(RuntimeError, match="another Channel object of this thread"):
                call()
        if how == "reserve":
            buf[:] = b"xxxxx"
        else:
            assert bytes(buf) == b"one"
    b.send(b"after")
    got = b.recv_many(10, timeout=0)
    assert got == ([b"one", b"xxxxx", b"after"] if how == "reserve" else [b"after"])
    del a, b


def test_forked_child_is_a_second_producer(ch):
    ch.send(b"parent")
    pid = os.fork()
    if pid == 0:
        os._exit(0 if _raises(lambda: ch.send(b"child")) == "RuntimeError" else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("multi", [False, True])
def test_fork_inside_send_many_iteration_sends_nothing_from_the_child(m, multi):
    """send_many() holds the producer side while its iterable runs Python
    code.  A fork() there went on in the child as if it held the side: it
    wrote the chunk (the messages yielded before the fork too, so they came
    twice) next to the parent's writes (multi mode: no lock between them),
    and then released the parent's lock.  The child now raises RuntimeError
    and sends nothing; the parent's call goes on."""
    ch = Channel(m, 0, CAP, multi_producer=multi)
    done_r, done_w = os.pipe()

    def items():
        yield b"before"
        pid = os.fork()
        if pid:
            os.read(done_r, 1)              # the child's call has ended
        for i in range(3):
            yield b"%s%d" % (b"child" if pid == 0 else b"parent", i)

    parent = os.getpid()
    try:
        outcome = ch.send_many(items())
    except BaseException as exc:            # noqa: BLE001 (reported by the child's code)
        outcome = exc
    if os.getpid() != parent:
        ok = isinstance(outcome, RuntimeError) and "fork" in str(outcome)
        os.write(done_w, b"x")
        os._exit(0 if ok else 1)
    _, status = os.wait()
    os.close(done_r)
    os.close(done_w)
    assert os.waitstatus_to_exitcode(status) == 0
    assert outcome == 4
    assert ch.recv_many(20, timeout=0) == [b"before", b"parent0", b"parent1", b"parent2"]
    # single mode: the claim stays ours; multi: the lock was let go once
    assert m.read_u64(80) & PEER_TID_MASK == (0 if multi else threading.get_native_id())
    if multi:
        assert ch.send(b"again", timeout=0) and ch.recv(timeout=0) == b"again"


def _asleep_in_a_futex(tid):
    """Is our thread *tid* inside futex() (202 on x86_64)?  A signal sent
    earlier, between the blocking loop's last look at signals and its
    sleep, would be handled only when the sleep ends."""
    with open(f"/proc/self/task/{tid}/syscall") as f:
        return f.read().split()[0] == "202"


@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
@pytest.mark.parametrize("side", ["send", "recv"])
def test_fork_in_a_handler_while_waiting_sends_or_receives_nothing_from_the_child(m, side,
                                                                                  multi):
    """A send waiting for room (a receive waiting for data) holds its side
    and runs signal handlers.  A handler that forked let the child go on
    with the wait as if it held the side: once room (data) came, it wrote
    the parent's message (took the next one) next to the parent, so the
    message came twice (was taken from the parent), and in multi mode it
    then released the parent's lock.  Here the parent waits inside the
    handler until the child's call has ended; another thread makes room
    (sends) meanwhile.  The child's call must raise RuntimeError and leave
    the ring alone; the parent's call goes on and sends (receives) once."""
    if os.uname().machine != "x86_64":
        pytest.fail("the futex syscall number here is x86_64's")
    ch = Channel(m, 0, CAP, multi_producer=multi, multi_consumer=multi)
    waiters = PRODUCER_WAITERS if side == "send" else CONSUMER_WAITERS
    queued = []
    if side == "send":
        while ch.send(b"q" * 1000, timeout=0):
            queued.append(b"q" * 1000)
    parent, main, main_tid = os.getpid(), threading.get_ident(), threading.get_native_id()
    report_r, report_w = os.pipe()

    def handler(signum, frame):
        pid = os.fork()
        if pid:
            os.waitpid(pid, 0)              # the parent, once the child's call ended
        # the child goes on with the wait

    def other_side():                       # this thread is the other side's user
        other = Channel(m, 0, CAP, multi_producer=multi, multi_consumer=multi)
        spin_until(lambda: m.load_u32(waiters) == 1 and _asleep_in_a_futex(main_tid))
        signal.pthread_kill(main, signal.SIGUSR1)
        spin_until(lambda: m.load_u32(waiters) == 2)            # the child waits too
        if side == "send":
            assert other.recv(timeout=0) == queued.pop(0)       # room for one
        else:
            assert other.send(b"one", timeout=0)
        del other

    previous = signal.signal(signal.SIGUSR1, handler)
    helper = threading.Thread(target=other_side)
    helper.start()
    try:
        try:
            outcome = ch.send(b"late" * 250, timeout=GUARD) if side == "send" \
                else ch.recv(timeout=GUARD)
        except BaseException as exc:        # noqa: BLE001 (reported by the child)
            outcome = exc
        if os.getpid() != parent:
            try:
                # a consumer at the end would wait for a sender named there
                named = m.load_u64(CH_SENDING) & PEER_TID_MASK == threading.get_native_id()
                os.write(report_w, repr(outcome).encode() + b" named" * named)
            finally:
                os._exit(0)
    finally:
        if os.getpid() == parent:
            signal.signal(signal.SIGUSR1, previous)
    helper.join(GUARD)
    os.close(report_w)
    with os.fdopen(report_r) as f:
        reported = f.read()
    assert reported.startswith("RuntimeError(") and "fork" in reported, \
        f"the forked child went on with the parent's {side}: {reported}"
    assert not reported.endswith(" named"), "the child left its name in the sending word"
    if side == "send":
        assert outcome is True
        assert ch.recv_many(100, timeout=0) == queued + [b"late" * 250]
    else:
        assert outcome == b"one"
        assert ch.recv(timeout=0) is None
    del ch


def test_another_object_of_the_producer_thread_does_not_hand_its_side_back(m):
    """Objects of one thread share its claim (a copy, a pickle loaded here, a
    temporary): dropping one that only joined the claim handed the side
    back under the live producer, and a second producer thread got in.  The
    object that made the claim still hands it back when it goes; the others
    then claim anew (refused if another thread got in first)."""
    import copy

    def other_thread_sends():
        out = []
        t = threading.Thread(target=lambda: out.append(
            _raises(lambda: Channel(m, 0, CAP).send(b"other thread"))))
        t.start()
        t.join(GUARD)
        return out

    a = Channel(m, 0, CAP)
    a.send(b"a")
    Channel(m, 0, CAP).send(b"temporary")           # joins, then dropped
    b = copy.copy(a)
    b.send(b"copy")
    del b
    assert other_thread_sends() == ["RuntimeError"]
    b = copy.copy(a)
    b.send(b"copy")
    del a                                           # the claim's maker goes
    assert b.send(b"b") is True                     # b claims anew ...
    assert other_thread_sends() == ["RuntimeError"]
    del b                                           # ... and hands it back
    assert other_thread_sends() == [None]


def test_forked_child_dropping_its_copy_keeps_the_parents_claim(m):
    """A child's copy of a Channel object carries the parent thread's claim:
    dropping it in the child must not hand the side back while the parent
    produces (it did, and a second producer was let in)."""
    ch = Channel(m, 0, CAP)
    ch.send(b"parent")
    pid = os.fork()
    if pid == 0:
        del ch                                      # the child's copy
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert m.load_u64(80) != 0                      # the producer owner word
    errors = []
    t = threading.Thread(target=lambda: errors.append(
        _raises(lambda: Channel(m, 0, CAP).send(b"second producer"))))
    t.start()
    t.join(GUARD)
    assert errors == ["RuntimeError"]
    assert ch.recv() == b"parent" and ch.recv(timeout=0) is None


def test_dead_producer_is_taken_over(ch, m):
    pid = os.fork()
    if pid == 0:
        ch.send(b"from the first producer")
        os._exit(0)                                 # exits still registered
    os.waitpid(pid, 0)
    assert ch.send(b"from its successor") is True   # takes the side over
    assert ch.recv() == b"from the first producer"
    assert ch.recv() == b"from its successor"


def test_a_producer_inside_its_exit_is_taken_over(m, shm_path, run_child):
    """A single-mode side whose holder is inside do_exit() (PF_EXITING) is
    free: the claim checks the holder once, and it counted as alive until
    the kernel made it a zombie ("already has a live producer")."""
    Channel(m, 0, CAP)
    with held_in_its_exit(run_child, """
            import pymmapdev
            m = pymmapdev.open_file(sys.argv[1])
            ch = pymmapdev.Channel(m, 0, int(sys.argv[2]))
            ch.send(b"from the first producer")         # the side stays claimed
            """, shm_path, CAP):
        assert Channel(m, 0, CAP).send(b"from its successor") is True
    assert Channel(m, 0, CAP).recv() == b"from the first producer"
    assert Channel(m, 0, CAP).recv() == b"from its successor"


def test_dropped_channel_object_hands_its_side_back(m):
    a = Channel(m, 0, CAP)
    a.send(b"1")
    del a
    out = []
    t = threading.Thread(target=lambda: out.append(Channel(m, 0, CAP).send(b"2")))
    t.start()
    t.join(GUARD)
    assert out == [True]


MPMC_PRODUCER = """
import sys, pymmapdev
from pymmapdev import Channel
path, who, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with pymmapdev.open_file(path) as m:
    ch = Channel(m, 0, int(sys.argv[4]), multi_producer=True, multi_consumer=True)
    for i in range(n):
        ch.send(b"%d %d " % (who, i) + bytes(i % 50), timeout=60)
"""

MPMC_CONSUMER = """
import sys, pymmapdev
from pymmapdev import Channel
path = sys.argv[1]
with pymmapdev.open_file(path) as m:
    ch = Channel(m, 0, int(sys.argv[2]), multi_producer=True, multi_consumer=True)
    got = []
    while True:
        msg = ch.recv(timeout=60)
        if msg == b"stop":
            break
        got.append(msg.split(b" ")[:2])
    print(" ".join(f"{int(a)}:{int(b)}" for a, b in got))
"""


def test_exactly_once_in_order_with_several_producers_and_consumers(shm_path, run_child):
    cap, n, producers, consumers = 2048, scaled(1500, 100), 3, 2
    pymmapdev.open_file(shm_path, Channel.size_for(cap)).close()
    cons = [run_child(MPMC_CONSUMER, shm_path, cap) for _ in range(consumers)]
    prods = [run_child(MPMC_PRODUCER, shm_path, who, n, cap) for who in range(producers)]
    for p in prods:
        assert p.wait(GUARD * 2) == 0, p.stderr.read()
    with pymmapdev.open_file(shm_path) as m:
        ch = Channel(m, 0, cap, multi_producer=True, multi_consumer=True)
        for _ in range(consumers):
            assert ch.send(b"stop", timeout=GUARD)
        seen = collections.Counter()
        for c in cons:
            out, err = c.communicate(timeout=GUARD)
            assert c.returncode == 0, err
            last = {}
            for item in out.split():
                who, i = map(int, item.split(":"))
                assert i > last.get(who, -1), "out of order within one consumer"
                last[who] = i
                seen[who, i] += 1
        assert len(seen) == producers * n and set(seen.values()) == {1}
        del ch


def test_producer_killed_inside_reserve_blocks_others_briefly(shm_path, run_child):
    cap = 4096
    pymmapdev.open_file(shm_path, Channel.size_for(cap) + 64).close()
    holder = run_child("""
        import sys, time, pymmapdev
        from pymmapdev import Channel
        with pymmapdev.open_file(sys.argv[1]) as m:
            ch = Channel(m, 0, 4096, multi_producer=True)
            with ch.reserve(100) as buf:
                buf[:50] = b"half" * 12 + b"ha"
                m.store_u32(Channel.size_for(4096), 1)
                time.sleep(600)
    """, shm_path)
    with pymmapdev.open_file(shm_path) as m:
        spin_until(lambda: m.load_u32(Channel.size_for(cap)) == 1)
        ch = Channel(m, 0, cap, multi_producer=True)
        assert ch.send(b"x", timeout=0.05) is False   # the side is held
        holder.kill()
        holder.wait(GUARD)
        # No deadline: a dead holder found only when a deadline passes would
        # leave this send asleep for good (the daemon thread's join fails it)
        sent = []
        t = threading.Thread(target=lambda: sent.append(ch.send(b"after")), daemon=True)
        t.start()
        t.join(GUARD)
        assert sent == [True], "the dead holder was never taken over"
        assert ch.recv() == b"after"                  # nothing torn was delivered
        assert ch.recv(timeout=0) is None
        del ch


CRASHING_PRODUCER = """
import sys, zlib, pymmapdev
from pymmapdev import Channel
with pymmapdev.open_file(sys.argv[1]) as m:
    ch = Channel(m, 0, int(sys.argv[2]))
    i = int(sys.argv[3])
    while True:
        body = (b"%08d" % i) * (1 + i % 400)
        ch.send(body + zlib.crc32(body).to_bytes(4, "little"), timeout=60)
        i += 1
"""


def test_crash_probe_producer_killed_mid_stream(shm_path, run_child):
    """SIGKILL the producer while it streams, six times: the consumer never
    gets a torn message, and a restarted producer continues."""
    cap = 1 << 16
    pymmapdev.open_file(shm_path, Channel.size_for(cap)).close()
    with pymmapdev.open_file(shm_path) as m:
        ch = Channel(m, 0, cap)
        received = 0
        for trial in range(6):
            p = run_child(CRASHING_PRODUCER, shm_path, cap, trial * 1000000)
            got = 0
            while got < 200:
                msg = ch.recv(timeout=GUARD)
                assert msg is not None, "the producer never sent"
                body, crc = msg[:-4], int.from_bytes(msg[-4:], "little")
                assert zlib.crc32(body) == crc, "torn message"
                got += 1
            p.send_signal(signal.SIGKILL)
            p.wait(GUARD)
            while (msg := ch.recv(timeout=0)) is not None:   # what it committed
                assert zlib.crc32(msg[:-4]) == int.from_bytes(msg[-4:], "little")
            received += got
        assert received >= 1200
        del ch


@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
def test_pickled_to_children(shm_path, method):
    pymmapdev.open_file(shm_path, Channel.size_for(CAP)).close()
    with pymmapdev.open_file(shm_path) as m:
        ch = Channel(m, 0, CAP)
        ctx = mp.get_context(method)
        p = ctx.Process(target=_child_sends, args=(ch, 20))
        p.start()
        got = [ch.recv(timeout=GUARD) for _ in range(20)]
        p.join(GUARD)
        assert p.exitcode == 0
        assert got == [b"%d" % i for i in range(20)]
        del ch


def _child_sends(ch, n):
    for i in range(n):
        ch.send(b"%d" % i)


PING = """
import sys, pymmapdev
from pymmapdev import Channel
pymmapdev.set_spin(int(sys.argv[3]))
with pymmapdev.open_file(sys.argv[1]) as m:
    a, b = Channel(m, 0, 4096), Channel(m, Channel.size_for(4096) + 64 - Channel.size_for(4096) % 64, 4096)
    for _ in range(int(sys.argv[2])):
        b.send(a.recv(timeout=60))
"""


@pytest.mark.parametrize("spin", [0, 500])
def test_ping_pong_across_unrelated_processes(shm_path, run_child, spin):
    second = Channel.size_for(4096) + 64 - Channel.size_for(4096) % 64
    pymmapdev.open_file(shm_path, second + Channel.size_for(4096)).close()
    n = scaled(2000, 50)
    child = run_child(PING, shm_path, n, spin)
    with pymmapdev.open_file(shm_path) as m:
        a, b = Channel(m, 0, 4096), Channel(m, second, 4096)
        for i in range(n):
            a.send(b"%d" % i)
            assert b.recv(timeout=GUARD) == b"%d" % i
        assert child.wait(GUARD) == 0, child.stderr.read()
        del a, b


def test_ctrl_c_interrupts_a_blocked_recv(shm_path, run_child):
    pymmapdev.open_file(shm_path, Channel.size_for(CAP) + 64).close()
    child = run_child("""
        import sys, pymmapdev
        from pymmapdev import Channel
        with pymmapdev.open_file(sys.argv[1]) as m:
            ch = Channel(m, 0, 4096)
            m.store_u32(Channel.size_for(4096), 1)
            ch.recv()
    """, shm_path)
    with pymmapdev.open_file(shm_path) as m:
        spin_until(lambda: m.load_u32(Channel.size_for(CAP)) == 1)
        spin_until(lambda: m.load_u32(CONSUMER_WAITERS) == 1)   # it is asleep in recv
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=GUARD)   # a recv SIGINT did not end: hangs
        assert "KeyboardInterrupt" in err


# ---- the region is untrusted ---------------------------------------------------------

SCRIBBLER = """
import os, random, sys, time, pymmapdev
rnd = random.Random(int(sys.argv[3]))
with pymmapdev.open_file(sys.argv[1]) as m:
    base, size = int(sys.argv[2]), int(sys.argv[4])
    m.store_u32(base + size + 64, 1)            # scribbling from now on
    end = time.monotonic() + float(sys.argv[5])
    while time.monotonic() < end:
        where = rnd.choice([0, 8, 64, 72, 80, 88, 128, 136, 144, 192, 196, 256, 260,
                            rnd.randrange(0, size - 8) // 8 * 8])
        m.write(base + where, os.urandom(rnd.choice([1, 4, 8])))
"""


MSG, PAD = 0x4D53, 0x4150                        # record kinds ("SM", "PA")


@pytest.mark.parametrize("head,tail,at,header", [
    (CAP - 64, CAP - 64 + 1000, CAP - 64, 900 | MSG << 32),    # runs past the ring's end
    (0, 4000, 0, 3000 | MSG << 32),                            # longer than max_message
    (0, 16, 0, 100 | MSG << 32),                               # longer than what was sent
    (0, 64, 0, 8 | PAD << 32),                                 # padding short of the end
    (0, 64, 0, 8 | 0x1234 << 32),                              # no such kind
], ids=["past-the-ring", "over-max-message", "past-the-tail", "short-padding", "no-such-kind"])
def test_record_headers_a_peer_forged_are_refused(m, head, tail, at, header):
    """Every length a record header claims is checked against the ring's end,
    max_message and the published tail before a byte of it is read."""
    ch = Channel(m, 0, CAP)
    m.write_u64(128, head)                           # head
    m.write_u64(64, tail)                            # tail
    m.write_u64(Channel.HEADER + at, header)
    for call in (lambda: ch.recv(timeout=0), lambda: ch.recv_many(4, timeout=0)):
        with pytest.raises(ChannelCorrupt):
            call()


@pytest.mark.parametrize("bad", [1, 65])
def test_recv_many_stopping_at_a_forged_record_consumes_what_it_returned(m, bad):
    """recv_many() took the good records before one a peer forged, but it
    freed them up to the end of the previous batch (or an uninitialised
    one), not of what it took: the head stayed, and the same message filled
    the whole list (100 copies of it).  And once the head reached the forged
    record, the call raised and dropped the messages it had already freed.
    Now it returns exactly what it freed, and the forged record is
    ChannelCorrupt at the next call."""
    ch = Channel(m, 0, CAP)
    sent = [b"msg%05d" % i for i in range(70)]          # 16-byte records
    assert ch.send_many(sent) == 70
    m.write_u64(Channel.HEADER + 16 * bad, 8 | 0x1234 << 32)
    assert ch.recv_many(100, timeout=0) == sent[:bad]
    assert len(ch) == 70 - bad
    with pytest.raises(ChannelCorrupt):
        ch.recv(timeout=0)
    assert m.read_u64(128) == 16 * bad                  # the head


@pytest.mark.parametrize("where", ["scan", "copy"])
def test_recv_many_faulting_after_a_batch_returns_what_it_freed(shm_path, where):
    """recv_many() frees the records of each batch of 64 as it copies them.
    A later batch that faulted (the file truncated under the ring: its
    headers, found in a scan, or its payloads, copied in a second pass)
    raised MappingFault and dropped the list: the messages of the earlier
    batches were freed and counted received, and given to nobody.  As for
    a forged record, the call returns what it freed, and the fault is
    raised by the next call.  Here the first batch ends at a page boundary
    of the file, which is then truncated there."""
    cap, page = 1 << 14, 4096
    end = 2 * page - Channel.HEADER                     # ring offset of the file's page 2
    first = end - 63 * 64                               # one long record, 63 of 64 bytes
    batch = [b"a" * (first - 8)] + [b"%056d" % i for i in range(63)]
    # after the boundary: more records (a header there), or one whose
    # header is before it and payload after it
    later = [b"late"] * 5 if where == "scan" else [b"z" * 100]
    pymmapdev.open_file(shm_path, Channel.size_for(cap)).close()
    with pymmapdev.open_file(shm_path) as m:
        ch = Channel(m, 0, cap)
        if where == "copy":                             # the boundary 8 bytes into its payload
            batch[0] = batch[0][:-16]
        assert ch.send_many(batch + later) == len(batch) + len(later)
        os.truncate(shm_path, 2 * page)
        got = ch.recv_many(200, timeout=0)
        assert got == batch, "freed messages were dropped"
        assert m.read_u64(CH_RECEIVED) == len(batch)
        with pytest.raises(pymmapdev.MappingFault):
            ch.recv_many(200, timeout=0)
        del ch


def test_hostile_peer_scribbling_the_region(shm_path, run_child):
    """Random bytes written into header and ring by another process while
    both sides run: every call returns or raises a documented error, in
    bounded time, and nothing outside the region changes."""
    cap = 2048
    base = 64
    size = Channel.size_for(cap)
    total = base + size + 64                    # then the word the scribbler sets
    pymmapdev.open_file(shm_path, total + 8).close()
    with pymmapdev.open_file(shm_path) as m:
        m[0:base] = b"\xa5" * base
        m[base + size:total] = b"\x5a" * (total - base - size)
        ch = Channel(m, base, cap, multi_producer=True, multi_consumer=True)
        scribbler = run_child(SCRIBBLER, shm_path, base, 7, size, 3.0)
        kinds = collections.Counter()
        # 3 s from when the scribbling begins, not from the child's start
        # (most of a second under ASan, more on a loaded machine)
        began, guard = None, time.monotonic() + GUARD
        rnd = random.Random(3)
        while began is None or time.monotonic() < began + 3.0:
            if began is None and m.load_u32(total):
                began = time.monotonic()
            assert time.monotonic() < guard, "the scribbler never began"
            op = rnd.random()
            t0 = time.monotonic()
            try:
                if op < 0.3:
                    ch.send(os.urandom(rnd.randrange(0, 300)), timeout=0.05)
                elif op < 0.6:
                    ch.recv(timeout=0.05)
                elif op < 0.7:
                    ch.send_many([b"a"] * 5, timeout=0.05)
                elif op < 0.8:
                    ch.recv_many(5, timeout=0.05)
                elif op < 0.85:
                    with ch.recv_view(timeout=0.05) as v:
                        v is None or bytes(v)
                elif op < 0.9:
                    with ch.reserve(16, timeout=0.05) as buf:
                        if buf is not None:
                            buf[:] = bytes(16)
                else:
                    len(ch)
                kinds["ok"] += 1
            except (ChannelCorrupt, EOFError, BrokenPipeError, RuntimeError, ValueError) as exc:
                kinds[type(exc).__name__] += 1
            assert time.monotonic() - t0 < 2.0, "a call hung on garbage"
        scribbler.wait(GUARD)
        assert m[0:base] == b"\xa5" * base
        assert m[base + size:total] == b"\x5a" * (total - base - size)
        del ch
    assert kinds["ok"] > 0 and kinds["ChannelCorrupt"] > 0, kinds


# ---- asyncio --------------------------------------------------------------------------

def test_async_timeouts_follow_the_blocking_calls_rules(ch):
    """send_async/recv_async took their timeout in Python arithmetic: a
    Decimal (which send/recv take) was a TypeError mid-way, a negative one
    returned at once instead of being refused."""
    import asyncio
    from decimal import Decimal

    async def main():
        assert await ch.recv_async(timeout=Decimal("0.01")) is None
        assert await ch.send_async(b"x", timeout=Decimal("0.01")) is True
        assert await ch.recv_async(timeout=Decimal("0.01")) == b"x"
        for bad in (-1, float("nan")):
            for call in (lambda: ch.recv_async(timeout=bad),
                         lambda: ch.send_async(b"y", timeout=bad)):
                with pytest.raises(ValueError, match="timeout must be a non-negative"):
                    await call()
        with pytest.raises(ValueError, match="timeout must be"):
            ch.recv(timeout=-1)                 # the same words as the blocking call
    asyncio.run(main())
    assert len(ch) == 0


def outcome_of(call):
    """(exception type, message) of *call*, or its result."""
    try:
        return call()
    except Exception as exc:        # noqa: BLE001 (compared, not hidden)
        return type(exc), str(exc)


@pytest.mark.parametrize("data", [memoryview(bytes(range(20)))[::2], "text", 5, None],
                         ids=["strided memoryview", "str", "int", "None"])
def test_send_async_refuses_what_send_refuses_the_same_way(ch, data):
    """send_async() measured the data with memoryview(data).cast("B")
    before its first send(): a strided memoryview (which send() refuses
    with BufferError) was a TypeError about casts, and a str or int a
    TypeError worded by memoryview."""
    import asyncio
    expected = outcome_of(lambda: ch.send(data, timeout=0))
    assert isinstance(expected, tuple)
    assert outcome_of(lambda: asyncio.run(ch.send_async(data, timeout=0))) == expected
    assert outcome_of(lambda: asyncio.run(ch.send_async(data))) == expected
    assert len(ch) == 0


def test_async_calls_take_their_arguments_as_the_blocking_ones_do(ch):
    """send_async(data=b"x") was accepted (and sent) while send() takes
    data positionally only: code written against one could not call the
    other.  Every *_async method has its blocking twin's parameters."""
    import asyncio
    import inspect
    twins = [name for name in dir(Channel) if name.endswith("_async")]
    assert twins == ["recv_async", "send_async"]
    for name in twins:
        blocking = inspect.signature(getattr(Channel, name[:-len("_async")]))
        asynchronous = inspect.signature(getattr(Channel, name))
        # but self: the C methods' is positional-only, a Python method's not
        assert [(p.name, p.kind, p.default) for p in asynchronous.parameters.values()][1:] == \
            [(p.name, p.kind, p.default) for p in blocking.parameters.values()][1:], name
    with pytest.raises(TypeError, match="data"):
        ch.send(data=b"x")
    with pytest.raises(TypeError, match="data"):
        asyncio.run(ch.send_async(data=b"x"))
    assert len(ch) == 0


def test_async_round_trip_timeout_and_cancel(ch, m):
    import asyncio

    async def main():
        assert await ch.recv_async(timeout=0.05) is None
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick = asyncio.create_task(ticker())
        waiter = asyncio.create_task(ch.recv_async(timeout=GUARD))
        # 5 ticks while the receive waits (counted, not timed: a loaded
        # machine may give the loop fewer than 5 in 0.2 s)
        deadline = time.monotonic() + GUARD
        while ticks < 5:
            assert time.monotonic() < deadline, "the event loop was blocked"
            await asyncio.sleep(0.01)
        assert not waiter.done(), "the event loop was blocked until the receive ended"
        assert await ch.send_async(b"async hello") is True
        assert await asyncio.wait_for(waiter, GUARD) == b"async hello"
        # cancelled while asleep: no sleeper stays announced
        waiter = asyncio.create_task(ch.recv_async())
        await asyncio.sleep(0.1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert m.load_u32(260) == 0                    # consumer_waiters
        # a full ring: send_async waits for room without blocking the loop
        while ch.send(bytes(1000), timeout=0):
            pass
        while ch.send(b"", timeout=0):                 # to the last 8 bytes
            pass
        sender = asyncio.create_task(ch.send_async(b"late", timeout=GUARD))
        await asyncio.sleep(0.1)
        assert not sender.done()
        ch.recv()
        assert await asyncio.wait_for(sender, GUARD) is True
        assert await ch.send_async(bytes(1000), timeout=0.05) in (True, False)
        tick.cancel()

    asyncio.run(main())


def test_async_send_waiting_for_room_ends_at_close_send(ch):
    import asyncio

    async def main():
        while ch.send(bytes(1000), timeout=0):
            pass
        sender = asyncio.create_task(ch.send_async(bytes(1000), timeout=GUARD))
        await asyncio.sleep(0.1)
        assert not sender.done()
        ch.close_send()
        with pytest.raises(BrokenPipeError):
            await asyncio.wait_for(sender, GUARD)

    asyncio.run(main())


def test_async_recv_does_not_spin_while_another_consumer_holds_the_side(m):
    """Multi-consumer: data is there, but another consumer holds the side
    (here a recv_view left open): recv_async waits for it without burning
    the CPU, and gets the next message once the view is released."""
    import asyncio
    Channel(m, 0, CAP, multi_consumer=True).send(b"one")
    Channel(m, 0, CAP, multi_consumer=True).send(b"two")
    held, release = threading.Event(), threading.Event()

    def holder():
        with Channel(m, 0, CAP, multi_consumer=True).recv_view(timeout=GUARD) as view:
            assert bytes(view) == b"one"
            held.set()
            release.wait(GUARD)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(GUARD)
    from pymmapdev import _aio
    tries = []

    class Counting(Channel):          # counts the retries, not the time
        __slots__ = ()

        def _announce(self, side, nbytes):
            tries.append(side)
            return super()._announce(side, nbytes)

    ch = Counting(m, 0, CAP, multi_consumer=True)
    quiet = 1.0

    async def main():
        receiver = asyncio.create_task(ch.recv_async(timeout=GUARD))
        await asyncio.sleep(quiet)
        retries = len(tries)
        release.set()
        return retries, await asyncio.wait_for(receiver, GUARD)

    try:
        retries, got = asyncio.run(main())
    finally:
        release.set()
        t.join()
    assert got == b"two"
    # backing off to POLL_MAX: at most ~quiet / POLL_MAX retries (a loaded
    # machine makes fewer); spinning made one per loop turn, 10**5 and more
    assert retries < 2 * quiet / _aio.POLL_MAX, f"recv_async spun: {retries} retries"


@pytest.mark.parametrize("side", ["recv", "send"])
def test_async_call_whose_word_keeps_moving_lets_the_loop_run(m, side):
    """A round of send_async/recv_async that finds the sequence word moved
    since its announcement (a peer published, and another consumer took
    the message first: a busy multi-consumer channel) did not suspend, and
    the call retried at once: while the word kept moving, the task never
    gave the event loop back (no other task ran, a cancel() could not be
    delivered; with no timeout, for as long as the peers went on).  Here
    every announcement finds the word moved; the loop must still run."""
    import asyncio
    word = CH_DATA_SEQ if side == "recv" else CH_SPACE_SEQ

    class Busy(Channel):            # a peer moves the word after each look
        __slots__ = ()

        def _announce(self, side, nbytes):
            announced = super()._announce(side, nbytes)
            m.fetch_add_u32(word, 1)
            return announced

    ch = Busy(m, 0, CAP, multi_producer=True, multi_consumer=True)
    if side == "send":
        fill(ch)

    call = ch.recv_async(timeout=0.3) if side == "recv" else ch.send_async(b"x", timeout=0.3)
    result, ticks = asyncio.run(ticking(call, 0))
    assert result in (None, False)
    assert ticks > 0, "the event loop never ran while the call retried"
    assert m.load_u32(PRODUCER_WAITERS) == m.load_u32(CONSUMER_WAITERS) == 0


def fill(ch):
    """Sends until not even an empty message fits."""
    while ch.send(bytes(1000), timeout=0):
        pass
    while ch.send(b"", timeout=0):
        pass


@pytest.mark.parametrize("side", ["recv", "send"])
def test_a_forked_child_ending_an_inherited_async_wait_keeps_the_parents_sleeper(ch, m, side):
    """send_async/recv_async count themselves into the header's waiters
    word before they sleep and out after.  A child forked with one pending
    inherits the coroutine, and ending it there (its loop ending, asyncio.run
    cancelling it, the collector) counted the parent's sleeper out: the
    parent's own withdrawal then took the word below zero, to 2**32 - 1,
    and every later send (recv) bumped the sequence word and made a wake
    syscall for good.  The child's copy withdraws nothing."""
    import asyncio
    word = CONSUMER_WAITERS if side == "recv" else PRODUCER_WAITERS
    if side == "send":
        fill(ch)
    loop = asyncio.new_event_loop()
    coro = ch.recv_async(timeout=GUARD) if side == "recv" else ch.send_async(b"x", timeout=GUARD)
    task = loop.create_task(coro)
    try:
        loop.run_until_complete(asyncio.sleep(0.1))
        assert m.load_u32(word) == 1
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                coro.close()        # as the child's loop ending, or the collector, does
                status = 0
            finally:
                os._exit(status)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        assert m.load_u32(word) == 1, "the child counted the parent's sleeper out"
        if side == "recv":
            ch.send(b"x")
        else:
            ch.recv()
        assert loop.run_until_complete(asyncio.wait_for(task, GUARD)) in (b"x", True)
    finally:
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        loop.close()
    assert m.load_u32(word) == 0


@pytest.mark.parametrize("side", ["recv", "send"])
def test_interrupt_as_the_sleeper_is_announced_does_not_leave_it_counted(ch, m, side):
    """send_async/recv_async count themselves into the header's waiters
    word (_announce) and out in a finally; a KeyboardInterrupt raised as
    _announce returned, before that try, left the word one high for good:
    every later send (recv) of every process bumped the sequence word and
    made a wake syscall for a sleeper that was not there."""
    import asyncio
    word = CONSUMER_WAITERS if side == "recv" else PRODUCER_WAITERS
    if side == "send":
        fill(ch)
    _interrupt_as_it_returns("_announce")
    try:
        with pytest.raises(KeyboardInterrupt):
            asyncio.run(ch.recv_async() if side == "recv" else ch.send_async(b"x"))
    finally:
        sys.setprofile(None)
    assert m.load_u32(word) == 0, "the interrupted call's sleeper stayed counted"


ASYNC_PRODUCER = """
import sys, time, pymmapdev
from pymmapdev import Channel
with pymmapdev.open_file(sys.argv[1]) as m:
    ch = Channel(m, 0, 4096)
    for i in range(int(sys.argv[2])):
        ch.send(b"%d" % i)
        if i % 50 == 0:
            time.sleep(0.01)          # let the consumer fall asleep now and then
"""


def test_async_recv_from_another_process(shm_path, run_child):
    import asyncio
    pymmapdev.open_file(shm_path, Channel.size_for(4096)).close()
    n = 500

    async def main(ch):
        got = [await ch.recv_async(timeout=GUARD) for _ in range(n)]
        return got

    with pymmapdev.open_file(shm_path) as m:
        ch = Channel(m, 0, 4096)
        child = run_child(ASYNC_PRODUCER, shm_path, n)
        got = asyncio.run(main(ch))
        assert child.wait(GUARD) == 0, child.stderr.read()
        assert got == [b"%d" % i for i in range(n)]
        del ch


RESERVE_HOLDER = """
import sys, time, pymmapdev
from pymmapdev import Channel
path, cap, multi = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "multi"
with pymmapdev.open_file(path) as m:
    ch = Channel(m, 0, cap, multi_producer=multi)
    with ch.reserve(8):
        m.store_u32(Channel.size_for(cap), 1)       # in a send now
        time.sleep(600)
"""


@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
def test_async_recv_at_the_end_stops_waiting_for_a_sender_that_died(shm_path, run_child, multi):
    """A consumer that finds the ring closed and drained waits for a live
    producer still in a send (it may publish yet), and takes the end once
    that producer is dead: recv() looks at it every slice.  recv_async()
    slept on the data word alone, which a dead producer never moves: it
    waited for its whole timeout (with none, for good) where recv() raised
    EOFError.  Here the producer is another process with a reserve() open
    (in a send), killed after close_send(); recv_async() must end in
    EOFError as recv() does."""
    import asyncio
    cap = 4096
    pymmapdev.open_file(shm_path, Channel.size_for(cap) + 64).close()
    holder = run_child(RESERVE_HOLDER, shm_path, cap, "multi" if multi else "single")
    with pymmapdev.open_file(shm_path) as m:
        spin_until(lambda: m.load_u32(Channel.size_for(cap)) == 1)
        ch = Channel(m, 0, cap, multi_producer=multi)
        ch.close_send()
        assert ch.recv(timeout=0.1) is None         # a live sender: not the end yet

        async def main():
            receiver = asyncio.create_task(ch.recv_async())
            # the receiver sleeps (counted in), then its sender dies
            deadline = time.monotonic() + GUARD
            while m.load_u32(CONSUMER_WAITERS) != 1:
                assert time.monotonic() < deadline, "recv_async() never slept"
                await asyncio.sleep(0.001)
            holder.kill()
            holder.wait(GUARD)
            try:
                return await asyncio.wait_for(receiver, GUARD)
            except asyncio.TimeoutError:
                return "still waiting for the dead sender"

        with pytest.raises(EOFError):
            assert asyncio.run(main()) is None
        assert m.load_u32(CONSUMER_WAITERS) == 0
        del ch


def _array_record(dtype, shape, payload=b""):
    """A send_array() record as a hostile peer could write it."""
    head = struct.pack("<4sHHI", b"PMAR", 0, len(shape), len(dtype))
    head += struct.pack(f"<{len(shape)}Q", *shape) + dtype
    head += bytes(-len(head) % 8)
    return head[:4] + struct.pack("<H", len(head)) + head[6:] + payload


@pytest.mark.parametrize("dtype, shape, payload", [
    (b"S0", (100100,), b""),         # numpy makes S0 S1: 100100 bytes past the record
    (b"U0", (5000,), b""),
    (b"V0", (5000,), b""),
    (b"|O", (1,), bytes(8)),         # pointers from a peer
    (b"O,O", (1,), bytes(16)),
    (b"<i4", (0, 2**64 - 1), b""),   # no elements, a size numpy refuses
    (b"<i4", (2**40, 2**40), b""),   # the element count overflows
    (b"not a dtype", (1,), bytes(8)),
    (b",i4", (1,), bytes(4)),           # numpy's parser raises SyntaxError on this one
    pytest.param(b"a", (1,), b"",       # a deprecated alias: a warning, an error under -W error
                 marks=pytest.mark.filterwarnings("error::DeprecationWarning")),
])
def test_recv_array_refuses_hostile_records(dtype, shape, payload):
    pytest.importorskip("numpy")
    m = pymmapdev.anonymous(1 << 20)
    m[100000:100011] = b"SECRET-DATA"                  # beyond the channel's region
    ch = Channel(m, 0, CAP)
    ch.send(_array_record(dtype, shape, payload))
    with pytest.raises(ChannelCorrupt):
        ch.recv_array()
    ch.send_array(__import__("numpy").arange(3))       # the channel goes on
    assert ch.recv_array().tolist() == [0, 1, 2]


@pytest.mark.parametrize("message", [b"", b"x", b"a plain message, longer than a header"])
def test_recv_array_of_a_plain_message_says_what_it_is(message):
    """The usual mix-up, send() on one side and recv_array() on the other:
    the error says the message is no send_array() record, whatever its
    length (a short one was 'an array message shorter than its header')."""
    pytest.importorskip("numpy")
    ch = Channel(pymmapdev.anonymous(1 << 16), 0, CAP)
    ch.send(message)
    with pytest.raises(ChannelCorrupt, match=f"^a message of {len(message)} bytes that is not "
                       "a send_array\\(\\) record"):
        ch.recv_array()

def test_open_channel_owns_its_file_mapping(shm_path):
    import pickle
    with pymmapdev.open_channel(shm_path, 4096) as ch:
        assert os.path.getsize(shm_path) == Channel.size_for(4096)
        ch.send(b"through the file")
        with pymmapdev.open_file(shm_path) as other:
            assert Channel(other, 0, 4096).recv() == b"through the file"
        copy = pickle.loads(pickle.dumps(ch))       # a new mapping of the same file
        assert copy.mapping is not ch.mapping
        copy.close()
        assert copy.mapping.closed and not ch.mapping.closed
    assert ch.mapping.closed


def test_open_channel_close_refused_while_in_use_can_be_retried(shm_path):
    """close() forgot it owned the file mapping before closing it: when that
    close was refused (BufferError: a reserve() open), a later close() did
    nothing, the mapping stayed open and the channel kept working."""
    ch = pymmapdev.open_channel(shm_path, 4096)
    with ch.reserve(3) as buf:
        with pytest.raises(BufferError, match="reserve"):
            ch.close()
        buf[:] = b"abc"
    assert not ch.mapping.closed
    ch.close()
    assert ch.mapping.closed
    with pytest.raises(ValueError, match="closed"):
        ch.send(b"after close")


@pytest.mark.parametrize("capacity", [0, 100, 130])
def test_open_channel_refuses_a_bad_capacity_before_creating_the_file(shm_path, capacity):
    with pytest.raises(ValueError, match="multiple of 8"):
        pymmapdev.open_channel(shm_path, capacity)
    with pytest.raises(ValueError, match="multiple of 8"):
        Channel.size_for(capacity)
    assert not os.path.exists(shm_path)


def _file_of(path, content):
    with open(path, "wb") as f:
        f.write(content)


def _channel_file(path, capacity, **modes):
    pymmapdev.open_channel(path, capacity, **modes).close()


FOREIGN_NAMESPACE = struct.pack("=QQ", 0, 0x1234)      # no descriptor, another tag


@pytest.mark.parametrize("made, error", [
    (lambda path: _channel_file(path, 4096), "holds a Channel of capacity 4096, not"),
    (lambda path: _channel_file(path, 4096, multi_producer=True), "multi_producer=True, not"),
    (lambda path: _file_of(path, b"\xa5" * 100), "holds no Channel"),
    (lambda path: _file_of(path, b"abc"), "holds no Channel"),
    (lambda path: _file_of(path, FOREIGN_NAMESPACE), "another pid namespace"),
], ids=["smaller capacity", "another mode", "garbage", "3 bytes", "foreign namespace"])
def test_open_channel_refusing_an_existing_file_leaves_it_as_it_was(shm_path, made, error):
    """open_channel() grew an existing file to size_for(capacity) before
    the Channel constructor looked at what it held: the call was refused,
    but the file of an earlier run (or a peer's) had changed size."""
    made(shm_path)
    with open(shm_path, "rb") as f:
        before = f.read()
    with pytest.raises(ValueError, match=error):
        pymmapdev.open_channel(shm_path, 8192)
    with open(shm_path, "rb") as f:
        assert f.read() == before


def _garbage_file(path, size=100):
    _file_of(path, b"\xa5" * size)


def _foreign_file(path, size=0):
    _file_of(path, FOREIGN_NAMESPACE.ljust(size, b"\0"))


@pytest.mark.parametrize("made, error", [
    (_garbage_file, "holds no Channel"),
    (lambda path: _garbage_file(path, Channel.size_for(8192)), "holds no Channel"),
    (_foreign_file, "another pid namespace"),
    (lambda path: _foreign_file(path, Channel.size_for(8192)), "another pid namespace"),
    (lambda path: _channel_file(path, 4096), "holds a Channel of capacity 4096, not"),
], ids=["garbage", "garbage of full size", "foreign namespace",
        "foreign namespace of full size", "another capacity"])
def test_open_channel_refusing_a_file_names_its_path_escaped(tmp_path, made, error):
    """open_channel() refusing what a file holds said "the region at
    offset 0" and no more (only another capacity or mode named the file,
    and that one unescaped: a newline in the path broke the message in
    two).  Every refusal names the path as repr() shows it, the exception's
    type unchanged; a short file is judged before it grows (check_head),
    one of full size by the Channel constructor."""
    path = str(tmp_path / "a\nchannel")
    made(path)
    with pytest.raises(ValueError) as refused:
        pymmapdev.open_channel(path, 8192)
    message = str(refused.value)
    assert error in message and repr(path) in message, message
    assert "\n" not in message, message
    assert type(refused.value) is ValueError


def test_open_channel_racing_another_creator_does_not_remove_its_file(shm_path, monkeypatch):
    """A creator whose new file another open_channel() (of another
    capacity) grew and made its channel in before this one read the header
    was refused by that header, and open_file's clean-up of a file it
    created unlinked the file the other process was using."""
    import stat
    fstat = os.fstat

    def raced(fd):
        st = fstat(fd)
        if stat.S_ISREG(st.st_mode):            # the file, created: now the other comes
            monkeypatch.undo()
            with pymmapdev.open_channel(shm_path, 8192):
                pass
        return st
    monkeypatch.setattr(os, "fstat", raced)
    with pytest.raises(ValueError, match="holds a Channel of capacity 8192"):
        pymmapdev.open_channel(shm_path, 4096)
    assert os.path.getsize(shm_path) == Channel.size_for(8192)     # the other's, still there


def test_open_channel_failing_while_another_process_opens_it_keeps_that_ones_channel(
        shm_path, monkeypatch):
    """open_channel() created its file at the path at once and unlinked it
    when interrupted before it was done: another process's open_channel()
    of the same path in between made its channel in that file and sent into
    it, and the message was gone with the file (the next opener made a new,
    empty one)."""
    from pymmapdev import _open
    sent = []

    def reserve_then_interrupt(*args, **kwargs):
        sent.append(run_python(f"""
            import pymmapdev
            with pymmapdev.open_channel({shm_path!r}, 4096) as ch:
                ch.send(b"from the other process")
            """))
        raise KeyboardInterrupt
    monkeypatch.setattr(_open, "_reserve", reserve_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        pymmapdev.open_channel(shm_path, 4096)
    monkeypatch.undo()
    assert len(sent) == 1
    with pymmapdev.open_channel(shm_path, 4096) as ch:
        assert ch.recv(timeout=0) == b"from the other process"


def test_open_channel_of_a_file_it_may_only_read_does_not_point_to_readonly(shm_path):
    """open_channel() of a file the user may read but not write passed on
    open_file's advice, "pass readonly=True to map it read-only": a
    parameter open_channel() has not, for a mapping a Channel refuses."""
    from conftest import as_nobody
    pymmapdev.open_channel(shm_path, 4096).close()
    os.chmod(shm_path, 0o444)

    def try_open():
        try:
            pymmapdev.open_channel(shm_path, 4096)
        except PermissionError as e:
            return (e.errno, e.filename, e.strerror)
        return "opened"
    result = as_nobody(try_open) if os.geteuid() == 0 else repr(try_open())
    assert "readonly" not in result and "may be read, not written" in result, result
    assert "a Channel writes its file" in result, result


def test_check_head_of_a_truncated_mapping_is_an_error_not_a_crash(shm_path):
    """Channel._check_head() copied its head argument with a plain memcpy
    from any buffer: a Mapping of a file a peer truncated is one, and the
    copy died of SIGBUS.  It takes the bytes open_channel() reads."""
    child = run_python("""
        import os, sys, pymmapdev
        path = sys.argv[1]
        m = pymmapdev.open_file(path, 8192)
        os.truncate(path, 0)
        try:
            pymmapdev.Channel._check_head(m, 0, 4096, False, False)
        except TypeError as exc:
            print("refused:", exc)
        """, shm_path, check=False)
    assert child.returncode == 0 and "refused: " in child.stdout, child
    assert "bytes" in child.stdout, child.stdout


def test_a_region_of_another_namespace_is_refused_before_anything_is_written(m):
    """The constructor wrote its descriptor into a region whose namespace
    word was another's, and only then refused it: the region (zero bytes
    but that word) held a Channel afterwards."""
    m.write(0, FOREIGN_NAMESPACE)
    with pytest.raises(ValueError, match="another pid namespace"):
        Channel(m, 0, CAP)
    assert m.read(0, 16) == FOREIGN_NAMESPACE


def test_a_view_kept_past_its_block_by_a_buffer_holder_loses_no_message():
    """A consumer that holds a buffer *of the view itself* (a PickleBuffer,
    a C extension's Py_buffer) makes memoryview.release() raise BufferError
    as the block ends: that skipped the end of the block, so a reserve()
    whose block completed was dropped, and a recv_view() message came again
    from the next recv().  The block now ends as documented; the view, like
    an array numpy made of it, stays valid memory (it pins the mapping)."""
    import pickle
    m = pymmapdev.anonymous(1 << 16)
    ch = Channel(m, 0, CAP)
    with ch.reserve(3) as buf:
        buf[:] = b"abc"
        held = pickle.PickleBuffer(buf)
    ch.send(b"next")
    assert ch.recv(timeout=0) == b"abc" and ch.recv(timeout=0) == b"next"
    ch.send(b"one")
    ch.send(b"two")
    with ch.recv_view() as view:
        assert bytes(view) == b"one"
        held2 = pickle.PickleBuffer(view)
    assert ch.recv(timeout=0) == b"two"
    with pytest.raises(BufferError, match="2 exported buffer"):
        m.close()                                   # the held views pin it
    assert held.raw().nbytes == 3                   # not released: still mapped memory
    del held, held2, buf, view
    m.close()


CLOSE_RACE_SIDE = """
import sys, pymmapdev
from pymmapdev import Channel
path, cap, trials, role = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
body = bytes(cap // 4)
end = BrokenPipeError if role == "producer" else EOFError
with pymmapdev.open_file(path) as m:
    for t in range(trials):
        ch = Channel(m, t * Channel.size_for(cap), cap, multi_producer=True)
        n = 0
        try:
            while True:
                if role == "producer":
                    assert ch.send(b"%d " % n + body, timeout=60)
                else:
                    with ch.recv_view(timeout=60) as view:
                        assert int(bytes(view[:12]).split(b" ")[0]) == n
                n += 1
        except end:
            print(n, flush=True)
        del ch
"""


def _stopped(pid):
    return task_state_and_flags(pid)[0] == "T"


def _stop_holding_the_side(pid, m, owner_offset):
    """SIGSTOPs *pid* at a moment it holds the producer side.  kill() only
    queues the stop: each try waits until the process is stopped before
    it looks, and the tries are bounded by time, not count (a loaded
    machine gave 10 000 quick tries that never saw one)."""
    deadline = time.monotonic() + GUARD
    while time.monotonic() < deadline:
        os.kill(pid, signal.SIGSTOP)
        spin_until(lambda: _stopped(pid))
        if m.load_u64(owner_offset) != 0:
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(random.random() / 1000)       # another moment of its loop
    pytest.fail("the producer was never stopped inside a send")


def test_close_send_racing_a_multi_producer_send_loses_no_sent_message(shm_path, run_child):
    """A producer of a multi_producer channel looked at close_send() when it
    found room, then copied and published: a close_send() in between let
    the consumer take the drained, closed ring for the end (EOFError), and
    the send then returned True with its message behind the end, the
    consumer gone.  The producer is stopped (SIGSTOP) while it holds the
    side sending big messages, so inside that window; close_send() runs;
    it goes on (SIGCONT).  Every message a send() reported sent must be
    received before EOFError, and none lie behind it."""
    cap, trials = 1 << 20, 20
    size = Channel.size_for(cap)
    pymmapdev.open_file(shm_path, size * trials).close()
    consumer = run_child(CLOSE_RACE_SIDE, shm_path, cap, trials, "consumer")
    producer = run_child(CLOSE_RACE_SIDE, shm_path, cap, trials, "producer")
    with pymmapdev.open_file(shm_path) as m:
        for t in range(trials):
            ch = Channel(m, t * size, cap, multi_producer=True)
            spin_until(lambda: m.load_u64(t * size + 72) >= 3)     # sent
            _stop_holding_the_side(producer.pid, m, t * size + 80)
            ch.close_send()
            time.sleep(0.2)         # a consumer that takes this for the end exits now
            os.kill(producer.pid, signal.SIGCONT)
            del ch
        sent = [int(x) for x in producer.communicate(timeout=GUARD * 2)[0].split()]
        received = [int(x) for x in consumer.communicate(timeout=GUARD * 2)[0].split()]
        assert producer.returncode == 0 and consumer.returncode == 0
        behind = 0
        for t in range(trials):
            ch = Channel(m, t * size, cap, multi_producer=True)
            try:
                while ch.recv(timeout=0) is not None:
                    behind += 1
            except EOFError:
                pass
            del ch
        assert (behind, received) == (0, sent), "sent messages behind the end of the stream"


# ---- a single-mode send racing close_send() from another process -----------

_SYS_USERFAULTFD = 323                          # x86_64
_UFFD_API = 0xAA
_UFFDIO_API = 0xC018AA3F                        # _IOWR(0xAA, 0x3F, struct uffdio_api)
_UFFDIO_REGISTER = 0xC020AA00                   # _IOWR(0xAA, 0x00, struct uffdio_register)
_UFFDIO_COPY = 0xC028AA03                       # _IOWR(0xAA, 0x03, struct uffdio_copy)
_UFFDIO_REGISTER_MODE_MISSING = 1
_UFFD_EVENT_PAGEFAULT = 0x12


def _libc():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
    return libc


def _uffd_ioctl(fd, request, words):
    import ctypes
    buf = (ctypes.c_uint64 * len(words))(*words)
    if _libc().ioctl(fd, request, buf) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"userfaultfd ioctl {request:#x}: {os.strerror(err)}")
    return list(buf)


def _paused_page():
    """(page, uffd): a private anonymous page whose first touch blocks until
    whoever reads *uffd* fills it (UFFDIO_COPY), or closes every copy of
    *uffd* (the kernel then fills it with zeros)."""
    import ctypes
    import mmap
    if os.uname().machine != "x86_64":
        pytest.fail("the userfaultfd numbers here are x86_64's")
    fd = _libc().syscall(_SYS_USERFAULTFD, os.O_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"userfaultfd: {os.strerror(err)}")
    _uffd_ioctl(fd, _UFFDIO_API, [_UFFD_API, 0, 0])
    page = mmap.mmap(-1, mmap.PAGESIZE)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    _uffd_ioctl(fd, _UFFDIO_REGISTER,
                [address, mmap.PAGESIZE, _UFFDIO_REGISTER_MODE_MISSING, 0])
    return page, fd


def _fill_when_touched(fd, fill, before_filling):
    """Waits (GUARD) for the first touch of the page registered on *fd* (by
    the process that registered it: this may be another), runs
    *before_filling*, then fills the page with the byte *fill*.  The page
    is filled even when *before_filling* raises."""
    import ctypes
    import mmap
    import select
    if not select.select([fd], [], [], GUARD)[0]:
        raise AssertionError("the page was never touched")
    msg = os.read(fd, 32)
    event, address = msg[0], struct.unpack_from("=Q", msg, 16)[0]
    assert event == _UFFD_EVENT_PAGEFAULT
    src = ctypes.create_string_buffer(fill * mmap.PAGESIZE, mmap.PAGESIZE)
    try:
        return before_filling()
    finally:
        page = address & ~(mmap.PAGESIZE - 1)
        _uffd_ioctl(fd, _UFFDIO_COPY, [page, ctypes.addressof(src), mmap.PAGESIZE, 0, 0])


def _consume_after_close(path, fd, report, prepare=None):
    """The forked side of the tests below: *prepare(m, ch, got)* first if
    given; then once the producer's copy touches its source, close_send(),
    then receive until EOFError, the producer paused (for 0.5 s) and then
    let go.  Reports what it received before the end."""
    got = []
    try:
        with pymmapdev.open_file(path) as m:
            ch = Channel(m, 0, CAP)
            if prepare is not None:
                prepare(m, ch, got)

            def close_and_drain():
                ch.close_send()
                while (msg := ch.recv(timeout=0.5)) is not None:
                    got.append(msg)

            try:
                _fill_when_touched(fd, b"u", close_and_drain)
                while True:
                    got.append(ch.recv(timeout=GUARD))
            except EOFError:
                pass
            del ch
        os.write(report, repr(got).encode())
    finally:
        os._exit(0)


@pytest.mark.parametrize("how", ["send", "send_many"])
def test_close_send_from_elsewhere_racing_a_single_mode_send_loses_nothing(shm_path, how):
    """A single-mode producer looked at closed, then copied its message in
    and published it; a close_send() from another process in between let
    the consumer take the drained, closed ring for the end (EOFError), and
    the send then returned as sent, the message behind the end.  The copy
    is paused here (the source page is a userfaultfd one the consumer's
    process fills) while the consumer closes and drains: a message sent
    must be received before EOFError."""
    pymmapdev.open_file(shm_path, Channel.size_for(CAP)).close()
    page, fd = _paused_page()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _consume_after_close(shm_path, fd, write_end)
    os.close(write_end)
    os.close(fd)            # the child's copy is the last: its exit fills the page
    with memoryview(page) as source, pymmapdev.open_file(shm_path) as m:
        ch = Channel(m, 0, CAP)
        if how == "send":
            assert ch.send(source[:64]) is True
        else:
            assert ch.send_many([source[:64]]) == 1
        del ch
    with os.fdopen(read_end) as f:
        received = f.read()
    assert os.waitpid(pid, 0)[1] == 0
    page.close()
    assert received == repr([b"u" * 64]), "a message sent was lost behind the end"


def test_single_mode_end_waits_only_for_a_live_sender_named_in_its_word(m):
    """The sending word names a single-mode producer from its look at closed
    to its publish: a consumer that finds the ring closed and drained waits
    while it names a live thread other than its own (here the producer,
    which never clears it: the wait ends with the consumer's timeout), and
    takes the end at once when it names a dead thread or is garbage a peer
    wrote.  Before the sending word, the live sender's case was EOFError."""
    ch = Channel(m, 0, CAP)
    assert ch.send(b"x")
    assert m.load_u64(CH_SENDING) == 0, "a send that ended left its name"
    live = m.load_u64(CH_PRODUCER)              # this thread
    got = []
    run_thread_to_its_end(lambda: got.append(Channel(m, 0, CAP).recv(timeout=GUARD)))
    dead = m.load_u64(CH_CONSUMER)              # that thread, ended
    ch.close_send()
    results = {}

    def consume():
        consumer = Channel(m, 0, CAP)           # takes the dead thread's claim over
        for name, word in [("garbage", 0xDEAD_BEEF_DEAD_BEEF), ("dead", dead), ("live", live)]:
            m.store_u64(CH_SENDING, word)
            try:
                results[name] = consumer.recv(timeout=0.3)
            except EOFError:
                results[name] = "EOF"
        m.store_u64(CH_SENDING, 0)
        try:
            results["cleared"] = consumer.recv(timeout=GUARD)
        except EOFError:
            results["cleared"] = "EOF"

    run_thread_to_its_end(consume)
    assert got == [b"x"]
    assert results == {"garbage": "EOF", "dead": "EOF", "live": None, "cleared": "EOF"}


def test_every_end_of_a_single_mode_send_clears_its_name(m):
    """A name left in the sending word after close_send() would keep a
    consumer from the end while this thread lives: every way a send ends
    (published, refused for room, a reservation committed or dropped,
    refused after the close) clears it."""
    ch = Channel(m, 0, CAP)
    ends = []

    def look(how):
        ends.append((how, m.load_u64(CH_SENDING)))

    assert ch.send(b"a")
    look("send")
    assert ch.send_many([b"b", b"c"]) == 2
    look("send_many")
    with ch.reserve(8) as view:
        view[:] = b"d" * 8
    look("reserve committed")
    with pytest.raises(ZeroDivisionError), ch.reserve(8):
        1 / 0
    look("reserve dropped")
    while ch.send(bytes(1000), timeout=0):
        pass
    look("send refused for room")
    assert ch.send_many([bytes(1000)], timeout=0) == 0
    look("send_many refused for room")
    with ch.reserve(1000, timeout=0) as view:
        assert view is None
    look("reserve refused for room")
    ch.close_send()
    with pytest.raises(BrokenPipeError):
        ch.send(b"e")
    look("send after close_send")
    assert ends == [(how, 0) for how, _ in ends]


# ---- a send made by a signal handler inside a send of the same thread -------

@pytest.mark.parametrize("handler_sends", ["fits", "refused"])
def test_a_send_nested_in_a_waiting_send_leaves_no_message_behind_the_end(m, handler_sends):
    """A signal handler's send() inside a single-mode send() of the same
    thread that waits for room ends by clearing the sending word: the
    outer send is unnamed from there on.  That is safe only because the
    outer send looks at closed again (naming itself again) before it
    publishes: a close_send() while it is unnamed must make it raise
    BrokenPipeError, never publish behind the end the consumer took.
    Here the handler's send fits (published) or is refused for room; then
    another thread closes and drains to EOFError."""
    ch = Channel(m, 0, CAP)
    sent = []
    while ch.send(b"f" * 1000, timeout=0):      # 4 records of 1008: 64 bytes left
        sent.append(b"f" * 1000)
    handler_msg = b"h" * (8 if handler_sends == "fits" else 100)
    handled = threading.Event()
    seen = {}

    def handler(signum, frame):
        if not handled.is_set():
            seen["handler"] = ch.send(handler_msg, timeout=0)
            seen["word"] = m.load_u64(CH_SENDING)
            handled.set()

    received = []

    def close_and_drain():
        spin_until(lambda: m.load_u32(PRODUCER_WAITERS) == 1)     # the outer sleeps
        while not handled.wait(0.05):       # a signal just before the sleep waits for a wake
            signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
        ch.close_send()
        try:
            while True:
                received.append(ch.recv(timeout=GUARD))
        except EOFError:
            pass

    previous = signal.signal(signal.SIGUSR1, handler)
    helper = threading.Thread(target=close_and_drain)
    helper.start()
    try:
        try:
            seen["outer"] = ch.send(b"o" * 1000)
        except BrokenPipeError:
            seen["outer"] = "BrokenPipeError"
    finally:
        helper.join(GUARD)
        signal.signal(signal.SIGUSR1, previous)
    assert not helper.is_alive()
    assert seen["word"] == 0, "the handler's send left its name"
    if seen["handler"]:
        sent.append(handler_msg)
    if seen["outer"] is True:
        sent.append(b"o" * 1000)
    assert (seen["handler"], seen["outer"]) == (handler_sends == "fits", "BrokenPipeError")
    assert received == sent, "a message sent lies behind the end of the stream"


def _make_room_after_a_nested_send(handled_at):
    """The consumer's start in the test below: once the producer sleeps for
    room, signals it until its handler has run (a send nested in the
    waiting one), then makes room."""
    def prepare(m, ch, got):
        spin_until(lambda: m.load_u32(PRODUCER_WAITERS) == 1)
        # a signal just before the producer's sleep waits for a wake: again
        while m.load_u64(handled_at) == 0:
            os.kill(os.getppid(), signal.SIGUSR1)
            time.sleep(0.01)
        got.append(ch.recv(timeout=GUARD))      # room for the waiting send
    return prepare


@pytest.mark.parametrize("handler_sends", ["fits", "refused"])
def test_a_send_nested_in_a_waiting_send_names_the_outer_one_again(shm_path, handler_sends):
    """A signal handler's send() inside a single-mode send() of the same
    thread clears the sending word at its end, while the outer send still
    waits for room.  The outer one must name itself again when it next
    looks at closed, before its copy and publish: a close_send() from
    elsewhere during the copy (paused here by a userfaultfd source page)
    must make the consumer wait for it, not take the drained ring for the
    end with the message still to come.  The handler's send fits (it is
    published) or is refused for room."""
    handled_at = Channel.size_for(CAP)
    pymmapdev.open_file(shm_path, handled_at + 64).close()
    page, fd = _paused_page()
    read_end, write_end = os.pipe()
    with pymmapdev.open_file(shm_path) as m:
        ch = Channel(m, 0, CAP)
        sent = []
        while ch.send(b"f" * 1000, timeout=0):      # 4 records of 1008: 64 bytes left
            sent.append(b"f" * 1000)
        handler_msg = b"h" * (8 if handler_sends == "fits" else 100)
        seen = {}

        def handler(signum, frame):
            if "handler" not in seen:
                seen["handler"] = ch.send(handler_msg, timeout=0)
                seen["word"] = m.load_u64(CH_SENDING)
                m.store_u64(handled_at, 1)

        previous = signal.signal(signal.SIGUSR1, handler)
        try:
            pid = os.fork()
            if pid == 0:
                os.close(read_end)
                _consume_after_close(shm_path, fd, write_end,
                                     _make_room_after_a_nested_send(handled_at))
            os.close(write_end)
            os.close(fd)        # the child's copy is the last: its exit fills the page
            with memoryview(page) as source:
                assert ch.send(source[:1000]) is True
        finally:
            signal.signal(signal.SIGUSR1, previous)
        del ch
    with os.fdopen(read_end) as f:
        received = f.read()
    assert os.waitpid(pid, 0)[1] == 0
    page.close()
    assert (seen["handler"], seen["word"]) == (handler_sends == "fits", 0)
    if seen["handler"]:
        sent.append(handler_msg)
    assert received == repr(sent + [b"u" * 1000]), "a message sent was lost behind the end"


# ---- the end of the stream decided on one look at closed --------------------

CLOSED_TOGGLER = """
import sys, time, pymmapdev
from pymmapdev import Channel
path, cap, word, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
with pymmapdev.open_file(path) as m:
    size = Channel.size_for(cap)
    mine = Channel(m, size, cap)            # a single-mode claim names this thread
    assert mine.send(b"claim")
    me = m.load_u64(size + 80)
    assert me != 0
    m.store_u64(word, me)                   # the channel under test: this thread is in a send
    print("ready", flush=True)
    store, end = m.store_u32, time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(1000):
            store(88, 1)
            store(88, 0)
    store(88, 0)
    del mine
"""


@pytest.mark.parametrize("multi_producer", [False, True], ids=["single", "multi"])
def test_the_end_is_decided_on_one_look_at_closed(shm_path, run_child, multi_producer):
    """A consumer that found the ring drained read closed twice: a first read
    0 skipped the look at a producer still in a send, and a close_send()
    landing before the second read (1) made it take that producer's
    message-to-be for the end (EOFError; seen once in a full ASan run of
    test_close_send_racing_a_multi_producer_send_loses_no_sent_message).
    Here another process names its live thread as the one in a send (the
    owner word in multi mode, the sending word in single mode) and flips
    closed 1/0 as fast as it can: while a live sender is named, an empty
    ring is never the end."""
    cap = 4096
    size = Channel.size_for(cap)
    pymmapdev.open_file(shm_path, 2 * size).close()
    word = CH_PRODUCER if multi_producer else CH_SENDING
    toggler = run_child(CLOSED_TOGGLER, shm_path, cap, word, 2.0)
    assert toggler.stdout.readline() == "ready\n", toggler.communicate(timeout=GUARD)
    ends = calls = 0
    with pymmapdev.open_file(shm_path) as m:
        ch = Channel(m, 0, cap, multi_producer=multi_producer)
        while toggler.poll() is None:
            for _ in range(1000):
                calls += 1
                try:
                    assert ch.recv(timeout=0) is None
                except EOFError:
                    ends += 1
        del ch
    assert toggler.wait(GUARD) == 0, toggler.stderr.read()
    assert calls > 10_000
    assert ends == 0, f"{ends} of {calls} receives took a live sender's channel for ended"


# ---- a record that vanishes between recv()'s two looks ----------------------

HEAD_TOGGLER = """
import sys, time, pymmapdev
path, head, record, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
seq = int(sys.argv[5]) if len(sys.argv) > 5 else None  # a sequence word whose sleepers to wake
with pymmapdev.open_file(path) as m:
    print("ready", flush=True)
    store, end = m.store_u64, time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(1000):
            store(head, 0)              # the record is there
            store(head, record)         # and gone: the ring is empty
        if seq is not None:             # a receiver that fell asleep looks again
            store(head, 0)
            m.fetch_add_u32(seq, 1)
            m.wake(seq, 1 << 30)
"""


@contextlib.contextmanager
def _a_record_a_peer_moves_head_over(shm_path, run_child, *seq):
    """(m, ch, payload, toggler): a channel holding one record, while another
    process moves head back and forth between it and the tail for 2 s (and
    wakes the sleepers on the sequence word *seq* now and then)."""
    cap = 4096
    pymmapdev.open_file(shm_path, Channel.size_for(cap)).close()
    with pymmapdev.open_file(shm_path) as m:
        ch = Channel(m, 0, cap)
        payload = b"r" * 64
        assert ch.send(payload)
        toggler = run_child(HEAD_TOGGLER, shm_path, CH_HEAD, 8 + len(payload), 2.0, *seq)
        assert toggler.stdout.readline() == "ready\n", toggler.communicate(timeout=GUARD)
        yield m, ch, payload, toggler
        del ch
    assert toggler.wait(GUARD) == 0, toggler.stderr.read()


def test_a_record_that_vanishes_under_recv_is_not_received(shm_path, run_child):
    """recv() found a record (the wait), allocated the bytes, then looked
    again at the head to copy it: a peer that emptied the ring in between
    (here a process that moves head back and forth between the record and
    the tail) made that second look 'empty' (BLOCK_SLEEP, 0), which recv()
    took for success: it returned the new bytes object uninitialized (our
    heap's leftovers), and consumed nothing.  Every message recv() returns
    must be the record's bytes, and counted as received."""
    with _a_record_a_peer_moves_head_over(shm_path, run_child) as (m, ch, payload, toggler):
        bad = calls = 0
        while toggler.poll() is None:
            for _ in range(1000):
                calls += 1
                before = m.load_u64(CH_RECEIVED)
                try:
                    msg = ch.recv(timeout=0)
                except ChannelCorrupt:
                    continue        # a peer moving head: allowed, if said so
                if msg is not None and (msg != payload or m.load_u64(CH_RECEIVED) != before + 1):
                    bad += 1
    assert calls > 10_000
    assert bad == 0, f"{bad} of {calls} receives returned a message never taken from the ring"


def test_a_record_that_vanishes_under_recv_many_is_not_a_timeout(shm_path, run_child):
    """recv_many() waited for a record, then scanned the records from the
    head: a peer that emptied the ring in between (here a process moving
    head back and forth between the record and the tail, and waking
    sleepers now and then) made the scan find nothing, which recv_many()
    took for a ring drained after earlier batches: it returned [] before
    its timeout, the answer of a timeout ("at least one unless timed
    out"), as recv() returned an uninitialized message.  A record that is
    gone after the wait found it was moved by a peer: ChannelCorrupt."""
    with _a_record_a_peer_moves_head_over(shm_path, run_child, CH_DATA_SEQ) as \
            (m, ch, payload, toggler):
        empty = calls = 0
        while toggler.poll() is None:
            for _ in range(100):
                calls += 1
                try:
                    got = ch.recv_many(1, timeout=GUARD)
                except ChannelCorrupt:
                    continue        # a peer moving head: allowed, if said so
                if got == []:
                    empty += 1
                else:
                    m.store_u64(CH_HEAD, 0)     # the record again, for the next call
    assert calls > 1000
    assert empty == 0, f"{empty} of {calls} receives with no timeout passed returned []"


# ---- a send whose source is the channel's own ring ---------------------------

def _own_ring_sources(m, ch, case):
    """Views of the ring's free space that a send at the tail writes over:
    at the tail (the record header lands on the source's first 8 bytes, the
    payload 8 bytes further on), and across the ring's end (the padding
    header lands on it, the payload at the ring's start)."""
    ring = Channel.HEADER
    if case == "at-the-tail":
        return [memoryview(m)[ring:ring + 200]]
    for _ in range(2):                          # two records of 1984: the tail at CAP - 128
        assert ch.send(bytes(1976)) and ch.recv() == bytes(1976)
    return [memoryview(m)[ring + CAP - 128:ring + CAP]]


@pytest.mark.parametrize("case", ["at-the-tail", "across-the-end"])
@pytest.mark.parametrize("how", ["send", "send_many"])
def test_a_send_from_a_view_of_its_own_ring_sends_the_bytes_the_view_held(m, how, case):
    """A message that is a view of the ring's free space where it is about
    to be written: the record header (or the padding header) was written
    first, over the source's first bytes, and the payload copied with
    memcpy from a source overlapping its destination (undefined behaviour;
    AddressSanitizer aborts on it).  The message received must be the bytes
    the view held when send was called, as for a Mapping's own overlapping
    copies and a Slot's."""
    ch = Channel(m, 0, CAP)
    (source,) = _own_ring_sources(m, ch, case)
    expected = bytes(random.Random(7).randbytes(len(source)))
    source[:] = expected
    if how == "send":
        assert ch.send(source)
    else:
        assert ch.send_many([source]) == 1
    source.release()
    assert ch.recv(timeout=0) == expected


class _Length:
    """An integer only through __index__, as every length argument takes."""

    def __init__(self, value):
        self.value = value

    def __index__(self):
        return self.value


class _LyingInt(int):
    """An int whose reflected addition says another number."""

    def __radd__(self, other):
        return int(self) + 1000


@pytest.mark.parametrize("nbytes", [_Length(5), _LyingInt(5)], ids=["__index__", "int-subclass"])
def test_reserve_takes_nbytes_as_an_int_once(ch, nbytes):
    """reserve() handed nbytes to _reserve (which takes any __index__), then
    computed the view's end as offset + nbytes in Python: an object with
    only __index__ raised TypeError there (the reservation dropped), and an
    int subclass's __radd__ chose the view's length: a view past the
    reserved bytes, over the rest of the ring.  The view is the nbytes
    reserved."""
    with ch.reserve(nbytes) as view:
        assert len(view) == 5
        view[:] = b"12345"
    assert ch.recv(timeout=0) == b"12345"
