"""The command line and the examples, run as users run them."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import pymmapdev

from conftest import REPO, child_env

ENV = child_env()


def cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "pymmapdev", *args], capture_output=True,
                          text=True, timeout=timeout, env=ENV)


def test_demo_reader_prints_writer_values():
    proc = cli("demo", "--count", "5", "--interval", "0.05")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "reader: saw 'value = 5' (version 5)" in lines
    assert [f"writer: value = {n}" in proc.stdout for n in range(1, 6)] == [True] * 5
    assert lines[-1] == "demo: done"


def test_write_then_info(shm_path):
    assert cli("write", shm_path, "hello there").returncode == 0
    with pymmapdev.open_file(shm_path) as m:
        assert m.read(0, 13) == b"hello there\n\0"
    assert cli("write", shm_path, "later", "--offset", "8192", "-n").returncode == 0
    assert os.path.getsize(shm_path) == 8198  # grown, not shrunk
    info = cli("info", shm_path)
    assert info.returncode == 0
    assert "kind:      file" in info.stdout and "size:      8198 bytes" in info.stdout
    assert "'hello there'" in info.stdout


def test_info_and_watch_of_an_empty_file(shm_path):
    """info failed on an empty file, and both said 'pass size= to give it a
    size', an argument of open_file() that the command line has not."""
    open(shm_path, "w").close()
    info = cli("info", shm_path)
    assert info.returncode == 0, info.stderr
    assert "kind:      file" in info.stdout and "size:      0 bytes" in info.stdout
    watch = cli("watch", shm_path)
    assert watch.returncode == 1 and "size=" not in watch.stderr, watch.stderr
    assert watch.stderr == f"pymmapdev: {shm_path!r} is empty: nothing to watch yet\n"


def test_cli_errors_are_messages_not_tracebacks(tmp_path):
    proc = cli("info", str(tmp_path / "missing"))
    assert proc.returncode == 1
    assert "missing" in proc.stderr and "Traceback" not in proc.stderr


def test_output_into_a_closed_pipe_is_quiet(shm_path):
    """`python -m pymmapdev watch X | head -1`: once head has exited, the
    next print meets a closed pipe.  That ends the command quietly, as a
    Unix tool ends on SIGPIPE, not with 'pymmapdev: [Errno 32] Broken pipe'
    (or Python's 'Exception ignored ... BrokenPipeError' at exit)."""
    cli("write", shm_path, "hello")
    read_end, write_end = os.pipe()
    os.close(read_end)                  # the reader is gone before anything is written
    try:
        proc = subprocess.run([sys.executable, "-m", "pymmapdev", "info", shm_path],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
                              env=ENV)
    finally:
        os.close(write_end)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr


def test_a_missing_device_path_is_an_error_not_a_new_file():
    """/dev holds devices: writing to an absent one (the module not loaded)
    must say so, not create a regular file that later hides the device."""
    path = "/dev/mmapdev-missing-example"
    try:
        for args in (("write", path, "x"), ("watch", path), ("info", path)):
            proc = cli(*args, timeout=30)
            assert proc.returncode == 1, (args, proc.stdout)
            assert path in proc.stderr and "No such file" in proc.stderr
            assert "is the mmapdev module loaded?" in proc.stderr, (args, proc.stderr)
            assert "Traceback" not in proc.stderr
            assert not os.path.exists(path)
            if args[0] != "info":              # through open_device: its hint
                assert "mmapdev module loaded?" in proc.stderr, proc.stderr
    finally:
        if os.path.isfile(path):
            os.unlink(path)


def test_bad_numbers_are_usage_errors(shm_path):
    cli("write", shm_path, "some text")
    for args in (("demo", "--count", "0"), ("demo", "--interval", "-1"),
                 ("write", shm_path, "x", "--offset", "-1"),
                 ("watch", shm_path, "--length", "0"), ("watch", shm_path, "--interval", "0"),
                 # finite, but more than time.sleep() takes: an OverflowError traceback
                 ("watch", shm_path, "--interval", "1e300"),
                 ("demo", "--interval", "1e300")):
        proc = cli(*args, timeout=30)
        assert proc.returncode == 2 and "invalid" in proc.stderr, (args, proc.stderr)
    proc = cli("watch", shm_path, "--offset", "100000", timeout=30)
    assert proc.returncode == 1
    assert "offset 100000" in proc.stderr and shm_path in proc.stderr, proc.stderr


