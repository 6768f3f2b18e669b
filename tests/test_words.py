"""read_words / write_words (csrc/words.c): runs of words of one width, for
register files.  Each word is one access of exactly its width, so a peer
flipping whole words never shows us a mix of two values; every value is
checked before the first store; the trust boundary holds (arguments that
close the mapping, a truncated file)."""
import array
import os
import struct
import subprocess
import sys

import pytest

import pymmapdev
from conftest import child_env
from test_trust_boundary import CLOSER, outcome

WIDTHS = {1: ("B", "=B"), 2: ("H", "=H"), 4: ("I", "=I"), 8: ("Q", "=Q")}


@pytest.fixture
def m():
    with pymmapdev.anonymous(4096) as mapping:
        yield mapping


@pytest.mark.parametrize("width", sorted(WIDTHS))
def test_round_trip_every_width(m, width):
    code, fmt = WIDTHS[width]
    values = [(0x0123456789ABCDEF >> (i * 3)) & ((1 << (8 * width)) - 1) for i in range(9)]
    offset = 8 * width
    assert m.write_words(offset, values, width=width) is None
    got = m.read_words(offset, len(values), width)
    assert isinstance(got, array.array) and got.typecode == code and got.itemsize == width
    assert got.tolist() == values
    raw = m[offset:offset + width * len(values)]
    assert [v for (v,) in struct.iter_unpack(fmt, raw)] == values      # native order
    assert m[offset - 1] == 0 and m[offset + width * len(values)] == 0  # nothing beside


def test_default_width_is_4_and_any_iterable(m):
    m.write_words(0, (i * 7 for i in range(5)))
    assert m.read_words(0, 5).tolist() == [0, 7, 14, 21, 28]
    assert m.read_words(offset=0, count=2, width=8).itemsize == 8
    assert m.read_words(0, 0).tolist() == []
    m.write_words(4092, [])                                 # nothing to store
    m.write_words(16, array.array("I", [5, 6]))
    assert m.read_u32(16) == 5 and m.read_u32(20) == 6
    np = pytest.importorskip("numpy")
    m.write_words(24, np.arange(3, dtype=np.uint16), width=2)
    assert m.read_words(24, 3, 2).tolist() == [0, 1, 2]


def test_errors(m):
    with pytest.raises(ValueError, match=r"offset 2\b.*aligned to 4"):
        m.read_words(2, 1)
    with pytest.raises(ValueError, match=r"offset 4\b.*aligned to 8"):
        m.write_words(4, [1], width=8)
    with pytest.raises(ValueError, match=r"offset 4092 \+ 8 bytes.*4096"):
        m.read_words(4092, 2)
    with pytest.raises(ValueError, match=r"4096"):
        m.write_words(4096, [1])
    with pytest.raises(ValueError, match="width must be 1, 2, 4 or 8"):
        m.read_words(0, 1, width=3)
    with pytest.raises(ValueError, match="count must be >= 0"):
        m.read_words(0, -1)
    with pytest.raises(ValueError, match="do not fit"):
        m.read_words(0, sys.maxsize)                        # refused before allocating
    with pytest.raises(ValueError, match="outside the mapping"):
        m.read_words(0, 1 << 40)
    with pytest.raises(TypeError, match="iterable of integers"):
        m.write_words(0, 5)
    with pytest.raises(TypeError, match="integer"):
        m.write_words(0, [1.5])


def test_every_value_is_checked_before_the_first_store(m):
    with pytest.raises(OverflowError, match="u16"):
        m.write_words(0, [1, 2, 1 << 16], width=2)
    with pytest.raises(OverflowError):
        m.write_words(0, [1, -1])
    with pytest.raises(ValueError, match="outside"):
        m.write_words(4088, [1, 2, 3])
    assert m[0:16] == bytes(16) and m[4088:] == bytes(8)


def test_read_only_mapping(shm_path):
    with pymmapdev.open_file(shm_path, 4096) as rw, \
            pymmapdev.open_file(shm_path, readonly=True) as ro:
        rw.write_words(0, [9, 8])
        assert ro.read_words(0, 2).tolist() == [9, 8]
        with pytest.raises(TypeError, match="read-only"):
            ro.write_words(0, [1])


