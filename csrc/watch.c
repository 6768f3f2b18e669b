/*
 * The Watch type and wait_many() (watch.h says what they are for).
 *
 * A watch is used from two threads: the event loop polls it and closes it,
 * a waiter thread reads the word and value to sleep on in wait_many().
 * Both hold the GIL while they touch the watch; the waiter thread only
 * hands the word's address to the kernel (see wait_many()).
 */
#include "watch.h"
#include "args.h"

#include <errno.h>
#include <string.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <unistd.h>

/*
 * futex_waitv(2) (Linux 5.16): sleep on up to 128 futexes at once.  Older
 * C headers (manylinux images) lack it; the number and layout are the same
 * on every architecture.
 */
#ifndef __NR_futex_waitv
#define __NR_futex_waitv	449
#endif
#define WAITV_MAX		128
#define WAITV_FUTEX_32		2	/* FUTEX_32: a u32 word, shared */

struct waitv_entry {		/* struct futex_waitv */
	uint64_t val;
	uint64_t uaddr;
	uint32_t flags;
	uint32_t reserved;
};

typedef struct {
	PyObject_HEAD
	PyObject *owner;		/* what kind->fail names: Mapping, Slot, ... */
	MappingObject *map;
	struct gate gate;		/* admitted, pinned PIN_WAIT while open */
	struct block_op op;		/* poll/announce/ctx and the sleep word */
	const struct watch_kind *kind;
	unsigned long generation;	/* the gate generation of the pin */
	int open;
	int flags;			/* WATCH_* */
	int announced;
	int sleep_error;		/* errno of a failed sleep, for poll() */
	union {
		char bytes[WATCH_CTX_MAX];
		max_align_t align;
	} ctx;
} WatchObject;

static int have_waitv = -1;

int
watch_have_waitv(void)
{
	if (have_waitv < 0) {
		/* No futexes is EINVAL where the call exists. */
		long rc = syscall(__NR_futex_waitv, NULL, 0, 0, NULL, CLOCK_MONOTONIC);

		have_waitv = rc < 0 && errno == EINVAL;
	}
	return have_waitv;
}

PyObject *
watch_new(PyObject *owner, struct gate *g, const struct watch_kind *kind,
	  const void *ctx, size_t ctx_len, int flags)
{
	PyTypeObject *type = mapping_state_of(g->map)->watch_type;
	WatchObject *self;

	if (ctx_len > WATCH_CTX_MAX) {
		gate_leave(g);
		PyErr_Format(PyExc_SystemError, "watch context of %zu bytes", ctx_len);
		return NULL;
	}
	self = (WatchObject *)type->tp_alloc(type, 0);
	if (self == NULL) {
		gate_leave(g);
		return NULL;
	}
	self->owner = Py_NewRef(owner);
	self->map = (MappingObject *)Py_NewRef((PyObject *)g->map);
	(void)gate_keep_pin(g, g->pin);	/* the pin is the watch's now (cannot fail) */
	self->gate = *g;
	self->generation = gate_generation();
	self->open = 1;
	self->flags = flags;
	self->kind = kind;
	memcpy(self->ctx.bytes, ctx, ctx_len);
	self->op.gate = &self->gate;
	self->op.poll = kind->poll;
	self->op.announce = kind->announce;
	self->op.ctx = self->ctx.bytes;
	self->op.wake_is_ready = kind->wake_is_ready;
	return (PyObject *)self;
}

PyObject *
watch_await(PyObject *watch, PyObject *timeout)
{
	PyObject *aio, *secs = NULL, *coro = NULL;

	/*
	 * The blocking calls' rules and wording for a bad timeout; the event
	 * loop then adds a float to its float clock (a Decimal, or an object
	 * with only __float__, would fail there in the middle of the wait).
	 */
	secs = block_timeout_seconds(NULL, timeout == NULL ? Py_None : timeout);
	if (secs == NULL)
		goto out;
	aio = PyImport_ImportModule("pymmapdev._aio");
	if (aio == NULL)
		goto out;
	coro = PyObject_CallMethod(aio, "wait", "OO", watch, secs);
	Py_DECREF(aio);
out:
	Py_XDECREF(secs);
	Py_DECREF(watch);
	return coro;
}

/* ---- polling ------------------------------------------------------------ */

struct watch_call {
	WatchObject *w;
	int arg;		/* poll: thorough; announce: sleeping */
};

static int
poll_body(void *arg)
{
	struct watch_call *c = arg;

	return c->w->op.poll(&c->w->op, c->arg);
}

static int
announce_body(void *arg)
{
	struct watch_call *c = arg;

	c->w->op.announce(&c->w->op, c->arg);
	return 0;
}

