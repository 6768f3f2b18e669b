/*
 * The Mapping object shared by every file in csrc/, and the access gate.
 *
 * One type serves files, memfds and devices: only the constructor's
 * arguments and the wait/wake back end (block.c) differ.
 *
 * Every access to mapped memory follows one order (design.md, "the trust
 * boundary"):
 *
 *	1. convert all arguments (args.h): Python code may run, even close()
 *	2. gate_enter(): pin the mapping, check the span, get the address
 *	3. touch memory only through fault_run() (fault.h)
 *	4. gate_leave(): unpin
 *
 * A pin keeps close() from unmapping; close() refuses with BufferError
 * naming what holds it.  Pins are kept apart from buffer exports only in
 * their accounting: both stop close().
 */
#ifndef PYMMAPDEV_MAPPING_H
#define PYMMAPDEV_MAPPING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#include "fault.h"

typedef enum {
	MAPPING_KIND_FILE = 0,
	MAPPING_KIND_DEVICE = 1,
} mapping_kind;

/* How a sleeper on a word of the mapping is woken (block.c's back ends). */
typedef enum {
	MAPPING_WAKE_FUTEX = 0,		/* shared futexes: files, memfds */
	MAPPING_WAKE_MMAPDEV = 1,	/* the mmapdev module's WAIT/WAKE ioctls */
	MAPPING_WAKE_POLL = 2,		/* nothing can wake a sleeper (other
					 * devices, PCI BARs, another machine's
					 * writes): sleepers poll */
} mapping_wake;

/* Who holds a pin; close() names them. */
enum pin_kind {
	PIN_ACCESS,	/* a call touching memory (free-threaded builds only) */
	PIN_VIEW,	/* an exported buffer: memoryview, numpy array, ... */
	PIN_LOCK,	/* a held pymmapdev.Lock, or an acquire() that may hold it */
	PIN_WAIT,	/* a call that sleeps or syscalls without the GIL */
	PIN_CHANNEL,	/* an open Channel reserve() or recv_view() */
	PIN_KINDS
};

typedef struct {
	PyObject_HEAD
	char *data;		/* stays set after close: `pins` says closed */
	Py_ssize_t size;	/* bytes mapped */
	Py_ssize_t map_offset;	/* offset of data[0] in the file or device:
				 * the module's WAIT/WAKE address device words */
	/* mmap() maps whole pages: data[0] may lie inside the first one
	 * (a register block at any offset of /dev/mem, say) */
	char *map_base;		/* the page holding data[0] */
	size_t map_len;		/* bytes mapped from map_base */
	int fd;			/* our own dup of the caller's fd */
	int readonly;
	mapping_kind kind;
	mapping_wake wake;
	/*
	 * MAPPING_CLOSED | a count of pins per kind, in bit fields of one
	 * word (gate.c), changed atomically: close() moves it from 0 to
	 * MAPPING_CLOSED, a pin adds to its field unless it sees
	 * MAPPING_CLOSED.  One atomic operation a pin, no GIL needed.
	 */
	uint64_t pins;
	unsigned long fork_generation;	/* see gate.c: pins after fork() */
	/* In a forked child: the pins of the calls the forking thread was in
	 * (gate.c), valid for generation kept_generation */
	uint64_t kept_pins;
	unsigned long kept_generation;
	PyObject *path;		/* str, or None */
	PyObject *weakreflist;
} MappingObject;

#define MAPPING_CLOSED	(UINT64_C(1) << 63)

/* Per-module state (multi-phase init: no static type objects). */
typedef struct {
	PyTypeObject *mapping_type;
	PyTypeObject *lock_type;
	PyTypeObject *slot_type;
	PyTypeObject *channel_type;
	PyTypeObject *watch_type;
	PyObject *fault_error;		/* pymmapdev.MappingFault (OSError) */
	PyObject *channel_corrupt;	/* pymmapdev.ChannelCorrupt (ValueError) */
	PyObject *channel_mismatch;	/* _core._ChannelMismatch (ValueError) */
	PyObject *peer_died_error;	/* pymmapdev.PeerDied (OSError) */
	PyObject *owner_died_warning;	/* pymmapdev.OwnerDiedWarning */
} module_state;

module_state *module_state_of(PyObject *module);
/* The state of the module that defines @type or one of its bases. */
module_state *module_state_of_type(PyTypeObject *type);
module_state *mapping_state_of(MappingObject *self);

/* ---- the gate (gate.c) --------------------------------------------- */

/* What gate_enter checks besides the range. */
enum {
	GATE_READ = 0,
	GATE_WRITE = 1,		/* the mapping must be writable */
};

