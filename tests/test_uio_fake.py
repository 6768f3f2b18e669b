"""pymmapdev.UIO on the host, against a fake sysfs tree.

The host has no UIO driver to spare (the real one, our module's uio=1, is
in the VM suite: tests/device/test_uio.py).  Here a fake /sys names two
ordinary character devices as UIO devices: /dev/zero, whose maps can be
mmap()ed, and the slave of a fresh pseudo-terminal in raw mode, whose
read() blocks until the test writes 4 bytes to the master: an interrupt
count, as /dev/uioN returns it.
"""
import asyncio
import errno
import gc
import os
import pathlib
import select
import signal
import struct
import sys
import threading
import time
import tty
import weakref

import pytest

import pymmapdev
from pymmapdev import _sysfs, uio

PAGE = pymmapdev.PAGESIZE


@pytest.fixture
def fake_sys(tmp_path, monkeypatch):
    """add(name, device_path, maps=[(addr, size, offset), ...]): list a
    character device as /sys/class/uio/<name>."""
    root = tmp_path / "sys"
    (root / "class" / "uio").mkdir(parents=True)
    (root / "dev" / "char").mkdir(parents=True)
    monkeypatch.setattr(_sysfs, "SYS", str(root))

    def add(name, device, maps=()):
        st = os.stat(device)
        rdev = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        d = root / "class" / "uio" / name
        (d / "maps").mkdir(parents=True)
        (d / "dev").write_text(rdev + "\n")
        (d / "name").write_text("fake\n")
        (d / "version").write_text("0.1\n")
        (root / "dev" / "char" / rdev).mkdir()
        os.symlink(root / "class" / "uio", root / "dev" / "char" / rdev / "subsystem")
        for i, (addr, size, offset) in enumerate(maps):
            m = d / "maps" / f"map{i}"
            m.mkdir()
            (m / "addr").write_text(f"{addr:#018x}\n")
            (m / "size").write_text(f"{size:#018x}\n")
            (m / "offset").write_text(f"{offset:#x}\n")
            (m / "name").write_text(f"regs{i}\n")
        return d

    return add


@pytest.fixture
def irq(fake_sys):
    """(UIO over a pty slave, fire(count)): fire makes one 'interrupt'."""
    master, slave = os.openpty()
    tty.setraw(slave)
    fake_sys("uio1", os.ttyname(slave))
    u = pymmapdev.UIO(os.ttyname(slave))

    def fire(count):
        os.write(master, struct.pack("=i", count))

    yield u, fire, master
    u.close()
    os.close(slave)
    try:
        os.close(master)
    except OSError:
        pass


# ---- maps ----------------------------------------------------------------------

def test_map_not_at_a_page_start(fake_sys):
    """Drivers with registers inside a page (uio_pdrv_genirq, uio_dfl...)
    give addr as the page, offset as where the memory starts in it and
    size from the page's start (rounded up to pages); the kernel refuses an
    mmap() longer than size.  map() covers [offset, size) of the pages."""
    fake_sys("uio0", "/dev/zero", [(0xFE000000, 2 * PAGE, 0x100)])
    with pymmapdev.UIO("/dev/zero") as u:
        assert u.maps == [(0xFE000000, 2 * PAGE, 0x100)]
        with u.map(0) as m:
            assert (m.offset, m.size) == (0x100, 2 * PAGE - 0x100)
            m[m.size - 1] = 1                   # the last byte of the pages


def test_map_with_an_offset_past_its_size(fake_sys):
    fake_sys("uio0", "/dev/zero", [(0xFE000000, PAGE, PAGE)])
    with pymmapdev.UIO("/dev/zero") as u:
        with pytest.raises(ValueError, match=r"'/dev/zero': map 0 .*offset 4096.* size 4096"):
            u.map(0)


