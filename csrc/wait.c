/*
 * wait/wake on an aligned u32 word of a mapping.
 *
 * wait() spins for a bounded, tunable number of rounds (a peer that answers
 * within a few microseconds costs no syscall at all), then sleeps with the
 * GIL released until woken, the word differs, or the deadline passes.
 *
 * The sleeping itself differs by kind of mapping, and only in
 * backend_wait()/backend_wake(): file and shared-memory pages use the shared
 * futex (never FUTEX_PRIVATE_FLAG: the peer is another process); device
 * pages have no page->mapping, so the futex fails there with EFAULT and the
 * mmapdev module's WAIT/WAKE ioctls provide the same semantics.
 */
#include "mapping.h"
#include "sync.h"
#include "mmapdev.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/futex.h>

#define NSEC_PER_SEC	1000000000LL

/*
 * Spin rounds before sleeping; one round is a load and a pause (~20-40 ns
 * on current x86), every 64th a sched_yield(), so the default spins
 * roughly 10-20 us: longer than a cross-core hand-off, shorter than a
 * futex sleep/wake cycle.
 */
#define DEFAULT_SPIN	500
#define MAX_SPIN	(1L << 30)

static long wait_spin = DEFAULT_SPIN;	/* per process; relaxed atomics */

/* ---- deadlines (shared with lock.c through sync.h) ---------------- */

int
sync_deadline_arg(PyObject *timeout, struct sync_deadline *d)
{
	double secs;

	d->forever = 1;
	if (timeout == NULL || timeout == Py_None)
		return 0;
	secs = PyFloat_AsDouble(timeout);
	if (secs == -1.0 && PyErr_Occurred())
		return -1;
	if (isnan(secs) || secs < 0) {
		PyErr_Format(PyExc_ValueError,
			     "timeout must be a non-negative number or None, "
			     "not %R", timeout);
		return -1;
	}
	/* Beyond ~30 years the deadline would risk overflowing time_t
	 * arithmetic for no practical difference: treat it as forever. */
	if (secs > 1e9)
		return 0;
	if (clock_gettime(CLOCK_MONOTONIC, &d->at) < 0) {
		PyErr_SetFromErrno(PyExc_OSError);
		return -1;
	}
	d->forever = 0;
	d->at.tv_sec += (time_t)secs;
	d->at.tv_nsec += (long)((secs - floor(secs)) * NSEC_PER_SEC);
	if (d->at.tv_nsec >= NSEC_PER_SEC) {
		d->at.tv_sec++;
		d->at.tv_nsec -= NSEC_PER_SEC;
	}
	return 0;
}

