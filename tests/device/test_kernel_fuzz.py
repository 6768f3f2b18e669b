"""A bounded randomized fuzzer of the module's user interface (issue 5,
item 6): mmap/mremap/munmap, pread/pwrite/lseek and every ioctl with random
arguments, checked against a model.  Nothing outside the buffer may ever be
mapped, every byte read must match the model, and every failure must carry
the errno kmod/README.md documents.  The kernel log check (conftest) catches
oopses and warnings.

MMAPDEV_FUZZ_OPS (default 600) and MMAPDEV_FUZZ_SEED change the run; the
seed is in the test id, so a failure can be replayed.
"""
import ctypes
import errno
import mmap
import os
import random
import time

import pytest

from . import devlib

pytestmark = pytest.mark.device

PAGE = devlib.PAGE
SIZE = devlib.DEFAULT_SIZE
OPS = int(os.environ.get("MMAPDEV_FUZZ_OPS", "2000"))
SEEDS = [int(os.environ["MMAPDEV_FUZZ_SEED"])] if "MMAPDEV_FUZZ_SEED" in os.environ else [1, 2]

PROT_EXEC = 4
MAP_SHARED_VALIDATE = 3
MREMAP_MAYMOVE = 1
# Handled by the VFS before the driver sees them (FIOCLEX, FIONCLEX, FIONBIO,
# FIOASYNC, FIOQSIZE, FIFREEZE, FITHAW, FIGETBSZ, FIONREAD, FS_IOC_FIEMAP, FICLONE...).
VFS_IOCTLS = {0x5451, 0x5450, 0x5421, 0x5452, 0x5460, 0xC0045877, 0xC0045878, 0x2,
              0x541B, 0xC020660B, 0x40049409, 0x4020940D, 0xC018943A, 0x80086601, 0x40086602,
              0x80047801, 0x40047802}


