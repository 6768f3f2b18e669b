"""The module's lifetime: parameters, sysfs, several devices, unload refused
while in use, load/unload cycles."""
import ctypes
import errno
import mmap
import os
import signal
import subprocess

import pytest

import pymmapdev

from . import devlib, kernel_log

pytestmark = pytest.mark.device

PAGE = devlib.PAGE


def test_sysfs_attributes(fd):
    assert devlib.sysfs("size") == devlib.DEFAULT_SIZE
    base = devlib.sysfs("maps")
    with pymmapdev.open_device() as m:
        assert devlib.sysfs("maps") == base + 1
        with pymmapdev.open_device(offset=PAGE, size=PAGE):
            assert devlib.sysfs("maps") == base + 2
        assert devlib.sysfs("maps") == base + 1
        m.write(0, b"x")
    assert devlib.sysfs("maps") == base
    modes = {attr: os.stat(f"{devlib.SYSFS}/mmapdev0/{attr}").st_mode & 0o777
             for attr in ("size", "maps", "events")}
    assert modes == {"size": 0o444, "maps": 0o400, "events": 0o400}


def test_maps_counts_split_and_fork(fd):
    base = devlib.sysfs("maps")
    addr = devlib.raw_mmap(fd, 3 * PAGE, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED)
    assert devlib.sysfs("maps") == base + 1
    devlib.raw_munmap(addr + PAGE, PAGE)              # a hole: two VMAs remain
    assert devlib.sysfs("maps") == base + 2
    pid = os.fork()
    if pid == 0:   # the child's copies of every VMA count too
        os._exit(0 if devlib.sysfs("maps") == 2 * (base + 2) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert devlib.sysfs("maps") == base + 2
    devlib.raw_munmap(addr, PAGE)
    devlib.raw_munmap(addr + 2 * PAGE, PAGE)
    assert devlib.sysfs("maps") == base


def test_maps_counts_adjacent_mappings(fd):
    """Two mmap() calls that place consecutive device pages side by side
    stay two VMAs and count twice: the module counts a new mapping when it
    exists (->mmap, or ->mapped on mmap_prepare kernels, which the core
    skips for a VMA merged into its neighbour; ours must never merge)."""
    base = devlib.sysfs("maps")
    rw = mmap.PROT_READ | mmap.PROT_WRITE
    addr = devlib.raw_mmap(fd, 2 * PAGE, rw, mmap.MAP_SHARED)
    devlib.raw_munmap(addr + PAGE, PAGE)                   # room for the second
    second = devlib.libc.mmap(addr + PAGE, PAGE, rw, mmap.MAP_SHARED | 0x100000,  # NOREPLACE
                              fd, PAGE)
    assert second == addr + PAGE
    assert devlib.sysfs("maps") == base + 2
    os.pwrite(fd, b"neighbours", PAGE - 5)                 # spans both mappings
    assert ctypes.string_at(addr + PAGE - 5, 10) == b"neighbours"
    with open("/proc/self/maps") as f:
        starts = [int(line.split("-", 1)[0], 16) for line in f]
    assert addr in starts and addr + PAGE in starts        # two VMAs, not one
    devlib.raw_munmap(addr, 2 * PAGE)
    assert devlib.sysfs("maps") == base


def test_parameters_visible(fd):
    params = "/sys/module/mmapdev/parameters"
    values = {name: open(f"{params}/{name}").read().strip() for name in os.listdir(params)}
    assert values == {"devices": "1", "size": str(devlib.DEFAULT_SIZE), "mode": "384",
                      "heartbeat_ms": "0", "uio": "N"}    # 384 == 0o600


def test_rmmod_refused_while_open_or_mapped(kmod):
    fd = os.open(devlib.DEV, os.O_RDWR | os.O_CLOEXEC)
    m = mmap.mmap(fd, PAGE, mmap.MAP_SHARED)
    try:
        with pytest.raises(OSError) as exc:
            kmod.unload()
        assert exc.value.errno == errno.EAGAIN    # delete_module: refcount > 0
        proc = subprocess.run(["rmmod", "mmapdev"], capture_output=True, text=True)
        assert proc.returncode != 0 and "in use" in proc.stderr
        os.close(fd)
        fd = -1
        # the mapping alone still pins the module
        with pytest.raises(OSError) as exc:
            kmod.unload()
        assert exc.value.errno == errno.EAGAIN
        m[:5] = b"alive"
        assert devlib.loaded()
    finally:
        m.close()
        if fd >= 0:
            os.close(fd)
    kmod.unload()
    assert not devlib.loaded()
    assert not os.path.exists(devlib.DEV)
    assert not os.path.exists(f"{devlib.SYSFS}/mmapdev0")


def test_rmmod_refused_while_waiting(kmod):
    fd = os.open(devlib.DEV, os.O_RDWR | os.O_CLOEXEC)
    pid = devlib.fork_call(devlib.wait, fd, 0, 0, 30_000_000_000)
    os.close(fd)                                   # only the sleeper holds it now
    try:
        devlib.wait_in_wait(pid)
        with pytest.raises(OSError) as exc:
            kmod.unload()
        assert exc.value.errno == errno.EAGAIN
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    kmod.unload()


def test_load_unload_cycles(kmod):
    # 100 cycles; in each, unloading is refused while a user holds the
    # device mapped, and succeeds once it lets go.
    for i in range(100):
        kmod.reload(f"size={(i % 4 + 1) * PAGE}")
        fd = os.open(devlib.DEV, os.O_RDWR | os.O_CLOEXEC)
        try:
            assert devlib.get_info(fd).size == (i % 4 + 1) * PAGE
            # a fresh buffer is zeroed (vmalloc_user), whatever the last one held
            assert os.pread(fd, 8, 0) == bytes(8)
            m = mmap.mmap(fd, PAGE, mmap.MAP_SHARED)
        finally:
            os.close(fd)
        m[:8] = f"cycle{i:03d}".encode()
        with pytest.raises(OSError) as exc:
            kmod.unload()                        # the live mapping pins the module
        assert exc.value.errno == errno.EAGAIN and devlib.loaded()
        assert m[:8] == f"cycle{i:03d}".encode()
        m.close()
        kmod.unload()
        assert not os.path.exists(devlib.DEV)


def test_several_devices_with_params(kmod):
    kmod.reload("devices=3 size=10000")
    size = -(-10000 // PAGE) * PAGE                   # rounded up to pages
    maps = []
    try:
        for i in range(3):
            path = f"/dev/mmapdev{i}"
            m = pymmapdev.open_device(path)
            maps.append(m)
            assert m.size == size
            info = pymmapdev._core.device_info(m.fileno())
            assert (info["index"], info["size"]) == (i, size)
            assert devlib.sysfs("size", i) == size
            m.write(0, f"device {i}".encode())
        # separate buffers
        assert [m.read(0, 8) for m in maps] == [b"device 0", b"device 1", b"device 2"]
        assert not os.path.exists("/dev/mmapdev3")
        fd = os.open("/dev/mmapdev2", os.O_RDWR | os.O_CLOEXEC)
        try:
            with pytest.raises(OSError) as exc:
                devlib.raw_mmap(fd, size + PAGE, mmap.PROT_READ, mmap.MAP_SHARED)
            assert exc.value.errno == errno.EINVAL
        finally:
            os.close(fd)
    finally:
        for m in maps:
            m.close()


@pytest.mark.parametrize("params,message", [
    ("size=0", "size=0"),
    ("size=2147483648", "size=2147483648"),
    ("devices=0", "devices=0"),
    ("devices=65", "devices=65"),
    ("mode=666", "mode="),                  # decimal 666: the leading 0 forgotten
    ("mode=01777", "mode="),
])
def test_bad_parameters_refused(kmod, params, message):
    kmod.unload()
    with pytest.raises(OSError) as exc:
        kmod.load(params)
    assert exc.value.errno == errno.EINVAL
    assert not devlib.loaded()
    log = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    last = [line for line in log.splitlines() if "mmapdev:" in line][-1]
    assert message in last, last


def _meminfo(field):
    with open("/proc/meminfo") as f:
        for line in f:
            name, value = line.split(":")
            if name == field:
                return int(value.split()[0]) * 1024
    raise KeyError(field)


def _load_as_oom_victim(params):
    # Should the OOM killer run, this child is its victim, not the suite.
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")
    devlib.load(params)


def test_more_memory_than_available_refused(kmod):
    """devices x size beyond the memory available is refused with ENOMEM
    before anything is allocated.  Each buffer alone is small enough for
    vmalloc, so allocating them one after the other used to exhaust the
    memory and invoke the OOM killer (it killed the loader) instead."""
    kmod.unload()
    size = 256 << 20
    devices = min(64, _meminfo("MemAvailable") // size + 2)
    assert devices * size <= 64 << 30, "too much memory for this test"
    pid = devlib.fork_call(_load_as_oom_victim, f"devices={devices} size={size}")
    assert devlib.reap(pid, timeout=120) == errno.ENOMEM
    assert not devlib.loaded()
    log = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    last = [line for line in log.splitlines() if "mmapdev:" in line][-1]
    assert "available" in last, last


def test_size_rounded_up(kmod):
    kmod.reload("size=1")
    assert devlib.sysfs("size") == PAGE
    with pymmapdev.open_device() as m:
        assert m.size == PAGE


def test_missing_node_error():
    with pytest.raises(FileNotFoundError) as exc:
        pymmapdev.open_device("/dev/mmapdev9")
    assert "module" in str(exc.value)


def _sreclaimable_pinned(directory, want):
    """Files in a ramfs at *directory* until the memory counted as
    reclaimable slab grew by *want* bytes; returns how much it grew.

    Their inodes and dentries sit in reclaimable slab caches (so
    MemAvailable counts them) yet cannot be reclaimed while the files
    exist: memory the module's check counts but the allocator cannot
    have, as if someone took it between the check and the allocation."""
    base = _meminfo("SReclaimable")
    n = 0
    while _meminfo("SReclaimable") - base < want:
        assert n < 2_000_000, "ramfs files do not grow the reclaimable slab"
        for _ in range(10_000):
            os.mknod(os.path.join(directory, f"f{n}"))
            n += 1
    return _meminfo("SReclaimable") - base


def _mount(source, target, fstype):
    if devlib.libc.mount(source.encode(), target.encode(), fstype.encode(), 0, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype} on {target}: {os.strerror(err)}")


def _dmesg_count(text):
    log = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    return log.count(text)


def test_buffers_the_allocator_cannot_give_fail_with_enomem(kmod, tmp_path, kernel_log_clean):
    """Buffers that pass the memory check but that the allocator cannot
    satisfy (memory taken after the check) make the load fail with ENOMEM.
    A plain GFP_KERNEL vmalloc never fails page by page: it invoked the
    OOM killer (which killed the loader) with the module's memory held.

    The failed vmalloc leaves memory at its edge; the kernel's teardown of
    the failed load (free_module() splitting the module's text pages) may
    then need a page before that memory is back, and invoke the OOM killer
    itself, which kills the loader (7.3 under a loaded host, now and
    then).  That is the kernel's, and it comes after our message: an OOM
    before it, during our allocation, is what this test fails on."""
    kmod.unload()
    want = 320 << 20
    assert _meminfo("MemAvailable") > 2 * want, "the VM is too small for this test (1 GiB)"
    _mount("ramfs", str(tmp_path), "ramfs")
    try:
        pinned = _sreclaimable_pinned(str(tmp_path), want)
        # What the allocator can really give is about MemAvailable - pinned
        # plus what MemAvailable holds back: the gap between the high and
        # min watermarks and the low watermark it deducts from reclaimable
        # memory (with THP's min_free_kbytes, ~80 MiB on a 1 GiB VM).  So
        # MemAvailable - pinned / 2 asks for ~80 MiB more than there is.
        size = (_meminfo("MemAvailable") - pinned // 2) // PAGE * PAGE
        assert 0 < size <= 1 << 30, size
        ooms = _dmesg_count("invoked oom-killer")
        failure = f"{kernel_log.ALLOCATION_FAILED}{size} bytes"
        kernel_log_clean.oom_after = failure
        pid = devlib.fork_call(_load_as_oom_victim, f"size={size}")
        # Blocking: a polling parent would fault its pages back in while
        # the allocation holds nearly all memory.
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        log = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
        failed_at = log.rfind(failure)
        what = f"size={size}: exit {code} ({pinned >> 20} MiB pinned)"
        assert failed_at >= 0, f"{what}: the allocation did not fail"
        assert log[:failed_at].count("invoked oom-killer") == ooms, \
            f"{what}: the OOM killer ran during the module's allocation"
        if code == -signal.SIGKILL:     # the teardown's OOM, see above
            assert "invoked oom-killer" in log[failed_at:], what
        else:
            assert code == errno.ENOMEM, what
        assert not devlib.loaded()
    finally:
        if devlib.libc.umount2(str(tmp_path).encode(), 0) != 0:
            raise OSError(ctypes.get_errno(), f"umount {tmp_path}")
