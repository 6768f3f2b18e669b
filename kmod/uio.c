// SPDX-License-Identifier: GPL-2.0
/*
 * uio=1: device 0's buffer also as a UIO device (/dev/uioN, class "uio"),
 * with the heartbeat as its interrupt, for programs written against UIO's
 * conventions: map i at mmap offset i * PAGE_SIZE (here only map 0, the
 * whole buffer), read() of an s32 blocks until the next interrupt and
 * returns the interrupt count, write() of an s32 1 or 0 unmasks or masks.
 *
 * Mappings through UIO are the same pages as through /dev/mmapdev0 and get
 * the same checks and fault handler (mmap.c): the UIO core's own path for
 * vmalloc memory (UIO_MEM_VIRTUAL) would accept private mappings, so we
 * hand it our mmap.  The map's sysfs "addr" shows 0: the real value would
 * be a kernel address, which nobody outside the kernel needs.
 *
 * The interrupt behaves like a level-triggered line whose handler masks
 * it, as uio_pci_generic's does: a heartbeat raises it only while it is
 * unmasked, and masks it; user space unmasks it with write(1) once it has
 * handled one (the irqcontrol hook).  It starts masked.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/stringify.h>
#include <linux/uio_driver.h>

#include "compat.h"
#include "mmapdev_internal.h"

static struct uio_info mmapdev_uio_info;
static atomic_t mmapdev_uio_unmasked;
static bool mmapdev_uio_registered;

/**
 * mmapdev_uio_irqcontrol() - write(2) of 1 or 0 to /dev/uioN
 * @info: our UIO device
 * @irq_on: 1 unmasks the heartbeat interrupt, 0 masks it
 *
 * Context: process context, the UIO core's info_lock held.
 * Return: 0.
 */
static int mmapdev_uio_irqcontrol(struct uio_info *info, s32 irq_on)
{
	atomic_set(&mmapdev_uio_unmasked, irq_on ? 1 : 0);
	return 0;
}

#ifdef MMAPDEV_HAVE_MMAP_PREPARE
/**
 * mmapdev_uio_mmap_prepare() - describe a mapping of map 0
 * @info: our UIO device
 * @desc: the mapping to be; the UIO core checked that it fits map 0
 *
 * Context: process context, mmap_lock held for writing.
 * Return: as mmapdev_desc_setup().
 */
static int mmapdev_uio_mmap_prepare(struct uio_info *info,
				    struct vm_area_desc *desc)
{
	return mmapdev_desc_setup(info->priv, desc);
}
#else
/**
 * mmapdev_uio_mmap() - set up a mapping of map 0
 * @info: our UIO device
 * @vma: the new VMA; the UIO core checked that it fits map 0
 *
 * Context: process context, mmap_lock held for writing.
 * Return: as mmapdev_vma_setup().
 */
static int mmapdev_uio_mmap(struct uio_info *info, struct vm_area_struct *vma)
{
	return mmapdev_vma_setup(info->priv, vma);
}
#endif

/**
 * mmapdev_uio_register() - register a device's buffer as a UIO device
 * @md: the device (device 0)
 *
 * Context: module init, after the device's node exists (its parent).
 * Return: 0, or the negative errno of uio_register_device().
 */
int mmapdev_uio_register(struct mmapdev_dev *md)
{
	struct uio_info *info = &mmapdev_uio_info;
	int ret;

	info->name = KBUILD_MODNAME;
	info->version = __stringify(MMAPDEV_ABI_VERSION);	/* the uapi's */
	info->priv = md;
	info->irq = UIO_IRQ_CUSTOM;
	info->irqcontrol = mmapdev_uio_irqcontrol;
#ifdef MMAPDEV_HAVE_MMAP_PREPARE
	info->mmap_prepare = mmapdev_uio_mmap_prepare;
#else
	info->mmap = mmapdev_uio_mmap;
#endif
	info->mem[0].name = "buffer";
	info->mem[0].memtype = UIO_MEM_VIRTUAL;
	info->mem[0].addr = 0;
	info->mem[0].size = md->size;
	/*
	 * Masked until user space asks: no interrupt is then pending for a
	 * reader that opens the device later.
	 */
	atomic_set(&mmapdev_uio_unmasked, 0);
	ret = uio_register_device(md->dev, info);
	if (ret) {
		pr_err("cannot register mmapdev%u as a UIO device: %d\n", md->index, ret);
		return ret;
	}
	mmapdev_uio_registered = true;
	return 0;
}

/**
 * mmapdev_uio_unregister() - remove the UIO device, if registered
 *
 * Open /dev/uioN files pin the module, so none is left when this runs at
 * exit.  (A failing init cannot wait for them: see kmod/main.c's top.)
 *
 * Context: module exit after the heartbeat stopped, or a failing init.
 */
void mmapdev_uio_unregister(void)
{
	if (!mmapdev_uio_registered)
		return;
	uio_unregister_device(&mmapdev_uio_info);
	mmapdev_uio_registered = false;
}

/**
 * mmapdev_uio_interrupt() - raise the UIO interrupt, unless masked
 *
 * Masks it (see the top of the file).  A no-op without uio=1.
 *
 * Context: process context (the heartbeat's work).
 */
void mmapdev_uio_interrupt(void)
{
	if (mmapdev_uio_registered &&
	    atomic_cmpxchg(&mmapdev_uio_unmasked, 1, 0) == 1)
		uio_event_notify(&mmapdev_uio_info);
}
