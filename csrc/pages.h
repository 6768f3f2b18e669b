/*
 * Whole-page operations (pages.c): flush (msync), madvise, and the
 * pre-faulting of a new mapping.
 */
#ifndef PYMMAPDEV_PAGES_H
#define PYMMAPDEV_PAGES_H

#include "mapping.h"

PyObject *pages_flush(MappingObject *self, PyObject *const *args, Py_ssize_t nargs,
		      PyObject *kwnames);
PyObject *pages_madvise(MappingObject *self, PyObject *const *args, Py_ssize_t nargs,
			PyObject *kwnames);

/* pymmapdev.MADV_*: the advice madvise() accepts. */
int pages_add_constants(PyObject *module);

/* Faults every page in (as writes unless @readonly); GIL not needed.
 * Returns 0, or -1 with errno. */
int pages_populate(char *data, size_t size, int readonly);

#define PAGES_METHODDEFS							\
	{"flush", (PyCFunction)(void (*)(void))pages_flush, METH_FASTCALL | METH_KEYWORDS, \
	 "flush($self, /, offset=0, size=None, *, wait=True)\n--\n\n"		\
	 "msync the pages holding the range (wait=False: MS_ASYNC); a no-op\n"	\
	 "on device memory, which has no backing store."},			\
	{"madvise", (PyCFunction)(void (*)(void))pages_madvise, METH_FASTCALL | METH_KEYWORDS, \
	 "madvise($self, /, advice, offset=0, size=None)\n--\n\n"		\
	 "madvise() the pages holding the range (pymmapdev.MADV_*; MADV_REMOVE,\n"	\
	 "which zeroes what it frees, only on a range of whole pages)."},

#endif
