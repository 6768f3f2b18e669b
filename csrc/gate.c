/*
 * The access gate: pins, the span check, close(), and fork.
 *
 * A pin is one count in a field of MappingObject.pins, one field per kind
 * of holder (so close() can name them) in one word (so a pin is one atomic
 * operation).  close() seals the mapping by moving the word from 0 to
 * MAPPING_CLOSED with one compare-exchange; a pin is a compare-exchange
 * that adds to its field unless it sees MAPPING_CLOSED (or a full field).
 * So a mapping is never unmapped while anyone holds a pin, whatever thread
 * or signal handler calls close(), with or without the GIL.
 *
 * Short accesses that hold the GIL from the check to the last byte
 * (PIN_ACCESS) take no pin in builds with a GIL: no other thread can run
 * and no Python code runs in between (all arguments were converted before
 * the gate), so the atomic read-modify-writes would only cost time on the
 * hottest path.  A free-threaded build pins them like everything else.
 *
 * fork(): the child is a copy with only the forking thread.  Pins held by
 * the parent's other threads (sleepers in wait(), held Locks, accesses)
 * and by objects (held Locks, asyncio watches: each drops its pin only in
 * the generation it took it) would never be released there, so a child
 * could never close its copy.  Two kinds of pin live on: views (a
 * memoryview is an object the child has too) and the calls the forking
 * thread is in (fork() ran inside them: a send_many() iterator, a signal
 * handler in a wait), which go on in the child and touch the mapping.
 * Each thread notes the pins its admissions hold (held_pins); at fork the
 * child counts the forking thread's per mapping; each mapping remembers
 * the fork generation of its pins, and the first pin or close in a child
 * keeps the views and those calls' pins and drops the rest.
 */
#include "mapping.h"

#if defined(Py_GIL_DISABLED)
#define PIN_SHORT_ACCESSES 1
#else
#define PIN_SHORT_ACCESSES 0
#endif

static unsigned long fork_generation = 1;

/*
 * The pins this thread's admissions hold: a table, not a list through the
 * gates, because admissions need not end in the order they began (a
 * greenlet switched away inside one, whose stack is saved elsewhere
 * meanwhile) and nothing here may read another frame.  Calls nest a few
 * deep; beyond HELD_MAX an admission is not noted, and a child forked
 * inside it drops its pin (close() in that child is then not refused, and
 * the admission, which knows by its generation, does not unpin it again).
 */
#define HELD_MAX	32
#define HELD_NONE	(-1)

static _Thread_local struct {
	MappingObject *map;	/* NULL: a free entry */
	enum pin_kind pin;
} held_pins[HELD_MAX];

static uint64_t pin_unit(enum pin_kind kind);

/* Runs in the child, in the forking thread, before any other thread. */
void
gate_after_fork(void)
{
	unsigned long now = __atomic_add_fetch(&fork_generation, 1, __ATOMIC_RELAXED);

	for (int i = 0; i < HELD_MAX; i++) {
		MappingObject *map = held_pins[i].map;

		if (map == NULL)
			continue;
		if (map->kept_generation != now) {
			map->kept_generation = now;
			map->kept_pins = 0;
		}
		map->kept_pins += pin_unit(held_pins[i].pin);
	}
}

static void
note_held(struct gate *g)
{
	g->held = HELD_NONE;
	for (int i = 0; i < HELD_MAX; i++) {
		if (held_pins[i].map == NULL) {
			held_pins[i].map = g->map;
			held_pins[i].pin = g->pin;
			g->held = i;
			return;
		}
	}
}

static void
forget_held(struct gate *g)
{
	if (g->held != HELD_NONE)
		held_pins[g->held].map = NULL;
	g->held = HELD_NONE;
}

/* Does the mapping still count @g's pin?  Not when a child was forked
 * inside the admission and the pin was not noted (it was dropped). */
static int
pin_counted(const struct gate *g)
{
	return g->held != HELD_NONE || g->generation == gate_generation();
}

unsigned long
gate_generation(void)
{
	return __atomic_load_n(&fork_generation, __ATOMIC_RELAXED);
}

/*
 * The fields of the pins word: bit offset and width per kind.  Widths
 * bound how many holders of a kind can exist at once (a million views,
 * thousands of held Locks or sleeping threads); one more is a
 * BufferError, never a carry into the next field.
 */
static const struct {
	unsigned shift, bits;
} pin_field[PIN_KINDS] = {
	[PIN_ACCESS] = {0, 10},
	[PIN_VIEW] = {10, 20},
	[PIN_LOCK] = {30, 12},
	[PIN_WAIT] = {42, 12},
	[PIN_CHANNEL] = {54, 8},
};
_Static_assert(54 + 8 <= 63, "pin fields overlap MAPPING_CLOSED");

