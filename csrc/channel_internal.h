/*
 * The Channel's insides, shared by its files (one job each):
 *
 *	channel_ring.c	the ring in shared memory: its words, records, polls;
 *			every value read from a peer is checked there
 *	channel_call.c	one call's life: admission, taking and leaving a side,
 *			waiting for room or data, waking the other side, errors
 *	channel_io.c	send, send_many, recv, recv_many
 *	channel_open.c	zero copy: reserve() and recv_view(), and their tokens
 *	channel.c	the type: construction, letting go, close_send, len,
 *			the asyncio announcements, the method table
 *
 * pymmapdev.Channel is a bounded ring of variable-size, length-prefixed
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
 *	+96	u64	the thread with a reserve() open (single mode: other
 *			objects of that thread share its claim, see below)
 *	+104	u64	single mode: the thread in a send, from its look at
 *			closed to its publish (End of stream, below); zero
 *			in channels made before it was (bytes left unused)
 *	+128	u64	head: bytes ever consumed (consumer side)
 *	+136	u64	received: messages ever consumed
 *	+144	u64	consumer owner word
 *	+152	u64	the thread with a recv_view() open
 *	+192	u32	space_seq, u32 producer_waiters  (the consumer and
 *			close_send() wake them)
 *	+256	u32	data_seq, u32 consumer_waiters   (the producer wakes them)
 *	+320	capacity bytes of ring
 *
 * A record is a u64 header (length | kind << 32) and the payload, padded
 * to 8 bytes.  Records never wrap: one that does not fit before the end of
 * the ring is preceded by a padding record that runs to the end.  So that
 * padding can never block a record forever, a record takes at most half
 * the ring (max_message, which the u32 length also caps at 4 GiB - 1).
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
 * Objects of one thread share its single-mode claim (a copy, a pickle
 * loaded here), so an open reserve() or recv_view() is also named in the
 * region (+96, +152): another object of the opening thread is refused
 * while it is open, instead of writing into the reservation or receiving
 * the viewed message twice.  A name that is not ours is ignored (the
 * holder died, or it is another process's lock in multi mode).
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
 * the end.  A producer that looked before the close publishes after it:
 * in multi-producer mode it holds the side from before its look to after
 * its publish, so a consumer that finds the ring closed and drained takes
 * it for the end only once no live producer holds the side (the holder
 * wakes the consumers when it lets go after a close).  In single mode the
 * claim is held between sends, so the producer names itself in a word of
 * its own (+104) before its look at closed and clears it after its publish
 * or failure: the consumer waits alike while that word names a live thread
 * other than itself (a dead one, or a word a peer scribbled that names no
 * thread, is no sender: the wait is bounded by the consumer's timeout and
 * by the named thread's life, as for the owner word).
 *
 * Untrusted region: every index, length and kind read from shared memory
 * is checked before use; impossible values raise ChannelCorrupt.  Nothing
 * is read or written outside [offset, offset + size_for(capacity)).
 */
#ifndef PYMMAPDEV_CHANNEL_INTERNAL_H
#define PYMMAPDEV_CHANNEL_INTERNAL_H

#include "channel.h"
#include "args.h"
#include "block.h"
#include "owner.h"
#include "peer.h"

#define LINE		64
#define CH_DESC		0
#define CH_NS		8
#define CH_TAIL		64
#define CH_SENT		72
#define CH_PRODUCER	80
#define CH_CLOSED	88
#define CH_PRODUCER_OPEN 96
#define CH_SENDING	104
#define CH_HEAD		128
#define CH_RECEIVED	136
#define CH_CONSUMER	144
#define CH_CONSUMER_OPEN 152
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
#define DESC_MODES_SHIFT	42
#define DESC_HEAD_SHIFT		44	/* magic and layout from here up */

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
	CH_OPEN_ELSEWHERE = OWNER_FAIL_LAST - 5,	/* another object of ours has it open */
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

/* the region's words, found once per call */
struct ch_words {
	uint64_t *desc, *ns, *tail, *sent, *owner[2], *open[2], *sending, *head, *received;
	uint32_t *closed, *space_seq, *producer_waiters, *data_seq, *consumer_waiters;
	char *ring;
	uint64_t cap;
};

static inline uint64_t
round8(uint64_t n)
{
	return (n + 7) & ~UINT64_C(7);
}

/* Half the ring, less a header (so padding never blocks a record), and
 * no more than the header's u32 length can say (rings over 8 GiB). */
static inline uint64_t
max_message(uint64_t cap)
{
	return cap / 2 - REC_HEADER < UINT32_MAX ? cap / 2 - REC_HEADER : UINT32_MAX;
}

