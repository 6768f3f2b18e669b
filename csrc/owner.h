/*
 * Owner words: a u64 in shared memory naming the thread that holds
 * something, as its identity (peer.h) | OWNER_WAITERS.  0 is "free".
 *
 * Taking one is one compare-exchange of the whole identity, so a holder is
 * never half-recorded, whenever it dies; a holder that died is detected by
 * peer_check() and taken over with one more compare-exchange (so two
 * waiters cannot both take it).  Sleepers wait on the word's low half
 * (tid | OWNER_WAITERS), which changes at every hand-over; a release that
 * saw OWNER_WAITERS wakes one (Drepper's "mutex 3", with the identity in
 * place of "1").  Lock is one owner word; a Channel has two (its producer
 * and consumer sides).
 *
 * Everything here runs inside fault_run() bodies or block_until() polls:
 * plain memory operations on untrusted words, no Python API.
 */
#ifndef PYMMAPDEV_OWNER_H
#define PYMMAPDEV_OWNER_H

#include "block.h"
#include "peer.h"

#define OWNER_WAITERS	(UINT64_C(1) << 31)

/* Outcomes (block.h: > 0 done, BLOCK_SLEEP, <= BLOCK_FAIL failures). */
enum {
	OWNER_TAKEN = BLOCK_READY,	/* now ours */
	OWNER_TAKEN_OVER = 2,		/* now ours, from a holder that died */
	OWNER_GARBAGE = BLOCK_FAIL,	/* the word is no identity */
	OWNER_RECURSIVE = BLOCK_FAIL - 1, /* already ours */
	OWNER_BUSY = BLOCK_FAIL - 2,	/* a live holder (owner_claim only) */
	OWNER_NOT_MINE = BLOCK_FAIL - 3, /* (owner_release only) */
	OWNER_FAIL_LAST = BLOCK_FAIL - 3,	/* users number their codes below */
};

/* One attempt without waiting: OWNER_TAKEN, BLOCK_SLEEP (held by someone
 * else), OWNER_RECURSIVE or OWNER_GARBAGE.  *seen: the word as read. */
int owner_try(uint64_t *word, uint64_t me, uint64_t *seen);

/* owner_try, and if a holder is dead, take over: never waits.  Returns
 * OWNER_TAKEN, OWNER_TAKEN_OVER, OWNER_BUSY, OWNER_RECURSIVE or
 * OWNER_GARBAGE.  Reads /proc when held: a few microseconds. */
int owner_claim(uint64_t *word, uint64_t me, uint64_t *seen);

/* What block_until() needs to wait for an owner word. */
struct owner_wait {
	uint64_t *word;
	uint64_t me;
	uint64_t seen;
};

/* A block_op poll for @op->ctx = struct owner_wait: OWNER_TAKEN,
 * OWNER_TAKEN_OVER, BLOCK_SLEEP, OWNER_RECURSIVE or OWNER_GARBAGE. */
int owner_poll(struct block_op *op, int thorough);

/* Frees the word if @me holds it: 0 (then *seen tells whether
 * OWNER_WAITERS was set: wake one sleeper on the low half), or
 * OWNER_NOT_MINE. */
int owner_release(uint64_t *word, uint64_t me, uint64_t *seen);

/* Offset of the word's sleep half, for block_wake(). */
static inline Py_ssize_t
owner_sleep_offset(Py_ssize_t word_offset)
{
	return word_offset + BLOCK_LOW_HALF;
}

#endif
