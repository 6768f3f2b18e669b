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

#endif
