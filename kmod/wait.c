// SPDX-License-Identifier: GPL-2.0
/*
 * WAIT/WAKE: futex semantics for u32 words of a device buffer.
 *
 * Shared futexes fail with EFAULT on these pages (they belong to no file
 * mapping), so the module keeps its own list of sleepers per device.  The
 * list is short in practice (one entry per sleeping thread) and walked
 * under a spinlock; waiters are matched on the buffer offset, so the same
 * word is the same key in every process whatever address it is mapped at.
 *
 * Waiters of read-only opens are observers: a WAKE wakes all of them on its
 * word and counts none.  Counted, the oldest waiter could be a read-only
 * opener's, which would take the one wake-up a Lock's release gives and
 * leave the peer that can take the lock asleep: a read-only open could
 * stall the writers.  Observers may only watch, so a wake-up more for them
 * is harmless (spurious wake-ups are part of the contract).
 *
 * No lost wake-ups: a waiter queues itself under wait_lock and only then
 * reads the word.  A waker stored the new value before entering WAKE, which
 * takes wait_lock: either it finds the waiter queued, or its store is
 * ordered (unlock->lock) before the waiter's read, which then sees it.
 */
#include <linux/hrtimer.h>
#include <linux/kernel.h>		/* min_t() */
#include <linux/ktime.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>

#include "compat.h"
#include "mmapdev_internal.h"

struct mmapdev_waiter {
	struct list_head node;
	struct task_struct *task;
	u64 offset;
	bool observer;	/* a read-only open's: woken by every WAKE, uncounted */
	bool woken;	/* set, with node unlinked, by a waker under wait_lock */
};

/**
 * mmapdev_wait_init() - set up the waiter list and poll queue of a device
 * @md: the device
 *
 * Context: module init.
 */
void mmapdev_wait_init(struct mmapdev_dev *md)
{
	spin_lock_init(&md->wait_lock);
	INIT_LIST_HEAD(&md->waiters);
	md->observers = 0;
	init_waitqueue_head(&md->poll_wq);
}

/**
 * mmapdev_wait() - sleep while a word of the buffer holds a value
 * @md: the device
 * @w: the checked request: aligned offset inside the buffer, known flags
 * @observer: the caller's file is not open for writing (see the top)
 *
 * Context: process context, sleeps (interruptibly).
 * Return: 0 when woken by WAKE or when the word differs from
 * @w->expected; -ETIMEDOUT when the deadline passed; -ERESTARTSYS (no
 * timeout or an absolute one) or -EINTR (relative timeout) on a signal.
 */
int mmapdev_wait(struct mmapdev_dev *md, const struct mmapdev_wait *w,
		 bool observer)
{
	struct mmapdev_waiter waiter = {
		.task = current,
		.offset = w->offset,
		.observer = observer,
	};
	const u32 *word = md->buf + w->offset;
	bool forever = w->timeout_ns < 0;
	/*
	 * After a signal the syscall may be restarted with the same
	 * arguments only if that does not extend the wait: an absolute
	 * deadline or no deadline.  A relative timeout would start over.
	 */
	bool restartable = forever || (w->flags & MMAPDEV_WAIT_ABSTIME);
	ktime_t deadline = 0;
	int ret;

	if (!forever) {
		if (w->flags & MMAPDEV_WAIT_ABSTIME)
			/* The caller's clock: its time namespace's. */
			deadline = mmapdev_monotonic_to_host(ns_to_ktime(w->timeout_ns));
		else
			deadline = ktime_add_safe(ktime_get(),
						  ns_to_ktime(w->timeout_ns));
	}

	spin_lock(&md->wait_lock);
	list_add_tail(&waiter.node, &md->waiters);
	md->observers += observer;
	spin_unlock(&md->wait_lock);

	for (;;) {
		/*
		 * Before the checks: a wake-up from here on makes schedule()
		 * return at once instead of being lost.
		 */
		set_current_state(TASK_INTERRUPTIBLE);
		if (READ_ONCE(waiter.woken) || READ_ONCE(*word) != w->expected) {
			ret = 0;
			break;
		}
		if (signal_pending(current)) {
			ret = restartable ? -ERESTARTSYS : -EINTR;
			break;
		}
		if (!forever && ktime_compare(ktime_get(), deadline) >= 0) {
			ret = -ETIMEDOUT;
			break;
		}
		schedule_hrtimeout_range(forever ? NULL : &deadline,
					 current->timer_slack_ns,
					 HRTIMER_MODE_ABS);
	}
	__set_current_state(TASK_RUNNING);

	/*
	 * Dequeue ourselves unless a waker already did.  Taking the lock also
	 * waits out a waker still touching @waiter (it lives on our stack).
	 * A wake that was counted is reported as such, even if a signal or
	 * the deadline arrived at the same time: WAKE's count must be true.
	 */
	spin_lock(&md->wait_lock);
	if (waiter.woken)
		ret = 0;
	else
		list_del(&waiter.node);
	md->observers -= observer;
	spin_unlock(&md->wait_lock);
	return ret;
}

/**
 * mmapdev_wake() - wake the oldest sleepers on a word, and its observers
 * @md: the device
 * @offset: the word's offset in the buffer
 * @count: at most this many waiters of writable opens; 0 wakes nobody
 *
 * Context: any context that may take a spinlock (process context here).
 * Return: how many waiters of writable opens were woken (at most INT_MAX).
 */
int mmapdev_wake(struct mmapdev_dev *md, u64 offset, u32 count)
{
	struct mmapdev_waiter *waiter, *tmp;
	u32 limit = min_t(u32, count, INT_MAX);
	u32 woken = 0;

	if (!count)
		return 0;
	spin_lock(&md->wait_lock);
	list_for_each_entry_safe(waiter, tmp, &md->waiters, node) {
		/* Past the limit only observers are left to wake. */
		if (woken >= limit && !md->observers)
			break;
		if (waiter->offset != offset)
			continue;
		if (!waiter->observer) {
			if (woken >= limit)
				continue;
			woken++;
		}
		list_del(&waiter->node);
		WRITE_ONCE(waiter->woken, true);
		wake_up_process(waiter->task);
	}
	spin_unlock(&md->wait_lock);
	return woken;
}

/**
 * mmapdev_event() - count one event and wake pollers
 * @md: the device
 *
 * Context: process context (WAKE, the heartbeat's work).
 */
void mmapdev_event(struct mmapdev_dev *md)
{
	atomic64_inc(&md->events);
	wake_up_interruptible(&md->poll_wq);
}
