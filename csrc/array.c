/*
 * Mapping.ndarray(): numpy.frombuffer over the mapping.
 *
 * The array hands the memory to code we cannot guard, so before making one
 * check that the file still backs the whole range: one statx instead of a
 * SIGBUS in numpy later.  (Pages past EOF fault; the last partial page
 * does not.)
 */
#include "array.h"
#include "args.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

static PyObject *
import_numpy(void)
{
	PyObject *numpy = PyImport_ImportModule("numpy");

	if (numpy == NULL && PyErr_ExceptionMatches(PyExc_ImportError)) {
		PyErr_Clear();
		PyErr_SetString(PyExc_ImportError,
				"Mapping.ndarray() needs numpy, which could not be "
				"imported: pip install numpy");
	}
	return numpy;
}

/* numpy.<name>(arg), with arg passed as one object even if a tuple */
static PyObject *
call_numpy(PyObject *numpy, const char *name, PyObject *arg)
{
	PyObject *func = PyObject_GetAttrString(numpy, name), *result;

	if (func == NULL)
		return NULL;
	result = PyObject_CallOneArg(func, arg);
	Py_DECREF(func);
	return result;
}

/* A 0-d array: a sequence type that numpy takes as one int (np.array(5)),
 * as its own shape arguments do; iterating it is a TypeError. */
static int
is_0d_array(PyObject *obj)
{
	PyObject *ndim = PyObject_GetAttrString(obj, "ndim");
	int zero;

	if (ndim == NULL) {
		PyErr_Clear();		/* no ndim: a list, a tuple */
		return 0;
	}
	zero = PyLong_CheckExact(ndim) && PyLong_AsLong(ndim) == 0;
	Py_DECREF(ndim);
	return zero;
}

/*
 * The item count and size, from everything that may run Python code, and
 * the shape converted once (*dims: a new tuple of ints, NULL for None):
 * the array is shaped from it, not from the caller's object, whose
 * dimensions' __index__ could answer differently a second time.
 */
static int
array_geometry(PyObject *dtype, PyObject *shape, Py_ssize_t *itemsize, Py_ssize_t *count,
	       PyObject **dims_out)
{
	PyObject *size_obj = PyObject_GetAttrString(dtype, "itemsize");

	if (size_obj == NULL)
		return -1;
	*itemsize = PyLong_AsSsize_t(size_obj);
	Py_DECREF(size_obj);
	if (*itemsize <= 0) {
		if (!PyErr_Occurred())
			PyErr_SetString(PyExc_ValueError, "dtype has no fixed item size");
		return -1;
	}
	*count = -1;
	*dims_out = NULL;
	if (shape == NULL || shape == Py_None)
		return 0;
	/* The product here, exact: numpy.prod's int64 one wraps, and it is
	 * 1.0 (a float) for the shape () of a 0-d array.  A private tuple: a
	 * dimension's __index__ may change the caller's list. */
	if (!PySequence_Check(shape) || is_0d_array(shape)) {
		if (arg_length(shape, "shape", count) < 0)	/* shape=n */
			return -1;
		*dims_out = Py_BuildValue("(n)", *count);
		return *dims_out == NULL ? -1 : 0;
	} else {
		PyObject *dims = PySequence_Tuple(shape), *converted;
		int zero = 0, overflow = 0;
		Py_ssize_t dim;

		if (dims == NULL)
			return -1;
		converted = PyTuple_New(PyTuple_GET_SIZE(dims));
		if (converted == NULL) {
			Py_DECREF(dims);
			return -1;
		}
		*count = 1;
		for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(dims); i++) {
			PyObject *item;

			if (arg_length(PyTuple_GET_ITEM(dims, i), "a shape dimension", &dim) < 0 ||
			    (item = PyLong_FromSsize_t(dim)) == NULL) {
				Py_DECREF(converted);
				Py_DECREF(dims);
				return -1;
			}
			PyTuple_SET_ITEM(converted, i, item);
			zero |= dim == 0;
			overflow |= __builtin_mul_overflow(*count, dim, count);
		}
		Py_DECREF(dims);
		*dims_out = converted;
		if (zero) {
			*count = 0;		/* (huge, huge, 0) has no items */
		} else if (overflow) {
			PyErr_Format(PyExc_OverflowError, "shape %R has too many items", shape);
			Py_CLEAR(*dims_out);
			return -1;
		}
	}
	return 0;
}

