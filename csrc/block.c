/*
 * The blocking loop (block.h says what it is for).
 *
 * Signals.  Python runs signal handlers only in the main thread, and the
 * kernel hands a process-directed signal (kill(), Ctrl-C) to the thread
 * group leader first whenever it does not block the signal: a main thread
 * asleep in futex_wait() or the mmapdev WAIT ioctl is woken with EINTR, and
 * we run the handlers then.  So a plain wait() sleeps with no timer at all
 * unless it has a deadline (a timer costs ~0.4 us a round trip); only
 * waits that watch a peer for death sleep in slices.  Handlers also run
 * after every slice and right before the first sleep: a signal handled
 * while we polled without the GIL does not interrupt a later sleep.  (A
 * signal landing in the instant between that last check and the sleep
 * syscall is seen at the next wake-up, as in CPython's own lock waits.)
 */
#include "block.h"
#include "args.h"
#include "mmapdev.h"
#include "wait.h"

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
/* polls per guarded spin chunk; between chunks: yield, signals, deadline */
#define SPIN_CHUNK	64

/* ---- deadlines ----------------------------------------------------- */

/* Whether the int @obj is below 0 (0 on error, with the error set). */
static int
int_is_negative(PyObject *obj)
{
	PyObject *zero = PyLong_FromLong(0);
	int negative;

	if (zero == NULL)
		return 0;
	negative = PyObject_RichCompareBool(obj, zero, Py_LT);
	Py_DECREF(zero);
	return negative > 0;
}

int
arg_timeout(PyObject *timeout, double *secs)
{
	*secs = -1.0;
	if (timeout == NULL || timeout == Py_None)
		return 0;
	/* threading's acquire(blocking): as seconds, True would be a 1 s
	 * timeout whose False a caller used to blocking calls never checks */
	if (PyBool_Check(timeout)) {
		PyErr_SetString(PyExc_TypeError, "timeout is a number of seconds or None, not a "
				"bool (True would wait 1 s, False not at all)");
		return -1;
	}
	*secs = PyFloat_AsDouble(timeout);
	if (*secs == -1.0 && PyErr_Occurred()) {
		if (PyErr_ExceptionMatches(PyExc_OverflowError) && PyLong_Check(timeout)) {
			/* an int past a float's range (10**400): forever, as inf
			 * is, or refused below as any negative one */
			PyErr_Clear();
			*secs = int_is_negative(timeout) ? -1.0 : INFINITY;
			if (PyErr_Occurred())
				return -1;
		} else {
			if (PyErr_ExceptionMatches(PyExc_TypeError)) {
				PyErr_Clear();
				PyErr_Format(PyExc_TypeError,
					     "timeout must be a number of seconds or None, not %.200s",
					     Py_TYPE(timeout)->tp_name);
			}
			return -1;
		}
	}
	if (isnan(*secs) || *secs < 0) {
		PyErr_Format(PyExc_ValueError,
			     "timeout must be a non-negative number or None, not %R", timeout);
		return -1;
	}
	/* Beyond ~30 years the deadline would risk overflowing time_t
	 * arithmetic for no practical difference: treat it as forever. */
	if (*secs > 1e9)
		*secs = -1.0;
	return 0;
}

