"""Synchronisation on device mappings: atomics, wait/wake through the
module's ioctls, Slot and Lock across processes, Ctrl-C.

Shared futexes fail with EFAULT on the mmapdev buffer's pages, so every
sleep goes through the module's WAIT/WAKE ioctls; the Lock keeps no libc
state in the buffer (plain words: the holder's identity), so it works here
exactly as on files, dead holders included.
"""
import os
import signal
import time

import pytest

import pymmapdev

from . import devlib

pytestmark = pytest.mark.device

PAGE = devlib.PAGE
BASE = 16 * PAGE                 # a region no other device test uses
REGION = 4 * PAGE
GUARD = 60


@pytest.fixture
def m():
    with pymmapdev.open_device() as mapping:
        mapping[BASE:BASE + REGION] = bytes(REGION)
        yield mapping


HAMMER = """
import sys, pymmapdev
with pymmapdev.open_device() as m:
    for _ in range(int(sys.argv[2])):
        m.fetch_add_u64(int(sys.argv[1]), 1)
        m.fetch_add_u32(int(sys.argv[1]) + 8, 0xFFFFFFFF)      # -1, wrapping
"""


def test_atomics_across_processes(m):
    n = 5000
    procs = [devlib.python(HAMMER, BASE, n) for _ in range(2)]
    for _ in range(n):
        m.fetch_add_u64(BASE, 1)
        m.fetch_add_u32(BASE + 8, -1)
    for p in procs:
        out, err = p.communicate(timeout=GUARD)
        assert p.returncode == 0, err
    assert m.load_u64(BASE) == 3 * n
    assert m.load_u32(BASE + 8) == (-3 * n) % (1 << 32)
    assert m.compare_exchange_u64(BASE, 3 * n, 7) == 3 * n
    assert m.exchange_u32(BASE + 8, 1) == (-3 * n) % (1 << 32)
    assert (m.load_u64(BASE), m.load_u32(BASE + 8)) == (7, 1)


def test_atomics_errors(m):
    with pytest.raises(ValueError, match="aligned"):
        m.fetch_add_u64(BASE + 4, 1)
    with pytest.raises(ValueError, match=str(m.size)):
        m.load_u32(m.size)


LOCKED_INCREMENTS = """
import sys, pymmapdev
base, n = int(sys.argv[1]), int(sys.argv[2])
with pymmapdev.open_device() as m:
    lock = pymmapdev.Lock(m, base)
    for _ in range(n):
        with lock:
            m.write_u64(base + 64, m.read_u64(base + 64) + 1)
"""


def test_lock_excludes_across_processes(m):
    n = 300
    procs = [devlib.python(LOCKED_INCREMENTS, BASE, n) for _ in range(2)]
    lock = pymmapdev.Lock(m, BASE)
    for _ in range(n):
        with lock:
            m.write_u64(BASE + 64, m.read_u64(BASE + 64) + 1)
    for p in procs:
        out, err = p.communicate(timeout=GUARD)
        assert p.returncode == 0, err
    assert m.read_u64(BASE + 64) == 3 * n
    assert not lock.locked()


HOLD_FOREVER = """
import sys, time, pymmapdev
with pymmapdev.open_device() as m:
    lock = pymmapdev.Lock(m, int(sys.argv[1]))
    lock.acquire()
    print("held", flush=True)
    time.sleep(600)
"""


def test_lock_holder_killed_is_taken_over(m):
    holder = devlib.python(HOLD_FOREVER, BASE)
    assert holder.stdout.readline().strip() == "held"
    lock = pymmapdev.Lock(m, BASE)
    assert lock.acquire(timeout=0.05) is False            # really held
    holder.kill()
    holder.communicate(timeout=GUARD)
    with pytest.warns(pymmapdev.OwnerDiedWarning):
        assert lock.acquire(timeout=GUARD) is True
    assert lock.owner_died
    lock.release()


def test_wait_timeout_and_spin(m):
    assert m.wait(BASE, 0, 0.05, spin=0) is False
    assert m.wait(BASE, 0, 0) is False
    m.store_u32(BASE, 1)
    assert m.wait(BASE, 0, 1) is True


WAIT_FOREVER = """
import sys, pymmapdev
with pymmapdev.open_device() as m:
    m.store_u32(int(sys.argv[1]) + 4, 1)
    m.wait(int(sys.argv[1]), 0)
"""


