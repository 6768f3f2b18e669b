"""32-bit callers: the ioctls through the compat path (compat_ptr_ioctl),
which is right only while every uapi struct has one layout for i386 and
x86_64.  The caller is tests/device/compat32.c, a freestanding i386
program (no 32-bit libc is needed), built here with the host's gcc and
checked against what this 64-bit process sees of the same device."""
import errno
import os
import subprocess

import pytest

from . import devlib

pytestmark = pytest.mark.device

PAGE = devlib.PAGE
X = 6 * PAGE + 64                     # a word no other test uses
SOURCE = os.path.join(devlib.HERE, "compat32.c")
UAPI = os.path.join(devlib.REPO, "kmod", "uapi")


@pytest.fixture(scope="module")
def compat32(tmp_path_factory):
    """The i386 program, built for this run.  <linux/ioctl.h> includes
    <asm/ioctl.h>, which Debian keeps under the multiarch directory only;
    x86_64's asm/ioctl.h and asm/types.h are the generic ones, the same
    for i386."""
    exe = str(tmp_path_factory.mktemp("compat32") / "compat32")
    cmd = ["gcc", "-m32", "-static", "-nostdlib", "-ffreestanding", "-fno-pic",
           "-fno-stack-protector", "-O2", "-Wall", "-Wextra", "-Werror",
           "-I", UAPI, "-I", "/usr/include/x86_64-linux-gnu", "-o", exe, SOURCE]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"cannot build the i386 caller: {' '.join(cmd)}\n{proc.stderr}",
                    pytrace=False)
    return exe


def _parse(out):
    """compat32's "name 0x1a" / "name -0x19" lines as a dict of ints."""
    return {name: int(value, 0) for name, value in (line.split() for line in out.splitlines())}


def run32(exe, *args):
    proc = subprocess.run([exe, args[0], devlib.DEV, *map(str, args[1:])],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"compat32 {args}: exit {proc.returncode}\n{proc.stdout}"
    return _parse(proc.stdout)


def start32(exe, *args):
    return subprocess.Popen([exe, args[0], devlib.DEV, *map(str, args[1:])],
                            stdout=subprocess.PIPE, text=True)


def finish32(proc):
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}"
    return _parse(out)


@pytest.fixture
def word(fd):
    os.pwrite(fd, bytes(4), X)
    return fd


def test_get_info_matches_64_bit(compat32, fd):
    ours = devlib.get_info(fd)
    theirs = run32(compat32, "info")
    assert theirs == {"result": 0, "size": ours.size, "events": ours.events,
                      "page_size": ours.page_size, "abi_version": ours.abi_version,
                      "index": ours.index, "heartbeat_ms": ours.heartbeat_ms}


def test_wait_wake_results_and_errors(compat32, word):
    os.pwrite(word, (5).to_bytes(4, "little"), X + 4)
    assert run32(compat32, "wait", X + 4, 0, -1, 0)["result"] == 0      # differs
    assert run32(compat32, "wait", X, 0, 1_000_000, 0)["result"] == -errno.ETIMEDOUT
    late = run32(compat32, "abswait", X, 0, 100_000_000)
    assert late == {"result": -errno.ETIMEDOUT, "late": 1}
    assert run32(compat32, "wait", X + 2, 0, 0, 0)["result"] == -errno.EINVAL
    assert run32(compat32, "wait", devlib.DEFAULT_SIZE, 0, 0, 0)["result"] == -errno.EINVAL
    assert run32(compat32, "wait", X, 0, 0, 2)["result"] == -errno.EINVAL
    assert run32(compat32, "wake", X, 1, 0)["result"] == 0
    assert run32(compat32, "wake", X, 1, 1)["result"] == -errno.EINVAL
    assert run32(compat32, "ioctl", devlib._ioc(2, 0x7F, 32))["result"] == -errno.ENOTTY
    assert run32(compat32, "ioctl", devlib.IOC_WAIT + (8 << 16))["result"] == -errno.ENOTTY


def test_32_bit_waiter_woken_by_64_bit(compat32, word):
    proc = start32(compat32, "wait", X, 0, -1, 0)
    try:
        devlib.wait_in_wait(proc.pid)
        # Stopped and continued, the wait restarts by itself (no handler
        # ran): the caller sees only the wake that follows.
        devlib.stop_and_continue(proc.pid)
        devlib.wait_in_wait(proc.pid)
        assert devlib.wake(word, X, 1) == 1
        assert finish32(proc) == {"result": 0}
    finally:
        proc.kill()
        proc.wait()


def test_64_bit_waiter_woken_by_32_bit(compat32, word):
    pid = devlib.fork_call(devlib.wait, word, X, 0, 20_000_000_000)
    try:
        devlib.wait_in_wait(pid)
        assert run32(compat32, "wake", X, 5, 0) == {"result": 1}
        assert devlib.reap(pid) == 0
    finally:
        devlib.kill_unreaped([pid])


def test_32_bit_mapping_shares_the_buffer(compat32, fd):
    assert run32(compat32, "map", PAGE, "written by i386") == {"result": 0}
    assert os.pread(fd, 15, PAGE) == b"written by i386"