def test_error_messages_are_one_line_with_paths_escaped(tmp_path):
    """A path with a newline in it gave a two-line message: the command's
    own messages put the path in as it is, and so do the library's
    ValueErrors the command prints.  Paths are quoted as repr() does."""
    empty = tmp_path / "empty\nfile"
    empty.touch()
    fifo = tmp_path / "fifo\nhere"
    os.mkfifo(fifo)
    for args in (("watch", str(empty)),
                 ("write", str(empty), "x", "--offset", str(2**70)),
                 ("write", str(fifo), "x")):
        proc = cli(*args, timeout=30)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.splitlines()) == 1, (args, proc.stderr)
        # the command's own messages quote it; the library's (the FIFO) escape it
        assert repr(args[1])[1:-1] in proc.stderr, (args, proc.stderr)
        if args[0] == "watch" or "--offset" in args:
            assert repr(args[1]) in proc.stderr, (args, proc.stderr)


@pytest.mark.parametrize("args", [
    ("kmod", "build", "--kernel-dir", "/nonexistent-pymmapdev", "--build-dir", ""),
    ("kmod", "install", "--kernel-dir", "/nonexistent-pymmapdev", "--root", ""),
    ("kmod", "build", "--kernel-dir", ""),
    ("demo", "--count", "1", "--path", ""),
])
def test_empty_directory_options_are_usage_errors(args):
    """--build-dir "" built in the default directory, --root "" staged into
    the current directory, --kernel-dir "" looked in it, and demo --path ""
    shared a fresh file: an empty option (an unset shell variable) did
    something nobody asked for, silently."""
    proc = cli(*args, timeout=30)
    assert proc.returncode == 2 and "empty" in proc.stderr, (args, proc.stderr)


def test_devices_of_unknown_size_take_size_from_the_command_line(capfd):
    """write and watch of a character device that cannot tell its size said
    'pass size=', open_device()'s argument, which the command had no way
    to give.  --size gives it; without it the message names --size."""
    for args in (("write", "/dev/zero", "x"), ("watch", "/dev/zero")):
        proc = cli(*args, timeout=30)
        assert proc.returncode == 1, (args, proc.stderr)
        assert "size=" not in proc.stderr and "--size" in proc.stderr, (args, proc.stderr)
    # /dev/zero's shared mapping is private to this open: it only has to map
    assert cli("write", "/dev/zero", "x", "--size", "4096", "--offset", "8").returncode == 0
    proc = cli("write", "/dev/zero", "x", "--size", "4096", "--offset", "4096", timeout=30)
    assert proc.returncode == 1 and "past the end of '/dev/zero'" in proc.stderr, proc.stderr
    with subprocess.Popen([sys.executable, "-m", "pymmapdev", "watch", "/dev/zero", "--size",
                           "4096"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=ENV) as watch:
        first = watch.stdout.readline()
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=30)
    assert first == "\n" and watch.returncode == 0, (first, err)
    proc = cli("write", "/tmp", "x", "--size", "10", timeout=30)
    assert proc.returncode == 1 and "--size" in proc.stderr, proc.stderr


