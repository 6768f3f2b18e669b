/*
 * Mapping.ndarray() (array.c): a numpy view of the mapping, no copy.
 */
#ifndef PYMMAPDEV_ARRAY_H
#define PYMMAPDEV_ARRAY_H

#include "mapping.h"

PyObject *array_ndarray(MappingObject *self, PyObject *const *args, Py_ssize_t nargs,
			PyObject *kwnames);

#define ARRAY_METHODDEFS							\
	{"ndarray", (PyCFunction)(void (*)(void))array_ndarray,		\
	 METH_FASTCALL | METH_KEYWORDS,						\
	 "ndarray($self, /, dtype, shape=None, offset=0)\n--\n\n"		\
	 "A numpy array viewing the mapping (no copy): *shape* items of *dtype*\n"	\
	 "from *offset*; shape=None: as many as fit before the end."},

#endif