def test_sysfs_text_that_is_not_utf8(fake_sys, capsys):
    """A driver's name is bytes: UIO() raised UnicodeDecodeError reading a
    name that is not UTF-8, and info printed the codec's complaint."""
    d = fake_sys("uio0", "/dev/zero", [(0xFE000000, PAGE, 0)])
    (d / "name").write_bytes(b"caf\xe9\n")
    (d / "maps" / "map0" / "name").write_bytes(b"\xff\n")
    with pymmapdev.UIO("/dev/zero") as u:
        assert u.name == "caf\\xe9"
    from pymmapdev import cli
    assert cli.main(["info", "/dev/zero"]) == 0
    out = capsys.readouterr().out
    assert "name:      caf\\xe9 (version 0.1)" in out and "(\\xff; " in out



@pytest.mark.parametrize("index", ["0", None, 0.0])
def test_a_map_index_that_is_not_an_int(fake_sys, index):
    """map() compared the index with == : '0' and None gave 'has no map 0
    (its maps: 0)', an IndexError that contradicts itself, and 0.0 mapped."""
    fake_sys("uio0", "/dev/zero", [(0, PAGE, 0)])
    with pymmapdev.UIO("/dev/zero") as u:
        with pytest.raises(TypeError):
            u.map(index)


@pytest.mark.parametrize("entry, text", [
    ("size", "0xffffffffffffffff"),                 # past off_t: was OverflowError
    ("size", "0x1000000000000000000000"),
    ("size", "garbage"),                            # was 'has no map 0 (its maps: none)'
    ("offset", "garbage"),                          # was mapped from offset 0
])
def test_sysfs_map_entries_that_cannot_be_mapped_name_the_path(fake_sys, entry, text):
    d = fake_sys("uio0", "/dev/zero", [(0, PAGE, 0x100)])
    (d / "maps" / "map0" / entry).write_text(text + "\n")
    with pymmapdev.UIO("/dev/zero") as u:
        with pytest.raises(ValueError) as info:
            u.map(0)
    assert "/dev/zero" in str(info.value) and str(d / "maps" / "map0") in str(info.value)


def test_a_map_number_past_the_largest_offset_names_the_path(fake_sys):
    """Map i is at mmap offset i * PAGESIZE: a number past off_t raised a
    bare OverflowError from the C layer."""
    d = fake_sys("uio0", "/dev/zero")
    m = d / "maps" / "map99999999999999999"
    m.mkdir()
    (m / "addr").write_text("0x0\n")
    (m / "size").write_text("0x1000\n")
    (m / "offset").write_text("0x0\n")
    with pymmapdev.UIO("/dev/zero") as u:
        with pytest.raises(ValueError, match="largest file offset") as info:
            u.map(99999999999999999)
    assert "/dev/zero" in str(info.value) and str(m) in str(info.value)

# ---- the interrupt -------------------------------------------------------------

def test_wait_irq_counts_and_times_out(irq):
    """A wait whose timeout passes with no interrupt returns None and
    takes no count; an interrupt that comes while a wait with a timeout
    sleeps ends it with its count; one that came before a wait is returned
    at once, even with timeout 0, and only once.  (How long a wait took is
    the bench's business, not asserted here.)"""
    u, fire, _ = irq
    assert u.wait_irq(0.1) is None
    assert u.wait_irq(0) is None                # the timed-out wait left nothing behind
    fire(7)
    assert u.wait_irq(0) == 7
    assert u.wait_irq(0) is None
    later = threading.Timer(0.05, fire, (8,))   # (if it fires first: returned at once)
    later.start()
    try:
        assert u.wait_irq(30) == 8
    finally:
        later.join()

    async def main():
        assert await u.wait_irq_async(0.1) is None
        fire(9)
        return await u.wait_irq_async(30)

    assert asyncio.run(main()) == 9


@pytest.mark.parametrize("count", [2**31 - 1, 2**31, 2**32 - 1])
def test_an_interrupt_count_past_2_31_is_unsigned(irq, count):
    """The kernel's count is a 32-bit counter that user space sees wrap
    from 2**32 - 1 to 0: both waits unpacked it as a signed int, so after
    2**31 interrupts it went negative (-1 for 0xffffffff)."""
    u, _, master = irq
    os.write(master, count.to_bytes(4, sys.byteorder))
    assert u.wait_irq(5) == count

    async def main():
        os.write(master, count.to_bytes(4, sys.byteorder))
        return await u.wait_irq_async(5)

    assert asyncio.run(main()) == count


