/*
 * Zero copy: Channel.reserve() and recv_view() (their context managers
 * are pymmapdev/channel.py's).  _reserve/_view take the side and keep a
 * pin; _reserve_end/_view_end publish or free the record and end both;
 * a token returned with the offset ends them if the Python side loses
 * the result (channel_internal.h has the protocol).
 */
#include "channel_internal.h"

/* The region names the thread with c->side open, or no one (0): other
 * objects of the thread look there (channel_internal.h).  The side is
 * held, so the word is ours to write. */
static int
name_open_body(void *arg)
{
	struct ch_call *c = arg;

	__atomic_store_n(c->w.open[c->side], c->me, __ATOMIC_RELAXED);
	return 0;
}

static int
unname_open_body(void *arg)
{
	struct ch_call *c = arg;

	__atomic_store_n(c->w.open[c->side], 0, __ATOMIC_RELAXED);
	return 0;
}

/* Ends an open reserve or view: drops the side and the pin. */
static int
close_open(ChannelObject *self, struct ch_call *c, enum side side)
{
	const char *fault_addr;
	int rc, failed;

	/* The side is held in the name of the thread that opened it: the
	 * block may end in another one (a context manager handed over), and
	 * a release in that one's name would leave the side held for good. */
	c->me = self->open_me[side];
	/* no longer open before the side is free: in multi mode another
	 * thread of this object may take it and open anew at once */
	self->open[side] = 0;
	c->side = side;
	/* a fault still leaves the side: a name left behind refuses only
	 * this thread's other objects, on a mapping that faults anyway */
	failed = ch_run(c, unname_open_body, &fault_addr) == FAULT_HIT;
	if (failed)
		mapping_raise_fault(self->map, fault_addr, NULL);
	/* single mode: a reserve() was in a send from its look at closed
	 * (ch_wait_room) on, its sending word set until here (a commit
	 * cleared it already, a reservation dropped did not) */
	c->in_send = side == PRODUCER && !self->multi[PRODUCER];
	rc = ch_leave_side(c, side);
	mapping_unpin_from(self->map, PIN_CHANNEL, self->open_generation[side]);
	return failed ? -1 : rc;
}

/* Ends an open reserve or view unpublished, where nothing can be raised. */
void
ch_drop_open(ChannelObject *self, enum side side)
{
	struct ch_call c;

	if (ch_admit(self, &c, PIN_ACCESS) < 0) {
		PyErr_Clear();	/* cannot be closed: the open one pins it */
		return;
	}
	if (close_open(self, &c, side) < 0)
		PyErr_Clear();
	gate_leave(&c.gate);
}

/*
 * The token of an open reserve() or recv_view() (a ch_token), returned
 * with its offset: dropped before the Python context manager's finally
 * ends the operation, it ends it unpublished (the reservation dropped, the
 * viewed message left in the ring) instead of leaving the side held for
 * good (in multi mode, for every process).  Its tag is the open's serial:
 * a later open is not this token's.
 */
#define OPEN_TOKEN "pymmapdev.Channel.open"

static void
open_token_end(struct ch_token *t)
{
	if (ch_is_open(t->self, t->side) && t->self->open_serial[t->side] == t->tag)
		ch_drop_open(t->self, t->side);
}

/* A token for the open about to be made on @side (the next serial). */
static PyObject *
open_token_new(ChannelObject *self, enum side side)
{
	return ch_token_new(self, side, self->open_serial[side] + 1, OPEN_TOKEN, open_token_end);
}

/* Marks @side open with what @c found; the token made for it names it. */
static void
mark_open(ChannelObject *self, const struct ch_call *c, enum side side, uint64_t pos)
{
	self->open[side] = 1;
	self->open_serial[side]++;
	self->open_generation[side] = gate_generation();
	self->open_pos[side] = pos;
	self->open_total[side] = c->total;
	self->open_len[side] = c->len;
	self->open_pad[side] = c->pad;
	self->open_me[side] = c->me;
}

/* Names this thread in the region as the one with @side open (after
 * mark_open): -1 with the fault raised, the open ended and the call's
 * admission left, when the region faults. */
