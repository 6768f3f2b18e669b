"""VM <-> host shared memory through QEMU's ivshmem-plain device: the guest
maps BAR 2 through its sysfs resource2 file and through /dev/mem at the
BAR's physical address; the host peer (tests/vm/ivshmem_peer.py, started by
tests/vm/run.sh) maps the file behind it with open_file.  Both directions
of writes are seen, and a Slot published on either side is read torn-free
on the other.  A VM started without the device fails here, never skips.
"""
import os
import time
import zlib

import pytest

import pymmapdev
from pymmapdev import _sysfs

from . import devlib
from . import ivshmem_proto as p

pytestmark = pytest.mark.device

GUARD = 120
IVSHMEM = ("0x1af4", "0x1110")      # Red Hat, Inc. Inter-VM shared memory


def ivshmem_device():
    base = "/sys/bus/pci/devices"
    for name in sorted(os.listdir(base)):
        ids = tuple(_sysfs.read_text(f"{base}/{name}/{f}") for f in ("vendor", "device"))
        if ids == IVSHMEM:
            return f"{base}/{name}"
    pytest.fail("no ivshmem PCI device: boot the VM with tests/vm/run.sh "
                "(-device ivshmem-plain)", pytrace=False)


@pytest.fixture(scope="module")
def bar():
    device = ivshmem_device()
    bars = {b.number: b for b in _sysfs.pci_bars(device)}
    assert 2 in bars and bars[2].size == p.SIZE, bars
    return bars[2]


def open_bar(bar, via):
    if via == "resource2":
        return pymmapdev.open_device(f"{bar.device}/resource2")
    return pymmapdev.open_device("/dev/mem", size=p.SIZE, offset=bar.start)


@pytest.fixture(params=["resource2", "/dev/mem"])
def m(request, bar):
    with open_bar(bar, request.param) as mapping:
        deadline = time.monotonic() + GUARD
        while mapping.load_u32(p.HOST_STATE) != p.HOST_MAGIC:
            assert time.monotonic() < deadline, "the host peer never came up"
            time.sleep(0.01)
        yield mapping


def ask(m, op, arg, while_waiting=None):
    """Send a request and wait for its reply; calls while_waiting() until then."""
    seq = (m.load_u32(p.REQUEST) + 1) & 0xFFFFFFFF
    m.store_u32(p.OP, op)
    m.store_u32(p.ARG, arg)
    m.store_u32(p.STOP, 0)
    m.store_u32(p.REQUEST, seq)
    deadline = time.monotonic() + GUARD
    while m.load_u32(p.REPLY) != seq:
        assert time.monotonic() < deadline, f"the host peer did not answer op {op}"
        if while_waiting is None or while_waiting() is False:
            m.wait(p.REPLY, m.load_u32(p.REPLY), timeout=1)   # polls: nobody can wake us
    return m.load_u32(p.RESULT), m.load_u32(p.RESULT2)


def test_the_bar_two_ways(bar):
    assert _sysfs.pci_bar_file(f"{bar.device}/resource2") == bar
    with open_bar(bar, "resource2") as res, open_bar(bar, "/dev/mem") as mem:
        for m in (res, mem):
            assert (m.size, m.kind, m.waker) == (p.SIZE, "device", "poll")
        res.write(p.DATA_OUT + 100, b"through resource2")
        assert mem.read(p.DATA_OUT + 100, 17) == b"through resource2"
        mem.write_words(p.DATA_OUT + 200, [1, 2, 3], width=8)
        assert res.read_words(p.DATA_OUT + 200, 3, width=8).tolist() == [1, 2, 3]
        # a window at any offset: /dev/mem maps the enclosing page
        with pymmapdev.open_device("/dev/mem", size=0x100, offset=bar.start + 0x1010) as win:
            assert win.offset == bar.start + 0x1010
            assert win.read(0, 0x100) == res.read(0x1010, 0x100)
            win.write_u32(4, 0xFEEDF00D)
            assert res.read_u32(0x1014) == 0xFEEDF00D
    with pytest.raises(ValueError, match=r"outside PCI BAR 2 of .* of 1048576 bytes"):
        pymmapdev.open_device(f"{bar.device}/resource2", offset=p.SIZE)


