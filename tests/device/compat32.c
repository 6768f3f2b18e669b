/*
 * A 32-bit (i386) caller of the mmapdev ioctls, for test_compat.py: the
 * module serves 32-bit processes through compat_ptr_ioctl(), which is
 * right only while every uapi struct has the same layout for both ABIs.
 *
 * Freestanding (no libc: the host has no 32-bit one), raw int $0x80
 * system calls.  Built by the test with
 *   gcc -m32 -static -nostdlib -ffreestanding -fno-pic -I kmod/uapi ...
 * Each command prints what the kernel answered, numbers in hex (64-bit
 * division would need libgcc): a result is 0x<n> or -0x<errno>.
 *
 *   info PATH                       the fields of GET_INFO, one per line
 *   wait PATH OFF EXPECTED NS FLAGS WAIT; NS relative (or absolute with
 *                                   FLAGS 1), -1 forever
 *   abswait PATH OFF EXPECTED NS    WAIT until now + NS on CLOCK_MONOTONIC,
 *                                   then "late 1" if the deadline has passed
 *   wake PATH OFF COUNT FLAGS       WAKE
 *   ioctl PATH REQUEST              an ioctl with a zeroed 64-byte argument
 *   map PATH OFF TEXT               writes TEXT at OFF through mmap(MAP_SHARED)
 */
#include "mmapdev.h"

/* The layout compat_ptr_ioctl() relies on, as a 32-bit compiler sees it. */
_Static_assert(sizeof(struct mmapdev_info) == 32, "mmapdev_info");
_Static_assert(sizeof(struct mmapdev_wait) == 24, "mmapdev_wait");
_Static_assert(sizeof(struct mmapdev_wake) == 16, "mmapdev_wake");
_Static_assert(__builtin_offsetof(struct mmapdev_wait, timeout_ns) == 16, "timeout_ns");

enum {
	NR_WRITE = 4, NR_OPEN = 5, NR_IOCTL = 54, NR_OLD_MMAP = 90,
	NR_MUNMAP = 91, NR_EXIT_GROUP = 252, NR_CLOCK_GETTIME64 = 403,
	O_RDWR = 2, PROT_RW = 3, MAP_SHARED = 1, CLOCK_MONOTONIC = 1,
	PAGE = 4096,
};

static long sys3(long nr, long a, long b, long c)
{
	long ret;

	__asm__ volatile ("int $0x80"
			  : "=a" (ret)
			  : "a" (nr), "b" (a), "c" (b), "d" (c)
			  : "memory");
	return ret;
}

/* gcc may emit calls to these even when freestanding. */
void *memset(void *s, int c, unsigned int n)
{
	unsigned char *p = s;

	while (n--)
		*p++ = (unsigned char)c;
	return s;
}

void *memcpy(void *d, const void *s, unsigned int n)
{
	unsigned char *q = d;
	const unsigned char *p = s;

	while (n--)
		*q++ = *p++;
	return d;
}

static unsigned int length(const char *s)
{
	unsigned int n = 0;

	while (s[n])
		n++;
	return n;
}

static void out(const char *s)
{
	sys3(NR_WRITE, 1, (long)s, length(s));
}

static void out_hex(long long v)
{
	char buf[24];
	char *p = buf + sizeof(buf);
	unsigned long long u = v < 0 ? -(unsigned long long)v : (unsigned long long)v;

	*--p = 0;
	do {
		*--p = "0123456789abcdef"[u & 15];
		u >>= 4;
	} while (u);
	*--p = 'x';
	*--p = '0';
	if (v < 0)
		*--p = '-';
	out(p);
}

static void field(const char *name, long long v)
{
	out(name);
	out(" ");
	out_hex(v);
	out("\n");
}

static __attribute__((noreturn)) void finish(int code)
{
	for (;;)
		sys3(NR_EXIT_GROUP, code, 0, 0);
}

/* Signed decimal, or hex with 0x. */
static long long number(const char *s)
{
	unsigned long long v = 0;
	int neg = *s == '-', base = 10;

	s += neg;
	if (s[0] == '0' && s[1] == 'x') {
		base = 16;
		s += 2;
	}
	for (; *s; s++) {
		int d = *s >= 'a' ? *s - 'a' + 10 : *s - '0';

		v = v * base + d;
	}
	return neg ? -(long long)v : (long long)v;
}