static int
name_open(ChannelObject *self, struct ch_call *c, enum side side)
{
	const char *fault_addr;

	c->side = side;
	if (ch_run(c, name_open_body, &fault_addr) != FAULT_HIT)
		return 0;
	(void)close_open(self, c, side);
	mapping_raise_fault(self->map, fault_addr, NULL);
	gate_leave(&c->gate);
	return -1;
}

/*
 * Opens @side with what @c found (the side taken, room or a message ready
 * at @pos): the admission's pin becomes the open's PIN_CHANNEL first, as
 * the token is an allocation, which a PIN_ACCESS admission may not make
 * (mapping.h: a collection there could close the mapping under us); then
 * the open is marked and named, and the admission left.  The token, or
 * NULL with the error raised, nothing open and nothing held.
 */
static PyObject *
open_begin(ChannelObject *self, struct ch_call *c, enum side side, uint64_t pos)
{
	unsigned long generation = gate_generation();
	PyObject *token;

	if (gate_keep_pin(&c->gate, PIN_CHANNEL) < 0) {
		(void)ch_leave_side(c, side);
		gate_leave(&c->gate);
		return NULL;
	}
	token = open_token_new(self, side);
	if (token == NULL) {
		(void)ch_leave_side(c, side);
		mapping_unpin_from(self->map, PIN_CHANNEL, generation);
		return NULL;
	}
	mark_open(self, c, side, pos);
	if (name_open(self, c, side) < 0) {
		Py_DECREF(token);	/* the open has ended: ends nothing */
		return NULL;
	}
	gate_leave(&c->gate);
	return token;
}

/* (first, token): the open's result; the token ends it if that is lost. */
static PyObject *
open_result(PyObject *first, PyObject *token)
{
	PyObject *result = first == NULL ? NULL : PyTuple_Pack(2, first, token);

	Py_XDECREF(first);
	Py_DECREF(token);	/* with the tuple, or ending the open now */
	return result;
}

/* A fresh call on the already admitted region of an open reserve/view. */
static int
reopen(ChannelObject *self, struct ch_call *c, enum side side)
{
	if (!self->open[side] || self->open_generation[side] != gate_generation()) {
		PyErr_SetString(PyExc_RuntimeError, side == PRODUCER
				? "no reserve() is open on this Channel"
				: "no recv_view() is open on this Channel");
		return -1;
	}
	/* The pin of the open operation keeps the mapping: PIN_ACCESS */
	return ch_admit(self, c, PIN_ACCESS);
}

PyObject *
ch_reserve_begin(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	struct deadline deadline;
	struct ch_call c;
	Py_ssize_t nbytes;
	int timed_out, rc;
	PyObject *result = NULL, *token;

	if (args_exact("_reserve", nargs, 2) < 0 || arg_length(args[0], "nbytes", &nbytes) < 0 ||
	    arg_deadline(args[1], &deadline) < 0 || ch_check_length(self, nbytes) < 0)
		return NULL;
	if (ch_admit(self, &c, PIN_ACCESS) < 0)
		return NULL;
	if (ch_take_side(&c, PRODUCER, &deadline, &timed_out) < 0) {
		if (timed_out)
			result = Py_NewRef(Py_None);
		gate_leave(&c.gate);
		return result;
	}
	c.len = (uint64_t)nbytes;
	rc = ch_wait_room(&c, &deadline);
	if (rc != BLOCK_READY) {
		if (ch_leave_side(&c, PRODUCER) == 0 && rc == BLOCK_TIMEOUT)
			result = Py_NewRef(Py_None);
		gate_leave(&c.gate);
		return result;
	}
	token = open_begin(self, &c, PRODUCER, c.tail);
	if (token == NULL)
		return NULL;
	/* where the payload goes, in the mapping's coordinates */
	return open_result(PyLong_FromUnsignedLongLong(
		(unsigned long long)(self->offset + CH_HEADER +
				     (c.pad ? 0 : c.tail % self->capacity) + REC_HEADER)), token);
}

