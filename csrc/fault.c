/*
 * The SIGBUS guard (fault.h says why and how to use it).
 *
 * Guards nest per thread in a linked list headed by a thread-local pointer
 * (initial-exec TLS: reading it in the handler never allocates).  The
 * handler is async-signal-safe: it compares addresses and either
 * siglongjmps into the guarded frame or hands the signal on.
 */
#define _GNU_SOURCE		/* REG_RIP */
#include "fault.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <string.h>
#include <ucontext.h>

/* Copies at least this long re-arm the handler first: one sigaction call
 * is noise next to them, and a short access cannot afford it. */
#define REARM_COPY_LEN	(64 * 1024)

struct fault_guard {
	sigjmp_buf env;
	const struct fault_span *spans;
	int nspans;
	/* set by the handler, then read after the siglongjmp: an object
	 * changed between sigsetjmp and siglongjmp must be volatile (C11
	 * 7.13.2.1), or its value after the jump is indeterminate */
	const char *volatile fault_addr;
	struct fault_guard *prev;
};

static __thread struct fault_guard *current_guard
	__attribute__((tls_model("initial-exec")));

/*
 * The handlers we displaced, oldest first: each re-arm pushes the one it
 * found on top of ours, and faults not ours go to the last.  One that is
 * uninstalled later must leave the chain again (faulthandler.disable()
 * puts back what enable() found, which was us, and its handler then does
 * nothing: a fault we handed it would recur forever), and we chain to the
 * one below it (fault_rearm_over()).  A chain is edited as a copy, under
 * rearm_lock, in the buffer the handler is not reading, then published by
 * one pointer store, so the handler never sees a half-written sigaction.
 * A zeroed action is SIG_DFL.
 */
#define CHAIN_MAX	8

struct chain {
	int depth;		/* 1 .. CHAIN_MAX */
	struct sigaction displaced[CHAIN_MAX];
};

static struct chain chains[2] = {{.depth = 1}, {.depth = 1}};
static struct chain *chain_in_use = &chains[0];
static const struct sigaction *volatile previous_action = &chains[0].displaced[0];
static pthread_mutex_t rearm_lock = PTHREAD_MUTEX_INITIALIZER;

/*
 * Set while this thread runs the previous handler: see the end of
 * sigbus_handler.  Per thread: a fault of another thread meanwhile is its
 * own.  It stays set when that handler leaves by siglongjmp (a fault guard
 * of another library), so it is believed only of what a handler can send
 * itself, a raise(); a fault the kernel reports is chained every time.
 */
static __thread volatile sig_atomic_t chaining __attribute__((tls_model("initial-exec")));

static int
in_span(const struct fault_guard *guard, const char *addr)
{
	for (int i = 0; i < guard->nspans; i++) {
		const char *lo = guard->spans[i].lo;

		if (addr >= lo && addr < lo + guard->spans[i].len)
			return 1;
	}
	return 0;
}

#ifdef FAULT_HAVE_FIXUPS
/* fault.h's FAULT_FIXUP entries; the linker bounds the section. */
struct fixup {
	uintptr_t insn, resume;
};
extern const struct fixup __start_pymmapdev_fixups[] __attribute__((visibility("hidden")));
extern const struct fixup __stop_pymmapdev_fixups[] __attribute__((visibility("hidden")));

static __thread const char *fixup_addr __attribute__((tls_model("initial-exec")));

const char *
fault_fixup_addr(void)
{
	return fixup_addr;
}

/* Resumes a faulting fixup instruction at its stub; 1 if it was one. */
static int
fixed_up(const char *addr, void *ucontext)
{
	ucontext_t *uc = ucontext;
	uintptr_t ip = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];

	for (const struct fixup *f = __start_pymmapdev_fixups; f < __stop_pymmapdev_fixups; f++) {
		if (f->insn == ip) {
			fixup_addr = addr;
			uc->uc_mcontext.gregs[REG_RIP] = (greg_t)f->resume;
			return 1;
		}
	}
	return 0;
}
#else
struct word_access {
	void *p;
	enum width width;
	uint64_t value;
};

