/*
 * Helpers shared by the synchronisation files (wait.c, lock.c, slot.c);
 * defined in wait.c.  Not part of the Mapping contract in mapping.h.
 */
#ifndef PYMMAPDEV_SYNC_H
#define PYMMAPDEV_SYNC_H

#include "mapping.h"

#include <time.h>

/*
 * Blocking calls sleep in slices of at most this long and run the signal
 * handlers between slices: a signal that lands on another thread does not
 * interrupt our syscall, yet Ctrl-C must still be seen within 100 ms.
 */
#define SYNC_SLICE_NS	(50 * 1000 * 1000LL)

/* An absolute CLOCK_MONOTONIC deadline, so EINTR retries never extend it. */
struct sync_deadline {
	struct timespec at;
	int forever;
};

/*
 * timeout (seconds, int or float) -> deadline from now.  None waits forever;
 * negative or NaN raises ValueError.  Returns 0, or -1 with an exception.
 */
int sync_deadline_arg(PyObject *timeout, struct sync_deadline *d);

/* True once the deadline has passed (never for forever). */
int sync_deadline_passed(const struct sync_deadline *d);

/*
 * The end of the next sleep slice: the earlier of the deadline and
 * now + SYNC_SLICE_NS.  *last is set when the slice ends at the deadline,
 * i.e. a timeout at @end is the caller's timeout.
 */
void sync_slice_end(const struct sync_deadline *d, struct timespec *end,
		    int *last);

/*
 * Wakes at most @count waiters on the aligned u32 at @offset (futex for
 * file mappings, the module's ioctl for devices).  Returns how many were
 * woken, or -1 with an exception set.  Does not block; GIL held.
 */
long sync_wake(MappingObject *self, Py_ssize_t offset, uint32_t count);

/* Raises OSError(err, "<what> at offset N: <strerror>"); returns NULL. */
PyObject *sync_raise_errno(int err, const char *what, Py_ssize_t offset);

/* Keeps the CPU polite inside a spin loop. */
static inline void
sync_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
	__asm__ __volatile__("yield" ::: "memory");
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

#endif