/* An admitted span of a mapping; gate_leave() ends it. */
struct gate {
	MappingObject *map;
	char *addr;		/* map->data + offset */
	Py_ssize_t offset;
	Py_ssize_t len;
	enum pin_kind pin;
	int held;		/* its entry in the thread's held pins (gate.c) */
	unsigned long generation;	/* the fork generation of its pin */
};

/*
 * Admits [offset, offset + len) of @map: open, in range, offset a multiple
 * of @align (1, 2, 4 or 8 ... any power of two), writable when @access is
 * GATE_WRITE.  Pins the mapping as @pin.  Returns 0, or -1 with ValueError
 * ("mapping is closed", or the offset and the mapping size) or TypeError
 * (read-only).  Never runs Python code.
 */
int gate_enter(struct gate *g, MappingObject *map, Py_ssize_t offset,
	       Py_ssize_t len, Py_ssize_t align, int access, enum pin_kind pin);
/*
 * With PIN_ACCESS, nothing between gate_enter() and gate_leave() may call
 * into Python or allocate Python objects (a collection can run finalizers,
 * which can close the mapping): in builds with a GIL that admission takes
 * no pin.  Allocate results before the gate.  Raising allocates too: inside
 * an except block, CPython 3.10/3.11 build even PyErr_SetString()'s
 * exception instance at once, so a raise followed by another touch of the
 * span (leaving a Channel side) takes a real pin first (gate_upgrade()).
 * Longer admissions (PIN_WAIT) hold a real pin and may do anything.
 */
void gate_leave(struct gate *g);

/* gate_enter() + gate_leave(): the span checked and nothing held, to refuse
 * a bad span before anything is allocated for it.  0, or -1 like it. */
int gate_check(MappingObject *map, Py_ssize_t offset, Py_ssize_t len, Py_ssize_t align,
	       int access);

/* For the constructors of structures kept in a mapping (Lock, Slot,
 * Channel): gate_enter()'s range check in words that name the structure
 * (@what) and its size.  A closed mapping passes (gate_enter() says so).
 * 0, or -1 with ValueError. */
int gate_check_room(MappingObject *map, const char *what, Py_ssize_t offset, Py_ssize_t len);

/* Turns an admission's pin into one of kind @as (a PIN_ACCESS admission
 * that must now allocate, call Python code or sleep takes a real pin);
 * gate_leave() then drops that one.  Call with the GIL held, before any
 * Python code runs after gate_enter().  0, or -1 with BufferError (too
 * many holders of that kind); the admission is unchanged then. */
int gate_upgrade(struct gate *g, enum pin_kind as);

/* gate_upgrade(), and the pin stays after gate_leave(): it now belongs to
 * a longer holder (a held Lock, an open Channel reservation), which drops
 * it with mapping_unpin_from(). */
int gate_keep_pin(struct gate *g, enum pin_kind as);

/* Pin and unpin without a span (buffer exports, held locks). */
int mapping_pin(MappingObject *map, enum pin_kind kind);
void mapping_unpin(MappingObject *map, enum pin_kind kind);
/* The fork generation a pin taken now belongs to (see gate.c). */
unsigned long gate_generation(void);
/* Unpins a pin taken in generation @gen; a no-op in a forked child. */
void mapping_unpin_from(MappingObject *map, enum pin_kind kind, unsigned long gen);

/* 1 when closed (no pin can be taken), else 0.  Never raises. */
int mapping_is_closed(MappingObject *map);

/* close(): 0, or -1 with BufferError naming what holds the mapping. */
int mapping_seal(MappingObject *map);

/* In a forked child (module.c's fork handler): see gate.c. */
void gate_after_fork(void);

/*
 * Raises pymmapdev.MappingFault for a fault at @addr while @map was being
 * accessed: names the offset and the likely cause (file truncated, or a
 * device page the driver no longer provides).  @source, if not NULL, is the
 * other side of a copy: a fault there is named as the source's.
 * Returns NULL.
 */
PyObject *mapping_raise_fault(MappingObject *map, const char *addr,
			      const Py_buffer *source);
/* The likely cause of a fault in @map, in words for a message. */
const char *mapping_fault_cause(const MappingObject *map);
/* The same for a copy between @map and a caller's buffer @other, its
 * source (@other_is_source) or its destination (read_into()): a fault in
 * @other is named as that side's. */
PyObject *mapping_raise_copy_fault(MappingObject *map, const char *addr,
				   const Py_buffer *other, int other_is_source);

/* A Mapping argument of a function or constructor; TypeError otherwise. */
int arg_mapping(module_state *st, const char *fname, PyObject *obj,
		MappingObject **out);

extern PyType_Spec mapping_type_spec;

/* A class constant (PyType_Spec has no slot for them); module.c. */
int type_add_int(PyTypeObject *type, const char *name, long value);

#endif
