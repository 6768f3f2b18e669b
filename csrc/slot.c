/*
 * The hot paths of pymmapdev.Slot: a seqlock "latest value" cell.
 *
 * Layout at the slot's offset (8-byte aligned; pymmapdev/sync.py mirrors it):
 *
 *	+0	u64	seq: 2 * version, odd while a publish is in progress
 *	+8	u64	length of the current value
 *	+16	u32	waiters: readers asleep in wait_newer()
 *	+20	u32	reserved
 *	+24	capacity bytes of value
 *
 * One writer at a time.  Readers copy the value and retry if seq was odd or
 * changed meanwhile, so a value is never returned torn.  Readers sleep on
 * the low 32-bit half of seq (it changes with every increment); publish()
 * wakes them only when the waiters count says someone sleeps, so an
 * unwatched publish costs no syscall.
 *
 * Written in C rather than Python for the memory ordering: the reader needs
 * an acquire fence between its copy and the re-check of seq, the writer a
 * release fence between marking seq odd and writing the value.
 */
#include "mapping.h"
#include "sync.h"

#include <sched.h>
#include <string.h>
#include <unistd.h>

#define SLOT_SEQ	0
#define SLOT_LEN	8
#define SLOT_WAITERS	16
#define SLOT_HEADER	24
#define SLOT_ALIGN	8

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define SLOT_SEQ_LOW	SLOT_SEQ
#else
#define SLOT_SEQ_LOW	(SLOT_SEQ + 4)
#endif

struct slot_ref {
	MappingObject *map;
	Py_ssize_t offset;
	Py_ssize_t capacity;
	uint64_t *seq;
	uint64_t *len;
	uint32_t *waiters;
	char *value;
};

/* (mapping, offset, capacity, ...): fills @ref or raises. */
static int
slot_ref_arg(PyObject *module, const char *fname, PyObject *const *args,
	     Py_ssize_t nargs, Py_ssize_t want, int for_write,
	     struct slot_ref *ref)
{
	char *base;

	if (mapping_place_args(module, fname, args, nargs, want, &ref->map,
			       &ref->offset) < 0)
		return -1;
	ref->capacity = PyNumber_AsSsize_t(args[2], PyExc_OverflowError);
	if (ref->capacity == -1 && PyErr_Occurred())
		return -1;
	if (ref->capacity < 0 || ref->capacity > PY_SSIZE_T_MAX - SLOT_HEADER) {
		PyErr_Format(PyExc_ValueError,
			     "slot capacity must be >= 0, not %zd",
			     ref->capacity);
		return -1;
	}
	base = mapping_span(ref->map, ref->offset, SLOT_HEADER + ref->capacity,
			    SLOT_ALIGN, for_write);
	if (base == NULL)
		return -1;
	ref->seq = (uint64_t *)(base + SLOT_SEQ);
	ref->len = (uint64_t *)(base + SLOT_LEN);
	ref->waiters = (uint32_t *)(base + SLOT_WAITERS);
	ref->value = base + SLOT_HEADER;
	return 0;
}

/* Writes @len bytes under the SIGBUS guard; returns the new seq or 0 on a
 * fault (raised).  A fault leaves seq odd: the next publish recovers. */
static uint64_t
slot_write(struct slot_ref *ref, const void *src, uint64_t len,
	   uint32_t *waiters)
{
	struct fault_guard guard;
	uint64_t seq;

	fault_guard_enter(&guard, ref->map->data, ref->map->size);
	if (sigsetjmp(guard.env, 0)) {
		mapping_raise_fault(ref->map, guard.fault_addr - ref->map->data);
		return 0;
	}
	/* Single writer, so a plain read of our own seq.  Odd means a writer
	 * died mid-publish: finish its cycle instead of starting one. */
	seq = __atomic_load_n(ref->seq, __ATOMIC_RELAXED) | 1;
	__atomic_store_n(ref->seq, seq, __ATOMIC_RELAXED);
	/* No value store may become visible before seq turns odd. */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	__atomic_store_n(ref->len, len, __ATOMIC_RELAXED);
	memmove(ref->value, src, len);	/* src may be a view of this mapping */
	/* seq_cst store then load: pairs with the reader's increment of
	 * waiters then load of seq (Dekker), so either we see the sleeper or
	 * it sees the new seq and does not sleep. */
	__atomic_store_n(ref->seq, seq + 1, __ATOMIC_SEQ_CST);
	*waiters = __atomic_load_n(ref->waiters, __ATOMIC_SEQ_CST);
	fault_guard_leave(&guard);
	return seq + 1;
}

/* slot_publish(m, offset, capacity, data) -> new version */
static PyObject *
slot_publish(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
	struct slot_ref ref;
	Py_buffer data;
	uint64_t seq;
	uint32_t waiters = 0;

	if (slot_ref_arg(module, "slot_publish", args, nargs, 4, 1, &ref) < 0)
		return NULL;
	if (PyObject_GetBuffer(args[3], &data, PyBUF_SIMPLE) < 0)
		return NULL;
	if (data.len > ref.capacity) {
		PyErr_Format(PyExc_ValueError,
			     "%zd bytes do not fit the slot at offset %zd "
			     "(capacity %zd)", data.len, ref.offset,
			     ref.capacity);
		PyBuffer_Release(&data);
		return NULL;
	}
	seq = slot_write(&ref, data.buf, (uint64_t)data.len, &waiters);
	PyBuffer_Release(&data);
	if (seq == 0)
		return NULL;
	if (waiters != 0 &&
	    sync_wake(ref.map, ref.offset + SLOT_SEQ_LOW, UINT32_MAX) < 0)
		return NULL;
	return PyLong_FromUnsignedLongLong(seq >> 1);
}