@pytest.mark.parametrize("command", ["write", "watch"])
def test_size_of_a_device_that_tells_its_own_is_refused(monkeypatch, capsys, command):
    """--size for an mmapdev device (which tells its size) was passed on:
    watch of the heartbeat with --size 8 said 'size must be >= 0, not -8'
    (the text at 16 lay past the mapping), with --size 4 'offset 4 + 4 bytes
    is outside the mapping of 4 bytes', neither naming the path or --size.
    Refused as --size of a file is.  (/dev/zero stands for the module's
    device: is_mmapdev() vouches for it, and nothing is opened.)"""
    from pymmapdev import cli
    monkeypatch.setattr(cli._sysfs, "is_mmapdev", lambda st: True)
    argv = [command, "/dev/zero"] + (["x"] if command == "write" else []) + ["--size", "8"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "--size" in err and "'/dev/zero' tells its own" in err, err


def test_offsets_past_off_t_are_messages(shm_path):
    """posix_fallocate raised OverflowError (a traceback) for a size past
    off_t: write --offset 2**70, or open_file(path, 2**64)."""
    proc = cli("write", shm_path, "x", "--offset", str(2**70))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr == f"pymmapdev: offset {2**70} + 3 bytes is past the largest file " \
        f"offset ({2**63 - 1}) ({shm_path!r})\n"
    with pytest.raises(ValueError, match=rf"size {2**64} is past the largest file offset"):
        pymmapdev.open_file(shm_path, 2**64)
    assert not os.path.exists(shm_path)


def test_write_puts_the_bytes_given(shm_path):
    """A text that is not UTF-8 (as argv bytes) failed with "'utf-8' codec
    can't encode": the bytes given are written."""
    arg = os.fsdecode(b"caf\xe9")
    proc = subprocess.run([sys.executable, "-m", "pymmapdev", "write", shm_path, arg],
                          capture_output=True, timeout=60, env=ENV)
    assert proc.returncode == 0, proc.stderr
    with pymmapdev.open_file(shm_path, readonly=True) as m:
        assert m.read(0, 6) == b"caf\xe9\n\0"


@pytest.mark.parametrize("offset", [0, 32 << 20])
def test_write_into_a_long_sparse_file_allocates_only_what_it_writes(tmp_path, offset):
    """write mapped the whole existing file, and mapping it writable reserved
    every hole: a few bytes written into a 64 MiB sparse file (a disk image)
    allocated all 64 MiB, and a file larger than the free space failed."""
    path = tmp_path / "disk.img"
    path.write_bytes(b"")
    os.truncate(path, 64 << 20)
    proc = cli("write", str(path), "hello", "--offset", str(offset))
    assert proc.returncode == 0, proc.stderr
    st = os.stat(path)
    assert st.st_size == 64 << 20                       # neither grown nor shrunk
    assert st.st_blocks * 512 <= 1 << 20, st.st_blocks * 512
    with open(path, "rb") as f:
        f.seek(offset)
        assert f.read(8) == b"hello\n\0\0"


def test_write_into_a_hole_of_a_full_file_system_is_enospc_not_a_bus_error(tmp_path):
    """Mapping only the bytes written (previous test) must still reserve
    them: a hole written on a full file system is a SIGBUS, which the CLI
    reported as 'bus error ... was the file truncated?' instead of ENOSPC."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)]).returncode:
        pytest.fail("cannot mount a tmpfs to test ENOSPC (tests run as root)")
    try:
        (mnt / "sparse").write_bytes(b"")
        os.truncate(mnt / "sparse", 8 << 20)
        # unbuffered: a buffered file would flush its unwritten rest again
        # at close and raise ENOSPC there (Python 3.14 keeps that buffer)
        filler = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            with pytest.raises(OSError, match="No space"):
                while True:
                    os.write(filler, bytes(64 << 10))
        finally:
            os.close(filler)
        proc = cli("write", str(mnt / "sparse"), "hello", "--offset", str(4 << 20))
        assert proc.returncode == 1
        assert "No space left on device" in proc.stderr and "bus error" not in proc.stderr
        assert proc.stderr.count("\n") == 1, proc.stderr
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_stdout_closed_is_an_error_not_silence(shm_path):
    """With stdout closed, sys.stdout is None: watch and info printed
    nothing and succeeded, demo died in a traceback and left its file."""
    cli("write", shm_path, "text")
    for args in (("info", shm_path), ("watch", shm_path), ("demo", "--count", "1")):
        proc = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-m",
                               "pymmapdev", *args], capture_output=True, text=True,
                              timeout=60, env=ENV)
        assert proc.returncode == 1, (args, proc.stderr)
        assert proc.stderr == f"pymmapdev {args[0]}: standard output is closed: nothing " \
            f"could be printed\n"
    assert cli("write", shm_path, "more").returncode == 0     # write prints nothing


def _demo_path(pid):
    return f"/dev/shm/pymmapdev-demo-{pid}"


def test_output_closed_by_its_reader_ends_quietly(shm_path):
    """`watch | head -1`: watch waited for the next change to notice, then
    died in a traceback; demo's three processes printed one each."""
    cli("write", shm_path, "only")
    watcher = subprocess.Popen([sys.executable, "-m", "pymmapdev", "watch", shm_path],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    assert watcher.stdout.readline() == b"only\n"
    watcher.stdout.close()                  # head -1 exits; nothing changes after
    assert watcher.wait(timeout=60) == 141
    assert watcher.stderr.read() == b""
    watcher.stderr.close()

    demo = subprocess.Popen([sys.executable, "-m", "pymmapdev", "demo", "--count", "50",
                             "--interval", "0.05"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ENV)
    assert demo.stdout.readline().startswith(b"demo: a writer and a reader")
    demo.stdout.close()
    assert demo.wait(timeout=60) == 141
    assert demo.stderr.read() == b""
    demo.stderr.close()
    assert not os.path.exists(_demo_path(demo.pid))


def _publish_while_demo_reads(path, data=None, garbage=False):
    """Run the demo on *path* and, once its reader has seen a value, put
    what another process could into its Slot; the demo's output."""
    demo = subprocess.Popen([sys.executable, "-m", "pymmapdev", "demo", "--path", path,
                             "--count", "8", "--interval", "0.2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, start_new_session=True)
    try:
        for line in demo.stdout:
            if line.startswith("reader: saw"):
                break
        with pymmapdev.open_file(path) as m:
            if garbage:
                m[0:pymmapdev.Slot.HEADER] = b"\xff" * pymmapdev.Slot.HEADER
            else:
                pymmapdev.Slot(m, 0, 64).publish(data)
        out, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    return demo.returncode, out, err


def test_demo_reader_prints_a_value_that_is_not_utf8(shm_path):
    """Any process mapping the demo's file can publish: bytes that are not
    UTF-8 killed the reader with a UnicodeDecodeError traceback."""
    status, out, err = _publish_while_demo_reads(shm_path, b"\xff odd")
    assert "Traceback" not in err and status == 0, err
    assert out.splitlines()[-1] == "demo: done"


def test_demo_reader_ends_in_one_line_on_a_garbage_slot(shm_path):
    """A Slot header overwritten by another process (PeerDied: an OSError)
    was a traceback from the reader process."""
    status, out, err = _publish_while_demo_reads(shm_path, garbage=True)
    assert "Traceback" not in err, err
    # (whether the writer's next publish repairs the header is the Slot's
    # business: here, that a failure is one line naming the process)
    assert all(line.startswith(("pymmapdev demo reader: ", "pymmapdev demo writer: "))
               for line in err.splitlines()), err
    assert out.splitlines()[-1] == ("demo: done" if status == 0 else "demo: FAILED")


def test_demo_ends_quietly_on_ctrl_c():
    """Ctrl-C (the terminal signals the whole group): a traceback from each
    of the three processes."""
    demo = subprocess.Popen([sys.executable, "-m", "pymmapdev", "demo", "--count", "1000",
                             "--interval", "0.05"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV,
                            start_new_session=True)
    try:
        for line in demo.stdout:
            if line.startswith("reader: saw"):
                break
        os.killpg(demo.pid, signal.SIGINT)
        out, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    assert demo.returncode == 130 and err == "", err
    assert not os.path.exists(_demo_path(demo.pid))


def test_watch_prints_changes_and_exits_on_ctrl_c(shm_path):
    cli("write", shm_path, "first")
    watcher = subprocess.Popen([sys.executable, "-m", "pymmapdev", "watch", shm_path],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        assert watcher.stdout.readline() == "first\n"
        cli("write", shm_path, "second")
        assert watcher.stdout.readline() == "second\n"
    finally:
        watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0 and "Traceback" not in err


def test_examples_writer_and_reader_are_unrelated_processes(shm_path):
    writer = subprocess.Popen([sys.executable, "examples/writer.py", shm_path], cwd=REPO,
                              env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().startswith("published value = 1")
        reader = subprocess.Popen([sys.executable, "examples/reader.py", shm_path], cwd=REPO,
                                  env=ENV, stdout=subprocess.PIPE, text=True)
        try:
            seen = [reader.stdout.readline() for _ in range(2)]
        finally:
            reader.send_signal(signal.SIGINT)
            reader.wait(30)
        values = [int(line.split()[2]) for line in seen]
        assert values[1] == values[0] + 1  # the reader woke for the next publish
    finally:
        writer.send_signal(signal.SIGINT)
        writer.wait(30)


def test_reader_example_prints_bytes_that_are_not_utf8(shm_path):
    """Any process that maps the file can publish: bytes that are not UTF-8
    made reader.py die with a UnicodeDecodeError traceback."""
    with pymmapdev.open_file(shm_path, pymmapdev.Slot.size_for(64)) as m:
        pymmapdev.Slot(m, 0, 64).publish(b"\xff value")
        reader = subprocess.Popen([sys.executable, "examples/reader.py", shm_path], cwd=REPO,
                                  env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        try:
            line = reader.stdout.readline()
        finally:
            reader.send_signal(signal.SIGINT)
            _, err = reader.communicate(timeout=30)
    assert line == "\ufffd value (version 1)\n" and "Traceback" not in err, (line, err)


def test_numpy_example():
    proc = subprocess.run([sys.executable, "examples/numpy_shared_array.py"], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "sum of the shared array: 499999500000" in proc.stdout


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_pool_numpy_example(method):
    proc = subprocess.run([sys.executable, "examples/pool_numpy_array.py", method], cwd=REPO,
                          env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"{method}: 1024 rows filled by the pool, sum 137438691328 " in proc.stdout


def test_pipeline_example():
    proc = subprocess.run([sys.executable, "examples/pipeline.py", "60", "3"], cwd=REPO,
                          env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "60 frames of 256 KiB through 3 workers" in proc.stdout
    assert "every frame seen once" in proc.stdout


def test_asyncio_example():
    proc = subprocess.run([sys.executable, "examples/asyncio_waits.py"], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:3] == ["slot: update 1", "slot: update 2", "slot: update 3"]
    assert lines[3].startswith("done: word = 1, the loop ticked")


def test_vm_share_example_on_a_file(shm_path):
    """The VM <-> host example's two sides, here both on one host file (the
    guest side against a real ivshmem BAR: tests/device/test_ivshmem.py)."""
    follower = subprocess.Popen([sys.executable, "examples/vm_share.py", "follow", shm_path, "2"],
                                cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        publisher = subprocess.run([sys.executable, "examples/vm_share.py", "publish", shm_path,
                                    "4"], cwd=REPO, env=ENV, capture_output=True, text=True,
                                   timeout=120)
        assert publisher.returncode == 0, publisher.stderr
        out, err = follower.communicate(timeout=60)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and all(" from pid " in line for line in lines), lines


def test_vm_share_follower_prints_bytes_that_are_not_utf8(shm_path):
    """The other side of a VM boundary is any program: bytes that are not
    UTF-8 made the follower die with a UnicodeDecodeError traceback."""
    follower = subprocess.Popen([sys.executable, "examples/vm_share.py", "follow", shm_path, "1"],
                                cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(shm_path) or os.path.getsize(shm_path) < 1 << 20:
            assert time.monotonic() < deadline and follower.poll() is None, "follower never mapped"
            time.sleep(0.01)
        with pymmapdev.open_file(shm_path) as m:
            pymmapdev.Slot(m, 65536, 256).publish(b"caf\xe9 \xff")
            out, err = follower.communicate(timeout=60)
    finally:
        follower.kill()
    assert follower.returncode == 0 and "Traceback" not in err, err
    assert out == "version 1: caf\ufffd \ufffd\n", out


def test_vm_share_publisher_ends_quietly_on_ctrl_c(shm_path):
    """publish without a COUNT runs 'until Ctrl-C' (the docstring): its
    Ctrl-C was a KeyboardInterrupt traceback (follow's was quiet)."""
    publisher = subprocess.Popen([sys.executable, "examples/vm_share.py", "publish", shm_path],
                                 cwd=REPO, env=ENV, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(shm_path) or os.path.getsize(shm_path) == 0:
            assert time.monotonic() < deadline and publisher.poll() is None, "never published"
            time.sleep(0.05)
        with pymmapdev.open_file(shm_path, create=False) as m:
            slot = pymmapdev.Slot(m, 65536, 256)
            while slot.version == 0:            # in its loop: sleeping between publishes
                assert time.monotonic() < deadline, "never published"
                time.sleep(0.05)
    finally:
        publisher.send_signal(signal.SIGINT)
        _, err = publisher.communicate(timeout=30)
    assert "Traceback" not in err and publisher.returncode == 0, err


def test_vm_share_scan_skips_a_device_removed_while_it_scans(tmp_path):
    """find_ivshmem() read every PCI device's vendor/device files: a device
    unplugged between listdir() and open() was a FileNotFoundError traceback."""
    vm_share = _vm_share_module()
    (tmp_path / "0000:00:01.0").mkdir()                 # gone: its files went first
    dev = tmp_path / "0000:00:02.0"
    dev.mkdir()
    (dev / "vendor").write_text("0x1af4\n")
    (dev / "device").write_text("0x1110\n")
    assert vm_share.find_ivshmem(str(tmp_path)) == f"{dev}/resource2"


def _vm_share_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("vm_share", f"{REPO}/examples/vm_share.py")
    vm_share = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vm_share)
    return vm_share


def test_vm_share_without_pci_sysfs_says_so_in_one_line(tmp_path):
    """find_ivshmem() listed /sys/bus/pci/devices unguarded: where it is
    missing (no PCI bus, a container without /sys) a FileNotFoundError
    traceback."""
    base = str(tmp_path / "devices")
    with pytest.raises(SystemExit) as info:
        _vm_share_module().find_ivshmem(base)
    message = info.value.code
    assert isinstance(message, str) and message.startswith("vm_share: "), message
    assert repr(base) in message and "\n" not in message, message


@pytest.mark.parametrize("target", ["/nonexistent-pymmapdev-dir/x", "/dev/null",
                                    "/sys/nonexistent-pymmapdev"])
def test_vm_share_on_a_target_it_cannot_open_says_so_in_one_line(target):
    """Each was a traceback (FileNotFoundError, ValueError 'is a character
    device'), where the other examples print one line and exit 1."""
    proc = subprocess.run([sys.executable, "examples/vm_share.py", "follow", target, "1"],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("vm_share: ") and target in proc.stderr, proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("exists", [True, False])
def test_pci_bar_example_on_a_path_that_is_no_bar_says_so(tmp_path, exists):
    """It parsed sysfs before opening anything: a traceback (IndexError or
    ValueError from int()) for any path that is not a resourceN file."""
    path = str(tmp_path / "resource2")
    if exists:
        with open(path, "w") as f:
            f.write("not a BAR")
    proc = subprocess.run([sys.executable, "examples/pci_bar.py", path], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("pci_bar: ") and path in proc.stderr, proc.stderr


@pytest.mark.parametrize("script, args", [
    ("pci_bar.py", []), ("vm_share.py", []), ("vm_share.py", ["bogus", "x"]),
    ("device_reader.py", ["a", "b"]), ("uio_irq.py", ["a", "b"]),
    # each of these was a ValueError traceback, and pipeline.py with no
    # worker waited 60 s for results nobody computes
    ("pipeline.py", ["x"]), ("pipeline.py", ["10", "0"]), ("pipeline.py", ["-5"]),
    ("pipeline.py", ["1", "2", "3"]), ("pool_numpy_array.py", ["bogus"]),
    ("vm_share.py", ["publish", "/nonexistent-pymmapdev-dir/x", "zz"]),
])
def test_examples_with_wrong_arguments_print_their_usage(script, args):
    proc = subprocess.run([sys.executable, f"examples/{script}", *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"examples/{script}" in proc.stderr         # the docstring's usage line


@pytest.mark.parametrize("script, target", [
    ("device_reader.py", "/dev/mmapdev-missing-example"),
    ("uio_irq.py", "no-such-uio-device"),
    ("uio_irq.py", "/"), ("device_reader.py", "/dev/null"),
])
def test_device_examples_without_the_device_say_so_in_one_line(script, target):
    """Run where the device is absent (no module loaded, no UIO driver), as a
    new user first does: one line naming the path, not a traceback."""
    proc = subprocess.run([sys.executable, f"examples/{script}", target], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    name = script[:-len(".py")]
    assert proc.stderr.startswith(f"{name}: ") and target in proc.stderr, proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr



def readme_snippets():
    with open(os.path.join(REPO, "README.md")) as f:
        return re.findall(r"^```python\n(.*?)^```", f.read(), re.S | re.M)


# Blocks that need hardware this machine may not have (and must not touch
# when it has it: a PCI BAR, /dev/mem): compiled, not run.
NEEDS_HARDWARE = ("pymmapdev.open_device(\"/sys/bus/pci/",)
RUNNABLE = [code for code in readme_snippets()
            if not any(marker in code for marker in NEEDS_HARDWARE)]


def test_readme_snippets_that_need_hardware_compile():
    needs = [code for code in readme_snippets() if code not in RUNNABLE]
    assert len(needs) == len(NEEDS_HARDWARE)    # a new one is run below, or listed on purpose
    for code in needs:
        compile(code, "README.md", "exec")


@pytest.mark.parametrize("index", range(len(RUNNABLE)))
def test_readme_python_snippets_run_as_written(index, tmp_path):
    """Every other python block of the README runs as a script and prints
    what its '# prints: ...' comments say, in order.  Their /dev/shm files
    are put in tmp_path, so that parallel runs do not share them."""
    code = RUNNABLE[index]
    script = tmp_path / "snippet.py"
    script.write_text(code.replace('"/dev/shm/', f'"{tmp_path}/'))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, code + proc.stderr
    expected = [m.group(1).split("  (")[0].strip()
                for m in re.finditer(r"# prints: (.*)$", code, re.M)]
    assert proc.stdout.splitlines() == expected, code


def test_version():
    """`python -m pymmapdev --version`: what a bug report starts with."""
    proc = cli("--version")
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout == f"pymmapdev {pymmapdev.__version__}\n"


def _spawned_children(pid):
    """Pids of *pid*'s multiprocessing spawn children (not its resource tracker)."""
    out = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{name}/cmdline", "rb") as f:
                spawned = b"spawn_main" in f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and spawned:
            out.append(int(name))
    return out


def _start_numpy_example(path):
    """(the example's Popen, its producer's pid), or None for the pid when
    the example ended before its producer was seen."""
    proc = subprocess.Popen([sys.executable, "examples/numpy_shared_array.py", path], cwd=REPO,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    for _ in range(3000):
        kids = _spawned_children(proc.pid)
        if kids:
            return proc, kids[0]
        if proc.poll() is not None:
            return proc, None
        time.sleep(0.002)
    proc.kill()
    pytest.fail("the numpy example never started its producer")


def _wchan(pid):
    """Where in the kernel process *pid* sleeps ("do_wait": wait4/waitid)."""
    with open(f"/proc/{pid}/wchan") as f:
        return f.read()


def _numpy_example_with_its_producer_stopped(path, tries=5):
    """(the example's Popen, its producer's pid), the producer stopped
    (SIGSTOP) before it set READY: the parent waits for it until it goes on.
    A producer that got that far before it was stopped (its start was seen
    late) makes a try that is run to its end, and another one."""
    for _ in range(tries):
        proc, producer = _start_numpy_example(path)
        try:
            if producer is not None:
                os.kill(producer, signal.SIGSTOP)
                with pymmapdev.open_file(path, create=False) as m:
                    if m.load_u32(0) == 0:
                        return proc, producer
                os.kill(producer, signal.SIGCONT)
        except (ProcessLookupError, FileNotFoundError):     # done already
            pass
        outcome = proc.communicate(timeout=60)
    pytest.fail(f"the numpy example's producer set READY before it was stopped, {tries} times "
                f"(the last run: status {proc.returncode}, {outcome})")


def test_numpy_example_ctrl_c_removes_its_file(shm_path):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) while
    the parent waits for the producer: the 8 MB file stayed in /dev/shm
    (the unlink came after the with block, skipped by the exception).
    The producer is held stopped until the parent has handled the Ctrl-C:
    one that finished first (a Ctrl-C sent late on a loaded machine) let
    the parent print the sum instead."""
    proc, _ = _numpy_example_with_its_producer_stopped(shm_path)
    try:
        os.killpg(proc.pid, signal.SIGINT)
        # until the parent has handled it: it waits (do_wait) to join the
        # producer at exit, past the finally that unlinks the file
        deadline = time.monotonic() + 60
        while _wchan(proc.pid) != "do_wait" and os.path.exists(shm_path):
            assert time.monotonic() < deadline and proc.poll() is None, "Ctrl-C not handled"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGCONT)      # the producer sees its Ctrl-C now
    out, err = proc.communicate(timeout=60)
    assert "sum of the shared array" not in out, "the producer finished before the Ctrl-C"
    assert "KeyboardInterrupt" in err, err
    assert not os.path.exists(shm_path), err


def test_numpy_example_producer_death_is_an_error_not_a_hang(shm_path):
    """The parent waited for the READY flag in a loop of 1 s waits that
    never looked at the child: a producer that died left it waiting forever."""
    proc, child = _numpy_example_with_its_producer_stopped(shm_path)
    os.kill(child, signal.SIGKILL)              # before it set READY
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert err.startswith("numpy_shared_array: ") and "producer" in err, err
    assert not os.path.exists(shm_path)


def test_watch_reads_a_heartbeat_left_mid_write_in_bounded_time(monkeypatch):
    """`watch` of a heartbeat reads its text inside the module's seqlock
    (write_seq even and unchanged around the read).  A write_seq that stays
    odd, written by any process that can write the device, ends the retries
    after a bounded number of tries with the text as read."""
    from pymmapdev import cli
    pauses = []
    monkeypatch.setattr(cli.time, "sleep", pauses.append)
    with pymmapdev.anonymous(4096) as m:
        m.write(cli.HB_TEXT, b"value = 5\n")
        assert cli._heartbeat_read(m) == (0, "value = 5") and pauses == []    # settled
        m.store_u32(cli.HB_WRITE_SEQ, 7)
        assert cli._heartbeat_read(m) == (7, "value = 5")                 # as read
        assert len(pauses) == cli.HB_READ_TRIES - 1


class _ScriptedHeartbeat:
    """A mapping whose peer is a script: the module's beats are written by
    hand at set points of the reader's calls, for an interleaving the real
    module makes only now and then."""

    def __init__(self, m, cli):
        self.m, self.cli, self.waits = m, cli, 0
        self.beat(1)

    def beat(self, n, whole=True):
        """Beat *n* as kmod/heartbeat.c writes it; *whole*=False stops after
        the payload, with write_seq odd."""
        self.m.store_u32(self.cli.HB_WRITE_SEQ, 2 * n - 1)
        self.m.write(self.cli.HB_TEXT, f"value = {n}\n".encode().ljust(48, b"\0"))
        if whole:
            self.finish(n)

    def finish(self, n):
        self.m.store_u32(self.cli.HB_WRITE_SEQ, 2 * n)
        self.m.store_u32(self.cli.HB_SEQ, n)

    def load_u32(self, offset):
        return self.m.load_u32(offset)

    def read(self, offset, length):
        return self.m.read(offset, length)

    @property
    def size(self):
        return self.m.size

    def wait(self, offset, expected, timeout):
        self.waits += 1
        if self.waits == 1:         # beat 2 lands, beat 3 is caught mid-write
            self.beat(2)
            self.beat(3, whole=False)
        elif self.waits > 2:        # no more beats: the watch ends
            return False
        return self.m.wait(offset, expected, timeout=timeout)


def test_watch_shows_a_beat_read_before_its_seq_moved_once(monkeypatch, capsys):
    """Woken by beat 2, `watch` finds beat 3 being written, waits for it and
    shows it; beat 3's own bump of seq then wakes it for a beat it has
    shown already, which it must not show again."""
    from pymmapdev import cli
    with pymmapdev.anonymous(4096) as m:
        peer = _ScriptedHeartbeat(m, cli)
        monkeypatch.setattr(cli.time, "sleep", lambda _: peer.finish(3))
        monkeypatch.setattr(cli, "_reader_gone", lambda: True)
        with pytest.raises(cli._ReaderGone):
            cli._watch_heartbeat(peer)
    assert capsys.readouterr().out == "value = 1\nvalue = 3\n"
    assert peer.waits == 3