static int
timespec_before(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec < b->tv_sec ||
	       (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

int
sync_deadline_passed(const struct sync_deadline *d)
{
	struct timespec now;

	if (d->forever)
		return 0;
	clock_gettime(CLOCK_MONOTONIC, &now);	/* cannot fail: valid clock */
	return !timespec_before(&now, &d->at);
}

void
sync_slice_end(const struct sync_deadline *d, struct timespec *end, int *last)
{
	clock_gettime(CLOCK_MONOTONIC, end);
	end->tv_nsec += SYNC_SLICE_NS;
	while (end->tv_nsec >= NSEC_PER_SEC) {
		end->tv_sec++;
		end->tv_nsec -= NSEC_PER_SEC;
	}
	*last = !d->forever && !timespec_before(end, &d->at);
	if (*last)
		*end = d->at;
}

PyObject *
sync_raise_errno(int err, const char *what, Py_ssize_t offset)
{
	PyObject *msg, *value;

	msg = PyUnicode_FromFormat("%s at offset %zd: %s", what, offset,
				   strerror(err));
	/* OSError(errno, msg) picks the errno's subclass and sets .errno */
	value = Py_BuildValue("(iN)", err, msg);
	if (value != NULL) {
		PyErr_SetObject(PyExc_OSError, value);
		Py_DECREF(value);
	}
	return NULL;
}

/* ---- the back end: the one place where files and devices differ ---- */

/*
 * Sleeps while the u32 @word (at @offset) equals @expected, at most until
 * the CLOCK_MONOTONIC instant @end.  Runs without the GIL.  Returns 0 when
 * woken or when the word differs, else an errno value (ETIMEDOUT, EINTR,
 * EFAULT, ...).
 */
static int
backend_wait(MappingObject *self, uint32_t *word, Py_ssize_t offset,
	     uint32_t expected, const struct timespec *end)
{
	if (self->kind == MAPPING_KIND_DEVICE) {
		struct mmapdev_wait req = {
			/* the module addresses words in the whole device */
			.offset = (__u64)(self->map_offset + offset),
			.expected = expected,
			.flags = MMAPDEV_WAIT_ABSTIME,
			.timeout_ns = (__s64)end->tv_sec * NSEC_PER_SEC +
				      end->tv_nsec,
		};

		return ioctl(self->fd, MMAPDEV_IOC_WAIT, &req) < 0 ? errno : 0;
	}
	/* WAIT_BITSET takes an absolute CLOCK_MONOTONIC time; plain WAIT
	 * only a relative one. */
	if (syscall(SYS_futex, word, FUTEX_WAIT_BITSET, expected, end, NULL,
		    FUTEX_BITSET_MATCH_ANY) < 0)
		return errno == EAGAIN ? 0 : errno;	/* EAGAIN: word differs */
	return 0;
}

/* Returns the number woken, or -1 with errno set. */
static long
backend_wake(MappingObject *self, uint32_t *word, Py_ssize_t offset,
	     uint32_t count)
{
	if (self->kind == MAPPING_KIND_DEVICE) {
		struct mmapdev_wake req = {
			/* the module addresses words in the whole device */
			.offset = (__u64)(self->map_offset + offset),
			.count = count,
		};

		return ioctl(self->fd, MMAPDEV_IOC_WAKE, &req);
	}
	return syscall(SYS_futex, word, FUTEX_WAKE,
		       count > INT_MAX ? INT_MAX : (int)count, NULL, NULL, 0);
}

static const char *
backend_name(MappingObject *self, int waking)
{
	if (self->kind == MAPPING_KIND_DEVICE)
		return waking ? "ioctl(MMAPDEV_IOC_WAKE)"
			      : "ioctl(MMAPDEV_IOC_WAIT)";
	return waking ? "futex(FUTEX_WAKE)" : "futex(FUTEX_WAIT_BITSET)";
}

static PyObject *
backend_error(MappingObject *self, int err, int waking, Py_ssize_t offset)
{
	/* A futex on a page past the end of a truncated file: the SIGBUS
	 * case, reported the same way. */
	if (err == EFAULT)
		return mapping_raise_fault(self, offset);
	return sync_raise_errno(err, backend_name(self, waking), offset);
}

long
sync_wake(MappingObject *self, Py_ssize_t offset, uint32_t count)
{
	uint32_t *word = (uint32_t *)mapping_span(self, offset, 4, 4, 0);
	long woken;

	if (word == NULL)
		return -1;
	/* The kernel's FUTEX_WAKE wakes one waiter even when asked for 0. */
	if (count == 0)
		return 0;
	woken = backend_wake(self, word, offset, count);
	if (woken < 0) {
		backend_error(self, errno, 1, offset);
		return -1;
	}
	return woken;
}

/* ---- argument parsing -------------------------------------------- */

/*
 * METH_FASTCALL | METH_KEYWORDS without the private _PyArg_Parser:
 * fills out[i] (borrowed; NULL when absent) for @names, positional first.
 */
static int
parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs,
	   PyObject *kwnames, const char *const *names, Py_ssize_t nnames,
	   Py_ssize_t nrequired, PyObject **out)
{
	Py_ssize_t i, j, nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;

	if (nargs > nnames) {
		PyErr_Format(PyExc_TypeError,
			     "%s() takes at most %zd arguments (%zd given)",
			     fname, nnames, nargs);
		return -1;
	}
	for (i = 0; i < nnames; i++)
		out[i] = i < nargs ? args[i] : NULL;
	for (i = 0; i < nkw; i++) {
		PyObject *key = PyTuple_GET_ITEM(kwnames, i);

		for (j = 0; j < nnames; j++)
			if (PyUnicode_CompareWithASCIIString(key, names[j]) == 0)
				break;
		if (j == nnames) {
			PyErr_Format(PyExc_TypeError,
				     "%s() got an unexpected keyword argument %R",
				     fname, key);
			return -1;
		}
		if (out[j] != NULL) {
			PyErr_Format(PyExc_TypeError,
				     "%s() got multiple values for argument '%s'",
				     fname, names[j]);
			return -1;
		}
		out[j] = args[nargs + i];
	}
	for (i = 0; i < nrequired; i++) {
		if (out[i] == NULL) {
			PyErr_Format(PyExc_TypeError,
				     "%s() missing required argument '%s'",
				     fname, names[i]);
			return -1;
		}
	}
	return 0;
}

/* A non-negative C long from @obj; ValueError naming @what otherwise. */
static int
count_arg(PyObject *obj, const char *what, long max, long *out)
{
	int overflow;
	long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);

	if (v == -1 && PyErr_Occurred())
		return -1;
	if (overflow < 0 || (overflow == 0 && v < 0)) {
		PyErr_Format(PyExc_ValueError, "%s must be >= 0, not %R",
			     what, obj);
		return -1;
	}
	*out = overflow > 0 || v > max ? max : (long)v;
	return 0;
}

