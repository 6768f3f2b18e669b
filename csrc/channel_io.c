/*
 * Channel.send/send_many/recv/recv_many: messages copied in and out
 * (channel_internal.h).  Each call is admitted, takes its side, waits for
 * room or data, copies under the fault guard (both the region and the
 * caller's buffer: either may be a mapping that faults), publishes or
 * frees, and wakes the other side only if someone sleeps there.
 */
#include "channel_internal.h"

#include <string.h>

/*
 * Batches of up to BATCH messages cost one fence and at most one wake-up,
 * not one per message: send_many writes a chunk of messages and publishes
 * them together; recv_many finds the records from the head in one guarded
 * pass, copies them out in a second one and frees them together.
 */
#define BATCH	64

struct batch {
	int n;
	uint64_t end;			/* head after the last record */
	uint64_t at[BATCH];		/* ring offsets of the payloads */
	uint64_t len[BATCH];
	char *dst[BATCH];
};

/*
 * send_many's batch: as many of the messages c->src[c->first..] as fit,
 * written one after another and published together (one fence).  Returns
 * how many it wrote, CH_CLOSED_SEND or CH_CORRUPT.
 */
static int
write_many_body(void *arg)
{
	struct ch_call *c = arg;
	int n = 0, rc;

	if (ch_closed_to_sender(c))
		return CH_CLOSED_SEND;
	c->tail = __atomic_load_n(c->w.tail, __ATOMIC_RELAXED);
	for (int i = c->first; i < c->nsrc; i++, n++) {
		c->len = c->src[i].len;
		rc = ch_room(c, 0);
		if (rc != BLOCK_READY) {
			if (rc != BLOCK_SLEEP)	/* CH_CORRUPT, CH_OPEN_ELSEWHERE */
				return rc;
			break;
		}
		/* a source in the ring's free space sees the records written
		 * before it in this batch, as the copy order leaves it; its
		 * own header comes after it (ch_place) */
		memmove(ch_payload_at(c), c->src[i].lo, c->src[i].len);
		ch_place(c);
		c->tail += c->total;
	}
	if (n > 0) {
		ch_publish_to(c, c->tail, (uint64_t)n);
		ch_end_send(c, 1);	/* else it waits for room: still in a send */
	}
	return n;
}

/*
 * The whole record, from the payload pieces, and published.  A source may
 * be a view of this very ring, overlapping the payload's place or the
 * headers': memmove, and the headers after the payload, so the message is
 * the bytes the source held (as for a Mapping's own copies and a Slot's).
 */
static int
write_body(void *arg)
{
	struct ch_call *c = arg;
	char *dst = ch_payload_at(c);

	for (int i = 0; i < c->nsrc; i++) {
		memmove(dst, c->src[i].lo, c->src[i].len);
		dst += c->src[i].len;
	}
	ch_place(c);
	ch_publish(c);
	ch_end_send(c, 1);	/* published */
	return 0;
}

/* Sends one message of @nsrc pieces (the side is held).  1 sent, 0 timed
 * out, -1 error. */
static int
send_one(struct ch_call *c, const struct fault_span *src, int nsrc, uint64_t len,
	 const struct deadline *d, const Py_buffer *source)
{
	const char *fault_addr;
	int rc;

	c->len = len;
	rc = ch_wait_room(c, d);
	if (rc != BLOCK_READY)
		return rc == BLOCK_TIMEOUT ? 0 : -1;	/* -1: BLOCK_ERROR */
	c->src = src;
	c->nsrc = nsrc;
	rc = ch_run(c, write_body, &fault_addr);
	c->src = NULL;
	c->nsrc = 0;
	if (rc == FAULT_HIT) {
		ch_pin_held_side(c);
		mapping_raise_fault(c->self->map, fault_addr, source);
		return -1;
	}
	return ch_wake_consumers(c, 1) < 0 ? -1 : 1;
}