def test_a_short_count_read_is_named_as_such_by_both_waits(irq):
    """A read() of fewer than 4 bytes: wait_irq() said so, while
    wait_irq_async() put UIO's words for a driver's EIO ('the device has no
    interrupt, or its driver went away') in its place, as if it had failed."""
    u, _, master = irq

    async def wait_async():
        return await u.wait_irq_async(5)

    for wait in (lambda: u.wait_irq(5), lambda: asyncio.run(wait_async())):
        os.write(master, b"ab")
        with pytest.raises(OSError) as info:
            wait()
        assert (info.value.errno, info.value.filename) == (errno.EIO, u.path)
        assert info.value.strerror == "read 2 bytes where a 4-byte event count was due"
        assert type(info.value) is OSError


@pytest.mark.parametrize("timeout", [float("inf"), 1e8, 1e300])
def test_wait_irq_any_long_timeout(irq, timeout):
    """A timeout beyond poll()'s int milliseconds (~24.8 days) or infinite
    waits, as the package's other waits do (past 1e9 s: forever)."""
    u, fire, _ = irq
    fire(3)
    assert u.wait_irq(timeout) == 3

    async def main():
        fire(4)
        return await u.wait_irq_async(timeout)

    assert asyncio.run(main()) == 4


def test_close_wakes_a_blocked_wait_irq(irq):
    u, _, _ = irq
    fd = u.fileno()
    got = []

    def waiter():                   # not woken by close(): None after 30 s
        try:
            got.append(u.wait_irq(timeout=30))
        except ValueError as exc:
            got.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.2)                             # it sleeps in poll()
    u.close()
    t.join(60)
    assert len(got) == 1 and isinstance(got[0], ValueError) and "closed" in str(got[0]), got
    with pytest.raises(OSError) as exc:         # and the descriptor is gone
        os.fstat(fd)
    assert exc.value.errno == errno.EBADF


def test_close_ends_a_pending_wait_irq_async(irq):
    u, _, _ = irq

    async def main():
        task = asyncio.create_task(u.wait_irq_async())
        await asyncio.sleep(0.1)
        u.close()
        with pytest.raises(ValueError, match="closed"):
            await asyncio.wait_for(task, 5)

    asyncio.run(main())


def test_not_a_count_names_the_path(irq):
    """A read that is not 4 bytes (here: the pty's master went away, EOF)
    is an OSError naming the device, never a struct.error or a count 0."""
    u, _, master = irq
    os.close(master)
    with pytest.raises(OSError) as exc:
        u.wait_irq(5)
    assert exc.value.filename == u.path

    async def main():
        return await u.wait_irq_async(5)

    with pytest.raises(OSError) as exc:
        asyncio.run(main())
    assert exc.value.filename == u.path


def test_close_from_another_thread_ends_async_waits(irq):
    u, fire, _ = irq
    fd = u.fileno()

    async def main():
        waits = [asyncio.create_task(u.wait_irq_async()) for _ in range(2)]
        await asyncio.sleep(0.1)
        closer = threading.Timer(0.1, u.close)
        closer.start()
        done = await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 5)
        closer.join()
        return done

    done = asyncio.run(main())
    assert [type(e) for e in done] == [ValueError, ValueError], done
    with pytest.raises(OSError):
        os.fstat(fd)
    with pytest.raises(ValueError, match="closed"):
        u.wait_irq(0)
    fire(1)                                     # nobody reads it: no harm


