/*
 * SIGBUS as an exception.  A page of a file mapping whose file was truncated
 * under us raises SIGBUS on access; the package's own accesses run inside a
 * guard so the handler can siglongjmp back and we raise MappingFault instead
 * of dying.  Faults outside a guard (numpy, memoryview, other libraries) are
 * passed on to whatever handler was installed before ours.
 *
 * Use (sigsetjmp must be called in the frame that stays live):
 *
 *	struct fault_guard guard;
 *	fault_guard_enter(&guard, self->data, self->size);
 *	if (sigsetjmp(guard.env, 0))
 *		return mapping_raise_fault(self, guard.fault_addr - self->data);
 *	... touch the mapping ...
 *	fault_guard_leave(&guard);
 *
 * Between enter and leave: no Python API calls and no locals that are
 * modified after sigsetjmp and read after a fault (they may be clobbered).
 */
#ifndef PYMMAPDEV_FAULT_H
#define PYMMAPDEV_FAULT_H

#include <setjmp.h>
#include <stddef.h>

struct fault_guard {
	sigjmp_buf env;
	const char *base;
	size_t len;
	const char *fault_addr;		/* set by the handler before the jump */
	struct fault_guard *prev;	/* guards nest (e.g. copy between mappings) */
};

void fault_guard_enter(struct fault_guard *guard, const char *base, size_t len);
void fault_guard_leave(struct fault_guard *guard);

/* Installs (or re-installs on top of a newer handler) the SIGBUS handler. */
int fault_handler_install(void);

#endif
