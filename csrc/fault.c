/*
 * The SIGBUS guard (see fault.h for why and how to use it).
 *
 * The handler is async-signal-safe: it reads a thread-local pointer (static
 * TLS, so reading it never allocates), compares addresses and either
 * siglongjmps into the guarded frame or hands the signal on.
 */
#include "fault.h"

#include <errno.h>
#include <signal.h>
#include <string.h>

static __thread struct fault_guard *current_guard
	__attribute__((tls_model("initial-exec")));

static struct sigaction previous_action;

/* Set while the previous handler runs: see the end of sigbus_handler. */
static volatile sig_atomic_t chaining;

void
fault_guard_enter(struct fault_guard *guard, const char *base, size_t len)
{
	guard->base = base;
	guard->len = len;
	guard->fault_addr = NULL;
	guard->prev = current_guard;
	current_guard = guard;
}

void
fault_guard_leave(struct fault_guard *guard)
{
	current_guard = guard->prev;
}

static void
sigbus_handler(int signo, siginfo_t *info, void *ucontext)
{
	const char *addr = info->si_addr;

	for (struct fault_guard *guard = current_guard; guard; guard = guard->prev) {
		if (addr >= guard->base && addr < guard->base + guard->len) {
			current_guard = guard->prev;
			guard->fault_addr = addr;
			siglongjmp(guard->env, 1);
		}
	}

	/*
	 * Not ours.  A handler that dies by restoring its own predecessor and
	 * re-raising (faulthandler does) may restore *us* if it was installed
	 * after us; the re-raise then lands here while we are still chaining,
	 * and must take the default action instead of going round again.
	 */
	if (chaining) {
		signal(SIGBUS, SIG_DFL);
		raise(SIGBUS);
		return;
	}
	if (previous_action.sa_flags & SA_SIGINFO) {
		chaining = 1;
		previous_action.sa_sigaction(signo, info, ucontext);
		chaining = 0;
	} else if (previous_action.sa_handler != SIG_DFL &&
		   previous_action.sa_handler != SIG_IGN) {
		chaining = 1;
		previous_action.sa_handler(signo);
		chaining = 0;
	} else {
		/* Restore the default and return: a faulting instruction runs
		 * again and the kernel delivers a fatal SIGBUS (a forced fault
		 * signal cannot be ignored); a kill() has to be re-sent. */
		sigaction(SIGBUS, &previous_action, NULL);
		if (info->si_code <= 0 && previous_action.sa_handler == SIG_DFL)
			raise(SIGBUS);
	}
}

int
fault_handler_install(void)
{
	struct sigaction current, ours;

	if (sigaction(SIGBUS, NULL, &current) < 0)
		return -1;
	if ((current.sa_flags & SA_SIGINFO) && current.sa_sigaction == sigbus_handler)
		return 0;

	memset(&ours, 0, sizeof(ours));
	ours.sa_sigaction = sigbus_handler;
	/* SA_NODEFER: we leave the handler by siglongjmp to a sigsetjmp(env, 0)
	 * that does not restore the mask, so SIGBUS must not stay blocked. */
	ours.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
	sigemptyset(&ours.sa_mask);
	previous_action = current;
	return sigaction(SIGBUS, &ours, NULL);
}
