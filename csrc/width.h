/*
 * Access widths, listed once.  Typed access (access.c) exists for every
 * width of FOR_EACH_WIDTH, atomics (atomic.c) for every width of
 * FOR_EACH_ATOMIC_WIDTH.  To add a width: add it to the list(s) and to
 * enum width; every switch over enum width has no default, so the compiler
 * (-Wswitch, an error here) names each place that must learn it.
 */
#ifndef PYMMAPDEV_WIDTH_H
#define PYMMAPDEV_WIDTH_H

#include <stdint.h>

#define FOR_EACH_WIDTH(X)	X(8) X(16) X(32) X(64)
#define FOR_EACH_ATOMIC_WIDTH(X) X(32) X(64)

/* The value is the width in bytes. */
enum width {
	WIDTH_U8 = 1,
	WIDTH_U16 = 2,
	WIDTH_U32 = 4,
	WIDTH_U64 = 8,
};

#define WIDTH_OF_BITS(bits)	((enum width)((bits) / 8))

#endif
