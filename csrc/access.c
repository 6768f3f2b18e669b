/*
 * Bytes and typed access: m[i], m[a:b:c], m[...] = ..., read/write,
 * read_uN/write_uN.
 *
 * Each follows the gate's order (mapping.h): convert every argument and
 * allocate the result first (both may run Python code: __index__,
 * __buffer__, a garbage collection's finalizers), then admit the span,
 * copy under the fault guard, leave.
 */
#include "access.h"
#include "args.h"
#include "width.h"

#include <string.h>

/* Copies between a mapping span and a buffer; raises on a fault.  @other,
 * if not NULL, is the caller's buffer: the copy's source, or its
 * destination when @other_is_source is 0 (read_into). */
static int
copy_or_raise(MappingObject *map, void *dst, const void *src, Py_ssize_t len,
	      const Py_buffer *other, int other_is_source)
{
	const char *addr;

	if (len == 0 || fault_copy(dst, src, (size_t)len, &addr) == 0)
		return 0;
	mapping_raise_copy_fault(map, addr, other, other_is_source);
	return -1;
}

/* ---- read / write ---------------------------------------------------- */

PyObject *
access_read(MappingObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	Py_ssize_t offset, size;
	PyObject *result;
	struct gate g;

	if (args_exact("read", nargs, 2) < 0 || arg_offset(args[0], &offset) < 0 ||
	    arg_length(args[1], "size", &size) < 0 ||
	    gate_check(self, offset, size, 1, GATE_READ) < 0)	/* before allocating size */
		return NULL;
	result = PyBytes_FromStringAndSize(NULL, size);
	if (result == NULL)
		return NULL;
	if (gate_enter(&g, self, offset, size, 1, GATE_READ, PIN_ACCESS) < 0)
		goto error;
	if (copy_or_raise(self, PyBytes_AS_STRING(result), g.addr, size, NULL, 1) < 0) {
		gate_leave(&g);
		goto error;
	}
	gate_leave(&g);
	return result;

error:
	Py_DECREF(result);
	return NULL;
}

/*
 * After a PyBUF_WRITABLE request of @obj failed: is it a buffer, only
 * read-only or strided?  Then the argument is of the wrong kind, and the
 * error should say so (bytes say "BufferError: Object is not writable.",
 * numpy says ValueError, neither names the call).  Anything else (a closed
 * Mapping, a released memoryview) keeps its own error.  1 or 0, the
 * pending error then dropped or kept.  May run Python code (__buffer__).
 */
static int
readonly_or_strided(PyObject *obj)
{
	PyObject *type, *value, *tb;
	Py_buffer probe;
	int is_buffer;

	if (!PyErr_ExceptionMatches(PyExc_BufferError) &&
	    !PyErr_ExceptionMatches(PyExc_TypeError) && !PyErr_ExceptionMatches(PyExc_ValueError))
		return 0;
	PyErr_Fetch(&type, &value, &tb);
	is_buffer = PyObject_GetBuffer(obj, &probe, PyBUF_FULL_RO) == 0;
	if (is_buffer) {
		PyBuffer_Release(&probe);
		Py_XDECREF(type);
		Py_XDECREF(value);
		Py_XDECREF(tb);
	} else {
		PyErr_Clear();
		PyErr_Restore(type, value, tb);
	}
	return is_buffer;
}

/*
 * write(offset, data) and read_into(offset, buffer): a copy between the
 * mapping and a caller's buffer, which may itself view a mapping (both
 * sides are guarded).  Returns the byte count.
 */
static PyObject *
buffer_copy(MappingObject *self, PyObject *const *args, Py_ssize_t nargs, const char *name,
	    int into_mapping)
{
	Py_ssize_t offset;
	Py_buffer buf;
	PyObject *result = NULL;
	struct gate g;

	if (args_exact(name, nargs, 2) < 0 || arg_offset(args[0], &offset) < 0)
		return NULL;
	if (PyObject_GetBuffer(args[1], &buf, into_mapping ? PyBUF_SIMPLE : PyBUF_WRITABLE) < 0) {
		/* name the call and the type, and raise what file.readinto()
		 * raises; a list (no buffer at all) says the same */
		if (!into_mapping && (readonly_or_strided(args[1]) ||
				      (PyErr_ExceptionMatches(PyExc_TypeError) &&
				       !PyObject_CheckBuffer(args[1])))) {
			PyErr_Clear();
			PyErr_Format(PyExc_TypeError,
				     "%s() needs a writable, contiguous bytes-like object, not %.200s", name,
				     Py_TYPE(args[1])->tp_name);
		}
		return NULL;
	}
	/* the length object first: nothing may allocate inside the gate */
	result = PyLong_FromSsize_t(buf.len);
	if (result != NULL && gate_enter(&g, self, offset, buf.len, 1,
					 into_mapping ? GATE_WRITE : GATE_READ, PIN_ACCESS) == 0) {
		if (copy_or_raise(self, into_mapping ? g.addr : buf.buf,
				  into_mapping ? buf.buf : g.addr, buf.len, &buf, into_mapping) < 0)
			Py_CLEAR(result);
		gate_leave(&g);
	} else {
		Py_CLEAR(result);
	}
	PyBuffer_Release(&buf);
	return result;
}