def test_read_only(fake_sys):
    """A read-only open says so, rather than blaming the driver (EACCES from
    mmap) or a bad descriptor (EBADF from the irqcontrol write)."""
    fake_sys("uio0", "/dev/zero", [(0, PAGE, 0)])
    with pymmapdev.UIO("/dev/zero", readonly=True) as u:
        with u.map(0) as m:
            assert m.readonly and m[0] == 0
        with pytest.raises(ValueError, match="'/dev/zero' is open read-only: map"):
            u.map(0, readonly=False)
        for switch in (u.enable_irq, u.disable_irq):
            with pytest.raises(ValueError, match="'/dev/zero' is open read-only: masking"):
                switch()


def test_close_in_a_child_forked_during_a_wait(irq):
    """The waits of the parent's threads did not come along into a forked
    child: its close() closes the descriptor at once, never waiting for
    them to leave (nor deadlocking on a lock one of them held)."""
    u, fire, _ = irq
    t = threading.Thread(target=u.wait_irq, args=(5,))
    t.start()
    time.sleep(0.2)                             # it waits
    fd = u.fileno()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            u.close()
            try:
                os.fstat(fd)
            except OSError as exc:
                status = 0 if exc.errno == errno.EBADF else 2
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    fire(1)
    t.join(10)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.filterwarnings("ignore:unclosed event loop:ResourceWarning")
def test_a_wait_irq_async_left_pending_by_an_ended_thread(irq, forgotten_loops):
    """A thread runs its own loop until wait_irq_async() waits and ends,
    its loop dropped unclosed: nothing can resume that wait, so once
    collected it must not keep the loop (and its descriptors) for good,
    nor the device: close() then closes the descriptor at once."""
    u, _, _ = irq
    fd = u.fileno()
    fds = len(os.listdir("/proc/self/fd"))
    loops = []

    def abandon():
        loop = asyncio.new_event_loop()
        loops.append(weakref.ref(loop))
        task = loop.create_task(u.wait_irq_async())
        loop.run_until_complete(asyncio.sleep(0.1))
        assert not task.done()

    t = threading.Thread(target=abandon)
    t.start()
    t.join(10)
    assert not t.is_alive()
    gc.collect()
    assert loops[0]() is None, "something keeps the forgotten loop"
    u.close()
    with pytest.raises(OSError) as exc:
        os.fstat(fd)
    assert exc.value.errno == errno.EBADF
    assert len(os.listdir("/proc/self/fd")) <= fds - 2     # and the wakeup eventfd


def _wait_until(predicate, what, limit=10.0):
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.01)


def test_a_forked_childs_close_does_not_end_the_parents_waits(irq):
    """The wakeup eventfd close() writes to was inherited by a forked child:
    the child's close() (a thread of its own waiting) then woke the
    parent's waits on its copy, still open: wait_irq_async() raised 'is
    closed' and wait_irq() spun through poll() until its timeout."""
    u, fire, _ = irq
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            t = threading.Thread(target=lambda: pytest.raises(ValueError, u.wait_irq, 5))
            t.start()
            _wait_until(lambda: u._users == 1, "waited")
            u.close()
            t.join(10)
            status = 0 if not t.is_alive() else 2
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    reads = []
    read_count = u._read_count
    u._read_count = lambda fd: reads.append(fd) or read_count(fd)
    assert not u.closed
    assert u.wait_irq(0.1) is None
    assert reads == [], "woken with nothing to read"

    async def main():
        return await u.wait_irq_async(0.1)

    assert asyncio.run(main()) is None
    fire(9)
    assert u.wait_irq(5) == 9


def _in_child_within(seconds, body):
    """Run body() in a forked child; fail if it does not exit 0 within
    *seconds* (it is killed then: a hang fails the test, not the run)."""
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            status = body()
        finally:
            os._exit(status)
    deadline = time.monotonic() + seconds
    while (done := os.waitpid(pid, os.WNOHANG)) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the child hung for {seconds} s")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(done[1]) == 0


class _SignalWhenHeld:
    """A UIO's lock that raises SIGUSR1 in the main thread as soon as it
    holds it for the *nth* time there: a signal arriving inside a locked
    section (its handler runs at the next call there)."""

    def __init__(self, lock, nth):
        self.lock, self.nth, self.taken = lock, nth, 0

    def __enter__(self):
        self.lock.acquire()
        if threading.current_thread() is threading.main_thread():
            self.taken += 1
            if self.taken == self.nth:
                signal.raise_signal(signal.SIGUSR1)
        return self

    def __exit__(self, *exc_info):
        self.lock.release()


