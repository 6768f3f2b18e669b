/*
 * pymmapdev.Slot: a seqlock "latest value" cell.
 *
 * Layout at the slot's offset (8-byte aligned; all values native order):
 *
 *	+0	u64	seq: 2 * version, odd while a publish is in progress
 *	+8	u64	length of the current value
 *	+16	u32	waiters: readers asleep (wait_newer, read)
 *	+20	u32	reserved
 *	+24	u64	writer: identity (peer.h) of the last publisher, stored
 *			before seq turns odd
 *	+32	u64	the writer's namespace tag (peer_namespace)
 *	+40	capacity bytes of value
 *
 * One writer at a time.  Readers copy the value and retry if seq was odd or
 * changed meanwhile, so a value is never returned torn.  Readers sleep on
 * the low 32-bit half of seq (it changes with every increment); publish()
 * wakes them only when the waiters count says someone sleeps, so an
 * unwatched publish costs no syscall.
 *
 * Untrusted: a seq that stays odd means a writer died mid-publish, or
 * garbage.  A reader that waits on it checks the recorded writer: dead (or
 * no identity at all) raises PeerDied; a writer it cannot check (another
 * pid namespace) gets STALL_LIMIT_NS before the reader gives up.  A length
 * beyond the capacity is never used.
 *
 * In C rather than Python for the memory ordering: the reader needs an
 * acquire fence between its copy and the re-check of seq, the writer a
 * release fence between marking seq odd and writing the value.
 */
#include "slot.h"
#include "args.h"
#include "block.h"
#include "peer.h"
#include "watch.h"

#include <errno.h>
#include <string.h>

#include "structmember.h"

#define SLOT_SEQ	0
#define SLOT_LEN	8
#define SLOT_WAITERS	16
#define SLOT_WRITER	24
#define SLOT_NS		32
#define SLOT_HEADER	40
#define SLOT_ALIGN	8
#define SLOT_WAIT_WORD	(SLOT_SEQ + BLOCK_LOW_HALF)

/* An odd seq that no check can explain is given up on after this long. */
#define STALL_LIMIT_NS	(1000 * 1000 * 1000LL)

enum {
	SLOT_PEER_DIED = BLOCK_FAIL,
	SLOT_OVERSIZED = BLOCK_FAIL - 1,
};

typedef struct {
	PyObject_HEAD
	MappingObject *map;
	Py_ssize_t offset;
	Py_ssize_t capacity;
} SlotObject;

struct slot_words {
	uint64_t *seq;
	uint64_t *len;
	uint32_t *waiters;
	uint64_t *writer;
	uint64_t *ns;
	char *value;
};

static void
slot_words(struct slot_words *w, char *base)
{
	w->seq = (uint64_t *)(base + SLOT_SEQ);
	w->len = (uint64_t *)(base + SLOT_LEN);
	w->waiters = (uint32_t *)(base + SLOT_WAITERS);
	w->writer = (uint64_t *)(base + SLOT_WRITER);
	w->ns = (uint64_t *)(base + SLOT_NS);
	w->value = base + SLOT_HEADER;
}

static int
slot_admit(SlotObject *self, struct gate *g, int access, enum pin_kind pin)
{
	return gate_enter(g, self->map, self->offset, SLOT_HEADER + self->capacity,
			  SLOT_ALIGN, access, pin);
}

static PyObject *
slot_error(SlotObject *self, int rc, const char *fault_addr, const Py_buffer *source,
	   uint64_t len)
{
	module_state *st = PyType_GetModuleState(Py_TYPE(self));
	PyObject *args;

	switch (rc) {
	case FAULT_HIT:
		return mapping_raise_fault(self->map, fault_addr, source);
	case SLOT_PEER_DIED:
		args = Py_BuildValue(
			"(iNO)", EOWNERDEAD,
			PyUnicode_FromFormat(
				"the writer of the Slot at offset %zd died mid-publish (or "
				"its header is garbage): no value until the next publish",
				self->offset),
			self->map->path);
		if (args != NULL) {
			PyErr_SetObject(st->peer_died_error, args);
			Py_DECREF(args);
		}
		return NULL;
	case SLOT_OVERSIZED:
		PyErr_Format(PyExc_ValueError,
			     "the Slot at offset %zd holds %llu bytes, more than its capacity "
			     "%zd: does the writer use another capacity?", self->offset,
			     (unsigned long long)len, self->capacity);
		return NULL;
	default:
		PyErr_Format(PyExc_SystemError, "Slot: unexpected state %d", rc);
		return NULL;
	}
}