static int
load_body(void *arg)
{
	struct word_access *w = arg;

	switch (w->width) {
	case WIDTH_U8: w->value = *(const volatile uint8_t *)w->p; break;
	case WIDTH_U16: w->value = *(const volatile uint16_t *)w->p; break;
	case WIDTH_U32: w->value = *(const volatile uint32_t *)w->p; break;
	case WIDTH_U64: w->value = *(const volatile uint64_t *)w->p; break;
	}
	return 0;
}

static int
store_body(void *arg)
{
	struct word_access *w = arg;

	switch (w->width) {
	case WIDTH_U8: *(volatile uint8_t *)w->p = (uint8_t)w->value; break;
	case WIDTH_U16: *(volatile uint16_t *)w->p = (uint16_t)w->value; break;
	case WIDTH_U32: *(volatile uint32_t *)w->p = (uint32_t)w->value; break;
	case WIDTH_U64: *(volatile uint64_t *)w->p = w->value; break;
	}
	return 0;
}

int
fault_load(const void *p, enum width width, uint64_t *out, const char **addr)
{
	struct word_access w = {(void *)p, width, 0};
	struct fault_span span = {p, width};

	if (fault_run(load_body, &w, &span, 1, addr) == FAULT_HIT)
		return FAULT_HIT;
	*out = w.value;
	return 0;
}

int
fault_store(void *p, enum width width, uint64_t v, const char **addr)
{
	struct word_access w = {p, width, v};
	struct fault_span span = {p, width};

	return fault_run(store_body, &w, &span, 1, addr);
}

struct rmw_access {
	void *p;
	enum width width;
	enum fault_rmw op;
	uint64_t a, b, old;
};

/* GCC's __atomic builtins are type-generic: one body per width. */
#define RMW_OP(type, r)								\
	do {									\
		type *w = (r)->p, old = (type)(r)->a;				\
		switch ((r)->op) {						\
		case FAULT_XADD:	/* unsigned: wraps modulo 2^bits */	\
			old = __atomic_fetch_add(w, old, __ATOMIC_SEQ_CST);	\
			break;							\
		case FAULT_XCHG:						\
			old = __atomic_exchange_n(w, old, __ATOMIC_SEQ_CST);	\
			break;							\
		case FAULT_CMPXCHG:	/* on failure @old receives the word */	\
			(void)__atomic_compare_exchange_n(w, &old, (type)(r)->b, 0, \
							  __ATOMIC_SEQ_CST,	\
							  __ATOMIC_SEQ_CST);	\
			break;							\
		}								\
		(r)->old = old;							\
	} while (0)

static int
rmw_body(void *arg)
{
	struct rmw_access *r = arg;

	switch (r->width) {
	case WIDTH_U8:
		RMW_OP(uint8_t, r);
		break;
	case WIDTH_U16:
		RMW_OP(uint16_t, r);
		break;
	case WIDTH_U32:
		RMW_OP(uint32_t, r);
		break;
	case WIDTH_U64:
		RMW_OP(uint64_t, r);
		break;
	}
	return 0;
}

int
fault_rmw(void *p, enum width width, enum fault_rmw op, uint64_t a, uint64_t b,
	  uint64_t *old, const char **addr)
{
	struct rmw_access r = {p, width, op, a, b, 0};
	struct fault_span span = {p, width};

	if (fault_run(rmw_body, &r, &span, 1, addr) == FAULT_HIT)
		return FAULT_HIT;
	*old = r.old;
	return 0;
}
#endif

