/*
 * The primitives behind pymmapdev.Lock: a process-shared, robust
 * pthread_mutex_t living in a file or shared-memory mapping.
 *
 * Layout at the lock's offset (a multiple of LOCK_ALIGN, so the lock owns
 * one cache line and never straddles a page):
 *
 *	+0	u32	state: 0 = never used, INIT_TAG | pid = being initialised
 *			by pid, LOCK_READY = the mutex below is initialised
 *	+4	u32	reserved (0)
 *	+8	pthread_mutex_t (40 bytes on x86-64 glibc)
 *	...	up to LOCK_SIZE bytes
 *
 * Exactly-once initialisation: whoever moves state 0 -> INIT_TAG | pid with
 * a compare-exchange initialises the mutex and then stores LOCK_READY; the
 * others wait for LOCK_READY.  If the initialiser died in between (its pid
 * is gone), a waiter takes the initialisation over with another
 * compare-exchange.  The region must be zero before first use, as a new
 * file or shared-memory object is.
 *
 * Device mappings are refused: robust (and shared) futexes need pages with
 * a page->mapping, which the mmapdev buffer does not have (the futex fails
 * with EFAULT), so a holder's death could not be detected there.
 */
#include "mapping.h"
#include "sync.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <sys/types.h>
#include <unistd.h>

#define LOCK_SIZE	64
#define LOCK_ALIGN	64
#define LOCK_MUTEX_OFF	8
#define LOCK_READY	0x4c4f434bU	/* "LOCK" */
#define INIT_TAG	0xa5000000U
#define INIT_TAG_MASK	0xff000000U	/* pid_max is at most 2^22 */

_Static_assert(LOCK_MUTEX_OFF % _Alignof(pthread_mutex_t) == 0,
	       "pthread_mutex_t misaligned in the lock layout");
_Static_assert(LOCK_MUTEX_OFF + sizeof(pthread_mutex_t) <= LOCK_SIZE,
	       "pthread_mutex_t does not fit LOCK_SIZE");

/* acquire() results, mirrored in pymmapdev/sync.py */
enum { ACQ_TIMEOUT = 0, ACQ_OK = 1, ACQ_OWNER_DIED = 2 };

struct lock_ref {
	MappingObject *map;
	Py_ssize_t offset;
	uint32_t *state;
	pthread_mutex_t *mutex;
};

/*
 * args[0] is a Mapping, args[1] an offset of a lock inside it; fills @ref.
 * Returns 0, or -1 with TypeError/ValueError.
 */
static int
lock_ref_arg(PyObject *module, const char *fname, PyObject *const *args,
	     Py_ssize_t nargs, Py_ssize_t want, struct lock_ref *ref)
{
	char *base;

	if (mapping_place_args(module, fname, args, nargs, want, &ref->map,
			       &ref->offset) < 0)
		return -1;
	if (ref->map->kind == MAPPING_KIND_DEVICE) {
		PyErr_SetString(PyExc_TypeError,
				"pymmapdev.Lock needs a file or shared-memory "
				"mapping: device pages cannot hold a robust "
				"process-shared mutex (shared futexes fail "
				"there); use Mapping.wait()/wake() or a Slot");
		return -1;
	}
	/* Writable: even acquiring writes the mutex's owner word. */
	base = mapping_span(ref->map, ref->offset, LOCK_SIZE, LOCK_ALIGN, 1);
	if (base == NULL)
		return -1;
	ref->state = (uint32_t *)base;
	ref->mutex = (pthread_mutex_t *)(base + LOCK_MUTEX_OFF);
	return 0;
}

/*
 * Reads the state word under the SIGBUS guard: the pthread calls that
 * follow run unguarded (a siglongjmp out of glibc would leave its robust
 * list inconsistent), so a truncated file is reported here, before them.
 */
static int
lock_touch(struct lock_ref *ref, uint32_t *state)
{
	struct fault_guard guard;

	fault_guard_enter(&guard, ref->map->data, ref->map->size);
	if (sigsetjmp(guard.env, 0)) {
		mapping_raise_fault(ref->map, ref->offset);
		return -1;
	}
	*state = __atomic_load_n(ref->state, __ATOMIC_ACQUIRE);
	fault_guard_leave(&guard);
	return 0;
}