PyObject *
ch_send(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	static const char *const names[] = {"data", "timeout"};
	static const struct arg_spec spec = {"send", names, 2, 1, 1, 1};
	PyObject *argv[2], *result = NULL;
	struct deadline deadline;
	struct fault_span piece;
	struct ch_call c;
	Py_buffer data;
	int timed_out, rc;

	if (args_unpack(&spec, args, nargs, kwnames, argv) < 0 ||
	    arg_deadline(argv[1], &deadline) < 0)
		return NULL;
	if (PyObject_GetBuffer(argv[0], &data, PyBUF_SIMPLE) < 0)
		return NULL;
	if (ch_check_length(self, data.len) < 0 || ch_admit(self, &c, PIN_ACCESS) < 0)
		goto out;
	if (ch_take_side(&c, PRODUCER, &deadline, &timed_out) < 0) {
		if (timed_out)
			result = Py_NewRef(Py_False);
		goto leave;
	}
	piece = (struct fault_span){data.buf, (size_t)data.len};
	rc = send_one(&c, &piece, 1, (uint64_t)data.len, &deadline, &data);
	if (ch_leave_side(&c, PRODUCER) < 0 && rc >= 0)
		rc = -1;
	if (rc >= 0)
		result = PyBool_FromLong(rc);
leave:
	gate_leave(&c.gate);
out:
	PyBuffer_Release(&data);
	return result;
}

/* Releases the buffers of a send_many chunk. */
static void
release_chunk(Py_buffer *bufs, int n)
{
	for (int i = 0; i < n; i++)
		PyBuffer_Release(&bufs[i]);
}

PyObject *
ch_send_many(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	static const char *const names[] = {"messages", "timeout"};
	static const struct arg_spec spec = {"send_many", names, 2, 1, 1, 1};
	PyObject *argv[2], *iter, *item = NULL;
	struct deadline deadline;
	/* spans[0] is the region (for the guard), spans[1..] the messages */
	struct fault_span spans[BATCH + 1];
	Py_buffer bufs[BATCH];
	struct ch_call c;
	Py_ssize_t count = 0;
	int timed_out, failed = 0, n, rc, done = 0;
	const char *fault_addr;

	if (args_unpack(&spec, args, nargs, kwnames, argv) < 0 ||
	    arg_deadline(argv[1], &deadline) < 0)
		return NULL;
	iter = PyObject_GetIter(argv[0]);
	if (iter == NULL)
		return NULL;
	/* PIN_WAIT from the start: the iteration runs Python code */
	if (ch_admit(self, &c, PIN_WAIT) < 0) {
		Py_DECREF(iter);
		return NULL;
	}
	if (ch_take_side(&c, PRODUCER, &deadline, &timed_out) < 0) {
		failed = !timed_out;
		goto leave;
	}
	spans[0] = (struct fault_span){c.gate.addr, (size_t)c.gate.len};
	while (!done && !failed) {
		/* a chunk of buffers (Python code may run: the mapping is pinned) */
		for (n = 0; n < BATCH && (item = PyIter_Next(iter)) != NULL; n++) {
			rc = PyObject_GetBuffer(item, &bufs[n], PyBUF_SIMPLE);
			Py_DECREF(item);
			if (rc < 0 || ch_check_length(self, bufs[n].len) < 0) {
				if (rc == 0)
					PyBuffer_Release(&bufs[n]);
				failed = 1;
				break;
			}
			spans[n + 1] = (struct fault_span){bufs[n].buf, (size_t)bufs[n].len};
		}
		if (item == NULL && PyErr_Occurred())
			failed = 1;	/* the iteration raised */
		done = item == NULL || failed;
		/* The iteration ran Python code, which may have forked: the
		 * side (a claim, or the lock) is the parent's, not the
		 * child's, which must neither write nor release it. */
		if (c.gate.generation != gate_generation()) {
			release_chunk(bufs, n);
			if (!failed)
				PyErr_SetString(PyExc_RuntimeError,
						"send_many(): the iterable forked; the child does "
						"not hold the producer side and sends nothing");
			gate_leave(&c.gate);
			Py_DECREF(iter);
			return NULL;
		}
		/* The iteration ran Python code, which may have opened a
		 * reserve() on this object: single mode lets this thread in
		 * again, and the chunk would be written over the reserved
		 * space at the tail.  Nothing of it is sent then. */
		if (ch_is_open(self, PRODUCER)) {
			if (!failed)	/* else the iteration's error stands */
				(void)ch_refuse_open(self, PRODUCER);
			failed = done = 1;
			release_chunk(bufs, n);
			break;
		}
		/* what came before a bad item is sent, as one message at a time would */
		c.src = spans + 1;
		c.nsrc = n;
		c.first = 0;
		while (c.first < n) {
			rc = ch_run(&c, write_many_body, &fault_addr);
			if (rc < 0) {	/* FAULT_HIT, CH_CLOSED_SEND, CH_CORRUPT, ... */
				PyObject *type, *value, *tb;

				PyErr_Fetch(&type, &value, &tb);	/* a bad item's error yields */
				Py_XDECREF(type);
				Py_XDECREF(value);
				Py_XDECREF(tb);
				ch_error(self, rc, fault_addr, NULL);
				failed = done = 1;
				break;
			}
			c.first += rc;
			count += rc;
			if (rc > 0 && ch_wake_consumers(&c, 1) < 0) {
				failed = done = 1;
				break;
			}
			if (c.first < n) {
				/* full: wait for room for the next one */
				c.len = c.src[c.first].len;
				rc = ch_wait_room(&c, &deadline);
				if (rc != BLOCK_READY) {
					failed = rc != BLOCK_TIMEOUT;
					done = 1;
					break;
				}
			}
		}
		c.src = NULL;
		c.nsrc = 0;
		release_chunk(bufs, n);
	}
	if (ch_leave_side(&c, PRODUCER) < 0)
		failed = 1;
leave:
	gate_leave(&c.gate);
	Py_DECREF(iter);
	return failed ? NULL : PyLong_FromSsize_t(count);
}

