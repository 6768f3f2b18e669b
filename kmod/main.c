// SPDX-License-Identifier: GPL-2.0
/*
 * mmapdev: character devices whose buffers user processes map and share.
 *
 * This file owns the module parameters, the device array and the order in
 * which things come up and go down.  Buffers are allocated before the cdev
 * goes live (an open can arrive as soon as cdev_add() returns) and freed
 * only at module exit: every open file and every mapping pins the module
 * (cdev.owner, and a VMA holds its file), so exit cannot race a user.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/cdev.h>
#include <linux/device.h>
#include <linux/fs.h>
#include <linux/kdev_t.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/sizes.h>
#include <linux/slab.h>
#include <linux/stat.h>
#include <linux/vmalloc.h>

#include "mmapdev_internal.h"

#define MMAPDEV_MAX_DEVICES	64
/* More than this per device is almost certainly a typo (size=1G vs 1M). */
#define MMAPDEV_MAX_SIZE	SZ_1G

static unsigned int ndevices = 1;
module_param_named(devices, ndevices, uint, 0444);
MODULE_PARM_DESC(devices, "number of devices /dev/mmapdev0..N-1 (1-64, default 1)");

static unsigned long buf_size = SZ_1M;
module_param_named(size, buf_size, ulong, 0444);
MODULE_PARM_DESC(size, "bytes per device, rounded up to whole pages (default 1 MiB, at most 1 GiB)");

static ushort node_mode = 0600;
module_param_named(mode, node_mode, ushort, 0444);
MODULE_PARM_DESC(mode, "permission of the device nodes, octal with a leading 0 (default 0600)");

static unsigned int heartbeat_ms;
module_param(heartbeat_ms, uint, 0444);
MODULE_PARM_DESC(heartbeat_ms, "period of the heartbeat written to device 0 in ms (default 0 = off)");

static dev_t mmapdev_devt;
static struct class *mmapdev_class;
static struct cdev mmapdev_cdev;
static struct mmapdev_dev *mmapdev_devs;

struct mmapdev_dev *mmapdev_lookup(unsigned int minor)
{
	unsigned int idx = minor - MINOR(mmapdev_devt);

	return idx < ndevices ? &mmapdev_devs[idx] : NULL;
}

/*
 * devtmpfs creates the node with the mode returned here; udev rules (see
 * 99-mmapdev.rules) may change owner, group and mode afterwards.  The
 * callback takes a const device since 6.2.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 2, 0)
static char *mmapdev_devnode(const struct device *dev, umode_t *mode)
#else
static char *mmapdev_devnode(struct device *dev, umode_t *mode)
#endif
{
	if (mode)
		*mode = node_mode;
	return NULL;
}

static int __init mmapdev_check_params(void)
{
	if (ndevices < 1 || ndevices > MMAPDEV_MAX_DEVICES) {
		pr_err("devices=%u: must be between 1 and %u\n",
		       ndevices, MMAPDEV_MAX_DEVICES);
		return -EINVAL;
	}
	if (buf_size == 0 || buf_size > MMAPDEV_MAX_SIZE) {
		pr_err("size=%lu: must be between 1 and %lu bytes (rounded up to pages)\n",
		       buf_size, (unsigned long)MMAPDEV_MAX_SIZE);
		return -EINVAL;
	}
	/* Decimal 600/644/666 land outside 0777: catch the missing leading 0. */
	if (node_mode & ~0777) {
		pr_err("mode=%#o: only permission bits 0-0777 are allowed (write octal with a leading 0, e.g. mode=0660)\n",
		       node_mode);
		return -EINVAL;
	}
	return 0;
}

static void mmapdev_free_buffers(void)
{
	unsigned int i;

	for (i = 0; i < ndevices; i++)
		vfree(mmapdev_devs[i].buf);	/* NULL for those never allocated */
	kfree(mmapdev_devs);
}

