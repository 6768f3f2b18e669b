/*
 * The ceiling for the channel figures: a single-producer single-consumer
 * ring of length-prefixed records in a MAP_SHARED mapping, two processes,
 * futex sleep when empty/full after SPIN polls, and a wake only when the
 * other side announced it sleeps.  Built by bench/transports/cring.py.
 *
 *	ring tput|zc SIZE COUNT SPIN CPU_P CPU_C    one way, COUNT records of SIZE bytes
 *	ring rtt SIZE ROUNDS SPIN CPU_A CPU_B      round trips over two rings
 *
 * tput copies each record in (memcpy from a private buffer) and out (into
 * one), as send()/recv() of bytes do; zc writes and checks only a stamp at
 * both ends of the record (reserve/recv_view).  Prints one JSON object:
 * msgs_per_s and bytes_per_s, or round-trip p50/p99/mean in nanoseconds.
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

#define CAP (8u << 20)			/* ring bytes: several 1 MiB frames in flight */
#define WRAP 0xffffffffu		/* record length meaning "continue at offset 0" */
#define WARM_FRACTION 10

/*
 * Each index and each "I sleep" flag has a cache line of its own: the flags
 * change only around a sleep, so the other side's check of them stays a hit.
 * The futex word is the flag itself: the waker takes it down (1 -> 0) and
 * wakes, so a sleep costs one FUTEX_WAKE, and a sleeper whose flag was taken
 * before it got into the kernel does not sleep (FUTEX_WAIT expects 1).
 */
struct ring {
	_Alignas(64) uint64_t tail;		/* producer: bytes published */
	_Alignas(64) uint64_t head;		/* consumer: bytes consumed */
	_Alignas(64) uint32_t prod_sleeping;
	_Alignas(64) uint32_t cons_sleeping;
	_Alignas(64) unsigned char data[CAP];
};

static long spin;

/*
 * Futex traffic, counted for the JSON line (the child hands its counts over
 * in *child_calls): a fair ceiling makes at most one wake per announced sleep.
 */
struct calls {
	long announced, wakes;
};
static struct calls calls, *child_calls;

/*
 * What each side last saw of the other's index: the fast path reads only its
 * own cache line, and touches the peer's only when the cached value says
 * "full" or "empty" (the usual SPSC-ring trick).
 */
static uint64_t head_seen[2], tail_seen[2];

/*
 * The consumer publishes its head lazily (every LAZY bytes), unless the
 * producer sleeps for space, and always before it sleeps itself: so a
 * producer waiting for space is never left waiting on a head that is not
 * published while the consumer waits for data.
 */
#define LAZY (CAP / 8)
static uint64_t head_local[2];

/*
 * Waits until ok(r, arg) holds.  Spins first; then announces itself in
 * *sleeping and re-checks before sleeping: the other side stores its index
 * and then reads the flag (both seq_cst), so either it sees the flag and
 * takes it (waking us, or keeping us from sleeping), or we see its store.
 */
static void
await(struct ring *r, uint32_t *sleeping, int (*ok)(struct ring *, uint64_t), uint64_t arg)
{
	long i;

	for (i = 0; i < spin; i++) {
		if (ok(r, arg))
			return;
		__builtin_ia32_pause();
	}
	while (!ok(r, arg)) {
		__atomic_store_n(sleeping, 1, __ATOMIC_SEQ_CST);
		calls.announced++;
		if (!ok(r, arg) &&
		    syscall(SYS_futex, sleeping, FUTEX_WAIT, 1, NULL, NULL, 0) < 0 &&
		    errno != EAGAIN && errno != EINTR)
			die("futex wait");
		__atomic_store_n(sleeping, 0, __ATOMIC_RELAXED);
	}
}

/*
 * Stores the index, and wakes the peer if it announced a sleep.  The waker
 * takes the flag down: a woken side needs tens of microseconds to run
 * again, and while its flag stayed up every publish made another
 * FUTEX_WAKE syscall, hundreds per sleep.
 */
static void
publish(uint64_t *index, uint64_t value, uint32_t *peer_sleeping)
{
	__atomic_store_n(index, value, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(peer_sleeping, __ATOMIC_SEQ_CST) &&
	    __atomic_exchange_n(peer_sleeping, 0, __ATOMIC_SEQ_CST) && ++calls.wakes &&
	    syscall(SYS_futex, peer_sleeping, FUTEX_WAKE, 1, NULL, NULL, 0) < 0)
		die("futex wake");
}

static int
has_space(struct ring *r, uint64_t need)
{
	return CAP - (r->tail - __atomic_load_n(&r->head, __ATOMIC_ACQUIRE)) >= need;
}

static int
has_data(struct ring *r, uint64_t head)
{
	return __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE) != head;
}

static uint64_t
padded(uint32_t len)
{
	return 8 + (((uint64_t)len + 7) & ~(uint64_t)7);
}

/* Copies len bytes from src into the ring (src NULL: stamp both ends with seq). */
static void
put(struct ring *r, int which, const void *src, uint32_t len, uint64_t seq)
{
	uint64_t tail = r->tail, need = padded(len);
	uint64_t pos = tail % CAP, contig = CAP - pos;
	uint64_t total = need + (contig < need ? contig : 0);
	unsigned char *rec;

	if (CAP - (tail - head_seen[which]) < total) {
		await(r, &r->prod_sleeping, has_space, total);
		head_seen[which] = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
	}
	if (contig < need) {
		memcpy(r->data + pos, &(uint32_t){ WRAP }, 4);
		tail += contig;
		pos = 0;
	}
	rec = r->data + pos;
	memcpy(rec, &len, 4);
	if (src)
		memcpy(rec + 8, src, len);
	else {
		memcpy(rec + 8, &seq, 8);
		memcpy(rec + 8 + len - 8, &seq, 8);
	}
	publish(&r->tail, tail + need, &r->cons_sleeping);
}

