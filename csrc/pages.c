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
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/*
 * The advice madvise() passes on: what keeps the mapping usable.  Left
 * out: MADV_DONTFORK (a forked child's copy of the Mapping would point at
 * nothing: the next access in the child is a SIGSEGV), MADV_WIPEONFORK
 * (private memory only), the guard-page advice (MADV_GUARD_INSTALL makes
 * every access fault), MADV_HWPOISON and MADV_SOFT_OFFLINE (memory-failure
 * testing, as root: they take pages away from the machine), and whatever
 * a newer kernel adds, until it is looked at.
 */
static const struct {
	const char *name;
	int value;
} advice_table[] = {
#define ADVICE(name) {#name, name}
	ADVICE(MADV_NORMAL),
	ADVICE(MADV_RANDOM),
	ADVICE(MADV_SEQUENTIAL),
	ADVICE(MADV_WILLNEED),
	ADVICE(MADV_DONTNEED),
	ADVICE(MADV_REMOVE),
	ADVICE(MADV_DOFORK),
	ADVICE(MADV_HUGEPAGE),
	ADVICE(MADV_NOHUGEPAGE),
	ADVICE(MADV_DONTDUMP),
	ADVICE(MADV_DODUMP),
#ifdef MADV_FREE
	ADVICE(MADV_FREE),
#endif
#ifdef MADV_COLD
	ADVICE(MADV_COLD),
	ADVICE(MADV_PAGEOUT),
#endif
#ifdef MADV_POPULATE_READ
	ADVICE(MADV_POPULATE_READ),
	ADVICE(MADV_POPULATE_WRITE),
#endif
#undef ADVICE
};

int
pages_add_constants(PyObject *module)
{
	for (size_t i = 0; i < sizeof(advice_table) / sizeof(advice_table[0]); i++)
		if (PyModule_AddIntConstant(module, advice_table[i].name,
					    advice_table[i].value) < 0)
			return -1;
	return 0;
}

static int
advice_is_free(int advice)
{
#ifdef MADV_FREE
	return advice == MADV_FREE;
#else
	(void)advice;
	return 0;
#endif
}

/* advice (an int) -> one of advice_table, and its name; ValueError otherwise. */
static int
arg_advice(PyObject *obj, int *advice, const char **name)
{
	int overflow;
	long value = PyLong_AsLongAndOverflow(obj, &overflow);

	if (value == -1 && PyErr_Occurred())
		return -1;
	for (size_t i = 0; i < sizeof(advice_table) / sizeof(advice_table[0]); i++) {
		if (!overflow && value == advice_table[i].value) {
			*advice = (int)value;
			*name = advice_table[i].name;
			return 0;
		}
	}
	PyErr_Format(PyExc_ValueError, "advice %R is not one of the pymmapdev.MADV_* values "
		     "madvise() accepts", obj);
	return -1;
}

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

/* The pages holding the admitted range: [*start, *start + *len). */
static void
page_span(const struct gate *g, char **start, size_t *len)
{
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	/* the page holding the first byte (data[0] itself may not start one) */
	uintptr_t lo = (uintptr_t)g->addr & ~(page - 1);
	uintptr_t hi = ((uintptr_t)g->addr + (uintptr_t)g->len + page - 1) & ~(page - 1);

	*start = (char *)lo;
	*len = g->len > 0 ? hi - lo : 0;
}

/*
 * OSError(err, "<strerror>: <what> of offset O + N bytes<why>", path): the
 * call and the range, which the kernel's bare errno does not name.  The
 * errno picks the subclass (PermissionError, ...) as the constructor does.
 * EFAULT is MADV_POPULATE_* meeting a page nothing backs (a truncated
 * file): the MappingFault a guarded access there raises.
 */
static void
page_error(const struct gate *g, int err, const char *what, const char *why)
{
	PyObject *type = PyExc_OSError, *msg, *exc;

	if (err == EFAULT)
		type = mapping_state_of(g->map)->fault_error;
	msg = PyUnicode_FromFormat("%s: %s of offset %zd + %zd bytes%s%s%s", strerror(err), what,
				   g->offset, g->len, why, err == EFAULT ? ": " : "",
				   err == EFAULT ? mapping_fault_cause(g->map) : "");
	if (msg == NULL)
		return;
	exc = PyObject_CallFunction(type, "iOO", err, msg,
				    g->map->path ? g->map->path : Py_None);
	Py_DECREF(msg);
	if (exc == NULL)
		return;
	PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
	Py_DECREF(exc);
}

/* call(the pages of @g, arg) without the GIL; @what names it in an error,
 * @einval_why (or "") explains an EINVAL. */
static PyObject *
page_call(struct gate *g, int (*call)(void *, size_t, int), int arg, const char *what,
	  const char *einval_why)
{
	char *start;
	size_t len;
	int rc = 0, saved_errno = 0;

	page_span(g, &start, &len);
	if (g->len > 0) {
		Py_BEGIN_ALLOW_THREADS
		rc = call(start, len, arg);
		saved_errno = errno;
		Py_END_ALLOW_THREADS
	}
	gate_leave(g);
	if (rc < 0) {
		page_error(g, saved_errno, what, saved_errno == EINVAL ? einval_why : "");
		return NULL;
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
	return page_call(&g, msync, wait ? MS_SYNC : MS_ASYNC,
			 wait ? "msync(MS_SYNC)" : "msync(MS_ASYNC)", "");
}

PyObject *
pages_madvise(MappingObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	static const char *const names[] = {"advice", "offset", "size"};
	static const struct arg_spec spec = {"madvise", names, 3, 1, 0, 3};
	PyObject *argv[3];
	const char *name;
	char what[48];
	struct gate g;
	char *start;
	size_t len;
	int advice;

	if (args_unpack(&spec, args, nargs, kwnames, argv) < 0 ||
	    arg_advice(argv[0], &advice, &name) < 0 || page_args(self, argv[1], argv[2], &g) < 0)
		return NULL;
	/* MADV_REMOVE frees the backing store of whole pages: bytes of the
	 * file beside the mapping's (a mapping need not start or end on a
	 * page) are not ours to zero, nor are the mapping's bytes beside the
	 * range named (the other advice keeps the bytes: widening is safe). */
	page_span(&g, &start, &len);
	if (advice == MADV_REMOVE && len > 0 && (start != g.addr || len != (size_t)g.len)) {
		if (start < self->data || start + len > self->data + self->size)
			PyErr_Format(PyExc_ValueError,
				     "MADV_REMOVE frees whole pages, and the pages holding offset %zd + "
				     "%zd bytes reach outside the mapping of %zd bytes (at offset %zd "
				     "of its file)", g.offset, g.len, self->size, self->map_offset);
		else
			PyErr_Format(PyExc_ValueError,
				     "MADV_REMOVE frees whole pages, and offset %zd + %zd bytes is not "
				     "whole pages: the bytes beside it in the pages holding it would be "
				     "zeroed too (name whole pages of %ld bytes)", g.offset, g.len,
				     sysconf(_SC_PAGESIZE));
		gate_leave(&g);
		return NULL;
	}
	(void)snprintf(what, sizeof(what), "madvise(%s)", name);
	/* MADV_FREE is for private memory, and every mapping of ours is
	 * MAP_SHARED: the kernel always refuses it, EINVAL saying nothing. */
	return page_call(&g, madvise, advice, what,
			 advice_is_free(advice) ? " (MADV_FREE frees private memory only, and a "
			 "pymmapdev mapping is MAP_SHARED: MADV_REMOVE frees a file's or memfd's "
			 "pages)" : "");
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
