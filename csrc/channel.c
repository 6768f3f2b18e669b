/*
 * pymmapdev.Channel: a bounded ring of variable-size, length-prefixed
 * records in one region of a mapping, between any number of producer and
 * consumer processes.
 *
 * Region layout (offset a multiple of 64; lines of 64 bytes keep what the
 * producer writes apart from what the consumer writes):
 *
 *	+0	u64	descriptor: magic, layout, modes, capacity / 8; one
 *			compare-exchange from 0 creates the channel
 *	+8	u64	namespace tag of the users (peer_namespace)
 *	+64	u64	tail: bytes ever committed (producer side)
 *	+72	u64	sent: messages ever committed
 *	+80	u64	producer owner word (owner.h)
 *	+88	u32	closed: close_send() was called
 *	+128	u64	head: bytes ever consumed (consumer side)
 *	+136	u64	received: messages ever consumed
 *	+144	u64	consumer owner word
 *	+192	u32	space_seq, u32 producer_waiters  (the consumer and
 *			close_send() wake them)
 *	+256	u32	data_seq, u32 consumer_waiters   (the producer wakes them)
 *	+320	capacity bytes of ring
 *
 * A record is a u64 header (length | kind << 32) and the payload, padded
 * to 8 bytes.  Records never wrap: one that does not fit before the end of
 * the ring is preceded by a padding record that runs to the end.  So that
 * padding can never block a record forever, a record takes at most half
 * the ring (max_message).
 *
 * Visibility.  A producer writes the record, then publishes it by storing
 * tail (release); a consumer reads tail (acquire) and only then the record.
 * A record is seen complete or not at all, so a producer that dies mid-
 * record leaves nothing torn: the next producer overwrites it.  The
 * consumer frees space by storing head the same way.  Neither side uses an
 * atomic read-modify-write per message: one producer and one consumer
 * each own their words.
 *
 * Sides.  Each side has an owner word.  In single-producer mode the first
 * thread to send claims the producer word for good (a second live thread
 * is refused: misuse is an error, not corruption; a dead one is taken
 * over, so a restarted producer continues); with multi_producer=True a
 * producer takes the word per message, as a lock, and a holder that dies
 * is taken over by the next within a slice (owner.h).  Consumers alike.
 *
 * Wake only sleepers.  A side about to sleep adds itself to its waiters
 * count and re-checks (the blocking loop's announce), then sleeps on its
 * sequence word with the value read before the check.  The other side,
 * after publishing, issues one full fence and reads the count: only if
 * someone sleeps does it bump the sequence and make the wake-up syscall.
 * Store, fence, load on one side and add, load on the other (Dekker): one
 * of them sees the other, so no wake-up is lost.  Counts, not flags, so
 * no sleeper clears another's announcement.
 *
 * End of stream.  close_send() sets closed, then bumps both sequence words
 * and wakes every sleeper: consumers see EOF once the ring is drained, and
 * producers, whose every check for room looks at closed first (also while
 * they wait for room), fail with BrokenPipeError instead of sending past
 * the end.
 *
 * Untrusted region: every index, length and kind read from shared memory
 * is checked before use; impossible values raise ChannelCorrupt.  Nothing
 * is read or written outside [offset, offset + size_for(capacity)).
 */
#include "channel.h"
#include "args.h"
#include "block.h"
#include "owner.h"
#include "pages.h"
#include "peer.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "structmember.h"

#define LINE		64
#define CH_DESC		0
#define CH_NS		8
#define CH_TAIL		64
#define CH_SENT		72
#define CH_PRODUCER	80
#define CH_CLOSED	88
#define CH_HEAD		128
#define CH_RECEIVED	136
#define CH_CONSUMER	144
#define CH_SPACE_SEQ	192
#define CH_PRODUCER_WAITERS 196
#define CH_DATA_SEQ	256
#define CH_CONSUMER_WAITERS 260
#define CH_HEADER	320
#define CH_MIN_CAPACITY	128

#define DESC_MAGIC	UINT64_C(0x504d)	/* "MP" */
#define DESC_LAYOUT	UINT64_C(1)
#define DESC_MULTI_PRODUCER	UINT64_C(1)
#define DESC_MULTI_CONSUMER	UINT64_C(2)
#define DESC_CAPACITY_BITS	40

#define REC_HEADER	8
#define REC_MESSAGE	UINT64_C(0x4d53)	/* "SM" */
#define REC_PADDING	UINT64_C(0x4150)	/* "PA" */

/* results of the bodies and polls (block.h: <= BLOCK_FAIL failures) */
enum {
	CH_EOF = 3,				/* empty and closed */
	CH_CORRUPT = OWNER_FAIL_LAST - 1,
	CH_FOREIGN = OWNER_FAIL_LAST - 2,
	CH_MISMATCH = OWNER_FAIL_LAST - 3,	/* another capacity or mode */
	CH_CLOSED_SEND = OWNER_FAIL_LAST - 4,
};

enum side { PRODUCER, CONSUMER };

