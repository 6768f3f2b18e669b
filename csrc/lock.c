/*
 * pymmapdev.Lock: a process-shared lock whose whole state is plain words in
 * the mapping.  No pointers, no libc internals: whatever a peer writes there
 * can make the lock wrong (that is the peer's data), never make us crash,
 * write elsewhere or wait without a bound.
 *
 * Layout at the lock's offset (a multiple of LOCK_ALIGN, so the lock owns a
 * cache line and never straddles a page; zero bytes are a free lock):
 *
 *	+0	u64	owner word (owner.h): 0 = free, else the holder
 *	+8	u64	the namespace tag of the lock's users (peer_namespace),
 *			0 until first use
 *	+16	48 bytes, zero
 *
 * The owner word is the lock (owner.h: one compare-exchange takes it, a
 * dead holder is detected between sleeps and taken over); the new holder
 * is told (owner_died, OwnerDiedWarning).  Identities mean something only
 * within one pid namespace of one machine, so the first user records its
 * namespace and users from elsewhere are refused.
 *
 * Sleeping goes through the blocking loop, so a Lock works on device
 * mappings too (the mmapdev module's WAIT/WAKE ioctls).
 */
#include "lock.h"
#include "args.h"
#include "block.h"
#include "owner.h"
#include "peer.h"

#include "structmember.h"

#define LOCK_SIZE	64
#define LOCK_ALIGN	64
#define LOCK_OWNER	0
#define LOCK_NS		8
#define LOCK_RESERVED	16

enum {
	LOCK_FOREIGN = OWNER_FAIL_LAST - 1,	/* another namespace's lock */
};

typedef struct {
	PyObject_HEAD
	MappingObject *map;
	Py_ssize_t offset;
	unsigned long held_generation;	/* 0, or the gate generation of our pin */
	uint64_t holder;		/* the thread that took the hold (peer.h) */
	int owner_died;
} LockObject;

/*
 * Locks this thread holds, counted in this program image.  An owner word
 * that names the calling thread while the count is 0 was written before an
 * exec(): the tid and start time survive it (and a non-leader thread that
 * execs takes the leader's), so the new program is "the holder" of a lock
 * no program holds any more, and no one else can tell (it looks alive).
 * That word is a dead holder's: acquire() takes it over.  With a count
 * above 0 it may still be this program's (a Lock object of this thread
 * dropped while held: the hold outlives the object), so "already held by
 * this thread", as ever.  Thread-local: no lock needed, and a forked
 * child's thread, which has another identity, never meets its copy.
 */
static _Thread_local unsigned long locks_held_here;

static module_state *
lock_state(LockObject *self)
{
	return (module_state *)PyType_GetModuleState(Py_TYPE(self));
}

/* ---- guarded bodies: plain words only ---------------------------------- */

struct lock_call {
	uint64_t *owner;
	uint64_t *ns;
	const unsigned char *reserved;
	uint64_t me;
	uint64_t seen;		/* the owner word as last read */
};

/* Constructor check: free or held, ours to use, nothing else written. */
static int
check_body(void *arg)
{
	struct lock_call *c = arg;
	uint64_t ns = 0, mine = peer_namespace(), owner;

	for (int i = 0; i < LOCK_SIZE - LOCK_RESERVED; i++)
		if (c->reserved[i] != 0)
			return OWNER_GARBAGE;
	owner = __atomic_load_n(c->owner, __ATOMIC_ACQUIRE);
	c->seen = owner;
	if (owner != 0 && !peer_valid(owner & ~OWNER_WAITERS))
		return OWNER_GARBAGE;
	/* First user: record the namespace; on failure @ns receives it. */
	if (!__atomic_compare_exchange_n(c->ns, &ns, mine, 0, __ATOMIC_ACQ_REL,
					 __ATOMIC_ACQUIRE) && ns != mine)
		return LOCK_FOREIGN;
	return 0;
}

static int
try_body(void *arg)
{
	struct lock_call *c = arg;

	return owner_try(c->owner, c->me, &c->seen);
}

static int
release_body(void *arg)
{
	struct lock_call *c = arg;

	return owner_release(c->owner, c->me, &c->seen);
}

