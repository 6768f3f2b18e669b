/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Internal interfaces of the mmapdev module.  Each file of kmod/ has one job:
 *
 *   main.c       parameters, init/exit, the class and the device nodes
 *   fops.c       open/release/read/write/llseek/mmap/poll/ioctl
 *   wait.c       WAIT/WAKE (futex semantics for words of the buffer) and
 *                the event counter behind poll()
 *   heartbeat.c  the kernel-side producer on device 0
 *   sysfs.c      the per-device attributes size, maps and events
 */
#ifndef MMAPDEV_INTERNAL_H
#define MMAPDEV_INTERNAL_H

#include <linux/atomic.h>
#include <linux/list.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/version.h>
#include <linux/wait.h>

#include "mmapdev.h"		/* the uapi header: the ABI with user space */

struct attribute_group;
struct device;
struct file_operations;

struct mmapdev_dev {
	unsigned int index;		/* N of /dev/mmapdevN */
	void *buf;			/* vmalloc_user(): zeroed, page-aligned */
	size_t size;			/* a multiple of PAGE_SIZE */
	unsigned int heartbeat_ms;	/* reported by GET_INFO; 0 = none */
	struct device *dev;
	atomic_t maps;			/* live VMAs over @buf */
	atomic64_t events;		/* WAKE calls + heartbeats */
	wait_queue_head_t poll_wq;	/* woken when @events moves */
	spinlock_t wait_lock;		/* protects @waiters */
	struct list_head waiters;	/* struct mmapdev_waiter, FIFO */
};

/* main.c */
struct mmapdev_dev *mmapdev_lookup(unsigned int minor);

/* fops.c */
extern const struct file_operations mmapdev_fops;

/* wait.c */
void mmapdev_wait_init(struct mmapdev_dev *md);
int mmapdev_wait(struct mmapdev_dev *md, const struct mmapdev_wait *w);
int mmapdev_wake(struct mmapdev_dev *md, u64 offset, u32 count);
void mmapdev_event(struct mmapdev_dev *md);

/* heartbeat.c */
void mmapdev_heartbeat_start(struct mmapdev_dev *md, unsigned int period_ms);
void mmapdev_heartbeat_stop(void);

/* sysfs.c */
extern const struct attribute_group *mmapdev_groups[];

#endif /* MMAPDEV_INTERNAL_H */
