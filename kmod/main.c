// SPDX-License-Identifier: GPL-2.0
/*
 * mmapdev: character devices whose buffers user processes map and share.
 *
 * This file owns the module parameters, the device array and the order in
 * which things come up and go down.  Buffers are allocated before the cdev
 * goes live (an open can arrive as soon as cdev_add() returns) and freed
 * only at module exit: every open file and every mapping pins the module
 * (cdev.owner, and a VMA holds its file), so exit cannot race a user.
 *
 * That pin does not protect a failing init: try_module_get() succeeds while
 * the module is still coming up, and the kernel frees a module whose init
 * failed whatever its refcount.  So the steps that let user space in come
 * last, and cdev_add() is the very last step that can fail: without uio=1
 * no file can be open when init fails.  The UIO device, registered just
 * before it, is live from then on; only a failing cdev_add() (an allocation)
 * could leave a /dev/uioN file open behind a failed init.
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

#include "compat.h"
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

static bool uio;
module_param(uio, bool, 0444);
MODULE_PARM_DESC(uio, "also register device 0 as a UIO device, the heartbeat its interrupt (default 0)");

static dev_t mmapdev_devt;
static struct class *mmapdev_class;
static struct cdev mmapdev_cdev;
static struct mmapdev_dev *mmapdev_devs;

/**
 * mmapdev_lookup() - the device of a minor number
 * @minor: the minor of an opened node
 *
 * Context: any.
 * Return: the device, or NULL if @minor is not one of ours.
 */
struct mmapdev_dev *mmapdev_lookup(unsigned int minor)
{
	unsigned int idx = minor - MINOR(mmapdev_devt);

	return idx < ndevices ? &mmapdev_devs[idx] : NULL;
}

/**
 * mmapdev_devnode() - the mode of a new device node
 * @dev: the device
 * @mode: where the mode goes
 *
 * devtmpfs creates the node with the mode returned here; udev rules (see
 * 99-mmapdev.rules) may change owner, group and mode afterwards.
 *
 * Context: process context (device_add()).
 * Return: NULL: the default name.
 */
static char *mmapdev_devnode(MMAPDEV_DEVNODE_CONST struct device *dev,
			     umode_t *mode)
{
	if (mode)
		*mode = node_mode;
	return NULL;
}

/**
 * mmapdev_check_params() - refuse parameters out of range
 *
 * Says which parameter is wrong, and why, in the kernel log.
 *
 * Context: module init.
 * Return: 0, -EINVAL, or -EOPNOTSUPP for uio=1 on a kernel without UIO.
 */
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
	/*
	 * Refused here, before any node exists, not when registering: a node
	 * opened while a later init step fails would outlive the module.
	 */
	if (uio && !IS_ENABLED(CONFIG_UIO)) {
		pr_err("uio=1: this kernel has no UIO support (CONFIG_UIO)\n");
		return -EOPNOTSUPP;
	}
	return 0;
}

/**
 * mmapdev_free_devs() - free the devices and their buffers
 *
 * Also after a partial mmapdev_alloc_devs(): vfree(NULL) does nothing.
 *
 * Context: module init or exit; nothing maps or opens the devices.
 */
static void mmapdev_free_devs(void)
{
	unsigned int i;

	for (i = 0; i < ndevices; i++)
		vfree(mmapdev_devs[i].buf);
	kfree(mmapdev_devs);
	mmapdev_devs = NULL;
}

/**
 * mmapdev_check_memory() - refuse buffers the machine cannot hold
 * @size: bytes per device, page-aligned
 *
 * Each buffer alone may be small enough for vmalloc, which refuses only
 * single allocations larger than the RAM; all of them together are not
 * checked by anyone.  The sum is checked before allocating, so that an
 * obvious mistake is refused at once and said so, before reclaim has
 * emptied the page cache for an allocation that cannot succeed.  Memory
 * taken after this check (or counted as available but pinned) is the
 * allocation's own business: see mmapdev_alloc_buf().
 *
 * Context: module init.
 * Return: 0, or -ENOMEM (and says so in the kernel log).
 */
