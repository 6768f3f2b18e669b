"""The Mapping type itself: buffer protocol, slicing, typed access, lifetime."""
import ctypes
import gc
import mmap
import struct
import sys
import weakref

import pytest

import pymmapdev

SIZE = 2 * mmap.PAGESIZE


@pytest.fixture
def m(shm_path):
    with pymmapdev.open_file(shm_path, SIZE) as mapping:
        yield mapping


def test_attributes_and_repr(m, shm_path):
    assert m.size == len(m) == SIZE
    assert m.path == shm_path and m.kind == "file" and not m.closed and not m.readonly
    assert shm_path in repr(m) and str(SIZE) in repr(m)
    assert isinstance(m.fileno(), int) and m.fileno() >= 0


def test_new_file_is_zeroed(m):
    assert m[:] == bytes(SIZE)


def test_index_and_slices(m):
    m[0] = 255
    m[-1] = 7
    assert m[0] == 255 and m[SIZE - 1] == 7 and m[-1] == 7
    m[10:15] = b"hello"
    assert m[10:15] == b"hello" and m.read(10, 5) == b"hello"
    m[100:110:2] = b"abcde"
    assert m[100:110] == b"a\0b\0c\0d\0e\0" and m[100:110:2] == b"abcde"
    with pytest.raises(IndexError, match=f"^index {SIZE} out of range"):
        m[SIZE]
    # the index the caller gave, not the one counted from the end (-1)
    with pytest.raises(IndexError, match=f"^index {-SIZE - 1} out of range"):
        m[-SIZE - 1] = 1
    with pytest.raises(IndexError):
        m[0:4] = b"toolong"
    with pytest.raises(OverflowError):
        m[0] = 256
    with pytest.raises(TypeError):
        del m[0:1]
    with pytest.raises(TypeError):
        m["x"]


def test_read_write(m):
    assert m.write(SIZE - 3, b"end") == 3
    assert m.read(SIZE - 3, 3) == b"end"
    assert m.write(5, bytearray(b"ba")) == 2 and m.write(7, memoryview(b"mv")) == 2
    assert m.read(5, 4) == b"bamv"
    assert m.read(SIZE, 0) == b""
    with pytest.raises(ValueError, match=f"offset {SIZE - 2} \\+ 3 bytes is outside the mapping of {SIZE}"):
        m.write(SIZE - 2, b"end")
    with pytest.raises(ValueError, match="outside"):
        m.read(0, SIZE + 1)
    with pytest.raises(ValueError, match="negative"):
        m.read(-1, 1)
    with pytest.raises(ValueError):
        m.read(0, -1)
    with pytest.raises(OverflowError):
        m.read(2**70, 1)


def test_read_into(m):
    m.write(8, b"abcdefgh")
    buf = bytearray(4)
    assert m.read_into(8, buf) == 4 and buf == b"abcd"
    words = (ctypes.c_uint16 * 3)()                  # nbytes (6), not len() (3)
    assert m.read_into(10, words) == 6 and bytes(words) == b"cdefgh"
    with pytest.raises(ValueError, match=f"offset {SIZE - 2} \\+ 4 bytes is outside"):
        m.read_into(SIZE - 2, buf)
    # a buffer it cannot write into is the argument's fault: TypeError, as
    # file.readinto() and socket.recv_into() say (not "BufferError: Object
    # is not writable.", which names neither the call nor the type)
    for readonly in (b"abcd", memoryview(bytearray(4)).toreadonly()):
        with pytest.raises(TypeError, match="read_into\\(\\) needs a writable, contiguous "
                           f"bytes-like object, not {type(readonly).__name__}"):
            m.read_into(0, readonly)
    with pytest.raises(TypeError, match="not list"):
        m.read_into(0, [0, 0])


def test_read_into_a_closed_mapping_or_released_view_says_so(m):
    """Only a buffer that is read-only or strided is 'not writable,
    contiguous': a closed Mapping as the target was that TypeError too,
    instead of 'mapping is closed' (what write() from it says)."""
    closed = pymmapdev.anonymous(4096)
    closed.close()
    released = memoryview(bytearray(4))
    released.release()
    with pytest.raises(ValueError, match="^mapping is closed$"):
        m.read_into(0, closed)
    with pytest.raises(ValueError, match="released memoryview"):
        m.read_into(0, released)


