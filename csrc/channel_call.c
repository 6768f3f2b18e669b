/*
 * One Channel call's life (channel_internal.h): admission to the region,
 * taking and leaving a side (a claim in single mode, a per-message lock
 * in multi mode), waiting for room or data in the blocking loop, waking
 * the other side's sleepers, and the errors all of them raise.
 */
#include "channel_internal.h"

#include <string.h>

/* ---- errors -------------------------------------------------------------- */

static module_state *
ch_state(ChannelObject *self)
{
	return module_state_of_type(Py_TYPE(self));
}

/* The ValueError of a region whose namespace word is another's (CH_FOREIGN). */
PyObject *
ch_foreign_error(Py_ssize_t offset)
{
	PyErr_Format(PyExc_ValueError,
		     "the Channel at offset %zd is used from another pid namespace or "
		     "machine: a dead peer could not be told from a live one", offset);
	return NULL;
}

PyObject *
ch_error(ChannelObject *self, int rc, const char *fault_addr, const Py_buffer *source)
{
	module_state *st = ch_state(self);

	switch (rc) {
	case FAULT_HIT:
		return mapping_raise_fault(self->map, fault_addr, source);
	case CH_CORRUPT:
	case OWNER_GARBAGE:
		PyErr_Format(st->channel_corrupt,
			     "the Channel at offset %zd holds impossible values (a peer "
			     "overwrote its header or ring)", self->offset);
		return NULL;
	case CH_FOREIGN:
		return ch_foreign_error(self->offset);
	case CH_EOF:
		PyErr_SetString(PyExc_EOFError, "the channel was closed for sending and is empty");
		return NULL;
	case CH_CLOSED_SEND:
		PyErr_Format(PyExc_BrokenPipeError,
			     "the Channel at offset %zd was closed for sending (close_send)",
			     self->offset);
		return NULL;
	case CH_OPEN_ELSEWHERE:
		PyErr_Format(PyExc_RuntimeError,
			     "another Channel object of this thread has a reserve() or recv_view() "
			     "open on the Channel at offset %zd: end it first", self->offset);
		return NULL;
	case OWNER_RECURSIVE:
		PyErr_Format(PyExc_RuntimeError,
			     "this thread already holds that side of the Channel at offset %zd "
			     "(an open reserve() or recv_view()?)", self->offset);
		return NULL;
	default:
		PyErr_Format(PyExc_SystemError, "Channel: unexpected state %d", rc);
		return NULL;
	}
}

static PyObject *
busy_error(ChannelObject *self, enum side side, uint64_t holder)
{
	const char *name = side == PRODUCER ? "producer" : "consumer";

	PyErr_Format(PyExc_RuntimeError,
		     "the single-%s Channel at offset %zd already has a live %s (thread %llu): "
		     "construct it with multi_%s=True for several", name, self->offset, name,
		     (unsigned long long)(holder & PEER_TID_MASK), name);
	return NULL;
}

/* ---- taking and leaving a side ------------------------------------------- */

/*
 * Before a call with a side held per message (multi mode) raises: the
 * raise may allocate (the exception instance, made at once inside an
 * except block; MappingFault's arguments), a collection there may run a
 * finalizer that closes the mapping, and ch_leave_side() still stores into
 * the region afterwards.  send() and _reserve() admit as PIN_ACCESS, which
 * holds no pin in builds with a GIL (mapping.h): take a real one first.
 * Only on the way to an error or a wake-up syscall: a free call pins
 * nothing.
 */
void
ch_pin_held_side(struct ch_call *c)
{
	if (!c->self->multi[c->side])
		return;		/* single mode: nothing is left after the raise */
	/* A full field is thousands of holders that keep close() out: the
	 * call goes on with the mapping pinned by them. */
	if (gate_upgrade(&c->gate, PIN_WAIT) < 0)
		PyErr_Clear();
}

static int
claim_body(void *arg)
{
	struct ch_call *c = arg;

	return owner_claim(c->w.owner[c->side], c->me, &c->seen);
}

static int
try_side_body(void *arg)
{
	struct ch_call *c = arg;

	return owner_try(c->w.owner[c->side], c->me, &c->seen);
}

static int
release_side_body(void *arg)
{
	struct ch_call *c = arg;

	return owner_release(c->w.owner[c->side], c->me, &c->seen);
}