/* A guarded call; a fault or a poll's own failure becomes an exception
 * and BLOCK_ERROR. */
static int
guarded(WatchObject *self, int (*body)(void *), int arg)
{
	struct fault_span span = {self->gate.addr, (size_t)self->gate.len};
	struct watch_call c = {self, arg};
	const char *addr;
	int rc = fault_run(body, &c, &span, 1, &addr);

	if (rc == FAULT_HIT) {
		mapping_raise_fault(self->map, addr, NULL);
		return BLOCK_ERROR;
	}
	if (rc <= BLOCK_FAIL) {
		self->kind->fail(self->owner, rc);
		return BLOCK_ERROR;
	}
	return rc;
}

static void watch_release(WatchObject *self);

/*
 * A forked child's copy of a watch is closed: its pin was the parent's and
 * is gone (gate.c), so the child may have unmapped the words meanwhile.
 */
static int
check_open(WatchObject *self)
{
	if (self->open && self->generation != gate_generation()) {
		watch_release(self);	/* closes it; touches nothing in a child */
		PyErr_SetString(PyExc_ValueError,
				"watch is closed: it was inherited across fork() (its wait "
				"belongs to the parent)");
		return -1;
	}
	if (self->open)
		return 0;
	PyErr_SetString(PyExc_ValueError, "watch is closed");
	return -1;
}

static PyObject *
ready_or_error(int rc)
{
	if (rc == BLOCK_ERROR)
		return NULL;
	return PyBool_FromLong(rc != BLOCK_SLEEP);
}

/*
 * The last polls before a sleep, as block_until() does them: the slow
 * checks once, then announce a sleeper and look again, so a waker that
 * missed the announcement is seen here.
 */
static PyObject *
watch_arm(WatchObject *self, PyObject *Py_UNUSED(ignored))
{
	int rc;

	if (check_open(self) < 0)
		return NULL;
	rc = guarded(self, poll_body, 1);
	if (rc == BLOCK_SLEEP && self->op.announce != NULL && !(self->flags & WATCH_POLLS) &&
	    !self->announced) {
		rc = guarded(self, announce_body, 1);
		if (rc == BLOCK_ERROR)
			return NULL;
		self->announced = 1;
		rc = guarded(self, poll_body, 0);
	}
	return ready_or_error(rc);
}

static PyObject *
watch_poll(WatchObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	static const char *const names[] = {"thorough"};
	static const struct arg_spec spec = {"poll", names, 1, 0, 0, 1};
	PyObject *argv[1];
	int thorough = 0, err;

	if (args_unpack(&spec, args, nargs, kwnames, argv) < 0 || arg_flag(argv[0], &thorough) < 0 ||
	    check_open(self) < 0)
		return NULL;
	if (self->sleep_error != 0) {
		err = self->sleep_error;
		self->sleep_error = 0;
		return block_sleep_error(self->map, err, self->op.sleep_offset);
	}
	return ready_or_error(guarded(self, poll_body, thorough));
}

/* Withdraws the announcement and drops the pin; a forked child's copy of a
 * watch does neither (both belong to the parent). */
static void
watch_release(WatchObject *self)
{
	if (!self->open)
		return;
	self->open = 0;
	if (self->generation != gate_generation())
		return;
	if (self->announced) {
		struct fault_span span = {self->gate.addr, (size_t)self->gate.len};
		struct watch_call c = {self, 0};
		const char *addr;

		self->announced = 0;
		(void)fault_run(announce_body, &c, &span, 1, &addr);	/* a fault: nothing to undo */
	}
	mapping_unpin_from(self->map, PIN_WAIT, self->generation);
}

static PyObject *
watch_close(WatchObject *self, PyObject *Py_UNUSED(ignored))
{
	watch_release(self);
	Py_RETURN_NONE;
}

/* ---- wait_many ---------------------------------------------------------- */

/*
 * wait_many() pins nothing: a cancelled await must be able to close its
 * mapping at once, while the waiter thread may still be asleep.  That is
 * safe because only the kernel reads the words (an address unmapped
 * meanwhile is EFAULT; one mapped again by something else at worst wakes
 * the thread for nothing), and because the canceller pokes the thread's
 * control word after the thread read it: the sleep ends at once.
 */
struct sleeper {
	WatchObject *w;		/* a reference, for the sleep's error */
	const uint32_t *word;
	uint32_t expected;
	Py_ssize_t index;	/* in the caller's sequence */
	int err;		/* after the sleep: -1 not due, 0 due, else errno */
};

