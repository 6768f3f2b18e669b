"""uio=1: device 0's buffer as a UIO device (kmod/uio.c) through
pymmapdev.UIO: its maps, the heartbeat as its interrupt (counted with
wait_irq, masked and unmasked with irqcontrol), and the module's rules
(shared mappings only, inside the buffer) through the UIO path too."""
import asyncio
import errno
import mmap
import os

import pytest

import pymmapdev

from . import devlib

pytestmark = pytest.mark.device

PAGE = devlib.PAGE
GUARD = 30


@pytest.fixture
def uio(kmod):
    kmod.reload("uio=1 heartbeat_ms=20")
    with pymmapdev.UIO("mmapdev") as u:
        yield u


def test_found_by_name_and_path(uio):
    assert uio.path.startswith("/dev/uio") and uio.name == "mmapdev"
    assert uio.version and not uio.closed
    with pymmapdev.UIO(uio.path) as same, pymmapdev.UIO(uio.device) as too:
        assert same.device == too.device == uio.device
    assert uio.maps == [(0, devlib.DEFAULT_SIZE, 0)]     # no kernel address shown


def test_map_shares_the_device_buffer(uio):
    with uio.map(0) as regs, pymmapdev.open_device() as dev:
        assert (regs.size, regs.offset, regs.kind) == (devlib.DEFAULT_SIZE, 0, "device")
        regs.write(2 * PAGE, b"via uio")
        assert dev.read(2 * PAGE, 7) == b"via uio"
        dev.write_u32(3 * PAGE, 0xC0FFEE)
        assert regs.read_words(3 * PAGE, 1).tolist() == [0xC0FFEE]
        counter = regs.read_u64(8)                       # the heartbeat writes there
        devlib.wait_until(lambda: regs.read_u64(8) > counter, GUARD, "a heartbeat")


def test_counts_heartbeat_interrupts(uio):
    uio.enable_irq()
    counts = []
    for _ in range(3):
        count = uio.wait_irq(timeout=GUARD)
        assert count is not None
        counts.append(count)
        uio.enable_irq()                      # the interrupt masks itself
    assert counts == sorted(counts) and len(set(counts)) == 3


def _beats_pass(regs, beats=2):
    """Return once *beats* heartbeats have begun after the call: all but
    the last have ended (raised their interrupt or not), as has any that
    was under way at the call."""
    start = regs.read_u64(8)                    # the heartbeat's counter
    devlib.wait_until(lambda: regs.read_u64(8) >= start + beats, GUARD,
                      f"{beats} heartbeats")


def test_masked_interrupt_and_timeouts(uio):
    """A heartbeat raises the interrupt only while it is unmasked, and
    masks it: the beats after it raise none, so a wait with a timeout
    returns None; nor do beats after disable_irq(); enable_irq() lets the
    next one through.  (No elapsed time asserted: the beats that came are
    what shows the waits saw no interrupt.)"""
    with uio.map(0) as regs:
        uio.enable_irq()
        assert uio.wait_irq(GUARD) is not None
        _beats_pass(regs)                       # masked by the one that fired
        assert uio.wait_irq(timeout=0.2) is None
        assert uio.wait_irq(0) is None
        uio.enable_irq()
        uio.disable_irq()
        _beats_pass(regs)
        uio.wait_irq(0)                         # one a beat raised between the two, if any
        _beats_pass(regs)
        assert uio.wait_irq(0.2) is None
        uio.enable_irq()
        assert uio.wait_irq(GUARD) is not None
    with pytest.raises(ValueError, match="timeout"):
        uio.wait_irq(-1)


def test_wait_irq_async_and_cancel(uio):
    async def main():
        uio.enable_irq()
        first = await uio.wait_irq_async(GUARD)
        task = asyncio.create_task(uio.wait_irq_async())
        await asyncio.sleep(0.1)                # masked: nothing comes
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await uio.wait_irq_async(0.1) is None
        uio.enable_irq()
        both = await asyncio.gather(uio.wait_irq_async(GUARD), uio.wait_irq_async(GUARD))
        return first, both

    first, both = asyncio.run(main())
    assert both[0] == both[1] > first


