"""open_device() on devices other than mmapdev, mappings at any offset, and
memory nobody can wake a sleeper on (waker 'poll').

The host has no mmapdev module and no PCI devices to spare: /dev/zero is the
mmap-able character device, a fake sysfs tree stands in for a PCI resource
file (the real ones, ivshmem's BAR 2, are in the VM suite), and a file
mapped with waker='poll' stands in for memory another machine writes.
"""
import asyncio
import errno
import os
import pickle
import subprocess
import sys
import threading
import time

import pytest

import pymmapdev
from pymmapdev import _core, _sysfs
from _sync_workers import GUARD, run_child  # noqa: F401
from conftest import child_env

PAGE = pymmapdev.PAGESIZE


# ---- any mmap-able character device --------------------------------------------

def test_dev_zero_with_size():
    with pymmapdev.open_device("/dev/zero", size=2 * PAGE) as m:
        assert (m.kind, m.waker, m.size, m.offset, m.path) == \
            ("device", "poll", 2 * PAGE, 0, "/dev/zero")
        m[0:5] = b"hello"
        m.write_u64(PAGE, 7)
        assert m[0:5] == b"hello" and m.read_u64(PAGE) == 7
        m.flush()                                  # no backing store: a no-op


def test_dev_zero_at_any_offset():
    # (a shared /dev/zero mapping is a new shmem file as long as the mapping:
    # an offset past its first page would be past that file's end)
    with pymmapdev.open_device("/dev/zero", size=10, offset=5) as m:
        assert (m.offset, m.size, len(m)) == (5, 10, 10)
        m[9] = 1
        with pytest.raises(IndexError):
            m[10]
        with pytest.raises(ValueError, match="outside the mapping of 10 bytes"):
            m.read(8, 4)


def test_device_errors(tmp_path):
    with pytest.raises(ValueError, match=r"'/dev/zero': pass size="):
        pymmapdev.open_device("/dev/zero")
    with pytest.raises(OSError, match="refused") as exc:
        pymmapdev.open_device("/dev/null", size=PAGE)           # null has no mmap
    assert exc.value.errno == errno.ENODEV and exc.value.filename == "/dev/null"
    regular = tmp_path / "plain"
    regular.write_bytes(bytes(PAGE))
    with pytest.raises(ValueError, match=f"'{regular}' is a regular file, not a device"):
        pymmapdev.open_device(regular, size=PAGE)
    with pytest.raises(IsADirectoryError):
        pymmapdev.open_device(tmp_path, size=PAGE)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=f"'{fifo}' is a FIFO"):
        pymmapdev.open_device(fifo, size=PAGE)
    with pytest.raises(FileNotFoundError) as exc:
        pymmapdev.open_device(tmp_path / "missing", size=PAGE)
    assert exc.value.filename == str(tmp_path / "missing")
    # a pip user has no kmod/mmapdev.ko to insmod: the hint names the CLI
    with pytest.raises(FileNotFoundError, match=r"is the mmapdev module loaded\? sudo "
                       r"modprobe mmapdev, once python -m pymmapdev kmod build and kmod "
                       r"install made it"):
        pymmapdev.open_device(tmp_path / "mmapdev7")
    with pytest.raises(ValueError, match="offset -1 is negative"):
        pymmapdev.open_device("/dev/zero", size=PAGE, offset=-1)
    with pytest.raises(ValueError, match="positive"):
        pymmapdev.open_device("/dev/zero", size=0)
    # past off_t: a ValueError naming the device, never an OverflowError
    for size, offset in [(PAGE, 2**63), (2**63, 0), (2**64, 0), (PAGE, 2**63 - 1)]:
        with pytest.raises(ValueError, match=rf"offset {offset} \+ size {size} is past the "
                                             rf"largest file offset .*\('/dev/zero'\)"):
            pymmapdev.open_device("/dev/zero", size=size, offset=offset)


def test_pickles_with_its_offset():
    with pymmapdev.open_device("/dev/zero", size=100, offset=PAGE + 8) as m:
        with pickle.loads(pickle.dumps(m)) as copy:
            assert (copy.path, copy.size, copy.offset, copy.kind, copy.waker) == \
                ("/dev/zero", 100, PAGE + 8, "device", "poll")


# ---- no mmapdev ioctl to a device that is not ours -----------------------------

@pytest.fixture
def ioctls(monkeypatch):
    """The descriptors MMAPDEV_IOC_GET_INFO was sent to (none reach the
    driver: the ioctl number may mean something else to it)."""
    sent = []

    def spy(fd):
        sent.append(os.fstat(fd).st_rdev)
        raise OSError(errno.ENOTTY, "spy: not sent")
    monkeypatch.setattr(_core, "device_info", spy)
    return sent


