// SPDX-License-Identifier: GPL-2.0
/*
 * File operations of /dev/mmapdevN: the buffer through read()/write()/
 * llseek() (for dd, cat and shell redirections), poll() and the ioctls of
 * the uapi header.  mmap() is in mmap.c.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fs.h>
#include <linux/kernel.h>		/* min_t(); <linux/minmax.h> only since 5.10 */
#include <linux/mm.h>
#include <linux/poll.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "compat.h"
#include "mmapdev_internal.h"

/**
 * mmapdev_open() - open /dev/mmapdevN
 * @inode: the node
 * @file: the new open file
 *
 * Context: process context, may sleep.
 * Return: 0, -ENXIO for a minor without a device, -ENOMEM.
 */
static int mmapdev_open(struct inode *inode, struct file *file)
{
	struct mmapdev_dev *md = mmapdev_lookup(iminor(inode));
	struct mmapdev_file *mf;

	if (!md)
		return -ENXIO;
	mf = kzalloc_obj(*mf);
	if (!mf)
		return -ENOMEM;
	mf->md = md;
	/* Past events are not news to a new opener: poll() starts quiet. */
	atomic64_set(&mf->seen, atomic64_read(&md->events));
	file->private_data = mf;
	pr_debug("mmapdev%u: open by pid %d, f_mode %#x\n", md->index,
		 task_pid_nr(current), (__force unsigned int)file->f_mode);
	return 0;
}

/**
 * mmapdev_release() - the last reference to an open file is gone
 * @inode: the node
 * @file: the file (its mappings are gone too: each held a reference)
 *
 * Context: process context.
 * Return: 0.
 */
static int mmapdev_release(struct inode *inode, struct file *file)
{
	kfree(file->private_data);
	return 0;
}

/**
 * mmapdev_read() - read(2) from the buffer
 * @file: the open device
 * @ubuf: user buffer
 * @count: bytes wanted
 * @ppos: the file position, advanced by what was read
 *
 * Context: process context, may sleep (faults on @ubuf).
 * Return: bytes read, 0 at or past the end (EOF), -EFAULT if nothing could
 * be copied.
 */
static ssize_t mmapdev_read(struct file *file, char __user *ubuf,
			    size_t count, loff_t *ppos)
{
	struct mmapdev_dev *md = mmapdev_of(file);

	/* EOF (0) at or past the end, -EFAULT only if nothing was copied. */
	return simple_read_from_buffer(ubuf, count, ppos, md->buf, md->size);
}

/**
 * mmapdev_write() - write(2) into the buffer
 * @file: the open device
 * @ubuf: user data
 * @count: bytes given
 * @ppos: the file position, advanced by what was written
 *
 * Context: process context, may sleep (faults on @ubuf).
 * Return: bytes written (fewer than @count where the buffer ends),
 * -ENOSPC at or past the end, -EINVAL for a negative position, -EFAULT if
 * nothing could be copied.
 */
static ssize_t mmapdev_write(struct file *file, const char __user *ubuf,
			     size_t count, loff_t *ppos)
{
	struct mmapdev_dev *md = mmapdev_of(file);
	loff_t pos = *ppos;
	size_t n, left;

	if (pos < 0)
		return -EINVAL;
	if (count == 0)
		return 0;
	/* Like a full disk: a partial write first, then -ENOSPC. */
	if (pos >= md->size)
		return -ENOSPC;
	n = min_t(size_t, count, md->size - pos);
	left = copy_from_user(md->buf + pos, ubuf, n);
	if (left == n)
		return -EFAULT;
	n -= left;
	*ppos = pos + n;
	return n;
}

/**
 * mmapdev_llseek() - lseek(2) within the buffer
 * @file: the open device
 * @offset: the new position, relative to @whence
 * @whence: SEEK_SET, SEEK_CUR or SEEK_END
 *
 * We always provide llseek, so the removal of no_llseek in 6.12 does not
 * concern us.
 *
 * Context: process context.
 * Return: the new position in [0, size], or -EINVAL beyond.
 */
static loff_t mmapdev_llseek(struct file *file, loff_t offset, int whence)
{
	return fixed_size_llseek(file, offset, whence, mmapdev_of(file)->size);
}

/**
 * mmapdev_poll() - poll(2)/select(2)/epoll readiness
 * @file: the open device
 * @wait: the poll table
 *
 * Readable when the device's event counter moved past what this file saw
 * at open or at its last GET_INFO.  Writes never block and are not
 * reported.
 *
 * Context: process context.
 * Return: EPOLLIN | EPOLLRDNORM | EPOLLPRI when there is news, else 0.
 */
static __poll_t mmapdev_poll(struct file *file, poll_table *wait)
{
	struct mmapdev_file *mf = file->private_data;
	struct mmapdev_dev *md = mf->md;

	poll_wait(file, &md->poll_wq, wait);
	if (atomic64_read(&md->events) != atomic64_read(&mf->seen))
		return EPOLLIN | EPOLLRDNORM | EPOLLPRI;
	return 0;
}

/**
 * mmapdev_word_ok() - whether WAIT/WAKE may use a word
 * @md: the device
 * @offset: the word's offset in the buffer
 *
 * Context: any.
 * Return: true for an aligned u32 inside the buffer.
 */
