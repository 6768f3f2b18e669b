/*
 * Sequentially consistent atomics on aligned words (atomic.c): the Mapping
 * methods load/store/fetch_add/exchange/compare_exchange_uN, and the word
 * operations the synchronisation files (lock.c, slot.c, ...) use on shared
 * memory.
 */
#ifndef PYMMAPDEV_ATOMIC_H
#define PYMMAPDEV_ATOMIC_H

#include "mapping.h"
#include "width.h"

#define ATOMIC_DECLARE(bits)							\
	PyObject *atomic_load_u##bits(MappingObject *, PyObject *);		\
	PyObject *atomic_store_u##bits(MappingObject *, PyObject *const *, Py_ssize_t); \
	PyObject *atomic_fetch_add_u##bits(MappingObject *, PyObject *const *, Py_ssize_t); \
	PyObject *atomic_exchange_u##bits(MappingObject *, PyObject *const *, Py_ssize_t); \
	PyObject *atomic_compare_exchange_u##bits(MappingObject *, PyObject *const *, \
						  Py_ssize_t);
FOR_EACH_ATOMIC_WIDTH(ATOMIC_DECLARE)
#undef ATOMIC_DECLARE

#define ATOMIC_WIDTH_METHODDEFS(bits)						\
	{"load_u" #bits, (PyCFunction)atomic_load_u##bits, METH_O,		\
	 "load_u" #bits "($self, offset, /)\n--\n\n"				\
	 "Atomically read the aligned u" #bits " at offset."},			\
	{"store_u" #bits, (PyCFunction)(void (*)(void))atomic_store_u##bits,	\
	 METH_FASTCALL,								\
	 "store_u" #bits "($self, offset, value, /)\n--\n\n"			\
	 "Atomically write the aligned u" #bits " at offset."},			\
	{"fetch_add_u" #bits, (PyCFunction)(void (*)(void))atomic_fetch_add_u##bits, \
	 METH_FASTCALL,								\
	 "fetch_add_u" #bits "($self, offset, delta, /)\n--\n\n"		\
	 "Atomically add delta to the aligned u" #bits " at offset and return\n" \
	 "the previous value.  The sum wraps modulo 2**" #bits "; delta may be\n" \
	 "negative (it must fit a signed or an unsigned " #bits "-bit int)."},	\
	{"exchange_u" #bits, (PyCFunction)(void (*)(void))atomic_exchange_u##bits, \
	 METH_FASTCALL,								\
	 "exchange_u" #bits "($self, offset, value, /)\n--\n\n"		\
	 "Atomically replace the aligned u" #bits " at offset with value and\n" \
	 "return the previous value."},						\
	{"compare_exchange_u" #bits,						\
	 (PyCFunction)(void (*)(void))atomic_compare_exchange_u##bits, METH_FASTCALL, \
	 "compare_exchange_u" #bits "($self, offset, expected, desired, /)\n--\n\n" \
	 "If the aligned u" #bits " at offset equals expected, replace it with\n" \
	 "desired.  Returns the previous value: the exchange happened iff it\n"	\
	 "equals expected."},

#define ATOMIC_METHODDEFS FOR_EACH_ATOMIC_WIDTH(ATOMIC_WIDTH_METHODDEFS)

#endif
