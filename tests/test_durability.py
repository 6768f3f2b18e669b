"""Nothing is lost when a writer is SIGKILLed in the middle of a stream.

- Every write it made before dying is in the file: the pages are the page
  cache's, not the process's.
- Every write it flushed is on disk: after the kill we evict the file's
  clean pages (POSIX_FADV_DONTNEED drops only clean ones), check with
  mincore() that the flushed range really left memory — so it was clean,
  i.e. written back — and read it again, now from the disk.
"""
import ctypes
import mmap
import os
import signal
import struct
import subprocess
import sys

from conftest import child_env

PAGE = mmap.PAGESIZE
RECORD = 64
PAGES = 64

WRITER = r"""
import os, struct, sys, pymmapdev
path, report = sys.argv[1], int(sys.argv[2])
RECORD, PAGES, PAGE = 64, 64, pymmapdev.PAGESIZE
per_page = PAGE // RECORD
with pymmapdev.open_file(path, PAGES * PAGE) as m:
    n = 0
    while True:
        slot = n % (PAGES * per_page)
        m.write(slot * RECORD, struct.pack("=QQ", n, n ^ 0x5A5A5A5A5A5A5A5A) + b"r" * 48)
        if n % per_page == per_page - 1 and n < PAGES * per_page // 2:
            m.flush(slot * RECORD - (per_page - 1) * RECORD, PAGE)   # this page is done
            os.write(report, struct.pack("=Q", n))                   # ... and durable
        n += 1
        if n == PAGES * per_page // 2 + 10:
            os.write(report, struct.pack("=Q", 2**64 - 1))          # written, not flushed
            while True:
                m.write(PAGES * PAGE - RECORD, struct.pack("=Q", n)); n += 1
"""


def records(data):
    for i in range(len(data) // RECORD):
        n, check = struct.unpack_from("=QQ", data, i * RECORD)
        yield i, n, check


def resident(path, length):
    """Which pages of the file's first *length* bytes are in the page cache."""
    import numpy   # only to get the address of a read-only mapping for ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), length, prot=mmap.PROT_READ)
    arr = numpy.frombuffer(mm, dtype=numpy.uint8)   # mapping it faults nothing in
    vec = (ctypes.c_ubyte * (length // PAGE))()
    rc = libc.mincore(ctypes.c_void_p(arr.ctypes.data), ctypes.c_size_t(length), vec)
    err = ctypes.get_errno()
    del arr
    mm.close()
    if rc != 0:
        raise OSError(err, "mincore")
    return [bool(v & 1) for v in vec]


def test_sigkilled_writer_loses_nothing(tmp_path):
    path = str(tmp_path / "stream")          # a disk file system, not tmpfs
    read_end, write_end = os.pipe()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, path, str(write_end)],
                              pass_fds=[write_end], env=child_env())
    os.close(write_end)
    flushed = []
    with os.fdopen(read_end, "rb") as reports:
        while True:
            raw = reports.read(8)
            assert len(raw) == 8, "writer died before finishing its flushed part"
            (n,) = struct.unpack("=Q", raw)
            if n == 2**64 - 1:
                break
            flushed.append(n)
        writer.send_signal(signal.SIGKILL)   # mid-stream: it is still writing
        assert writer.wait(30) == -signal.SIGKILL

    per_page = PAGE // RECORD
    written_up_to = PAGES * per_page // 2 + 10      # records 0 .. this-1 were written
    with open(path, "rb") as f:
        data = f.read()
    # 1. every write before death is in the file (page cache)
    for i, n, check in records(data[:written_up_to * RECORD]):
        assert (n, check) == (i, i ^ 0x5A5A5A5A5A5A5A5A), f"record {i} lost"

    # 2. every flushed page is on disk
    flushed_bytes = (flushed[-1] + 1) * RECORD
    assert flushed_bytes == PAGES * PAGE // 2
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, flushed_bytes, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    still = resident(path, flushed_bytes)
    assert not any(still), f"flushed pages still dirty in memory: {still.count(True)}"
    with open(path, "rb") as f:
        again = f.read(flushed_bytes)       # read back from the disk
    for i, n, check in records(again):
        assert (n, check) == (i, i ^ 0x5A5A5A5A5A5A5A5A), f"flushed record {i} not on disk"
