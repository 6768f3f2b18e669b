/*
 * The one way arguments become C values.
 *
 * Every method and function of pymmapdev._core converts *all* of its
 * arguments before it looks at a mapping: a converter may run Python code
 * (__index__, __float__, __buffer__), and that code may close the mapping.
 * Only then does the caller pass the access gate (gate.h).
 *
 * One convention: a converter returns 0 on success and -1 with an exception
 * set.  One wording: errors name the function and the argument the way
 * CPython's own argument parser does.
 */
#ifndef PYMMAPDEV_ARGS_H
#define PYMMAPDEV_ARGS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/*
 * A METH_FASTCALL | METH_KEYWORDS signature.  names[] lists every parameter;
 * the first @positional_only may not be passed by keyword, those from
 * @keyword_only on may only be; the first @required must be present.
 */
struct arg_spec {
	const char *fname;
	const char *const *names;
	int count;
	int required;
	int positional_only;
	int keyword_only;	/* index of the first keyword-only name, or count */
};

/*
 * Fills out[0..count-1] with borrowed references (NULL where absent) from
 * a vectorcall argument list.  Returns 0, or -1 with TypeError.
 */
int args_unpack(const struct arg_spec *spec, PyObject *const *args,
		Py_ssize_t nargs, PyObject *kwnames, PyObject **out);

/* Exactly @want positional arguments (a METH_FASTCALL function without
 * keywords); TypeError otherwise. */
int args_exact(const char *fname, Py_ssize_t nargs, Py_ssize_t want);

/* A byte offset: an index >= 0.  ValueError names it when negative. */
int arg_offset(PyObject *obj, Py_ssize_t *out);

/* A length, capacity or count of bytes: an index >= 0, named @what. */
int arg_length(PyObject *obj, const char *what, Py_ssize_t *out);

/* An unsigned value of @bits (8, 16, 32 or 64) from any index (int,
 * numpy integer, __index__), named @what in errors; OverflowError if it
 * does not fit. */
int arg_uint(PyObject *obj, const char *what, int bits, uint64_t *out);

/* An addend for fetch_add: fits @bits as a signed or an unsigned value;
 * returned in two's complement. */
int arg_delta(PyObject *obj, int bits, uint64_t *out);

/* A non-negative count, clamped to @max; ValueError naming @what if < 0.
 * None (or NULL) leaves *out untouched. */
int arg_count(PyObject *obj, const char *what, long max, long *out);

/* Truth value of an optional flag (NULL leaves *out untouched). */
int arg_flag(PyObject *obj, int *out);

#endif
