/*
 * Register-file access (words.c): Mapping.read_words and write_words.
 */
#ifndef PYMMAPDEV_WORDS_H
#define PYMMAPDEV_WORDS_H

#include "mapping.h"

PyObject *words_read(MappingObject *self, PyObject *const *args, Py_ssize_t nargs,
		     PyObject *kwnames);
PyObject *words_write(MappingObject *self, PyObject *const *args, Py_ssize_t nargs,
		      PyObject *kwnames);

#define WORDS_METHODDEFS							\
	{"read_words", (PyCFunction)(void (*)(void))words_read,		\
	 METH_FASTCALL | METH_KEYWORDS,						\
	 "read_words($self, /, offset, count, width=4)\n--\n\n"		\
	 "count aligned native-order words of width bytes (1, 2, 4 or 8) from\n" \
	 "offset, as an array.array ('B', 'H', 'I' or 'Q').  Each word is one\n" \
	 "volatile load of exactly that width, in address order: what device\n"	\
	 "registers need (a memcpy may read wider, narrower or twice)."},	\
	{"write_words", (PyCFunction)(void (*)(void))words_write,		\
	 METH_FASTCALL | METH_KEYWORDS,						\
	 "write_words($self, /, offset, values, width=4)\n--\n\n"		\
	 "Store the integers of values as aligned native-order words of width\n" \
	 "bytes from offset: one volatile store of exactly that width each, in\n" \
	 "address order.  Every value is checked before the first store."},

#endif