/* Hands the word from us to c->seen (a dead holder's identity). */
static int
abandon_body(void *arg)
{
	struct lock_call *c = arg;
	uint64_t v = __atomic_load_n(c->owner, __ATOMIC_RELAXED);

	if ((v & ~OWNER_WAITERS) != c->me)
		return OWNER_NOT_MINE;
	/* Keep OWNER_WAITERS: the sleepers' word half does not change (same
	 * thread id), so they take it over when their slice ends. */
	return __atomic_compare_exchange_n(c->owner, &v, c->seen | (v & OWNER_WAITERS), 0,
					   __ATOMIC_RELEASE, __ATOMIC_RELAXED) ? 0 : OWNER_NOT_MINE;
}

static int
locked_body(void *arg)
{
	struct lock_call *c = arg;

	c->seen = __atomic_load_n(c->owner, __ATOMIC_ACQUIRE);
	return 0;
}

/* ---- errors ------------------------------------------------------------ */

static PyObject *
lock_error(LockObject *self, int rc, const char *fault_addr)
{
	switch (rc) {
	case FAULT_HIT:
		return mapping_raise_fault(self->map, fault_addr, NULL);
	case OWNER_GARBAGE:
		PyErr_Format(PyExc_ValueError,
			     "offset %zd does not hold a pymmapdev.Lock (the %d bytes of a "
			     "new lock must be zero; a peer may have overwritten them)",
			     self->offset, LOCK_SIZE);
		return NULL;
	case LOCK_FOREIGN:
		PyErr_Format(PyExc_ValueError,
			     "the Lock at offset %zd is used from another pid namespace or "
			     "machine: a dead holder could not be told from a live one",
			     self->offset);
		return NULL;
	case OWNER_RECURSIVE:
		PyErr_Format(PyExc_RuntimeError,
			     "the Lock at offset %zd is already held by this thread "
			     "(it is not recursive)", self->offset);
		return NULL;
	default:
		PyErr_Format(PyExc_SystemError, "Lock: unexpected state %d", rc);
		return NULL;
	}
}

/* Runs @body on the words of the admitted lock. */
static int
lock_run(struct gate *g, int (*body)(void *), struct lock_call *c,
	 const char **fault_addr)
{
	struct fault_span span = {g->addr, LOCK_SIZE};

	c->owner = (uint64_t *)(g->addr + LOCK_OWNER);
	c->ns = (uint64_t *)(g->addr + LOCK_NS);
	c->reserved = (const unsigned char *)g->addr + LOCK_RESERVED;
	return fault_run(body, c, &span, 1, fault_addr);
}

/*
 * The uncontended acquire (0 -> me) or release (me -> 0, nobody asleep)
 * as one guarded compare-exchange (fault.h: no sigsetjmp on this path).
 * 1 with *rc what the body would have returned (or FAULT_HIT); 0 when the
 * word held anything else: then the body decides.
 */
static int
lock_fast(struct gate *g, uint64_t from, uint64_t to, struct lock_call *c, int *rc,
	  const char **fault_addr)
{
	if (fault_rmw(g->addr + LOCK_OWNER, WIDTH_U64, FAULT_CMPXCHG, from, to, &c->seen,
		      fault_addr) == FAULT_HIT) {
		*rc = FAULT_HIT;
		return 1;
	}
	if (c->seen != from)
		return 0;
	*rc = from == 0 ? OWNER_TAKEN : 0;
	return 1;
}

static int
lock_admit(LockObject *self, struct gate *g, enum pin_kind pin)
{
	return gate_enter(g, self->map, self->offset, LOCK_SIZE, LOCK_ALIGN, GATE_WRITE, pin);
}

/* ---- the type ---------------------------------------------------------- */

static PyObject *
lock_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
	static const char *const names[] = {"mapping", "offset"};
	static const struct arg_spec spec = {"Lock", names, 2, 2, 0, 2};
	module_state *st = PyType_GetModuleState(type);
	PyObject *argv[2], *const *items;
	Py_ssize_t nargs = PyTuple_GET_SIZE(args);
	MappingObject *map;
	Py_ssize_t offset;
	LockObject *self;
	struct lock_call c = {0};
	struct gate g;
	const char *fault_addr;
	int rc;

	if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
		PyErr_SetString(PyExc_TypeError, "Lock() takes no keyword arguments");
		return NULL;
	}
	items = &PyTuple_GET_ITEM(args, 0);
	if (args_unpack(&spec, items, nargs, NULL, argv) < 0 ||
	    arg_mapping(st, "Lock", argv[0], &map) < 0 || arg_offset(argv[1], &offset) < 0 ||
	    gate_check_room(map, "a Lock (Lock.SIZE)", offset, LOCK_SIZE) < 0)
		return NULL;
	self = (LockObject *)type->tp_alloc(type, 0);
	if (self == NULL)
		return NULL;
	self->map = (MappingObject *)Py_NewRef(map);
	self->offset = offset;
	/* A device mapping's WAIT ioctl and a file's futex both need a
	 * writable word for OWNER_WAITERS: the gate refuses read-only ones. */
	if (lock_admit(self, &g, PIN_ACCESS) < 0)
		goto error;
	rc = lock_run(&g, check_body, &c, &fault_addr);
	gate_leave(&g);
	if (rc != 0) {
		lock_error(self, rc, fault_addr);
		goto error;
	}
	return (PyObject *)self;