def test_close_ends_waits_under_way(uio):
    """close() wakes a wait_irq() blocked in another thread and a pending
    wait_irq_async() (ValueError); the descriptor goes when they have."""
    import threading
    fd = uio.fileno()
    got = []

    def waiter():
        try:
            got.append(uio.wait_irq(GUARD))     # masked: nothing comes
        except ValueError as exc:
            got.append(exc)

    async def main():
        task = asyncio.create_task(uio.wait_irq_async(GUARD))
        thread = threading.Thread(target=waiter)
        thread.start()
        await asyncio.sleep(0.2)
        uio.close()                     # not woken by it: None after GUARD
        with pytest.raises(ValueError, match="closed"):
            await task
        await asyncio.to_thread(thread.join, 2 * GUARD)

    asyncio.run(main())
    assert len(got) == 1 and isinstance(got[0], ValueError), got
    with pytest.raises(OSError):
        os.fstat(fd)


def test_no_interrupts_without_heartbeat(kmod):
    kmod.reload("uio=1")
    with pymmapdev.UIO("mmapdev") as u:
        u.enable_irq()
        assert u.wait_irq(0.1) is None


def test_bounds_and_shared_only_through_uio(uio):
    fd = uio.fileno()
    rw = mmap.PROT_READ | mmap.PROT_WRITE
    for length, flags, offset, what in [
            (PAGE, mmap.MAP_PRIVATE, 0, "private"),
            (devlib.DEFAULT_SIZE + PAGE, mmap.MAP_SHARED, 0, "past the buffer"),
            (PAGE, mmap.MAP_SHARED, PAGE, "map 1: none")]:
        with pytest.raises(OSError) as exc:
            devlib.raw_mmap(fd, length, rw, flags, offset)
        assert exc.value.errno == errno.EINVAL, what
    addr = devlib.raw_mmap(fd, devlib.DEFAULT_SIZE, rw, mmap.MAP_SHARED)   # exactly fits
    devlib.raw_munmap(addr, devlib.DEFAULT_SIZE)
    with pytest.raises(IndexError, match=f"'{uio.path}' has no map 1 \\(its maps: 0\\)"):
        uio.map(1)


def test_mappings_counted_and_module_pinned(uio, kmod):
    base = devlib.sysfs("maps")
    m = uio.map(0)
    assert devlib.sysfs("maps") == base + 1
    with pytest.raises(OSError):
        kmod.unload()                         # an open /dev/uioN pins the module
    uio.close()
    with pytest.raises(OSError):
        kmod.unload()                         # ... and so does a mapping of it
    m.close()
    assert devlib.sysfs("maps") == base
    kmod.unload()


def test_errors(kmod):
    kmod.reload("")
    with pytest.raises(FileNotFoundError, match="no UIO device is named 'mmapdev'"):
        pymmapdev.UIO("mmapdev")
    with pytest.raises(ValueError, match="'/dev/mmapdev0' is not a UIO device"):
        pymmapdev.UIO("/dev/mmapdev0")
    kmod.reload("uio=1")
    u = pymmapdev.UIO("mmapdev")
    u.close()
    with pytest.raises(ValueError, match="closed"):
        u.wait_irq(0)
    with pytest.raises(ValueError, match="closed"):
        u.map(0)
    assert os.path.exists(u.path)


def test_cli_info(uio, capsys):
    from pymmapdev import cli
    assert cli.main(["info", uio.path]) == 0
    out = capsys.readouterr().out
    assert f"kind:      UIO device {uio.device}" in out and "name:      mmapdev" in out
    assert f"map 0:     {devlib.DEFAULT_SIZE} bytes at 0x0" in out


def test_interrupt_loop_example(kmod):
    kmod.reload("uio=1 heartbeat_ms=50")
    example = os.path.join(devlib.REPO, "examples", "uio_irq.py")
    lines, returncode, err = devlib.lines_then_ctrl_c(devlib.PYTHON + [example], 4)
    assert returncode == 0 and "Traceback" not in err, err
    assert lines[0].startswith("/dev/uio") and "mmapdev" in lines[0]
    counts = [int(line.split()[1].rstrip(":")) for line in lines[1:]]
    assert all(line.startswith("interrupt ") for line in lines[1:]), lines
    assert counts == sorted(counts) and len(set(counts)) == 3
