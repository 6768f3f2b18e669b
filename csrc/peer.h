/*
 * Who is on the other side: thread identities stored in shared words, and
 * whether the thread behind one is still alive.
 *
 * An identity is one u64 that fits in a single atomic store, so it is
 * never half-written: the low 32 bits are the thread id (at most 2^22 on
 * Linux, PID_MAX_LIMIT), the high 32 bits the low half of the thread's
 * start time in clock ticks since boot (/proc/<tid>/stat).  The start time
 * tells a dead thread from a new one that was given the same id.  Bits
 * 22-31 of an identity are zero, so users of the word may keep flags there
 * (Lock keeps its "waiters" bit at 31); anything else there is garbage.
 *
 * Identities are only comparable between processes of one pid namespace on
 * one machine: peer_namespace() gives a tag of both for a shared structure
 * to record.
 */
#ifndef PYMMAPDEV_PEER_H
#define PYMMAPDEV_PEER_H

#include <stdint.h>

#define PEER_TID_BITS	22
#define PEER_TID_MASK	((UINT64_C(1) << PEER_TID_BITS) - 1)
/* bits of the low word that an identity leaves for its users' flags */
#define PEER_FLAG_MASK	(UINT64_C(0xffffffff) & ~PEER_TID_MASK)

/* This thread's identity (never 0).  Cached per thread; reset by fork. */
uint64_t peer_self(void);

/* Plausible as an identity: a tid in range, no stray flag bits. */
static inline int
peer_valid(uint64_t ident)
{
	return (ident & PEER_TID_MASK) != 0 && (ident & PEER_FLAG_MASK) == 0;
}

enum peer_state {
	PEER_ALIVE = 1,
	PEER_DEAD = 0,		/* exiting (in do_exit), exited, a zombie, or its id reused */
};

/*
 * Whether the thread behind @ident (flags cleared) runs.  Reads /proc:
 * a few microseconds; no GIL needed, no Python API.  An identity that
 * cannot be checked (no /proc) counts as alive: waiting is safe, declaring
 * a live peer dead is not.
 */
enum peer_state peer_check(uint64_t ident);

/* A non-zero tag of this process's pid namespace and boot. */
uint64_t peer_namespace(void);

/* In a forked child (module.c's fork handler): identities are per thread. */
void peer_after_fork(void);

#endif
