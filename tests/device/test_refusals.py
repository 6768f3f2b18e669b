"""Everything the module must refuse, with the documented errno
(kmod/README.md, "Errors").  Raw syscalls, so the errno is the kernel's."""
import ctypes
import errno
import mmap
import os

import pytest

from . import devlib

pytestmark = pytest.mark.device

PAGE = devlib.PAGE
SIZE = devlib.DEFAULT_SIZE
RW = mmap.PROT_READ | mmap.PROT_WRITE


def _errno_of(func, *args):
    with pytest.raises(OSError) as exc:
        func(*args)
    return exc.value.errno


# ---- mmap ----

def test_map_private_refused(fd):
    assert _errno_of(mmap.mmap, fd, PAGE, mmap.MAP_PRIVATE, RW) == errno.EINVAL
    assert _errno_of(devlib.raw_mmap, fd, PAGE, mmap.PROT_READ, mmap.MAP_PRIVATE) == errno.EINVAL
    ro = os.open(devlib.DEV, os.O_RDONLY | os.O_CLOEXEC)
    try:
        assert _errno_of(devlib.raw_mmap, ro, PAGE, mmap.PROT_READ,
                         mmap.MAP_PRIVATE) == errno.EINVAL
    finally:
        os.close(ro)


@pytest.mark.parametrize("length,offset", [
    (PAGE, SIZE),                  # starts at the end
    (2 * PAGE, SIZE - PAGE),       # runs past the end
    (SIZE + PAGE, 0),              # longer than the buffer
    (PAGE, 1 << 40),               # far away
    (PAGE, (1 << 63) - PAGE),      # pgoff arithmetic must not wrap
])
def test_range_past_end_refused(fd, length, offset):
    assert _errno_of(devlib.raw_mmap, fd, length, RW, mmap.MAP_SHARED, offset) in (
        errno.EINVAL, errno.EOVERFLOW)


def test_exact_fit_accepted(fd):
    addr = devlib.raw_mmap(fd, PAGE, RW, mmap.MAP_SHARED, SIZE - PAGE)
    devlib.raw_munmap(addr, PAGE)
    addr = devlib.raw_mmap(fd, SIZE, RW, mmap.MAP_SHARED, 0)
    devlib.raw_munmap(addr, SIZE)


def test_writable_map_of_readonly_open_refused():
    ro = os.open(devlib.DEV, os.O_RDONLY | os.O_CLOEXEC)
    try:
        assert _errno_of(mmap.mmap, ro, PAGE, mmap.MAP_SHARED, RW) == errno.EACCES
        # read-only shared is fine, and can never become writable
        addr = devlib.raw_mmap(ro, PAGE, mmap.PROT_READ, mmap.MAP_SHARED)
        try:
            assert _errno_of(devlib.raw_mprotect, addr, PAGE, RW) == errno.EACCES
        finally:
            devlib.raw_munmap(addr, PAGE)
    finally:
        os.close(ro)


def test_readonly_shared_map_sees_writes(fd):
    ro = os.open(devlib.DEV, os.O_RDONLY | os.O_CLOEXEC)
    try:
        m = mmap.mmap(ro, PAGE, mmap.MAP_SHARED, mmap.PROT_READ, offset=PAGE)
        os.pwrite(fd, b"visible", PAGE + 10)
        assert m[10:17] == b"visible"
        m.close()
    finally:
        os.close(ro)


def test_mremap_cannot_grow(fd):
    addr = devlib.raw_mmap(fd, 2 * PAGE, RW, mmap.MAP_SHARED)
    try:
        for flags in (0, 1):  # 1 = MREMAP_MAYMOVE
            assert _errno_of(devlib.raw_mremap, addr, 2 * PAGE, 3 * PAGE, flags) == errno.EFAULT
        # shrinking is allowed, and growing back is still refused
        assert devlib.raw_mremap(addr, 2 * PAGE, PAGE) == addr
        assert _errno_of(devlib.raw_mremap, addr, PAGE, 2 * PAGE, 1) == errno.EFAULT
        ctypes.memmove(addr, b"still mapped", 12)
        assert os.pread(fd, 12, 0) == b"still mapped"
    finally:
        devlib.raw_munmap(addr, 2 * PAGE)