int
arg_deadline(PyObject *timeout, struct deadline *d)
{
	double secs;

	d->forever = 1;
	if (arg_timeout(timeout, &secs) < 0)
		return -1;
	if (secs < 0)
		return 0;
	clock_gettime(CLOCK_MONOTONIC, &d->at);		/* cannot fail: valid clock */
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
	return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

int
deadline_passed(const struct deadline *d)
{
	struct timespec now;

	if (d->forever)
		return 0;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return !timespec_before(&now, &d->at);
}

/*
 * The end of the next sleep: the deadline, or now + @bound_ns when that is
 * earlier (bound 0: none).  Returns 1 when the sleep ends at the deadline
 * (a timeout then is the caller's timeout), 0 otherwise; *end is NULL for
 * an unbounded sleep.
 */
static int
sleep_end(const struct deadline *d, long long bound_ns, struct timespec *buf,
	  const struct timespec **end)
{
	if (bound_ns == 0) {
		*end = d->forever ? NULL : &d->at;
		return !d->forever;
	}
	clock_gettime(CLOCK_MONOTONIC, buf);
	buf->tv_sec += bound_ns / NSEC_PER_SEC;
	buf->tv_nsec += bound_ns % NSEC_PER_SEC;
	if (buf->tv_nsec >= NSEC_PER_SEC) {
		buf->tv_sec++;
		buf->tv_nsec -= NSEC_PER_SEC;
	}
	*end = buf;
	if (!d->forever && !timespec_before(buf, &d->at)) {
		*end = &d->at;
		return 1;
	}
	return 0;
}

/* ---- the back end: the one place where files and devices differ ---- */

int
block_futex_sleep(const uint32_t *word, uint32_t expected, const struct timespec *end)
{
	/* Never FUTEX_PRIVATE_FLAG: the peer is another process.  WAIT_BITSET
	 * takes an absolute CLOCK_MONOTONIC time, plain WAIT a relative one. */
	if (syscall(SYS_futex, word, FUTEX_WAIT_BITSET, expected, end, NULL,
		    FUTEX_BITSET_MATCH_ANY) < 0)
		return errno == EAGAIN ? 0 : errno;	/* EAGAIN: the word differs */
	return 0;
}

/*
 * Sleeps while the u32 at @offset equals @expected, until @end (NULL:
 * forever).  No GIL.  Returns 0 when woken or when the word differs, else
 * an errno value (ETIMEDOUT, EINTR, EFAULT, ...).
 */
static int
backend_sleep(MappingObject *map, Py_ssize_t offset, uint32_t expected,
	      const struct timespec *end)
{
	struct mmapdev_wait req;
	int rc;

	switch (map->wake) {
	case MAPPING_WAKE_FUTEX:
		return block_futex_sleep((const uint32_t *)(map->data + offset), expected, end);
	case MAPPING_WAKE_MMAPDEV:
		req = (struct mmapdev_wait){
			/* the module addresses words in the whole device */
			.offset = (__u64)(map->map_offset + offset),
			.expected = expected,
			.flags = MMAPDEV_WAIT_ABSTIME,
			.timeout_ns = end ? (__s64)end->tv_sec * NSEC_PER_SEC + end->tv_nsec : -1,
		};
		return ioctl(map->fd, MMAPDEV_IOC_WAIT, &req) < 0 ? errno : 0;
	case MAPPING_WAKE_POLL:
		/* Nothing can wake us: sleep to @end, which block_until() keeps
		 * within BLOCK_POLL_NS, and let the caller look again. */
		rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, end, NULL);
		return rc == 0 ? ETIMEDOUT : rc;
	}
	return EINVAL;
}

static long
backend_wake(MappingObject *map, Py_ssize_t offset, uint32_t count)
{
	struct mmapdev_wake req;

	switch (map->wake) {
	case MAPPING_WAKE_FUTEX:
		return syscall(SYS_futex, map->data + offset, FUTEX_WAKE,
			       count > INT_MAX ? INT_MAX : (int)count, NULL, NULL, 0);
	case MAPPING_WAKE_MMAPDEV:
		req = (struct mmapdev_wake){
			.offset = (__u64)(map->map_offset + offset),
			.count = count,
		};
		return ioctl(map->fd, MMAPDEV_IOC_WAKE, &req);
	case MAPPING_WAKE_POLL:
		return 0;		/* sleepers poll: they see the store itself */
	}
	return 0;
}

static PyObject *
backend_error(MappingObject *map, int err, int waking, Py_ssize_t offset)
{
	static const char *const names[][2] = {
		[MAPPING_WAKE_FUTEX] = {"futex(FUTEX_WAIT_BITSET)", "futex(FUTEX_WAKE)"},
		[MAPPING_WAKE_MMAPDEV] = {"ioctl(MMAPDEV_IOC_WAIT)", "ioctl(MMAPDEV_IOC_WAKE)"},
		[MAPPING_WAKE_POLL] = {"clock_nanosleep", "(no wake-up)"},
	};
	const char *what = names[map->wake][waking != 0];
	PyObject *msg, *value;

	/* A futex on a page past the end of a truncated file: the SIGBUS
	 * case, reported the same way. */
	if (err == EFAULT)
		return mapping_raise_fault(map, map->data + offset, NULL);
	msg = PyUnicode_FromFormat("%s at offset %zd: %s", what, offset, strerror(err));
	/* OSError(errno, msg, path) picks the errno's subclass */
	value = msg ? Py_BuildValue("(iNO)", err, msg, map->path) : NULL;
	if (value != NULL) {
		PyErr_SetObject(PyExc_OSError, value);
		Py_DECREF(value);
	}
	return NULL;
}

PyObject *
block_sleep_error(MappingObject *map, int err, Py_ssize_t offset)
{
	return backend_error(map, err, 0, offset);
}

long
block_wake(MappingObject *map, Py_ssize_t offset, uint32_t count)
{
	long woken;

	/* The kernel's FUTEX_WAKE wakes one waiter even when asked for 0. */
	if (count == 0)
		return 0;
	woken = backend_wake(map, offset, count);
	if (woken < 0) {
		backend_error(map, errno, 1, offset);
		return -1;
	}
	return woken;
}

/* ---- spin tuning ----------------------------------------------------- */

