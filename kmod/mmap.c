// SPDX-License-Identifier: GPL-2.0
/*
 * Mapping a device buffer: the checks of mmap(), the VMA operations and
 * the fault handler that maps the buffer's pages.
 *
 * Pages are mapped on first touch by mmapdev_vm_fault(), on every kernel,
 * whether the mapping was set up by ->mmap or by ->mmap_prepare.  The same
 * handler brings a page back after anything zapped the page tables:
 * madvise(MADV_DONTNEED) (and MADV_DONTNEED_LOCKED, process_madvise(),
 * MADV_PAGEOUT's relatives, whatever a later kernel adds) would otherwise
 * leave the range with no page and every later access would die of
 * SIGBUS.  Refusing the advice is not an option a driver has: there is no
 * madvise hook, and the one way to make MADV_DONTNEED fail (a VM_PFNMAP
 * VMA) means remap_pfn_range() on vmalloc memory, which is wrong, and
 * still leaves the other zappers.  A fault handler is also what
 * ->mmap_prepare expects (it cannot insert pages: there is no VMA yet), so
 * both paths share one way of mapping.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/sched.h>
#include <linux/vmalloc.h>

#include "compat.h"
#include "mmapdev_internal.h"

/**
 * mmapdev_range_ok() - whether a mapping lies inside the buffer
 * @md: the device
 * @pgoff: the mapping's offset in pages
 * @pages: the mapping's length in pages
 *
 * Written so that neither side can overflow.
 *
 * Context: any.
 * Return: true if [@pgoff, @pgoff + @pages) is inside the buffer.
 */
static bool mmapdev_range_ok(const struct mmapdev_dev *md, unsigned long pgoff,
			     unsigned long pages)
{
	unsigned long size = md->size >> PAGE_SHIFT;

	return pgoff < size && pages <= size - pgoff;
}

/*
 * VMAs are counted for the sysfs "maps" attribute: split, fork and mremap
 * call ->open on the new VMA, munmap and exit call ->close; a new mapping
 * is counted by ->mapped or by ->mmap itself.
 */
static void mmapdev_vm_open(struct vm_area_struct *vma)
{
	struct mmapdev_dev *md = vma->vm_private_data;

	atomic_inc(&md->maps);
}

static void mmapdev_vm_close(struct vm_area_struct *vma)
{
	struct mmapdev_dev *md = vma->vm_private_data;

	atomic_dec(&md->maps);
}

/**
 * mmapdev_vm_fault() - map the buffer page behind a faulting address
 * @vmf: the fault; @vmf->pgoff is the page's index in the whole buffer
 *
 * Hands the core the vmalloc page itself, with a reference that the core
 * drops when it unmaps the page again.  The page never goes away (the
 * buffer lives as long as the module, which every mapping pins), so the
 * same bytes come back however often the page tables are zapped.
 *
 * Context: page fault handler, mmap_lock or the VMA lock held for reading.
 * Return: 0 with @vmf->page set, or VM_FAULT_SIGBUS for a page outside
 * the buffer (which the checks at mmap time and VM_DONTEXPAND rule out).
 */
static vm_fault_t mmapdev_vm_fault(struct vm_fault *vmf)
{
	struct mmapdev_dev *md = vmf->vma->vm_private_data;
	struct page *page;

	if (!mmapdev_range_ok(md, vmf->pgoff, 1))
		return VM_FAULT_SIGBUS;
	page = vmalloc_to_page(md->buf + (vmf->pgoff << PAGE_SHIFT));
	get_page(page);
	vmf->page = page;
	return 0;
}

#ifdef MMAPDEV_HAVE_MMAP_PREPARE
/**
 * mmapdev_vm_mapped() - count a mapping that now exists
 * @start: its first address
 * @end: the address after its last one
 * @pgoff: its offset in the buffer, in pages
 * @file: the file it maps: a device node, ours or /dev/uioN (uio.c)
 * @vm_private_data: the VMA's private data: the device, set by
 *	mmapdev_desc_setup()
 *
 * ->mmap_prepare runs before the mapping is certain (it may still fail or
 * merge), so it must not count it; this runs once it exists.  Our VMAs
 * never merge (VM_DONTEXPAND is one of the flags that forbid it), so every
 * successful mmap() passes here once.  The device comes from the private
 * data, not from @file, which may be UIO's.
 *
 * Context: process context, mmap_lock held for writing.
 * Return: 0.
 */