@pytest.fixture
def no_sysfs(tmp_path, monkeypatch):
    """sysfs not mounted (a container): it knows no device's class."""
    monkeypatch.setattr(_sysfs, "SYS", str(tmp_path / "no-sys"))


def test_no_ioctl_to_a_tty_sysfs_does_not_know(ioctls):
    """A pty has no sysfs entry: open_device sent it the GET_INFO ioctl."""
    master, slave = os.openpty()
    try:
        path = os.ttyname(slave)
        assert _sysfs.char_class(os.stat(path)) is None
        with pytest.raises(ValueError, match=f"'{path}': pass size="):
            pymmapdev.open_device(path)
        with pytest.raises(OSError, match="refused"):   # a tty has no mmap
            pymmapdev.open_device(path, size=PAGE)
        assert ioctls == []
    finally:
        os.close(master)
        os.close(slave)


def test_a_tty_never_becomes_the_controlling_terminal(ioctls):
    """open_device/open_file opened without O_NOCTTY: a session leader with
    no controlling terminal that tried to map a tty got it as one."""
    master, slave = os.openpty()
    code = """if True:
        import os, sys, pymmapdev
        for open_ in (pymmapdev.open_device, pymmapdev.open_file):
            try:
                open_(sys.argv[1], 4096)
            except (OSError, ValueError) as exc:
                print(type(exc).__name__)
        try:
            os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
            print("tty")
        except OSError:
            print("no tty")
    """
    try:
        proc = subprocess.run([sys.executable, "-c", code, os.ttyname(slave)],
                              capture_output=True, text=True, timeout=60, env=child_env(),
                              start_new_session=True)
    finally:
        os.close(master)
        os.close(slave)
    assert proc.stdout.splitlines() == ["OSError", "ValueError", "no tty"], proc.stderr


def test_no_ioctl_without_sysfs(no_sysfs, ioctls, capsys):
    """Without sysfs, every device got the ioctl; /proc/devices names the
    driver of each major number (1: mem)."""
    with pymmapdev.open_device("/dev/zero", size=PAGE) as m:
        assert (m.waker, m.size) == ("poll", PAGE)
    with pytest.raises(ValueError, match="'/dev/zero': pass size="):
        pymmapdev.open_device("/dev/zero")
    from pymmapdev import cli
    assert cli.main(["info", "/dev/zero"]) == 0
    assert "character device 1:5 of class unknown" in capsys.readouterr().out
    assert ioctls == []


def test_mmapdev_is_known_by_its_major_without_sysfs(no_sysfs, ioctls, tmp_path, monkeypatch):
    """The other side: a major /proc/devices names mmapdev is ours."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "devices").write_text("Character devices:\n  1 mmapdev\n  4 tty\n\n"
                                  "Block devices:\n  1 ramdisk\n")
    monkeypatch.setattr(_sysfs, "PROC", str(proc))
    with pytest.raises(OSError, match="did not answer MMAPDEV_IOC_GET_INFO") as exc:
        pymmapdev.open_device("/dev/zero")
    assert exc.value.filename == "/dev/zero"
    assert ioctls == [os.stat("/dev/zero").st_rdev]


# ---- a PCI BAR through its resource file (a fake sysfs) ------------------------

@pytest.fixture
def fake_bar(tmp_path, monkeypatch):
    """sysfs' view of a device 0000:00:04.0 with a 64 KiB memory BAR 2."""
    sys_root = tmp_path / "sys"
    device = sys_root / "devices" / "pci0000:00" / "0000:00:04.0"
    device.mkdir(parents=True)
    lines = ["0x0000000000000000 0x0000000000000000 0x0000000000000000"] * 13
    lines[2] = "0x00000000febf0000 0x00000000febfffff 0x0000000000040200"
    (device / "resource").write_text("\n".join(lines) + "\n")
    bar = device / "resource2"
    bar.write_bytes(bytes(range(256)) * 256)
    monkeypatch.setattr(_sysfs, "SYS", str(sys_root))
    return bar