/* Copies the payload ch_peek() found into c->dst and consumes the record. */
static int
take_body(void *arg)
{
	struct ch_call *c = arg;
	uint64_t len = c->len;
	const char *payload;
	int rc = ch_peek(c, &payload, 0);

	/* Re-peeked: the values copied are the ones checked (the record
	 * cannot change under a well-behaved producer; a hostile one can
	 * only change the data, never the length we use).  The side is
	 * held and no Python ran since the wait found the record: one that
	 * is gone now (empty, closed, another length) was moved by a peer
	 * writing the indices.  Not BLOCK_SLEEP's 0, which the caller takes
	 * for success: the result would be returned uninitialized. */
	if (rc != BLOCK_READY || c->len != len)
		return CH_CORRUPT;
	memcpy(c->dst, payload, len);
	ch_consume(c);
	return 0;
}

static int
scan_body(void *arg)
{
	struct ch_call *c = arg;
	struct batch *b = c->batch;
	uint64_t pos, skip, len;
	const char *payload;
	int rc = ch_peek(c, &payload, 0);	/* the first, with the empty/EOF checks */

	b->n = 0;
	if (rc != BLOCK_READY)
		return rc;
	pos = c->head;
	while (b->n < c->want && pos < c->tail) {
		/* a bad record after good ones: take those (b->end is where
		 * they end), and the next call meets it at the head */
		if (!ch_record_at(c, pos, &skip, &len)) {
			if (b->n == 0)
				return CH_CORRUPT;
			break;
		}
		b->at[b->n] = (pos + skip) % c->w.cap + REC_HEADER;
		b->len[b->n] = len;
		b->n++;
		pos += skip + REC_HEADER + round8(len);
	}
	b->end = pos;
	return BLOCK_READY;
}

static int
copy_batch_body(void *arg)
{
	struct ch_call *c = arg;
	struct batch *b = c->batch;

	for (int i = 0; i < b->n; i++)
		memcpy(b->dst[i], c->w.ring + b->at[i], b->len[i]);
	/* consume them all: one store of head, one fence */
	ch_consume_to(c, b->end, (uint64_t)b->n);
	return 0;
}

/* One message as bytes, or Py_None on timeout; NULL with an exception
 * (EOFError at the end of the stream).  The side is held, pinned. */
static PyObject *
recv_one(struct ch_call *c, const struct deadline *d)
{
	const char *fault_addr;
	PyObject *out;
	int rc = ch_wait_data(c, d);

	if (rc == BLOCK_TIMEOUT)
		return Py_NewRef(Py_None);
	if (rc == CH_EOF) {
		ch_error(c->self, rc, NULL, NULL);
		return NULL;
	}
	if (rc == BLOCK_ERROR)
		return NULL;
	out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)c->len);
	if (out == NULL)
		return NULL;
	c->dst = PyBytes_AS_STRING(out);
	rc = ch_run(c, take_body, &fault_addr);
	c->dst = NULL;
	if (rc != 0) {
		Py_DECREF(out);
		return ch_error(c->self, rc, fault_addr, NULL);
	}
	if (ch_wake_producers(c) < 0) {
		Py_DECREF(out);
		return NULL;
	}
	return out;
}