def test_alignment_is_of_the_offset_in_the_file_as_the_readme_says():
    """A mapping may start anywhere in its file or device (open_device's
    offset): typed access needs the word aligned there, not at m's offset.
    The README's row said 'offset aligned to the width', which read_u32(3)
    of a mapping starting at byte 1 contradicts."""
    import os
    fd = os.memfd_create("align")
    os.ftruncate(fd, 8192)
    m = pymmapdev.Mapping(fd, 100, 1)
    os.close(fd)
    m.write_u32(3, 7)                                  # byte 4 of the file
    assert m.read_u32(3) == 7 and m.load_u32(3) == 7 and m.read_words(3, 1)[0] == 7
    with pytest.raises(ValueError, match="not aligned to 4 bytes in the file or device"):
        m.read_u32(0)
    m.close()
    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")) as f:
        row = next(line for line in f if line.startswith("| `m.read_u8/16/32/64(offset)`"))
    assert "in the file or device" in row


def test_copy_docstrings_count_bytes_not_items(m):
    """read_into() and write() count bytes (nbytes), not len() items: the
    docstrings said 'Copy len(buffer) bytes' and 'returns its length'."""
    words = (ctypes.c_uint16 * 3)()
    assert m.write(0, words) == 6 and m.read_into(0, words) == 6
    for method in (pymmapdev.Mapping.read_into, pymmapdev.Mapping.write):
        assert "nbytes" in method.__doc__ and "len(" not in method.__doc__
        assert "length" not in method.__doc__

def test_self_overlapping_slice_assignment(m):
    m[0:8] = b"abcdefgh"
    view = memoryview(m)
    m[2:8] = view[0:6]
    view.release()
    assert m[0:8] == b"ababcdef"


@pytest.mark.parametrize("bits", [8, 16, 32, 64])
def test_typed_roundtrip(m, bits):
    width = bits // 8
    code = {8: "B", 16: "H", 32: "I", 64: "Q"}[bits]
    read, write = getattr(m, f"read_u{bits}"), getattr(m, f"write_u{bits}")
    for offset in (0, width, SIZE - width):
        for value in (0, 1, 2**bits - 1, 0x0123456789ABCDEF & (2**bits - 1)):
            assert write(offset, value) is None
            assert read(offset) == value
            assert struct.unpack_from("=" + code, m, offset)[0] == value  # native order
    with pytest.raises(OverflowError, match=f"u{bits}"):
        write(0, 2**bits)
    with pytest.raises(OverflowError):
        write(0, -1)
    with pytest.raises(TypeError):
        write(0, 1.5)
    with pytest.raises(ValueError, match="outside"):
        read(SIZE)
    with pytest.raises(ValueError, match="outside"):
        write(SIZE, 0)
    if width > 1:
        with pytest.raises(ValueError, match=f"offset 1 is not aligned to {width} bytes"):
            read(1)
        with pytest.raises(ValueError, match="not aligned"):
            write(width + 1, 0)
    with pytest.raises(TypeError):
        read()
    with pytest.raises(TypeError):
        write(0)


def test_buffer_protocol_zero_copy(m):
    view = memoryview(m)
    assert view.nbytes == SIZE and not view.readonly
    view[0:3] = b"abc"
    assert m[0:3] == b"abc"
    struct.pack_into("=I", m, 16, 0xDEADBEEF)
    assert m.read_u32(16) == 0xDEADBEEF
    c_array = (ctypes.c_uint32 * 4).from_buffer(m, 32)
    c_array[1] = 99
    assert m.read_u32(36) == 99
    del c_array
    view.release()
    m.close()


def test_close_refused_says_how_to_end_the_exports(m):
    """The first close() a numpy user sees refused (a with block ending while
    an array of it lives) named the export but not what ends it."""
    array = m.ndarray("u1", shape=(4,))
    with pytest.raises(BufferError, match=r"1 exported buffer \(memoryview, numpy array, "
                       r"\.\.\.: del it or release\(\) it\); close\(\) again once "
                       r"they have ended$"):
        m.close()
    del array
    m.close()


def test_close_with_exports_then_after_release(m):
    view = memoryview(m)
    with pytest.raises(BufferError, match="1 exported"):
        m.close()
    assert not m.closed and m.read(0, 1) == b"\0"
    view.release()
    m.close()
    assert m.closed
    m.close()  # idempotent


