/*
 * pymmapdev.Channel, the type: construction (creating or checking the
 * region's descriptor), letting go of claims and open operations when an
 * object goes, close_send(), len(), the announcements asyncio waits make,
 * and the method table.  The Python class in pymmapdev/channel.py adds
 * the context managers, arrays and asyncio on top; channel_internal.h
 * has the protocol and says which file does what.
 */
#include "channel_internal.h"
#include "pages.h"

#include <string.h>
#include <unistd.h>

#include "structmember.h"

/* ---- asyncio: announce a sleeper, hand the word to an event loop --------- */

static uint32_t *
waiters_word(struct ch_call *c)
{
	return c->side == PRODUCER ? c->w.producer_waiters : c->w.consumer_waiters;
}

static int
withdraw_body(void *arg)
{
	struct ch_call *c = arg;

	__atomic_fetch_add(waiters_word(c), (uint32_t)-1, __ATOMIC_SEQ_CST);
	return 0;
}

static int
announce_body(void *arg)
{
	struct ch_call *c = arg;
	const char *payload;
	int rc;

	if (c->side == PRODUCER) {
		c->seq = __atomic_load_n(c->w.space_seq, __ATOMIC_ACQUIRE);
		__atomic_fetch_add(c->w.producer_waiters, 1, __ATOMIC_SEQ_CST);
		c->tail = __atomic_load_n(c->w.tail, __ATOMIC_RELAXED);
		rc = ch_closed_send(c) ? CH_CLOSED_SEND : ch_room(c, 1);
	} else {
		c->seq = __atomic_load_n(c->w.data_seq, __ATOMIC_ACQUIRE);
		__atomic_fetch_add(c->w.consumer_waiters, 1, __ATOMIC_SEQ_CST);
		rc = ch_peek(c, &payload, 1);
	}
	if (rc != BLOCK_SLEEP)
		withdraw_body(c);
	return rc;
}

/*
 * The token of an announcement (a ch_token), returned with the word to
 * await: dropped before channel.py's finally withdraws it (_withdraw), it
 * withdraws then, instead of leaving the waiters word one high for good
 * (every publish of every peer a needless wake syscall).  A forked child's
 * copy (a pending send_async/recv_async it inherited and ends) withdraws
 * nothing: the sleeper is the parent's, which withdraws it itself (twice
 * took the word below zero, to 2**32 - 1).  Its tag is the fork generation
 * it was made in.
 */
#define ANNOUNCE_TOKEN "pymmapdev.Channel.announcement"

/* Withdraws @t's sleeper if it is still this process's to withdraw. */
static int
token_withdraw(struct ch_token *t)
{
	const char *fault_addr;
	struct ch_call c;
	int rc;

	if (!t->live || t->tag != gate_generation())
		return 0;
	t->live = 0;
	if (ch_admit(t->self, &c, PIN_ACCESS) < 0)
		return -1;
	c.side = t->side;
	rc = ch_run(&c, withdraw_body, &fault_addr);
	gate_leave(&c.gate);
	if (rc == FAULT_HIT) {
		mapping_raise_fault(t->self->map, fault_addr, NULL);
		return -1;
	}
	return 0;
}

static void
announce_token_end(struct ch_token *t)
{
	if (token_withdraw(t) < 0)
		PyErr_Clear();	/* closed, or a fault: nothing to undo */
}

/*
 * The token of the sleeper @c announced, or NULL (then withdrawn).  The
 * token is an allocation, which a PIN_ACCESS admission may not make
 * (mapping.h: a collection there could close the mapping under us): the
 * admission takes a real pin first.
 */
static PyObject *
announce_token_new(ChannelObject *self, struct ch_call *c)
{
	PyObject *token = NULL;
	const char *fault_addr;

	if (gate_upgrade(&c->gate, PIN_WAIT) == 0)
		token = ch_token_new(self, c->side, gate_generation(), ANNOUNCE_TOKEN,
				     announce_token_end);
	if (token == NULL)		/* nobody else can withdraw it: now */
		(void)ch_run(c, withdraw_body, &fault_addr);
	return token;
}

/*
 * _announce(side, nbytes) -> ((offset, expected, watch_peer) to await,
 * token), or None when the call should be retried now (data or room
 * appeared, or the end).  watch_peer: a consumer at the end of the stream
 * waits for a producer still in a send, whose death moves no word: the
 * await must end every slice to look again, as the blocking loop's
 * sliced sleep does (ch_data_poll).
 */
