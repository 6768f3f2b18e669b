"""heartbeat_ms: the module writes struct mmapdev_heartbeat at offset 0 of
device 0 and wakes the waiters on offset 0: the driver writes, the script
waits."""
import os
import time

import pytest

import pymmapdev

from . import devlib

pytestmark = pytest.mark.device


def _text(counter):
    return f"value = {counter}\n".encode().ljust(48, b"\0")


def _snapshot(m):
    """(write_seq, counter, text) of one beat, read inside the module's
    seqlock: write_seq even and unchanged around the read.  A few tries at
    most, then returned as read for the caller to fail on."""
    for _ in range(100):
        before = m.load_u32(devlib.HEARTBEAT_WRITE_SEQ_OFFSET)
        counter = m.read_u64(8)
        text = m.read(16, 48)
        if before % 2 == 0 and m.load_u32(devlib.HEARTBEAT_WRITE_SEQ_OFFSET) == before:
            break
        time.sleep(0.001)
    return before, counter, text


def _settled(write_seq, counter):
    """The write_seq of a whole beat number *counter* (uapi header)."""
    return write_seq == (2 * counter) % 2**32


def _wait_for_a_new_beat(m, seq):
    """Waits until seq moves from *seq*.  A wake can be stale: that of the
    beat that bumped seq to *seq*, read between its bump and its wake."""
    for _ in range(3):
        assert m.wait(0, seq, timeout=5) is True
        if m.read_u32(0) != seq:
            return
    raise AssertionError(f"woken three times, seq still {seq}")


def test_heartbeat_wakes_reader(kmod):
    kmod.reload("heartbeat_ms=50")
    with pymmapdev.open_device() as m:
        info = pymmapdev._core.device_info(m.fileno())
        assert info["heartbeat_ms"] == 50
        seen = []
        for _ in range(3):
            _wait_for_a_new_beat(m, m.read_u32(0))
            seen.append(_snapshot(m))
        for write_seq, counter, text in seen:
            assert text == _text(counter)
            assert counter > 0 and _settled(write_seq, counter)
        counters = [c for _, c, _ in seen]
        assert counters == sorted(counters) and len(set(counters)) == 3
        assert devlib.sysfs("events") >= counters[-1]


def test_a_reader_slower_than_the_beat_detects_every_beat_written_meanwhile(kmod):
    """The seqlock: a reader that reads the counter, sleeps about a beat and
    then reads the text finds write_seq moved whenever a beat landed in
    between.  Each read it finds settled is one beat's (the text is its
    counter's); without write_seq (a reserved 0 before) those reads were
    torn.  Reads go on until both kinds were seen, within a bound."""
    kmod.reload("heartbeat_ms=1")
    settled = moved = 0
    deadline = time.monotonic() + 20
    with pymmapdev.open_device(readonly=True) as m:
        assert m.wait(0, 0, timeout=5) is True          # beating
        while (settled < 20 or moved < 3) and time.monotonic() < deadline:
            before = m.load_u32(devlib.HEARTBEAT_WRITE_SEQ_OFFSET)
            counter = m.read_u64(8)
            time.sleep((settled + moved) % 5 / 1000)    # 0 to 4 ms: some span a beat
            text = m.read(16, 48)
            if before % 2 or m.load_u32(devlib.HEARTBEAT_WRITE_SEQ_OFFSET) != before:
                moved += 1
                continue
            assert text == _text(counter), (before, counter, text)
            assert _settled(before, counter), (before, counter)
            settled += 1
    assert settled >= 20 and moved >= 3, (settled, moved)


def test_a_header_written_by_user_space_keeps_no_reader_waiting(kmod):
    """write_seq left odd by a process writing into the header (the device
    is shared memory): the readers give up after a bounded number of tries,
    and the module's next beat settles it again."""
    kmod.reload("heartbeat_ms=0")
    from pymmapdev import cli
    with pymmapdev.open_device() as m:
        m.store_u32(devlib.HEARTBEAT_WRITE_SEQ_OFFSET, 7)
        m.write(16, _text(5))
        assert cli._heartbeat_read(m) == (7, "value = 5")      # as read, in bounded time
    kmod.reload("heartbeat_ms=20")
    with pymmapdev.open_device() as m:
        _wait_for_a_new_beat(m, m.read_u32(0))
        m.store_u32(devlib.HEARTBEAT_WRITE_SEQ_OFFSET, 7)
        # Two beats: the first may have stored its even write_seq before
        # the 7 (and bumped seq after it); the second is written after.
        for _ in range(2):
            _wait_for_a_new_beat(m, m.read_u32(0))
        write_seq, counter, text = _snapshot(m)
        assert _settled(write_seq, counter) and text == _text(counter)


def test_heartbeat_only_on_device0(kmod):
    kmod.reload("heartbeat_ms=20 devices=2")
    with pymmapdev.open_device("/dev/mmapdev1") as m1:
        assert pymmapdev._core.device_info(m1.fileno())["heartbeat_ms"] == 0
        assert m1.wait(0, 0, timeout=0.3) is False       # nobody writes there
        assert m1.read(0, 64) == bytes(64)
    assert devlib.sysfs("events", 1) == 0
    assert devlib.sysfs("events", 0) > 0


def test_heartbeat_raw_wait_and_poll(kmod):
    kmod.reload("heartbeat_ms=50")
    fd = os.open(devlib.DEV, os.O_RDWR | os.O_CLOEXEC)
    try:
        devlib.get_info(fd)
        assert devlib.readable(fd, timeout=5)            # poll sees the heartbeat
        seq = int.from_bytes(os.pread(fd, 4, 0), "little")
        for _ in range(3):              # a stale wake: see _wait_for_a_new_beat
            devlib.wait(fd, 0, seq, 5_000_000_000)
            if int.from_bytes(os.pread(fd, 4, 0), "little") != seq:
                break
        assert int.from_bytes(os.pread(fd, 4, 0), "little") != seq
    finally:
        os.close(fd)


def test_unload_with_heartbeat_running(kmod):
    """The self-rearming work is cancelled on unload: no oops, and a reload
    starts counting again."""
    for _ in range(3):
        kmod.reload("heartbeat_ms=1")
        time.sleep(0.05)
        kmod.unload()
    kmod.load("heartbeat_ms=10")
    with pymmapdev.open_device() as m:
        assert m.wait(0, 0, timeout=5) is True
        assert m.read_u64(8) >= 1


def test_device_reader_example(kmod):
    kmod.reload("heartbeat_ms=50")
    example = os.path.join(devlib.REPO, "examples", "device_reader.py")
    lines, returncode, err = devlib.lines_then_ctrl_c(devlib.PYTHON + [example], 3)
    assert returncode == 0, err
    assert "Traceback" not in err
    values = [int(line.split("=")[1]) for line in lines]
    assert all(line.startswith("value = ") for line in lines), lines
    assert values == sorted(values) and len(set(values)) == 3
