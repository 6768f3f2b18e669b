/*
 * Owner words (owner.h says what they are).
 */
#include "owner.h"

int
owner_try(uint64_t *word, uint64_t me, uint64_t *seen)
{
	uint64_t expected = 0;

	/* seq_cst, as every take below: a Channel's producer loads closed
	 * after it (channel_ring.c, producer_sending()) */
	if (__atomic_compare_exchange_n(word, &expected, me, 0, __ATOMIC_SEQ_CST,
					__ATOMIC_RELAXED))
		return OWNER_TAKEN;
	*seen = expected;
	if ((expected & ~OWNER_WAITERS) == me)
		return OWNER_RECURSIVE;
	if (!peer_valid(expected & ~OWNER_WAITERS))
		return OWNER_GARBAGE;
	return BLOCK_SLEEP;
}

/* Takes the word over from the dead holder recorded in @v. */
static int
take_over(uint64_t *word, uint64_t v, uint64_t me)
{
	/* Keep OWNER_WAITERS: others may sleep on the word. */
	return __atomic_compare_exchange_n(word, &v, me | (v & OWNER_WAITERS), 0,
					   __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
}

int
owner_claim(uint64_t *word, uint64_t me, uint64_t *seen)
{
	int rc = owner_try(word, me, seen);

	if (rc != BLOCK_SLEEP)
		return rc;
	if (peer_check(*seen & ~OWNER_WAITERS) == PEER_DEAD && take_over(word, *seen, me))
		return OWNER_TAKEN_OVER;
	return OWNER_BUSY;
}

int
owner_poll(struct block_op *op, int thorough)
{
	struct owner_wait *w = op->ctx;
	uint64_t v = __atomic_load_n(w->word, __ATOMIC_RELAXED), holder;

	/* In the name of the thread polling now: a signal handler the loop
	 * runs may fork(), and the child goes on with this wait as another
	 * thread (peer_after_fork); taking the word in the name of the
	 * parent's thread, which lives on, would make two holders of one
	 * identity.  After a thread's first call, a thread-local read. */
	w->me = peer_self();
	/* Taken with OWNER_WAITERS set: we may have been one of several
	 * sleepers, and the others must still be woken on release. */
	if (v == 0 && __atomic_compare_exchange_n(w->word, &v, w->me | OWNER_WAITERS, 0,
						  __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
		return OWNER_TAKEN;
	/*
	 * Held, or we lost the race and @v is now the winner's.  Every
	 * BLOCK_SLEEP below sleeps on this word as read: the op's sleep word
	 * may not have been set by an earlier poll (spin 0), and sleeping on
	 * whatever it held was a sleep nobody ends.  A word that moved on
	 * since (a lost race for a dead holder's word) ends it at once.
	 */
	w->seen = v;
	holder = v & ~OWNER_WAITERS;
	if (!peer_valid(holder))
		return OWNER_GARBAGE;
	if (holder == w->me)
		return OWNER_RECURSIVE;
	op->sleep_offset = ((char *)w->word - op->gate->map->data) + BLOCK_LOW_HALF;
	op->sleep_expected = (uint32_t)(holder | OWNER_WAITERS);
	op->watch_peer = 1;
	if (thorough && peer_check(holder) == PEER_DEAD)
		return take_over(w->word, v, w->me | OWNER_WAITERS) ? OWNER_TAKEN_OVER : BLOCK_SLEEP;
	if (!(v & OWNER_WAITERS))
		(void)__atomic_compare_exchange_n(w->word, &v, v | OWNER_WAITERS, 0,
						  __ATOMIC_RELAXED, __ATOMIC_RELAXED);
	return BLOCK_SLEEP;
}

int
owner_release(uint64_t *word, uint64_t me, uint64_t *seen)
{
	uint64_t v = __atomic_load_n(word, __ATOMIC_RELAXED);

	*seen = v;
	if ((v & ~OWNER_WAITERS) != me)
		return OWNER_NOT_MINE;
	/* seq_cst, not only release: a Channel producer loads closed after
	 * letting go (channel_call.c, leave_side_body); the same xchg on x86 */
	*seen = __atomic_exchange_n(word, 0, __ATOMIC_SEQ_CST);
	return 0;
}