/* head <= tail <= head + cap, both 8-aligned: else the words are garbage */
static inline int
indices_ok(uint64_t head, uint64_t tail, uint64_t cap)
{
	return head <= tail && tail - head <= cap && (head | tail) % 8 == 0;
}

/* one call's state */

struct batch;			/* channel_io.c: recv_many */

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
	uint64_t seen;			/* an owner word or descriptor, for errors */
	enum side side;			/* of the owner-word bodies */
	struct batch *batch;		/* recv_many */
	int want;			/* records a batch may take */
	int first;			/* send_many: the first piece not yet sent */
	int sending;			/* ch_peek: closed, but a producer may publish yet */
	int wake_consumers;		/* ch_leave_side: let go after a close_send() */
	int in_send;			/* single mode: the sending word may name us */
	int forked_away;		/* a forked child's: the side is the parent's */
};

/* channel_ring.c: the ring (no Python objects; bodies run under the guard) */
void ch_words(struct ch_words *w, char *base, uint64_t cap);
int ch_run(struct ch_call *c, int (*body)(void *), const char **fault_addr);
int ch_closed_send(struct ch_call *c);
int ch_closed_to_sender(struct ch_call *c);
void ch_end_send(struct ch_call *c, int published);
int ch_release_producer(struct ch_call *c);
int ch_room(struct ch_call *c, int fresh);
char *ch_payload_at(struct ch_call *c);
void ch_place(struct ch_call *c);
void ch_publish_to(struct ch_call *c, uint64_t tail, uint64_t count);
void ch_publish(struct ch_call *c);
int ch_record_at(struct ch_call *c, uint64_t at, uint64_t *skip, uint64_t *len);
int ch_peek(struct ch_call *c, const char **payload, int fresh);
void ch_consume_to(struct ch_call *c, uint64_t head, uint64_t count);
void ch_consume(struct ch_call *c);
int ch_space_poll(struct block_op *op, int thorough);
void ch_space_announce(struct block_op *op, int sleeping);
int ch_data_poll(struct block_op *op, int thorough);
void ch_data_announce(struct block_op *op, int sleeping);

/* channel_call.c: one call */
int ch_admit(ChannelObject *self, struct ch_call *c, enum pin_kind pin);
PyObject *ch_error(ChannelObject *self, int rc, const char *fault_addr, const Py_buffer *source);
PyObject *ch_foreign_error(Py_ssize_t offset);
int ch_check_length(ChannelObject *self, Py_ssize_t len);
int ch_is_open(ChannelObject *self, enum side side);
int ch_refuse_open(ChannelObject *self, enum side side);
int ch_take_side(struct ch_call *c, enum side side, const struct deadline *d, int *timed_out);
int ch_leave_side(struct ch_call *c, enum side side);
void ch_pin_held_side(struct ch_call *c);
int ch_hand_back(struct ch_call *c, enum side side, uint64_t me);
int ch_wait_room(struct ch_call *c, const struct deadline *d);
int ch_wait_data(struct ch_call *c, const struct deadline *d);
int ch_wake_consumers(struct ch_call *c, uint32_t count);
int ch_wake_producers(struct ch_call *c);

/*
 * What a call leaves for its Python caller to end (an open reserve() or
 * recv_view(), an announced asyncio sleeper), as a capsule returned with
 * its result.  The caller ends it in a finally, but an exception can come
 * between our return and its try (a signal's KeyboardInterrupt is raised
 * as the call returns, its result dropped): the capsule goes with the
 * result, and dropping it runs @end, which must leave no exception set.
 */
struct ch_token {
	ChannelObject *self;	/* a strong reference */
	enum side side;
	uint64_t tag;		/* @end's: which open, or the fork generation */
	int live;		/* @end's: not ended yet */
	void (*end)(struct ch_token *t);
};
PyObject *ch_token_new(ChannelObject *self, enum side side, uint64_t tag, const char *kind,
		       void (*end)(struct ch_token *t));
/* The token in @capsule, a ch_token_new() capsule of @kind; NULL + error if not. */
struct ch_token *ch_token_of(PyObject *capsule, const char *kind);

/* channel_io.c and channel_open.c: methods of the type */
PyObject *ch_send(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *ch_send_many(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs,
		       PyObject *kwnames);
PyObject *ch_recv(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *ch_recv_many(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs,
		       PyObject *kwnames);
PyObject *ch_reserve_begin(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *ch_reserve_end(ChannelObject *self, PyObject *arg);
PyObject *ch_view_begin(ChannelObject *self, PyObject *arg);
PyObject *ch_view_end(ChannelObject *self, PyObject *Py_UNUSED(ignored));
void ch_drop_open(ChannelObject *self, enum side side);

#endif
