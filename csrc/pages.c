/*
 * msync and madvise act on whole pages; callers name any byte range and
 * it is widened to the pages holding it.  Both may block (writeback,
 * faulting in), so they run without the GIL, the mapping pinned: a
 * concurrent close() cannot unmap the range under them, and a new mapping
 * at the same address cannot receive our MADV_DONTNEED.
 */
#include "pages.h"
#include "args.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

/* (offset, size or None) -> admitted byte range; size None: to the end. */
static int
page_args(MappingObject *self, PyObject *offset_obj, PyObject *size_obj, struct gate *g)
{
	Py_ssize_t offset = 0, size = -1;

	if ((offset_obj != NULL && arg_offset(offset_obj, &offset) < 0) ||
	    (size_obj != NULL && size_obj != Py_None && arg_length(size_obj, "size", &size) < 0))
		return -1;
	if (size < 0)
		size = offset <= self->size ? self->size - offset : 0;
	return gate_enter(g, self, offset, size, 1, GATE_READ, PIN_WAIT);
}

static PyObject *
page_call(struct gate *g, int (*call)(void *, size_t, int), int arg)
{
	long page = sysconf(_SC_PAGESIZE);
	/* the page holding the first byte (data[0] itself may not start one) */
	char *start = (char *)((uintptr_t)g->addr & ~(uintptr_t)(page - 1));
	size_t len = (size_t)(g->addr + g->len - start);
	int rc = 0, saved_errno = 0;

	if (g->len > 0) {
		Py_BEGIN_ALLOW_THREADS
		rc = call(start, len, arg);
		saved_errno = errno;
		Py_END_ALLOW_THREADS
	}
	gate_leave(g);
	if (rc < 0) {
		errno = saved_errno;
		return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, g->map->path);
	}
	Py_RETURN_NONE;
}

PyObject *
pages_flush(MappingObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	static const char *const names[] = {"offset", "size", "wait"};
	static const struct arg_spec spec = {"flush", names, 3, 0, 0, 2};
	PyObject *argv[3];
	int wait = 1;
	struct gate g;

	if (args_unpack(&spec, args, nargs, kwnames, argv) < 0 || arg_flag(argv[2], &wait) < 0 ||
	    page_args(self, argv[0], argv[1], &g) < 0)
		return NULL;
	if (self->kind == MAPPING_KIND_DEVICE) {
		/* msync(MS_SYNC) on a char device without ->fsync is EINVAL:
		 * device memory has no backing store to write back. */
		gate_leave(&g);
		Py_RETURN_NONE;
	}
	return page_call(&g, msync, wait ? MS_SYNC : MS_ASYNC);
}

PyObject *
pages_madvise(MappingObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	static const char *const names[] = {"advice", "offset", "size"};
	static const struct arg_spec spec = {"madvise", names, 3, 1, 0, 3};
	PyObject *argv[3];
	struct gate g;
	int advice, overflow;
	long value;

	if (args_unpack(&spec, args, nargs, kwnames, argv) < 0)
		return NULL;
	value = PyLong_AsLongAndOverflow(argv[0], &overflow);
	if (value == -1 && PyErr_Occurred())
		return NULL;
	if (overflow || value < 0 || value > 1 << 20) {
		PyErr_Format(PyExc_ValueError, "advice %R is not an MADV_* value", argv[0]);
		return NULL;
	}
	advice = (int)value;
	if (page_args(self, argv[1], argv[2], &g) < 0)
		return NULL;
	return page_call(&g, madvise, advice);
}

struct touch {
	char *data;
	size_t size;
	int readonly;
};

static int
touch_body(void *arg)
{
	struct touch *t = arg;
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	for (size_t off = 0; off < t->size; off += page) {
		if (t->readonly)
			(void)__atomic_load_n(t->data + off, __ATOMIC_RELAXED);
		else	/* an atomic add of 0 write-faults without racing peers */
			(void)__atomic_fetch_add(t->data + off, 0, __ATOMIC_RELAXED);
	}
	return 0;
}

int
pages_populate(char *data, size_t size, int readonly)
{
	struct touch t = {data, size, readonly};
	struct fault_span span = {data, size};
	const char *addr;

	/* MADV_POPULATE_* (5.14) faults the pages in as writes, so the first
	 * store does not take a page_mkwrite fault; MAP_POPULATE would only
	 * read-fault a shared mapping.  Older kernels: touch every page. */
#ifdef MADV_POPULATE_WRITE
	if (madvise(data, size, readonly ? MADV_POPULATE_READ : MADV_POPULATE_WRITE) == 0)
		return 0;
	if (errno != EINVAL)
		return -1;
#endif
	if (fault_run(touch_body, &t, &span, 1, &addr) == FAULT_HIT) {
		errno = EFAULT;
		return -1;
	}
	return 0;
}
