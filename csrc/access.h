/*
 * Bytes and typed access (access.c): the Mapping methods read/write,
 * read_uN/write_uN and the subscript slots.
 */
#ifndef PYMMAPDEV_ACCESS_H
#define PYMMAPDEV_ACCESS_H

#include "mapping.h"
#include "width.h"

/* Loads (store = 0) or stores the aligned word of @width at @offset,
 * through the gate and the guard; 0, or -1 with an exception. */
int access_word(MappingObject *self, Py_ssize_t offset, enum width width, int store,
		uint64_t *value);

PyObject *access_read(MappingObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *access_write(MappingObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *access_read_into(MappingObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *access_subscript(MappingObject *self, PyObject *key);
int access_ass_subscript(MappingObject *self, PyObject *key, PyObject *value);

#define ACCESS_DECLARE(bits)							\
	PyObject *access_read_u##bits(MappingObject *self, PyObject *arg);	\
	PyObject *access_write_u##bits(MappingObject *self, PyObject *const *args, \
				       Py_ssize_t nargs);
FOR_EACH_WIDTH(ACCESS_DECLARE)
#undef ACCESS_DECLARE

#define ACCESS_WIDTH_METHODDEFS(bits)						\
	{"read_u" #bits, (PyCFunction)access_read_u##bits, METH_O,		\
	 "read_u" #bits "($self, offset, /)\n--\n\n"				\
	 "One aligned native-order " #bits "-bit load."},			\
	{"write_u" #bits, (PyCFunction)(void (*)(void))access_write_u##bits,	\
	 METH_FASTCALL,								\
	 "write_u" #bits "($self, offset, value, /)\n--\n\n"			\
	 "One aligned native-order " #bits "-bit store."},

#define ACCESS_METHODDEFS							\
	{"read", (PyCFunction)(void (*)(void))access_read, METH_FASTCALL,	\
	 "read($self, offset, size, /)\n--\n\nCopy size bytes at offset out."},	\
	{"write", (PyCFunction)(void (*)(void))access_write, METH_FASTCALL,	\
	 "write($self, offset, data, /)\n--\n\n"				\
	 "Copy a bytes-like object in at offset; returns the bytes copied\n"	\
	 "(its nbytes, not its item count)."},					\
	{"read_into", (PyCFunction)(void (*)(void))access_read_into, METH_FASTCALL, \
	 "read_into($self, offset, buffer, /)\n--\n\n"				\
	 "Fill a writable, contiguous buffer (a numpy array, a bytearray, ...)\n" \
	 "with its nbytes at offset; returns that count."},			\
	FOR_EACH_WIDTH(ACCESS_WIDTH_METHODDEFS)

#endif