typedef struct {
	PyObject_HEAD
	MappingObject *map;
	Py_ssize_t offset;
	uint64_t capacity;
	int multi[2];			/* per side: a lock per message */
	uint64_t registered[2];		/* single mode: the identity of our claim */
	unsigned long registered_generation[2];	/* the fork generation it was made in */
	int joined[2];			/* the claim was another object's (in this thread) */
	/* an open reserve() or recv_view(): the side is held and the mapping
	 * pinned until it ends */
	int open[2];
	unsigned long open_generation[2];
	uint64_t open_pos[2];		/* tail or head where it starts */
	uint64_t open_total[2];		/* record bytes, padding included */
	uint64_t open_len[2];		/* payload bytes */
	uint64_t open_pad[2];		/* padding bytes before the record */
	uint64_t open_me[2];		/* the thread that took the side for it */
	uint64_t open_serial[2];	/* counts the opens: a token names one */
	/*
	 * The other side's index as last read: head for a producer, tail for
	 * a consumer.  Both only grow, so an old value is a safe bound (less
	 * room, less data than there is); re-reading the other side's line
	 * only when the bound runs out keeps it from bouncing between CPUs
	 * at every message.  (A peer that moves them backwards only makes
	 * the bound wrong, which the checks of every index still catch.)
	 */
	uint64_t seen_head, seen_tail;
} ChannelObject;

/* ---- the region's words -------------------------------------------------- */

struct ch_words {
	uint64_t *desc, *ns, *tail, *sent, *owner[2], *head, *received;
	uint32_t *closed, *space_seq, *producer_waiters, *data_seq, *consumer_waiters;
	char *ring;
	uint64_t cap;
};

static void
ch_words(struct ch_words *w, char *base, uint64_t cap)
{
	w->desc = (uint64_t *)(base + CH_DESC);
	w->ns = (uint64_t *)(base + CH_NS);
	w->tail = (uint64_t *)(base + CH_TAIL);
	w->sent = (uint64_t *)(base + CH_SENT);
	w->owner[PRODUCER] = (uint64_t *)(base + CH_PRODUCER);
	w->closed = (uint32_t *)(base + CH_CLOSED);
	w->head = (uint64_t *)(base + CH_HEAD);
	w->received = (uint64_t *)(base + CH_RECEIVED);
	w->owner[CONSUMER] = (uint64_t *)(base + CH_CONSUMER);
	w->space_seq = (uint32_t *)(base + CH_SPACE_SEQ);
	w->producer_waiters = (uint32_t *)(base + CH_PRODUCER_WAITERS);
	w->data_seq = (uint32_t *)(base + CH_DATA_SEQ);
	w->consumer_waiters = (uint32_t *)(base + CH_CONSUMER_WAITERS);
	w->ring = base + CH_HEADER;
	w->cap = cap;
}

static uint64_t
round8(uint64_t n)
{
	return (n + 7) & ~UINT64_C(7);
}

static uint64_t
max_message(uint64_t cap)
{
	return cap / 2 - REC_HEADER;
}

/* head <= tail <= head + cap, both 8-aligned: else the words are garbage */
static int
indices_ok(uint64_t head, uint64_t tail, uint64_t cap)
{
	return head <= tail && tail - head <= cap && (head | tail) % 8 == 0;
}

/* ---- one call's state ----------------------------------------------------- */

struct batch;

struct ch_call {
	ChannelObject *self;
	struct ch_words w;
	struct gate gate;
	uint64_t me;
	/* producing */
	const struct fault_span *src;	/* payload pieces */
	int nsrc;
	uint64_t len;			/* payload bytes */
	uint64_t tail, head, pad, total;
	uint32_t waiters;		/* the other side's, read after publishing */
	uint32_t seq;
	/* consuming */
	char *dst;
	uint64_t seen;			/* an owner word, for errors */
	enum side side;			/* of the owner-word bodies */
	struct batch *batch;		/* recv_many */
	int want;			/* records a batch may take */
	int first;			/* send_many: the first piece not yet sent */
};

static module_state *
ch_state(ChannelObject *self)
{
	return module_state_of_type(Py_TYPE(self));
}

static PyObject *
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
		PyErr_Format(PyExc_ValueError,
			     "the Channel at offset %zd is used from another pid namespace or "
			     "machine: a dead peer could not be told from a live one",
			     self->offset);
		return NULL;
	case CH_MISMATCH:
		PyErr_Format(PyExc_ValueError,
			     "the region at offset %zd holds a Channel of another capacity or "
			     "mode (or is not zeroed): every process must construct it alike",
			     self->offset);
		return NULL;
	case CH_EOF:
		PyErr_SetString(PyExc_EOFError, "the channel was closed for sending and is empty");
		return NULL;
	case CH_CLOSED_SEND:
		PyErr_Format(PyExc_BrokenPipeError,
			     "the Channel at offset %zd was closed for sending (close_send)",
			     self->offset);
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

/* ---- guarded bodies --------------------------------------------------------- */

static int
run(struct ch_call *c, int (*body)(void *), const char **fault_addr)
{
	struct fault_span spans[3] = {{c->gate.addr, (size_t)c->gate.len}};
	int n = 1;

	/* the region, and the other side of a copy */
	if (c->nsrc > 1)	/* send_many: the region comes first in c->src */
		return fault_run(body, c, c->src - 1, c->nsrc + 1, fault_addr);
	if (c->nsrc == 1)
		spans[n++] = c->src[0];
	if (c->dst != NULL)
		spans[n++] = (struct fault_span){c->dst, (size_t)c->len};
	return fault_run(body, c, spans, n, fault_addr);
}