static void
sigbus_handler(int signo, siginfo_t *info, void *ucontext)
{
	const char *addr = info->si_addr;
	const struct sigaction *previous;

	/*
	 * Only the kernel reports a fault (si_code > 0).  A SIGBUS sent by a
	 * process (kill: SI_USER; sigqueue: negative codes) carries an
	 * si_addr of the sender's choosing, or none: one that arrives in the
	 * middle of a guarded access is the program's business, not a fault
	 * of that access.
	 */
	if (info->si_code > 0) {
#ifdef FAULT_HAVE_FIXUPS
		if (fixed_up(addr, ucontext))
			return;
#endif
		for (struct fault_guard *guard = current_guard; guard; guard = guard->prev) {
			if (in_span(guard, addr)) {
				current_guard = guard->prev;
				guard->fault_addr = addr;
				siglongjmp(guard->env, 1);
			}
		}
	}

	/*
	 * Not ours.  A handler that dies by restoring its own predecessor and
	 * re-raising (faulthandler does) may restore *us* if it was installed
	 * after us; the re-raise (raise(): si_code <= 0) then lands here while
	 * we are still chaining, and must take the default action instead of
	 * going round again.
	 */
	if (chaining && info->si_code <= 0) {
		signal(SIGBUS, SIG_DFL);
		raise(SIGBUS);
		return;
	}
	previous = previous_action;
	/* SIG_DFL and SIG_IGN mean what they mean whatever sa_flags says
	 * (the kernel ignores SA_SIGINFO for them; sa_handler and
	 * sa_sigaction share their bits): they are never called. */
	if (previous->sa_handler == SIG_IGN && info->si_code <= 0) {
		/* A kill() the program ignores: ignore it, and stay installed
		 * (putting SIG_IGN back would leave every later guarded access
		 * unguarded until the next re-arm: a truncated page would then
		 * kill the process). */
		return;
	}
	if (previous->sa_handler == SIG_DFL || previous->sa_handler == SIG_IGN) {
		/* Restore it and return: a faulting instruction runs again and
		 * the kernel delivers a fatal SIGBUS (a forced fault signal
		 * cannot be ignored); a kill() has to be re-sent. */
		sigaction(SIGBUS, previous, NULL);
		if (info->si_code <= 0)		/* SIG_DFL here */
			raise(SIGBUS);
		return;
	}
	chaining = 1;
	if (previous->sa_flags & SA_SIGINFO)
		previous->sa_sigaction(signo, info, ucontext);
	else
		previous->sa_handler(signo);
	chaining = 0;
}

static int
is_ours(const struct sigaction *action)
{
	return (action->sa_flags & SA_SIGINFO) && action->sa_sigaction == sigbus_handler;
}

/* The function an action calls, or 0 for SIG_DFL and SIG_IGN. */
static uintptr_t
handler_address(const struct sigaction *action)
{
	uintptr_t address = (action->sa_flags & SA_SIGINFO) ? (uintptr_t)action->sa_sigaction
							    : (uintptr_t)action->sa_handler;

	return action->sa_handler == SIG_DFL || action->sa_handler == SIG_IGN ? 0 : address;
}

/* A copy of the chain in use, to edit and then publish.  Under rearm_lock. */
static struct chain *
chain_copy(void)
{
	struct chain *copy = chain_in_use == &chains[0] ? &chains[1] : &chains[0];

	*copy = *chain_in_use;
	return copy;
}

static void
chain_publish(struct chain *chain)
{
	chain_in_use = chain;
	previous_action = &chain->displaced[chain->depth - 1];
}

static void
chain_push(struct chain *chain, const struct sigaction *action)
{
	struct sigaction *top = &chain->displaced[chain->depth - 1];

	if (top->sa_handler == action->sa_handler && top->sa_flags == action->sa_flags) {
		*top = *action;		/* the same again (signal.signal() in a loop) */
		return;
	}
	if (chain->depth == CHAIN_MAX) {	/* the oldest goes: buried deepest */
		memmove(&chain->displaced[0], &chain->displaced[1],
			sizeof(chain->displaced[0]) * (CHAIN_MAX - 1));
		chain->depth--;
	}
	chain->displaced[chain->depth++] = *action;
}