def test_closed(m):
    m.close()
    with pytest.raises(ValueError, match="mapping is closed"):
        m.read_words(0, 1)
    with pytest.raises(ValueError, match="mapping is closed"):
        m.write_words(0, [1])


@pytest.mark.parametrize("stmt", [
    "m.read_words(X(0), 4)",
    "m.read_words(0, X(4))",
    "m.read_words(0, 4, X(4))",
    "m.write_words(X(0), [1, 2])",
    "m.write_words(0, [1, X(2)])",
    "m.write_words(0, [1, 2], X(2))",
])
def test_arguments_that_close_the_mapping(stmt):
    assert outcome(CLOSER.format(stmt=stmt)) == "ValueError mapping is closed"


def test_truncated_file_raises_mapping_fault(shm_path):
    with pymmapdev.open_file(shm_path, 3 * 4096) as m:
        os.truncate(shm_path, 4096)
        with pytest.raises(pymmapdev.MappingFault, match="offset 4096"):
            m.read_words(4088, 4, width=8)
        with pytest.raises(pymmapdev.MappingFault, match="offset 8192"):
            m.write_words(8192, [1])
        assert m.read_words(4088, 1, width=8).tolist() == [0]
        os.truncate(shm_path, 3 * 4096)


@pytest.mark.parametrize("width", sorted(WIDTHS))
def test_words_are_never_torn(shm_path, width):
    """Another process flips whole words between all-zero and all-ones with
    exact-width stores; a read of exactly that width sees only those two."""
    ones = (1 << (8 * width)) - 1
    count = 256
    with pymmapdev.open_file(shm_path, 4096) as m:
        flipper = subprocess.Popen(
            [sys.executable, "-c", f"""
import sys, pymmapdev
m = pymmapdev.open_file(sys.argv[1])
m.store_u32(4092, 1)
values = [[0] * {count}, [{ones}] * {count}]
i = 0
while m.load_u32(4088) == 0:
    m.write_words(0, values[i & 1], {width})
    i += 1
""", shm_path], env=child_env())
        try:
            while m.load_u32(4092) == 0:
                pass
            seen = set()
            for _ in range(2000):
                seen.update(m.read_words(0, count, width))
            assert seen <= {0, ones}, f"torn words: {sorted(seen - {0, ones})[:5]}"
        finally:
            m.store_u32(4088, 1)
            flipper.wait(60)
        assert flipper.returncode == 0


def test_a_bad_width_is_named(m):
    """width converts like every other argument (args.c): the error names
    it (it said "'str' object cannot be interpreted as an integer" and
    "cannot fit 'int' into an index-sized integer")."""
    with pytest.raises(TypeError, match="^width must be an integer, not str$"):
        m.read_words(0, 1, width="4")
    with pytest.raises(TypeError, match="^width must be an integer, not float$"):
        m.write_words(0, [1], width=4.0)
    with pytest.raises(OverflowError, match="^width 1180591620717411303424 is too large"):
        m.read_words(0, 1, width=2**70)
    with pytest.raises(ValueError, match="^width must be >= 0, not -1$"):
        m.read_words(0, 1, width=-1)
    class Eight:
        def __index__(self):
            return 8
    assert m.read_words(0, 1, width=Eight()).itemsize == 8     # any integer-like


def test_too_many_values_are_refused_before_they_are_copied(m):
    """write_words() copied every value before the span was checked, so a
    sized iterable far larger than the mapping (range(10**9): gigabytes of
    ints) was materialised first: MemoryError, or the machine's memory.
    A len() is checked against the span first, as read_words' count is."""
    with pytest.raises(ValueError, match=r"^offset 0 \+ 4398046511104 bytes is outside "
                       "the mapping of 4096 bytes$"):
        m.write_words(0, range(2**40))
    with pytest.raises(ValueError, match="do not fit any mapping"):
        m.write_words(0, range(2**62), width=8)
    with pytest.raises(ValueError, match=r"^offset 4088 \+ 12 bytes is outside"):
        m.write_words(4088, range(3))
    with pytest.raises(TypeError, match="integer"):       # a span that fits: values convert
        m.write_words(4084, [1, 2, "3"])
    m.write_words(4088, iter(range(2)))                    # unsized: as before
    assert m.read_words(4088, 2).tolist() == [0, 1]
    m.close()
    with pytest.raises(ValueError, match="^mapping is closed$"):
        m.write_words(0, range(2**40))