/*
 * One poll round is a few loads and a pause (~20-40 ns on current x86),
 * with a sched_yield() every SPIN_CHUNK, so the default spins roughly
 * 10-20 us: longer than a cross-core hand-off, shorter than a futex
 * sleep/wake cycle.
 */
#define DEFAULT_SPIN	500
#define MAX_SPIN	(1L << 30)

static long default_spin = DEFAULT_SPIN;	/* relaxed atomics */

long
block_default_spin(void)
{
	return __atomic_load_n(&default_spin, __ATOMIC_RELAXED);
}

/* ---- the loop -------------------------------------------------------- */

struct poll_call {
	struct block_op *op;
	int thorough;
	long rounds;		/* spin: polls in this chunk */
};

static int
poll_body(void *arg)
{
	struct poll_call *c = arg;

	return c->op->poll(c->op, c->thorough);
}

static int
spin_body(void *arg)
{
	struct poll_call *c = arg;
	int rc = BLOCK_SLEEP;

	for (long i = 0; i < c->rounds; i++) {
		rc = c->op->poll(c->op, 0);
		if (rc != BLOCK_SLEEP)
			break;
		block_cpu_relax();
	}
	return rc;
}

static int
announce_body(void *arg)
{
	struct poll_call *c = arg;

	c->op->announce(c->op, c->thorough);
	return 0;
}

/* Runs @body guarded over the op's span; a fault becomes BLOCK_FAULT_HIT. */
static int
guarded(struct block_op *op, int (*body)(void *), struct poll_call *c,
	const char **fault_addr)
{
	struct fault_span span = {op->gate->addr, (size_t)op->gate->len};

	return fault_run(body, c, &span, 1, fault_addr);
}

static void
withdraw(struct block_op *op)
{
	struct poll_call c = {op, 0, 0};
	const char *addr;

	if (op->announced) {
		op->announced = 0;
		(void)guarded(op, announce_body, &c, &addr);	/* a fault: nothing to undo */
	}
}

/*
 * After signal handlers ran: one may have forked, and the child goes on
 * with this wait.  The announcement it inherited is the parent's, who
 * withdraws it: the child makes its own, or both withdrawals would take
 * the count below zero (a later sleeper counted as none then misses its
 * wake-up).  No re-check needed: the sleep still compares the word read
 * after the parent's announcement.  No GIL needed.
 */
static void
announce_after_fork(struct block_op *op, unsigned long *generation)
{
	struct poll_call c = {op, 1, 0};
	const char *addr;

	if (*generation == gate_generation())
		return;
	*generation = gate_generation();
	if (op->announced)
		op->announced = guarded(op, announce_body, &c, &addr) == 0;
}

/* Spins with the GIL held.  Returns a poll result or BLOCK_ERROR/TIMEOUT. */
static int
spin_phase(struct block_op *op, const struct deadline *d, const char **fault_addr)
{
	struct poll_call c = {op, 0, 0};
	long done = 0;
	int rc;

	for (;;) {
		c.rounds = op->spin - done < SPIN_CHUNK ? op->spin - done : SPIN_CHUNK;
		rc = guarded(op, spin_body, &c, fault_addr);
		if (rc != BLOCK_SLEEP)
			return rc;
		done += c.rounds;
		if (done >= op->spin)
			return BLOCK_SLEEP;
		/* The peer may share our CPU: pure spinning would only delay
		 * it, a yield lets it run (one cheap syscall when nothing else
		 * is runnable).  Long spins stay interruptible and bounded. */
		sched_yield();
		if (PyErr_CheckSignals() < 0)
			return BLOCK_ERROR;
		if (deadline_passed(d))
			return BLOCK_TIMEOUT;
	}
}

