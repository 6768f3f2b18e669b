/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Internal interfaces of the mmapdev module.  Each file of kmod/ has one job:
 *
 *   main.c       parameters, init/exit, the class and the device nodes
 *   fops.c       open/release/read/write/llseek/poll/ioctl
 *   mmap.c       mmap (or mmap_prepare), the VMA operations, page faults
 *   wait.c       WAIT/WAKE (futex semantics for words of the buffer) and
 *                the event counter behind poll()
 *   heartbeat.c  the kernel-side producer on device 0
 *   uio.c        uio=1: device 0 as a UIO device, the heartbeat its interrupt
 *   sysfs.c      the per-device attributes size, maps and events
 *   compat.h     every difference between kernel versions
 */
#ifndef MMAPDEV_INTERNAL_H
#define MMAPDEV_INTERNAL_H

#include <linux/atomic.h>
#include <linux/fs.h>
#include <linux/list.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/wait.h>

#include "mmapdev.h"		/* the uapi header: the ABI with user space */

struct attribute_group;
struct device;
struct file_operations;
struct vm_area_desc;
struct vm_area_struct;

struct mmapdev_dev {
	unsigned int index;		/* N of /dev/mmapdevN */
	void *buf;			/* vmalloc: zeroed, page-aligned */
	size_t size;			/* a multiple of PAGE_SIZE */
	unsigned int heartbeat_ms;	/* reported by GET_INFO; 0 = none */
	struct device *dev;
	atomic_t maps;			/* live VMAs over @buf */
	atomic64_t events;		/* WAKE calls + heartbeats */
	wait_queue_head_t poll_wq;	/* woken when @events moves */
	spinlock_t wait_lock;		/* protects @waiters, @observers */
	struct list_head waiters;	/* struct mmapdev_waiter, FIFO */
	unsigned int observers;		/* of them, read-only opens' (wait.c) */
};

/* Per open file (file->private_data). */
struct mmapdev_file {
	struct mmapdev_dev *md;
	atomic64_t seen;	/* md->events as of open or the last GET_INFO */
};

/**
 * mmapdev_of() - the device behind an open file
 * @file: an open /dev/mmapdevN
 *
 * Context: any.
 * Return: the device.
 */
static inline struct mmapdev_dev *mmapdev_of(const struct file *file)
{
	return ((struct mmapdev_file *)file->private_data)->md;
}

/* main.c */
struct mmapdev_dev *mmapdev_lookup(unsigned int minor);

/* fops.c */
extern const struct file_operations mmapdev_fops;

/* mmap.c: one of each pair, as compat.h decides */
int mmapdev_mmap_prepare(struct vm_area_desc *desc);
int mmapdev_mmap(struct file *file, struct vm_area_struct *vma);
int mmapdev_desc_setup(struct mmapdev_dev *md, struct vm_area_desc *desc);
int mmapdev_vma_setup(struct mmapdev_dev *md, struct vm_area_struct *vma);

/* wait.c */
void mmapdev_wait_init(struct mmapdev_dev *md);
int mmapdev_wait(struct mmapdev_dev *md, const struct mmapdev_wait *w,
		 bool observer);
int mmapdev_wake(struct mmapdev_dev *md, u64 offset, u32 count);
void mmapdev_event(struct mmapdev_dev *md);

/* heartbeat.c */
void mmapdev_heartbeat_start(struct mmapdev_dev *md, unsigned int period_ms);
void mmapdev_heartbeat_stop(void);

/* uio.c: built when the kernel has UIO (CONFIG_UIO) */
#if IS_ENABLED(CONFIG_UIO)
int mmapdev_uio_register(struct mmapdev_dev *md);
void mmapdev_uio_unregister(void);
void mmapdev_uio_interrupt(void);
#else
static inline int mmapdev_uio_register(struct mmapdev_dev *md)
{
	return -EOPNOTSUPP;
}

static inline void mmapdev_uio_unregister(void)
{
}

static inline void mmapdev_uio_interrupt(void)
{
}
#endif

/* sysfs.c */
extern const struct attribute_group *mmapdev_groups[];

#endif /* MMAPDEV_INTERNAL_H */