static PyObject *
ch_announce(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	const char *fault_addr;
	PyObject *result = NULL, *token = NULL;
	struct ch_call c;
	Py_ssize_t side, nbytes;
	int rc;

	if (args_exact("_announce", nargs, 2) < 0 || arg_length(args[0], "side", &side) < 0 ||
	    arg_length(args[1], "nbytes", &nbytes) < 0)
		return NULL;
	if (ch_admit(self, &c, PIN_ACCESS) < 0)
		return NULL;
	c.side = side == PRODUCER ? PRODUCER : CONSUMER;
	c.len = (uint64_t)nbytes;	/* the room a sender needs */
	rc = ch_run(&c, announce_body, &fault_addr);
	if (rc == BLOCK_SLEEP)
		token = announce_token_new(self, &c);
	gate_leave(&c.gate);
	if (rc == FAULT_HIT)
		return mapping_raise_fault(self->map, fault_addr, NULL);
	if (rc != BLOCK_SLEEP)
		Py_RETURN_NONE;
	if (token == NULL)
		return NULL;
	/* N: the token goes with the result, or (on failure) withdraws now */
	result = Py_BuildValue("((nkO)N)",
			       self->offset + (c.side == PRODUCER ? CH_SPACE_SEQ : CH_DATA_SEQ),
			       (unsigned long)c.seq, c.sending ? Py_True : Py_False, token);
	return result;
}

/* _withdraw(token): the sleeper _announce() counted in goes (once). */
static PyObject *
ch_withdraw(ChannelObject *Py_UNUSED(self), PyObject *arg)
{
	struct ch_token *t = ch_token_of(arg, ANNOUNCE_TOKEN);

	if (t == NULL || token_withdraw(t) < 0)
		return NULL;
	Py_RETURN_NONE;
}

/* ---- end of stream, length ----------------------------------------------- */

static int
close_body(void *arg)
{
	struct ch_call *c = arg;

	__atomic_store_n(c->w.closed, 1, __ATOMIC_SEQ_CST);	/* ch_closed_send() */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	__atomic_fetch_add(c->w.data_seq, 1, __ATOMIC_RELEASE);
	__atomic_fetch_add(c->w.space_seq, 1, __ATOMIC_RELEASE);
	return 0;
}

static PyObject *
ch_close_send(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
	const char *fault_addr;
	struct ch_call c;

	if (ch_admit(self, &c, PIN_ACCESS) < 0)
		return NULL;
	if (ch_run(&c, close_body, &fault_addr) == FAULT_HIT) {
		gate_leave(&c.gate);
		return mapping_raise_fault(self->map, fault_addr, NULL);
	}
	/* every consumer, asleep or about to be, must see the end, and every
	 * producer waiting for room must stop waiting */
	if (block_wake(self->map, c.gate.offset + CH_DATA_SEQ, UINT32_MAX) < 0 ||
	    block_wake(self->map, c.gate.offset + CH_SPACE_SEQ, UINT32_MAX) < 0) {
		gate_leave(&c.gate);
		return NULL;
	}
	gate_leave(&c.gate);
	Py_RETURN_NONE;
}

static int
count_body(void *arg)
{
	struct ch_call *c = arg;
	uint64_t received = __atomic_load_n(c->w.received, __ATOMIC_ACQUIRE);
	uint64_t sent = __atomic_load_n(c->w.sent, __ATOMIC_ACQUIRE);

	if (sent < received || sent - received > c->w.cap / REC_HEADER)
		return CH_CORRUPT;
	c->len = sent - received;
	return 0;
}

static Py_ssize_t
ch_length(ChannelObject *self)
{
	const char *fault_addr;
	struct ch_call c;
	int rc;

	if (ch_admit(self, &c, PIN_ACCESS) < 0)
		return -1;
	rc = ch_run(&c, count_body, &fault_addr);
	gate_leave(&c.gate);
	if (rc != 0) {
		ch_error(self, rc, fault_addr, NULL);
		return -1;
	}
	return (Py_ssize_t)c.len;
}

/* ---- the type ------------------------------------------------------------ */

/* A ring capacity the descriptor can hold; ValueError otherwise. */
static int
check_capacity(Py_ssize_t capacity)
{
	if (capacity < CH_MIN_CAPACITY || capacity % 8 != 0 ||
	    (uint64_t)capacity >> (DESC_CAPACITY_BITS + 3) != 0) {
		PyErr_Format(PyExc_ValueError,
			     "capacity %zd must be a multiple of 8, at least %d and at most %llu bytes",
			     capacity, CH_MIN_CAPACITY,
			     (unsigned long long)((UINT64_C(1) << (DESC_CAPACITY_BITS + 3)) - 8));
		return -1;
	}
	return 0;
}

/* The descriptor word of a channel of @capacity and these modes. */
static uint64_t
descriptor(uint64_t capacity, int multi_producer, int multi_consumer)
{
	return DESC_MAGIC << 48 | DESC_LAYOUT << DESC_HEAD_SHIFT |
	       (uint64_t)(multi_producer ? DESC_MULTI_PRODUCER : 0) << DESC_MODES_SHIFT |
	       (uint64_t)(multi_consumer ? DESC_MULTI_CONSUMER : 0) << DESC_MODES_SHIFT |
	       capacity / 8;
}

/* "capacity N[, multi_producer=True][, multi_consumer=True]" of a descriptor */
static PyObject *
describe_descriptor(uint64_t desc)
{
	uint64_t modes = desc >> DESC_MODES_SHIFT;

	return PyUnicode_FromFormat("capacity %llu%s%s",
				    (unsigned long long)((desc & ((UINT64_C(1) << DESC_CAPACITY_BITS) - 1)) * 8),
				    modes & DESC_MULTI_PRODUCER ? ", multi_producer=True" : "",
				    modes & DESC_MULTI_CONSUMER ? ", multi_consumer=True" : "");
}

/* The ValueError of a region at @offset whose descriptor is @found, not
 * @want: what it holds against what this object asks for, so that the
 * processes can agree; _ChannelMismatch when it holds another Channel. */
static void
mismatch_error(module_state *st, Py_ssize_t offset, uint64_t want, uint64_t found)
{
	PyObject *theirs, *ours;
	char word[19];		/* PyErr_Format has no %016llx before 3.12 */

	if (found >> DESC_HEAD_SHIFT != want >> DESC_HEAD_SHIFT) {
		PyOS_snprintf(word, sizeof(word), "0x%016llx", (unsigned long long)found);
		PyErr_Format(PyExc_ValueError,
			     "the region at offset %zd holds no Channel (its first word is "
			     "%s, not zero): a new channel needs zeroed bytes", offset, word);
		return;
	}
	theirs = describe_descriptor(found);
	ours = theirs == NULL ? NULL : describe_descriptor(want);
	if (ours != NULL)
		PyErr_Format(st->channel_mismatch,
			     "the region at offset %zd holds a Channel of %U, not %U: every "
			     "process must construct it alike", offset, theirs, ours);
	Py_XDECREF(theirs);
	Py_XDECREF(ours);
}

/* The error of attach_verdict()'s @rc for a region at @offset whose
 * descriptor is @found. */
static void
attach_error(module_state *st, int rc, Py_ssize_t offset, uint64_t want, uint64_t found)
{
	if (rc == CH_MISMATCH)
		mismatch_error(st, offset, want, found);
	else
		(void)ch_foreign_error(offset);
}

/* Whether a region whose descriptor and namespace words are @desc and @ns
 * may become or be the channel of descriptor @want: 0, CH_MISMATCH or
 * CH_FOREIGN.  A zero word is one attach_body() fills in. */
static int
attach_verdict(uint64_t desc, uint64_t ns, uint64_t want)
{
	if (desc != 0 && desc != want)
		return CH_MISMATCH;
	if (ns != 0 && ns != peer_namespace())
		return CH_FOREIGN;
	return 0;
}

/* Creation or check of the descriptor and the namespace; the descriptor
 * found is left in c->seen.  Both words are judged before either is
 * written: a region refused is left as it was (one whose namespace word
 * was another's used to get our descriptor first). */
