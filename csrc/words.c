/*
 * read_words / write_words: runs of words of one width, for register files.
 *
 * A device register is read or written by one access of its own width; a
 * memcpy may use wider (vector) or narrower accesses, touch bytes twice,
 * or go backwards, and a register with side effects (a FIFO, a
 * clear-on-read status) then misbehaves.  Here each word is one volatile
 * access of exactly the width, in address order, and the whole run is one
 * guarded body: one fault guard, no Python between the words.
 *
 * The gate's order (mapping.h): all values are converted and the result
 * allocated before the span is admitted.
 */
#include "words.h"
#include "args.h"
#include "width.h"

struct words_call {
	char *addr;		/* the admitted span in the mapping */
	void *buf;		/* count words of width bytes, native order */
	Py_ssize_t count;
	enum width width;
};

#define WORDS_LOAD(bits)							\
	case WIDTH_OF_BITS(bits):						\
		for (Py_ssize_t i = 0; i < c->count; i++)			\
			((uint##bits##_t *)c->buf)[i] =				\
				((const volatile uint##bits##_t *)c->addr)[i];	\
		break;

#define WORDS_STORE(bits)							\
	case WIDTH_OF_BITS(bits):						\
		for (Py_ssize_t i = 0; i < c->count; i++)			\
			((volatile uint##bits##_t *)c->addr)[i] =		\
				((const uint##bits##_t *)c->buf)[i];		\
		break;

static int
load_body(void *arg)
{
	struct words_call *c = arg;

	switch (c->width) {
	FOR_EACH_WIDTH(WORDS_LOAD)
	}
	return 0;
}

static int
store_body(void *arg)
{
	struct words_call *c = arg;

	switch (c->width) {
	FOR_EACH_WIDTH(WORDS_STORE)
	}
	return 0;
}

/* The array.array typecode of unsigned words of @width. */
static const char *
typecode(enum width width)
{
	switch (width) {
	case WIDTH_U8: return "B";
	case WIDTH_U16: return "H";
	case WIDTH_U32: return "I";
	case WIDTH_U64: return "Q";
	}
	return NULL;
}

/* width= (default 4): 1, 2, 4 or 8 bytes. */
static int
arg_width(PyObject *obj, enum width *out)
{
	Py_ssize_t w;

	*out = WIDTH_U32;
	if (obj == NULL)
		return 0;
	if (arg_length(obj, "width", &w) < 0)
		return -1;
#define WIDTH_MATCH(bits) if (w == (bits) / 8) { *out = WIDTH_OF_BITS(bits); return 0; }
	FOR_EACH_WIDTH(WIDTH_MATCH)
#undef WIDTH_MATCH
	PyErr_Format(PyExc_ValueError, "width must be 1, 2, 4 or 8 bytes, not %zd", w);
	return -1;
}

/*
 * Runs @body over the admitted span; 0, or -1 with MappingFault.  @result,
 * if not NULL, is the buffer read_words() stores into: the array type is
 * looked up at call time, so Python code may have made it a view of
 * another mapping, whose file may be truncated: it is guarded too.
 */
static int
run_guarded(MappingObject *self, struct gate *g, int (*body)(void *), struct words_call *c,
	    const Py_buffer *result)
{
	struct fault_span spans[2] = {{g->addr, (size_t)g->len}, {c->buf, (size_t)g->len}};
	const char *addr;

	c->addr = g->addr;
	if (c->count == 0 ||
	    fault_run(body, c, spans, result != NULL ? 2 : 1, &addr) != FAULT_HIT)
		return 0;
	mapping_raise_copy_fault(self, addr, result, 0);
	return -1;
}

/* The span's length, refused before anything is allocated for it. */
static int
span_len(MappingObject *self, Py_ssize_t offset, Py_ssize_t count, enum width width,
	 int access, Py_ssize_t *len)
{
	if (count > PY_SSIZE_T_MAX / (Py_ssize_t)width) {
		PyErr_Format(PyExc_ValueError, "%zd words of %d bytes do not fit any mapping",
			     count, (int)width);
		return -1;
	}
	*len = count * (Py_ssize_t)width;
	return gate_check(self, offset, *len, width, access);
}

PyObject *
words_read(MappingObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	static const char *const names[] = {"offset", "count", "width"};
	static const struct arg_spec spec = {"read_words", names, 3, 2, 0, 3};
	PyObject *argv[3], *array_mod, *one, *result = NULL;
	struct words_call c = {0};
	Py_ssize_t offset, len;
	Py_buffer view;
	struct gate g;

	if (args_unpack(&spec, args, nargs, kwnames, argv) < 0 ||
	    arg_offset(argv[0], &offset) < 0 || arg_length(argv[1], "count", &c.count) < 0 ||
	    arg_width(argv[2], &c.width) < 0 ||
	    span_len(self, offset, c.count, c.width, GATE_READ, &len) < 0)
		return NULL;
	/* array.array(code, [0]) * count: the result, allocated once */
	array_mod = PyImport_ImportModule("array");
	if (array_mod == NULL)
		return NULL;
	one = PyObject_CallMethod(array_mod, "array", "s[i]", typecode(c.width), 0);
	Py_DECREF(array_mod);
	if (one == NULL)
		return NULL;
	result = PySequence_Repeat(one, c.count);
	Py_DECREF(one);
	if (result == NULL || PyObject_GetBuffer(result, &view, PyBUF_WRITABLE) < 0)
		goto error;
	/* array.array is looked up now, and Python code may have replaced it */
	if (view.len != len) {
		PyBuffer_Release(&view);
		PyErr_Format(PyExc_SystemError, "read_words: array.array(%s) * %zd is %zd bytes, "
			     "not %zd (was array.array replaced?)", typecode(c.width), c.count,
			     view.len, len);
		goto error;
	}
	c.buf = view.buf;
	if (gate_enter(&g, self, offset, len, c.width, GATE_READ, PIN_ACCESS) == 0) {
		int rc = run_guarded(self, &g, load_body, &c, &view);

		gate_leave(&g);
		PyBuffer_Release(&view);
		if (rc == 0)
			return result;
	} else {
		PyBuffer_Release(&view);
	}
error:
	Py_XDECREF(result);
	return NULL;
}

/*
 * A sized @values (a list, a range, an array) that cannot fit the span is
 * refused before it is copied: range(10**9) would be gigabytes of ints
 * first.  Unsized iterables are left to the checks after the conversion.
 * 0, or -1 with the span's error.
 */
static int
check_sized_values(MappingObject *self, PyObject *values, Py_ssize_t offset, enum width width)
{
	Py_ssize_t n = PyObject_Size(values), len;

	if (n < 0) {
		if (!PyErr_ExceptionMatches(PyExc_TypeError))
			return -1;
		PyErr_Clear();		/* no len(): a generator, an iterator */
		return 0;
	}
	return span_len(self, offset, n, width, GATE_WRITE, &len);
}

/* values -> count words of @width in a new PyMem buffer (*buf). */
static int
convert_values(PyObject *values, enum width width, void **buf, Py_ssize_t *count)
{
	PyObject *seq = PySequence_Fast(values, "write_words() needs an iterable of integers");
	uint64_t value;

	if (seq == NULL)
		return -1;
	/* A private tuple: a value's __index__ may change the caller's list
	 * (even empty it) while we read its items. */
	if (PyList_Check(seq)) {
		Py_SETREF(seq, PyList_AsTuple(seq));
		if (seq == NULL)
			return -1;
	}
	*count = PySequence_Fast_GET_SIZE(seq);
	*buf = PyMem_Malloc(*count > 0 ? (size_t)*count * width : 1);
	if (*buf == NULL) {
		Py_DECREF(seq);
		PyErr_NoMemory();
		return -1;
	}
	for (Py_ssize_t i = 0; i < *count; i++) {
		if (arg_uint(PySequence_Fast_GET_ITEM(seq, i), "value", (int)width * 8, &value) < 0) {
			PyMem_Free(*buf);
			Py_DECREF(seq);
			return -1;
		}
		switch (width) {
		case WIDTH_U8: ((uint8_t *)*buf)[i] = (uint8_t)value; break;
		case WIDTH_U16: ((uint16_t *)*buf)[i] = (uint16_t)value; break;
		case WIDTH_U32: ((uint32_t *)*buf)[i] = (uint32_t)value; break;
		case WIDTH_U64: ((uint64_t *)*buf)[i] = value; break;
		}
	}
	Py_DECREF(seq);
	return 0;
}

PyObject *
words_write(MappingObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	static const char *const names[] = {"offset", "values", "width"};
	static const struct arg_spec spec = {"write_words", names, 3, 2, 0, 3};
	PyObject *argv[3];
	struct words_call c = {0};
	Py_ssize_t offset, len;
	struct gate g;
	int rc = -1;

	if (args_unpack(&spec, args, nargs, kwnames, argv) < 0 ||
	    arg_offset(argv[0], &offset) < 0 || arg_width(argv[2], &c.width) < 0 ||
	    check_sized_values(self, argv[1], offset, c.width) < 0 ||
	    convert_values(argv[1], c.width, &c.buf, &c.count) < 0)
		return NULL;
	if (span_len(self, offset, c.count, c.width, GATE_WRITE, &len) == 0 &&
	    gate_enter(&g, self, offset, len, c.width, GATE_WRITE, PIN_ACCESS) == 0) {
		rc = run_guarded(self, &g, store_body, &c, NULL);
		gate_leave(&g);
	}
	PyMem_Free(c.buf);
	if (rc < 0)
		return NULL;
	Py_RETURN_NONE;
}
