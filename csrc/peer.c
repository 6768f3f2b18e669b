/*
 * Thread identities and liveness (peer.h).
 *
 * Everything here runs without the GIL and without the Python API (the
 * blocking loop's poll() calls peer_check()), so /proc is read with plain
 * open/read/close into stack buffers.
 */
#define _GNU_SOURCE	/* statx */
#include "peer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static __thread uint64_t self_ident;
static uint64_t namespace_tag;

void
peer_after_fork(void)
{
	/* The forking thread lives on with a new tid and start time. */
	self_ident = 0;
	__atomic_store_n(&namespace_tag, 0, __ATOMIC_RELAXED);
}

/* Reads a small file into @buf (NUL-terminated); its length, or -1. */
static ssize_t
read_small(const char *path, char *buf, size_t size)
{
	ssize_t n;
	int fd;

	do
		fd = open(path, O_RDONLY | O_CLOEXEC);
	while (fd < 0 && errno == EINTR);
	if (fd < 0)
		return -1;
	do
		n = read(fd, buf, size - 1);
	while (n < 0 && errno == EINTR);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	return n;
}

/* include/linux/sched.h (0x4 from 2.6 to 7.x): set by exit_signals() at
 * the start of do_exit(), before the tid is released or the task turns
 * zombie; such a thread never returns to user space. */
#define TASK_PF_EXITING 0x00000004u

struct thread_stat {
	char state;			/* field 3 */
	unsigned int flags;		/* field 9 (task->flags) */
	unsigned long long start;	/* field 22 (starttime) */
};

/*
 * Fields of thread @tid from /proc/<tid>/stat.
 * Returns 1, 0 when there is no such thread, -1 when it cannot tell.
 */
static int
thread_stat(unsigned long tid, struct thread_stat *st)
{
	char path[64], buf[1024], *p;
	int field;

	snprintf(path, sizeof(path), "/proc/%lu/stat", tid);
	if (read_small(path, buf, sizeof(buf)) < 0)
		return errno == ENOENT || errno == ESRCH ? 0 : -1;
	/* "tid (comm) S ..." and comm may hold spaces and parentheses: the
	 * fields after it start after the *last* ')'. */
	p = strrchr(buf, ')');
	if (p == NULL || p[1] != ' ')
		return -1;
	p += 2;
	st->state = *p;
	/* the state is field 3: step to the flags (9), then the start (22) */
	for (field = 3; field < 22 && p; field++) {
		if (field == 9 && sscanf(p, "%u", &st->flags) != 1)
			return -1;
		p = strchr(p, ' ');
		if (p)
			p++;
	}
	if (p == NULL || sscanf(p, "%llu", &st->start) != 1)
		return -1;
	return 1;
}

uint64_t
peer_self(void)
{
	struct thread_stat st = { .start = 0 };
	unsigned long tid;

	if (self_ident != 0)
		return self_ident;
	tid = (unsigned long)syscall(SYS_gettid);
	/* Without /proc the start time stays 0: the identity still works
	 * for ownership, and peer_check() cannot call us dead. */
	if (thread_stat(tid, &st) != 1)
		st.start = 0;
	self_ident = ((uint64_t)(st.start & 0xffffffffu) << 32) | (tid & PEER_TID_MASK);
	return self_ident;
}

enum peer_state
peer_check(uint64_t ident)
{
	struct thread_stat st;
	int found;

	if (!peer_valid(ident))
		return PEER_DEAD;
	found = thread_stat((unsigned long)(ident & PEER_TID_MASK), &st);
	/* No /proc entry is not always no thread: /proc mounted hidepid=2
	 * hides other users' tasks.  tkill(tid, 0) sees every thread of our
	 * pid namespace; one it finds (EPERM: another user's) is one whose
	 * start time we cannot compare, so alive. */
	if (found == 0 && (syscall(SYS_tkill, (pid_t)(ident & PEER_TID_MASK), 0) == 0 ||
			   errno != ESRCH))
		found = -1;
	if (found < 0)
		return PEER_ALIVE;
	if (found == 0 || st.state == 'Z' || st.state == 'X' || st.state == 'x')
		return PEER_DEAD;
	/* Inside do_exit() (it can stay there a while: closing its files,
	 * releasing its memory) it still has its entry and its state, but it
	 * will never release what it holds.  The owner or, if its tid was
	 * reused, the new thread: dead either way. */
	if (st.flags & TASK_PF_EXITING)
		return PEER_DEAD;
	/* A start time of 0: the owner could not read its own (no /proc
	 * there); the tid is all we can compare. */
	if (ident >> 32 == 0)
		return PEER_ALIVE;
	return (st.start & 0xffffffffu) == ident >> 32 ? PEER_ALIVE : PEER_DEAD;
}

uint64_t
peer_namespace(void)
{
	uint64_t tag = __atomic_load_n(&namespace_tag, __ATOMIC_RELAXED);
	char boot[64];
	struct statx st;

	if (tag != 0)
		return tag;
	/* FNV-1a over the boot id and the pid namespace's inode: two
	 * machines (a VM and its host sharing ivshmem) differ in the first,
	 * two containers of one machine in the second. */
	tag = 0xcbf29ce484222325ULL;
	if (read_small("/proc/sys/kernel/random/boot_id", boot, sizeof(boot)) > 0)
		for (const char *c = boot; *c; c++)
			tag = (tag ^ (unsigned char)*c) * 0x100000001b3ULL;
	/* statx (glibc 2.28), not stat (2.33): see array.c */
	if (statx(AT_FDCWD, "/proc/self/ns/pid", 0, STATX_INO, &st) == 0)
		for (int i = 0; i < 8; i++)
			tag = (tag ^ ((uint64_t)st.stx_ino >> (8 * i) & 0xff)) * 0x100000001b3ULL;
	if (tag == 0)
		tag = 1;
	__atomic_store_n(&namespace_tag, tag, __ATOMIC_RELAXED);
	return tag;
}