/* Drops every action that calls @gone; an empty chain is SIG_DFL. */
static void
chain_drop(struct chain *chain, uintptr_t gone)
{
	int kept = 0;

	for (int i = 0; i < chain->depth; i++)
		if (handler_address(&chain->displaced[i]) != gone)
			chain->displaced[kept++] = chain->displaced[i];
	if (kept == 0)
		memset(&chain->displaced[kept++], 0, sizeof(chain->displaced[0]));
	chain->depth = kept;
}

int
fault_rearm(void)
{
	return fault_rearm_over(0, NULL);
}

int
fault_rearm_over(uintptr_t gone, uintptr_t *displaced)
{
	struct sigaction current, ours;
	struct chain *chain;
	int rc = 0;

	if (displaced != NULL)
		*displaced = 0;
	if (sigaction(SIGBUS, NULL, &current) < 0)
		return -1;
	if (gone == 0 && is_ours(&current))
		return 0;

	memset(&ours, 0, sizeof(ours));
	ours.sa_sigaction = sigbus_handler;
	/* SA_NODEFER: we leave the handler by siglongjmp to a sigsetjmp(env, 0)
	 * that does not restore the mask, so SIGBUS must not stay blocked. */
	ours.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
	sigemptyset(&ours.sa_mask);

	pthread_mutex_lock(&rearm_lock);
	/* Re-read under the lock: another thread may have re-armed already. */
	rc = sigaction(SIGBUS, NULL, &current);
	if (rc == 0 && (gone != 0 || !is_ours(&current))) {
		chain = chain_copy();
		if (gone != 0)
			chain_drop(chain, gone);
		if (!is_ours(&current)) {
			chain_push(chain, &current);
			if (displaced != NULL)
				*displaced = handler_address(&current);
		}
		chain_publish(chain);
		if (!is_ours(&current))
			rc = sigaction(SIGBUS, &ours, NULL);
	}
	pthread_mutex_unlock(&rearm_lock);
	return rc;
}

int
fault_run(int (*body)(void *arg), void *arg, const struct fault_span *spans,
	  int nspans, const char **addr)
{
	struct fault_guard guard;
	int rc;

	guard.spans = spans;
	guard.nspans = nspans;
	guard.fault_addr = NULL;
	guard.prev = current_guard;
	/* The compiler must not sink the list update below the setjmp or
	 * hoist the body above it: the handler reads current_guard. */
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	current_guard = &guard;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	if (sigsetjmp(guard.env, 0)) {
		/* The handler already unlinked the guard. */
		*addr = guard.fault_addr;
		return FAULT_HIT;
	}
	rc = body(arg);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	current_guard = guard.prev;
	return rc;
}

struct copy_args {
	void *dst;
	const void *src;
	size_t len;
};

static int
copy_body(void *arg)
{
	struct copy_args *c = arg;

	memmove(c->dst, c->src, c->len);
	return 0;
}

int
fault_copy(void *dst, const void *src, size_t len, const char **addr)
{
	struct copy_args c = {dst, src, len};
	struct fault_span spans[2] = {{dst, len}, {src, len}};

	if (len >= REARM_COPY_LEN)
		(void)fault_rearm();	/* best effort: the guard still works without */
	return fault_run(copy_body, &c, spans, 2, addr);
}

struct strided_args {
	char *dst;
	ptrdiff_t dst_step;
	const char *src;
	ptrdiff_t src_step;
	ptrdiff_t count;
};

static int
strided_body(void *arg)
{
	struct strided_args *c = arg;

	for (ptrdiff_t i = 0; i < c->count; i++)
		c->dst[i * c->dst_step] = c->src[i * c->src_step];
	return 0;
}

int
fault_strided_copy(char *dst, ptrdiff_t dst_step, const char *src,
		   ptrdiff_t src_step, ptrdiff_t count,
		   const struct fault_span *dst_span,
		   const struct fault_span *src_span, const char **addr)
{
	struct strided_args c = {dst, dst_step, src, src_step, count};
	struct fault_span spans[2] = {*dst_span, *src_span};

	return fault_run(strided_body, &c, spans, 2, addr);
}
