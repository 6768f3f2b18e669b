/*
 * The one blocking loop.  wait(), Lock, Slot and Channel all block the same
 * way: spin a little with the GIL held, then sleep without it on a u32 word
 * of the mapping until the word changes, a wake-up comes, a signal handler
 * raises, or the deadline passes.
 *
 * What to wait *for* is the caller's: a poll() function looks at shared
 * memory and says "ready", "sleep on this word while it holds this value",
 * or fails.  poll() runs under the fault guard and possibly without the
 * GIL, so it uses no Python API; every value it reads from shared memory
 * is untrusted and checked.
 *
 * Sleeping uses the shared futex for file and memfd pages and the mmapdev
 * module's WAIT/WAKE ioctls for its device pages (shared futexes fail there:
 * the pages have no page->mapping); on other devices' memory (PCI BARs,
 * /dev/mem, UIO maps) nothing can wake a sleeper, so it polls every
 * BLOCK_POLL_NS.  The mapping's `wake` picks one; that is the only place
 * where the kinds of mapping differ.
 */
#ifndef PYMMAPDEV_BLOCK_H
#define PYMMAPDEV_BLOCK_H

#include "mapping.h"

#include <time.h>

/*
 * While a poll() watches a peer that may die (a lock holder, a writer mid-
 * publish), sleeps last at most this long and poll() is asked to check the
 * peer between them: a dead peer costs the others about this much.
 */
#define BLOCK_SLICE_NS	(50 * 1000 * 1000LL)

/*
 * Memory nobody can wake a sleeper on (MAPPING_WAKE_POLL: a PCI BAR, memory
 * another machine writes) is looked at this often.  Shorter costs CPU for
 * every sleeper, longer costs latency.
 */
#define BLOCK_POLL_NS	(1000 * 1000LL)

/* Offset of the low 32-bit half of a u64 word: a 64-bit state word is
 * slept on through the half that changes (futexes are 32-bit). */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define BLOCK_LOW_HALF	0
#else
#define BLOCK_LOW_HALF	4
#endif

/* An absolute CLOCK_MONOTONIC deadline: EINTR retries never extend it. */
struct deadline {
	struct timespec at;
	int forever;
};

/* The one conversion of a timeout (args.h rules): seconds (int, float,
 * anything with __float__ or __index__), None or NULL = forever.  A bool or
 * a non-number is a TypeError, a negative or NaN a ValueError; more than
 * 1e9 s is forever.  arg_timeout: *secs, -1.0 for forever; arg_deadline:
 * the deadline from now. */
int arg_timeout(PyObject *timeout, double *secs);
int arg_deadline(PyObject *timeout, struct deadline *d);
int deadline_passed(const struct deadline *d);

/* poll() results; a poll may also return its own codes <= BLOCK_FAIL,
 * which block_until() hands back with no exception set. */
enum {
	BLOCK_READY = 1,	/* done: block_until returns it */
	BLOCK_SLEEP = 0,	/* sleep on sleep_offset while == sleep_expected */
	BLOCK_TIMEOUT = -1,	/* (block_until only) the deadline passed */
	BLOCK_ERROR = -2,	/* (block_until only) an exception is set */
	BLOCK_FAIL = -3,
};

struct block_op {
	struct gate *gate;	/* the admitted span (pinned PIN_WAIT) */
	/*
	 * Looks at shared memory.  @thorough is set before the first sleep
	 * and when a slice ends: the time for slow checks (is the peer
	 * alive?).  On BLOCK_SLEEP it fills sleep_offset/sleep_expected, and
	 * sets watch_peer when a peer's death must end the wait.
	 */
	int (*poll)(struct block_op *op, int thorough);
	/*
	 * Optional: announces a sleeper (sleeping = 1) before the last poll
	 * preceding a sleep, and withdraws it (0) afterwards, so a waker can
	 * skip the wake-up syscall when nobody sleeps.  Runs guarded.
	 */
	void (*announce)(struct block_op *op, int sleeping);
	void *ctx;		/* the caller's */
	long spin;		/* polls before the first sleep */
	int wake_is_ready;	/* a wake-up ends the wait (Mapping.wait's
				 * contract); else poll() decides */
	long long max_sleep_ns;	/* 0: no bound; else each sleep's bound */
	/* set by poll() */
	Py_ssize_t sleep_offset;
	uint32_t sleep_expected;
	int watch_peer;
	/* internal */
	int announced;
};

/*
 * Runs the loop (GIL held on entry and exit).  Returns BLOCK_READY,
 * BLOCK_TIMEOUT, BLOCK_ERROR (an exception is set: a signal handler raised,
 * the memory faulted, the sleep syscall failed), or a poll's own failure.
 */
int block_until(struct block_op *op, const struct deadline *d);

/*
 * Wakes at most @count sleepers on the aligned u32 at @offset of an
 * admitted mapping.  Returns how many were woken, or -1 with an exception.
 * Does not block.
 */
long block_wake(MappingObject *map, Py_ssize_t offset, uint32_t count);

/*
 * The futex back end's one sleep, without the GIL: while the shared u32 at
 * @word equals @expected, until the CLOCK_MONOTONIC time @end (NULL:
 * forever).  Returns 0 when woken or when the word differs, else an errno
 * value (ETIMEDOUT, EINTR, EFAULT, ...).  Only the kernel reads @word (an
 * address no longer mapped is EFAULT, never a crash).  An @end in the past
 * only compares the word.
 */
int block_futex_sleep(const uint32_t *word, uint32_t expected, const struct timespec *end);

/* Raises the exception for a sleep on @offset that failed with @err
 * (MappingFault for EFAULT, else OSError naming the syscall); NULL. */
PyObject *block_sleep_error(MappingObject *map, int err, Py_ssize_t offset);

/* Spin rounds before sleeping, per process (set_spin/get_spin). */
long block_default_spin(void);

/* Keeps the CPU polite inside a spin loop. */
static inline void
block_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
	__asm__ __volatile__("yield" ::: "memory");
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

/* module functions (block.c; module.c lists them) */
PyObject *block_set_spin(PyObject *module, PyObject *arg);
PyObject *block_get_spin(PyObject *module, PyObject *ignored);
PyObject *block_timeout_seconds(PyObject *module, PyObject *timeout);
long block_max_spin(void);

#define BLOCK_FUNCTIONS_METHODDEFS						\
	{"set_spin", block_set_spin, METH_O,					\
	 "set_spin(rounds, /)\n--\n\n"						\
	 "Set how many rounds a blocking call spins before it sleeps "		\
	 "(this process; 0 = sleep at once)."},					\
	{"get_spin", block_get_spin, METH_NOARGS,				\
	 "get_spin()\n--\n\nThe spin rounds of blocking calls before they sleep."}, \
	{"timeout_seconds", block_timeout_seconds, METH_O,			\
	 "timeout_seconds(timeout, /)\n--\n\n"					\
	 "A timeout by the blocking calls' rules: seconds as a float, or None "	\
	 "for forever (also past 1e9 s)."},

#endif
