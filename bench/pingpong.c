/*
 * The physical limit for the ping-pong figures: two processes bounce a u32
 * in MAP_SHARED memory, by spinning or by shared futex wait/wake, with no
 * Python in the way.  Built by bench/run.py with the system cc.
 *
 *	pingpong spin|futex ROUNDS PARENT_CPU CHILD_CPU
 *
 * Prints one JSON object: round-trip p50/p99/mean in nanoseconds.
 * CPU -1 leaves a process unpinned.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "anchor.h"

static int use_futex;

/* Waits until *word == want. */
static void
await_value(uint32_t *word, uint32_t want)
{
	uint32_t cur;

	while ((cur = __atomic_load_n(word, __ATOMIC_ACQUIRE)) != want) {
		if (!use_futex) {
			__builtin_ia32_pause();
			continue;
		}
		if (syscall(SYS_futex, word, FUTEX_WAIT, cur, NULL, NULL, 0) < 0 &&
		    errno != EAGAIN && errno != EINTR)
			die("futex wait");
	}
}

static void
post(uint32_t *word, uint32_t value)
{
	__atomic_store_n(word, value, __ATOMIC_RELEASE);
	if (use_futex && syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0) < 0)
		die("futex wake");
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
	uint32_t *word;
	uint64_t *rtt, sum = 0, t, prev = 0;
	long rounds, i, warm;
	pid_t parent, child;
	int status;

	if (argc != 5) {
		fprintf(stderr, "usage: %s spin|futex ROUNDS PARENT_CPU CHILD_CPU\n", argv[0]);
		return 2;
	}
	use_futex = strcmp(argv[1], "futex") == 0;
	rounds = atol(argv[2]);
	warm = rounds / 10;
	rtt = calloc((size_t)rounds, sizeof(*rtt));
	word = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (rtt == NULL || word == MAP_FAILED)
		die("alloc");

	parent = getpid();
	child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		die_with_parent(parent);
		pin(atoi(argv[4]));
		for (i = 0; i < warm + rounds; i++) {
			await_value(word, 2 * (uint32_t)i + 1);
			post(word, 2 * (uint32_t)i + 2);
		}
		_exit(0);
	}
	pin(atoi(argv[3]));
	/* One clock read per round, as bench/run.py does: a round trip is the
	 * time between the starts of consecutive rounds. */
	for (i = 0; i < warm + rounds; i++) {
		t = now_ns();
		if (i > warm)
			rtt[i - warm - 1] = t - prev;
		prev = t;
		post(word, 2 * (uint32_t)i + 1);
		await_value(word, 2 * (uint32_t)i + 2);
	}
	rtt[rounds - 1] = now_ns() - prev;
	if (waitpid(child, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
		die("child");
	for (i = 0; i < rounds; i++)
		sum += rtt[i];
	qsort(rtt, (size_t)rounds, sizeof(*rtt), cmp_u64);
	printf("{\"p50_ns\": %llu, \"p99_ns\": %llu, \"mean_ns\": %.1f, \"rounds\": %ld}\n",
	       (unsigned long long)rtt[rounds / 2],
	       (unsigned long long)rtt[rounds * 99 / 100],
	       (double)sum / (double)rounds, rounds);
	return 0;
}