/* ---- publish ----------------------------------------------------------- */

struct publish_call {
	struct slot_words w;
	const void *src;
	void *stage;		/* NULL, or where src is copied first */
	uint64_t len;
	uint64_t seq;		/* out: the new seq */
	uint32_t waiters;	/* out */
};

static int
publish_body(void *arg)
{
	struct publish_call *c = arg;
	/* One writer, so a plain read of our own seq; odd means a writer died
	 * mid-publish: finish its cycle instead of starting one. */
	uint64_t seq = __atomic_load_n(c->w.seq, __ATOMIC_RELAXED) | 1;

	/* The source overlaps our header, which changes below: take the
	 * bytes as they are now.  (An overlap with the value alone is
	 * memmove's.) */
	if (c->stage != NULL) {
		memcpy(c->stage, c->src, c->len);
		c->src = c->stage;
	}
	/* Who writes, before the sequence says someone does. */
	__atomic_store_n(c->w.writer, peer_self(), __ATOMIC_RELAXED);
	__atomic_store_n(c->w.ns, peer_namespace(), __ATOMIC_RELAXED);
	__atomic_store_n(c->w.seq, seq, __ATOMIC_RELEASE);
	/* No value store may become visible before seq turns odd. */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	__atomic_store_n(c->w.len, c->len, __ATOMIC_RELAXED);
	memmove(c->w.value, c->src, c->len);	/* src may be a view of this mapping */
	/* seq_cst store then load: pairs with the reader's increment of
	 * waiters then load of seq (Dekker), so either we see the sleeper or
	 * it sees the new seq and does not sleep. */
	__atomic_store_n(c->w.seq, seq + 1, __ATOMIC_SEQ_CST);
	c->waiters = __atomic_load_n(c->w.waiters, __ATOMIC_SEQ_CST);
	c->seq = seq + 1;
	return 0;
}

/*
 * A publish that faulted (its source or the slot itself) stays odd: the
 * next publish recovers.  Until then readers must not wait for it as for a
 * live writer still at work: without an identity they are told at once.
 */
static int
abandon_body(void *arg)
{
	struct publish_call *c = arg;

	__atomic_store_n(c->w.writer, 0, __ATOMIC_RELAXED);
	return 0;
}

static PyObject *
slot_publish(SlotObject *self, PyObject *arg)
{
	struct publish_call c = {0};
	struct fault_span spans[2];
	const char *fault_addr;
	Py_buffer data;
	struct gate g;
	PyObject *result = NULL;
	int rc;

	if (PyObject_GetBuffer(arg, &data, PyBUF_SIMPLE) < 0)
		return NULL;
	if (data.len > self->capacity) {
		PyErr_Format(PyExc_ValueError,
			     "%zd bytes do not fit the Slot at offset %zd (capacity %zd)",
			     data.len, self->offset, self->capacity);
		goto out;
	}
	(void)peer_self();	/* reads /proc once per thread: not inside the guard */
	(void)peer_namespace();
	if (slot_admit(self, &g, GATE_WRITE, PIN_ACCESS) < 0)
		goto out;
	slot_words(&c.w, g.addr);
	c.src = data.buf;
	c.len = (uint64_t)data.len;
	/* a view of this mapping reaching into the header (len <= capacity:
	 * bounded by the mapping) */
	if ((const char *)data.buf < g.addr + SLOT_HEADER &&
	    (const char *)data.buf + data.len > g.addr && data.len > 0) {
		c.stage = PyMem_Malloc((size_t)data.len);
		if (c.stage == NULL) {
			PyErr_NoMemory();
			gate_leave(&g);
			goto out;
		}
	}
	spans[0] = (struct fault_span){g.addr, (size_t)g.len};
	spans[1] = (struct fault_span){data.buf, (size_t)data.len};
	rc = fault_run(publish_body, &c, spans, 2, &fault_addr);
	if (rc == FAULT_HIT) {
		const char *abandon_addr;

		/* a fault here too: the slot's own page is gone, and readers
		 * fault on it as well */
		(void)fault_run(abandon_body, &c, spans, 1, &abandon_addr);
		slot_error(self, rc, fault_addr, &data, 0);
	} else if (c.waiters == 0 ||
		   block_wake(self->map, g.offset + SLOT_WAIT_WORD, UINT32_MAX) >= 0) {
		result = PyLong_FromUnsignedLongLong(c.seq >> 1);
	}
	gate_leave(&g);
	PyMem_Free(c.stage);
out:
	PyBuffer_Release(&data);
	return result;
}