static PyObject *
lock_errno(int err, const char *what, struct lock_ref *ref)
{
	return sync_raise_errno(err, what, ref->offset);
}

/* Initialises the mutex; the caller owns state (INIT_TAG | pid). */
static int
lock_init_mutex(pthread_mutex_t *mutex)
{
	pthread_mutexattr_t attr;
	int err;

	err = pthread_mutexattr_init(&attr);
	if (err)
		return err;
	/* ERRORCHECK: relocking from the owner thread reports EDEADLK and a
	 * release by a non-owner EPERM, instead of hanging or corrupting. */
	if (!(err = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED)) &&
	    !(err = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST)) &&
	    !(err = pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK)))
		err = pthread_mutex_init(mutex, &attr);
	pthread_mutexattr_destroy(&attr);
	return err;
}

/*
 * True when @state is an initialisation in progress by a live process.
 * Our own pid there is stale: lock_init() holds the GIL from its
 * compare-exchange to LOCK_READY, so no thread of ours is mid-way.
 */
static int
initialiser_alive(uint32_t state)
{
	pid_t pid = (pid_t)(state & ~INIT_TAG_MASK);

	if (pid == getpid())
		return 0;
	return kill(pid, 0) == 0 || errno != ESRCH;
}

static PyObject *
lock_init(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
	struct lock_ref ref;
	uint32_t state, mine = INIT_TAG | (uint32_t)getpid();
	int err;

	if (lock_ref_arg(module, "lock_init", args, nargs, 2, &ref) < 0)
		return NULL;
	if (lock_touch(&ref, &state) < 0)
		return NULL;
	for (;;) {
		if (state == LOCK_READY)
			Py_RETURN_NONE;
		if (state != 0 && (state & INIT_TAG_MASK) != INIT_TAG) {
			PyErr_Format(PyExc_ValueError,
				     "offset %zd does not hold a pymmapdev.Lock "
				     "(state word 0x%08x; the %d bytes of a new "
				     "lock must be zero)",
				     ref.offset, (unsigned)state, LOCK_SIZE);
			return NULL;
		}
		if (state == 0 || !initialiser_alive(state)) {
			/* On failure @state receives the current value. */
			if (__atomic_compare_exchange_n(ref.state, &state, mine,
							0, __ATOMIC_ACQ_REL,
							__ATOMIC_ACQUIRE))
				break;
			continue;
		}
		/* Another process is initialising: a matter of
		 * microseconds, so a short sleep without the GIL. */
		Py_BEGIN_ALLOW_THREADS
		usleep(100);
		Py_END_ALLOW_THREADS
		if (PyErr_CheckSignals() < 0)
			return NULL;
		state = __atomic_load_n(ref.state, __ATOMIC_ACQUIRE);
	}

	err = lock_init_mutex(ref.mutex);
	if (err) {
		__atomic_store_n(ref.state, 0, __ATOMIC_RELEASE);
		return lock_errno(err, "pthread_mutex_init", &ref);
	}
	__atomic_store_n(ref.state, LOCK_READY, __ATOMIC_RELEASE);
	Py_RETURN_NONE;
}

/* Checks that lock_init() ran on this offset (by anyone). */
static int
lock_ready(struct lock_ref *ref)
{
	uint32_t state;

	if (lock_touch(ref, &state) < 0)
		return -1;
	if (state != LOCK_READY) {
		PyErr_Format(PyExc_ValueError,
			     "offset %zd does not hold an initialised "
			     "pymmapdev.Lock (state word 0x%08x)",
			     ref->offset, (unsigned)state);
		return -1;
	}
	return 0;
}