static bool mmapdev_word_ok(const struct mmapdev_dev *md, u64 offset)
{
	return offset <= md->size - sizeof(u32) && !(offset % sizeof(u32));
}

/**
 * mmapdev_ioc_get_info() - MMAPDEV_IOC_GET_INFO
 * @mf: the open file, whose events are marked seen (re-arms poll)
 * @uarg: struct mmapdev_info to fill
 *
 * Context: process context, may sleep.
 * Return: 0 or -EFAULT.
 */
static long mmapdev_ioc_get_info(struct mmapdev_file *mf, void __user *uarg)
{
	struct mmapdev_dev *md = mf->md;
	struct mmapdev_info info;

	memset(&info, 0, sizeof(info));	/* no stale stack bytes in padding */
	info.size = md->size;
	info.events = atomic64_read(&md->events);
	info.page_size = PAGE_SIZE;
	info.abi_version = MMAPDEV_ABI_VERSION;
	info.index = md->index;
	info.heartbeat_ms = md->heartbeat_ms;
	if (copy_to_user(uarg, &info, sizeof(info)))
		return -EFAULT;
	atomic64_set(&mf->seen, info.events);
	return 0;
}

/**
 * mmapdev_ioc_wait() - MMAPDEV_IOC_WAIT
 * @md: the device
 * @uarg: struct mmapdev_wait
 * @observer: the file is not open for writing (wait.c: woken by every
 *	WAKE, never counted)
 *
 * Context: process context, sleeps.
 * Return: as mmapdev_wait(), or -EFAULT, or -EINVAL for unknown flags or a
 * word outside the buffer.
 */
static long mmapdev_ioc_wait(struct mmapdev_dev *md, void __user *uarg,
			     bool observer)
{
	struct mmapdev_wait w;

	if (copy_from_user(&w, uarg, sizeof(w)))
		return -EFAULT;
	if (w.flags & ~MMAPDEV_WAIT_ABSTIME)
		return -EINVAL;
	if (!mmapdev_word_ok(md, w.offset))
		return -EINVAL;
	return mmapdev_wait(md, &w, observer);
}

/**
 * mmapdev_ioc_wake() - MMAPDEV_IOC_WAKE; also counts one event
 * @md: the device
 * @uarg: struct mmapdev_wake
 *
 * Context: process context, may sleep.
 * Return: how many waiters of writable opens were woken, or -EFAULT, or
 * -EINVAL for flags or a word outside the buffer.
 */
static long mmapdev_ioc_wake(struct mmapdev_dev *md, void __user *uarg)
{
	struct mmapdev_wake w;

	if (copy_from_user(&w, uarg, sizeof(w)))
		return -EFAULT;
	if (w.flags)
		return -EINVAL;
	if (!mmapdev_word_ok(md, w.offset))
		return -EINVAL;
	/* Counted before waking: a woken waiter finds its wake counted. */
	mmapdev_event(md);
	return mmapdev_wake(md, w.offset, w.count);
}

/**
 * mmapdev_ioctl() - the ioctls of the uapi header
 * @file: the open device
 * @cmd: MMAPDEV_IOC_*
 * @arg: a user pointer to the command's struct
 *
 * Context: process context, may sleep.
 * Return: the handler's result, -EBADF for WAIT on a file not open for
 * reading, or -ENOTTY for an unknown @cmd.
 */
static long mmapdev_ioctl(struct file *file, unsigned int cmd,
			  unsigned long arg)
{
	struct mmapdev_file *mf = file->private_data;
	void __user *uarg = (void __user *)arg;

	switch (cmd) {
	case MMAPDEV_IOC_GET_INFO:
		return mmapdev_ioc_get_info(mf, uarg);
	case MMAPDEV_IOC_WAIT:
		/*
		 * WAIT reads the word (it returns at once unless it holds
		 * @expected): a write-only open, which may not read() or
		 * mmap() the buffer, may not probe it either.
		 */
		if (!(file->f_mode & FMODE_READ))
			return -EBADF;
		return mmapdev_ioc_wait(mf->md, uarg,
					!(file->f_mode & FMODE_WRITE));
	case MMAPDEV_IOC_WAKE:
		return mmapdev_ioc_wake(mf->md, uarg);
	default:
		return -ENOTTY;
	}
}

/*
 * The uapi structs have the same layout for 32- and 64-bit callers (no
 * implicit padding), so compat_ptr_ioctl() (compat.h) serves 32-bit callers.
 */
static_assert(sizeof(struct mmapdev_info) == 32);
static_assert(sizeof(struct mmapdev_wait) == 24);
static_assert(sizeof(struct mmapdev_wake) == 16);

const struct file_operations mmapdev_fops = {
	.owner = THIS_MODULE,
	.open = mmapdev_open,
	.release = mmapdev_release,
	.read = mmapdev_read,
	.write = mmapdev_write,
	.llseek = mmapdev_llseek,
#ifdef MMAPDEV_HAVE_MMAP_PREPARE
	.mmap_prepare = mmapdev_mmap_prepare,
#else
	.mmap = mmapdev_mmap,
#endif
	.poll = mmapdev_poll,
	.unlocked_ioctl = mmapdev_ioctl,
	.compat_ioctl = mmapdev_compat_ioctl,
};