static int open_dev(const char *path)
{
	long fd = sys3(NR_OPEN, (long)path, O_RDWR, 0);

	if (fd < 0) {
		field("open", fd);
		finish(2);
	}
	return (int)fd;
}

static long long monotonic_ns(void)
{
	struct { long long sec; long long nsec; } ts;

	if (sys3(NR_CLOCK_GETTIME64, CLOCK_MONOTONIC, (long)&ts, 0) < 0)
		finish(3);
	return ts.sec * 1000000000LL + ts.nsec;
}

static void cmd_info(int fd)
{
	struct mmapdev_info info;
	long ret;

	memset(&info, 0xA5, sizeof(info));
	ret = sys3(NR_IOCTL, fd, MMAPDEV_IOC_GET_INFO, (long)&info);
	field("result", ret);
	field("size", info.size);
	field("events", info.events);
	field("page_size", info.page_size);
	field("abi_version", info.abi_version);
	field("index", info.index);
	field("heartbeat_ms", info.heartbeat_ms);
}

static void cmd_wait(int fd, char **arg, int absolute)
{
	struct mmapdev_wait w = {
		.offset = number(arg[0]),
		.expected = number(arg[1]),
		.timeout_ns = number(arg[2]),
	};

	if (absolute) {
		w.flags = MMAPDEV_WAIT_ABSTIME;
		w.timeout_ns += monotonic_ns();
	} else {
		w.flags = number(arg[3]);
	}
	field("result", sys3(NR_IOCTL, fd, MMAPDEV_IOC_WAIT, (long)&w));
	if (absolute)
		field("late", monotonic_ns() >= w.timeout_ns);
}

static void cmd_wake(int fd, char **arg)
{
	struct mmapdev_wake w = {
		.offset = number(arg[0]),
		.count = number(arg[1]),
		.flags = number(arg[2]),
	};

	field("result", sys3(NR_IOCTL, fd, MMAPDEV_IOC_WAKE, (long)&w));
}

static void cmd_ioctl(int fd, char **arg)
{
	unsigned char zeros[64] = { 0 };

	field("result", sys3(NR_IOCTL, fd, number(arg[0]), (long)zeros));
}

static void cmd_map(int fd, char **arg)
{
	/* old_mmap(2) takes its six arguments in memory. */
	long args[6] = { 0, PAGE, PROT_RW, MAP_SHARED, fd, (long)number(arg[0]) };
	long addr = sys3(NR_OLD_MMAP, (long)args, 0, 0);

	if (addr < 0 && addr > -4096) {
		field("result", addr);
		return;
	}
	memcpy((void *)addr, arg[1], length(arg[1]));
	field("result", sys3(NR_MUNMAP, addr, PAGE, 0));
}

static int run(int argc, char **argv)
{
	static const struct { const char *name; int args; } cmds[] = {
		{ "info", 0 }, { "wait", 4 }, { "abswait", 3 }, { "wake", 3 },
		{ "ioctl", 1 }, { "map", 2 },
	};
	unsigned int i;
	int fd;

	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		const char *a = cmds[i].name, *b = argc > 1 ? argv[1] : "";

		while (*a && *a == *b) {
			a++;
			b++;
		}
		if (!*a && !*b && argc == cmds[i].args + 3)
			break;
	}
	if (i == sizeof(cmds) / sizeof(cmds[0])) {
		out("usage: compat32 info|wait|abswait|wake|ioctl|map PATH ARGS...\n");
		return 1;
	}
	fd = open_dev(argv[2]);
	switch (i) {
	case 0: cmd_info(fd); break;
	case 1: cmd_wait(fd, argv + 3, 0); break;
	case 2: cmd_wait(fd, argv + 3, 1); break;
	case 3: cmd_wake(fd, argv + 3); break;
	case 4: cmd_ioctl(fd, argv + 3); break;
	default: cmd_map(fd, argv + 3); break;
	}
	return 0;
}

/* The kernel's initial stack: argc, then argv[]. */
__attribute__((used, noreturn)) void start_c(long *sp)
{
	finish(run((int)sp[0], (char **)(sp + 1)));
}

__asm__(".text\n"
	".globl _start\n"
	"_start:\n"
	"	xorl %ebp, %ebp\n"
	"	movl %esp, %eax\n"
	"	andl $-16, %esp\n"
	"	subl $12, %esp\n"
	"	pushl %eax\n"
	"	call start_c\n"
	"	hlt\n");
