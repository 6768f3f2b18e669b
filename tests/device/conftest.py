"""The device suite: runs inside the VM (tests/vm/run.sh), as root, with the
mmapdev module loaded with its defaults and MMAPDEV_KO naming the .ko so
tests can reload it with other parameters.

A missing /dev/mmapdev0 is a failure, never a skip: this suite only runs
where the module is supposed to be loaded.
"""
import errno
import os

import pytest

from . import devlib
from .kernel_log import kernel_trouble


@pytest.fixture(autouse=True)
def device_present():
    if not os.path.exists(devlib.DEV):
        pytest.fail(f"{devlib.DEV} is missing: the mmapdev module is not loaded "
                    f"(run this suite with tests/vm/run.sh)", pytrace=False)


class KernelLog:
    """What kernel_log_clean lets pass: a test that drives the machine out
    of memory on purpose names, in oom_after, the message after which an
    OOM report is the kernel's own business (from "invoked oom-killer" to
    its "Killed process" line).  The test itself checks what the report
    must not show (tests/device/test_module.py)."""

    def __init__(self):
        self.oom_after = None


@pytest.fixture(autouse=True)
def kernel_log_clean():
    """Fails the test whose run left an oops, BUG or WARNING in the log."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        yield KernelLog()
        return
    try:
        os.lseek(fd, 0, os.SEEK_END)
        log = KernelLog()
        yield log
        messages = []
        while True:
            try:
                record = os.read(fd, 8192).decode(errors="replace")
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:     # overwritten while we read: go on
                    continue
                raise
            messages.append(record.split(";", 1)[-1])
        bad = kernel_trouble(messages, log.oom_after)
        if bad:
            pytest.fail("kernel log:\n" + "\n".join(bad), pytrace=False)
    finally:
        os.close(fd)


class Module:
    """Reloads the module with parameters; the fixture restores the default."""

    load = staticmethod(devlib.load)
    unload = staticmethod(devlib.unload)
    reload = staticmethod(devlib.reload)
    loaded = staticmethod(devlib.loaded)


@pytest.fixture
def kmod():
    yield Module()
    # Back to the default load for the tests that follow.
    devlib.reload("")
    assert os.path.exists(devlib.DEV)


@pytest.fixture
def fd():
    """An O_RDWR descriptor of /dev/mmapdev0."""
    fd = os.open(devlib.DEV, os.O_RDWR | os.O_CLOEXEC)
    yield fd
    os.close(fd)


def pytest_configure(config):
    config.addinivalue_line("markers", "device: needs the mmapdev kernel module (VM only)")