def test_ctrl_c_interrupts_device_wait(m):
    proc = devlib.python(WAIT_FOREVER, BASE)
    try:
        devlib.wait_until(lambda: devlib.blocked_in_wait(proc.pid), what="waiter asleep")
        proc.send_signal(signal.SIGINT)
        # The wait has no timeout: only the SIGINT can end it before GUARD.
        out, err = proc.communicate(timeout=GUARD)
        assert "KeyboardInterrupt" in err
    finally:
        proc.kill()
        proc.wait()


# Self-contained: device children run "python -S" (no site-packages, so no
# pytest and no _sync_workers).  Values end with the CRC32 of the rest,
# the convention _sync_workers.payload_ok checks.
SLOT_WRITER = """
import sys, zlib, pymmapdev
off, capacity = int(sys.argv[1]), int(sys.argv[2])
pre = []
for i in range(64):
    body = bytes((i * 7 + j) & 255 for j in range((i * 37) % (capacity - 4)))
    pre.append(body + zlib.crc32(body).to_bytes(4, "little"))
with pymmapdev.open_device() as m:
    slot = pymmapdev.Slot(m, off, capacity)
    i = 0
    while not m.load_u32(off - 8):
        slot.publish(pre[i % 64])
        i += 1
"""


def test_slot_across_processes_is_torn_free_and_wakes(m):
    import sys
    tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, tests_dir)
    try:
        from _sync_workers import payload_ok
    finally:
        sys.path.remove(tests_dir)
    capacity, off = 2000, BASE + 64
    slot = pymmapdev.Slot(m, off, capacity)
    assert slot.read() == (0, b"")
    proc = devlib.python(SLOT_WRITER, off, capacity)
    try:
        # the reader sleeps in the module's WAIT until the first publish
        end = time.monotonic() + GUARD
        while not slot.wait_newer(0, 1.0):
            assert proc.poll() is None, f"writer died: {proc.communicate()[1]}"
            assert time.monotonic() < end, "no publish within the guard"
        seen, end = set(), time.monotonic() + 5
        while len(seen) < 500 and time.monotonic() < end:
            version, data = slot.read()
            assert payload_ok(data), f"torn read at version {version}"
            seen.add(version)
        assert len(seen) >= 2
    finally:
        m.store_u32(off - 8, 1)
        out, err = proc.communicate(timeout=GUARD)
    assert proc.returncode == 0, err
    assert m.load_u32(off + 16) == 0              # no reader left announced


def test_slot_wait_newer_woken_by_other_process(m):
    off = BASE + 2 * PAGE
    slot = pymmapdev.Slot(m, off, 16)
    reader = devlib.python("""
import sys, pymmapdev
with pymmapdev.open_device() as m:
    slot = pymmapdev.Slot(m, int(sys.argv[1]), 16)
    print(slot.wait_newer(0, 60), slot.read())
""", off)
    try:
        devlib.wait_until(lambda: devlib.blocked_in_wait(reader.pid), what="reader asleep")
        slot.publish(b"from-parent")
        out, err = reader.communicate(timeout=GUARD)
        assert reader.returncode == 0, err
        assert out.strip() == "True (1, b'from-parent')"
    finally:
        reader.kill()
        reader.wait()


CHANNEL_CONSUMER = """
import sys, zlib, pymmapdev
from pymmapdev import Channel
pymmapdev.set_spin(0)            # every empty ring is a sleep in the module's WAIT
with pymmapdev.open_device() as m:
    ch = Channel(m, int(sys.argv[1]), 8192)
    total = 0
    while True:
        try:
            msg = ch.recv(timeout=60)
        except EOFError:
            break
        assert msg is not None, "nothing for 60 s"
        assert zlib.crc32(msg[:-4]) == int.from_bytes(msg[-4:], "little"), "torn"
        total += 1
    print(total)
"""


def test_channel_between_processes_on_the_device(m):
    """Producer here, consumer in another process, both sleeping through the
    module's WAIT/WAKE ioctls (shared futexes fail on device pages): the ring
    fills (the producer sleeps) and empties (the consumer sleeps)."""
    import zlib
    from pymmapdev import Channel
    spin = pymmapdev.get_spin()
    pymmapdev.set_spin(0)
    try:
        consumer = devlib.python(CHANNEL_CONSUMER, BASE)
        ch = Channel(m, BASE, 8192)
        n = 400
        for i in range(n):
            body = (b"%06d" % i) * (1 + i % 300)  # up to 1.8 KiB: the ring fills
            assert ch.send(body + zlib.crc32(body).to_bytes(4, "little"), timeout=GUARD)
        ch.close_send()
    finally:
        pymmapdev.set_spin(spin)
    out, err = consumer.communicate(timeout=GUARD)
    assert consumer.returncode == 0, err
    assert int(out) == n
    del ch