def test_pci_resource_file_sized_by_the_bar(fake_bar):
    info = _sysfs.pci_bar_file(str(fake_bar))
    assert (info.number, info.start, info.size, info.kind, info.address) == \
        (2, 0xFEBF0000, 0x10000, "memory", "0000:00:04.0")
    with pymmapdev.open_device(fake_bar) as m:
        assert (m.size, m.offset, m.kind, m.waker) == (0x10000, 0, "device", "poll")
        assert m[0:4] == bytes([0, 1, 2, 3])
    with pymmapdev.open_device(fake_bar, offset=0x1010, size=0x20) as m:
        assert m[0:4] == bytes([0x10, 0x11, 0x12, 0x13]) and m.size == 0x20
    with pymmapdev.open_device(fake_bar, offset=0xFFF0) as m:
        assert m.size == 0x10


def test_pci_resource_file_bounds(fake_bar):
    with pytest.raises(ValueError, match=r"offset 65536 is outside PCI BAR 2 of "
                                         r"0000:00:04.0 of 65536 bytes \('.*resource2'\)"):
        pymmapdev.open_device(fake_bar, offset=0x10000)
    with pytest.raises(ValueError, match=r"offset 4096 \+ size 65536 is outside PCI BAR 2"):
        pymmapdev.open_device(fake_bar, offset=0x1000, size=0x10000)


# ---- the Mapping in the user's coordinates -------------------------------------

@pytest.fixture
def file_bytes(shm_path):
    data = bytes((i * 7) & 0xFF for i in range(3 * PAGE))
    with open(shm_path, "wb") as f:
        f.write(data)
    return shm_path, data


def mapping_at(path, size, offset, **kw):
    fd = os.open(path, os.O_RDWR)
    try:
        return _core.Mapping(fd, size, offset, kind="file", path=path, **kw)
    finally:
        os.close(fd)


def test_unaligned_offset_covers_exactly_the_range(file_bytes):
    path, data = file_bytes
    with mapping_at(path, 100, PAGE + 3) as m:
        assert m.offset == PAGE + 3 and len(m) == 100
        assert m[:] == data[PAGE + 3:PAGE + 103] and bytes(memoryview(m)) == m[:]
        assert m[-1] == data[PAGE + 102]
        m.write(0, b"XY")
        with open(path, "rb") as f:
            f.seek(PAGE + 3)
            assert f.read(2) == b"XY"
        m.flush(0, 2)
        m.madvise(pymmapdev.MADV_WILLNEED)


def test_alignment_is_the_files(file_bytes):
    """Word alignment counts in the file or device: a register at device
    offset 0x1004 is aligned whatever the mapping's first byte."""
    path, data = file_bytes
    with mapping_at(path, 64, PAGE + 1) as m:
        assert m.read_u32(3) == int.from_bytes(data[PAGE + 4:PAGE + 8], "little")
        assert m.load_u64(7) == int.from_bytes(data[PAGE + 8:PAGE + 16], "little")
        with pytest.raises(ValueError, match=r"offset 0 is not aligned to 4 bytes in the "
                                             r"file or device .*starts at its offset 4097"):
            m.read_u32(0)
        assert m.read_words(3, 2).tolist() == [
            int.from_bytes(data[PAGE + 4 + 4 * i:PAGE + 8 + 4 * i], "little") for i in range(2)]


def test_unaligned_mapping_past_a_truncated_end(file_bytes):
    path, _ = file_bytes
    with mapping_at(path, 2 * PAGE, PAGE - 8) as m:
        os.truncate(path, PAGE)
        assert m.read(0, 8) is not None                       # still the file's page
        with pytest.raises(pymmapdev.MappingFault, match="offset 8 "):
            m.read(8, 1)
        np = pytest.importorskip("numpy")
        with pytest.raises(pymmapdev.MappingFault):
            m.ndarray(np.uint8)


# ---- memory nobody can wake a sleeper on ---------------------------------------

def test_poll_waker_wait_sees_another_processes_store(shm_path, run_child):
    """Another process stores without any wake-up (as another machine would):
    wait() and wait_async() see it by looking again."""
    with open(shm_path, "wb") as f:
        f.write(bytes(PAGE))
    with mapping_at(shm_path, PAGE, 0, waker="poll") as m:
        assert m.waker == "poll" and m.wake(0) == 0           # nobody to wake
        t0 = time.monotonic()
        assert m.wait(0, 0, timeout=0.05) is False
        assert time.monotonic() - t0 >= 0.05
        child = run_child("""
            import sys, time, pymmapdev
            m = pymmapdev.open_file(sys.argv[1])
            while m.load_u32(8) != 1:
                time.sleep(0.001)
            time.sleep(0.1)
            m.store_u32(0, 5)               # no wake
            time.sleep(0.1)
            m.store_u32(4, 6)
        """, shm_path)
        m.store_u32(8, 1)
        assert m.wait(0, 0, timeout=GUARD) is True and m.load_u32(0) == 5

        async def later():
            watch = _core.watch_word(m, 4, 0)
            assert watch.backend == "poll"
            watch.close()
            return await m.wait_async(4, 0, GUARD)

        assert asyncio.run(later()) is True and m.load_u32(4) == 6
        assert child.wait(GUARD) == 0, child.stderr.read()