/* ---- wait / wake --------------------------------------------------- */

#define SPIN_CHUNK	64

/*
 * Checks the word up to @rounds + 1 times.  Returns 1 (differs), 0 (still
 * equal) or -1 (fault raised).
 */
static int
spin_chunk(MappingObject *self, const uint32_t *word, Py_ssize_t offset,
	   uint32_t expected, long rounds)
{
	struct fault_guard guard;
	long i;

	fault_guard_enter(&guard, self->data, self->size);
	if (sigsetjmp(guard.env, 0)) {
		mapping_raise_fault(self, offset);
		return -1;
	}
	for (i = 0; __atomic_load_n(word, __ATOMIC_SEQ_CST) == expected; i++) {
		if (i >= rounds) {
			fault_guard_leave(&guard);
			return 0;
		}
		sync_cpu_relax();
	}
	fault_guard_leave(&guard);
	return 1;
}

/*
 * Spins (GIL held) until the word differs from @expected, @spins rounds
 * pass or the deadline does.  Returns 1 (differs), 0 (go to sleep) or -1
 * (exception: a fault, or a signal handler raised).
 */
static int
spin_phase(MappingObject *self, const uint32_t *word, Py_ssize_t offset,
	   uint32_t expected, long spins, const struct sync_deadline *deadline)
{
	long done = 0, chunk;
	int rc;

	for (;;) {
		chunk = spins - done < SPIN_CHUNK ? spins - done : SPIN_CHUNK;
		rc = spin_chunk(self, word, offset, expected, chunk);
		if (rc != 0)
			return rc;
		done += chunk;
		if (done >= spins)
			return 0;
		/* The peer may share our CPU: pure spinning would only delay
		 * it, a yield lets it run (one cheap syscall when nothing else
		 * is runnable).  Long spins stay interruptible and bounded by
		 * the timeout. */
		sched_yield();
		if (PyErr_CheckSignals() < 0)
			return -1;
		if (sync_deadline_passed(deadline))
			return 0;
	}
}