class Fuzzer:
    def __init__(self, rng):
        self.rng = rng
        self.rw = os.open(devlib.DEV, os.O_RDWR | os.O_CLOEXEC)
        self.ro = os.open(devlib.DEV, os.O_RDONLY | os.O_CLOEXEC)
        self.model = bytearray(os.pread(self.rw, SIZE, 0))
        self.maps = []                        # (addr, length, offset, readable)
        self.ro_page = devlib.raw_mmap(-1, PAGE, mmap.PROT_READ,
                                       mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.counts = {}

    def close(self):
        for addr, length, _, _ in self.maps:
            devlib.raw_munmap(addr, length)
        devlib.raw_munmap(self.ro_page, PAGE)
        os.close(self.rw)
        os.close(self.ro)

    def note(self, what):
        self.counts[what] = self.counts.get(what, 0) + 1

    # ---- random values that like the edges ----

    def offset(self):
        r = self.rng
        return r.choice([0, PAGE, SIZE - PAGE, SIZE, SIZE + PAGE, r.randrange(0, SIZE, PAGE),
                         r.randrange(0, SIZE + 4 * PAGE), 1 << 40, (1 << 62),
                         r.randrange(0, SIZE, PAGE) + r.randrange(1, PAGE)])

    def length(self):
        r = self.rng
        return r.choice([0, 1, PAGE - 1, PAGE, 2 * PAGE, SIZE, SIZE + 1, SIZE + PAGE,
                         r.randrange(1, 8) * PAGE, r.randrange(1, SIZE + 1), 1 << 46])

    def word_offset(self):
        r = self.rng
        return r.choice([0, 4, SIZE - 4, SIZE - 2, SIZE, SIZE + 4, (1 << 64) - 4, 1 << 63,
                         r.randrange(0, SIZE, 4), r.randrange(0, SIZE), r.randrange(0, 1 << 64)])

    # ---- operations ----

    def op_mmap(self):
        r = self.rng
        length, offset = self.length(), self.offset()
        prot = r.choice([mmap.PROT_READ, mmap.PROT_READ | mmap.PROT_WRITE, mmap.PROT_WRITE,
                         0, mmap.PROT_READ | PROT_EXEC])
        flags = r.choice([mmap.MAP_SHARED, mmap.MAP_PRIVATE, MAP_SHARED_VALIDATE,
                          mmap.MAP_SHARED | mmap.MAP_POPULATE])
        readonly = r.random() < 0.3
        fd = self.ro if readonly else self.rw
        pages = -(-length // PAGE)
        ok = (length > 0 and offset % PAGE == 0 and flags != mmap.MAP_PRIVATE
              and offset // PAGE < SIZE // PAGE and pages <= SIZE // PAGE - offset // PAGE
              and not (readonly and prot & mmap.PROT_WRITE))
        try:
            addr = devlib.raw_mmap(fd, length, prot, flags, offset)
        except OSError as exc:
            noexec = prot & PROT_EXEC and exc.errno == errno.EPERM     # a noexec /dev
            assert not ok or noexec, f"mmap({length}, {prot}, {flags}, {offset}) refused: {exc}"
            allowed = {errno.EINVAL, errno.EACCES, errno.EOVERFLOW, errno.ENOMEM}
            if prot & PROT_EXEC:
                allowed.add(errno.EPERM)
            assert exc.errno in allowed, (length, prot, flags, offset, exc)
            self.note("mmap refused")
            return
        assert ok, f"mmap({length}, {prot}, {flags}, offset {offset}) accepted"
        length = pages * PAGE
        if prot & mmap.PROT_READ:
            self.check_view(addr, length, offset)
        if prot & mmap.PROT_WRITE and prot & mmap.PROT_READ:
            at = r.randrange(0, length)
            data = bytes([r.randrange(256)])
            ctypes.memmove(addr + at, data, 1)
            self.model[offset + at:offset + at + 1] = data
        self.maps.append((addr, length, offset, bool(prot & mmap.PROT_READ)))
        self.note("mmap ok")

    def check_view(self, addr, length, offset):
        for at in {0, length - 1, self.rng.randrange(0, length)}:
            got = ctypes.string_at(addr + at, 1)
            assert got == self.model[offset + at:offset + at + 1], (offset, at)

    def op_munmap(self):
        if not self.maps:
            return
        addr, length, offset, readable = self.maps.pop(self.rng.randrange(len(self.maps)))
        if readable:
            self.check_view(addr, length, offset)
        devlib.raw_munmap(addr, length)
        self.note("munmap")

    def op_mremap(self):
        if not self.maps:
            return
        i = self.rng.randrange(len(self.maps))
        addr, length, offset, readable = self.maps[i]
        new = self.rng.choice([length - PAGE, length, length + PAGE, 2 * length, PAGE])
        flags = self.rng.choice([0, MREMAP_MAYMOVE])
        if new <= 0:
            return
        try:
            moved = devlib.raw_mremap(addr, length, new, flags)
        except OSError as exc:
            assert new > length, f"mremap {length} -> {new} refused: {exc}"
            assert exc.errno == errno.EFAULT, exc
            self.note("mremap refused")
            return
        assert new <= length, f"mremap grew {length} -> {new}"
        self.maps[i] = (moved, new, offset, readable)
        if readable:
            self.check_view(moved, new, offset)
        self.note("mremap ok")

    def op_pread(self):
        pos, n = self.offset(), self.rng.choice([0, 1, 7, PAGE, 3 * PAGE + 5, SIZE])
        if pos >= 1 << 62:
            pos = SIZE + 3
        got = os.pread(self.rw, n, pos)
        assert got == bytes(self.model[pos:pos + n]), (pos, n)
        self.note("pread")

    def op_pwrite(self):
        pos, n = self.offset(), self.rng.choice([0, 1, 9, PAGE + 1, 2 * PAGE])
        if pos >= 1 << 62:
            pos = SIZE + 5
        data = self.rng.randbytes(n)
        try:
            done = os.pwrite(self.rw, data, pos)
        except OSError as exc:
            assert pos >= SIZE and n > 0 and exc.errno == errno.ENOSPC, (pos, n, exc)
            self.note("pwrite ENOSPC")
            return
        assert done == (0 if n == 0 else min(n, SIZE - pos)), (pos, n, done)
        self.model[pos:pos + done] = data[:done]
        self.note("pwrite")

    def op_lseek(self):
        target, whence = self.rng.choice([(self.offset(), os.SEEK_SET), (-1, os.SEEK_SET),
                                          (self.rng.randrange(-SIZE - 5, 5), os.SEEK_END),
                                          (self.rng.randrange(-100, 100), os.SEEK_CUR)])
        cur = os.lseek(self.rw, 0, os.SEEK_CUR)
        base = {os.SEEK_SET: 0, os.SEEK_CUR: cur, os.SEEK_END: SIZE}[whence]
        want = base + target
        try:
            assert os.lseek(self.rw, target, whence) == want
            assert 0 <= want <= SIZE
        except OSError as exc:
            assert not 0 <= want <= SIZE and exc.errno == errno.EINVAL, (target, whence, exc)
            assert os.lseek(self.rw, 0, os.SEEK_CUR) == cur
        self.note("lseek")

    def op_ioctl(self):
        r = self.rng
        kind = r.choice(["info", "wait", "wake", "unknown"])
        bad_ptr = r.choice([None, None, None, 0, 8, (1 << 47) - 8, 0xFFFFFFFFFFFF0000,
                            self.ro_page])
        if kind == "unknown":
            request = r.choice([devlib._ioc(r.randrange(4), r.randrange(256), r.randrange(64)),
                                devlib._ioc(r.randrange(4), r.randrange(3), r.randrange(1, 64)),
                                r.randrange(1 << 32)])
            if request in (devlib.IOC_GET_INFO, devlib.IOC_WAIT, devlib.IOC_WAKE) or \
                    request in VFS_IOCTLS:
                return
            self.expect(request, devlib.Info() if bad_ptr is None else bad_ptr, {errno.ENOTTY})
            return
        if kind == "info":
            # the read-only page is a valid source but not a valid destination
            self.expect(devlib.IOC_GET_INFO, devlib.Info() if bad_ptr is None else bad_ptr,
                        {0} if bad_ptr is None else {errno.EFAULT})
            return
        if bad_ptr is not None and bad_ptr != self.ro_page:
            request = devlib.IOC_WAIT if kind == "wait" else devlib.IOC_WAKE
            self.expect(request, bad_ptr, {errno.EFAULT})
            return
        offset = self.word_offset()
        valid = offset % 4 == 0 and offset <= SIZE - 4
        if kind == "wake":
            flags = r.choice([0, 0, 0, 1, 1 << 31])
            self.expect(devlib.IOC_WAKE, devlib.Wake(offset, r.randrange(1 << 32), flags),
                        {0} if valid and flags == 0 else {errno.EINVAL})
            return
        flags = r.choice([0, 0, devlib.WAIT_ABSTIME, 2, 1 << 31])
        word = int.from_bytes(self.model[offset:offset + 4], "little") if valid else 0
        expected = r.choice([word, word ^ 1, r.randrange(1 << 32)])
        # Short or past deadlines only: a wrong model must show as a wrong
        # errno, never as a hang.  (Long and infinite waits: test_wait.py.)
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        if flags & devlib.WAIT_ABSTIME:
            timeout = r.choice([0, 1, now - 1, now + 1_000_000])
        else:
            timeout = r.choice([0, 1000, 1_000_000])
        if not valid or flags & ~devlib.WAIT_ABSTIME:
            want = {errno.EINVAL}
        else:
            want = {0} if expected != word else {errno.ETIMEDOUT}
        self.expect(devlib.IOC_WAIT, devlib.Wait(offset, expected, flags, timeout), want)

    def expect(self, request, arg, want):
        try:
            rc = devlib.ioctl(self.rw, request, arg)
            got = 0
            assert rc >= 0
        except OSError as exc:
            got = exc.errno
        assert got in want, (hex(request), arg, devlib.errno_name(got), want)
        self.note(f"ioctl {devlib.errno_name(got) if got else 'ok'}")

    def run(self, ops):
        table = [self.op_mmap] * 4 + [self.op_munmap, self.op_mremap] * 2 + [
            self.op_pread, self.op_pwrite, self.op_lseek] * 2 + [self.op_ioctl] * 5
        for _ in range(ops):
            self.rng.choice(table)()
            if len(self.maps) > 64:
                self.op_munmap()


@pytest.mark.parametrize("seed", SEEDS)
def test_fuzz_against_model(seed):
    base_maps = devlib.sysfs("maps")
    fuzzer = Fuzzer(random.Random(seed))
    try:
        fuzzer.run(OPS)
        assert devlib.sysfs("maps") == base_maps + len(fuzzer.maps)
        for addr, length, offset, readable in fuzzer.maps:
            if readable:
                assert ctypes.string_at(addr, length) == bytes(fuzzer.model[offset:offset + length])
    finally:
        fuzzer.close()
    fd = os.open(devlib.DEV, os.O_RDONLY | os.O_CLOEXEC)
    try:
        assert os.pread(fd, SIZE, 0) == fuzzer.model
    finally:
        os.close(fd)
    assert devlib.sysfs("maps") == base_maps
    print(f"seed {seed}: {sorted(fuzzer.counts.items())}")
