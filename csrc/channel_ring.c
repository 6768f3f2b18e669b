/*
 * The Channel's ring in shared memory (channel_internal.h has the layout
 * and the protocol): finding the words, room for a record and placing
 * it, publishing, finding the record at the head and freeing it, and the
 * polls and announcements the blocking loop calls.  No Python objects:
 * all of it runs under the fault guard (ch_run), most of it without the
 * GIL in the blocking loop.  Every index, length and kind read from the
 * region is checked here before it is used.
 */
#include "channel_internal.h"

#include <string.h>

void
ch_words(struct ch_words *w, char *base, uint64_t cap)
{
	w->desc = (uint64_t *)(base + CH_DESC);
	w->ns = (uint64_t *)(base + CH_NS);
	w->tail = (uint64_t *)(base + CH_TAIL);
	w->sent = (uint64_t *)(base + CH_SENT);
	w->owner[PRODUCER] = (uint64_t *)(base + CH_PRODUCER);
	w->closed = (uint32_t *)(base + CH_CLOSED);
	w->open[PRODUCER] = (uint64_t *)(base + CH_PRODUCER_OPEN);
	w->open[CONSUMER] = (uint64_t *)(base + CH_CONSUMER_OPEN);
	w->sending = (uint64_t *)(base + CH_SENDING);
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

/* Runs @body under the fault guard over the region and the other side of a
 * copy (c->src, c->dst): a fault anywhere there is FAULT_HIT. */
int
ch_run(struct ch_call *c, int (*body)(void *), const char **fault_addr)
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

/* Another object of this thread has @side open (channel_internal.h)? */
static int
open_elsewhere(struct ch_call *c, enum side side)
{
	return __atomic_load_n(c->w.open[side], __ATOMIC_RELAXED) == c->me;
}

/*
 * Room for a record of c->len payload bytes at c->tail?  Fills head, pad
 * and total.  BLOCK_READY, BLOCK_SLEEP (full), CH_CORRUPT or CH_OPEN_ELSEWHERE.
 * The head read last time is tried first; @fresh forces a read (a sleeper
 * that announced itself must see the real head: the Dekker pairing).
 */
int
ch_room(struct ch_call *c, int fresh)
{
	uint64_t cap = c->w.cap, pos, to_end, need;

	if (open_elsewhere(c, PRODUCER))
		return CH_OPEN_ELSEWHERE;
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

/* seq_cst: with the producer side's seq_cst take or naming and a
 * consumer's seq_cst loads of closed and of that word (producer_sending()) */
int
ch_closed_send(struct ch_call *c)
{
	return __atomic_load_n(c->w.closed, __ATOMIC_SEQ_CST) != 0;
}

/*
 * A producer's look at closed before it places a record.  In single mode
 * it names this thread in the sending word first, until ch_end_send()
 * after its publish or when it leaves without one: the store is
 * seq_cst, before the seq_cst load of closed, so a producer that saw
 * closed == 0 is named before a consumer that saw the close looks at the
 * word (producer_sending()).  Every look stores (a spin stores again): a
 * send made by a signal handler of ours in the middle of this one clears
 * the word when it ends, and this one names itself again at its next look.
 */
int
ch_closed_to_sender(struct ch_call *c)
{
	if (!c->self->multi[PRODUCER]) {
		c->in_send = 1;
		__atomic_store_n(c->w.sending, peer_self(), __ATOMIC_SEQ_CST);
	}
	return ch_closed_send(c);
}

/*
 * A producer lets go of what a consumer that saw the close may wait for
 * (the side in multi mode, the sending word in single mode, either without
 * a publish): after a close, it bumps data_seq and asks its caller to
 * wake every consumer (c->wake_consumers; ch_leave_side).  The letting go
 * is seq_cst, so the load of closed after it cannot pass it, and the
 * consumer's loads of closed then of the word (producer_sending()) see
 * the close or the letting go.
 */
static void
after_letting_go(struct ch_call *c)
{
	c->wake_consumers = ch_closed_send(c);
	if (c->wake_consumers)
		__atomic_fetch_add(c->w.data_seq, 1, __ATOMIC_RELEASE);
}

/*
 * Ends a send ch_closed_to_sender() named (single mode).  After the
 * publish that ends it (@published), a release store: a consumer that
 * reads the cleared word sees the tail stored before it, and one that
 * slept on our name is woken by the publish itself (ch_publish_to's fence
 * and look at its waiters), so no look at closed.  Without a publish
 * (ch_leave_side), as a multi-mode producer lets go of the side.
 */
void
ch_end_send(struct ch_call *c, int published)
{
	if (!c->in_send)
		return;
	c->in_send = 0;
	if (published) {
		__atomic_store_n(c->w.sending, 0, __ATOMIC_RELEASE);
		return;
	}
	__atomic_store_n(c->w.sending, 0, __ATOMIC_SEQ_CST);
	after_letting_go(c);
}

/* Multi mode: ends a per-message hold of the producer side (owner_release's
 * result), waking the consumers after a close. */
int
ch_release_producer(struct ch_call *c)
{
	int rc = owner_release(c->w.owner[PRODUCER], c->me, &c->seen);

	if (rc == 0)
		after_letting_go(c);
	return rc;
}

/*
 * May a producer that looked at closed before close_send() still publish?
 * Called after closed read 1.  In multi mode a producer holds the side
 * from before its look until after its tail store; in single mode it
 * names itself in the sending word for that time (ch_closed_to_sender).
 * So a live holder or sender that is not this thread (a reserve() of ours
 * is refused at commit) is one.  All of it seq_cst (a producer's take of
 * the side or naming, then its load of closed; close_send's store; our
 * load of closed, then of the word): a producer that saw closed == 0 is
 * in the word before we look at it.  When it lets go, its tail store is
 * seen with the word (release or seq_cst).
 */
static int
producer_sending(struct ch_call *c)
{
	uint64_t holder = c->self->multi[PRODUCER]
		? __atomic_load_n(c->w.owner[PRODUCER], __ATOMIC_SEQ_CST) & ~OWNER_WAITERS
		: __atomic_load_n(c->w.sending, __ATOMIC_SEQ_CST);

	return holder != 0 && holder != c->me && peer_valid(holder) &&
	       peer_check(holder) == PEER_ALIVE;
}

int
ch_space_poll(struct block_op *op, int Py_UNUSED(thorough))
{
	struct ch_call *c = op->ctx;
	uint32_t seq = __atomic_load_n(c->w.space_seq, __ATOMIC_ACQUIRE);
	int rc;

	if (ch_closed_to_sender(c))
		return CH_CLOSED_SEND;
	c->tail = __atomic_load_n(c->w.tail, __ATOMIC_RELAXED);
	rc = ch_room(c, 1);
	if (rc != BLOCK_SLEEP)
		return rc;
	op->sleep_offset = c->gate.offset + CH_SPACE_SEQ;
	op->sleep_expected = seq;
	return BLOCK_SLEEP;
}

void
ch_space_announce(struct block_op *op, int sleeping)
{
	struct ch_call *c = op->ctx;

	__atomic_fetch_add(c->w.producer_waiters, sleeping ? 1 : (uint32_t)-1, __ATOMIC_SEQ_CST);
}

/* Where the payload of the record at the tail goes (after ch_room()). */
char *
ch_payload_at(struct ch_call *c)
{
	return c->w.ring + (c->pad ? 0 : c->tail % c->w.cap) + REC_HEADER;
}

/* Writes the padding and the record header at the tail (after ch_room()).
 * A copy in writes its payload first: its source may be a view of the
 * ring's free space that these headers overwrite. */
void
ch_place(struct ch_call *c)
{
	uint64_t cap = c->w.cap, pos = c->tail % cap;

	if (c->pad) {
		*(uint64_t *)(c->w.ring + pos) = (c->pad - REC_HEADER) | REC_PADDING << 32;
		pos = 0;
	}
	*(uint64_t *)(c->w.ring + pos) = c->len | REC_MESSAGE << 32;
}

/* Publishes @count records that end at @tail (ch_place() and the payload
 * copies wrote them). */
void
ch_publish_to(struct ch_call *c, uint64_t tail, uint64_t count)
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

void
ch_publish(struct ch_call *c)
{
	ch_publish_to(c, c->tail + c->total, 1);
}

/*
 * The message record at @at (< c->tail), after any padding: 1 with the
 * padding bytes and the payload length, or 0 when the bytes there are no
 * valid record between @at and the tail.
 */
int
ch_record_at(struct ch_call *c, uint64_t at, uint64_t *skip, uint64_t *len)
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

/*
 * The message record at the head: skips padding, checks everything.  BLOCK_READY
 * with len, total (record bytes from the head, padding included) and *payload set
 * to the payload; BLOCK_SLEEP when empty; CH_EOF; CH_CORRUPT;
 * CH_OPEN_ELSEWHERE.  The
 * tail read last time is tried first, unless @fresh (as in ch_room()).
 */
int
ch_peek(struct ch_call *c, const char **payload, int fresh)
{
	uint64_t cap = c->w.cap, len, skip;

	if (open_elsewhere(c, CONSUMER))
		return CH_OPEN_ELSEWHERE;
	c->head = __atomic_load_n(c->w.head, __ATOMIC_RELAXED);
	c->tail = c->self->seen_tail;
	if (fresh || c->tail <= c->head || !indices_ok(c->head, c->tail, cap)) {
		/* acquire: the records up to this tail are complete */
		c->tail = __atomic_load_n(c->w.tail, __ATOMIC_SEQ_CST);
		c->self->seen_tail = c->tail;
	}
	if (!indices_ok(c->head, c->tail, cap))
		return CH_CORRUPT;
	if (c->head == c->tail) {
		/* Not the end while a producer that may not have seen the close
		 * still holds the side: it may publish yet.  The wait is sliced
		 * (ch_data_poll: watch_peer), and the holder wakes us when it
		 * lets go (ch_leave_side).  closed is read once: a close_send()
		 * between a first read (0: the holder not looked at) and a
		 * second (1) took a message still in a send for the end. */
		int closed = ch_closed_send(c);

		c->sending = closed && producer_sending(c);
		return closed && !c->sending &&
		       __atomic_load_n(c->w.tail, __ATOMIC_ACQUIRE) == c->head
			? CH_EOF : BLOCK_SLEEP;
	}
	if (!ch_record_at(c, c->head, &skip, &len))
		return CH_CORRUPT;
	c->len = len;
	c->pad = skip;
	c->total = skip + REC_HEADER + round8(len);
	*payload = c->w.ring + (c->head + skip) % cap + REC_HEADER;
	return BLOCK_READY;
}

int
ch_data_poll(struct block_op *op, int Py_UNUSED(thorough))
{
	struct ch_call *c = op->ctx;
	uint32_t seq = __atomic_load_n(c->w.data_seq, __ATOMIC_ACQUIRE);
	const char *payload;
	int rc = ch_peek(c, &payload, 1);

	if (rc != BLOCK_SLEEP)
		return rc;
	op->sleep_offset = c->gate.offset + CH_DATA_SEQ;
	op->sleep_expected = seq;
	op->watch_peer = c->sending;	/* its death ends the wait too */
	return BLOCK_SLEEP;
}

void
ch_data_announce(struct block_op *op, int sleeping)
{
	struct ch_call *c = op->ctx;

	__atomic_fetch_add(c->w.consumer_waiters, sleeping ? 1 : (uint32_t)-1, __ATOMIC_SEQ_CST);
}

/* Frees @count records that end at @head (ch_peek() found them). */
void
ch_consume_to(struct ch_call *c, uint64_t head, uint64_t count)
{
	/* head, then received: a consumer killed between the two stores leaves
	 * received low, so len() (sent - received) stays one high, as a
	 * producer killed between sent and tail leaves it.  The other order
	 * left received high, and len() of the drained ring ChannelCorrupt
	 * (sent < received) for good.  (A two-store window: no test can hit
	 * it without instrumenting the body.) */
	__atomic_store_n(c->w.head, head, __ATOMIC_RELEASE);
	__atomic_store_n(c->w.received, __atomic_load_n(c->w.received, __ATOMIC_RELAXED) + count,
			 __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);	/* StoreLoad, as in ch_publish_to() */
	c->waiters = __atomic_load_n(c->w.producer_waiters, __ATOMIC_RELAXED);
	if (c->waiters)
		__atomic_fetch_add(c->w.space_seq, 1, __ATOMIC_RELEASE);
}

/* Frees the record at the head. */
void
ch_consume(struct ch_call *c)
{
	ch_consume_to(c, c->head + c->total, 1);
}