static int __init mmapdev_init(void)
{
	size_t size;
	unsigned int i;
	int ret;

	ret = mmapdev_check_params();
	if (ret)
		return ret;
	size = PAGE_ALIGN(buf_size);

	ret = alloc_chrdev_region(&mmapdev_devt, 0, ndevices, KBUILD_MODNAME);
	if (ret) {
		pr_err("cannot allocate a major number: %d\n", ret);
		return ret;
	}

	mmapdev_devs = kcalloc(ndevices, sizeof(*mmapdev_devs), GFP_KERNEL);
	if (!mmapdev_devs) {
		ret = -ENOMEM;
		goto err_region;
	}
	for (i = 0; i < ndevices; i++) {
		struct mmapdev_dev *md = &mmapdev_devs[i];

		md->index = i;
		md->size = size;
		md->heartbeat_ms = i == 0 ? heartbeat_ms : 0;
		atomic_set(&md->maps, 0);
		atomic64_set(&md->events, 0);
		mmapdev_wait_init(md);
		/* vmalloc_user(): zeroed (no stale kernel data reaches user
		 * space) and flagged VM_USERMAP for remap_vmalloc_range(). */
		md->buf = vmalloc_user(size);
		if (!md->buf) {
			pr_err("cannot allocate %zu bytes for mmapdev%u\n", size, i);
			ret = -ENOMEM;
			goto err_buffers;
		}
	}

	/* class_create() lost its owner argument in 6.4. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 4, 0)
	mmapdev_class = class_create(KBUILD_MODNAME);
#else
	mmapdev_class = class_create(THIS_MODULE, KBUILD_MODNAME);
#endif
	if (IS_ERR(mmapdev_class)) {
		ret = PTR_ERR(mmapdev_class);
		pr_err("cannot create class: %d\n", ret);
		goto err_buffers;
	}
	mmapdev_class->devnode = mmapdev_devnode;

	cdev_init(&mmapdev_cdev, &mmapdev_fops);
	mmapdev_cdev.owner = THIS_MODULE;
	ret = cdev_add(&mmapdev_cdev, mmapdev_devt, ndevices);
	if (ret) {
		pr_err("cannot add cdev: %d\n", ret);
		goto err_class;
	}

	for (i = 0; i < ndevices; i++) {
		struct mmapdev_dev *md = &mmapdev_devs[i];
		struct device *dev;

		/* With groups, the attributes exist before the uevent. */
		dev = device_create_with_groups(mmapdev_class, NULL,
						mmapdev_devt + i, md,
						mmapdev_groups,
						KBUILD_MODNAME "%u", i);
		if (IS_ERR(dev)) {
			ret = PTR_ERR(dev);
			pr_err("cannot create mmapdev%u: %d\n", i, ret);
			goto err_devices;
		}
		md->dev = dev;
	}

	if (heartbeat_ms)
		mmapdev_heartbeat_start(&mmapdev_devs[0], heartbeat_ms);

	pr_info("%u device(s) of %zu bytes, mode %#o, heartbeat %u ms\n",
		ndevices, size, node_mode, heartbeat_ms);
	return 0;

err_devices:
	while (i--)
		device_destroy(mmapdev_class, mmapdev_devt + i);
	cdev_del(&mmapdev_cdev);
err_class:
	/* class_destroy() unregisters too: no class_unregister() before it. */
	class_destroy(mmapdev_class);
err_buffers:
	mmapdev_free_buffers();
err_region:
	unregister_chrdev_region(mmapdev_devt, ndevices);
	return ret;
}

static void __exit mmapdev_exit(void)
{
	unsigned int i;

	mmapdev_heartbeat_stop();
	for (i = 0; i < ndevices; i++)
		device_destroy(mmapdev_class, mmapdev_devt + i);
	cdev_del(&mmapdev_cdev);
	class_destroy(mmapdev_class);
	mmapdev_free_buffers();
	unregister_chrdev_region(mmapdev_devt, ndevices);
}

module_init(mmapdev_init);
module_exit(mmapdev_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("pymmapdev authors");
MODULE_DESCRIPTION("Shared, mappable memory buffers with futex-style wait/wake");
MODULE_VERSION("0.1.0");