static int
attach_body(void *arg)
{
	struct ch_call *c = arg;
	ChannelObject *self = c->self;
	uint64_t want = descriptor(self->capacity, self->multi[PRODUCER], self->multi[CONSUMER]);
	uint64_t desc = __atomic_load_n(c->w.desc, __ATOMIC_ACQUIRE);
	uint64_t ns = __atomic_load_n(c->w.ns, __ATOMIC_ACQUIRE);
	int rc = attach_verdict(desc, ns, want);

	/* a peer may fill either word in meanwhile: then it is judged again */
	if (rc == 0 && desc == 0 &&
	    !__atomic_compare_exchange_n(c->w.desc, &desc, want, 0, __ATOMIC_ACQ_REL,
					 __ATOMIC_ACQUIRE))
		rc = attach_verdict(desc, ns, want);
	if (rc == 0 && ns == 0 &&
	    !__atomic_compare_exchange_n(c->w.ns, &ns, peer_namespace(), 0, __ATOMIC_ACQ_REL,
					 __ATOMIC_ACQUIRE))
		rc = attach_verdict(desc, ns, want);
	c->seen = desc;
	return rc;
}

/*
 * _check_head(head, offset, capacity, multi_producer, multi_consumer):
 * None if a region at @offset whose first bytes are @head (fewer are
 * followed by zeros, as a file grown to hold the channel would be) may
 * become or be that channel; the constructor's ValueError if not.
 * open_channel() asks before it grows an existing file, so that a file it
 * refuses is left as it was.  @head is bytes (what it read from the
 * file): any buffer could be a Mapping of a truncated file, and this
 * copy is not fault-guarded.
 */
static PyObject *
ch_check_head(PyTypeObject *type, PyObject *const *args, Py_ssize_t nargs)
{
	module_state *st = module_state_of_type(type);
	uint64_t words[2] = {0, 0}, want;
	int multi_producer, multi_consumer, rc;
	Py_ssize_t offset, capacity, len;

	if (st == NULL || args_exact("_check_head", nargs, 5) < 0)
		return NULL;
	if (!PyBytes_Check(args[0])) {
		PyErr_Format(PyExc_TypeError, "_check_head() takes the head as bytes, not %.200s",
			     Py_TYPE(args[0])->tp_name);
		return NULL;
	}
	if (arg_offset(args[1], &offset) < 0 || arg_length(args[2], "capacity", &capacity) < 0 ||
	    check_capacity(capacity) < 0 || arg_flag(args[3], &multi_producer) < 0 ||
	    arg_flag(args[4], &multi_consumer) < 0)
		return NULL;
	/* bytes are immutable: what __index__ above ran cannot have changed them */
	len = PyBytes_GET_SIZE(args[0]);
	memcpy(words, PyBytes_AS_STRING(args[0]),
	       (size_t)len < sizeof(words) ? (size_t)len : sizeof(words));
	want = descriptor((uint64_t)capacity, multi_producer, multi_consumer);
	rc = attach_verdict(words[CH_DESC / 8], words[CH_NS / 8], want);
	if (rc != 0) {
		attach_error(st, rc, offset, want, words[CH_DESC / 8]);
		return NULL;
	}
	Py_RETURN_NONE;
}

/*
 * A new channel's first lap would take a page fault every page in both
 * processes (64 B messages ran at half their steady rate until the ring
 * had wrapped once): fault the region in while nobody waits on us.  Only
 * file and memfd pages (the mmapdev driver's are resident; other device
 * memory must not see our touches), at most CH_PREFAULT_MAX bytes, best
 * effort: what cannot be populated (a truncated file, say) is reported by
 * the guarded accesses that meet it.  Without the GIL (it can take a
 * while), so the admission becomes a real pin first: another thread's
 * close() must not unmap the range under us.
 */
#define CH_PREFAULT_MAX	((size_t)64 << 20)

static void
ch_prefault(struct gate *g)
{
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	char *start = (char *)((uintptr_t)g->addr & ~(page - 1));
	size_t len = (size_t)(g->addr + g->len - start);

	if (g->map->kind == MAPPING_KIND_DEVICE)
		return;
	if (gate_upgrade(g, PIN_WAIT) < 0) {
		PyErr_Clear();		/* every pin slot taken: skip the optimisation */
		return;
	}
	if (len > CH_PREFAULT_MAX)
		len = CH_PREFAULT_MAX;
	Py_BEGIN_ALLOW_THREADS
	(void)pages_populate(start, len, 0);	/* best effort, see above */
	Py_END_ALLOW_THREADS
}

