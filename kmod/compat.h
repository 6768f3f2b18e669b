/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Every kernel-version difference the module cares about, in one place: the
 * rest of kmod/ is written against the newest API and never tests
 * LINUX_VERSION_CODE itself.  Each shim names the release that changed and
 * what changed.  Checked by building against 5.10, 6.1, 6.12, 7.2 and 7.3
 * (the kernel matrix of tests/vm/run.sh); the module claims 5.4 and later.
 */
#ifndef MMAPDEV_COMPAT_H
#define MMAPDEV_COMPAT_H

#include <linux/compat.h>
#include <linux/device.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/version.h>

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

/* 5.10: sysfs_emit(). */
#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 10, 0)
#define sysfs_emit(buf, fmt, ...) scnprintf(buf, PAGE_SIZE, fmt, ##__VA_ARGS__)
#endif

/*
 * 5.5: compat_ptr_ioctl(), for ioctls whose structs have the same layout
 * for 32- and 64-bit callers, so that only the pointer needs converting.
 * Older kernels get the same function here.
 */
#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 5, 0)
#ifdef CONFIG_COMPAT
static inline long compat_ptr_ioctl(struct file *file, unsigned int cmd,
				    unsigned long arg)
{
	return file->f_op->unlocked_ioctl(file, cmd,
					  (unsigned long)compat_ptr(arg));
}
#else
#define compat_ptr_ioctl NULL
#endif
#endif

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