/* Creation or check of the descriptor and the namespace. */
static int
attach_body(void *arg)
{
	struct ch_call *c = arg;
	ChannelObject *self = c->self;
	uint64_t want = DESC_MAGIC << 48 | DESC_LAYOUT << 44 |
			(uint64_t)(self->multi[PRODUCER] ? DESC_MULTI_PRODUCER : 0) << 42 |
			(uint64_t)(self->multi[CONSUMER] ? DESC_MULTI_CONSUMER : 0) << 42 |
			self->capacity / 8;
	uint64_t desc = 0, ns = 0, mine = peer_namespace();

	if (!__atomic_compare_exchange_n(c->w.desc, &desc, want, 0, __ATOMIC_ACQ_REL,
					 __ATOMIC_ACQUIRE) && desc != want)
		return CH_MISMATCH;
	if (!__atomic_compare_exchange_n(c->w.ns, &ns, mine, 0, __ATOMIC_ACQ_REL,
					 __ATOMIC_ACQUIRE) && ns != mine)
		return CH_FOREIGN;
	return 0;
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
 * Room for a record of c->len payload bytes at c->tail?  Fills head, pad
 * and total.  BLOCK_READY, BLOCK_SLEEP (full) or CH_CORRUPT.
 * The head read last time is tried first; @fresh forces a read (a sleeper
 * that announced itself must see the real head: the Dekker pairing).
 */
static int
room(struct ch_call *c, int fresh)
{
	uint64_t cap = c->w.cap, pos, to_end, need;

	need = REC_HEADER + round8(c->len);
	pos = c->tail % cap;
	to_end = cap - pos;
	c->pad = need > to_end ? to_end : 0;
	c->total = c->pad + need;
	c->head = c->self->seen_head;
	if (fresh || !indices_ok(c->head, c->tail, cap) ||
	    c->total > cap - (c->tail - c->head)) {
		c->head = __atomic_load_n(c->w.head, __ATOMIC_SEQ_CST);
		c->self->seen_head = c->head;
		if (!indices_ok(c->head, c->tail, cap))
			return CH_CORRUPT;
	}
	return c->total <= cap - (c->tail - c->head) ? BLOCK_READY : BLOCK_SLEEP;
}

static int
closed_send(struct ch_call *c)
{
	return __atomic_load_n(c->w.closed, __ATOMIC_ACQUIRE) != 0;
}

static int
room_body(void *arg)
{
	struct ch_call *c = arg;

	if (closed_send(c))
		return CH_CLOSED_SEND;
	c->tail = __atomic_load_n(c->w.tail, __ATOMIC_RELAXED);
	return room(c, 0);
}

static int
space_poll(struct block_op *op, int Py_UNUSED(thorough))
{
	struct ch_call *c = op->ctx;
	uint32_t seq = __atomic_load_n(c->w.space_seq, __ATOMIC_ACQUIRE);
	int rc;

	if (closed_send(c))
		return CH_CLOSED_SEND;
	c->tail = __atomic_load_n(c->w.tail, __ATOMIC_RELAXED);
	rc = room(c, 1);
	if (rc != BLOCK_SLEEP)
		return rc;
	op->sleep_offset = c->gate.offset + CH_SPACE_SEQ;
	op->sleep_expected = seq;
	return BLOCK_SLEEP;
}

static void
space_announce(struct block_op *op, int sleeping)
{
	struct ch_call *c = op->ctx;

	__atomic_fetch_add(c->w.producer_waiters, sleeping ? 1 : (uint32_t)-1, __ATOMIC_SEQ_CST);
}

/* Writes the padding and the record header at the tail (after room()). */
static char *
place(struct ch_call *c)
{
	uint64_t cap = c->w.cap, pos = c->tail % cap;

	if (c->pad) {
		*(uint64_t *)(c->w.ring + pos) = (c->pad - REC_HEADER) | REC_PADDING << 32;
		pos = 0;
	}
	*(uint64_t *)(c->w.ring + pos) = c->len | REC_MESSAGE << 32;
	return c->w.ring + pos + REC_HEADER;
}

/* Publishes @count records that end at @tail (place() and the payload
 * copies wrote them). */
static void
publish_to(struct ch_call *c, uint64_t tail, uint64_t count)
{
	__atomic_store_n(c->w.sent, __atomic_load_n(c->w.sent, __ATOMIC_RELAXED) + count,
			 __ATOMIC_RELAXED);
	__atomic_store_n(c->w.tail, tail, __ATOMIC_RELEASE);
	/* StoreLoad: pairs with the consumer's announce (see the top). */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	c->waiters = __atomic_load_n(c->w.consumer_waiters, __ATOMIC_RELAXED);
	if (c->waiters)
		__atomic_fetch_add(c->w.data_seq, 1, __ATOMIC_RELEASE);
}

static void
publish(struct ch_call *c)
{
	publish_to(c, c->tail + c->total, 1);
}

/*
 * send_many's batch: as many of the messages c->src[c->sent_n..] as fit,
 * written one after another and published together (one fence).  Returns
 * how many it wrote, CH_CLOSED_SEND or CH_CORRUPT.
 */
static int
write_many_body(void *arg)
{
	struct ch_call *c = arg;
	int n = 0, rc;

	if (closed_send(c))
		return CH_CLOSED_SEND;
	c->tail = __atomic_load_n(c->w.tail, __ATOMIC_RELAXED);
	for (int i = c->first; i < c->nsrc; i++, n++) {
		c->len = c->src[i].len;
		rc = room(c, 0);
		if (rc != BLOCK_READY) {
			if (rc == CH_CORRUPT)
				return rc;
			break;
		}
		memcpy(place(c), c->src[i].lo, c->src[i].len);
		c->tail += c->total;
	}
	if (n > 0)
		publish_to(c, c->tail, (uint64_t)n);
	return n;
}

/* The whole record, from the payload pieces, and published. */
static int
write_body(void *arg)
{
	struct ch_call *c = arg;
	char *dst = place(c);

	for (int i = 0; i < c->nsrc; i++) {
		memcpy(dst, c->src[i].lo, c->src[i].len);
		dst += c->src[i].len;
	}
	publish(c);
	return 0;
}

/*
 * The record at the head: skips padding, checks everything.  BLOCK_READY
 * with len, total (record bytes from the head, padding included) and dst
 * set to the payload; BLOCK_SLEEP when empty; CH_EOF; CH_CORRUPT.  The
 * tail read last time is tried first, unless @fresh (as in room()).
 */
/*
 * The message record at @at (< c->tail), after any padding: 1 with the
 * padding bytes and the payload length, or 0 when the bytes there are no
 * valid record between @at and the tail.
 */
static int
record_at(struct ch_call *c, uint64_t at, uint64_t *skip, uint64_t *len)
{
	uint64_t cap = c->w.cap, pos, hdr, kind;

	*skip = 0;
	for (;;) {
		pos = (at + *skip) % cap;
		hdr = __atomic_load_n((uint64_t *)(c->w.ring + pos), __ATOMIC_RELAXED);
		*len = hdr & 0xffffffffu;
		kind = hdr >> 32;
		if (kind == REC_PADDING && *skip == 0 && *len + REC_HEADER == cap - pos &&
		    cap - pos < c->tail - at) {
			*skip = cap - pos;	/* to the ring's start */
			continue;
		}
		return kind == REC_MESSAGE && *len <= max_message(cap) &&
		       pos + REC_HEADER + round8(*len) <= cap &&
		       *skip + REC_HEADER + round8(*len) <= c->tail - at;
	}
}

static int
peek(struct ch_call *c, const char **payload, int fresh)
{
	uint64_t cap = c->w.cap, len, skip;

	c->head = __atomic_load_n(c->w.head, __ATOMIC_RELAXED);
	c->tail = c->self->seen_tail;
	if (fresh || c->tail <= c->head || !indices_ok(c->head, c->tail, cap)) {
		/* acquire: the records up to this tail are complete */
		c->tail = __atomic_load_n(c->w.tail, __ATOMIC_SEQ_CST);
		c->self->seen_tail = c->tail;
	}
	if (!indices_ok(c->head, c->tail, cap))
		return CH_CORRUPT;
	if (c->head == c->tail)
		return closed_send(c) && __atomic_load_n(c->w.tail, __ATOMIC_ACQUIRE) == c->head
			? CH_EOF : BLOCK_SLEEP;
	if (!record_at(c, c->head, &skip, &len))
		return CH_CORRUPT;
	c->len = len;
	c->pad = skip;
	c->total = skip + REC_HEADER + round8(len);
	*payload = c->w.ring + (c->head + skip) % cap + REC_HEADER;
	return BLOCK_READY;
}

static int
peek_body(void *arg)
{
	struct ch_call *c = arg;
	const char *payload;

	return peek(c, &payload, 0);
}

static int
data_poll(struct block_op *op, int Py_UNUSED(thorough))
{
	struct ch_call *c = op->ctx;
	uint32_t seq = __atomic_load_n(c->w.data_seq, __ATOMIC_ACQUIRE);
	const char *payload;
	int rc = peek(c, &payload, 1);

	if (rc != BLOCK_SLEEP)
		return rc;
	op->sleep_offset = c->gate.offset + CH_DATA_SEQ;
	op->sleep_expected = seq;
	return BLOCK_SLEEP;
}

static void
data_announce(struct block_op *op, int sleeping)
{
	struct ch_call *c = op->ctx;

	__atomic_fetch_add(c->w.consumer_waiters, sleeping ? 1 : (uint32_t)-1, __ATOMIC_SEQ_CST);
}

/* Frees the record at the head (peek() found it). */
static void
consume(struct ch_call *c)
{
	__atomic_store_n(c->w.received, __atomic_load_n(c->w.received, __ATOMIC_RELAXED) + 1,
			 __ATOMIC_RELAXED);
	__atomic_store_n(c->w.head, c->head + c->total, __ATOMIC_RELEASE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);	/* StoreLoad, as in publish() */
	c->waiters = __atomic_load_n(c->w.producer_waiters, __ATOMIC_RELAXED);
	if (c->waiters)
		__atomic_fetch_add(c->w.space_seq, 1, __ATOMIC_RELEASE);
}

/* Copies the payload peek() found into c->dst and consumes the record. */
static int
take_body(void *arg)
{
	struct ch_call *c = arg;
	uint64_t len = c->len;
	const char *payload;
	int rc = peek(c, &payload, 0);

	/* Re-peeked: the values copied are the ones checked (the record
	 * cannot change under a well-behaved producer; a hostile one can
	 * only change the data, never the length we use). */
	if (rc != BLOCK_READY)
		return rc;
	if (c->len != len)
		return CH_CORRUPT;
	memcpy(c->dst, payload, len);
	consume(c);
	return 0;
}

/*
 * Batches (recv_many): the records from the head are found in one guarded
 * pass, copied out in a second one and consumed together, so a batch
 * costs one fence and at most one wake-up, not one per message.
 */
#define BATCH	64

struct batch {
	int n;
	uint64_t end;			/* head after the last record */
	uint64_t at[BATCH];		/* ring offsets of the payloads */
	uint64_t len[BATCH];
	char *dst[BATCH];
};

static int
scan_body(void *arg)
{
	struct ch_call *c = arg;
	struct batch *b = c->batch;
	uint64_t pos, skip, len;
	const char *payload;
	int rc = peek(c, &payload, 0);	/* the first, with the empty/EOF checks */

	b->n = 0;
	if (rc != BLOCK_READY)
		return rc;
	pos = c->head;
	while (b->n < c->want && pos < c->tail) {
		if (!record_at(c, pos, &skip, &len))
			return b->n ? BLOCK_READY : CH_CORRUPT;
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
	__atomic_store_n(c->w.received,
			 __atomic_load_n(c->w.received, __ATOMIC_RELAXED) + (uint64_t)b->n,
			 __ATOMIC_RELAXED);
	__atomic_store_n(c->w.head, b->end, __ATOMIC_RELEASE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	c->waiters = __atomic_load_n(c->w.producer_waiters, __ATOMIC_RELAXED);
	if (c->waiters)
		__atomic_fetch_add(c->w.space_seq, 1, __ATOMIC_RELEASE);
	return 0;
}

/* ---- taking and leaving a side --------------------------------------- */

/*
 * An open reserve() or recv_view() of this object owns the tail or head
 * until it ends: a send or receive meanwhile would write into the
 * reservation or deliver the viewed message twice.  RuntimeError then.
 */
static int
is_open(ChannelObject *self, enum side side)
{
	return self->open[side] && self->open_generation[side] == gate_generation();
}

static int
refuse_open(ChannelObject *self, enum side side)
{
	if (!is_open(self, side))
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
static int
take_side(struct ch_call *c, enum side side, const struct deadline *d, int *timed_out)
{
	ChannelObject *self = c->self;
	const char *fault_addr = NULL;
	int rc;

	*timed_out = 0;
	c->side = side;
	if (refuse_open(self, side) < 0)
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
		rc = run(c, claim_body, &fault_addr);
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
	rc = run(c, try_side_body, &fault_addr);
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

/* Ends a per-message hold (multi mode); wakes a waiter for the side. */
static int
leave_side(struct ch_call *c, enum side side)
{
	const char *fault_addr;
	int rc;

	if (!c->self->multi[side])
		return 0;
	c->side = side;
	rc = run(c, release_side_body, &fault_addr);
	if (rc == FAULT_HIT) {
		mapping_raise_fault(c->self->map, fault_addr, NULL);
		return -1;
	}
	if (rc == 0 && (c->seen & OWNER_WAITERS))
		return block_wake(c->self->map,
				  owner_sleep_offset(c->gate.offset +
						     (side == PRODUCER ? CH_PRODUCER : CH_CONSUMER)),
				  1) < 0 ? -1 : 0;
	return 0;	/* taken over from us (we looked dead?): nothing to undo */
}

/* ---- admission --------------------------------------------------------- */

static int
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

/* ---- producing ------------------------------------------------------------- */

/*
 * Waits for room for c->len payload bytes (the producer side is held).
 * Returns BLOCK_READY, BLOCK_TIMEOUT, or BLOCK_ERROR with an exception.
 */
static int
wait_room(struct ch_call *c, const struct deadline *d)
{
	const char *fault_addr = NULL;
	struct block_op op = {0};
	int rc = run(c, room_body, &fault_addr);

	if (rc == BLOCK_SLEEP) {
		if (deadline_passed(d))
			return BLOCK_TIMEOUT;	/* timeout=0: no spinning either */
		if (gate_upgrade(&c->gate, PIN_WAIT) < 0)
			return BLOCK_ERROR;
		op.gate = &c->gate;
		op.poll = space_poll;
		op.announce = space_announce;
		op.ctx = c;
		op.spin = block_default_spin();
		rc = block_until(&op, d);
		if (rc == BLOCK_TIMEOUT || rc == BLOCK_READY || rc == BLOCK_ERROR)
			return rc;
		fault_addr = NULL;
	}
	if (rc == BLOCK_READY)
		return rc;
	ch_error(c->self, rc, fault_addr, NULL);
	return BLOCK_ERROR;
}

/* After publishing: wake a sleeping consumer. */
static int
wake_consumers(struct ch_call *c, uint32_t count)
{
	if (c->waiters == 0)
		return 0;
	return block_wake(c->self->map, c->gate.offset + CH_DATA_SEQ, count) < 0 ? -1 : 0;
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
	rc = wait_room(c, d);
	if (rc != BLOCK_READY)
		return rc == BLOCK_TIMEOUT ? 0 : -1;	/* -1: BLOCK_ERROR */
	c->src = src;
	c->nsrc = nsrc;
	rc = run(c, write_body, &fault_addr);
	c->src = NULL;
	c->nsrc = 0;
	if (rc == FAULT_HIT) {
		mapping_raise_fault(c->self->map, fault_addr, source);
		return -1;
	}
	return wake_consumers(c, 1) < 0 ? -1 : 1;
}

static int
check_length(ChannelObject *self, Py_ssize_t len)
{
	if ((uint64_t)len <= max_message(self->capacity))
		return 0;
	PyErr_Format(PyExc_ValueError,
		     "a message of %zd bytes does not fit the Channel at offset %zd "
		     "(max_message %llu)", len, self->offset,
		     (unsigned long long)max_message(self->capacity));
	return -1;
}

static PyObject *
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
	if (check_length(self, data.len) < 0 || ch_admit(self, &c, PIN_ACCESS) < 0)
		goto out;
	if (take_side(&c, PRODUCER, &deadline, &timed_out) < 0) {
		if (timed_out)
			result = Py_NewRef(Py_False);
		goto leave;
	}
	piece = (struct fault_span){data.buf, (size_t)data.len};
	rc = send_one(&c, &piece, 1, (uint64_t)data.len, &deadline, &data);
	if (leave_side(&c, PRODUCER) < 0 && rc >= 0)
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

static PyObject *
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
	if (take_side(&c, PRODUCER, &deadline, &timed_out) < 0) {
		failed = !timed_out;
		goto leave;
	}
	spans[0] = (struct fault_span){c.gate.addr, (size_t)c.gate.len};
	while (!done && !failed) {
		/* a chunk of buffers (Python code may run: the mapping is pinned) */
		for (n = 0; n < BATCH && (item = PyIter_Next(iter)) != NULL; n++) {
			rc = PyObject_GetBuffer(item, &bufs[n], PyBUF_SIMPLE);
			Py_DECREF(item);
			if (rc < 0 || check_length(self, bufs[n].len) < 0) {
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
		/* The iteration ran Python code, which may have opened a
		 * reserve() on this object: single mode lets this thread in
		 * again, and the chunk would be written over the reserved
		 * space at the tail.  Nothing of it is sent then. */
		if (is_open(self, PRODUCER)) {
			if (!failed)	/* else the iteration's error stands */
				(void)refuse_open(self, PRODUCER);
			failed = done = 1;
			release_chunk(bufs, n);
			break;
		}
		/* what came before a bad item is sent, as one message at a time would */
		c.src = spans + 1;
		c.nsrc = n;
		c.first = 0;
		while (c.first < n) {
			rc = run(&c, write_many_body, &fault_addr);
			if (rc < 0) {	/* FAULT_HIT, CH_CLOSED_SEND, CH_CORRUPT */
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
			if (rc > 0 && wake_consumers(&c, 1) < 0) {
				failed = done = 1;
				break;
			}
			if (c.first < n) {
				/* full: wait for room for the next one */
				c.len = c.src[c.first].len;
				rc = wait_room(&c, &deadline);
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
	if (leave_side(&c, PRODUCER) < 0)
		failed = 1;
leave:
	gate_leave(&c.gate);
	Py_DECREF(iter);
	return failed ? NULL : PyLong_FromSsize_t(count);
}

/* ---- consuming --------------------------------------------------------------- */

/* Waits for a record at the head (the consumer side is held).  BLOCK_READY
 * (peeked), BLOCK_TIMEOUT, CH_EOF, or BLOCK_ERROR with an exception. */
static int
wait_data(struct ch_call *c, const struct deadline *d)
{
	const char *fault_addr = NULL;
	struct block_op op = {0};
	int rc = run(c, peek_body, &fault_addr);

	if (rc == BLOCK_SLEEP) {
		if (deadline_passed(d))
			return BLOCK_TIMEOUT;	/* timeout=0: no spinning either */
		op.gate = &c->gate;
		op.poll = data_poll;
		op.announce = data_announce;
		op.ctx = c;
		op.spin = block_default_spin();
		rc = block_until(&op, d);
		if (rc == BLOCK_ERROR)
			return rc;
		fault_addr = NULL;
	}
	if (rc == BLOCK_READY || rc == BLOCK_TIMEOUT || rc == CH_EOF)
		return rc;
	ch_error(c->self, rc, fault_addr, NULL);
	return BLOCK_ERROR;
}

static int
wake_producers(struct ch_call *c)
{
	if (c->waiters == 0)
		return 0;
	return block_wake(c->self->map, c->gate.offset + CH_SPACE_SEQ, 1) < 0 ? -1 : 0;
}

/* One message as bytes, or Py_None on timeout; NULL with an exception
 * (EOFError at the end of the stream).  The side is held, pinned. */
static PyObject *
recv_one(struct ch_call *c, const struct deadline *d)
{
	const char *fault_addr;
	PyObject *out;
	int rc = wait_data(c, d);

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
	rc = run(c, take_body, &fault_addr);
	c->dst = NULL;
	if (rc != 0) {
		Py_DECREF(out);
		return ch_error(c->self, rc, fault_addr, NULL);
	}
	if (wake_producers(c) < 0) {
		Py_DECREF(out);
		return NULL;
	}
	return out;
}

static PyObject *
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
	if (take_side(&c, CONSUMER, &deadline, &timed_out) < 0) {
		if (timed_out)
			out = Py_NewRef(Py_None);
		goto leave;
	}
	out = recv_one(&c, &deadline);
	if (leave_side(&c, CONSUMER) < 0)
		Py_CLEAR(out);
leave:
	gate_leave(&c.gate);
	return out;
}

static PyObject *
ch_recv_many(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	static const char *const names[] = {"max_count", "timeout"};
	static const struct arg_spec spec = {"recv_many", names, 2, 1, 1, 1};
	PyObject *argv[2], *list = NULL;
	struct deadline deadline;
	Py_ssize_t max_count;
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
	if (take_side(&c, CONSUMER, &deadline, &timed_out) < 0) {
		if (!timed_out)
			Py_CLEAR(list);
		goto leave;
	}
	c.batch = &batch;
	while (PyList_GET_SIZE(list) < max_count) {
		/* the first batch may wait; later ones take what is there */
		if (PyList_GET_SIZE(list) == 0) {
			rc = wait_data(&c, &deadline);
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
		rc = run(&c, scan_body, &fault_addr);
		if (rc == BLOCK_SLEEP || (rc == CH_EOF && PyList_GET_SIZE(list) > 0))
			break;	/* the end of stream raises at the next call */
		if (rc != BLOCK_READY) {
			ch_error(self, rc, fault_addr, NULL);
			Py_CLEAR(list);
			break;
		}
		/* allocate (the mapping is pinned: Python may run), then copy */
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
		rc = run(&c, copy_batch_body, &fault_addr);
		if (rc != 0) {
			mapping_raise_fault(self->map, fault_addr, NULL);
			Py_CLEAR(list);
			break;
		}
		if (wake_producers(&c) < 0) {
			Py_CLEAR(list);
			break;
		}
	}
	if (leave_side(&c, CONSUMER) < 0)
		Py_CLEAR(list);
leave:
	gate_leave(&c.gate);
	return list;
}

/* ---- zero copy: reserve / recv_view (their context managers are Python's) -- */

/* Ends an open reserve or view: drops the side and the pin. */
static int
close_open(ChannelObject *self, struct ch_call *c, enum side side)
{
	int rc;

	/* The side is held in the name of the thread that opened it: the
	 * block may end in another one (a context manager handed over), and
	 * a release in that one's name would leave the side held for good. */
	c->me = self->open_me[side];
	rc = leave_side(c, side);

	self->open[side] = 0;
	mapping_unpin_from(self->map, PIN_CHANNEL, self->open_generation[side]);
	return rc;
}

/* Ends an open reserve or view unpublished, where nothing can be raised. */
static void
drop_open(ChannelObject *self, enum side side)
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
 * The token of an open reserve() or recv_view(), returned with its offset.
 * The Python context manager ends the operation in a finally, but an
 * exception can come between our return and its try: a signal's
 * KeyboardInterrupt is raised as the call returns, its result dropped.
 * The token goes with it and ends the operation unpublished (the
 * reservation dropped, the viewed message left in the ring) instead of
 * leaving the side held for good (in multi mode, for every process).
 */
struct open_token {
	ChannelObject *self;	/* a strong reference */
	enum side side;
	uint64_t serial;	/* which open: a later one is not this token's */
};

#define OPEN_TOKEN "pymmapdev.Channel.open"

static void
open_token_drop(PyObject *capsule)
{
	struct open_token *token;
	PyObject *type, *value, *tb;

	PyErr_Fetch(&type, &value, &tb);	/* dropped while one propagates */
	token = PyCapsule_GetPointer(capsule, OPEN_TOKEN);
	if (token == NULL) {
		PyErr_Clear();
	} else {
		if (is_open(token->self, token->side) &&
		    token->self->open_serial[token->side] == token->serial)
			drop_open(token->self, token->side);
		Py_DECREF(token->self);
		PyMem_Free(token);
	}
	PyErr_Restore(type, value, tb);
}

/* A token for the open about to be made on @side (the next serial). */
static PyObject *
open_token_new(ChannelObject *self, enum side side)
{
	struct open_token *token = PyMem_Malloc(sizeof(*token));
	PyObject *capsule;

	if (token == NULL)
		return PyErr_NoMemory();
	token->self = (ChannelObject *)Py_NewRef(self);
	token->side = side;
	token->serial = self->open_serial[side] + 1;
	capsule = PyCapsule_New(token, OPEN_TOKEN, open_token_drop);
	if (capsule == NULL) {
		Py_DECREF(self);
		PyMem_Free(token);
	}
	return capsule;
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

static PyObject *
ch_reserve_begin(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	struct deadline deadline;
	struct ch_call c;
	Py_ssize_t nbytes;
	int timed_out, rc;
	PyObject *result = NULL, *token;

	if (args_exact("_reserve", nargs, 2) < 0 || arg_length(args[0], "nbytes", &nbytes) < 0 ||
	    arg_deadline(args[1], &deadline) < 0 || check_length(self, nbytes) < 0)
		return NULL;
	if (ch_admit(self, &c, PIN_ACCESS) < 0)
		return NULL;
	if (take_side(&c, PRODUCER, &deadline, &timed_out) < 0) {
		if (timed_out)
			result = Py_NewRef(Py_None);
		gate_leave(&c.gate);
		return result;
	}
	c.len = (uint64_t)nbytes;
	rc = wait_room(&c, &deadline);
	if (rc != BLOCK_READY) {
		if (leave_side(&c, PRODUCER) == 0 && rc == BLOCK_TIMEOUT)
			result = Py_NewRef(Py_None);
		gate_leave(&c.gate);
		return result;
	}
	token = open_token_new(self, PRODUCER);
	if (token == NULL || gate_keep_pin(&c.gate, PIN_CHANNEL) < 0) {
		Py_XDECREF(token);	/* not open yet: ends nothing */
		(void)leave_side(&c, PRODUCER);
		gate_leave(&c.gate);
		return NULL;
	}
	mark_open(self, &c, PRODUCER, c.tail);
	gate_leave(&c.gate);
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
	if (closed_send(c))
		return CH_CLOSED_SEND;
	(void)place(c);
	publish(c);
	return 0;
}

static PyObject *
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
		rc = run(&c, commit_body, &fault_addr);
		if (rc != 0) {
			ch_error(self, rc, fault_addr, NULL);
			failed = 1;
		} else if (wake_consumers(&c, 1) < 0) {
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

static PyObject *
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
	if (take_side(&c, CONSUMER, &deadline, &timed_out) < 0) {
		if (timed_out)
			result = Py_NewRef(Py_None);
		gate_leave(&c.gate);
		return result;
	}
	rc = wait_data(&c, &deadline);
	if (rc != BLOCK_READY) {
		if (rc == CH_EOF)
			ch_error(self, rc, NULL, NULL);
		if (leave_side(&c, CONSUMER) == 0 && rc == BLOCK_TIMEOUT)
			result = Py_NewRef(Py_None);
		gate_leave(&c.gate);
		return result;
	}
	token = open_token_new(self, CONSUMER);
	if (token == NULL || gate_keep_pin(&c.gate, PIN_CHANNEL) < 0) {
		Py_XDECREF(token);	/* not open yet: ends nothing */
		(void)leave_side(&c, CONSUMER);
		gate_leave(&c.gate);
		return NULL;
	}
	mark_open(self, &c, CONSUMER, c.head);
	gate_leave(&c.gate);
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
	consume(c);
	return 0;
}

static PyObject *
ch_view_end(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
	const char *fault_addr;
	struct ch_call c;
	int rc, failed = 0;

	if (reopen(self, &c, CONSUMER) < 0)
		return NULL;
	c.head = self->open_pos[CONSUMER];
	c.total = self->open_total[CONSUMER];
	rc = run(&c, release_view_body, &fault_addr);
	if (rc != 0) {
		ch_error(self, rc, fault_addr, NULL);
		failed = 1;
	} else if (wake_producers(&c) < 0) {
		failed = 1;
	}
	if (close_open(self, &c, CONSUMER) < 0)
		failed = 1;
	gate_leave(&c.gate);
	if (failed)
		return NULL;
	Py_RETURN_NONE;
}

/* ---- asyncio support: announce a sleeper, hand the word to an event loop ---- */

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
		rc = closed_send(c) ? CH_CLOSED_SEND : room(c, 1);
	} else {
		c->seq = __atomic_load_n(c->w.data_seq, __ATOMIC_ACQUIRE);
		__atomic_fetch_add(c->w.consumer_waiters, 1, __ATOMIC_SEQ_CST);
		rc = peek(c, &payload, 1);
	}
	if (rc != BLOCK_SLEEP)
		__atomic_fetch_add(c->side == PRODUCER ? c->w.producer_waiters
						       : c->w.consumer_waiters,
				   (uint32_t)-1, __ATOMIC_SEQ_CST);
	return rc;
}

/* _announce(side, nbytes) -> (offset, expected) to await, or None when the
 * call should be retried now (data or room appeared, or the end). */
static PyObject *
ch_announce(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	const char *fault_addr;
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
	rc = run(&c, announce_body, &fault_addr);
	gate_leave(&c.gate);
	if (rc == FAULT_HIT)
		return mapping_raise_fault(self->map, fault_addr, NULL);
	if (rc != BLOCK_SLEEP)
		Py_RETURN_NONE;
	return Py_BuildValue("(nk)", self->offset + (side == PRODUCER ? CH_SPACE_SEQ : CH_DATA_SEQ),
			     (unsigned long)c.seq);
}

static int
withdraw_body(void *arg)
{
	struct ch_call *c = arg;

	__atomic_fetch_add(c->side == PRODUCER ? c->w.producer_waiters : c->w.consumer_waiters,
			   (uint32_t)-1, __ATOMIC_SEQ_CST);
	return 0;
}

static PyObject *
ch_withdraw(ChannelObject *self, PyObject *arg)
{
	const char *fault_addr;
	struct ch_call c;
	Py_ssize_t side;

	if (arg_length(arg, "side", &side) < 0 || ch_admit(self, &c, PIN_ACCESS) < 0)
		return NULL;
	c.side = side == PRODUCER ? PRODUCER : CONSUMER;
	if (run(&c, withdraw_body, &fault_addr) == FAULT_HIT) {
		gate_leave(&c.gate);
		return mapping_raise_fault(self->map, fault_addr, NULL);
	}
	gate_leave(&c.gate);
	Py_RETURN_NONE;
}

/* ---- end of stream, length ------------------------------------------------------ */

static int
close_body(void *arg)
{
	struct ch_call *c = arg;

	__atomic_store_n(c->w.closed, 1, __ATOMIC_RELEASE);
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
	if (run(&c, close_body, &fault_addr) == FAULT_HIT) {
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
	rc = run(&c, count_body, &fault_addr);
	gate_leave(&c.gate);
	if (rc != 0) {
		ch_error(self, rc, fault_addr, NULL);
		return -1;
	}
	return (Py_ssize_t)c.len;
}

/* ---- the type ------------------------------------------------------------------------ */

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
	rc = run(&c, attach_body, &fault_addr);
	if (rc == 0)
		ch_prefault(&c.gate);
	gate_leave(&c.gate);
	if (rc != 0) {
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
		int open = is_open(self, side);
		/* A claim copied into a forked child is the parent's: the
		 * child's copy dropping it would free the side under a live
		 * producer (or consumer), and let a second one in.  A joined
		 * claim is the object's that made it, alike. */
		int claimed = !self->multi[side] && self->registered[side] != 0 &&
			      self->registered_generation[side] == gate_generation() &&
			      !self->joined[side];
		const char *fault_addr;

		if (open)
			drop_open(self, side);
		if (!claimed)
			continue;
		if (ch_admit(self, &c, PIN_ACCESS) < 0) {
			PyErr_Clear();
			continue;
		}
		/* hand the side back so another thread may claim it (a no-op
		 * when the word no longer names the claim: taken over
		 * meanwhile) */
		c.side = side;
		c.me = self->registered[side];
		(void)run(&c, release_side_body, &fault_addr);
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
	 "The largest message that fits (half the ring, less a record header).", NULL},
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
	 "Announce a sleeper on side (0 send, 1 recv); (offset, expected) of the\n"
	 "word to await, or None to retry now (then nothing is announced)."},
	{"_withdraw", (PyCFunction)ch_withdraw, METH_O,
	 "_withdraw($self, side, /)\n--\n\nWithdraw an announcement."},
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