static int mmapdev_vm_mapped(unsigned long start, unsigned long end,
			     pgoff_t pgoff, const struct file *file,
			     void **vm_private_data)
{
	struct mmapdev_dev *md = *vm_private_data;

	atomic_inc(&md->maps);
	return 0;
}
#endif

static const struct vm_operations_struct mmapdev_vm_ops = {
	.open = mmapdev_vm_open,
	.close = mmapdev_vm_close,
#ifdef MMAPDEV_HAVE_MMAP_PREPARE
	.mapped = mmapdev_vm_mapped,
#endif
	.fault = mmapdev_vm_fault,
};

/*
 * Both paths refuse the same mappings:
 * - private ones: a private mapping would copy-on-write driver pages into
 *   anonymous pages and silently stop sharing.  They test VM_MAYSHARE, not
 *   VM_SHARED: the core clears VM_SHARED on a MAP_SHARED mapping of a
 *   read-only open (it can never write).
 * - ranges not inside the buffer.
 * And both set VM_DONTEXPAND (the buffer cannot grow: mremap fails) and
 * VM_DONTDUMP (it is not the process's memory: no core dumps of it).
 */
#ifdef MMAPDEV_HAVE_MMAP_PREPARE
/**
 * mmapdev_desc_setup() - describe a mapping of a device's buffer
 * @md: the device
 * @desc: the mapping to be; the VMA does not exist yet.  Its pgoff counts
 *	pages of the buffer (UIO's map 0 is at pgoff 0 too).
 *
 * Context: process context, mmap_lock held for writing.
 * Return: 0, or -EINVAL for a private mapping or a range outside the buffer.
 */
int mmapdev_desc_setup(struct mmapdev_dev *md, struct vm_area_desc *desc)
{
	if (!vma_desc_test(desc, VMA_MAYSHARE_BIT))
		return -EINVAL;
	if (!mmapdev_range_ok(md, desc->pgoff, vma_desc_pages(desc)))
		return -EINVAL;
	vma_desc_set_flags(desc, VMA_DONTEXPAND_BIT, VMA_DONTDUMP_BIT);
	desc->vm_ops = &mmapdev_vm_ops;
	desc->private_data = md;
	pr_debug("mmapdev%u: mmap pgoff %lu, %lu pages, pid %d\n", md->index,
		 desc->pgoff, vma_desc_pages(desc), task_pid_nr(current));
	return 0;
}

/**
 * mmapdev_mmap_prepare() - describe a mapping of /dev/mmapdevN
 * @desc: the mapping to be
 *
 * Context: process context, mmap_lock held for writing.
 * Return: as mmapdev_desc_setup().
 */
int mmapdev_mmap_prepare(struct vm_area_desc *desc)
{
	return mmapdev_desc_setup(mmapdev_of(desc->file), desc);
}
#else
/**
 * mmapdev_vma_setup() - set up a mapping of a device's buffer
 * @md: the device
 * @vma: the new VMA; its vm_pgoff counts pages of the buffer (UIO's map 0
 *	is at pgoff 0 too)
 *
 * Context: process context, mmap_lock held for writing.
 * Return: 0, or -EINVAL for a private mapping or a range outside the buffer.
 */
int mmapdev_vma_setup(struct mmapdev_dev *md, struct vm_area_struct *vma)
{
	if (!mmapdev_vma_mayshare(vma))
		return -EINVAL;
	if (!mmapdev_range_ok(md, vma->vm_pgoff, vma_pages(vma)))
		return -EINVAL;
	mmapdev_vm_flags_set(vma, VM_DONTEXPAND | VM_DONTDUMP);
	vma->vm_ops = &mmapdev_vm_ops;
	vma->vm_private_data = md;
	mmapdev_vm_open(vma);	/* mmap() itself does not call ->open */
	pr_debug("mmapdev%u: mmap pgoff %lu, %lu pages, pid %d\n", md->index,
		 vma->vm_pgoff, vma_pages(vma), task_pid_nr(current));
	return 0;
}

/**
 * mmapdev_mmap() - set up a mapping of /dev/mmapdevN
 * @file: the device file
 * @vma: the new VMA
 *
 * Context: process context, mmap_lock held for writing.
 * Return: as mmapdev_vma_setup().
 */
int mmapdev_mmap(struct file *file, struct vm_area_struct *vma)
{
	return mmapdev_vma_setup(mmapdev_of(file), vma);
}
#endif