PyObject *
ch_recv(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	static const char *const names[] = {"timeout"};
	static const struct arg_spec spec = {"recv", names, 1, 0, 0, 0};
	PyObject *argv[1], *out = NULL;
	struct deadline deadline;
	struct ch_call c;
	int timed_out;

	if (args_unpack(&spec, args, nargs, kwnames, argv) < 0 ||
	    arg_deadline(argv[0], &deadline) < 0)
		return NULL;
	/* PIN_WAIT: the result is allocated inside */
	if (ch_admit(self, &c, PIN_WAIT) < 0)
		return NULL;
	if (ch_take_side(&c, CONSUMER, &deadline, &timed_out) < 0) {
		if (timed_out)
			out = Py_NewRef(Py_None);
		goto leave;
	}
	out = recv_one(&c, &deadline);
	if (ch_leave_side(&c, CONSUMER) < 0)
		Py_CLEAR(out);
leave:
	gate_leave(&c.gate);
	return out;
}

PyObject *
ch_recv_many(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	static const char *const names[] = {"max_count", "timeout"};
	static const struct arg_spec spec = {"recv_many", names, 2, 1, 1, 1};
	PyObject *argv[2], *list = NULL;
	struct deadline deadline;
	Py_ssize_t max_count, taken;
	struct ch_call c;
	struct batch batch;
	const char *fault_addr;
	int timed_out, rc;

	if (args_unpack(&spec, args, nargs, kwnames, argv) < 0 ||
	    arg_length(argv[0], "max_count", &max_count) < 0 ||
	    arg_deadline(argv[1], &deadline) < 0)
		return NULL;
	list = PyList_New(0);
	if (list == NULL || ch_admit(self, &c, PIN_WAIT) < 0) {
		Py_XDECREF(list);
		return NULL;
	}
	if (ch_take_side(&c, CONSUMER, &deadline, &timed_out) < 0) {
		if (!timed_out)
			Py_CLEAR(list);
		goto leave;
	}
	c.batch = &batch;
	while (PyList_GET_SIZE(list) < max_count) {
		/* the first batch may wait; later ones take what is there */
		if (PyList_GET_SIZE(list) == 0) {
			rc = ch_wait_data(&c, &deadline);
			if (rc == BLOCK_TIMEOUT)
				break;
			if (rc == CH_EOF)
				ch_error(self, rc, NULL, NULL);
			if (rc != BLOCK_READY) {
				Py_CLEAR(list);
				break;
			}
		}
		c.want = max_count - PyList_GET_SIZE(list) < BATCH
			 ? (int)(max_count - PyList_GET_SIZE(list)) : BATCH;
		rc = ch_run(&c, scan_body, &fault_addr);
		/* The first batch's records were found by the wait, the side
		 * held and no Python run since: a ring empty (or closed and
		 * drained) now was emptied by a peer writing the indices.  Not
		 * BLOCK_SLEEP, a drained ring's [] (a timeout's answer), nor
		 * EOFError (take_body alike). */
		if (PyList_GET_SIZE(list) == 0 && (rc == BLOCK_SLEEP || rc == CH_EOF))
			rc = CH_CORRUPT;
		/* the end of stream, a record a peer forged, or a fault (the
		 * file truncated under the ring) raises at the next call: the
		 * messages taken so far are freed already */
		if (rc == BLOCK_SLEEP || (rc != BLOCK_READY && PyList_GET_SIZE(list) > 0))
			break;
		if (rc != BLOCK_READY) {
			ch_error(self, rc, fault_addr, NULL);
			Py_CLEAR(list);
			break;
		}
		/* allocate (the mapping is pinned: Python may ch_run), then copy */
		taken = PyList_GET_SIZE(list);
		for (int i = 0; i < batch.n; i++) {
			PyObject *msg = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)batch.len[i]);

			if (msg == NULL || PyList_Append(list, msg) < 0) {
				Py_XDECREF(msg);
				Py_CLEAR(list);
				break;
			}
			batch.dst[i] = PyBytes_AS_STRING(msg);
			Py_DECREF(msg);
		}
		if (list == NULL)
			break;
		rc = ch_run(&c, copy_batch_body, &fault_addr);
		if (rc != 0) {
			/* this batch is not freed: its messages go, the earlier
			 * ones were (as after a scan that faults, above) */
			if (taken > 0) {
				if (PyList_SetSlice(list, taken, PY_SSIZE_T_MAX, NULL) < 0)
					Py_CLEAR(list);
				break;
			}
			mapping_raise_fault(self->map, fault_addr, NULL);
			Py_CLEAR(list);
			break;
		}
		if (ch_wake_producers(&c) < 0) {
			Py_CLEAR(list);
			break;
		}
	}
	if (ch_leave_side(&c, CONSUMER) < 0)
		Py_CLEAR(list);
leave:
	gate_leave(&c.gate);
	return list;
}
