"""madvise() on a device mapping never takes the buffer away: after
MADV_DONTNEED (which zaps the page tables) and after any other advice,
reads return the buffer's bytes, including those another process wrote
after the advice, and writes reach every other mapping.

Each advice runs in a forked child: a module that cannot bring the pages
back kills its process with SIGBUS, which must show as a failing test, not
as a dead test runner."""
import ctypes
import mmap
import os

import pytest

import pymmapdev

from . import devlib

pytestmark = pytest.mark.device

PAGE = devlib.PAGE
libc = devlib.libc
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

# Linux's advice values (asm-generic/mman-common.h), newest included: a
# kernel that does not know one answers EINVAL, which is fine here.  Left
# out on purpose: MADV_HWPOISON (100) and MADV_SOFT_OFFLINE (101) inject
# memory failures, MADV_GUARD_INSTALL (102) asks for faults; taking the
# page away is what they are for.
ADVICE = {
    "NORMAL": 0, "RANDOM": 1, "SEQUENTIAL": 2, "WILLNEED": 3, "DONTNEED": 4,
    "FREE": 8, "REMOVE": 9, "DONTFORK": 10, "DOFORK": 11, "MERGEABLE": 12,
    "UNMERGEABLE": 13, "HUGEPAGE": 14, "NOHUGEPAGE": 15, "DONTDUMP": 16,
    "DODUMP": 17, "WIPEONFORK": 18, "KEEPONFORK": 19, "COLD": 20, "PAGEOUT": 21,
    "POPULATE_READ": 22, "POPULATE_WRITE": 23, "DONTNEED_LOCKED": 24,
    "COLLAPSE": 25, "GUARD_REMOVE": 103,
}


def madvise(addr, length, advice):
    if libc.madvise(addr, length, advice) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class Child:
    """A forked child running *func(to_parent, from_parent)* with a pipe
    each way; its verdict is its exit status (a signal shows as -N)."""

    def __init__(self, func):
        down_r, self._down = os.pipe()
        self._up, up_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            code = 1
            try:
                os.close(self._down)
                os.close(self._up)
                func(os.fdopen(up_w, "w", buffering=1), os.fdopen(down_r))
                code = 0
            except BaseException as exc:     # the parent prints it
                os.write(up_w, f"error {exc!r}\n".encode())
            finally:
                os._exit(code)
        os.close(down_r)
        os.close(up_w)
        self.out = os.fdopen(self._up)
        self.to = os.fdopen(self._down, "w", buffering=1)

    def expect(self, line):
        got = self.out.readline().strip()
        if got != line:
            self.finish()    # raises with the child's status
            raise AssertionError(f"child said {got!r}, expected {line!r}")

    def finish(self):
        status = devlib.reap(self.pid)
        rest = self.out.read()
        self.out.close()
        self.to.close()
        if status != 0:
            raise AssertionError(f"child exited with {status} "
                                 f"({'SIGBUS' if status == -7 else 'see below'}): {rest}")


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def fill(fd, offset, length, seed):
    data = bytes((seed + i) % 251 for i in range(length))
    os.pwrite(fd, data, offset)
    return data


@pytest.mark.parametrize("offset", [0, 2 * PAGE])
def test_dontneed_stdlib_mmap(fd, offset):
    """Python's own mmap: MADV_DONTNEED, then the child reads what was
    there, reads what the parent writes afterwards through its own
    mapping, and writes bytes the parent sees."""
    size = 3 * PAGE
    before = fill(fd, offset, size, 7)
    after = b"written by the parent after the advice"
    mine = b"written by the child after the advice"

    def child(up, down):
        m = mmap.mmap(fd, size, mmap.MAP_SHARED, offset=offset)
        check(m[:size] == before, "bytes differ before the advice")
        m.madvise(mmap.MADV_DONTNEED)
        # The kernel itself reading the zapped pages (copy_from_user in
        # write(2)) faults them back in as well.
        r, w = os.pipe()
        check(os.write(w, memoryview(m)[:64]) == 64 and os.read(r, 64) == before[:64],
              "write(2) from the mapping after MADV_DONTNEED")
        os.close(r)
        os.close(w)
        check(m[:size] == before, "bytes lost after MADV_DONTNEED")
        m.madvise(mmap.MADV_DONTNEED, PAGE, PAGE)      # one page of it
        up.write("advised\n")
        down.readline()
        check(m[PAGE + 8:PAGE + 8 + len(after)] == after,
              f"the parent's write is not seen: {m[PAGE + 8:PAGE + 8 + len(after)]!r}")
        m[2 * PAGE:2 * PAGE + len(mine)] = mine
        m.close()

    with mmap.mmap(fd, size, mmap.MAP_SHARED, offset=offset) as ours:
        c = Child(child)
        c.expect("advised")
        ours[PAGE + 8:PAGE + 8 + len(after)] = after
        c.to.write("go\n")
        c.finish()
        assert ours[2 * PAGE:2 * PAGE + len(mine)] == mine
    assert os.pread(fd, len(mine), offset + 2 * PAGE) == mine