/* Raises MappingFault when the file no longer backs [offset, offset+len). */
static int
check_backed(MappingObject *self, Py_ssize_t offset, Py_ssize_t len)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), end;
	struct statx st;
	Py_ssize_t backed;

	if (self->kind != MAPPING_KIND_FILE || len == 0)
		return 0;
	/* statx, not fstat: glibc 2.33 re-versioned fstat, and the wheel's
	 * manylinux tag follows the newest symbol we link */
	if (statx(self->fd, "", AT_EMPTY_PATH, STATX_SIZE, &st) < 0) {
		PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, self->path);
		return -1;
	}
	/* where the file's pages end, unsigned: a peer may extend the file to
	 * the largest off_t, and rounding that up in a Py_ssize_t overflowed
	 * (a "truncated" file).  At most 2^63: fits. */
	end = st.stx_size / page * page + (st.stx_size % page ? page : 0);
	/* in the mapping's coordinates (map_offset + size fits an off_t) */
	backed = end > (uint64_t)self->map_offset
		 ? (Py_ssize_t)(end - (uint64_t)self->map_offset > (uint64_t)self->size
				? (uint64_t)self->size : end - (uint64_t)self->map_offset)
		 : 0;
	if (offset + len > backed) {
		mapping_raise_fault(self, self->data + (offset > backed ? offset : backed), NULL);
		return -1;
	}
	return 0;
}

PyObject *
array_ndarray(MappingObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	static const char *const names[] = {"dtype", "shape", "offset"};
	static const struct arg_spec spec = {"ndarray", names, 3, 1, 0, 3};
	PyObject *argv[3], *numpy = NULL, *dtype = NULL, *dims = NULL, *flat = NULL;
	PyObject *sub = NULL, *result = NULL;
	Py_ssize_t offset = 0, itemsize, count;
	struct gate g;

	if (args_unpack(&spec, args, nargs, kwnames, argv) < 0 ||
	    (argv[2] != NULL && arg_offset(argv[2], &offset) < 0))
		return NULL;
	numpy = import_numpy();
	if (numpy == NULL)
		return NULL;
	dtype = call_numpy(numpy, "dtype", argv[0]);
	if (dtype == NULL || array_geometry(dtype, argv[1], &itemsize, &count, &dims) < 0)
		goto out;
	if (count < 0)
		count = offset <= self->size ? (self->size - offset) / itemsize : 0;
	if (count > PY_SSIZE_T_MAX / itemsize) {
		PyErr_Format(PyExc_ValueError, "%zd items of %zd bytes are too many", count,
			     itemsize);
		goto out;
	}
	if (offset <= self->size && count > (self->size - offset) / itemsize) {
		PyErr_Format(PyExc_ValueError,
			     "%zd items of %zd bytes at offset %zd do not fit in the mapping "
			     "of %zd bytes", count, itemsize, offset, self->size);
		goto out;
	}
	/* Everything converted: now the mapping (statx may block briefly). */
	if (gate_enter(&g, self, offset, count * itemsize, 1, GATE_READ, PIN_ACCESS) < 0)
		goto out;
	if (check_backed(self, offset, count * itemsize) < 0) {
		gate_leave(&g);
		goto out;
	}
	gate_leave(&g);
	flat = PyObject_CallMethod(numpy, "frombuffer", "OOnn", (PyObject *)self, dtype, count,
				   offset);
	if (flat == NULL || dims == NULL) {
		result = flat;
		flat = NULL;
		goto out;
	}
	/* A subarray dtype (("u4", (2, 3))) is one item of the shape, and
	 * frombuffer gave (count, 2, 3): its dimensions follow the shape's,
	 * as with numpy.ndarray(shape, dtype, buffer). */
	sub = PyObject_GetAttrString(dtype, "shape");
	if (sub != NULL && PyTuple_Check(sub) && PyTuple_GET_SIZE(sub) > 0)
		Py_SETREF(dims, PySequence_Concat(dims, sub));
	if (sub != NULL && dims != NULL)
		result = PyObject_CallMethod(flat, "reshape", "(O)", dims);
out:
	Py_XDECREF(sub);
	Py_XDECREF(dims);
	Py_XDECREF(flat);
	Py_XDECREF(dtype);
	Py_XDECREF(numpy);
	return result;
}
