"""pymmapdev.Slot: a seqlock latest-value cell that never returns a torn value."""
import multiprocessing as mp
import threading
import time

import pytest

import pymmapdev
from _sync_workers import (GUARD, held_in_its_exit, payload, payload_ok, run_child,  # noqa: F401
                           slot_wait_reader, slot_writer, spin_until)


@pytest.fixture
def m(shm_path):
    with pymmapdev.open_file(shm_path, 1 << 16) as mapping:
        yield mapping


def test_size_for():
    S = pymmapdev.Slot
    assert S.HEADER == 40
    assert S.size_for(0) == 40
    assert S.size_for(1) == 48
    assert S.size_for(8) == 48
    assert S.size_for(100) == 40 + 104
    with pytest.raises(ValueError):
        S.size_for(-1)


def test_empty_slot_then_publish_and_read(m):
    slot = pymmapdev.Slot(m, 64, 100)
    assert slot.read() == (0, b"")
    assert slot.version == 0
    assert slot.publish(b"hello") == 1
    assert slot.read() == (1, b"hello")
    assert slot.publish(bytearray(b"x" * 100)) == 2
    assert slot.read() == (2, b"x" * 100)
    assert slot.publish(memoryview(b"abc")) == 3
    assert slot.read() == (3, b"abc")
    assert slot.publish(b"") == 4
    assert slot.read() == (4, b"")
    assert slot.version == 4
    # a second Slot object over the same bytes sees the same value
    assert pymmapdev.Slot(m, 64, 100).read() == (4, b"")


def test_layout_is_the_documented_one(m):
    slot = pymmapdev.Slot(m, 64, 16)
    slot.publish(b"abc")
    slot.publish(b"defg")
    assert m.read_u64(64) == 4                          # seq = 2 * version
    assert m.read_u64(72) == 4                          # length
    assert m.read_u32(80) == 0                          # no reader asleep
    assert m.read_u64(88) & 0x3fffff == threading.get_native_id()   # the writer
    assert m.read_u64(96) != 0                          # its namespace
    assert m[104:108] == b"defg"
    assert m[64 + pymmapdev.Slot.size_for(16)] == 0     # nothing beyond


def test_bad_arguments(m, shm_path):
    with pytest.raises(ValueError, match=r"offset 4\b.*aligned"):
        pymmapdev.Slot(m, 4, 16)
    with pytest.raises(ValueError, match="65536"):
        pymmapdev.Slot(m, (1 << 16) - 24, 16)
    with pytest.raises(ValueError, match="capacity"):
        pymmapdev.Slot(m, 0, -1)
    slot = pymmapdev.Slot(m, 0, 8)
    with pytest.raises(ValueError, match="capacity 8"):
        slot.publish(b"123456789")
    with pytest.raises(TypeError):
        slot.publish("text")
    with pytest.raises(ValueError, match="timeout"):
        slot.wait_newer(0, -1)
    assert slot.read() == (0, b"")
    m.write_u64(8, 1000)                                # a writer with another capacity
    with pytest.raises(ValueError, match="capacity 8"):
        slot.read()


def test_read_only_mapping(m, shm_path):
    pymmapdev.Slot(m, 0, 32).publish(b"ro")
    with pymmapdev.open_file(shm_path, readonly=True) as r:
        slot = pymmapdev.Slot(r, 0, 32)
        assert slot.read() == (1, b"ro")
        with pytest.raises(TypeError, match="read-only"):
            slot.publish(b"no")
        assert slot.wait_newer(1, 0.01) is False        # polls instead of sleeping
        assert slot.wait_newer(0, 0) is True


def test_publish_from_a_view_of_the_same_mapping(m):
    m[1000:1005] = b"inner"
    slot = pymmapdev.Slot(m, 0, 64)
    with memoryview(m) as view:
        slot.publish(view[1000:1005])
    assert slot.read() == (1, b"inner")


def test_publish_of_a_view_overlapping_the_slot_stores_the_bytes_as_given(m):
    """A source overlapping the slot's own header (or its value) is stored
    as it was when publish() was called: the header used to be rewritten
    (writer, seq odd) before the copy read it, so the value held the
    half-done header instead of the caller's bytes."""
    slot = pymmapdev.Slot(m, 64, 64)
    slot.publish(b"0123456789")
    for lo, hi in [(64, 64 + pymmapdev.Slot.HEADER),      # the header
                   (40, 100),                             # before, header, value
                   (64 + 24, 64 + 48),                    # writer, namespace, value
                   (64 + pymmapdev.Slot.HEADER + 2, 64 + pymmapdev.Slot.HEADER + 30)]:
        before = m[lo:hi]
        with memoryview(m) as view:
            version = slot.publish(view[lo:hi])
        assert slot.read() == (version, before), (lo, hi)


@pytest.mark.parametrize("timeout", [0, 1e-6])
def test_a_zero_timeout_still_reports_a_dead_writer(m, timeout):
    """read(timeout=0) and wait_newer(v, 0) with the default spin: the
    deadline passed during the spin, before the first check of the writer,
    so a publish abandoned by a dead writer read as one in progress (None,
    False) at every call instead of PeerDied."""
    assert pymmapdev.get_spin() > 0                     # the default: the case at hand
    slot = pymmapdev.Slot(m, 0, 16)
    slot.publish(b"one")
    m.store_u64(24, 0)                                  # no writer identity: nobody to wait for
    m.store_u64(0, 3)                                   # seq odd: a publish never finished
    with pytest.raises(pymmapdev.PeerDied):
        slot.read(timeout=timeout)
    with pytest.raises(pymmapdev.PeerDied):
        slot.wait_newer(1, timeout=timeout)