error:
	Py_DECREF(self);
	return NULL;
}

static void
lock_dealloc(LockObject *self)
{
	PyTypeObject *type = Py_TYPE(self);

	PyObject_GC_UnTrack(self);
	/* Dropped while held: the word stays ours (like a threading.Lock, it
	 * is not released behind the user's back), but the mapping may close. */
	if (self->held_generation != 0)
		mapping_unpin_from(self->map, PIN_LOCK, self->held_generation);
	Py_CLEAR(self->map);
	type->tp_free(self);
	Py_DECREF(type);
}

static int
lock_traverse(LockObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	Py_VISIT(self->map);
	return 0;
}

static int
lock_clear(LockObject *self)
{
	if (self->held_generation != 0) {
		mapping_unpin_from(self->map, PIN_LOCK, self->held_generation);
		self->held_generation = 0;
	}
	Py_CLEAR(self->map);
	return 0;
}

/* Records a successful acquisition by thread @me: the admission's pin
 * becomes the hold. */
static void
lock_hold(LockObject *self, struct gate *g, uint64_t me)
{
	locks_held_here++;
	self->holder = me;
	if (self->held_generation == gate_generation()) {
		/* This object already pinned for a holder that died (another
		 * of our threads, taken over): one hold, one pin. */
		gate_leave(g);
	} else {
		/* admitted as PIN_LOCK already: keeping it cannot fail */
		(void)gate_keep_pin(g, PIN_LOCK);
		self->held_generation = gate_generation();
	}
}

/* This object holds nothing any more.  The count is the taker's: another
 * thread may end a hold whose holder died, a forked child one of the
 * parent's. */
static void
lock_unhold(LockObject *self)
{
	if (self->holder == peer_self() && locks_held_here > 0)
		locks_held_here--;
	self->holder = 0;
	self->held_generation = 0;
	mapping_unpin(self->map, PIN_LOCK);
}

static PyObject *lock_release(LockObject *self, PyObject *Py_UNUSED(ignored));

/*
 * Gives up a hold taken over from a dead holder without making the lock
 * look consistent: the OwnerDiedWarning became an error, so the caller
 * will not repair the state, and the next acquirer must be told in turn.
 * The word is left to a dead holder: our thread id with another start
 * time, which peer_check() calls dead.  Where it cannot (no /proc, so no
 * holder is ever found dead), the lock is released.  Runs with an
 * exception set; it keeps it.
 */
static void
lock_abandon(LockObject *self)
{
	PyObject *type, *value, *tb, *ok;
	struct lock_call c = {0};
	const char *fault_addr;
	struct gate g;

	PyErr_Fetch(&type, &value, &tb);
	c.me = peer_self();
	c.seen = c.me ^ (UINT64_C(1) << 32);
	if (peer_check(c.seen) != PEER_DEAD) {
		ok = lock_release(self, NULL);
		Py_XDECREF(ok);
	} else {
		/* Whatever the word held, this object holds nothing now (and
		 * our hold's pin keeps the mapping open for the admission). */
		if (lock_admit(self, &g, PIN_ACCESS) == 0) {
			(void)lock_run(&g, abandon_body, &c, &fault_addr);
			gate_leave(&g);
		}
		lock_unhold(self);
	}
	PyErr_Clear();
	PyErr_Restore(type, value, tb);
}