def test_dontneed_raw_mapping_then_fork(fd):
    """A ctypes mapping at a page offset: after MADV_DONTNEED reads and
    writes work, and so they do in a child forked afterwards (which gets
    no copy of the zapped page tables)."""
    size, offset = 4 * PAGE, PAGE
    before = fill(fd, offset, size, 11)

    def child(up, down):
        addr = devlib.raw_mmap(fd, size, mmap.PROT_READ | mmap.PROT_WRITE,
                               mmap.MAP_SHARED, offset)
        maps = devlib.sysfs("maps")
        madvise(addr, size, ADVICE["DONTNEED"])
        # get_user_pages() (here through /proc/self/mem, as a debugger or
        # process_vm_readv would) faults the pages back in too.
        with open("/proc/self/mem", "rb", buffering=0) as mem:
            check(os.pread(mem.fileno(), size, addr) == before,
                  "/proc/self/mem after MADV_DONTNEED")
        madvise(addr, size, ADVICE["DONTNEED"])
        check(ctypes.string_at(addr, size) == before, "bytes lost after MADV_DONTNEED")
        madvise(addr, size, ADVICE["DONTNEED"])
        ctypes.memmove(addr + 3 * PAGE, b"child", 5)
        pid = devlib.fork_call(lambda: check(
            ctypes.string_at(addr + 3 * PAGE, 5) == b"child", "grandchild"))
        check(devlib.reap(pid) == 0, "a child forked after the advice lost the bytes")
        check(devlib.sysfs("maps") == maps, "the advice changed the mapping count")
        devlib.raw_munmap(addr, size)

    Child(child).finish()
    assert os.pread(fd, 5, offset + 3 * PAGE) == b"child"


def test_every_advice_keeps_the_pages(fd):
    """Whatever advice a process gives (accepted or refused), the mapping
    keeps reading the buffer and writing into it."""
    size = 2 * PAGE
    fill(fd, 0, size, 3)

    def child(up, down):
        addr = devlib.raw_mmap(fd, size, mmap.PROT_READ | mmap.PROT_WRITE,
                               mmap.MAP_SHARED)
        for n, (name, advice) in enumerate(ADVICE.items()):
            up.write(f"{name}\n")                # the last one named broke it
            expected = os.pread(fd, size, 0)
            try:
                madvise(addr, size, advice)
            except OSError:
                pass                             # refused: fine, if nothing broke
            check(ctypes.string_at(addr, size) == expected, f"MADV_{name}: bytes changed")
            stamp = f"after {name}".encode()
            ctypes.memmove(addr + n * 16 % size, stamp, len(stamp))
            check(os.pread(fd, len(stamp), n * 16 % size) == stamp,
                  f"MADV_{name}: a write through the mapping did not reach the buffer")
        up.write("done\n")
        devlib.raw_munmap(addr, size)

    c = Child(child)
    names = []
    for line in c.out:
        names.append(line.strip())
        if names[-1] == "done" or names[-1].startswith("error"):
            break
    try:
        c.finish()
    except AssertionError as exc:
        raise AssertionError(f"after MADV_{names[-1]}: {exc}") from None
    assert names[-1] == "done", names


def test_dontneed_through_pymmapdev(fd):
    """The package's own madvise: the device mapping keeps working."""
    data = fill(fd, 0, 64, 5)

    def child(up, down):
        with pymmapdev.open_device() as m:
            m.madvise(pymmapdev.MADV_DONTNEED)
            check(m.read(0, 64) == data, "bytes lost after MADV_DONTNEED")
            m.write(64, b"still writable")

    Child(child).finish()
    assert os.pread(fd, 14, 64) == b"still writable"