def test_poll_waker_lock_and_slot(shm_path):
    with open(shm_path, "wb") as f:
        f.write(bytes(PAGE))
    with mapping_at(shm_path, PAGE, 0, waker="poll") as m:
        lock = pymmapdev.Lock(m, 0)
        slot = pymmapdev.Slot(m, 64, 16)
        got = []

        def other():
            with lock:
                got.append("locked")
            got.append(slot.wait_newer(0, GUARD))

        with lock:
            t = threading.Thread(target=other)
            t.start()
            time.sleep(0.05)
            assert got == []
        slot.publish(b"x")
        t.join(GUARD)
        assert got == ["locked", True]


# ---- python -m pymmapdev info --------------------------------------------------

def test_info_on_a_pci_bar_file_reads_nothing(fake_bar, capsys):
    from pymmapdev import cli
    (fake_bar.parent / "vendor").write_text("0x1af4\n")
    (fake_bar.parent / "device").write_text("0x1110\n")
    assert cli.main(["info", str(fake_bar)]) == 0
    out = capsys.readouterr().out
    assert "kind:      PCI BAR 2 of 0000:00:04.0 (vendor 0x1af4, device 0x1110, driver none)" \
        in out
    assert "size:      65536 bytes (memory)" in out and "address:   0xfebf0000" in out


def test_info_on_a_device_without_a_size(capsys):
    from pymmapdev import cli
    assert cli.main(["info", "/dev/zero"]) == 0
    out = capsys.readouterr().out
    assert "character device 1:5 of class mem" in out and "size=" in out


def test_resource_file_whose_listing_lost_the_bar(fake_bar, capsys):
    """The device's resource listing unreadable or not showing the BAR (a
    device going away): the file is still sized as its BAR and mapped as a
    device, and info reads none of it, never taking it for a regular file."""
    (fake_bar.parent / "resource").unlink()
    with pymmapdev.open_device(fake_bar, offset=0x10) as m:
        assert (m.size, m.kind, m.waker) == (0x10000 - 0x10, "device", "poll")
    with pytest.raises(ValueError, match=r"offset 65536 is outside PCI BAR 2 of 0000:00:04.0"):
        pymmapdev.open_device(fake_bar, offset=0x10000)
    from pymmapdev import cli
    assert cli.main(["info", str(fake_bar)]) == 0
    out = capsys.readouterr().out
    assert "kind:      PCI BAR 2 of 0000:00:04.0 (not in " in out and "text:" not in out
    assert "size:      65536 bytes" in out


# ---- a resource file is a BAR, never a file to size, grow or reserve ----------

@pytest.mark.parametrize("call", [
    lambda p: pymmapdev.open_file(p),
    lambda p: pymmapdev.open_file(p, readonly=True),
    lambda p: pymmapdev.open_file(p, 0x20000),          # was: the 'BAR' grown to 128 KiB
    lambda p: pymmapdev.open_file(p, 0x100),
])
def test_open_file_of_a_pci_resource_file_names_open_device(fake_bar, call):
    """open_file() mapped a resource file as an ordinary file: sized by
    st_size, reserved with fallocate, extended with ftruncate to a larger
    size=, kind 'file' and a futex waker no device memory has."""
    with pytest.raises(ValueError, match=r"'.*resource2' is a PCI BAR's sysfs resource "
                                         r"file: map it with open_device\(\)"):
        call(str(fake_bar))
    assert fake_bar.stat().st_size == 0x10000


def test_cli_maps_a_pci_resource_file_as_the_bar(fake_bar, capsys):
    """The CLI's write and watch took a resource file for a regular file:
    a write past the BAR's end extended the file as open_file() does."""
    from pymmapdev import cli
    with cli._open(str(fake_bar), readonly=True) as m:
        assert (m.kind, m.waker, m.size) == ("device", "poll", 0x10000)
    assert cli.main(["write", str(fake_bar), "hi", "--offset", "16"]) == 0
    assert fake_bar.read_bytes()[16:20] == b"hi\n\0"
    assert cli.main(["write", str(fake_bar), "hi", "--offset", str(0x10000 - 2)]) == 1
    assert "is past the end of" in capsys.readouterr().err
    assert fake_bar.stat().st_size == 0x10000