static PyObject *
lock_acquire(LockObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	static const char *const names[] = {"timeout"};
	static const struct arg_spec spec = {"acquire", names, 1, 0, 0, 1};
	PyObject *argv[1];
	struct deadline deadline;
	struct lock_call c = {0};
	struct owner_wait w;
	struct block_op op = {0};
	struct gate g;
	const char *fault_addr;
	int rc;

	if (args_unpack(&spec, args, nargs, kwnames, argv) < 0 ||
	    arg_deadline(argv[0], &deadline) < 0)
		return NULL;
	if (lock_admit(self, &g, PIN_LOCK) < 0)
		return NULL;
	c.me = peer_self();
	if (!lock_fast(&g, 0, c.me, &c, &rc, &fault_addr))
		rc = lock_run(&g, try_body, &c, &fault_addr);
	if (rc == BLOCK_SLEEP) {
		w = (struct owner_wait){c.owner, c.me, 0};
		op.gate = &g;
		op.poll = owner_poll;
		op.ctx = &w;
		op.spin = block_default_spin();
		rc = block_until(&op, &deadline);
		c.me = w.me;	/* who polled last: a child, if a handler forked */
		if (rc == BLOCK_TIMEOUT) {
			gate_leave(&g);
			Py_RETURN_FALSE;
		}
		if (rc == BLOCK_ERROR) {
			gate_leave(&g);
			return NULL;
		}
	}
	if (rc == OWNER_RECURSIVE && locks_held_here == 0)
		rc = OWNER_TAKEN_OVER;	/* held before an exec(): see above */
	if (rc != OWNER_TAKEN && rc != OWNER_TAKEN_OVER) {
		gate_leave(&g);
		return lock_error(self, rc, fault_addr);
	}
	lock_hold(self, &g, c.me);
	self->owner_died = rc == OWNER_TAKEN_OVER;
	if (self->owner_died &&
	    PyErr_WarnFormat(lock_state(self)->owner_died_warning, 1,
			     "the previous holder of the Lock at offset %zd died while "
			     "holding it; the state it protects may need repair",
			     self->offset) < 0) {
		/* The warning became an error: the caller will not think it
		 * holds the lock, so it must not. */
		lock_abandon(self);
		return NULL;
	}
	Py_RETURN_TRUE;
}

static PyObject *
lock_release(LockObject *self, PyObject *Py_UNUSED(ignored))
{
	struct lock_call c = {0};
	struct gate g;
	const char *fault_addr = NULL;	/* -fanalyzer cannot see the asm set it */
	unsigned long generation = self->held_generation;
	int rc;

	if (generation != gate_generation()) {
		PyErr_Format(PyExc_RuntimeError,
			     "release of the Lock at offset %zd, which this thread does "
			     "not hold", self->offset);
		return NULL;
	}
	if (lock_admit(self, &g, PIN_ACCESS) < 0)
		return NULL;
	c.me = peer_self();
	if (!lock_fast(&g, c.me, 0, &c, &rc, &fault_addr))
		rc = lock_run(&g, release_body, &c, &fault_addr);
	/*
	 * Not ours.  If another live thread holds it (this object is shared
	 * by threads, and that one acquired it), this call is a mistake and
	 * the hold stays.  Otherwise the word was overwritten or taken over
	 * from us: we hold nothing any more, and say so below.
	 */
	if (rc == OWNER_NOT_MINE && peer_valid(c.seen & ~OWNER_WAITERS) &&
	    peer_check(c.seen & ~OWNER_WAITERS) == PEER_ALIVE) {
		gate_leave(&g);
		PyErr_Format(PyExc_RuntimeError,
			     "release of the Lock at offset %zd, which this thread does "
			     "not hold", self->offset);
		return NULL;
	}
	/* From here on this object holds nothing, whatever the word said. */
	lock_unhold(self);
	if (rc == 0 && (c.seen & OWNER_WAITERS) &&
	    block_wake(self->map, owner_sleep_offset(g.offset + LOCK_OWNER), 1) < 0) {
		gate_leave(&g);
		return NULL;
	}
	gate_leave(&g);
	if (rc == FAULT_HIT)
		return mapping_raise_fault(self->map, fault_addr, NULL);
	if (rc == OWNER_NOT_MINE) {
		/* PyErr_Format has no %llx */
		char word[19];

		(void)snprintf(word, sizeof(word), "0x%016llx", (unsigned long long)c.seen);
		PyErr_Format(PyExc_RuntimeError,
			     "the Lock at offset %zd was no longer this thread's when "
			     "released (its owner word reads %s: a peer overwrote it "
			     "or took it over)", self->offset, word);
		return NULL;
	}
	Py_RETURN_NONE;
}

