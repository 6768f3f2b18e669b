/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note OR MIT */
/*
 * mmapdev — the one ABI between the kernel module (kmod/) and user space
 * (csrc/, tests).  Everything here is fixed-width and append-only: a change
 * that breaks an existing field bumps MMAPDEV_ABI_VERSION.
 */
#ifndef _UAPI_MMAPDEV_H
#define _UAPI_MMAPDEV_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define MMAPDEV_ABI_VERSION	1
#define MMAPDEV_IOC_MAGIC	0xB7

/*
 * MMAPDEV_IOC_GET_INFO: what a mapper needs to know about the device.
 * Also records @events as "seen" by this open file, which re-arms poll().
 */
struct mmapdev_info {
	__u64 size;		/* bytes in the buffer (a multiple of page_size) */
	__u64 events;		/* device event counter (WAKE calls, heartbeats) */
	__u32 page_size;
	__u32 abi_version;	/* MMAPDEV_ABI_VERSION of the module */
	__u32 index;		/* N of /dev/mmapdevN */
	__u32 heartbeat_ms;	/* 0 = no kernel-side producer on this device */
};

/*
 * MMAPDEV_IOC_WAIT: sleep while the aligned u32 at @offset equals @expected.
 * Returns 0 when woken or when the word differs (checked after queueing, so
 * no wake-up is lost), -ETIMEDOUT at the deadline, -EINTR/-ERESTARTSYS on a
 * signal.  @timeout_ns < 0 waits forever; with MMAPDEV_WAIT_ABSTIME it is a
 * CLOCK_MONOTONIC deadline (restart-safe), else relative to the call.
 */
struct mmapdev_wait {
	__u64 offset;
	__u32 expected;
	__u32 flags;		/* MMAPDEV_WAIT_* */
	__s64 timeout_ns;
};

#define MMAPDEV_WAIT_ABSTIME	(1U << 0)

/*
 * MMAPDEV_IOC_WAKE: wake at most @count waiters sleeping on @offset, oldest
 * first.  The ioctl returns how many were woken.  Waiters of read-only
 * opens are observers: a WAKE with @count > 0 wakes all of them on
 * @offset and does not count them, so they cannot take a wake-up meant
 * for a waiter that can write.
 */
struct mmapdev_wake {
	__u64 offset;
	__u32 count;
	__u32 flags;		/* must be 0 */
};

#define MMAPDEV_IOC_GET_INFO	_IOR(MMAPDEV_IOC_MAGIC, 0x00, struct mmapdev_info)
#define MMAPDEV_IOC_WAIT	_IOW(MMAPDEV_IOC_MAGIC, 0x01, struct mmapdev_wait)
#define MMAPDEV_IOC_WAKE	_IOW(MMAPDEV_IOC_MAGIC, 0x02, struct mmapdev_wake)

/*
 * With heartbeat_ms > 0 the module writes this header at offset 0 of
 * device 0 every heartbeat_ms: it makes @write_seq odd, stores @counter and
 * @text ("value = N\n", NUL-padded), makes @write_seq even again, then
 * increments @seq and wakes waiters on offset 0
 * (MMAPDEV_HEARTBEAT_WAIT_OFFSET).  A reader waits on @seq, then reads the
 * payload between two reads of @write_seq: equal and even, the payload is
 * one beat's; else a beat was being written, read again.  A C reader needs
 * a read barrier (smp_rmb(), an acquire fence) before the second read, as
 * for any seqlock.  Once a beat is whole, @write_seq is 2 * @counter
 * (modulo 2^32).  It was a reserved zero word before: a module that shows
 * @counter > 0 with @write_seq 0 (@counter not a multiple of 2^31) has no
 * seqlock, and its payload may be read torn.
 */
struct mmapdev_heartbeat {
	__u32 seq;		/* u32 word to WAIT on; bumped last */
	__u32 write_seq;	/* odd while the payload is being written */
	__u64 counter;		/* N */
	char text[48];		/* "value = N\n" */
};

#define MMAPDEV_HEARTBEAT_WAIT_OFFSET	0
#define MMAPDEV_HEARTBEAT_WRITE_SEQ_OFFSET	4
#define MMAPDEV_HEARTBEAT_TEXT_OFFSET	16

#endif /* _UAPI_MMAPDEV_H */
