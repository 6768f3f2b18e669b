/*
 * The Mapping object shared by every file in csrc/.  One type serves files,
 * memfd/anonymous shared memory and mmapdev devices: only the constructor's
 * arguments and the wait/wake back end (wait.c) differ.
 */
#ifndef PYMMAPDEV_MAPPING_H
#define PYMMAPDEV_MAPPING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#include "fault.h"

typedef enum {
	MAPPING_KIND_FILE = 0,
	MAPPING_KIND_DEVICE = 1,
} mapping_kind;

typedef struct {
	PyObject_HEAD
	char *data;		/* NULL once closed */
	Py_ssize_t size;	/* bytes mapped */
	Py_ssize_t map_offset;	/* offset of data[0] in the file or device:
				 * the module's WAIT/WAKE address device words */
	int fd;			/* our own dup of the caller's fd; -1 once closed */
	int readonly;
	mapping_kind kind;
	Py_ssize_t exports;	/* live buffer exports; close() refuses while > 0 */
	PyObject *path;		/* str, or None */
	PyObject *weakreflist;
} MappingObject;

/* Per-module state (multi-phase init: no static type objects). */
typedef struct {
	PyTypeObject *mapping_type;
	PyObject *fault_error;	/* pymmapdev.MappingFault, an OSError subclass */
} module_state;

module_state *mapping_module_state(PyObject *module);
module_state *mapping_state_of(MappingObject *self);

/* Sets ValueError("mapping is closed") and returns -1 if closed, else 0. */
int mapping_check_open(MappingObject *self);

/*
 * The one gatekeeper for every access: checks open, 0 <= offset,
 * offset + size <= self->size, offset % align == 0 (align is 1, 2, 4 or 8)
 * and, with for_write, that the mapping is writable.  Returns the address
 * or NULL with ValueError (range/alignment, naming the offset and the
 * mapping size) or TypeError (read-only).
 */
char *mapping_span(MappingObject *self, Py_ssize_t offset, Py_ssize_t size,
		   Py_ssize_t align, int for_write);

/* Converts a Python int to a non-negative offset; ValueError if negative. */
int mapping_offset_converter(PyObject *obj, void *out /* Py_ssize_t * */);

/*
 * Converts a Python int to an unsigned value of @bits (8/16/32/64).
 * OverflowError if it does not fit.
 */
int mapping_unsigned_arg(PyObject *obj, int bits, uint64_t *out);

/*
 * Module functions that act on a place in a mapping (lock.c, slot.c) take
 * (mapping, offset, ...): checks the argument count (@want) and the type,
 * and converts the offset.  Returns 0, or -1 with TypeError/ValueError.
 */
int mapping_place_args(PyObject *module, const char *fname,
		       PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want,
		       MappingObject **map, Py_ssize_t *offset);

/* Raises pymmapdev.MappingFault for a fault at @offset (fault.c). */
PyObject *mapping_raise_fault(MappingObject *self, Py_ssize_t offset);

/* Method tables of the other concerns, spliced into the type (mapping.c). */
extern PyMethodDef mapping_atomic_methods[];	/* atomic.c */
extern PyMethodDef mapping_wait_methods[];	/* wait.c */

/* Module-level functions of the other concerns (module.c splices them). */
extern PyMethodDef device_functions[];		/* device.c */
extern PyMethodDef lock_functions[];		/* lock.c */
extern PyMethodDef slot_functions[];		/* slot.c */
extern PyMethodDef wait_functions[];		/* wait.c: spin tuning */

extern PyType_Spec mapping_type_spec;

/* Fills the type's method table (mapping.c); call before creating the type. */
int mapping_type_prepare(void);

/*
 * Concatenates NULL-terminated method tables into @out (capacity @cap,
 * including the sentinel).  Sets SystemError and returns -1 if too small.
 */
int method_tables_join(PyMethodDef *out, size_t cap,
		       PyMethodDef *const *tables, size_t ntables);

#endif