PyObject *
access_write(MappingObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	return buffer_copy(self, args, nargs, "write", 1);
}

PyObject *
access_read_into(MappingObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	return buffer_copy(self, args, nargs, "read_into", 0);
}

/* ---- typed access ---------------------------------------------------- */

/*
 * Loads or stores the aligned word at @offset: one volatile access of
 * exactly the width, so a device register or a peer's word is never read
 * or written in pieces (fault.h: no setjmp on this path).  0, or -1 with
 * an exception.
 */
int
access_word(MappingObject *self, Py_ssize_t offset, enum width width, int store,
	    uint64_t *value)
{
	struct gate g;
	const char *addr;
	int rc;

	if (gate_enter(&g, self, offset, width, width, store ? GATE_WRITE : GATE_READ,
		       PIN_ACCESS) < 0)
		return -1;
	rc = store ? fault_store(g.addr, width, *value, &addr)
		   : fault_load(g.addr, width, value, &addr);
	gate_leave(&g);
	if (rc == FAULT_HIT) {
		mapping_raise_fault(self, addr, NULL);
		return -1;
	}
	return 0;
}

static inline PyObject *
typed_read(MappingObject *self, PyObject *arg, enum width width)
{
	Py_ssize_t offset;
	uint64_t value = 0;

	if (arg_offset(arg, &offset) < 0 || access_word(self, offset, width, 0, &value) < 0)
		return NULL;
	return PyLong_FromUnsignedLongLong(value);
}

static inline PyObject *
typed_write(MappingObject *self, PyObject *const *args, Py_ssize_t nargs,
	    enum width width, const char *name)
{
	Py_ssize_t offset;
	uint64_t value;

	if (args_exact(name, nargs, 2) < 0 || arg_offset(args[0], &offset) < 0 ||
	    arg_uint(args[1], "value", (int)width * 8, &value) < 0 ||
	    access_word(self, offset, width, 1, &value) < 0)
		return NULL;
	Py_RETURN_NONE;
}