/*
 * Ends a per-message hold (multi mode), or a single-mode send that ended
 * without its publish (the sending word): after a close_send() the
 * producer bumps data_seq and ch_leave_side() wakes the consumers, one of
 * which may wait for it before it takes the drained ring for the end
 * (ch_peek; channel_ring.c has the ordering).
 */
static int
leave_side_body(void *arg)
{
	struct ch_call *c = arg;

	if (!c->self->multi[c->side]) {
		ch_end_send(c, 0);
		return 0;
	}
	if (c->side == PRODUCER)
		return ch_release_producer(c);
	return owner_release(c->w.owner[c->side], c->me, &c->seen);
}

/*
 * Hands a single-mode claim made in the name of @me back, so another
 * thread may claim the side (a no-op when the word no longer names it:
 * taken over meanwhile).  Where nothing can be raised: the result is a
 * hint.
 */
int
ch_hand_back(struct ch_call *c, enum side side, uint64_t me)
{
	const char *fault_addr;

	c->side = side;
	c->me = me;
	return ch_run(c, release_side_body, &fault_addr);
}

/*
 * An open reserve() or recv_view() of this object owns the tail or head
 * until it ends: a send or receive meanwhile would write into the
 * reservation or deliver the viewed message twice.  RuntimeError then.
 */
int
ch_is_open(ChannelObject *self, enum side side)
{
	return self->open[side] && self->open_generation[side] == gate_generation();
}

int
ch_refuse_open(ChannelObject *self, enum side side)
{
	if (!ch_is_open(self, side))
		return 0;
	PyErr_SetString(PyExc_RuntimeError, side == PRODUCER
			? "a reserve() is open on this Channel: end it first"
			: "a recv_view() is open on this Channel: end it first");
	return -1;
}

/*
 * Makes this thread the side's user: in single mode a claim kept for good
 * (the object remembers which thread made it: another thread, or the
 * child of a fork, claims anew and is refused while the holder lives), in
 * multi mode the per-message lock, waited for.  Returns 0, or -1 with an
 * exception (*timed_out set when it is the deadline).
 */
int
ch_take_side(struct ch_call *c, enum side side, const struct deadline *d, int *timed_out)
{
	ChannelObject *self = c->self;
	const char *fault_addr = NULL;
	int rc;

	*timed_out = 0;
	c->side = side;
	/* Another thread's open reserve/view of this object holds the side
	 * in multi mode as any other holder does: wait for it below (the
	 * object keeps one open per side, and the side is one holder's). */
	if ((!self->multi[side] || self->open_me[side] == c->me) &&
	    ch_refuse_open(self, side) < 0)
		return -1;
	if (!self->multi[side]) {
		/*
		 * Our own claim needs no look at the word.  A claim joined
		 * (another object of this thread made it: a copy, a pickle
		 * loaded here) is looked at every call: that object hands
		 * the side back when it goes, and then this one must claim
		 * anew, or be refused if another thread got in first.
		 */
		if (self->registered[side] == c->me && !self->joined[side])
			return 0;
		rc = ch_run(c, claim_body, &fault_addr);
		if (rc == OWNER_TAKEN || rc == OWNER_TAKEN_OVER || rc == OWNER_RECURSIVE) {
			self->registered[side] = c->me;
			self->registered_generation[side] = gate_generation();
			self->joined[side] = rc == OWNER_RECURSIVE;
			return 0;
		}
		if (rc == OWNER_BUSY) {
			busy_error(self, side, c->seen);
			return -1;
		}
		ch_error(self, rc, fault_addr, NULL);
		return -1;
	}
	rc = ch_run(c, try_side_body, &fault_addr);
	if (rc == BLOCK_SLEEP) {
		struct owner_wait w = {c->w.owner[side], c->me, 0};
		struct block_op op = {0};

		if (gate_upgrade(&c->gate, PIN_WAIT) < 0)
			return -1;
		op.gate = &c->gate;
		op.poll = owner_poll;
		op.ctx = &w;
		op.spin = block_default_spin();
		rc = block_until(&op, d);
		c->me = w.me;	/* owner_poll's: a child forked meanwhile is not us */
		if (rc == BLOCK_TIMEOUT) {
			*timed_out = 1;
			return -1;
		}
		if (rc == BLOCK_ERROR)
			return -1;
		fault_addr = NULL;
	}
	if (rc == OWNER_TAKEN || rc == OWNER_TAKEN_OVER)
		return 0;
	ch_error(self, rc, fault_addr, NULL);
	return -1;
}