/* Maps a pthread lock result to ACQ_* or an exception (-1). */
static int
lock_result(int err, struct lock_ref *ref)
{
	switch (err) {
	case 0:
		return ACQ_OK;
	case EOWNERDEAD:
		/* The holder died inside its critical section.  We hold the
		 * mutex now; mark it usable again and let Python tell the
		 * caller, who must repair the protected state. */
		err = pthread_mutex_consistent(ref->mutex);
		if (err) {
			lock_errno(err, "pthread_mutex_consistent", ref);
			return -1;
		}
		return ACQ_OWNER_DIED;
	case EBUSY:
	case ETIMEDOUT:
		return ACQ_TIMEOUT;
	case EDEADLK:
		PyErr_Format(PyExc_RuntimeError,
			     "the Lock at offset %zd is already held by this "
			     "thread (it is not recursive)", ref->offset);
		return -1;
	case ENOTRECOVERABLE:
		PyErr_Format(PyExc_RuntimeError,
			     "the Lock at offset %zd is unrecoverable: a "
			     "previous owner died and the lock was released "
			     "without being made consistent", ref->offset);
		return -1;
	default:
		lock_errno(err, "pthread_mutex_lock", ref);
		return -1;
	}
}

/* lock_acquire(m, offset, timeout) -> 0 timed out, 1 acquired, 2 acquired
 * from an owner that died */
static PyObject *
lock_acquire(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
	struct lock_ref ref;
	struct sync_deadline deadline;
	struct timespec end;
	int err, last, sig = 0, rc;

	if (lock_ref_arg(module, "lock_acquire", args, nargs, 3, &ref) < 0)
		return NULL;
	if (sync_deadline_arg(args[2], &deadline) < 0)
		return NULL;
	if (lock_ready(&ref) < 0)
		return NULL;

	/* Uncontended: no GIL round trip. */
	err = pthread_mutex_trylock(ref.mutex);
	if (err != EBUSY || sync_deadline_passed(&deadline))
		goto done;

	/* close() refuses while exports > 0: the mutex stays mapped while we
	 * sleep without the GIL. */
	ref.map->exports++;
	Py_BEGIN_ALLOW_THREADS
	for (;;) {
		/* The lock sleep is not interrupted by signals (glibc retries
		 * EINTR), so slices are what lets Ctrl-C through. */
		sync_slice_end(&deadline, &end, &last);
		err = pthread_mutex_clocklock(ref.mutex, CLOCK_MONOTONIC, &end);
		if (err != ETIMEDOUT || last)
			break;
		Py_BLOCK_THREADS
		sig = PyErr_CheckSignals();
		Py_UNBLOCK_THREADS
		if (sig < 0)
			break;
	}
	Py_END_ALLOW_THREADS
	ref.map->exports--;
	if (sig < 0)
		return NULL;

done:
	rc = lock_result(err, &ref);
	return rc < 0 ? NULL : PyLong_FromLong(rc);
}

static PyObject *
lock_release(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
	struct lock_ref ref;
	int err;

	if (lock_ref_arg(module, "lock_release", args, nargs, 2, &ref) < 0)
		return NULL;
	if (lock_ready(&ref) < 0)
		return NULL;
	err = pthread_mutex_unlock(ref.mutex);
	if (err == EPERM) {
		PyErr_Format(PyExc_RuntimeError,
			     "release of the Lock at offset %zd, which this "
			     "thread does not hold", ref.offset);
		return NULL;
	}
	if (err)
		return lock_errno(err, "pthread_mutex_unlock", &ref);
	Py_RETURN_NONE;
}

static PyObject *
lock_layout(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
	return Py_BuildValue("(ii)", LOCK_SIZE, LOCK_ALIGN);
}

PyMethodDef lock_functions[] = {
	{"lock_init", (PyCFunction)(void (*)(void))lock_init, METH_FASTCALL,
	 "lock_init(mapping, offset, /)\n--\n\n"
	 "Initialise the robust mutex at offset exactly once (no-op when\n"
	 "someone already did)."},
	{"lock_acquire", (PyCFunction)(void (*)(void))lock_acquire,
	 METH_FASTCALL,
	 "lock_acquire(mapping, offset, timeout, /)\n--\n\n"
	 "Acquire the mutex; timeout in seconds or None.  Returns 0 on\n"
	 "timeout, 1 when acquired, 2 when acquired from an owner that died\n"
	 "(the mutex was made consistent again)."},
	{"lock_release", (PyCFunction)(void (*)(void))lock_release,
	 METH_FASTCALL,
	 "lock_release(mapping, offset, /)\n--\n\nRelease the mutex."},
	{"lock_layout", lock_layout, METH_NOARGS,
	 "lock_layout()\n--\n\n(size, alignment) of a lock in the mapping."},
	{NULL, NULL, 0, NULL}
};