/* ---- waiting on a sequence -------------------------------------------- */

struct seq_wait {
	struct slot_words w;
	int readonly;
	uint64_t until_not;	/* wait while seq == this (read: an odd seq) */
	uint64_t version;	/* wait_newer: wait while seq >> 1 == this */
	int newer;		/* which of the two */
	struct timespec stalled_since;
	int stalled;
};

static long long
elapsed_ns(const struct timespec *since)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - since->tv_sec) * 1000000000LL + (now.tv_nsec - since->tv_nsec);
}

/* An odd seq that stays: is the writer still at it? */
static int
writer_stalled(struct seq_wait *c)
{
	uint64_t writer = __atomic_load_n(c->w.writer, __ATOMIC_RELAXED);
	uint64_t ns = __atomic_load_n(c->w.ns, __ATOMIC_RELAXED);

	if (!peer_valid(writer))
		return 1;
	if (ns == peer_namespace())
		return peer_check(writer) == PEER_DEAD;
	/* Cannot be checked from here: give it a generous while. */
	if (!c->stalled) {
		c->stalled = 1;
		clock_gettime(CLOCK_MONOTONIC, &c->stalled_since);
		return 0;
	}
	return elapsed_ns(&c->stalled_since) > STALL_LIMIT_NS;
}

static int
seq_poll(struct block_op *op, int thorough)
{
	struct seq_wait *c = op->ctx;
	/* seq_cst, not only acquire: after seq_announce()'s increment this is
	 * the load of the Dekker pair with publish_body() (store seq, load
	 * waiters), which C11 orders only between seq_cst operations.  (A
	 * plain load on x86 and ARMv8 all the same.) */
	uint64_t seq = __atomic_load_n(c->w.seq, __ATOMIC_SEQ_CST);

	if (c->newer ? seq >> 1 != c->version : seq != c->until_not)
		return BLOCK_READY;
	if (seq & 1) {
		/* mid-publish: a writer that never finishes must not hold us */
		op->watch_peer = 1;
		if (thorough && writer_stalled(c))
			return SLOT_PEER_DIED;
	}
	op->sleep_offset = ((char *)c->w.seq - op->gate->map->data) + BLOCK_LOW_HALF;
	op->sleep_expected = (uint32_t)seq;
	return BLOCK_SLEEP;
}

static void
seq_announce(struct block_op *op, int sleeping)
{
	struct seq_wait *c = op->ctx;

	__atomic_fetch_add(c->w.waiters, sleeping ? 1 : (uint32_t)-1, __ATOMIC_SEQ_CST);
}

/* Waits (admitted as PIN_WAIT in @g) per @c; a block_until() result. */
static int
seq_block(struct gate *g, struct seq_wait *c, const struct deadline *d)
{
	struct block_op op = {0};

	op.gate = g;
	op.poll = seq_poll;
	op.ctx = c;
	op.spin = block_default_spin();
	/* A read-only mapping cannot announce a sleeper, so the writer never
	 * wakes it: poll every millisecond instead. */
	if (c->readonly)
		op.max_sleep_ns = 1000 * 1000;
	else
		op.announce = seq_announce;
	return block_until(&op, d);
}

/* ---- read ---------------------------------------------------------------- */

struct read_call {
	struct slot_words w;
	Py_ssize_t capacity;
	char *dst;		/* NULL: only read the head */
	uint64_t seq, len, seq_after;
};

static int
head_body(void *arg)
{
	struct read_call *c = arg;

	c->seq = __atomic_load_n(c->w.seq, __ATOMIC_ACQUIRE);
	c->len = __atomic_load_n(c->w.len, __ATOMIC_RELAXED);
	return 0;
}

static int
copy_body(void *arg)
{
	struct read_call *c = arg;

	memcpy(c->dst, c->w.value, c->len);
	/* The copy's loads must complete before the re-check of seq. */
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	c->seq_after = __atomic_load_n(c->w.seq, __ATOMIC_RELAXED);
	return 0;
}