static PyObject *
ch_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
	static const char *const names[] = {"mapping", "offset", "capacity",
					    "multi_producer", "multi_consumer"};
	static const struct arg_spec spec = {"Channel", names, 5, 3, 0, 3};
	module_state *st = module_state_of_type(type);
	PyObject *argv[5], *kwnames = NULL, *stack[5];
	Py_ssize_t nargs = PyTuple_GET_SIZE(args), offset, capacity, nkw = 0;
	int multi_producer = 0, multi_consumer = 0, rc;
	const char *fault_addr;
	ChannelObject *self;
	MappingObject *map;
	struct ch_call c;
	char what[80];

	if (st == NULL)
		return NULL;
	/* the vectorcall form of (args, kwargs), for the one parser */
	if (nargs > 5) {
		PyErr_Format(PyExc_TypeError, "Channel() takes at most 3 positional arguments "
			     "(%zd given)", nargs);
		return NULL;
	}
	for (Py_ssize_t i = 0; i < nargs; i++)
		stack[i] = PyTuple_GET_ITEM(args, i);
	if (kwargs != NULL && PyDict_GET_SIZE(kwargs) > 0) {
		PyObject *key, *value;
		Py_ssize_t pos = 0;

		if (nargs + PyDict_GET_SIZE(kwargs) > 5) {
			PyErr_SetString(PyExc_TypeError, "Channel() takes at most 5 arguments");
			return NULL;
		}
		kwnames = PyTuple_New(PyDict_GET_SIZE(kwargs));
		if (kwnames == NULL)
			return NULL;
		while (PyDict_Next(kwargs, &pos, &key, &value)) {
			PyTuple_SET_ITEM(kwnames, nkw, Py_NewRef(key));
			stack[nargs + nkw++] = value;
		}
	}
	rc = args_unpack(&spec, stack, nargs, kwnames, argv);
	Py_XDECREF(kwnames);
	if (rc < 0 || arg_mapping(st, "Channel", argv[0], &map) < 0 ||
	    arg_offset(argv[1], &offset) < 0 || arg_length(argv[2], "capacity", &capacity) < 0 ||
	    arg_flag(argv[3], &multi_producer) < 0 || arg_flag(argv[4], &multi_consumer) < 0)
		return NULL;
	if (check_capacity(capacity) < 0)
		return NULL;
	PyOS_snprintf(what, sizeof(what), "a Channel of capacity %zd (Channel.size_for)",
		      capacity);
	if (gate_check_room(map, what, offset, CH_HEADER + capacity) < 0)
		return NULL;
	self = (ChannelObject *)type->tp_alloc(type, 0);
	if (self == NULL)
		return NULL;
	self->map = (MappingObject *)Py_NewRef(map);
	self->offset = offset;
	self->capacity = (uint64_t)capacity;
	self->multi[PRODUCER] = multi_producer;
	self->multi[CONSUMER] = multi_consumer;
	(void)peer_namespace();		/* reads /proc: not inside the guard */
	if (ch_admit(self, &c, PIN_ACCESS) < 0) {
		Py_DECREF(self);
		return NULL;
	}
	rc = ch_run(&c, attach_body, &fault_addr);
	if (rc == 0)
		ch_prefault(&c.gate);
	gate_leave(&c.gate);
	if (rc != 0) {
		if (rc == CH_MISMATCH || rc == CH_FOREIGN)
			attach_error(st, rc, self->offset, descriptor(self->capacity,
				     self->multi[PRODUCER], self->multi[CONSUMER]), c.seen);
		else
			ch_error(self, rc, fault_addr, NULL);
		Py_DECREF(self);
		return NULL;
	}
	return (PyObject *)self;
}

/* Lets go of what this object holds: open operations, single-mode claims. */
static void
ch_let_go(ChannelObject *self)
{
	struct ch_call c;

	for (int side = PRODUCER; side <= CONSUMER; side++) {
		int open = ch_is_open(self, side);
		/* A claim copied into a forked child is the parent's: the
		 * child's copy dropping it would free the side under a live
		 * producer (or consumer), and let a second one in.  A joined
		 * claim is the object's that made it, alike. */
		int claimed = !self->multi[side] && self->registered[side] != 0 &&
			      self->registered_generation[side] == gate_generation() &&
			      !self->joined[side];

		if (open)
			ch_drop_open(self, side);
		if (!claimed)
			continue;
		if (ch_admit(self, &c, PIN_ACCESS) < 0) {
			PyErr_Clear();
			continue;
		}
		/* hand the side back so another thread may claim it */
		(void)ch_hand_back(&c, side, self->registered[side]);
		self->registered[side] = 0;
		gate_leave(&c.gate);
	}
}

