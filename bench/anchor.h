/*
 * What the C anchors of the bench (pingpong.c, ring.c, memcpy.c) share:
 * dying with the failed call's name, CPU pinning and the clock.  Each
 * anchor is one file plus this header, built by bench/env.py.
 */
#ifndef BENCH_ANCHOR_H
#define BENCH_ANCHOR_H

#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static inline void
die(const char *what)
{
	perror(what);
	exit(1);
}

/* Pins the calling process to @cpu; -1 leaves it unpinned. */
static inline void
pin(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0)
		die("sched_setaffinity");
}

static inline uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif
