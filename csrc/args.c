/*
 * Argument conversion (see args.h for the rules every caller follows).
 */
#include "args.h"

static const char *
plural(Py_ssize_t n)
{
	return n == 1 ? "" : "s";
}

int
args_exact(const char *fname, Py_ssize_t nargs, Py_ssize_t want)
{
	if (nargs == want)
		return 0;
	PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd argument%s (%zd given)",
		     fname, want, plural(want), nargs);
	return -1;
}

int
args_unpack(const struct arg_spec *spec, PyObject *const *args,
	    Py_ssize_t nargs, PyObject *kwnames, PyObject **out)
{
	Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
	int i, j;

	if (nargs > spec->keyword_only) {
		PyErr_Format(PyExc_TypeError,
			     "%s() takes at most %d positional argument%s (%zd given)",
			     spec->fname, spec->keyword_only,
			     plural(spec->keyword_only), nargs);
		return -1;
	}
	for (i = 0; i < spec->count; i++)
		out[i] = i < nargs ? args[i] : NULL;
	for (Py_ssize_t k = 0; k < nkw; k++) {
		PyObject *key = PyTuple_GET_ITEM(kwnames, k);

		for (j = spec->positional_only; j < spec->count; j++)
			if (PyUnicode_CompareWithASCIIString(key, spec->names[j]) == 0)
				break;
		if (j == spec->count) {
			PyErr_Format(PyExc_TypeError,
				     "%s() got an unexpected keyword argument '%U'",
				     spec->fname, key);
			return -1;
		}
		if (out[j] != NULL) {
			PyErr_Format(PyExc_TypeError,
				     "%s() got multiple values for argument '%s'",
				     spec->fname, spec->names[j]);
			return -1;
		}
		out[j] = args[nargs + k];
	}
	for (i = 0; i < spec->required; i++) {
		if (out[i] == NULL) {
			PyErr_Format(PyExc_TypeError,
				     "%s() missing required argument '%s' (pos %d)",
				     spec->fname, spec->names[i], i + 1);
			return -1;
		}
	}
	return 0;
}

/*
 * Any integer-like object as a new reference to an int: numpy integers and
 * other __index__ implementers are values, as they are to the int() of a
 * struct format.  TypeError naming the argument otherwise.
 */
static PyObject *
as_int(PyObject *obj, const char *what)
{
	if (PyLong_Check(obj))
		return Py_NewRef(obj);
	if (!PyIndex_Check(obj)) {
		PyErr_Format(PyExc_TypeError, "%s must be an integer, not %.200s", what,
			     Py_TYPE(obj)->tp_name);
		return NULL;
	}
	return PyNumber_Index(obj);
}

/* An index as Py_ssize_t; exact ints skip __index__ (every hot path). */
static int
index_arg(PyObject *obj, const char *what, Py_ssize_t *out)
{
	PyObject *num;
	int overflow;

	if (PyLong_CheckExact(obj)) {
		*out = PyLong_AsSsize_t(obj);
		if (!(*out == -1 && PyErr_Occurred()))
			return 0;
		PyErr_Clear();		/* too large: reported below, with the value */
	}
	num = as_int(obj, what);
	if (num == NULL)
		return -1;
	*out = (Py_ssize_t)PyLong_AsLongLongAndOverflow(num, &overflow);
	if (overflow > 0)
		PyErr_Format(PyExc_OverflowError, "%s %R is too large (at most %zd)", what, num,
			     PY_SSIZE_T_MAX);
	else if (overflow < 0)
		PyErr_Format(PyExc_ValueError, "%s %R is negative", what, num);
	Py_DECREF(num);
	return overflow == 0 && !(*out == -1 && PyErr_Occurred()) ? 0 : -1;
}

int
arg_offset(PyObject *obj, Py_ssize_t *out)
{
	if (index_arg(obj, "offset", out) < 0)
		return -1;
	if (*out < 0) {
		PyErr_Format(PyExc_ValueError, "offset %zd is negative", *out);
		return -1;
	}
	return 0;
}

int
arg_length(PyObject *obj, const char *what, Py_ssize_t *out)
{
	if (index_arg(obj, what, out) < 0)
		return -1;
	if (*out < 0) {
		PyErr_Format(PyExc_ValueError, "%s must be >= 0, not %zd", what, *out);
		return -1;
	}
	return 0;
}

int
arg_uint(PyObject *obj, const char *what, int bits, uint64_t *out)
{
	unsigned long long value;
	PyObject *num;

	if (PyLong_CheckExact(obj)) {		/* the hot path: no reference games */
		value = PyLong_AsUnsignedLongLong(obj);
		if (!(value == (unsigned long long)-1 && PyErr_Occurred()) &&
		    (bits == 64 || value >> bits == 0)) {
			*out = value;
			return 0;
		}
		PyErr_Clear();		/* reported below, with the value */
	}
	num = as_int(obj, what);
	if (num == NULL)
		return -1;
	value = PyLong_AsUnsignedLongLong(num);
	if ((value == (unsigned long long)-1 && PyErr_Occurred()) ||
	    (bits < 64 && value >> bits)) {
		PyErr_Clear();
		PyErr_Format(PyExc_OverflowError, "%s %R does not fit in u%d", what, num, bits);
		Py_DECREF(num);
		return -1;
	}
	Py_DECREF(num);
	*out = value;
	return 0;
}

int
arg_delta(PyObject *obj, int bits, uint64_t *out)
{
	int overflow, ok = 0;
	long long v;
	PyObject *num = as_int(obj, "delta");

	if (num == NULL)
		return -1;
	v = PyLong_AsLongLongAndOverflow(num, &overflow);
	if (v == -1 && PyErr_Occurred())
		goto out;
	if (overflow > 0 && bits == 64) {
		unsigned long long u = PyLong_AsUnsignedLongLong(num);

		ok = !(u == (unsigned long long)-1 && PyErr_Occurred());
		PyErr_Clear();		/* >= 2^64: reported below */
		*out = u;
	} else if (overflow == 0 &&
		   (bits == 64 || (v >= -(1LL << (bits - 1)) && v < (1LL << bits)))) {
		ok = 1;
		*out = (uint64_t)v;
	}
	if (!ok)
		PyErr_Format(PyExc_OverflowError,
			     "delta %R does not fit a %d-bit word "
			     "(allowed: -2**%d <= delta < 2**%d)",
			     num, bits, bits - 1, bits);
out:
	Py_DECREF(num);
	return ok ? 0 : -1;
}

int
arg_count(PyObject *obj, const char *what, long max, long *out)
{
	int overflow;
	long long v;
	PyObject *num;

	if (obj == NULL || obj == Py_None)
		return 0;
	num = as_int(obj, what);
	if (num == NULL)
		return -1;
	v = PyLong_AsLongLongAndOverflow(num, &overflow);
	Py_DECREF(num);
	if (v == -1 && PyErr_Occurred())
		return -1;
	if (overflow < 0 || (overflow == 0 && v < 0)) {
		PyErr_Format(PyExc_ValueError, "%s must be >= 0, not %R", what, obj);
		return -1;
	}
	*out = overflow > 0 || v > max ? max : (long)v;
	return 0;
}

int
arg_flag(PyObject *obj, int *out)
{
	int truth;

	if (obj == NULL)
		return 0;
	truth = PyObject_IsTrue(obj);
	if (truth < 0)
		return -1;
	*out = truth;
	return 0;
}