/* Ends a per-message hold (multi mode), or a single-mode send left
 * unpublished (ch_end_send); wakes a waiter for the side, and the
 * consumers after a close_send().  Not in a child forked while the side
 * was held (forked_away()): the hold is the parent's. */
int
ch_leave_side(struct ch_call *c, enum side side)
{
	const char *fault_addr;
	int rc;

	if (c->forked_away || (!c->self->multi[side] && !c->in_send))
		return 0;
	c->side = side;
	rc = ch_run(c, leave_side_body, &fault_addr);
	if (rc == FAULT_HIT) {
		mapping_raise_fault(c->self->map, fault_addr, NULL);
		return -1;
	}
	if (rc == 0 && c->self->multi[side] && (c->seen & OWNER_WAITERS) &&
	    block_wake(c->self->map,
		       owner_sleep_offset(c->gate.offset +
					  (side == PRODUCER ? CH_PRODUCER : CH_CONSUMER)),
		       1) < 0)
		return -1;
	if (rc == 0 && c->wake_consumers)
		return block_wake(c->self->map, c->gate.offset + CH_DATA_SEQ, UINT32_MAX) < 0
			? -1 : 0;
	return 0;	/* taken over from us (we looked dead?): nothing to undo */
}

/* ---- admission ----------------------------------------------------------- */

int
ch_admit(ChannelObject *self, struct ch_call *c, enum pin_kind pin)
{
	memset(c, 0, sizeof(*c));
	c->self = self;
	if (gate_enter(&c->gate, self->map, self->offset, CH_HEADER + (Py_ssize_t)self->capacity,
		       LINE, GATE_WRITE, pin) < 0)
		return -1;
	ch_words(&c->w, c->gate.addr, self->capacity);
	c->me = peer_self();
	return 0;
}

/* ---- waiting for room or data, waking the other side --------------------- */

static int
unname_child_body(void *arg)
{
	struct ch_call *c = arg;
	uint64_t me = peer_self();

	(void)__atomic_compare_exchange_n(c->w.sending, &me, 0, 0, __ATOMIC_SEQ_CST,
					  __ATOMIC_RELAXED);
	return 0;
}

/*
 * After a blocking loop that held the side (a wait for room or data) and
 * began in fork generation @generation: a signal handler it ran may have
 * forked, and the child goes on with the call.  The side is held in the
 * name of the parent's thread, which goes on too: the child must neither
 * write, nor consume, nor let go of it (ch_leave_side), or a message came
 * twice (was taken from the parent) and the parent's lock was released
 * under it.  1 with RuntimeError then (a handler's own error stands).
 * A single-mode producer's polls named the child in the sending word: it
 * takes its name back (the parent names itself at its next look, before
 * it publishes), so a consumer at the end does not wait for the child.
 */
static int
forked_away(struct ch_call *c, unsigned long generation, enum side side)
{
	const char *fault_addr;

	if (generation == gate_generation() || c->me == peer_self())
		return 0;
	c->forked_away = 1;
	if (side == PRODUCER && !c->self->multi[PRODUCER])
		(void)ch_run(c, unname_child_body, &fault_addr);	/* a fault: nothing to undo */
	if (!PyErr_Occurred())
		PyErr_Format(PyExc_RuntimeError,
			     "a signal handler forked while this %s waited; the child does not hold "
			     "the %s side of the Channel at offset %zd and %s nothing",
			     side == PRODUCER ? "send" : "receive",
			     side == PRODUCER ? "producer" : "consumer", c->self->offset,
			     side == PRODUCER ? "sends" : "receives");
	return 1;
}

static int
room_body(void *arg)
{
	struct ch_call *c = arg;

	if (ch_closed_to_sender(c))
		return CH_CLOSED_SEND;
	c->tail = __atomic_load_n(c->w.tail, __ATOMIC_RELAXED);
	return ch_room(c, 0);
}

/*
 * Waits for room for c->len payload bytes (the producer side is held).
 * Returns BLOCK_READY, BLOCK_TIMEOUT, or BLOCK_ERROR with an exception.
 */