static int __init mmapdev_check_memory(size_t size)
{
	/* At most 64 x 1 GiB in pages: no overflow. */
	unsigned long pages = (size >> PAGE_SHIFT) * ndevices;
	long avail = si_mem_available();

	if (avail < 0 || pages > (unsigned long)avail) {
		pr_err("devices=%u x %zu bytes: %lu pages, more than the %ld pages of memory available\n",
		       ndevices, size, pages, avail);
		return -ENOMEM;
	}
	return 0;
}

/**
 * mmapdev_alloc_buf() - allocate a zeroed buffer, or fail without the OOM
 *	killer
 * @size: bytes, page-aligned
 *
 * A plain GFP_KERNEL vmalloc (vmalloc_user()) never fails an order-0 page:
 * out of memory, it invokes the OOM killer, which kills processes for
 * memory a module buffer never gives back.  __GFP_RETRY_MAYFAIL reclaims
 * as hard but then fails instead: the size is root's choice, and failing
 * the load is the answer to a size the machine cannot hold.  __GFP_NOWARN:
 * the failure is reported by our own message, not a stack dump.
 * __GFP_ZERO: no stale kernel data for user space.  vmalloc_user() would
 * also mark the area VM_USERMAP, which only remap_vmalloc_range() needs:
 * the buffer is mapped page by page by the fault handler (mmap.c).
 *
 * Context: module init.
 * Return: the buffer, or NULL.
 */
static void *__init mmapdev_alloc_buf(size_t size)
{
	return mmapdev_vmalloc(size, GFP_KERNEL | __GFP_ZERO |
			       __GFP_RETRY_MAYFAIL | __GFP_NOWARN);
}

/**
 * mmapdev_alloc_devs() - allocate the devices and their buffers
 *
 * Buffers exist before the cdev goes live (an open can arrive as soon as
 * cdev_add() returns) and are freed only at module exit.
 *
 * Context: module init.
 * Return: 0, or -ENOMEM with nothing left allocated (also when all the
 * buffers together exceed the memory available).
 */
static int __init mmapdev_alloc_devs(void)
{
	size_t size = PAGE_ALIGN(buf_size);
	unsigned int i;
	int ret;

	ret = mmapdev_check_memory(size);
	if (ret)
		return ret;
	mmapdev_devs = kcalloc(ndevices, sizeof(*mmapdev_devs), GFP_KERNEL);
	if (!mmapdev_devs)
		return -ENOMEM;
	for (i = 0; i < ndevices; i++) {
		struct mmapdev_dev *md = &mmapdev_devs[i];

		md->index = i;
		md->size = size;
		md->heartbeat_ms = i == 0 ? heartbeat_ms : 0;
		atomic_set(&md->maps, 0);
		atomic64_set(&md->events, 0);
		mmapdev_wait_init(md);
		md->buf = mmapdev_alloc_buf(size);
		if (!md->buf) {
			pr_err("cannot allocate %zu bytes for mmapdev%u\n", size, i);
			mmapdev_free_devs();
			return -ENOMEM;
		}
	}
	return 0;
}

/**
 * mmapdev_create_class() - create the class "mmapdev"
 *
 * Context: module init.
 * Return: 0, or a negative errno.
 */
static int __init mmapdev_create_class(void)
{
	mmapdev_class = mmapdev_class_create(KBUILD_MODNAME);
	if (IS_ERR(mmapdev_class)) {
		pr_err("cannot create class: %ld\n", PTR_ERR(mmapdev_class));
		return PTR_ERR(mmapdev_class);
	}
	mmapdev_class->devnode = mmapdev_devnode;
	return 0;
}

/**
 * mmapdev_destroy_nodes() - remove the first @count device nodes
 * @count: how many mmapdev_create_nodes() created
 *
 * Context: module init or exit.
 */
static void mmapdev_destroy_nodes(unsigned int count)
{
	while (count--)
		device_destroy(mmapdev_class, mmapdev_devt + count);
}