@pytest.mark.parametrize("use", [
    lambda m: m.read(0, 1), lambda m: m.write(0, b"x"), lambda m: m[0], lambda m: m[0:1],
    lambda m: m.__setitem__(0, 1), lambda m: m.read_u32(0), lambda m: m.write_u64(0, 1),
    lambda m: m.flush(), lambda m: m.madvise(pymmapdev.MADV_NORMAL), lambda m: len(m),
    lambda m: m.size, lambda m: m.fileno(), lambda m: memoryview(m), lambda m: m.ndarray("u1"),
    lambda m: m.__enter__(),
    # a slice assignment of the wrong length said IndexError "slice
    # assignment of 1 bytes to a slice of 2 bytes" about a closed mapping
    lambda m: m.__setitem__(slice(0, 2), b"x"), lambda m: m.__setitem__(slice(0, 4, 2), b"x"),
    lambda m: m.__setitem__(slice(0, 2), b"xy"), lambda m: m[::-1],
    lambda m: m.read_into(0, bytearray(1)), lambda m: m.read_words(0, 1),
    lambda m: m.write_words(0, [1]),
])
def test_use_after_close_is_value_error(shm_path, use):
    m = pymmapdev.open_file(shm_path, SIZE)
    m.close()
    with pytest.raises(ValueError, match="mapping is closed"):
        use(m)
    assert m.closed and "closed" in repr(m)


def test_unmapped_once_on_gc(shm_path):
    m = pymmapdev.open_file(shm_path, SIZE)
    fd = m.fileno()
    ref = weakref.ref(m)
    del m
    gc.collect()
    assert ref() is None
    with pytest.raises(OSError):  # our dup of the fd is closed too
        import os
        os.fstat(fd)


def test_readonly_mapping_refuses_writes(shm_path):
    with pymmapdev.open_file(shm_path, SIZE) as w:
        w[0:2] = b"ro"
    with pymmapdev.open_file(shm_path, readonly=True) as m:
        assert m.readonly and m[0:2] == b"ro"
        for write in (lambda: m.write(0, b"x"), lambda: m.__setitem__(0, 1),
                      lambda: m.__setitem__(slice(0, 1), b"x"), lambda: m.write_u32(0, 1)):
            with pytest.raises(TypeError, match="read-only"):
                write()
        with pytest.raises(TypeError, match="not writable"):
            (ctypes.c_char * 2).from_buffer(m)
        view = memoryview(m)
        assert view.readonly
        with pytest.raises(TypeError):
            view[0] = 1
        view.release()


def test_flush_and_madvise_ranges(m):
    m.write(4097, b"x")
    m.flush()
    m.flush(4097, 1)
    m.flush(4097, 1, wait=False)
    m.flush(SIZE, 0)
    with pytest.raises(ValueError, match="outside"):
        m.flush(1, SIZE)
    m.madvise(pymmapdev.MADV_WILLNEED)
    m.madvise(pymmapdev.MADV_SEQUENTIAL, 100, 10)
    with pytest.raises(ValueError, match="outside"):
        m.madvise(pymmapdev.MADV_NORMAL, SIZE + 1)
    with pytest.raises(ValueError, match="advice 12345"):
        m.madvise(12345)  # unknown advice: never passed on
    with pytest.raises(OSError) as info:
        m.madvise(pymmapdev.MADV_FREE, 100, 10)  # private memory only: EINVAL
    assert info.value.errno == 22 and info.value.filename == m.path
    # the bare "Invalid argument" named neither the advice nor why
    assert "madvise(MADV_FREE) of offset 100 + 10 bytes" in info.value.strerror
    assert "MAP_SHARED" in info.value.strerror and "MADV_REMOVE" in info.value.strerror


@pytest.mark.parametrize("offset, size", [(10, 10), (0, 100), (100, 4096), (4096, 100)])
def test_madvise_remove_never_frees_bytes_beside_the_range(m, offset, size):
    # MADV_REMOVE frees whole pages, and the range named was widened to
    # the pages holding it: remove(10, 10) zeroed all 4096 bytes of the
    # first page, bytes the call never named, without a word.  Only the
    # bytes outside the mapping were protected.
    page = pymmapdev.PAGESIZE
    m[:] = b"\x5a" * SIZE
    with pytest.raises(ValueError, match="whole pages"):
        m.madvise(pymmapdev.MADV_REMOVE, offset, size)
    assert m[:] == b"\x5a" * SIZE
    m.madvise(pymmapdev.MADV_REMOVE, page, page)           # whole pages: freed
    assert m[:] == b"\x5a" * page + bytes(page) + b"\x5a" * (SIZE - 2 * page)
    m.madvise(pymmapdev.MADV_DONTNEED, offset, size)       # keeps the bytes: widened