def test_both_directions(m):
    data = os.urandom(p.DATA_MAX)
    m.write(p.DATA_IN, data)
    crc, _ = ask(m, p.ECHO, len(data))
    assert crc == zlib.crc32(data)                      # the host saw our bytes
    assert m.read(p.DATA_OUT, len(data)) == data[::-1]  # we see the host's


def test_slot_host_to_guest(m):
    slot = pymmapdev.Slot(m, p.SLOT_HOST, p.SLOT_CAPACITY)
    start = slot.version        # the BAR keeps an earlier run's publications
    reads = []

    def read_one():
        got = slot.read(timeout=GUARD)
        assert got is not None
        reads.append(got)
        if got[0] > start and m.load_u32(p.STOP) == 0:
            if sum(version > start for version, _ in reads) >= p.PUBLISH_ENOUGH:
                m.store_u32(p.STOP, 1)  # by count: the emulated guest may stall

    published, _ = ask(m, p.PUBLISH, GUARD * 1000, while_waiting=read_one)
    assert published > 0
    versions = [v for v, _ in reads if v > start]
    assert len(versions) >= p.PUBLISH_ENOUGH, "the host stopped publishing before the guest said so"
    assert versions == sorted(versions)
    for version, data in reads:
        if version > 0:
            assert p.payload_ok(data) and data == p.payload(version), f"torn at {version}"


def test_slot_guest_to_host(m):
    slot = pymmapdev.Slot(m, p.SLOT_GUEST, p.SLOT_CAPACITY)
    first = slot.version + 1
    values = [p.payload(v) for v in range(first, first + 300)]   # computed before
    m.store_u32(p.SEEN, 0)

    def publish_one():
        n = slot.version + 1 - first
        if n < len(values):
            slot.publish(values[n])
            return True
        # 300 published: go on (slower, the host may share our CPU) until
        # the host has read enough of them; ask() bounds it with GUARD
        if m.load_u32(p.SEEN) >= p.READ_ENOUGH:
            m.store_u32(p.STOP, 1)
            return False
        slot.publish(p.payload(first + n))
        time.sleep(0.001)
        return True

    torn, good = ask(m, p.READ, 0, while_waiting=publish_one)
    assert torn == 0 and good >= p.READ_ENOUGH


def test_cli_info(bar, capsys):
    from pymmapdev import cli
    assert cli.main(["info", f"{bar.device}/resource2"]) == 0
    out = capsys.readouterr().out
    assert f"PCI BAR 2 of {bar.address} (vendor 0x1af4, device 0x1110" in out
    assert f"size:      {p.SIZE} bytes (memory, prefetchable)" in out
    assert f"address:   {bar.start:#x}" in out


def test_examples_on_the_bar(bar):
    """examples/pci_bar.py reads the BAR's registers two ways; the guest side
    of examples/vm_share.py finds the device and follows a Slot on it."""
    resource = f"{bar.device}/resource2"
    with open_bar(bar, "resource2") as m:
        m.write_words(p.DATA_OUT, [0x11111111, 0x22222222])
        out = devlib.run_python(f"""
import runpy, sys
sys.argv = ["pci_bar.py", {resource!r}, "{p.DATA_OUT:#x}", "2"]
runpy.run_path({os.path.join(devlib.REPO, "examples", "pci_bar.py")!r}, run_name="__main__")
""")
        assert f"resource2 of {bar.address}: {p.SIZE} bytes at {bar.start:#x}" in out
        assert f"{p.DATA_OUT:#06x}: 0x11111111" in out and "through /dev/mem" in out

        follower = devlib.python(f"""
import runpy, sys
sys.argv = ["vm_share.py", "follow", "ivshmem", "2"]
runpy.run_path({os.path.join(devlib.REPO, "examples", "vm_share.py")!r}, run_name="__main__")
""")
        slot = pymmapdev.Slot(m, 65536, 256)
        deadline = time.monotonic() + GUARD
        while follower.poll() is None and time.monotonic() < deadline:
            slot.publish(f"message {slot.version + 1} from the test".encode())
            time.sleep(0.3)
        out, err = follower.communicate(timeout=GUARD)
    assert follower.returncode == 0, err
    assert len(out.splitlines()) == 2 and "from the test" in out