/* Reads seq (acquire) and the length under the guard. */
static int
slot_head(struct slot_ref *ref, uint64_t *seq, uint64_t *len)
{
	struct fault_guard guard;

	fault_guard_enter(&guard, ref->map->data, ref->map->size);
	if (sigsetjmp(guard.env, 0)) {
		mapping_raise_fault(ref->map, guard.fault_addr - ref->map->data);
		return -1;
	}
	*seq = __atomic_load_n(ref->seq, __ATOMIC_ACQUIRE);
	*len = __atomic_load_n(ref->len, __ATOMIC_RELAXED);
	fault_guard_leave(&guard);
	return 0;
}

/* Copies @len bytes out, then re-reads seq into *seq_after. */
static int
slot_copy(struct slot_ref *ref, char *dst, uint64_t len, uint64_t *seq_after)
{
	struct fault_guard guard;

	fault_guard_enter(&guard, ref->map->data, ref->map->size);
	if (sigsetjmp(guard.env, 0)) {
		mapping_raise_fault(ref->map, guard.fault_addr - ref->map->data);
		return -1;
	}
	memcpy(dst, ref->value, len);
	/* The copy's loads must complete before the re-check of seq. */
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	*seq_after = __atomic_load_n(ref->seq, __ATOMIC_RELAXED);
	fault_guard_leave(&guard);
	return 0;
}

/*
 * Between retries: spin a little (the writer is mid-copy), then yield the
 * CPU without the GIL (on one core the writer needs it), then sleep
 * briefly (a writer that died mid-publish leaves seq odd until the next
 * publish).  Signal handlers run, so Ctrl-C ends the loop.
 */
static int
slot_backoff(unsigned tries)
{
	if (tries < 64) {
		sync_cpu_relax();
		return 0;
	}
	Py_BEGIN_ALLOW_THREADS
	if (tries < 1024)
		sched_yield();
	else
		usleep(100);
	Py_END_ALLOW_THREADS
	return PyErr_CheckSignals();
}

/* slot_read(m, offset, capacity) -> (version, bytes) */
static PyObject *
slot_read(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
	struct slot_ref ref;
	PyObject *out = NULL;
	uint64_t seq, seq_after, len;
	unsigned tries;

	if (slot_ref_arg(module, "slot_read", args, nargs, 3, 0, &ref) < 0)
		return NULL;
	for (tries = 0;; tries++) {
		if (tries > 0 && slot_backoff(tries) < 0)
			goto error;
		if (slot_head(&ref, &seq, &len) < 0)
			goto error;
		if (seq & 1)
			continue;
		if (len > (uint64_t)ref.capacity) {
			/* Torn header (a publish started), or a writer that
			 * used a larger capacity: only the latter persists. */
			if (slot_head(&ref, &seq_after, &len) < 0)
				goto error;
			if (seq_after != seq)
				continue;
			PyErr_Format(PyExc_ValueError,
				     "the slot at offset %zd holds %llu bytes, "
				     "more than its capacity %zd: does the "
				     "writer use another capacity?", ref.offset,
				     (unsigned long long)len, ref.capacity);
			goto error;
		}
		if (out == NULL || (uint64_t)PyBytes_GET_SIZE(out) != len) {
			Py_XDECREF(out);
			out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len);
			if (out == NULL)
				goto error;
		}
		if (slot_copy(&ref, PyBytes_AS_STRING(out), len, &seq_after) < 0)
			goto error;
		if (seq_after == seq)
			break;
	}
	return Py_BuildValue("(KN)", (unsigned long long)(seq >> 1), out);

error:
	Py_XDECREF(out);
	return NULL;
}

static PyObject *
slot_layout(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
	return Py_BuildValue("(iii)", SLOT_HEADER, SLOT_ALIGN, SLOT_SEQ_LOW);
}

PyMethodDef slot_functions[] = {
	{"slot_publish", (PyCFunction)(void (*)(void))slot_publish,
	 METH_FASTCALL,
	 "slot_publish(mapping, offset, capacity, data, /)\n--\n\n"
	 "Publish data (bytes-like) as the slot's new value; returns its "
	 "version."},
	{"slot_read", (PyCFunction)(void (*)(void))slot_read, METH_FASTCALL,
	 "slot_read(mapping, offset, capacity, /)\n--\n\n"
	 "(version, bytes) of the slot's current value, never torn."},
	{"slot_layout", slot_layout, METH_NOARGS,
	 "slot_layout()\n--\n\n"
	 "(header size, alignment, offset of the wait word in the header)."},
	{NULL, NULL, 0, NULL}
};
