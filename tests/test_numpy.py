import multiprocessing

import pytest

import pymmapdev

import numpy as np  # a test dependency (pip install -e .[test]): never skipped


def _fill(path):
    with pymmapdev.open_file(path, create=False) as m:
        arr = m.ndarray("f8", shape=(32, 4), offset=128)
        arr[:] = np.arange(128, dtype="f8").reshape(32, 4)
        del arr


def test_view_without_copy(shm_path):
    with pymmapdev.open_file(shm_path, 4096) as m:
        arr = m.ndarray("u4", shape=(16,), offset=64)
        arr[3] = 0xCAFE
        assert m.read_u32(64 + 12) == 0xCAFE
        m.write_u32(64, 7)
        assert arr[0] == 7
        whole = m.ndarray(np.uint8)
        assert whole.shape == (4096,) and whole.base is not None
        with pytest.raises(BufferError):
            m.close()
        del arr, whole
        m.close()


def test_ndarray_written_in_one_process_read_in_another(shm_path):
    with pymmapdev.open_file(shm_path, 8192) as m:
        child = multiprocessing.get_context("spawn").Process(target=_fill, args=(shm_path,))
        child.start()
        child.join(60)
        assert child.exitcode == 0
        arr = m.ndarray("f8", shape=(32, 4), offset=128)
        assert arr.sum() == sum(range(128)) and arr[31, 3] == 127
        del arr


def test_ndarray_bad_arguments(shm_path):
    with pymmapdev.open_file(shm_path, 4096) as m:
        with pytest.raises(ValueError, match="do not fit"):
            m.ndarray("u8", shape=(513,))
        with pytest.raises(ValueError, match="do not fit"):
            m.ndarray("u4", shape=(2,), offset=4092)
        with pytest.raises(ValueError, match="outside"):
            m.ndarray("u1", offset=4097)
        with pytest.raises(TypeError):
            m.ndarray("not a dtype")


def test_ndarray_shapes_of_no_dimension_and_exact_products(shm_path):
    with pymmapdev.open_file(shm_path, 4096) as m:
        m.write_u32(8, 7)
        arr = m.ndarray("u4", shape=(), offset=8)     # 0-d: one item
        assert arr.shape == () and arr[()] == 7
        # a 0-d integer array is an int to numpy (np.empty(np.array(5))):
        # it was "TypeError: iteration over a 0-d array" here
        for shape in (5, np.int64(5), [5], np.array([1, 5]), np.array(5)):
            assert m.ndarray("u1", shape=shape).size == 5
        del arr
        # the item count is exact, not numpy's int64 product wrapped to -1
        with pytest.raises((ValueError, OverflowError), match="fit|too"):
            m.ndarray("u1", shape=(2**32 + 1, 2**32 - 1))
        # dimensions convert like every other argument (args.c), each named
        with pytest.raises(ValueError, match="^a shape dimension must be >= 0, not -1$"):
            m.ndarray("u1", shape=(4, -1))
        with pytest.raises(ValueError, match="^shape must be >= 0, not -3$"):
            m.ndarray("u1", shape=-3)
        with pytest.raises(TypeError, match="^a shape dimension must be an integer, not str$"):
            m.ndarray("u1", shape=(4, "2"))


def test_readonly_mapping_gives_readonly_array(shm_path):
    with pymmapdev.open_file(shm_path, 4096):
        pass
    with pymmapdev.open_file(shm_path, readonly=True) as m:
        arr = m.ndarray("u1")
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[0] = 1
        del arr


def test_missing_numpy_is_a_clear_import_error(shm_path):
    from conftest import run_python
    out = run_python("""
        import sys
        sys.modules["numpy"] = None          # as if numpy were not installed
        import pymmapdev                     # importing the package does not need it
        m = pymmapdev.open_file(sys.argv[1], 4096)
        try:
            m.ndarray("u1")
        except ImportError as e:
            print(e)
    """, shm_path).stdout
    assert "needs numpy" in out and "pip install numpy" in out


def test_ndarray_of_a_subarray_dtype_takes_the_shape_in_items_of_it(shm_path):
    """A subarray dtype ("u4", (2, 3)) is one item of 24 bytes: shape counts
    those items and the array gets the dtype's dimensions appended, as
    numpy.ndarray(shape, dtype, buffer) does (the reshape of frombuffer's
    (count, 2, 3) result to the bare shape failed: 'cannot reshape')."""
    with pymmapdev.open_file(shm_path, 4096) as m:
        m.write_u32(24 + 4, 9)                          # item 1, row 0, column 1
        sub = np.dtype(("u4", (2, 3)))
        for shape, want in (((2,), (2, 2, 3)), (2, (2, 2, 3)), ((2, 5), (2, 5, 2, 3)),
                            ((), (2, 3)), (None, (170, 2, 3))):
            arr = m.ndarray(sub, shape=shape)
            assert arr.shape == want and arr.dtype == np.dtype("u4")
            if shape is not None:
                assert arr.shape == np.ndarray(shape, sub, buffer=bytes(4096)).shape
            del arr
        arr = m.ndarray(sub, shape=(2,))
        assert arr[1, 0, 1] == 9
        del arr