/* The next record into dst (dst NULL: only its stamps are read); returns its stamp. */
static uint64_t
get(struct ring *r, int which, void *dst)
{
	uint64_t head = head_local[which], a, b;
	uint32_t len;
	unsigned char *rec;

	for (;;) {
		if (tail_seen[which] == head) {
			if (r->head != head)
				publish(&r->head, head, &r->prod_sleeping);
			await(r, &r->cons_sleeping, has_data, head);
			tail_seen[which] = __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE);
		}
		memcpy(&len, r->data + head % CAP, 4);
		if (len != WRAP)
			break;
		head += CAP - head % CAP;
	}
	rec = r->data + head % CAP + 8;
	if (dst) {
		memcpy(dst, rec, len);
		rec = dst;
	}
	memcpy(&a, rec, 8);
	memcpy(&b, rec + len - 8, 8);
	if (a != b) {
		fprintf(stderr, "torn record: stamps %llu and %llu\n",
			(unsigned long long)a, (unsigned long long)b);
		exit(1);
	}
	head_local[which] = head += padded(len);
	if (head - r->head >= LAZY || __atomic_load_n(&r->prod_sleeping, __ATOMIC_RELAXED))
		publish(&r->head, head, &r->prod_sleeping);
	return a;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void
stamp(unsigned char *buf, uint32_t len, uint64_t seq)
{
	memcpy(buf, &seq, 8);
	memcpy(buf + len - 8, &seq, 8);
}

int
main(int argc, char **argv)
{
	struct ring *rings;
	unsigned char *buf;
	long count, warm, i;
	uint32_t size;
	int zc, rtt, status;
	pid_t parent, child;

	if (argc != 7) {
		fprintf(stderr, "usage: %s tput|zc|rtt SIZE COUNT SPIN CPU_A CPU_B\n", argv[0]);
		return 2;
	}
	zc = strcmp(argv[1], "zc") == 0;
	rtt = strcmp(argv[1], "rtt") == 0;
	size = (uint32_t)atol(argv[2]);
	count = atol(argv[3]);
	spin = atol(argv[4]);
	warm = count / WARM_FRACTION;
	if (size < 16 || size > CAP / 4 || count < 1) {
		fprintf(stderr, "SIZE must be 16..%u, COUNT >= 1\n", CAP / 4);
		return 2;
	}
	rings = mmap(NULL, 2 * sizeof(*rings), PROT_READ | PROT_WRITE,
		     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	child_calls = mmap(NULL, sizeof(*child_calls), PROT_READ | PROT_WRITE,
			   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	buf = malloc(size);
	if (rings == MAP_FAILED || child_calls == MAP_FAILED || buf == NULL)
		die("alloc");
	memset(buf, 0x5a, size);

	parent = getpid();
	child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {		/* producer, or the echoing side */
		die_with_parent(parent);
		pin(atoi(argv[6]));
		for (i = 0; i < warm + count; i++) {
			if (rtt) {
				get(&rings[0], 0, buf);
				put(&rings[1], 1, buf, size, 0);
			} else {
				if (!zc)
					stamp(buf, size, (uint64_t)i);
				put(&rings[0], 0, zc ? NULL : buf, size, (uint64_t)i);
			}
		}
		*child_calls = calls;
		_exit(0);
	}
	pin(atoi(argv[5]));
	if (rtt) {
		uint64_t *gaps = calloc((size_t)count, sizeof(*gaps)), t, prev = 0, sum = 0;

		if (gaps == NULL)
			die("alloc");
		/* One clock read per round, as the Python side does. */
		for (i = 0; i < warm + count; i++) {
			t = now_ns();
			if (i > warm)
				gaps[i - warm - 1] = t - prev;
			prev = t;
			stamp(buf, size, (uint64_t)i);
			put(&rings[0], 0, buf, size, 0);
			if (get(&rings[1], 1, buf) != (uint64_t)i)
				die("round trip out of order");
		}
		gaps[count - 1] = now_ns() - prev;
		for (i = 0; i < count; i++)
			sum += gaps[i];
		qsort(gaps, (size_t)count, sizeof(*gaps), cmp_u64);
		printf("{\"p50_ns\": %llu, \"p99_ns\": %llu, \"mean_ns\": %.1f, \"rounds\": %ld",
		       (unsigned long long)gaps[count / 2],
		       (unsigned long long)gaps[count * 99 / 100], (double)sum / (double)count,
		       count);
	} else {
		uint64_t t0 = 0;
		double secs;

		for (i = 0; i < warm + count; i++) {
			if (i == warm)
				t0 = now_ns();
			if (get(&rings[0], 0, zc ? NULL : buf) != (uint64_t)i)
				die("record out of order");
		}
		secs = (double)(now_ns() - t0) * 1e-9;
		printf("{\"msgs_per_s\": %.1f, \"bytes_per_s\": %.1f", (double)count / secs,
		       (double)count * size / secs);
	}
	if (waitpid(child, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
		die("child");
	printf(", \"sleeps_announced\": %ld, \"futex_wakes\": %ld}\n",
	       calls.announced + child_calls->announced, calls.wakes + child_calls->wakes);
	return 0;
}