/*
 * After futex_waitv() failed (EAGAIN: some word differs; EFAULT, ...: one
 * could not be read) find which: a sleep with a deadline in the past only
 * compares the word.
 */
static void
probe_each(struct sleeper *s, int n)
{
	static const struct timespec past = {0, 0};

	for (int i = 0; i < n; i++) {
		int err = block_futex_sleep(s[i].word, s[i].expected, &past);

		s[i].err = err == ETIMEDOUT ? -1 : err;
	}
}

/* Sleeps on the @n words; fills s[].err.  No GIL.  Returns 0 or ENOSYS. */
static int
sleep_many(struct sleeper *s, int n, const struct deadline *d)
{
	const struct timespec *end = d->forever ? NULL : &d->at;
	struct waitv_entry v[WAITV_MAX];
	long rc;
	int err;

	for (int i = 0; i < n; i++)
		s[i].err = -1;
	if (n == 1) {
		err = block_futex_sleep(s[0].word, s[0].expected, end);
		if (err != ETIMEDOUT && err != EINTR)
			s[0].err = err;
		return 0;
	}
	for (int i = 0; i < n; i++)
		v[i] = (struct waitv_entry){
			.val = s[i].expected,
			.uaddr = (uint64_t)(uintptr_t)s[i].word,
			.flags = WAITV_FUTEX_32,
		};
	rc = syscall(__NR_futex_waitv, v, (unsigned int)n, 0, end, CLOCK_MONOTONIC);
	if (rc >= 0 && rc < n) {
		s[rc].err = 0;
		return 0;
	}
	err = errno;
	if (err == ENOSYS)
		return ENOSYS;
	if (err != ETIMEDOUT && err != EINTR)
		probe_each(s, n);
	return 0;
}

PyObject *
watch_wait_many(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
	module_state *st = module_state_of(module);
	struct sleeper s[WAITV_MAX];
	struct deadline d;
	PyObject *seq, *result = NULL, *item;
	Py_ssize_t len;
	int n = 0, err = 0;

	if (args_exact("wait_many", nargs, 2) < 0 || arg_deadline(args[1], &d) < 0)
		return NULL;
	seq = PySequence_Fast(args[0], "wait_many() needs a sequence of watches");
	if (seq == NULL)
		return NULL;
	len = PySequence_Fast_GET_SIZE(seq);
	if (len > WAITV_MAX) {
		PyErr_Format(PyExc_ValueError, "wait_many() takes at most %d watches, not %zd",
			     WAITV_MAX, len);
		goto out;
	}
	for (Py_ssize_t i = 0; i < len; i++) {
		WatchObject *w = (WatchObject *)PySequence_Fast_GET_ITEM(seq, i);

		if (!PyObject_TypeCheck((PyObject *)w, st->watch_type)) {
			PyErr_Format(PyExc_TypeError, "wait_many() needs watches, not %.100s",
				     Py_TYPE(w)->tp_name);
			goto release;	/* the watches taken so far */
		}
		if (w->map->wake != MAPPING_WAKE_FUTEX || (w->flags & WATCH_POLLS)) {
			PyErr_SetString(PyExc_ValueError,
					"wait_many() sleeps on futexes: this watch is not one");
			goto release;	/* the watches taken so far */
		}
		if (!w->open)
			continue;
		s[n] = (struct sleeper){
			.w = (WatchObject *)Py_NewRef((PyObject *)w),
			.word = (const uint32_t *)(w->map->data + w->op.sleep_offset),
			.expected = w->op.sleep_expected,
			.index = i,
		};
		n++;
	}
	if (n > 0) {
		Py_BEGIN_ALLOW_THREADS
		err = sleep_many(s, n, &d);
		Py_END_ALLOW_THREADS
	}
	if (err != 0) {
		errno = err;
		PyErr_SetFromErrno(PyExc_OSError);
	} else {
		result = PyList_New(0);
	}
release:
	for (int i = 0; i < n; i++) {
		if (result != NULL && s[i].err >= 0) {
			if (s[i].err > 0)	/* the watch's next poll() raises it */
				s[i].w->sleep_error = s[i].err;
			item = Py_BuildValue("(ni)", s[i].index, s[i].err);
			if (item == NULL || PyList_Append(result, item) < 0)
				Py_CLEAR(result);
			Py_XDECREF(item);
		}
		Py_DECREF(s[i].w);
	}
out:
	Py_DECREF(seq);
	return result;
}

/* ---- the type ------------------------------------------------------------ */

static const char *
backend_name(WatchObject *self)
{
	if (self->flags & WATCH_POLLS)
		return "poll";
	switch (self->map->wake) {
	case MAPPING_WAKE_FUTEX: return "futex";
	case MAPPING_WAKE_MMAPDEV: return "mmapdev";
	case MAPPING_WAKE_POLL: return "poll";
	}
	return "poll";
}

static PyObject *
watch_get_backend(WatchObject *self, void *Py_UNUSED(closure))
{
	return PyUnicode_FromString(backend_name(self));
}

static PyObject *
watch_get_wake_is_ready(WatchObject *self, void *Py_UNUSED(closure))
{
	return PyBool_FromLong(self->op.wake_is_ready);
}

static PyObject *
watch_get_watch_peer(WatchObject *self, void *Py_UNUSED(closure))
{
	return PyBool_FromLong(self->op.watch_peer);
}

static PyObject *
watch_get_closed(WatchObject *self, void *Py_UNUSED(closure))
{
	return PyBool_FromLong(!self->open);
}

static PyObject *
watch_get_mapping(WatchObject *self, void *Py_UNUSED(closure))
{
	return Py_NewRef((PyObject *)self->map);
}

static void
watch_dealloc(WatchObject *self)
{
	PyTypeObject *type = Py_TYPE(self);

	PyObject_GC_UnTrack(self);
	watch_release(self);
	Py_CLEAR(self->owner);
	Py_CLEAR(self->map);
	type->tp_free(self);
	Py_DECREF(type);
}

static int
watch_traverse(WatchObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	Py_VISIT(self->owner);
	Py_VISIT((PyObject *)self->map);
	return 0;
}

static PyObject *
watch_repr(WatchObject *self)
{
	return PyUnicode_FromFormat("<pymmapdev._core.Watch %s%s of %R>", backend_name(self),
				    self->open ? "" : " closed", self->owner);
}

static PyGetSetDef watch_getset[] = {
	{"backend", (getter)watch_get_backend, NULL,
	 "How to sleep for it: 'futex' (wait_many), 'mmapdev' (the mapping's\n"
	 "descriptor polls readable on the device's events) or 'poll' (nothing\n"
	 "wakes it: poll again on a timer).", NULL},
	{"wake_is_ready", (getter)watch_get_wake_is_ready, NULL,
	 "True when a wake-up alone ends the wait (Mapping.wait's rule).", NULL},
	{"watch_peer", (getter)watch_get_watch_peer, NULL,
	 "True when the last poll watches a peer that may die: poll(thorough=True)\n"
	 "every BLOCK_SLICE seconds.", NULL},
	{"closed", (getter)watch_get_closed, NULL, "True after close().", NULL},
	{"mapping", (getter)watch_get_mapping, NULL, "The watched Mapping.", NULL},
	{NULL},
};

static PyMethodDef watch_methods[] = {
	{"arm", (PyCFunction)watch_arm, METH_NOARGS,
	 "arm($self, /)\n--\n\n"
	 "The polls before a first sleep (announcing a sleeper where the wait\n"
	 "has one): True when the wait is over already."},
	{"poll", (PyCFunction)(void (*)(void))watch_poll, METH_FASTCALL | METH_KEYWORDS,
	 "poll($self, /, thorough=False)\n--\n\n"
	 "Look again after a wake-up, a changed word or a timer: True when the\n"
	 "wait is over.  Raises what the blocking call would (MappingFault,\n"
	 "PeerDied, ...).  thorough: also the slow checks (is the peer alive?)."},
	{"close", (PyCFunction)watch_close, METH_NOARGS,
	 "close($self, /)\n--\n\n"
	 "Withdraw the announced sleeper and unpin the mapping.  Idempotent."},
	{NULL},
};

static PyType_Slot watch_slots[] = {
	{Py_tp_doc, "A wait split into polls for an event loop: made by Mapping.wait_async()\n"
		    "and Slot.wait_newer_async(), awaited by pymmapdev._aio."},
	{Py_tp_dealloc, watch_dealloc},
	{Py_tp_traverse, watch_traverse},
	{Py_tp_repr, watch_repr},
	{Py_tp_methods, watch_methods},
	{Py_tp_getset, watch_getset},
	{0, NULL},
};

PyType_Spec watch_type_spec = {
	.name = "pymmapdev._core.Watch",
	.basicsize = sizeof(WatchObject),
	.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
		 Py_TPFLAGS_DISALLOW_INSTANTIATION,
	.slots = watch_slots,
};

int
watch_type_ready(PyTypeObject *type)
{
	if (type_add_int(type, "SLICE_NS", BLOCK_SLICE_NS) < 0)
		return -1;
	return type_add_int(type, "POLL_NS", BLOCK_POLL_NS);
}