int
block_until(struct block_op *op, const struct deadline *d)
{
	struct poll_call c = {op, 1, 0};
	struct timespec buf;
	const struct timespec *end;
	const char *fault_addr = NULL;
	int rc, err = 0, last, signalled = 0, polled;
	long long bound, ticks = 0;
	unsigned long generation = gate_generation(), wakes = 0;

	op->announced = 0;
	op->watch_peer = 0;
	rc = op->spin > 0 ? spin_phase(op, d, &fault_addr) : BLOCK_SLEEP;
	if (rc == BLOCK_TIMEOUT) {
		/* The deadline passed while spinning (a timeout of 0: a
		 * try): the slow checks still come first, or a dead peer
		 * reads as a live one at every try, never taken over. */
		rc = guarded(op, poll_body, &c, &fault_addr);
		if (rc == BLOCK_SLEEP)
			rc = BLOCK_TIMEOUT;
	}
	if (rc != BLOCK_SLEEP)
		goto out;

	/* About to sleep: the slow checks once, then announce and re-check,
	 * so a waker that missed the announcement is seen here. */
	rc = guarded(op, poll_body, &c, &fault_addr);
	if (rc == BLOCK_SLEEP && op->announce != NULL) {
		c.thorough = 1;
		generation = gate_generation();
		rc = guarded(op, announce_body, &c, &fault_addr);
		op->announced = rc == 0;
		if (rc == 0) {
			c.thorough = 0;
			rc = guarded(op, poll_body, &c, &fault_addr);
		}
	}
	if (rc != BLOCK_SLEEP)
		goto out;
	if (deadline_passed(d)) {
		rc = BLOCK_TIMEOUT;
		goto out;
	}
	/* A signal that arrived while we polled without the GIL (or between
	 * spin chunks) will not interrupt a sleep that starts after it. */
	signalled = PyErr_CheckSignals();
	announce_after_fork(op, &generation);	/* also before withdrawing */
	if (signalled < 0) {
		rc = BLOCK_ERROR;
		goto out;
	}

	Py_BEGIN_ALLOW_THREADS
	for (;;) {
		bound = op->max_sleep_ns;
		if (op->watch_peer && (bound == 0 || bound > BLOCK_SLICE_NS))
			bound = BLOCK_SLICE_NS;
		polled = op->gate->map->wake == MAPPING_WAKE_POLL &&
			 (bound == 0 || bound > BLOCK_POLL_NS);
		if (polled)
			bound = BLOCK_POLL_NS;
		last = sleep_end(d, bound, &buf, &end);
		err = backend_sleep(op->gate->map, op->sleep_offset, op->sleep_expected, end);
		if (err != 0 && err != ETIMEDOUT && err != EINTR) {
			rc = BLOCK_ERROR;
			break;
		}
		if (err == 0 && op->wake_is_ready) {
			rc = BLOCK_READY;
			break;
		}
		/* A poll tick is not a slice: the slow checks once a slice. */
		c.thorough = err == ETIMEDOUT &&
			     (!polled || last || ++ticks % (BLOCK_SLICE_NS / BLOCK_POLL_NS) == 0);
		rc = guarded(op, poll_body, &c, &fault_addr);
		if (rc != BLOCK_SLEEP)
			break;
		if (err == ETIMEDOUT && last) {
			rc = BLOCK_TIMEOUT;
			break;
		}
		/*
		 * Woken (or the word differed) and still waiting.  A word that
		 * keeps changing between our poll and the sleep's compare (a
		 * busy Lock, a peer churning it) ends every sleep at once,
		 * before its timeout can (the kernel compares first): so the
		 * deadline is checked here too, and the signals now and then.
		 */
		if (err == 0 && last && deadline_passed(d)) {
			rc = BLOCK_TIMEOUT;
			break;
		}
		if (err == EINTR || err == ETIMEDOUT || (err == 0 && ++wakes % 64 == 0)) {
			Py_BLOCK_THREADS
			signalled = PyErr_CheckSignals();
			Py_UNBLOCK_THREADS
			announce_after_fork(op, &generation);
			if (signalled < 0) {
				rc = BLOCK_ERROR;
				break;
			}
		}
	}
	Py_END_ALLOW_THREADS

	if (rc == BLOCK_ERROR && signalled == 0 && err != 0 && err != ETIMEDOUT && err != EINTR)
		backend_error(op->gate->map, err, 0, op->sleep_offset);
out:
	withdraw(op);
	if (rc == FAULT_HIT) {
		mapping_raise_fault(op->gate->map, fault_addr, NULL);
		return BLOCK_ERROR;
	}
	return rc;
}

/* ---- module functions (BLOCK_FUNCTIONS_METHODDEFS in module.c) ------- */

/* The Python-side waits (UIO, the Channel's async calls) and the asyncio
 * ones take their timeout through here: one set of rules and wordings. */
PyObject *
block_timeout_seconds(PyObject *Py_UNUSED(module), PyObject *timeout)
{
	double secs;

	if (arg_timeout(timeout, &secs) < 0)
		return NULL;
	if (secs < 0)
		Py_RETURN_NONE;
	return PyFloat_FromDouble(secs);
}

PyObject *
block_set_spin(PyObject *Py_UNUSED(module), PyObject *arg)
{
	long spins = 0;

	if (arg == Py_None) {
		PyErr_SetString(PyExc_TypeError, "set_spin() needs an int, not None");
		return NULL;
	}
	if (arg_count(arg, "spin", MAX_SPIN, &spins) < 0)
		return NULL;
	__atomic_store_n(&default_spin, spins, __ATOMIC_RELAXED);
	Py_RETURN_NONE;
}

PyObject *
block_get_spin(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
	return PyLong_FromLong(block_default_spin());
}

long
block_max_spin(void)
{
	return MAX_SPIN;
}
