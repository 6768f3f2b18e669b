"""Processes that map /dev/mmapdev0 see each other's writes, at offset 0
and at a page offset; read()/write() on the node agree with the mapping."""
import os
import subprocess

import pytest

import pymmapdev

from . import devlib

pytestmark = pytest.mark.device

PAGE = devlib.PAGE

FAR = 3 * PAGE   # the non-zero page offset

HOLDER = """
import sys, pymmapdev
FAR = int(sys.argv[1])
with pymmapdev.open_device() as whole, pymmapdev.open_device(offset=FAR) as far:
    whole.write(0, b"holder@0")
    far.write(0, b"holder@far")
    print("ready", flush=True)
    sys.stdin.readline()               # the visitor writes meanwhile
    print(whole.read(64, 9).decode(), far.read(64, 11).decode(), flush=True)
"""

VISITOR = """
import sys, pymmapdev
FAR = int(sys.argv[1])
with pymmapdev.open_device(size=4096) as first, \\
        pymmapdev.open_device(offset=FAR, size=2 * 4096) as far:
    assert first.read(0, 8) == b"holder@0", first.read(0, 8)
    assert far.read(0, 10) == b"holder@far", far.read(0, 10)
    first.write(64, b"visitor@0")
    far.write(64, b"visitor@far")
"""


def test_unrelated_processes(fd):
    """Two unrelated pythons (not forked from each other or from us) map
    the device at offset 0 and at a page offset, both alive at once, and see
    each other's writes; the node's read() agrees."""
    os.pwrite(fd, bytes(128), 0)
    os.pwrite(fd, bytes(128), FAR)
    holder = devlib.python(HOLDER, FAR, stdin=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "ready", holder.stderr.read()
        devlib.run_python(VISITOR, FAR)
        out, err = holder.communicate("go\n", timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert holder.returncode == 0, err
    assert out.split() == ["visitor@0", "visitor@far"]
    assert os.pread(fd, 10, FAR) == b"holder@far"
    assert os.pread(fd, 11, FAR + 64) == b"visitor@far"


def test_whole_and_offset_views_alias(fd):
    """One process, two mappings: page 3 of the whole view is page 0 of the
    offset view (the module honours vm_pgoff)."""
    with pymmapdev.open_device() as whole, pymmapdev.open_device(offset=3 * PAGE) as part:
        assert part.size == devlib.DEFAULT_SIZE - 3 * PAGE
        whole.write(3 * PAGE + 8, b"aliased")
        assert part.read(8, 7) == b"aliased"
        part.write_u32(PAGE - 4, 0xDEADBEEF)
        assert whole.read_u32(4 * PAGE - 4) == 0xDEADBEEF
        # the last page is reachable through both
        whole.write(devlib.DEFAULT_SIZE - 5, b"tail!")
        assert part.read(part.size - 5, 5) == b"tail!"


def test_spawned_children(fd):
    """multiprocessing "spawn" children, handed a device mapping at offset 0
    and one at a page offset (pickled: by path, size and offset), see the
    parent's writes and it sees theirs."""
    helper = os.path.join(devlib.HERE, "spawn_helper.py")
    proc = subprocess.run(devlib.PYTHON + [helper, "0", str(5 * PAGE)], capture_output=True,
                          text=True, env=devlib.child_env(), timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ok", "2"]
    assert os.pread(fd, 11, 5 * PAGE + 100) == b"child-wrote"


def test_read_write_agree_with_mapping(fd):
    with pymmapdev.open_device() as m:
        os.pwrite(fd, b"syscall", 4000)          # straddles nothing, plain
        assert m.read(4000, 7) == b"syscall"
        m.write(PAGE - 3, b"across")             # straddles a page boundary
        assert os.pread(fd, 6, PAGE - 3) == b"across"
        os.lseek(fd, 2 * PAGE, os.SEEK_SET)
        assert os.write(fd, b"seq1") == 4
        assert os.write(fd, b"seq2") == 4
        assert m.read(2 * PAGE, 8) == b"seq1seq2"
        os.lseek(fd, 2 * PAGE, os.SEEK_SET)
        assert os.read(fd, 8) == b"seq1seq2"
        assert os.lseek(fd, 0, os.SEEK_CUR) == 2 * PAGE + 8


def test_shell_tools(fd):
    """dd, cat and echo > work on the node, as the README promises."""
    with pymmapdev.open_device() as m:
        subprocess.run(["sh", "-c", f"echo hello > {devlib.DEV}"], check=True)
        assert m.read(0, 6) == b"hello\n"
        subprocess.run(["sh", "-c", f"printf dd-data | dd of={devlib.DEV} bs=1 seek=9000 "
                        f"conv=notrunc status=none"], check=True)
        assert m.read(9000, 7) == b"dd-data"
        out = subprocess.run(["sh", "-c", f"cat {devlib.DEV} | wc -c"], check=True,
                             capture_output=True, text=True).stdout
        assert int(out) == devlib.DEFAULT_SIZE
        out = subprocess.run(["dd", f"if={devlib.DEV}", "bs=1", "skip=9000", "count=7",
                              "status=none"], check=True, capture_output=True).stdout
        assert out == b"dd-data"


def test_eof_enospc_and_partial(fd):
    size = devlib.DEFAULT_SIZE
    assert os.pread(fd, 10, size) == b""
    assert os.pread(fd, 10, size + 12345) == b""
    assert len(os.pread(fd, 10, size - 4)) == 4
    # a write straddling the end is partial, the next one fails
    assert os.pwrite(fd, b"0123456789", size - 4) == 4
    assert os.pread(fd, 4, size - 4) == b"0123"
    with pytest.raises(OSError) as exc:
        os.pwrite(fd, b"x", size)
    assert exc.value.errno == 28  # ENOSPC
    os.lseek(fd, size - 2, os.SEEK_SET)
    assert os.write(fd, b"abc") == 2
    with pytest.raises(OSError) as exc:
        os.write(fd, b"c")
    assert exc.value.errno == 28
    assert os.write(fd, b"") == 0               # an empty write at EOF is no error


def test_llseek(fd):
    size = devlib.DEFAULT_SIZE
    assert os.lseek(fd, 0, os.SEEK_END) == size
    assert os.lseek(fd, -10, os.SEEK_END) == size - 10
    assert os.lseek(fd, 5, os.SEEK_CUR) == size - 5
    assert os.lseek(fd, 100, os.SEEK_SET) == 100
    for offset, whence in ((size + 1, os.SEEK_SET), (-1, os.SEEK_SET), (1, os.SEEK_END)):
        with pytest.raises(OSError) as exc:
            os.lseek(fd, offset, whence)
        assert exc.value.errno == 22  # EINVAL
    assert os.lseek(fd, 0, os.SEEK_CUR) == 100   # a failed seek does not move