@pytest.mark.parametrize("where", ["entering a wait", "leaving a wait", "inside close"])
def test_close_from_a_signal_handler_while_the_lock_is_held(irq, where):
    """A signal handler that closes the device can run while this thread
    holds the object's lock (wait_irq() counting itself in or out, close()
    waking another thread's wait): close() took the same non-reentrant
    lock in the same thread, and the process hung for good.  In a child
    given 10 s."""
    u, fire, _ = irq
    fd = u.fileno()

    def body():
        signal.signal(signal.SIGUSR1, lambda *_: u.close())
        if where == "inside close":
            t = threading.Thread(target=lambda: pytest.raises(ValueError, u.wait_irq, 5))
            t.start()
            _wait_until(lambda: u._users == 1, "waited")
            u._lock = _SignalWhenHeld(u._lock, 1)
            u.close()
            t.join(10)
            assert not t.is_alive()
        elif where == "entering a wait":
            u._lock = _SignalWhenHeld(u._lock, 1)
            with pytest.raises(ValueError, match="closed"):
                u.wait_irq(5)
        else:
            fire(4)
            u._lock = _SignalWhenHeld(u._lock, 2)
            assert u.wait_irq(5) == 4
        assert u.closed
        with pytest.raises(OSError):
            os.fstat(fd)
        return 0

    _in_child_within(10, body)


# ---- opening -------------------------------------------------------------------

def test_a_uio_path_with_a_nul_byte_is_named(fake_sys):
    """UIO() passed its path to os.open as given: 'embedded null byte',
    naming neither the argument nor the path (open_device names it)."""
    fake_sys("uio0", "/dev/zero", [(0, PAGE, 0)])
    with pytest.raises(ValueError, match=r"NUL byte.*/dev/zero\\x00"):
        pymmapdev.UIO("/dev/zero\0")


def test_opening_a_uio_device_takes_no_controlling_terminal(irq):
    """UIO() opened its node without O_NOCTTY (open_device() has it): a tty
    listed as a UIO device (a hostile or odd sysfs) became the controlling
    terminal of a session leader that had none, which then gets its
    SIGHUP and job-control signals."""
    u, _, _ = irq

    def body():
        os.setsid()                             # a session with no terminal
        with pymmapdev.UIO(u.path):
            try:
                os.close(os.open("/dev/tty", os.O_RDWR))
            except OSError as exc:
                return 0 if exc.errno == errno.ENXIO else 3
            return 2                            # it became ours

    _in_child_within(10, body)


def test_a_symlink_planted_to_a_uio_device_is_refused(tmp_path, fake_sys):
    """UIO() followed a symlink another user planted in a sticky
    world-writable directory (/tmp): open_file/open_device refuse it as
    fs.protected_symlinks would, even with the sysctl off (the README)."""
    if os.geteuid() != 0:
        pytest.fail("needs root to plant a link owned by another user (CI runs as root)")
    fake_sys("uio0", "/dev/zero", [(0, PAGE, 0)])
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    link = sticky / "uio"
    os.symlink("/dev/zero", link)
    os.lchown(link, 65534, 65534)
    with pytest.raises(PermissionError, match="symlink") as info:
        pymmapdev.UIO(str(link))
    assert info.value.filename == str(link)


class _BytesPath:
    def __init__(self, path):
        self.path = path

    def __fspath__(self):
        return self.path


@pytest.mark.parametrize("kind", [str, os.fsencode, pathlib.Path,
                                  lambda p: _BytesPath(os.fsencode(p))])
