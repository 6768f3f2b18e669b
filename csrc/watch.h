/*
 * Watches: the blocking loop's conditions for waiters that do not block
 * (asyncio: pymmapdev/_aio.py).
 *
 * block_until() is "poll, sleep, poll again" in one call.  An event loop
 * cannot sleep in a call, so a watch splits it: the same poll() functions
 * (wait.c's word, slot.c's sequence, ...) run when the loop asks, and the
 * sleeping happens elsewhere, on the word and value the last poll named:
 * in a shared waiter thread (wait_many(), for futexes), in the loop's own
 * poll(2) (the mmapdev module's descriptor) or on a timer (memory nobody
 * can be woken on).  The watch holds the mapping pinned as PIN_WAIT from
 * creation to close(), like a blocking wait for its whole duration.
 *
 * To add an awaitable wait: write its poll() for block_until() first, then
 * describe it with a struct watch_kind and make watches with watch_new().
 */
#ifndef PYMMAPDEV_WATCH_H
#define PYMMAPDEV_WATCH_H

#include "block.h"

/* The largest poll context a watch carries (copied into the watch). */
#define WATCH_CTX_MAX	128

struct watch_kind {
	/* as block_op.poll and block_op.announce (announce may be NULL) */
	int (*poll)(struct block_op *op, int thorough);
	void (*announce)(struct block_op *op, int sleeping);
	/* Raises the exception for one of poll()'s own failure codes
	 * (<= BLOCK_FAIL) about @owner; returns NULL. */
	PyObject *(*fail)(PyObject *owner, int rc);
	int wake_is_ready;	/* as block_op.wake_is_ready */
};

/* watch_new() flags */
enum {
	WATCH_POLLS = 1,	/* no waker knows about us (a read-only mapping
				 * cannot announce): the waiter polls */
};

/*
 * A new Watch over @g, a span admitted with PIN_WAIT that the watch takes
 * over (its pin is released with the watch, or here on failure).  @owner
 * (the Mapping, a Slot, ...) is kept alive and handed to kind->fail.  @ctx,
 * @ctx_len bytes (at most WATCH_CTX_MAX), is copied into the watch and is
 * what poll() finds in op->ctx.  Returns a new reference or NULL.
 */
PyObject *watch_new(PyObject *owner, struct gate *g, const struct watch_kind *kind,
		    const void *ctx, size_t ctx_len, int flags);

/*
 * The coroutine that awaits @watch (a new reference from watch_new(),
 * stolen): pymmapdev._aio.wait(watch, timeout).  @timeout is None or a
 * number of seconds, checked here as the blocking calls check theirs.
 */
PyObject *watch_await(PyObject *watch, PyObject *timeout);

PyObject *watch_wait_many(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

#define WATCH_FUNCTIONS_METHODDEFS						\
	{"wait_many", (PyCFunction)(void (*)(void))watch_wait_many, METH_FASTCALL, \
	 "wait_many(watches, timeout, /)\n--\n\n"				\
	 "Sleep without the GIL until one of the watches' futex words (each\n"	\
	 "as its last poll() left it) is woken or differs, or timeout seconds\n" \
	 "pass (None: no limit).  Returns [(index, errno), ...] of the watches\n" \
	 "to poll again (errno 0: woken or changed; else the sleep failed and\n" \
	 "the watch's next poll() raises it); [] on timeout or a signal.\n"	\
	 "Closed watches are skipped.  Several watches need FUTEX_WAITV\n"	\
	 "(Linux 5.16, HAVE_FUTEX_WAITV); OSError(ENOSYS) without it.  Used by\n" \
	 "pymmapdev._aio's waiter threads."},

extern PyType_Spec watch_type_spec;
int watch_type_ready(PyTypeObject *type);
/* 1 when the kernel has futex_waitv(2); module.c publishes it. */
int watch_have_waitv(void);

#endif
