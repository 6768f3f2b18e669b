/*
 * What the C anchors of the bench (pingpong.c, ring.c, memcpy.c) share:
 * dying with the failed call's name, a forked side dying with its parent,
 * CPU pinning and the clock.  Each anchor is one file plus this header,
 * built by bench/env.py.
 */
#ifndef BENCH_ANCHOR_H
#define BENCH_ANCHOR_H

#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

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

/*
 * First call of a forked side: dies with @parent.  The bench runs an anchor
 * under a deadline (subprocess.run(timeout=)), and a Ctrl-C goes through
 * the same kill: both end only the process the bench started, and a side
 * left behind would spin on its CPU, or sleep, for good.  getppid() covers
 * a parent that died before the prctl.
 */
static inline void
die_with_parent(pid_t parent)
{
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		die("prctl");
	if (getppid() != parent)
		_exit(1);
}

static inline uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif
