"""The ABI: the ctypes mirror in devlib matches kmod/uapi/mmapdev.h, and
GET_INFO reports what the module was loaded with."""
import ctypes
import os
import re

import pytest

import pymmapdev
from pymmapdev import _core

from . import devlib

pytestmark = pytest.mark.device


def test_mirror_matches_header():
    text = devlib.header_text()
    assert int(devlib.define("MMAPDEV_IOC_MAGIC", text), 0) == devlib.MAGIC
    assert int(devlib.define("MMAPDEV_ABI_VERSION", text), 0) == devlib.ABI_VERSION
    assert devlib.define("MMAPDEV_WAIT_ABSTIME", text) == "(1U"  # (1U << 0)
    assert int(devlib.define("MMAPDEV_HEARTBEAT_WAIT_OFFSET", text)) == devlib.HEARTBEAT_WAIT_OFFSET
    assert int(devlib.define("MMAPDEV_HEARTBEAT_WRITE_SEQ_OFFSET", text)) == \
        devlib.HEARTBEAT_WRITE_SEQ_OFFSET
    assert int(devlib.define("MMAPDEV_HEARTBEAT_TEXT_OFFSET", text)) == devlib.HEARTBEAT_TEXT_OFFSET
    for name, direction, nr, struct in (("GET_INFO", "_IOR", 0, "mmapdev_info"),
                                        ("WAIT", "_IOW", 1, "mmapdev_wait"),
                                        ("WAKE", "_IOW", 2, "mmapdev_wake")):
        m = re.search(rf"#define\s+MMAPDEV_IOC_{name}\s+(_IO\w+)\(MMAPDEV_IOC_MAGIC,\s*(\w+),"
                      rf"\s*struct (\w+)\)", text)
        assert m and m.group(1) == direction and int(m.group(2), 0) == nr
        assert m.group(3) == struct
    sizes = {devlib.Info: 32, devlib.Wait: 24, devlib.Wake: 16, devlib.Heartbeat: 64}
    for cls, size in sizes.items():
        assert ctypes.sizeof(cls) == size
    assert devlib.Heartbeat.write_seq.offset == devlib.HEARTBEAT_WRITE_SEQ_OFFSET
    assert devlib.Heartbeat.text.offset == devlib.HEARTBEAT_TEXT_OFFSET


def test_get_info_defaults(fd):
    info = devlib.get_info(fd)
    assert info.size == devlib.DEFAULT_SIZE
    assert info.page_size == devlib.PAGE
    assert info.abi_version == devlib.ABI_VERSION
    assert info.index == 0
    assert info.heartbeat_ms == 0


def test_device_info_matches_ioctl(fd):
    info = _core.device_info(fd)
    raw = devlib.get_info(fd)
    assert info == {"size": raw.size, "events": raw.events, "page_size": raw.page_size,
                    "abi_version": raw.abi_version, "index": raw.index,
                    "heartbeat_ms": raw.heartbeat_ms}


def test_device_info_errno_preserved(tmp_path):
    path = tmp_path / "plain"
    path.write_bytes(b"x")
    with open(path, "rb") as f:
        with pytest.raises(OSError) as exc:
            _core.device_info(f.fileno())
    assert exc.value.errno == 25  # ENOTTY: not an mmapdev device
    closed = os.open("/", os.O_RDONLY | os.O_CLOEXEC)
    os.close(closed)
    with pytest.raises(OSError) as exc:
        _core.device_info(closed)
    assert exc.value.errno == 9   # EBADF


def test_open_device_kind_and_size():
    with pymmapdev.open_device() as m:
        assert m.kind == "device"
        assert m.size == len(m) == devlib.DEFAULT_SIZE
        assert m.path == devlib.DEV
        assert m.fileno() >= 0
    assert m.closed