static PyObject *
slot_read(SlotObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	static const char *const names[] = {"timeout"};
	static const struct arg_spec spec = {"read", names, 1, 0, 0, 1};
	PyObject *argv[1], *out = NULL, *result = NULL;
	struct deadline deadline;
	struct read_call c = {0};
	struct fault_span span;
	const char *fault_addr;
	struct gate g;
	int rc;

	if (args_unpack(&spec, args, nargs, kwnames, argv) < 0 ||
	    arg_deadline(argv[0], &deadline) < 0)
		return NULL;
	/* PIN_WAIT: the loop allocates and may sleep */
	if (slot_admit(self, &g, GATE_READ, PIN_WAIT) < 0)
		return NULL;
	slot_words(&c.w, g.addr);
	c.capacity = self->capacity;
	span = (struct fault_span){g.addr, (size_t)g.len};
	for (unsigned tries = 0;; tries++) {
		if (fault_run(head_body, &c, &span, 1, &fault_addr) == FAULT_HIT) {
			slot_error(self, FAULT_HIT, fault_addr, NULL, 0);
			goto out;
		}
		if (c.seq & 1) {
			struct seq_wait w = {.w = c.w, .readonly = self->map->readonly,
					     .until_not = c.seq};

			rc = seq_block(&g, &w, &deadline);
			if (rc == BLOCK_TIMEOUT) {
				result = Py_NewRef(Py_None);
				goto out;
			}
			if (rc != BLOCK_READY) {
				if (rc != BLOCK_ERROR)
					slot_error(self, rc, NULL, NULL, 0);
				goto out;
			}
			continue;
		}
		if (c.len > (uint64_t)self->capacity) {
			/* A publish that started after our head read (torn), or
			 * a writer with a larger capacity: only the latter stays. */
			uint64_t seq = c.seq;

			if (fault_run(head_body, &c, &span, 1, &fault_addr) == FAULT_HIT) {
				slot_error(self, FAULT_HIT, fault_addr, NULL, 0);
				goto out;
			}
			if (c.seq == seq) {
				slot_error(self, SLOT_OVERSIZED, NULL, NULL, c.len);
				goto out;
			}
			continue;
		}
		if (out == NULL || (uint64_t)PyBytes_GET_SIZE(out) != c.len) {
			Py_XDECREF(out);
			out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)c.len);
			if (out == NULL)
				goto out;
		}
		c.dst = PyBytes_AS_STRING(out);
		if (fault_run(copy_body, &c, &span, 1, &fault_addr) == FAULT_HIT) {
			slot_error(self, FAULT_HIT, fault_addr, NULL, 0);
			goto out;
		}
		if (c.seq_after == c.seq) {
			result = Py_BuildValue("(KO)", (unsigned long long)(c.seq >> 1), out);
			goto out;
		}
		/* A writer overtook the copy.  A writer that republishes back to
		 * back can starve us (a seqlock favours the writer): stay
		 * interruptible and within the deadline. */
		if ((tries & 63) == 63) {
			if (PyErr_CheckSignals() < 0)
				goto out;
			if (deadline_passed(&deadline)) {
				result = Py_NewRef(Py_None);
				goto out;
			}
		}
	}
out:
	gate_leave(&g);
	Py_XDECREF(out);
	return result;
}

/* ---- wait_newer ------------------------------------------------------------ */

/* Converts @version and admits a wait for a newer one, blocking or async.
 * wait_newer converts its timeout before this, so no Python code runs
 * under the pin; wait_newer_async's timeout is checked by watch_await()
 * afterwards, under the watch's pin, which keeps close() out meanwhile. */
static int
newer_admit(SlotObject *self, PyObject *version, struct gate *g, struct seq_wait *w)
{
	*w = (struct seq_wait){0};
	if (arg_uint(version, "version", 63, &w->version) < 0 ||
	    slot_admit(self, g, GATE_READ, PIN_WAIT) < 0)
		return -1;
	slot_words(&w->w, g->addr);
	w->readonly = self->map->readonly;
	w->newer = 1;
	return 0;
}

static PyObject *
slot_wait_newer(SlotObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	static const char *const names[] = {"version", "timeout"};
	static const struct arg_spec spec = {"wait_newer", names, 2, 1, 0, 2};
	PyObject *argv[2];
	struct deadline deadline;
	struct seq_wait w;
	struct gate g;
	int rc;

	if (args_unpack(&spec, args, nargs, kwnames, argv) < 0 ||
	    arg_deadline(argv[1], &deadline) < 0 ||
	    newer_admit(self, argv[0], &g, &w) < 0)
		return NULL;
	rc = seq_block(&g, &w, &deadline);
	gate_leave(&g);
	switch (rc) {
	case BLOCK_READY:
		Py_RETURN_TRUE;
	case BLOCK_TIMEOUT:
		Py_RETURN_FALSE;
	case BLOCK_ERROR:
		return NULL;
	default:
		/* a stalled publish does not make a version newer: say so */
		return slot_error(self, rc, NULL, NULL, 0);
	}
}