static uint64_t
pin_unit(enum pin_kind kind)
{
	return UINT64_C(1) << pin_field[kind].shift;
}

static uint64_t
pin_count(uint64_t pins, enum pin_kind kind)
{
	return (pins >> pin_field[kind].shift) & ((UINT64_C(1) << pin_field[kind].bits) - 1);
}

/* Drops pins inherited across fork() (see the top of the file). */
static void
adopt_after_fork(MappingObject *map)
{
	unsigned long seen = __atomic_load_n(&map->fork_generation, __ATOMIC_ACQUIRE);
	unsigned long now = gate_generation();
	uint64_t old, keep;

	if (seen == now ||
	    !__atomic_compare_exchange_n(&map->fork_generation, &seen, now, 0,
					 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		return;
	old = __atomic_load_n(&map->pins, __ATOMIC_ACQUIRE);
	do {
		keep = pin_count(old, PIN_VIEW) << pin_field[PIN_VIEW].shift;
		if (map->kept_generation == now)
			keep += map->kept_pins;
	} while (!__atomic_compare_exchange_n(&map->pins, &old, (old & MAPPING_CLOSED) | keep,
					      0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
}

/*
 * Adds a pin of @kind, and drops one of @from (PIN_KINDS: none) in the
 * same step.  Refuses a closed mapping and a full field: one holder too
 * many must never carry into the next field (or, from the last, into
 * MAPPING_CLOSED, when close() would unmap under every holder).
 */
static int
pin_move(MappingObject *map, enum pin_kind kind, enum pin_kind from)
{
	uint64_t old, max = (UINT64_C(1) << pin_field[kind].bits) - 1;
	uint64_t drop = from == PIN_KINDS ? 0 : pin_unit(from);

	adopt_after_fork(map);
	old = __atomic_load_n(&map->pins, __ATOMIC_RELAXED);
	do {
		if (old & MAPPING_CLOSED) {
			PyErr_SetString(PyExc_ValueError, "mapping is closed");
			return -1;
		}
		if (pin_count(old, kind) == max) {
			PyErr_Format(PyExc_BufferError, "too many simultaneous users of one "
				     "mapping (%llu)", (unsigned long long)max);
			return -1;
		}
	} while (!__atomic_compare_exchange_n(&map->pins, &old, old + pin_unit(kind) - drop, 0,
					      __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
	return 0;
}

int
mapping_pin(MappingObject *map, enum pin_kind kind)
{
	return pin_move(map, kind, PIN_KINDS);
}

void
mapping_unpin(MappingObject *map, enum pin_kind kind)
{
	__atomic_fetch_sub(&map->pins, pin_unit(kind), __ATOMIC_RELEASE);
}

void
mapping_unpin_from(MappingObject *map, enum pin_kind kind, unsigned long gen)
{
	if (gen == gate_generation())
		mapping_unpin(map, kind);
}

int
mapping_is_closed(MappingObject *map)
{
	return (__atomic_load_n(&map->pins, __ATOMIC_ACQUIRE) & MAPPING_CLOSED) != 0;
}

int
mapping_seal(MappingObject *map)
{
	static const char *const names[PIN_KINDS] = {
		[PIN_ACCESS] = "call in another thread",
		[PIN_VIEW] = "exported buffer (memoryview, numpy array, ...: del it or release() it)",
		/* acquire() admits as the hold it may become: keeping the
		 * pin then cannot fail with the word already taken */
		[PIN_LOCK] = "pymmapdev.Lock held or being acquired",
		[PIN_WAIT] = "blocking call or asyncio wait (wait, wait_async, a Slot wait, flush, ...)",
		[PIN_CHANNEL] = "open Channel reserve() or recv_view()",
	};
	uint64_t expected = 0;
	PyObject *parts, *sep, *text;

	adopt_after_fork(map);
	if (__atomic_compare_exchange_n(&map->pins, &expected, MAPPING_CLOSED, 0,
					__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE) ||
	    (expected & MAPPING_CLOSED))
		return 0;

	parts = PyList_New(0);
	if (parts == NULL)
		return -1;
	for (int kind = 0; kind < PIN_KINDS; kind++) {
		uint64_t n = pin_count(expected, kind);
		PyObject *part;

		if (n == 0)
			continue;
		part = PyUnicode_FromFormat("%llu %s", (unsigned long long)n, names[kind]);
		if (part == NULL || PyList_Append(parts, part) < 0) {
			Py_XDECREF(part);
			Py_DECREF(parts);
			return -1;
		}
		Py_DECREF(part);
	}
	sep = PyUnicode_FromString(", ");
	text = sep ? PyUnicode_Join(sep, parts) : NULL;
	Py_XDECREF(sep);
	Py_DECREF(parts);
	if (text == NULL)
		return -1;
	PyErr_Format(PyExc_BufferError, "cannot close the mapping while it is in use: %U; "
		     "close() again once they have ended", text);
	Py_DECREF(text);
	return -1;
}

/* [offset, offset + len) inside the mapping, without overflow */
static inline int
span_inside(const MappingObject *map, Py_ssize_t offset, Py_ssize_t len)
{
	return offset >= 0 && len >= 0 && offset <= map->size && len <= map->size - offset;
}

int
gate_check_room(MappingObject *map, const char *what, Py_ssize_t offset, Py_ssize_t len)
{
	if (mapping_is_closed(map) || span_inside(map, offset, len))
		return 0;
	PyErr_Format(PyExc_ValueError,
		     "%s takes %zd bytes at offset %zd: outside the mapping of %zd bytes",
		     what, len, offset, map->size);
	return -1;
}

int
gate_enter(struct gate *g, MappingObject *map, Py_ssize_t offset,
	   Py_ssize_t len, Py_ssize_t align, int access, enum pin_kind pin)
{
	g->map = map;
	g->pin = pin;
	if (pin != PIN_ACCESS || PIN_SHORT_ACCESSES) {
		if (mapping_pin(map, pin) < 0)
			return -1;
	} else if (mapping_is_closed(map)) {
		PyErr_SetString(PyExc_ValueError, "mapping is closed");
		return -1;
	}
	if (!span_inside(map, offset, len)) {
		PyErr_Format(PyExc_ValueError,
			     "offset %zd + %zd bytes is outside the mapping of %zd bytes",
			     offset, len, map->size);
		goto refused;
	}
	/* The address, not the offset: a mapping may start anywhere in a
	 * page of its device (see mapping.h, map_base). */
	if ((uintptr_t)(map->data + offset) & (uintptr_t)(align - 1)) {
		if (map->map_offset & (align - 1))
			PyErr_Format(PyExc_ValueError,
				     "offset %zd is not aligned to %zd bytes in the file or device "
				     "(the mapping of %zd bytes starts at its offset %zd)",
				     offset, align, map->size, map->map_offset);
		else
			PyErr_Format(PyExc_ValueError,
				     "offset %zd is not aligned to %zd bytes (mapping of %zd bytes)",
				     offset, align, map->size);
		goto refused;
	}
	if (access == GATE_WRITE && map->readonly) {
		PyErr_SetString(PyExc_TypeError, "mapping is read-only");
		goto refused;
	}
	g->addr = map->data + offset;
	g->offset = offset;
	g->len = len;
	g->held = HELD_NONE;
	g->generation = gate_generation();
	if (pin != PIN_ACCESS || PIN_SHORT_ACCESSES)
		note_held(g);
	return 0;

refused:
	g->pin = PIN_KINDS;
	if (pin != PIN_ACCESS || PIN_SHORT_ACCESSES)
		mapping_unpin(map, pin);
	return -1;
}

void
gate_leave(struct gate *g)
{
	if (g->pin == PIN_KINDS)
		return;		/* kept by gate_keep_pin(), or refused */
	if (g->pin != PIN_ACCESS || PIN_SHORT_ACCESSES) {
		int counted = pin_counted(g);

		/* in a child, the kept pins (this one among them) are put in
		 * place first, so this unpin and the adoption agree */
		adopt_after_fork(g->map);
		forget_held(g);
		if (counted)
			mapping_unpin(g->map, g->pin);
	}
	g->pin = PIN_KINDS;
}

int
gate_check(MappingObject *map, Py_ssize_t offset, Py_ssize_t len, Py_ssize_t align, int access)
{
	struct gate g;

	if (gate_enter(&g, map, offset, len, align, access, PIN_ACCESS) < 0)
		return -1;
	gate_leave(&g);
	return 0;
}

int
gate_upgrade(struct gate *g, enum pin_kind as)
{
	int counted = (g->pin != PIN_ACCESS || PIN_SHORT_ACCESSES) && pin_counted(g);

	if (g->pin == as && counted)
		return 0;
	/*
	 * Move the pin to its new field, or, when there is none to move, take
	 * one: a short access takes none (nobody closed the mapping since the
	 * admission: we held the GIL and ran no Python code), and one a child
	 * dropped is gone (the child may have closed it: "mapping is closed").
	 * A full field refuses; the old pin is then still held.
	 */
	if (pin_move(g->map, as, counted ? g->pin : PIN_KINDS) < 0)
		return -1;
	g->pin = as;
	g->generation = gate_generation();
	if (g->held == HELD_NONE)
		note_held(g);
	else
		held_pins[g->held].pin = as;
	return 0;
}

int
gate_keep_pin(struct gate *g, enum pin_kind as)
{
	if (gate_upgrade(g, as) < 0)
		return -1;
	forget_held(g);		/* no longer this call's: the holder's */
	g->pin = PIN_KINDS;	/* gate_leave() leaves it: the holder unpins */
	return 0;
}
