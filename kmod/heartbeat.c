// SPDX-License-Identifier: GPL-2.0
/*
 * The heartbeat: a kernel-side producer for the driver-writes /
 * script-waits pattern.  Every heartbeat_ms it fills struct
 * mmapdev_heartbeat at offset 0 of device 0 under its @write_seq, bumps
 * @seq last and wakes the waiters on that word, so readers sleep in WAIT
 * instead of polling.
 *
 * Delayed work (process context) rather than a timer: it may take
 * wait_lock with plain spin_lock() like the ioctls do.
 */
#include <linux/build_bug.h>
#include <linux/jiffies.h>
#include <linux/kernel.h>
#include <linux/limits.h>
#include <linux/stddef.h>
#include <linux/string.h>
#include <linux/workqueue.h>

#include "mmapdev_internal.h"

static struct mmapdev_dev *hb_dev;
static unsigned long hb_period;		/* jiffies */
static u64 hb_counter;

static void mmapdev_heartbeat_fn(struct work_struct *work);
static DECLARE_DELAYED_WORK(hb_work, mmapdev_heartbeat_fn);

/**
 * mmapdev_heartbeat_fn() - one heartbeat, then the next one is scheduled
 * @work: hb_work
 *
 * Context: workqueue (process context).
 */
static void mmapdev_heartbeat_fn(struct work_struct *work)
{
	struct mmapdev_heartbeat *hb = hb_dev->buf;
	char text[sizeof(hb->text)] = { 0 };	/* NUL-padded */
	u64 n = ++hb_counter;

	snprintf(text, sizeof(text), "value = %llu\n", n);
	/*
	 * A seqlock around the payload, for readers slower than a beat:
	 * @write_seq is odd while the payload changes.  A reader that finds
	 * the same even value before and after its reads got one beat.
	 * Written from the count, not from the buffer: user space cannot
	 * leave it odd past the next beat.
	 */
	WRITE_ONCE(hb->write_seq, (u32)(2 * n - 1));
	smp_wmb();	/* "odd" is visible before any payload store */
	WRITE_ONCE(hb->counter, n);
	memcpy(hb->text, text, sizeof(text));
	smp_wmb();	/* the payload is visible before "even" and @seq */
	WRITE_ONCE(hb->write_seq, (u32)(2 * n));
	/*
	 * The payload is visible before @seq moves (readers wait on @seq,
	 * then read the payload): the second barrier orders it.  Incrementing
	 * what is in the buffer, not a private copy, guarantees the word
	 * changes even if user space wrote to it.
	 */
	WRITE_ONCE(hb->seq, READ_ONCE(hb->seq) + 1);
	/* Counted before waking: a woken reader finds its beat counted. */
	mmapdev_event(hb_dev);
	mmapdev_wake(hb_dev, MMAPDEV_HEARTBEAT_WAIT_OFFSET, UINT_MAX);
	mmapdev_uio_interrupt();

	schedule_delayed_work(&hb_work, hb_period);
}

/**
 * mmapdev_heartbeat_start() - start writing heartbeats into a device
 * @md: the device (device 0)
 * @period_ms: the period, at least one jiffy
 *
 * Context: module init.
 */
void mmapdev_heartbeat_start(struct mmapdev_dev *md, unsigned int period_ms)
{
	/* The layout user space relies on (uapi header). */
	BUILD_BUG_ON(sizeof(struct mmapdev_heartbeat) != 64);
	BUILD_BUG_ON(offsetof(struct mmapdev_heartbeat, seq) !=
		     MMAPDEV_HEARTBEAT_WAIT_OFFSET);
	BUILD_BUG_ON(offsetof(struct mmapdev_heartbeat, write_seq) !=
		     MMAPDEV_HEARTBEAT_WRITE_SEQ_OFFSET);
	BUILD_BUG_ON(offsetof(struct mmapdev_heartbeat, text) !=
		     MMAPDEV_HEARTBEAT_TEXT_OFFSET);

	hb_dev = md;
	hb_period = max(msecs_to_jiffies(period_ms), 1UL);
	hb_counter = 0;
	schedule_delayed_work(&hb_work, hb_period);
}

/**
 * mmapdev_heartbeat_stop() - stop the heartbeat and wait for a running one
 *
 * Context: module exit, may sleep.
 */
void mmapdev_heartbeat_stop(void)
{
	/* Safe for self-requeueing work, and a no-op if never started. */
	cancel_delayed_work_sync(&hb_work);
}
