/*
 * The one fault guard: SIGBUS as a return value.
 *
 * A page of a file mapping whose file was truncated (by any process) raises
 * SIGBUS when touched, and so does a device page the driver no longer
 * provides.  Every access the package makes to mapped memory runs through
 * fault_run(): a SIGBUS whose address lies in one of the spans it was given
 * ends the body early and fault_run() returns FAULT_HIT with the address.
 * Both sides of a copy are spans, so a *source* that faults (a view of
 * another mapping whose file shrank) is caught as well as the destination.
 *
 * A body runs without the Python API (it may run without the GIL, and a
 * fault leaves it half done): it touches memory and computes, nothing more.
 *
 * The handler is process-wide.  Another handler installed later (Python's
 * signal.signal, faulthandler, a library) would take SIGBUS away from us:
 * a guarded access would then loop forever on the faulting instruction or
 * kill the process.  fault_rearm() puts ours back on top (chaining to the
 * newcomer for faults outside every guard); it runs when a Mapping is
 * created, before bulk copies, and after Python code installs a SIGBUS
 * handler (pymmapdev/_signals.py wraps the stdlib calls that do).
 */
#ifndef PYMMAPDEV_FAULT_H
#define PYMMAPDEV_FAULT_H

#include <stddef.h>
#include <stdint.h>

#include "width.h"

#define FAULT_HIT	(-1000)

struct fault_span {
	const void *lo;
	size_t len;
};

/*
 * Runs body(arg) under the guard for @nspans spans (1 or 2).  Returns what
 * body returned (anything but FAULT_HIT), or FAULT_HIT with *addr set to the
 * faulting address.
 */
int fault_run(int (*body)(void *arg), void *arg,
	      const struct fault_span *spans, int nspans, const char **addr);

/* Guarded copies (memmove semantics): 0, or FAULT_HIT with *addr. */
int fault_copy(void *dst, const void *src, size_t len, const char **addr);

/* @count bytes from src[0], src[src_step], ... to dst[0], dst[dst_step],
 * ...; the regions must not overlap (the caller copies through a bounce
 * buffer when they may).  @dst_span and @src_span bound the two regions. */
int fault_strided_copy(char *dst, ptrdiff_t dst_step, const char *src,
		       ptrdiff_t src_step, ptrdiff_t count,
		       const struct fault_span *dst_span,
		       const struct fault_span *src_span, const char **addr);

/* Installs our handler, or re-installs it on top of a newer one.
 * Returns 0, or -1 with errno. */
int fault_rearm(void);

/*
 * fault_rearm(), after first dropping from the handlers we chain to every
 * one that calls the function at @gone (0: none): its owner uninstalled
 * it, and it no longer handles anything.  *@displaced (if not NULL): the
 * function of the handler this re-arm displaced, or 0 (none, SIG_DFL or
 * SIG_IGN), to pass as @gone once its owner uninstalls it.
 */
int fault_rearm_over(uintptr_t gone, uintptr_t *displaced);

/* The read-modify-writes of atomic.c and lock.c, each one locked
 * instruction (a full barrier: what SEQ_CST asks for). */
enum fault_rmw {
	FAULT_XADD,	/* *old = *p, *p += a */
	FAULT_XCHG,	/* *old = *p, *p = a */
	FAULT_CMPXCHG,	/* *old = *p, and *p = b if it was a */
};

/*
 * One aligned load or store of exactly @width bytes: 0, or FAULT_HIT with
 * *addr.  The hottest accesses (read_u32 and friends) cannot afford a
 * sigsetjmp, so on x86-64 the access is a single instruction listed in a
 * table of fixups (the kernel's exception-table trick): the handler finds
 * the faulting instruction there and resumes at a stub that reports the
 * fault, so the path that does not fault costs nothing extra.  Elsewhere
 * they go through fault_run().
 */
#if defined(__x86_64__) && !defined(PYMMAPDEV_NO_FIXUPS)	/* the knob tests the fallback */
#define FAULT_HAVE_FIXUPS 1

/* the address of this thread's last fixed-up fault */
const char *fault_fixup_addr(void);

#define FAULT_FIXUP(insn, ...)							\
	__asm__ volatile("1:	" insn "\n"					\
			 "2:\n"						\
			 "	.pushsection pymmapdev_fixups, \"aw\"\n"	\
			 "	.balign 8\n"					\
			 "	.quad 1b, 3f\n"				\
			 "	.popsection\n"					\
			 "	.pushsection .text.unlikely, \"ax\"\n"	\
			 "3:	movl $1, %k[failed]\n"				\
			 "	jmp 2b\n"					\
			 "	.popsection\n"					\
			 __VA_ARGS__ : "memory")

