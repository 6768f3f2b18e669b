/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Every kernel-version difference the module cares about, in one place: the
 * rest of kmod/ is written against the newest API and never tests
 * LINUX_VERSION_CODE itself.  Each shim names the release that changed and
 * what changed.  Checked by building against 5.10, 6.1, 6.12, 7.2 and 7.3
 * (the kernel matrix of tests/vm/run.sh); the module claims 5.4 and later,
 * which only a build by hand checked (W=1 against Ubuntu 20.04's 5.4.0-216
 * headers, 5.4.291): nothing keeps it so.
 */
#ifndef MMAPDEV_COMPAT_H
#define MMAPDEV_COMPAT_H

#include <linux/compat.h>
#include <linux/device.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/nsproxy.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/version.h>
#include <linux/vmalloc.h>

/*
 * 5.6: time namespaces, and with them <linux/time_namespace.h>; 5.4 has
 * neither.  Only mmapdev_monotonic_to_host() needs it, under CONFIG_TIME_NS.
 */
#ifdef CONFIG_TIME_NS
#include <linux/time_namespace.h>
#endif

/* 6.2: the class devnode() callback takes a const struct device. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 2, 0)
#define MMAPDEV_DEVNODE_CONST const
#else
#define MMAPDEV_DEVNODE_CONST
#endif

/**
 * mmapdev_class_create() - class_create() of every kernel
 * @name: the class name
 *
 * class_create() lost its owner argument in 6.4.
 *
 * Context: process context, may sleep.
 * Return: the class, or an ERR_PTR().
 */
static inline struct class *mmapdev_class_create(const char *name)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 4, 0)
	return class_create(name);
#else
	return class_create(THIS_MODULE, name);
#endif
}

/*
 * kzalloc_obj(): the typed allocator of 7.x kernels (7.2 has it), a macro;
 * the same thing for older ones.
 */
#ifndef kzalloc_obj
#define kzalloc_obj(var) kzalloc(sizeof(var), GFP_KERNEL)
#endif

/**
 * mmapdev_vmalloc() - __vmalloc() of every kernel
 * @size: bytes
 * @gfp: the allocation flags
 *
 * __vmalloc() lost its pgprot_t argument in 5.8 (PAGE_KERNEL before).
 * Every kernel from 5.4 passes @gfp on to the page allocator, including
 * __GFP_RETRY_MAYFAIL.  Late 6.x kernels warn about and strip flags
 * outside GFP_VMALLOC_SUPPORTED; a fix of that list added
 * __GFP_RETRY_MAYFAIL, and 7.2 and 7.3 load the module without the
 * warning (tests/vm/run.sh --kernel sid / experimental).
 *
 * Context: process context, may sleep.
 * Return: the memory, or NULL.
 */
static inline void *mmapdev_vmalloc(unsigned long size, gfp_t gfp)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 8, 0)
	return __vmalloc(size, gfp);
#else
	return __vmalloc(size, gfp, PAGE_KERNEL);
#endif
}

/* DEVICE_ATTR_ADMIN_RO() (mode 0400): 5.10 has it, 5.4 may not. */
#ifndef DEVICE_ATTR_ADMIN_RO
#define DEVICE_ATTR_ADMIN_RO(_name) \
	struct device_attribute dev_attr_##_name = __ATTR_RO_MODE(_name, 0400)
#endif

/* 5.10: sysfs_emit(). */
#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 10, 0)
#define sysfs_emit(buf, fmt, ...) scnprintf(buf, PAGE_SIZE, fmt, ##__VA_ARGS__)
#endif

/*
 * 5.5: compat_ptr_ioctl(), for ioctls whose structs have the same layout
 * for 32- and 64-bit callers, so that only the pointer needs converting.
 * Older kernels get the same function here, under our own name: a 5.4
 * kernel may have it backported (Ubuntu 20.04's 5.4.0-216 declares it),
 * and a second definition of it does not build.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 5, 0)
#define mmapdev_compat_ioctl compat_ptr_ioctl
#elif defined(CONFIG_COMPAT)
static inline long mmapdev_compat_ioctl(struct file *file, unsigned int cmd,
					unsigned long arg)
{
	return file->f_op->unlocked_ioctl(file, cmd,
					  (unsigned long)compat_ptr(arg));
}
#else
#define mmapdev_compat_ioctl NULL
#endif

/**
 * mmapdev_monotonic_to_host() - a CLOCK_MONOTONIC time of the caller as
 *	the host's
 * @tim: an absolute CLOCK_MONOTONIC time as the caller reads the clock
 *
 * A time namespace (5.6) offsets the CLOCK_MONOTONIC its tasks read;
 * hrtimers run on the host's.  timens_ktime_to_host() converts, as futex()
 * does, but its worker do_timens_ktime_to_host() is exported to modules
 * only from 7.x (not in 6.12): the same conversion here, for every kernel.
 * A time before the namespace's offset is already past (0).
 *
 * Context: process context (reads current's namespace).
 * Return: the same instant on the host's CLOCK_MONOTONIC.
 */
static inline ktime_t mmapdev_monotonic_to_host(ktime_t tim)
{
#ifdef CONFIG_TIME_NS
	ktime_t offset =
		timespec64_to_ktime(current->nsproxy->time_ns->offsets.monotonic);

	if (tim < offset)
		return 0;
	if (offset < 0 && tim > KTIME_MAX + offset)
		return KTIME_MAX;
	return ktime_sub(tim, offset);
#else
	return tim;
#endif
}

/*
 * 7.2: f_op->mmap_prepare() (the successor of the deprecated ->mmap(), and
 * mutually exclusive with it) together with vm_operations_struct->mapped()
 * (where a driver counts a mapping once it exists) and the vma_desc_*()
 * flag accessors.  mmap_prepare appeared in 6.16, but without ->mapped a
 * driver that counts its mappings must keep ->mmap there; ->mapped landed
 * during 7.1 development and is verified here from 7.2 on, so 7.2 is where
 * the module switches.  Below it, ->mmap works unchanged.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(7, 2, 0)
#define MMAPDEV_HAVE_MMAP_PREPARE 1
#else
/**
 * mmapdev_vma_mayshare() - whether a VMA comes from mmap(MAP_SHARED)
 * @vma: the VMA being set up by ->mmap
 *
 * Only ->mmap kernels read vma->vm_flags directly: those that are
 * converting it into vma->flags take the mmap_prepare path, which reads
 * the flags with vma_desc_test().
 *
 * Context: any.
 * Return: true for a shared mapping (even if read-only).
 */
static inline bool mmapdev_vma_mayshare(const struct vm_area_struct *vma)
{
	return vma->vm_flags & VM_MAYSHARE;
}

/**
 * mmapdev_vm_flags_set() - add flags to a VMA being set up by ->mmap
 * @vma: the VMA
 * @flags: VM_* flags to add
 *
 * 6.3 made vm_flags read-only; writers go through vm_flags_set().
 *
 * Context: ->mmap, mmap_lock held for writing.
 */
static inline void mmapdev_vm_flags_set(struct vm_area_struct *vma,
					vm_flags_t flags)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
	vm_flags_set(vma, flags);
#else
	vma->vm_flags |= flags;
#endif
}
#endif /* MMAPDEV_HAVE_MMAP_PREPARE */

#endif /* MMAPDEV_COMPAT_H */