/* ---- wait_newer_async: the same wait as a watch (watch.h) ---------------- */

static PyObject *
seq_watch_fail(PyObject *owner, int rc)
{
	return slot_error((SlotObject *)owner, rc, NULL, NULL, 0);
}

static const struct watch_kind seq_watch = {
	.poll = seq_poll,
	.announce = seq_announce,
	.fail = seq_watch_fail,
};

static PyObject *
slot_wait_newer_async(SlotObject *self, PyObject *const *args, Py_ssize_t nargs,
		      PyObject *kwnames)
{
	static const char *const names[] = {"version", "timeout"};
	static const struct arg_spec spec = {"wait_newer_async", names, 2, 1, 0, 2};
	PyObject *argv[2], *watch;
	struct seq_wait w;
	struct gate g;

	if (args_unpack(&spec, args, nargs, kwnames, argv) < 0 ||
	    newer_admit(self, argv[0], &g, &w) < 0)
		return NULL;
	/* A read-only mapping cannot announce a sleeper (seq_block): poll. */
	watch = watch_new((PyObject *)self, &g, &seq_watch, &w, sizeof(w),
			  w.readonly ? WATCH_POLLS : 0);
	if (watch == NULL)
		return NULL;
	return watch_await(watch, argv[1]);
}

/* ---- the rest of the type ------------------------------------------------ */

static PyObject *
slot_get_version(SlotObject *self, void *Py_UNUSED(closure))
{
	struct read_call c = {0};
	struct fault_span span;
	const char *fault_addr;
	struct gate g;

	if (slot_admit(self, &g, GATE_READ, PIN_ACCESS) < 0)
		return NULL;
	slot_words(&c.w, g.addr);
	span = (struct fault_span){g.addr, SLOT_HEADER};
	if (fault_run(head_body, &c, &span, 1, &fault_addr) == FAULT_HIT) {
		gate_leave(&g);
		return slot_error(self, FAULT_HIT, fault_addr, NULL, 0);
	}
	gate_leave(&g);
	return PyLong_FromUnsignedLongLong(c.seq >> 1);
}

static PyObject *
slot_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
	static const char *const names[] = {"mapping", "offset", "capacity"};
	static const struct arg_spec spec = {"Slot", names, 3, 3, 0, 3};
	module_state *st = PyType_GetModuleState(type);
	PyObject *argv[3];
	MappingObject *map;
	Py_ssize_t offset, capacity;
	SlotObject *self;
	struct gate g;
	char what[80];

	if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
		PyErr_SetString(PyExc_TypeError, "Slot() takes no keyword arguments");
		return NULL;
	}
	if (args_unpack(&spec, &PyTuple_GET_ITEM(args, 0), PyTuple_GET_SIZE(args), NULL,
			argv) < 0 ||
	    arg_mapping(st, "Slot", argv[0], &map) < 0 || arg_offset(argv[1], &offset) < 0 ||
	    arg_length(argv[2], "capacity", &capacity) < 0)
		return NULL;
	if (capacity > PY_SSIZE_T_MAX - SLOT_HEADER) {
		PyErr_Format(PyExc_ValueError, "capacity %zd is too large", capacity);
		return NULL;
	}
	PyOS_snprintf(what, sizeof(what), "a Slot of capacity %zd (Slot.size_for)", capacity);
	if (gate_check_room(map, what, offset, SLOT_HEADER + capacity) < 0)
		return NULL;
	self = (SlotObject *)type->tp_alloc(type, 0);
	if (self == NULL)
		return NULL;
	self->map = (MappingObject *)Py_NewRef(map);
	self->offset = offset;
	self->capacity = capacity;
	/* Validates without reading the value (a read would wait on a
	 * writer that died mid-publish). */
	if (slot_admit(self, &g, GATE_READ, PIN_ACCESS) < 0) {
		Py_DECREF(self);
		return NULL;
	}
	gate_leave(&g);
	return (PyObject *)self;
}

static PyObject *
slot_size_for(PyObject *Py_UNUSED(type), PyObject *arg)
{
	Py_ssize_t capacity;

	if (arg_length(arg, "capacity", &capacity) < 0)
		return NULL;
	if (capacity > PY_SSIZE_T_MAX - SLOT_HEADER - SLOT_ALIGN) {
		PyErr_Format(PyExc_ValueError, "capacity %zd is too large", capacity);
		return NULL;
	}
	return PyLong_FromSsize_t(SLOT_HEADER + (capacity + SLOT_ALIGN - 1) / SLOT_ALIGN * SLOT_ALIGN);
}