static inline int
fault_load(const void *p, enum width width, uint64_t *out, const char **addr)
{
	uint64_t v = 0;
	int failed = 0;

	switch (width) {
	case WIDTH_U8:
		FAULT_FIXUP("movzbl (%[p]), %k[v]", : [v] "=r"(v), [failed] "+r"(failed) : [p] "r"(p));
		break;
	case WIDTH_U16:
		FAULT_FIXUP("movzwl (%[p]), %k[v]", : [v] "=r"(v), [failed] "+r"(failed) : [p] "r"(p));
		break;
	case WIDTH_U32:
		FAULT_FIXUP("movl (%[p]), %k[v]", : [v] "=r"(v), [failed] "+r"(failed) : [p] "r"(p));
		break;
	case WIDTH_U64:
		FAULT_FIXUP("movq (%[p]), %q[v]", : [v] "=r"(v), [failed] "+r"(failed) : [p] "r"(p));
		break;
	}
	if (__builtin_expect(failed, 0)) {
		*addr = fault_fixup_addr();
		return FAULT_HIT;
	}
	*out = v;
	return 0;
}

static inline int
fault_store(void *p, enum width width, uint64_t v, const char **addr)
{
	int failed = 0;

	switch (width) {
	case WIDTH_U8:
		FAULT_FIXUP("movb %b[v], (%[p])", : [failed] "+r"(failed) : [p] "r"(p), [v] "r"(v));
		break;
	case WIDTH_U16:
		FAULT_FIXUP("movw %w[v], (%[p])", : [failed] "+r"(failed) : [p] "r"(p), [v] "r"(v));
		break;
	case WIDTH_U32:
		FAULT_FIXUP("movl %k[v], (%[p])", : [failed] "+r"(failed) : [p] "r"(p), [v] "r"(v));
		break;
	case WIDTH_U64:
		FAULT_FIXUP("movq %q[v], (%[p])", : [failed] "+r"(failed) : [p] "r"(p), [v] "r"(v));
		break;
	}
	if (__builtin_expect(failed, 0)) {
		*addr = fault_fixup_addr();
		return FAULT_HIT;
	}
	return 0;
}

#define FAULT_RMW_INSN(insn, sfx, mod)						\
	FAULT_FIXUP(insn sfx " %" mod "[v], (%[p])",				\
		    : [v] "+r"(v), [failed] "+r"(failed) : [p] "r"(p))
#define FAULT_CMPXCHG_INSN(sfx, mod)						\
	FAULT_FIXUP("lock cmpxchg" sfx " %" mod "[d], (%[p])",			\
		    : "+a"(v), [failed] "+r"(failed) : [p] "r"(p), [d] "r"(b))
/* @sfx: the instruction's size suffix, @mod: the operand modifier naming
 * the register of that size */
#define FAULT_RMW_WIDTH(sfx, mod)						\
	do {									\
		if (op == FAULT_XADD)						\
			FAULT_RMW_INSN("lock xadd", sfx, mod);			\
		else if (op == FAULT_XCHG)	/* implicitly locked */		\
			FAULT_RMW_INSN("xchg", sfx, mod);			\
		else								\
			FAULT_CMPXCHG_INSN(sfx, mod);				\
	} while (0)

/* @a and @b fit @width.  0 with *old, or FAULT_HIT with *addr. */
static inline int
fault_rmw(void *p, enum width width, enum fault_rmw op, uint64_t a, uint64_t b,
	  uint64_t *old, const char **addr)
{
	uint64_t v = a;
	int failed = 0;

	switch (width) {
	case WIDTH_U8:
		FAULT_RMW_WIDTH("b", "b");
		v &= 0xff;
		break;
	case WIDTH_U16:
		FAULT_RMW_WIDTH("w", "w");
		v &= 0xffff;
		break;
	case WIDTH_U32:
		FAULT_RMW_WIDTH("l", "k");
		v &= 0xffffffff;
		break;
	case WIDTH_U64:
		FAULT_RMW_WIDTH("q", "q");
		break;
	}
	if (__builtin_expect(failed, 0)) {
		*addr = fault_fixup_addr();
		return FAULT_HIT;
	}
	*old = v;
	return 0;
}
#else
int fault_load(const void *p, enum width width, uint64_t *out, const char **addr);
int fault_store(void *p, enum width width, uint64_t v, const char **addr);
int fault_rmw(void *p, enum width width, enum fault_rmw op, uint64_t a, uint64_t b,
	      uint64_t *old, const char **addr);
#endif

#endif