/**
 * mmapdev_create_nodes() - create /dev/mmapdev0..N-1 with their attributes
 *
 * With groups, the sysfs attributes exist before the uevent announces the
 * device.
 *
 * Context: module init, before cdev_add(): until then an open of a node
 * finds no cdev and fails with -ENXIO.
 * Return: 0, or a negative errno with no node left behind.
 */
static int __init mmapdev_create_nodes(void)
{
	unsigned int i;

	for (i = 0; i < ndevices; i++) {
		struct mmapdev_dev *md = &mmapdev_devs[i];
		struct device *dev;

		dev = device_create_with_groups(mmapdev_class, NULL,
						mmapdev_devt + i, md,
						mmapdev_groups,
						KBUILD_MODNAME "%u", i);
		if (IS_ERR(dev)) {
			pr_err("cannot create mmapdev%u: %ld\n", i, PTR_ERR(dev));
			mmapdev_destroy_nodes(i);
			return PTR_ERR(dev);
		}
		md->dev = dev;
	}
	return 0;
}

/**
 * mmapdev_init() - load the module
 *
 * Each step undoes itself if it fails halfway; the ladder below undoes the
 * steps before it, in reverse order, and mmapdev_exit() undoes them all.
 *
 * Context: module init.
 * Return: 0, or a negative errno (-EINVAL for bad parameters).
 */
static int __init mmapdev_init(void)
{
	int ret;

	ret = mmapdev_check_params();
	if (ret)
		return ret;
	ret = alloc_chrdev_region(&mmapdev_devt, 0, ndevices, KBUILD_MODNAME);
	if (ret) {
		pr_err("cannot allocate a major number: %d\n", ret);
		return ret;
	}
	ret = mmapdev_alloc_devs();
	if (ret)
		goto err_region;
	ret = mmapdev_create_class();
	if (ret)
		goto err_devs;
	ret = mmapdev_create_nodes();
	if (ret)
		goto err_class;
	if (uio) {
		ret = mmapdev_uio_register(&mmapdev_devs[0]);
		if (ret)
			goto err_nodes;
	}
	/* Last: from here on, opens succeed (see the top of the file). */
	cdev_init(&mmapdev_cdev, &mmapdev_fops);
	mmapdev_cdev.owner = THIS_MODULE;
	ret = cdev_add(&mmapdev_cdev, mmapdev_devt, ndevices);
	if (ret) {
		pr_err("cannot add cdev: %d\n", ret);
		goto err_uio;
	}
	if (heartbeat_ms)
		mmapdev_heartbeat_start(&mmapdev_devs[0], heartbeat_ms);

	pr_info("%u device(s) of %zu bytes, mode %#o, heartbeat %u ms%s\n",
		ndevices, mmapdev_devs[0].size, node_mode, heartbeat_ms,
		uio ? ", device 0 as UIO" : "");
	return 0;

err_uio:
	mmapdev_uio_unregister();
err_nodes:
	mmapdev_destroy_nodes(ndevices);
err_class:
	/* class_destroy() unregisters too: no class_unregister() before it. */
	class_destroy(mmapdev_class);
err_devs:
	mmapdev_free_devs();
err_region:
	unregister_chrdev_region(mmapdev_devt, ndevices);
	return ret;
}

/**
 * mmapdev_exit() - unload the module
 *
 * Runs only when nothing holds a device open or mapped (each pins the
 * module), so the buffers can go.
 *
 * Context: module exit.
 */
static void __exit mmapdev_exit(void)
{
	mmapdev_heartbeat_stop();
	cdev_del(&mmapdev_cdev);
	mmapdev_uio_unregister();
	mmapdev_destroy_nodes(ndevices);
	class_destroy(mmapdev_class);
	mmapdev_free_devs();
	unregister_chrdev_region(mmapdev_devt, ndevices);
}

module_init(mmapdev_init);
module_exit(mmapdev_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("pymmapdev authors");
MODULE_DESCRIPTION("Shared, mappable memory buffers with futex-style wait/wake");
MODULE_VERSION("0.1.0");
