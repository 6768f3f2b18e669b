"""python -m pymmapdev on a device: watch sleeps on the heartbeat, info shows
the sysfs counters, write goes into the buffer."""
import mmap
import os
import stat
import subprocess

import pytest

from . import devlib

pytestmark = pytest.mark.device


def cli(*args):
    return subprocess.run(devlib.PYTHON + ["-m", "pymmapdev", *args], capture_output=True,
                          text=True, timeout=120, env=devlib.child_env())


def test_watch_wakes_on_the_heartbeat(kmod):
    kmod.reload("heartbeat_ms=50")
    lines, returncode, err = devlib.lines_then_ctrl_c(
        devlib.PYTHON + ["-m", "pymmapdev", "watch", devlib.DEV], 4)
    assert returncode == 0 and "Traceback" not in err, err
    values = [int(line.split("=")[1]) for line in lines[1:]]   # the first may be empty
    assert all(line.startswith("value = ") for line in lines[1:]), lines
    assert values == sorted(values) and len(set(values)) == 3


def test_info_shows_sysfs_counters(kmod):
    kmod.reload("size=65536")
    fd = os.open(devlib.DEV, os.O_RDWR | os.O_CLOEXEC)
    try:
        m = mmap.mmap(fd, 4096, mmap.MAP_SHARED)      # one live mapping besides info's own
        proc = cli("info", devlib.DEV)
        m.close()
    finally:
        os.close(fd)
    assert proc.returncode == 0, proc.stderr
    fields = dict(line.split(":", 1) for line in proc.stdout.splitlines())
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    assert fields["kind"] == "device" and fields["size"] == "65536 bytes"
    assert fields["buffer"] == "65536 (bytes in the device, sysfs)"
    # ours and the one info itself holds
    assert fields["maps"] == "2 (live mappings, sysfs)"
    assert fields["events"].endswith("(wake-ups and heartbeats, sysfs)") and fields["abi"] == "1"


def test_write_then_read_back(kmod):
    kmod.reload()
    assert cli("write", devlib.DEV, "from the shell", "--offset", "4096").returncode == 0
    fd = os.open(devlib.DEV, os.O_RDONLY | os.O_CLOEXEC)
    try:
        assert os.pread(fd, 16, 4096) == b"from the shell\n\0"
    finally:
        os.close(fd)


def test_info_finds_the_counters_of_a_node_with_another_name(kmod, tmp_path):
    """info looked the counters up as /sys/class/mmapdev/<the node's name>:
    a node made with mknod (or named otherwise in a container) showed none.
    They are now found by the device number."""
    kmod.reload("size=65536")
    node = tmp_path / "shared-buffer"
    os.mknod(node, 0o600 | stat.S_IFCHR, os.stat(devlib.DEV).st_rdev)
    proc = cli("info", str(node))
    assert proc.returncode == 0, proc.stderr
    assert "buffer:    65536 (bytes in the device, sysfs)" in proc.stdout, proc.stdout


def test_the_module_is_known_by_its_major_without_sysfs(kmod, monkeypatch):
    """open_device sends MMAPDEV_IOC_GET_INFO only to devices it knows are
    ours; without sysfs (a container) the major number's name in
    /proc/devices vouches for the module's."""
    kmod.reload("size=65536")
    import pymmapdev
    from pymmapdev import _sysfs
    monkeypatch.setattr(_sysfs, "SYS", "/nonexistent-sys")
    assert _sysfs.char_class(os.stat(devlib.DEV)) is None
    with pymmapdev.open_device(devlib.DEV) as m:
        assert (m.waker, m.size) == ("mmapdev", 65536)


def test_write_past_the_buffer_is_a_message(kmod):
    """write --offset past the device buffer: a huge one was an
    OverflowError traceback from Mapping.write; any is now one line naming
    the device and its size."""
    kmod.reload("size=65536")
    for offset in (65536, 2**70):
        proc = cli("write", devlib.DEV, "x", "--offset", str(offset))
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr == f"pymmapdev: offset {offset} + 3 bytes is past the end of " \
            f"{devlib.DEV!r} (65536 bytes)\n", proc.stderr


def test_watch_of_a_quiet_heartbeat_ends_when_its_reader_does(kmod):
    """`watch /dev/mmapdev0 | head -1` on a heartbeat not beating slept in
    the WAIT ioctl until the next beat; it now looks every second."""
    kmod.reload("heartbeat_ms=3600000")        # the first beat in an hour
    watcher = subprocess.Popen(devlib.PYTHON + ["-m", "pymmapdev", "watch", devlib.DEV],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=devlib.child_env())
    watcher.stdout.readline()
    watcher.stdout.close()
    assert watcher.wait(timeout=60) == 141
    assert watcher.stderr.read() == b""
    watcher.stderr.close()