#define TYPED_ACCESSORS(bits)							\
PyObject *									\
access_read_u##bits(MappingObject *self, PyObject *arg)				\
{										\
	return typed_read(self, arg, WIDTH_OF_BITS(bits));			\
}										\
PyObject *									\
access_write_u##bits(MappingObject *self, PyObject *const *args, Py_ssize_t nargs) \
{										\
	return typed_write(self, args, nargs, WIDTH_OF_BITS(bits), "write_u" #bits); \
}
FOR_EACH_WIDTH(TYPED_ACCESSORS)
#undef TYPED_ACCESSORS

/* ---- subscripts ------------------------------------------------------ */

/* A key's conversion may have closed the mapping (__index__): use after
 * close is one error, before anything is judged against the old size. */
static int
refuse_closed(MappingObject *self)
{
	if (!mapping_is_closed(self))
		return 0;
	PyErr_SetString(PyExc_ValueError, "mapping is closed");
	return -1;
}

/* An index key as a position in [0, size); IndexError otherwise. */
static int
index_key(MappingObject *self, PyObject *key, Py_ssize_t *out)
{
	Py_ssize_t given = PyNumber_AsSsize_t(key, PyExc_IndexError), i = given;

	if ((i == -1 && PyErr_Occurred()) || refuse_closed(self) < 0)
		return -1;
	if (i < 0)
		i += self->size;
	if (i < 0 || i >= self->size) {
		PyErr_Format(PyExc_IndexError, "index %zd out of range for a mapping of %zd bytes",
			     given, self->size);
		return -1;
	}
	*out = i;
	return 0;
}

/* A slice key: its indices, and the span [*lo, *lo + *len) it touches. */
struct slice_key {
	Py_ssize_t start, step, count, lo, len;
};

static int
slice_key(MappingObject *self, PyObject *key, struct slice_key *s)
{
	Py_ssize_t stop, last;

	if (!PySlice_Check(key)) {
		PyErr_Format(PyExc_TypeError,
			     "mapping indices must be integers or slices, not %.100s",
			     Py_TYPE(key)->tp_name);
		return -1;
	}
	if (PySlice_Unpack(key, &s->start, &stop, &s->step) < 0 || refuse_closed(self) < 0)
		return -1;
	s->count = PySlice_AdjustIndices(self->size, &s->start, &stop, s->step);
	if (s->count == 0) {
		s->lo = s->len = 0;
		return 0;
	}
	last = s->start + (s->count - 1) * s->step;
	s->lo = s->step > 0 ? s->start : last;
	s->len = (s->step > 0 ? last : s->start) - s->lo + 1;
	return 0;
}

static int
strided_or_raise(MappingObject *map, char *dst, Py_ssize_t dst_step, const char *src,
		 Py_ssize_t src_step, Py_ssize_t count, const struct fault_span *dst_span,
		 const struct fault_span *src_span, const Py_buffer *source)
{
	const char *addr;

	if (fault_strided_copy(dst, dst_step, src, src_step, count, dst_span, src_span,
			       &addr) == 0)
		return 0;
	mapping_raise_fault(map, addr, source);
	return -1;
}

PyObject *
access_subscript(MappingObject *self, PyObject *key)
{
	struct slice_key s;
	struct gate g;
	PyObject *result;
	Py_ssize_t i;
	uint64_t byte = 0;
	int rc;

	if (PyIndex_Check(key)) {
		if (index_key(self, key, &i) < 0 || access_word(self, i, WIDTH_U8, 0, &byte) < 0)
			return NULL;
		return PyLong_FromLong((long)byte);
	}
	if (slice_key(self, key, &s) < 0)
		return NULL;
	result = PyBytes_FromStringAndSize(NULL, s.count);
	if (result == NULL)
		return NULL;
	if (gate_enter(&g, self, s.lo, s.len, 1, GATE_READ, PIN_ACCESS) < 0)
		goto error;
	if (s.step == 1) {
		rc = copy_or_raise(self, PyBytes_AS_STRING(result), g.addr, s.count, NULL, 1);
	} else {
		struct fault_span src = {g.addr, (size_t)s.len};
		struct fault_span dst = {PyBytes_AS_STRING(result), (size_t)s.count};

		rc = s.count == 0 ? 0 :
		     strided_or_raise(self, PyBytes_AS_STRING(result), 1,
				      self->data + s.start, s.step, s.count, &dst, &src, NULL);
	}
	gate_leave(&g);
	if (rc == 0)
		return result;
error:
	Py_DECREF(result);
	return NULL;
}

/* Whether [a, a + alen) and [b, b + blen) share a byte. */
static int
overlaps(const char *a, Py_ssize_t alen, const char *b, Py_ssize_t blen)
{
	return a < b + blen && b < a + alen;
}

static int
assign_slice(MappingObject *self, PyObject *key, PyObject *value)
{
	struct slice_key s;
	struct gate g;
	Py_buffer src;
	PyObject *bounce = NULL;
	int rc = -1;

	if (slice_key(self, key, &s) < 0)
		return -1;
	if (PyObject_GetBuffer(value, &src, PyBUF_SIMPLE) < 0)
		return -1;
	if (src.len != s.count) {
		PyErr_Format(PyExc_IndexError,
			     "slice assignment of %zd bytes to a slice of %zd bytes: "
			     "the mapping cannot change size", src.len, s.count);
		goto out;
	}
	/*
	 * A strided copy from a view of this very mapping would read bytes it
	 * already overwrote: copy the source aside first, as bytearray does.
	 * The test needs the mapping's address, which is stable (it never
	 * moves); allocating inside the gate is not allowed, so always
	 * allocate when the source lies in our mapping at all.
	 */
	if (s.step != 1 && s.count > 0 &&
	    overlaps(src.buf, src.len, self->data, self->size)) {
		bounce = PyBytes_FromStringAndSize(NULL, s.count);
		if (bounce == NULL)
			goto out;
	}
	if (gate_enter(&g, self, s.lo, s.len, 1, GATE_WRITE, PIN_ACCESS) < 0)
		goto out;
	if (s.step == 1) {
		/* memmove: a view of this mapping may overlap */
		rc = copy_or_raise(self, g.addr, src.buf, s.count, &src, 1);
	} else if (s.count > 0) {
		struct fault_span dst = {g.addr, (size_t)s.len};
		struct fault_span from = {src.buf, (size_t)src.len};
		const char *from_buf = src.buf;

		rc = 0;
		if (bounce != NULL) {
			rc = copy_or_raise(self, PyBytes_AS_STRING(bounce), src.buf, src.len, &src, 1);
			from_buf = PyBytes_AS_STRING(bounce);
			from = (struct fault_span){from_buf, (size_t)src.len};
		}
		if (rc == 0)
			rc = strided_or_raise(self, self->data + s.start, s.step, from_buf, 1,
					      s.count, &dst, &from, &src);
	} else {
		rc = 0;
	}
	gate_leave(&g);
out:
	Py_XDECREF(bounce);
	PyBuffer_Release(&src);
	return rc;
}

int
access_ass_subscript(MappingObject *self, PyObject *key, PyObject *value)
{
	Py_ssize_t i;
	uint64_t byte;

	if (value == NULL) {
		PyErr_SetString(PyExc_TypeError, "mapping bytes cannot be deleted");
		return -1;
	}
	if (!PyIndex_Check(key))
		return assign_slice(self, key, value);
	if (index_key(self, key, &i) < 0 || arg_uint(value, "value", 8, &byte) < 0)
		return -1;
	return access_word(self, i, WIDTH_U8, 1, &byte);
}