static void
ch_dealloc(ChannelObject *self)
{
	PyTypeObject *type = Py_TYPE(self);
	PyObject *type_e, *value, *tb;

	PyObject_GC_UnTrack(self);
	PyErr_Fetch(&type_e, &value, &tb);
	if (self->map != NULL)
		ch_let_go(self);
	PyErr_Restore(type_e, value, tb);
	Py_CLEAR(self->map);
	type->tp_free(self);
	Py_DECREF(type);
}

static int
ch_traverse(ChannelObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	Py_VISIT(self->map);
	return 0;
}

static int
ch_clear(ChannelObject *self)
{
	if (self->map != NULL)
		ch_let_go(self);
	Py_CLEAR(self->map);
	return 0;
}

static PyObject *
ch_size_for(PyObject *Py_UNUSED(type), PyObject *arg)
{
	Py_ssize_t capacity;

	if (arg_length(arg, "capacity", &capacity) < 0 || check_capacity(capacity) < 0)
		return NULL;
	return PyLong_FromSsize_t(CH_HEADER + capacity);
}

static PyObject *
ch_repr(ChannelObject *self)
{
	return PyUnicode_FromFormat("<pymmapdev.Channel offset=%zd capacity=%llu%s%s of %R>",
				    self->offset, (unsigned long long)self->capacity,
				    self->multi[PRODUCER] ? " multi_producer" : "",
				    self->multi[CONSUMER] ? " multi_consumer" : "",
				    (PyObject *)self->map);
}

static PyObject *
ch_get_mapping(ChannelObject *self, void *Py_UNUSED(closure))
{
	return Py_NewRef(self->map);
}

static PyObject *
ch_get_max_message(ChannelObject *self, void *Py_UNUSED(closure))
{
	return PyLong_FromUnsignedLongLong(max_message(self->capacity));
}

static PyObject *
ch_get_capacity(ChannelObject *self, void *Py_UNUSED(closure))
{
	return PyLong_FromUnsignedLongLong(self->capacity);
}

static PyObject *
ch_get_multi(ChannelObject *self, void *closure)
{
	return PyBool_FromLong(self->multi[closure == NULL ? PRODUCER : CONSUMER]);
}

static PyGetSetDef ch_getset[] = {
	{"mapping", (getter)ch_get_mapping, NULL, "The Mapping holding the channel.", NULL},
	{"capacity", (getter)ch_get_capacity, NULL, "Ring bytes.", NULL},
	{"max_message", (getter)ch_get_max_message, NULL,
	 "The largest message that fits (half the ring, less a record header;\n"
	 "at most 4 GiB - 1).", NULL},
	{"multi_producer", (getter)ch_get_multi, NULL, "Several producers allowed.", NULL},
	{"multi_consumer", (getter)ch_get_multi, NULL, "Several consumers allowed.", (void *)1},
	{NULL},
};

static PyMemberDef ch_members[] = {
	{"offset", T_PYSSIZET, offsetof(ChannelObject, offset), READONLY,
	 "Offset of the channel in the mapping."},
	{NULL},
};