static void
slot_dealloc(SlotObject *self)
{
	PyTypeObject *type = Py_TYPE(self);

	PyObject_GC_UnTrack(self);
	Py_CLEAR(self->map);
	type->tp_free(self);
	Py_DECREF(type);
}

static int
slot_traverse(SlotObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	Py_VISIT(self->map);
	return 0;
}

static int
slot_clear(SlotObject *self)
{
	Py_CLEAR(self->map);
	return 0;
}

static PyObject *
slot_repr(SlotObject *self)
{
	return PyUnicode_FromFormat("<pymmapdev.Slot offset=%zd capacity=%zd of %R>",
				    self->offset, self->capacity, (PyObject *)self->map);
}

static PyObject *
slot_get_mapping(SlotObject *self, void *Py_UNUSED(closure))
{
	return Py_NewRef(self->map);
}

static PyGetSetDef slot_getset[] = {
	{"mapping", (getter)slot_get_mapping, NULL, "The Mapping holding the slot.", NULL},
	{"version", (getter)slot_get_version, NULL,
	 "The version of the latest completed publish (0: never published).", NULL},
	{NULL},
};

static PyMemberDef slot_members[] = {
	{"offset", T_PYSSIZET, offsetof(SlotObject, offset), READONLY, "Offset of the slot."},
	{"capacity", T_PYSSIZET, offsetof(SlotObject, capacity), READONLY,
	 "Largest value in bytes."},
	{NULL},
};

static PyMethodDef slot_methods[] = {
	{"publish", (PyCFunction)slot_publish, METH_O,
	 "publish($self, data, /)\n--\n\n"
	 "Store data (bytes-like, at most capacity bytes) as the new value;\n"
	 "returns its version and wakes readers sleeping in wait_newer()."},
	{"read", (PyCFunction)(void (*)(void))slot_read, METH_FASTCALL | METH_KEYWORDS,
	 "read($self, /, timeout=None)\n--\n\n"
	 "(version, bytes) of the latest value, never torn.  None when timeout\n"
	 "seconds pass while a publish is in progress; PeerDied when the writer\n"
	 "died mid-publish."},
	{"wait_newer", (PyCFunction)(void (*)(void))slot_wait_newer,
	 METH_FASTCALL | METH_KEYWORDS,
	 "wait_newer($self, /, version, timeout=None)\n--\n\n"
	 "Sleep until a version other than `version` is published.  True when\n"
	 "one is (read() returns it, or a later one), False after timeout."},
	{"wait_newer_async", (PyCFunction)(void (*)(void))slot_wait_newer_async,
	 METH_FASTCALL | METH_KEYWORDS,
	 "wait_newer_async($self, /, version, timeout=None)\n--\n\n"
	 "wait_newer() for asyncio: a coroutine with its result that never\n"
	 "blocks the event loop and can be cancelled."},
	{"size_for", (PyCFunction)slot_size_for, METH_O | METH_STATIC,
	 "size_for(capacity, /)\n--\n\n"
	 "Bytes a slot of capacity occupies (header + value, rounded to 8)."},
	{NULL},
};

static PyType_Slot slot_slots[] = {
	{Py_tp_doc, "Slot(mapping, offset, capacity, /)\n--\n\n"
		    "A seqlock \"latest value\" cell of Slot.size_for(capacity) bytes at\n"
		    "offset (a multiple of 8); zero bytes are an empty slot at version 0.\n"
		    "One writer publish()es, any number of readers read() and wait_newer()."},
	{Py_tp_new, slot_new},
	{Py_tp_dealloc, slot_dealloc},
	{Py_tp_traverse, slot_traverse},
	{Py_tp_clear, slot_clear},
	{Py_tp_repr, slot_repr},
	{Py_tp_methods, slot_methods},
	{Py_tp_members, slot_members},
	{Py_tp_getset, slot_getset},
	{0, NULL},
};

PyType_Spec slot_type_spec = {
	.name = "pymmapdev.Slot",
	.basicsize = sizeof(SlotObject),
	.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
	.slots = slot_slots,
};

int
slot_type_ready(PyTypeObject *type)
{
	return type_add_int(type, "HEADER", SLOT_HEADER);
}