static PyObject *
mapping_wait(PyObject *op, PyObject *const *args, Py_ssize_t nargs,
	     PyObject *kwnames)
{
	static const char *const names[] = {"offset", "expected", "timeout",
					    "spin"};
	MappingObject *self = (MappingObject *)op;
	PyObject *argv[4];
	Py_ssize_t offset;
	uint64_t expected;
	long spins;
	struct sync_deadline deadline;
	struct timespec end;
	uint32_t *word;
	int rc, err = 0, last, sig = 0;

	if (parse_args("wait", args, nargs, kwnames, names, 4, 2, argv) < 0)
		return NULL;
	if (!mapping_offset_converter(argv[0], &offset))
		return NULL;
	if (mapping_unsigned_arg(argv[1], 32, &expected) < 0)
		return NULL;
	if (sync_deadline_arg(argv[2], &deadline) < 0)
		return NULL;
	if (argv[3] == NULL || argv[3] == Py_None)
		spins = __atomic_load_n(&wait_spin, __ATOMIC_RELAXED);
	else if (count_arg(argv[3], "spin", MAX_SPIN, &spins) < 0)
		return NULL;
	word = (uint32_t *)mapping_span(self, offset, 4, 4, 0);
	if (word == NULL)
		return NULL;

	rc = spin_phase(self, word, offset, (uint32_t)expected, spins,
			&deadline);
	if (rc < 0)
		return NULL;
	if (rc > 0)
		Py_RETURN_TRUE;
	if (sync_deadline_passed(&deadline))
		Py_RETURN_FALSE;

	/* close() refuses while exports > 0: the pages and the fd stay
	 * valid while we sleep without the GIL. */
	self->exports++;
	Py_BEGIN_ALLOW_THREADS
	for (;;) {
		sync_slice_end(&deadline, &end, &last);
		err = backend_wait(self, word, offset, (uint32_t)expected, &end);
		if (err == 0) {
			rc = 1;
			break;
		}
		if (err == ETIMEDOUT && last) {
			rc = 0;
			break;
		}
		if (err != ETIMEDOUT && err != EINTR) {
			rc = -1;
			break;
		}
		/* EINTR, or a slice passed: run the signal handlers */
		Py_BLOCK_THREADS
		sig = PyErr_CheckSignals();
		Py_UNBLOCK_THREADS
		if (sig < 0) {
			rc = -1;
			break;
		}
	}
	Py_END_ALLOW_THREADS
	self->exports--;

	if (rc < 0)
		return sig < 0 ? NULL : backend_error(self, err, 0, offset);
	return PyBool_FromLong(rc);
}

static PyObject *
mapping_wake(PyObject *op, PyObject *const *args, Py_ssize_t nargs,
	     PyObject *kwnames)
{
	static const char *const names[] = {"offset", "count"};
	PyObject *argv[2];
	Py_ssize_t offset;
	long count = 1, woken;

	if (parse_args("wake", args, nargs, kwnames, names, 2, 1, argv) < 0)
		return NULL;
	if (!mapping_offset_converter(argv[0], &offset))
		return NULL;
	if (argv[1] != NULL && count_arg(argv[1], "count",
					 (long)UINT32_MAX, &count) < 0)
		return NULL;
	woken = sync_wake((MappingObject *)op, offset, (uint32_t)count);
	if (woken < 0)
		return NULL;
	return PyLong_FromLong(woken);
}

PyMethodDef mapping_wait_methods[] = {
	{"wait", (PyCFunction)(void (*)(void))mapping_wait,
	 METH_FASTCALL | METH_KEYWORDS,
	 "wait($self, /, offset, expected, timeout=None, spin=None)\n--\n\n"
	 "Sleep while the aligned u32 at offset equals expected.\n\n"
	 "Spins for `spin` rounds first (default: get_spin()), then sleeps\n"
	 "with the GIL released.  Returns True when woken or when the word\n"
	 "differs, False when `timeout` seconds pass (None: no limit).\n"
	 "Signal handlers run while waiting (Ctrl-C raises\n"
	 "KeyboardInterrupt).  Wake-ups may be spurious: re-check the word."},
	{"wake", (PyCFunction)(void (*)(void))mapping_wake,
	 METH_FASTCALL | METH_KEYWORDS,
	 "wake($self, /, offset, count=1)\n--\n\n"
	 "Wake at most count processes or threads waiting on the aligned\n"
	 "u32 at offset; returns how many were woken."},
	{NULL, NULL, 0, NULL}
};

/* ---- module-level tuning ------------------------------------------- */

static PyObject *
set_spin(PyObject *Py_UNUSED(module), PyObject *arg)
{
	long spins;

	if (count_arg(arg, "spin", MAX_SPIN, &spins) < 0)
		return NULL;
	__atomic_store_n(&wait_spin, spins, __ATOMIC_RELAXED);
	Py_RETURN_NONE;
}

static PyObject *
get_spin(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
	return PyLong_FromLong(__atomic_load_n(&wait_spin, __ATOMIC_RELAXED));
}

PyMethodDef wait_functions[] = {
	{"set_spin", set_spin, METH_O,
	 "set_spin(rounds, /)\n--\n\n"
	 "Set how many rounds Mapping.wait() spins before it sleeps "
	 "(this process; 0 = sleep at once)."},
	{"get_spin", get_spin, METH_NOARGS,
	 "get_spin()\n--\n\nThe spin rounds of Mapping.wait() before it "
	 "sleeps."},
	{NULL, NULL, 0, NULL}
};