def test_unaligned_offset_refused(fd):
    assert _errno_of(devlib.raw_mmap, fd, PAGE, RW, mmap.MAP_SHARED, 100) == errno.EINVAL


# ---- ioctl ----

def test_unknown_ioctl_enotty(fd):
    for request in (0x5401,                                   # TCGETS: isatty()
                    devlib._ioc(2, 0x7F, 32),                 # our magic, unknown nr
                    devlib._ioc(2, 0x00, 16),                 # GET_INFO nr, wrong size
                    devlib._ioc(3, 0x01, 24)):                # WAIT nr, wrong direction
        assert _errno_of(devlib.ioctl, fd, request, devlib.Info()) == errno.ENOTTY


@pytest.mark.parametrize("offset", [1, 2, 6, SIZE, SIZE - 2, SIZE + 4, 1 << 63, (1 << 64) - 4])
def test_bad_word_offset_einval(fd, offset):
    assert _errno_of(devlib.wait, fd, offset, 0, 0) == errno.EINVAL
    assert _errno_of(devlib.wake, fd, offset, 1) == errno.EINVAL


def test_last_word_is_valid(fd):
    os.pwrite(fd, bytes(4), SIZE - 4)
    assert _errno_of(devlib.wait, fd, SIZE - 4, 0, 0) == errno.ETIMEDOUT
    assert devlib.wake(fd, SIZE - 4) == 0


def test_unknown_flags_einval(fd):
    for flags in (2, 1 << 31, 0xFFFFFFFF):
        assert _errno_of(devlib.wait, fd, 0, 0, 0, flags) == errno.EINVAL
    for flags in (1, 2, 1 << 31):
        assert _errno_of(devlib.wake, fd, 0, 1, flags) == errno.EINVAL


def test_wait_needs_read_access(fd):
    """WAIT tells whether a word holds a value: a read of the buffer, which
    a write-only open may not do (it cannot read() or mmap() either).  It
    was a 32-bit read oracle: 0 when the guess was wrong, ETIMEDOUT when
    right.  WAKE and GET_INFO read nothing of the buffer: still allowed."""
    os.pwrite(fd, (0x5EC2E7).to_bytes(4, "little"), 64)
    wo = os.open(devlib.DEV, os.O_WRONLY | os.O_CLOEXEC)
    try:
        for guess in (0, 0x5EC2E7):
            assert _errno_of(devlib.wait, wo, 64, guess, 0) == errno.EBADF
        assert devlib.wake(wo, 64) == 0
        assert devlib.get_info(wo).size == SIZE
    finally:
        os.close(wo)


def test_bad_pointer_efault(fd):
    for request in (devlib.IOC_GET_INFO, devlib.IOC_WAIT, devlib.IOC_WAKE):
        for ptr in (0, 8, (1 << 47) - 8, 0xFFFFFFFFFFFFF000):
            assert _errno_of(devlib.ioctl, fd, request, ptr) == errno.EFAULT


def test_get_info_into_readonly_memory_efault(fd):
    """copy_to_user() into a read-only page fails cleanly."""
    ro = devlib.raw_mmap(-1, PAGE, mmap.PROT_READ, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        assert _errno_of(devlib.ioctl, fd, devlib.IOC_GET_INFO, ro) == errno.EFAULT
    finally:
        devlib.raw_munmap(ro, PAGE)


# ---- read/write ----

def test_bad_buffer_pointers_efault(fd):
    devlib.libc.read.argtypes = devlib.libc.write.argtypes = [
        ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    devlib.libc.read.restype = devlib.libc.write.restype = ctypes.c_ssize_t
    for call in (devlib.libc.read, devlib.libc.write):
        os.lseek(fd, 0, os.SEEK_SET)
        assert call(fd, 8, 16) == -1
        assert ctypes.get_errno() == errno.EFAULT


def test_write_on_readonly_open_ebadf():
    ro = os.open(devlib.DEV, os.O_RDONLY | os.O_CLOEXEC)
    try:
        assert _errno_of(os.write, ro, b"x") == errno.EBADF
    finally:
        os.close(ro)