static PyMethodDef ch_methods[] = {
	{"send", (PyCFunction)(void (*)(void))ch_send, METH_FASTCALL | METH_KEYWORDS,
	 "send($self, data, /, *, timeout=None)\n--\n\n"
	 "Send one message (any bytes-like, may be empty); waits while the ring\n"
	 "is full.  True when sent, False when timeout seconds passed."},
	{"send_many", (PyCFunction)(void (*)(void))ch_send_many, METH_FASTCALL | METH_KEYWORDS,
	 "send_many($self, messages, /, *, timeout=None)\n--\n\n"
	 "Send each message of an iterable; returns how many were sent before\n"
	 "the timeout."},
	{"recv", (PyCFunction)(void (*)(void))ch_recv, METH_FASTCALL | METH_KEYWORDS,
	 "recv($self, /, *, timeout=None)\n--\n\n"
	 "The next message as bytes; None when timeout seconds passed; EOFError\n"
	 "once the channel is closed for sending and drained."},
	{"recv_many", (PyCFunction)(void (*)(void))ch_recv_many, METH_FASTCALL | METH_KEYWORDS,
	 "recv_many($self, max_count, /, *, timeout=None)\n--\n\n"
	 "Up to max_count messages: at least one unless timed out ([])."},
	{"close_send", (PyCFunction)ch_close_send, METH_NOARGS,
	 "close_send($self, /)\n--\n\n"
	 "End of stream: once the ring is drained, recv raises EOFError; later\n"
	 "sends raise BrokenPipeError."},
	{"size_for", (PyCFunction)ch_size_for, METH_O | METH_STATIC,
	 "size_for(capacity, /)\n--\n\nBytes the region of a channel of capacity needs."},
	{"_check_head", (PyCFunction)(void (*)(void))ch_check_head, METH_FASTCALL | METH_CLASS,
	 "_check_head($type, head, offset, capacity, multi_producer, multi_consumer, /)\n--\n\n"
	 "None if a region starting with the bytes head (then zeros) may become or\n"
	 "be that channel; the constructor's ValueError if not (nothing written)."},
	{"_reserve", (PyCFunction)(void (*)(void))ch_reserve_begin, METH_FASTCALL,
	 "_reserve($self, nbytes, timeout, /)\n--\n\n"
	 "Room for nbytes: (its offset in the mapping, token), or None on\n"
	 "timeout.  The producer side stays held until _reserve_end(), or until\n"
	 "the token is dropped (the reservation dropped with it)."},
	{"_reserve_end", (PyCFunction)ch_reserve_end, METH_O,
	 "_reserve_end($self, commit, /)\n--\n\nPublish (commit true) or drop the reservation."},
	{"_view", (PyCFunction)ch_view_begin, METH_O,
	 "_view($self, timeout, /)\n--\n\n"
	 "((offset, length) of the next message in the mapping, token), or None\n"
	 "on timeout; the consumer side stays held until _view_end(), or until\n"
	 "the token is dropped (the message left in the ring)."},
	{"_view_end", (PyCFunction)ch_view_end, METH_NOARGS,
	 "_view_end($self, /)\n--\n\nConsume the viewed message."},
	{"_announce", (PyCFunction)(void (*)(void))ch_announce, METH_FASTCALL,
	 "_announce($self, side, nbytes, /)\n--\n\n"
	 "Announce a sleeper on side (0 send, 1 recv): ((offset, expected) of the\n"
	 "word to await, and whether a peer's death must end the wait (look again\n"
	 "every Watch.SLICE_NS), token), or None to retry now (then nothing is announced).\n"
	 "_withdraw(token) withdraws it; so does dropping the token."},
	{"_withdraw", (PyCFunction)ch_withdraw, METH_O,
	 "_withdraw($self, token, /)\n--\n\nWithdraw the announcement of _announce()'s token\n"
	 "(once; a forked child's inherited one stays the parent's)."},
	{NULL},
};

static PyType_Slot ch_slots[] = {
	{Py_tp_doc, "Channel(mapping, offset, capacity, *, multi_producer=False, "
		    "multi_consumer=False)\n--\n\n"
		    "A message channel in Channel.size_for(capacity) bytes at offset (a multiple\n"
		    "of 64) of a mapping; zero bytes are an empty channel."},
	{Py_tp_new, ch_new},
	{Py_tp_dealloc, ch_dealloc},
	{Py_tp_traverse, ch_traverse},
	{Py_tp_clear, ch_clear},
	{Py_tp_repr, ch_repr},
	{Py_tp_methods, ch_methods},
	{Py_tp_members, ch_members},
	{Py_tp_getset, ch_getset},
	{Py_mp_length, ch_length},
	{0, NULL},
};

PyType_Spec channel_type_spec = {
	.name = "pymmapdev._core.Channel",
	.basicsize = sizeof(ChannelObject),
	.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
	.slots = ch_slots,
};

int
channel_type_ready(PyTypeObject *type)
{
	return type_add_int(type, "HEADER", CH_HEADER);
}