static PyObject *
lock_enter(LockObject *self, PyObject *Py_UNUSED(ignored))
{
	PyObject *ok = lock_acquire(self, NULL, 0, NULL);

	if (ok == NULL)
		return NULL;
	Py_DECREF(ok);
	return Py_NewRef(self);
}

static PyObject *
lock_exit(LockObject *self, PyObject *const *Py_UNUSED(args), Py_ssize_t Py_UNUSED(nargs))
{
	return lock_release(self, NULL);
}

static PyObject *
lock_locked(LockObject *self, PyObject *Py_UNUSED(ignored))
{
	struct lock_call c = {0};
	struct gate g;
	const char *fault_addr;

	if (lock_admit(self, &g, PIN_ACCESS) < 0)
		return NULL;
	if (lock_run(&g, locked_body, &c, &fault_addr) == FAULT_HIT) {
		gate_leave(&g);
		return mapping_raise_fault(self->map, fault_addr, NULL);
	}
	gate_leave(&g);
	return PyBool_FromLong(c.seen != 0);
}

static PyObject *
lock_repr(LockObject *self)
{
	return PyUnicode_FromFormat("<pymmapdev.Lock offset=%zd of %R>", self->offset,
				    (PyObject *)self->map);
}

static PyObject *
lock_get_mapping(LockObject *self, void *Py_UNUSED(closure))
{
	return Py_NewRef(self->map);
}

static PyObject *
lock_get_owner_died(LockObject *self, void *Py_UNUSED(closure))
{
	return PyBool_FromLong(self->owner_died);
}

static PyGetSetDef lock_getset[] = {
	{"mapping", (getter)lock_get_mapping, NULL, "The Mapping holding the lock.", NULL},
	{"owner_died", (getter)lock_get_owner_died, NULL,
	 "Whether the acquire() that took the lock last took it over from a\n"
	 "holder that died.  An acquire() that times out or fails leaves it as\n"
	 "it was: it describes the hold, not the attempt.", NULL},
	{NULL},
};

static PyMemberDef lock_members[] = {
	{"offset", T_PYSSIZET, offsetof(LockObject, offset), READONLY,
	 "Offset of the lock in the mapping."},
	{NULL},
};

static PyMethodDef lock_methods[] = {
	{"acquire", (PyCFunction)(void (*)(void))lock_acquire, METH_FASTCALL | METH_KEYWORDS,
	 "acquire($self, /, timeout=None)\n--\n\n"
	 "Take the lock; wait at most timeout seconds (None: no limit).\n\n"
	 "Returns True when acquired, False on timeout.  If the holder died,\n"
	 "the lock is taken over: owner_died is set and OwnerDiedWarning issued."},
	{"release", (PyCFunction)lock_release, METH_NOARGS,
	 "release($self, /)\n--\n\nRelease the lock; RuntimeError if not held here."},
	{"locked", (PyCFunction)lock_locked, METH_NOARGS,
	 "locked($self, /)\n--\n\nWhether anyone holds the lock now (a snapshot)."},
	{"__enter__", (PyCFunction)lock_enter, METH_NOARGS, NULL},
	{"__exit__", (PyCFunction)(void (*)(void))lock_exit, METH_FASTCALL, NULL},
	{NULL},
};

static PyType_Slot lock_slots[] = {
	{Py_tp_doc, "Lock(mapping, offset, /)\n--\n\n"
		    "A process-shared lock in Lock.SIZE (64) bytes at offset (a multiple of\n"
		    "Lock.ALIGN, 64) of a writable mapping; zero bytes are a free lock.\n"
		    "Owned by a thread, not recursive; survives a holder that dies."},
	{Py_tp_new, lock_new},
	{Py_tp_dealloc, lock_dealloc},
	{Py_tp_traverse, lock_traverse},
	{Py_tp_clear, lock_clear},
	{Py_tp_repr, lock_repr},
	{Py_tp_methods, lock_methods},
	{Py_tp_members, lock_members},
	{Py_tp_getset, lock_getset},
	{0, NULL},
};

PyType_Spec lock_type_spec = {
	.name = "pymmapdev.Lock",
	.basicsize = sizeof(LockObject),
	.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
	.slots = lock_slots,
};

int
lock_type_ready(PyTypeObject *type)
{
	/* PyType_Spec has no slot for class constants */
	if (type_add_int(type, "SIZE", LOCK_SIZE) < 0 ||
	    type_add_int(type, "ALIGN", LOCK_ALIGN) < 0)
		return -1;
	return 0;
}