def test_mapping_constructor_rejects_bad_arguments(shm_path):
    import os
    fd = os.open(shm_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, SIZE)
        with pytest.raises(ValueError, match="positive"):
            pymmapdev.Mapping(fd, 0)
        with pytest.raises(ValueError, match="offset -1 is negative"):
            pymmapdev.Mapping(fd, 10, -1)
        with pytest.raises(ValueError, match="kind"):
            pymmapdev.Mapping(fd, 10, kind="pipe")
        with pytest.raises(ValueError, match="waker"):
            pymmapdev.Mapping(fd, 10, waker="mmapdev")      # only devices have that
        with pytest.raises(ValueError, match="too large"):
            pymmapdev.Mapping(fd, sys.maxsize, 1)
        with pytest.raises(OSError):
            pymmapdev.Mapping(-1, 10)
    finally:
        os.close(fd)



def test_close_during_a_gil_released_call_is_refused(shm_path):
    # madvise/msync run without the GIL; a close() from another thread must
    # not unmap the range under them (the address could be reused by a new
    # mapping that the call would then advise or sync).
    import threading
    m = pymmapdev.open_file(shm_path, 256 << 20)
    errors, outcomes = [], []

    def populate():
        try:
            m.madvise(pymmapdev.MADV_POPULATE_WRITE)
        except ValueError:              # close() won the race before the call
            outcomes.append("closed first")
        except OSError as exc:          # unmapped under the call: the bug
            errors.append(exc)

    worker = threading.Thread(target=populate)
    worker.start()
    while worker.is_alive():
        try:
            m.close()
            break
        except BufferError:
            outcomes.append("refused while busy")
    worker.join()
    m.close()
    assert not errors, errors
    assert outcomes, "close() succeeded while madvise was still running"


def test_argument_errors_name_the_argument(m):
    """A wrong type or an integer too large for C names the argument, as
    CPython's own parser does ("offset must be an integer, not str"), not
    "expected an integer, got str" or "Python int too large to convert to C
    ssize_t"; the exception types stay those of int() and mmap."""
    cases = [
        (lambda v: m.read_u32(v), "offset"),
        (lambda v: m.read(v, 4), "offset"),
        (lambda v: m.read(0, v), "size"),
        (lambda v: m.write_u32(0, v), "value"),
        (lambda v: m.fetch_add_u32(0, v), "delta"),
        (lambda v: m.wake(0, v), "count"),
        (lambda v: m.wait(0, v, 0), "expected"),
        (lambda v: m.compare_exchange_u64(0, 0, v), "desired"),
    ]
    for call, name in cases:
        with pytest.raises(TypeError, match=f"^{name} must be an integer, not str$"):
            call("4")
    with pytest.raises(OverflowError, match=f"^offset {2**70} is too large"):
        m.read_u32(2**70)
    with pytest.raises(OverflowError, match=f"^size {2**70} is too large"):
        m.read(0, 2**70)
    assert m.read_u32(0) == 0           # nothing was written by any of them


def test_a_structure_too_big_for_its_mapping_says_what_it_needs():
    """Lock/Slot/Channel past the end named only "offset 0 + 5040 bytes is
    outside the mapping": now the structure and where its size comes from."""
    m = pymmapdev.anonymous(4096)
    with pytest.raises(ValueError, match=r"^a Slot of capacity 5000 \(Slot.size_for\) takes "
                       r"5040 bytes at offset 0: outside the mapping of 4096 bytes$"):
        pymmapdev.Slot(m, 0, 5000)
    with pytest.raises(ValueError, match=r"^a Channel of capacity 8192 \(Channel.size_for\) "
                       r"takes 8512 bytes at offset 64: outside the mapping of 4096 bytes$"):
        pymmapdev.Channel(m, 64, 8192)
    with pytest.raises(ValueError, match=r"^a Lock \(Lock.SIZE\) takes 64 bytes at offset "
                       r"4096: outside the mapping of 4096 bytes$"):
        pymmapdev.Lock(m, 4096)
    m.close()
    for make in (lambda: pymmapdev.Slot(m, 0, 5000), lambda: pymmapdev.Lock(m, 4096)):
        with pytest.raises(ValueError, match="^mapping is closed$"):
            make()