static int
commit_body(void *arg)
{
	struct ch_call *c = arg;
	uint64_t tail = __atomic_load_n(c->w.tail, __ATOMIC_RELAXED);

	/* The tail may not have moved under our reservation (we hold the
	 * side); if it did, a peer wrote it, and the space is not ours. */
	if (tail != c->tail)
		return CH_CORRUPT;
	/* close_send() while the block ran: consumers may already have seen
	 * the end of the stream, and nothing may follow it */
	if (ch_closed_to_sender(c))
		return CH_CLOSED_SEND;
	ch_place(c);
	ch_publish(c);
	ch_end_send(c, 1);	/* published */
	return 0;
}

PyObject *
ch_reserve_end(ChannelObject *self, PyObject *arg)
{
	int commit = PyObject_IsTrue(arg), rc = 0, failed = 0;
	const char *fault_addr;
	struct ch_call c;

	if (commit < 0 || reopen(self, &c, PRODUCER) < 0)
		return NULL;
	if (commit) {
		c.tail = self->open_pos[PRODUCER];
		c.total = self->open_total[PRODUCER];
		c.len = self->open_len[PRODUCER];
		c.pad = self->open_pad[PRODUCER];
		rc = ch_run(&c, commit_body, &fault_addr);
		if (rc != 0) {
			ch_error(self, rc, fault_addr, NULL);
			failed = 1;
		} else if (ch_wake_consumers(&c, 1) < 0) {
			failed = 1;
		}
	}
	if (close_open(self, &c, PRODUCER) < 0)
		failed = 1;
	gate_leave(&c.gate);
	if (failed)
		return NULL;
	Py_RETURN_NONE;
}

PyObject *
ch_view_begin(ChannelObject *self, PyObject *arg)
{
	struct deadline deadline;
	struct ch_call c;
	int timed_out, rc;
	PyObject *result = NULL, *token;

	if (arg_deadline(arg, &deadline) < 0)
		return NULL;
	if (ch_admit(self, &c, PIN_WAIT) < 0)
		return NULL;
	if (ch_take_side(&c, CONSUMER, &deadline, &timed_out) < 0) {
		if (timed_out)
			result = Py_NewRef(Py_None);
		gate_leave(&c.gate);
		return result;
	}
	rc = ch_wait_data(&c, &deadline);
	if (rc != BLOCK_READY) {
		if (rc == CH_EOF)
			ch_error(self, rc, NULL, NULL);
		if (ch_leave_side(&c, CONSUMER) == 0 && rc == BLOCK_TIMEOUT)
			result = Py_NewRef(Py_None);
		gate_leave(&c.gate);
		return result;
	}
	token = open_begin(self, &c, CONSUMER, c.head);
	if (token == NULL)
		return NULL;
	return open_result(Py_BuildValue(
		"(KK)",
		(unsigned long long)(self->offset + CH_HEADER +
				     (c.head + c.pad) % self->capacity + REC_HEADER),
		(unsigned long long)c.len), token);
}

static int
release_view_body(void *arg)
{
	struct ch_call *c = arg;
	uint64_t head = __atomic_load_n(c->w.head, __ATOMIC_RELAXED);

	if (head != c->head)
		return CH_CORRUPT;	/* moved under our view: a peer wrote it */
	ch_consume(c);
	return 0;
}

PyObject *
ch_view_end(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
	const char *fault_addr;
	struct ch_call c;
	int rc, failed = 0;

	if (reopen(self, &c, CONSUMER) < 0)
		return NULL;
	c.head = self->open_pos[CONSUMER];
	c.total = self->open_total[CONSUMER];
	rc = ch_run(&c, release_view_body, &fault_addr);
	if (rc != 0) {
		ch_error(self, rc, fault_addr, NULL);
		failed = 1;
	} else if (ch_wake_producers(&c) < 0) {
		failed = 1;
	}
	if (close_open(self, &c, CONSUMER) < 0)
		failed = 1;
	gate_leave(&c.gate);
	if (failed)
		return NULL;
	Py_RETURN_NONE;
}
