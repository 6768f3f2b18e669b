/*
 * The bulk-copy anchor: plain memcpy into a MAP_SHARED mapping of a file
 * (the same kind of pages pymmapdev copies into), timed in C so no call
 * overhead is charged to it.  Built by bench/run.py with the system cc.
 *
 *	memcpy PATH REPEATS SIZE...
 *
 * PATH is a scratch file (created, grown, removed).  Prints one JSON
 * object: {"SIZE": bytes_per_second, ...}, the best of REPEATS timings
 * (bench/run.py runs it once per repeat of its own measurements, so the
 * anchor and pymmapdev are timed interleaved).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "anchor.h"

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int
main(int argc, char **argv)
{
	size_t max = 0, off = 8u << 20;
	char *dst, *src;
	int fd, a, repeats;

	if (argc < 4) {
		fprintf(stderr, "usage: %s PATH REPEATS SIZE...\n", argv[0]);
		return 2;
	}
	repeats = atoi(argv[2]);
	for (a = 3; a < argc; a++)
		if ((size_t)atoll(argv[a]) > max)
			max = (size_t)atoll(argv[a]);
	fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || ftruncate(fd, (off_t)(off + max)) < 0)
		die(argv[1]);
	unlink(argv[1]);
	dst = mmap(NULL, off + max, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	src = malloc(max);
	if (dst == MAP_FAILED || src == NULL)
		die("alloc");
	for (size_t i = 0; i < max; i++)
		src[i] = (char)(i * 131);
	printf("{");
	for (a = 3; a < argc; a++) {
		size_t n = (size_t)atoll(argv[a]);
		long loops = 1, r, i;
		double t0, best = 1e30;

		memcpy(dst + off, src, n);		/* fault the pages in */
		for (;;) {
			t0 = now();
			for (i = 0; i < loops; i++) {
				memcpy(dst + off, src, n);
				__asm__ __volatile__("" ::: "memory");
			}
			if (now() - t0 >= 0.02)
				break;
			loops *= 2;
		}
		for (r = 0; r < repeats; r++) {
			double per;

			t0 = now();
			for (i = 0; i < loops; i++) {
				memcpy(dst + off, src, n);
				__asm__ __volatile__("" ::: "memory");
			}
			per = (now() - t0) / (double)loops;
			if (per < best)
				best = per;
		}
		printf("%s\"%zu\": %.0f", a > 3 ? ", " : "", n, (double)n / best);
	}
	printf("}\n");
	return 0;
}