def test_a_uio_path_may_be_str_bytes_or_pathlike(fake_sys, kind):
    """As os APIs and open_device() take them (the annotation said str or
    os.PathLike[str] only, so mypy refused UIO(b"/dev/uio0"))."""
    fake_sys("uio0", "/dev/zero", [(0, PAGE, 0)])
    with pymmapdev.UIO(kind("/dev/zero")) as u:
        assert (u.path, u.device) == ("/dev/zero", "uio0")


def test_a_driver_name_with_a_slash_is_looked_up(fake_sys, tmp_path, monkeypatch):
    """Any argument with a '/' was taken for a path: a driver whose name has
    one (any text is a name) could not be found by it.  A path is tried
    first, then the drivers' names."""
    d = fake_sys("uio0", "/dev/zero", [(0, PAGE, 0)])
    (d / "name").write_text("fpga/regs\n")
    dev = tmp_path / "dev"
    dev.mkdir()
    os.symlink("/dev/zero", dev / "uio0")
    monkeypatch.setattr(uio, "DEV", str(dev))
    with pymmapdev.UIO("fpga/regs") as u:
        assert (u.path, u.device, u.name) == (f"{dev}/uio0", "uio0", "fpga/regs")


@pytest.mark.parametrize("text", ["/nonexistent-pymmapdev/uio", "no-such-driver",
                                  "bad/name\nline"])
def test_neither_a_path_nor_a_driver_name_is_named(fake_sys, text):
    fake_sys("uio0", "/dev/zero", [(0, PAGE, 0)])
    with pytest.raises(FileNotFoundError) as info:
        pymmapdev.UIO(text)
    message = str(info.value)
    assert repr(text) in message and "no UIO device is named" in message, message
    assert "uio0 (fake)" in message and "\n" not in message, message


def test_a_node_sysfs_does_not_list_is_refused_not_guessed(fake_sys):
    """With no /sys/class/uio entry whose dev is the node's, UIO took
    uio<minor> for its sysfs name: another device's maps (or none), and
    map() mapped them through this node."""
    d = fake_sys("uio0", "/dev/zero", [(0, PAGE, 0)])
    (d / "dev").write_text("1:99\n")
    fake_sys("uio5", "/dev/null", [(0, 2 * PAGE, 0)])       # /dev/zero's minor is 5
    fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError) as info:
        pymmapdev.UIO("/dev/zero")
    assert info.value.errno == errno.ENODEV and info.value.filename == "/dev/zero"
    assert "1:5" in str(info.value) and "/class/uio" in str(info.value), str(info.value)
    assert len(os.listdir("/proc/self/fd")) == fds                # nothing left open


def test_info_of_a_relative_uio_path_without_a_slash(fake_sys, tmp_path, monkeypatch, capsys):
    """info stat()s its argument as a path, then handed it to UIO(), which
    takes text without a '/' for a driver's name: 'info zero' in the
    directory holding a UIO node 'zero' said no UIO device is named so."""
    fake_sys("uio0", "/dev/zero", [(0, PAGE, 0)])
    os.symlink("/dev/zero", tmp_path / "zero")
    monkeypatch.chdir(tmp_path)
    from pymmapdev import cli
    assert cli.main(["info", "zero"]) == 0, capsys.readouterr().err
    assert "kind:      UIO device uio0" in capsys.readouterr().out


def test_uio_errors_name_a_path_escaped(fake_sys, tmp_path):
    """UIO's ValueErrors (and the IndexError of a map it has not) put the
    path in their words as given: a newline in it broke the message onto
    two lines, where its OSErrors, naming it as filename, show it as repr()
    does.  Now they show it so too, and so does repr(UIO)."""
    fake_sys("uio0", "/dev/zero", [(0, PAGE, PAGE)])
    path = str(tmp_path / "a\nzero")
    os.symlink("/dev/zero", path)
    other = str(tmp_path / "a\nnull")
    os.symlink("/dev/null", other)
    refused = []
    with pymmapdev.UIO(path, readonly=True) as u:
        for call in (lambda: u.map(0), lambda: u.map(1), lambda: u.map(0, readonly=False),
                     u.enable_irq):
            with pytest.raises((ValueError, IndexError)) as info:
                call()
            refused.append(info.value)
        shown = repr(u)
    with pytest.raises(ValueError) as closed:
        u.wait_irq(0)
    with pytest.raises(ValueError) as not_uio:
        pymmapdev.UIO(other)
    for exc, p in [*((e, path) for e in refused), (closed.value, path), (not_uio.value, other)]:
        assert repr(p) in str(exc) and "\n" not in str(exc), exc
    assert repr(path) in shown and "\n" not in shown, shown


@pytest.mark.parametrize("kind", [pathlib.Path, lambda p: _BytesPath(os.fsencode(p))])
def test_a_pathlike_without_a_slash_is_a_path_not_a_name(fake_sys, tmp_path, monkeypatch,
                                                         kind):
    """An os.PathLike is a path, whatever its text: UIO(Path("zero")) in
    the directory holding the node 'zero' was looked up as a driver's name
    (no '/' in its text) and raised 'no UIO device is named'; and a
    driver's name equal to it took another device."""
    fake_sys("uio0", "/dev/zero", [(0, PAGE, 0)])
    named = fake_sys("uio1", "/dev/null", [(0, PAGE, 0)])
    (named / "name").write_text("zero\n")           # a driver named as the node
    os.symlink("/dev/zero", tmp_path / "zero")
    dev = tmp_path / "dev"
    dev.mkdir()
    os.symlink("/dev/null", dev / "uio1")
    monkeypatch.setattr(uio, "DEV", str(dev))
    monkeypatch.chdir(tmp_path)
    with pymmapdev.UIO(kind("zero")) as u:
        assert (u.path, u.device) == ("zero", "uio0")
    with pytest.raises(FileNotFoundError) as info:
        pymmapdev.UIO(kind("uio1"))                  # a path, not /dev/uio1
    assert info.value.filename == "uio1"
    with pymmapdev.UIO("zero") as u:                 # text: still a driver's name
        assert u.device == "uio1"


def test_an_interrupt_after_every_async_wait_is_over_is_kept_for_the_next(irq):
    """The loop's reader read the count whenever the descriptor polled
    readable, even once every wait had its answer (a task cancelled by a
    callback queued before the reader's turn, e.g. call_soon_threadsafe(
    task.cancel) from another thread): nobody got the count, and the next
    wait slept past the interrupt it should have returned at once."""
    u, fire, _ = irq
    slave = u.fileno()

    async def main():
        task = asyncio.create_task(u.wait_irq_async(30))
        await asyncio.sleep(0.05)                       # its reader is registered
        asyncio.get_running_loop().call_soon(task.cancel)   # before the reader's turn
        fire(11)
        select.select([slave], [], [], 5)               # the pty delivered it
        await asyncio.sleep(0)
        with pytest.raises(asyncio.CancelledError):
            await task
        return await u.wait_irq_async(2)

    assert asyncio.run(main()) == 11
    assert u.wait_irq(0) is None                        # and only once


def test_a_close_inside_map_does_not_free_the_descriptor_it_maps(fake_sys):
    """map() handed the descriptor's number to the Mapping constructor,
    which then asked readonly's __bool__: one that closed the UIO freed the
    number, the next open took it, and map() mapped that file as the
    device (here a memfd of b'X's instead of /dev/zero's zeros)."""
    fake_sys("uio0", "/dev/zero", [(0, PAGE, 0)])
    u = pymmapdev.UIO("/dev/zero")
    number = u.fileno()
    opened = []

    class ClosesTheDevice:
        def __bool__(self):
            u.close()
            for _ in range(number + 1):        # the lowest free numbers, up to it
                fd = os.memfd_create("other")
                os.write(fd, b"X" * PAGE)
                opened.append(fd)
                if fd == number:
                    break
            return False

    try:
        with u.map(0, readonly=ClosesTheDevice()) as m:
            assert m[0:4] == bytes(4)
    finally:
        for fd in opened:
            os.close(fd)
    assert u.closed and number not in opened
    with pytest.raises(OSError):            # closed once map() was done with it
        os.fstat(number)