def test_a_writer_inside_its_exit_mid_publish_is_dead(m, shm_path, run_child):
    """A publish left odd by a writer now inside do_exit() (PF_EXITING) can
    never finish: PeerDied at once.  The writer counted as alive until the
    kernel made it a zombie, and read(timeout=0) said (None, False)."""
    pymmapdev.Slot(m, 0, 16).publish(b"one")
    with held_in_its_exit(run_child, """
            import pymmapdev
            m = pymmapdev.open_file(sys.argv[1])
            pymmapdev.Slot(m, 0, 16).publish(b"two")   # the writer word names this thread
            m.store_u64(0, m.load_u64(0) + 1)           # seq odd: its next publish, begun
            """, shm_path):
        slot = pymmapdev.Slot(m, 0, 16)
        with pytest.raises(pymmapdev.PeerDied):
            slot.read(timeout=0)


def test_writer_died_mid_publish_is_recovered(m):
    slot = pymmapdev.Slot(m, 0, 16)
    slot.publish(b"one")
    m.store_u64(0, 3)                                   # seq odd: a publish never finished
    assert slot.version == 1
    slot = pymmapdev.Slot(m, 0, 16)                     # constructing does not block
    got = []
    t = threading.Thread(target=lambda: got.append(slot.read()))
    t.start()                                           # blocks (GIL released) until ...
    assert slot.publish(b"two") == 2                    # ... the next writer completes it
    t.join(GUARD)
    assert got == [(2, b"two")]


def test_wait_newer_times_out_and_counts_waiters(m):
    slot = pymmapdev.Slot(m, 0, 16)
    assert slot.wait_newer(0, 0.05) is False
    assert slot.wait_newer(0, 0) is False
    assert m.load_u32(16) == 0                          # waiter count restored
    slot.publish(b"a")
    assert slot.wait_newer(0, 0) is True
    assert slot.wait_newer(0) is True
    assert slot.wait_newer(1, 0.01) is False


def test_wait_newer_woken_by_thread(m):
    slot = pymmapdev.Slot(m, 0, 16)
    got = []
    t = threading.Thread(target=lambda: got.append(slot.wait_newer(0, GUARD)))
    t.start()
    spin_until(lambda: m.load_u32(16) == 1)             # the reader announced itself
    slot.publish(b"x")
    t.join(GUARD)
    assert got == [True]
    assert m.load_u32(16) == 0


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_wait_newer_across_processes(shm_path, method):
    with pymmapdev.open_file(shm_path, 4096) as m:
        slot = pymmapdev.Slot(m, 64, 32)
        slot.publish(b"old")
        p = mp.get_context(method).Process(target=slot_wait_reader,
                                           args=(shm_path, 64, 32, 0, 4))
        p.start()
        spin_until(lambda: m.load_u32(0) == 1)
        slot.publish(b"news")
        p.join(GUARD)
        assert p.exitcode == 0
        assert m.load_u32(4) == 2


def _check_reads(m, slot, stop_offset, want_versions=2000, max_reads=500000, budget=10.0):
    """Read while the writer publishes; every value must be intact.

    Reads until many distinct versions went by (or a read/time budget runs
    out: on a loaded machine the two processes may share one CPU and
    interleave only at scheduler ticks), then tells the writer to stop.
    """
    last, seen, reads = -1, set(), 0
    spin_until(lambda: slot.version > 0 or m.load_u32(stop_offset))
    end = time.monotonic() + budget
    try:
        while len(seen) < want_versions and reads < max_reads:
            version, data = slot.read()
            reads += 1
            assert payload_ok(data), f"torn read at version {version}: {len(data)} bytes"
            assert version >= last, "versions went backwards"
            last = version
            seen.add(version)
            if m.load_u32(stop_offset) or (reads % 1000 == 0 and time.monotonic() > end):
                break                                   # writer gone (or failed), or budget spent
    finally:
        m.store_u32(stop_offset, 1)
    assert len(seen) >= 2, "the writer made no progress during the reads"


@pytest.mark.parametrize("method", ["spawn", "fork"])
@pytest.mark.parametrize("capacity", [64, 4000])
def test_reader_racing_fast_writer_never_sees_torn_value(shm_path, method, capacity):
    with pymmapdev.open_file(shm_path, 1 << 16) as m:
        slot = pymmapdev.Slot(m, 64, capacity)
        p = mp.get_context(method).Process(target=slot_writer,
                                           args=(shm_path, 64, capacity, 10**9, 0))
        p.start()
        try:
            _check_reads(m, slot, 0)
        finally:
            m.store_u32(0, 1)
            p.join(GUARD)
        assert p.exitcode == 0


def test_several_readers_racing_writer_in_unrelated_processes(shm_path, run_child):
    capacity = 1000
    with pymmapdev.open_file(shm_path, 1 << 16) as m:
        pymmapdev.Slot(m, 64, capacity)
        readers = [run_child("""
            import sys, pymmapdev
            from _sync_workers import payload_ok, spin_until
            with pymmapdev.open_file(sys.argv[1]) as m:
                slot = pymmapdev.Slot(m, 64, 1000)
                spin_until(lambda: slot.version > 0)
                n = 0
                while not m.load_u32(0) or n == 0:
                    version, data = slot.read()
                    assert payload_ok(data), f"torn at {version}"
                    n += 1
                print(n)
        """, shm_path) for _ in range(2)]
        slot_writer(shm_path, 64, capacity, 100000, 0)
        for r in readers:
            out, err = r.communicate(timeout=GUARD)
            assert r.returncode == 0, err
            assert int(out) > 0


def test_payload_checker_detects_tearing():
    good = payload(7, 200)
    assert payload_ok(good)
    torn = payload(8, 200)[:100] + good[100:]
    assert not payload_ok(torn)