int
ch_wait_room(struct ch_call *c, const struct deadline *d)
{
	unsigned long generation = gate_generation();
	const char *fault_addr = NULL;
	struct block_op op = {0};
	int rc = ch_run(c, room_body, &fault_addr);

	if (rc == BLOCK_SLEEP) {
		if (deadline_passed(d))
			return BLOCK_TIMEOUT;	/* timeout=0: no spinning either */
		if (gate_upgrade(&c->gate, PIN_WAIT) < 0)
			return BLOCK_ERROR;
		op.gate = &c->gate;
		op.poll = ch_space_poll;
		op.announce = ch_space_announce;
		op.ctx = c;
		op.spin = block_default_spin();
		rc = block_until(&op, d);
		if (forked_away(c, generation, PRODUCER))
			return BLOCK_ERROR;
		if (rc == BLOCK_TIMEOUT || rc == BLOCK_READY || rc == BLOCK_ERROR)
			return rc;
		fault_addr = NULL;
	}
	if (rc == BLOCK_READY)
		return rc;
	ch_pin_held_side(c);
	ch_error(c->self, rc, fault_addr, NULL);
	return BLOCK_ERROR;
}

/* After publishing: wake a sleeping consumer. */
int
ch_wake_consumers(struct ch_call *c, uint32_t count)
{
	if (c->waiters == 0)
		return 0;
	ch_pin_held_side(c);	/* a failed wake raises */
	return block_wake(c->self->map, c->gate.offset + CH_DATA_SEQ, count) < 0 ? -1 : 0;
}

int
ch_check_length(ChannelObject *self, Py_ssize_t len)
{
	if ((uint64_t)len <= max_message(self->capacity))
		return 0;
	PyErr_Format(PyExc_ValueError,
		     "a message of %zd bytes does not fit the Channel at offset %zd "
		     "(max_message %llu)", len, self->offset,
		     (unsigned long long)max_message(self->capacity));
	return -1;
}

static int
peek_body(void *arg)
{
	struct ch_call *c = arg;
	const char *payload;

	return ch_peek(c, &payload, 0);
}

/* Waits for a record at the head (the consumer side is held).  BLOCK_READY
 * (peeked), BLOCK_TIMEOUT, CH_EOF, or BLOCK_ERROR with an exception. */
int
ch_wait_data(struct ch_call *c, const struct deadline *d)
{
	unsigned long generation = gate_generation();
	const char *fault_addr = NULL;
	struct block_op op = {0};
	int rc = ch_run(c, peek_body, &fault_addr);

	if (rc == BLOCK_SLEEP) {
		if (deadline_passed(d))
			return BLOCK_TIMEOUT;	/* timeout=0: no spinning either */
		op.gate = &c->gate;
		op.poll = ch_data_poll;
		op.announce = ch_data_announce;
		op.ctx = c;
		op.spin = block_default_spin();
		rc = block_until(&op, d);
		if (forked_away(c, generation, CONSUMER))
			return BLOCK_ERROR;
		if (rc == BLOCK_ERROR)
			return rc;
		fault_addr = NULL;
	}
	if (rc == BLOCK_READY || rc == BLOCK_TIMEOUT || rc == CH_EOF)
		return rc;
	ch_error(c->self, rc, fault_addr, NULL);
	return BLOCK_ERROR;
}

int
ch_wake_producers(struct ch_call *c)
{
	if (c->waiters == 0)
		return 0;
	return block_wake(c->self->map, c->gate.offset + CH_SPACE_SEQ, 1) < 0 ? -1 : 0;
}

/* ---- tokens -------------------------------------------------------------- */

static void
token_drop(PyObject *capsule)
{
	struct ch_token *t;
	PyObject *type, *value, *tb;

	PyErr_Fetch(&type, &value, &tb);	/* dropped while one propagates */
	t = PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule));
	if (t == NULL) {
		PyErr_Clear();
	} else {
		t->end(t);
		Py_DECREF(t->self);
		PyMem_Free(t);
	}
	PyErr_Restore(type, value, tb);
}

PyObject *
ch_token_new(ChannelObject *self, enum side side, uint64_t tag, const char *kind,
	     void (*end)(struct ch_token *t))
{
	struct ch_token *t = PyMem_Malloc(sizeof(*t));
	PyObject *capsule;

	if (t == NULL)
		return PyErr_NoMemory();
	*t = (struct ch_token){(ChannelObject *)Py_NewRef(self), side, tag, 1, end};
	/* @kind is a string literal: the capsule keeps the pointer */
	capsule = PyCapsule_New(t, kind, token_drop);
	if (capsule == NULL) {
		Py_DECREF(self);
		PyMem_Free(t);
	}
	return capsule;
}

struct ch_token *
ch_token_of(PyObject *capsule, const char *kind)
{
	return PyCapsule_GetPointer(capsule, kind);
}
