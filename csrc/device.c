/*
 * Module-level helpers that need a descriptor, not a Mapping: the mmapdev
 * GET_INFO ioctl (the uapi header's one user outside block.c), and the
 * file system behind a descriptor.  Opening and mapping happen in
 * pymmapdev._open with the ordinary Mapping constructor.
 */
#include "device.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/vfs.h>
#include <linux/magic.h>

#include "mmapdev.h"

/* The dict keys name the fields of struct mmapdev_info one to one. */
PyObject *
device_info(PyObject *Py_UNUSED(module), PyObject *arg)
{
	struct mmapdev_info info;
	int fd, rc;

	fd = PyObject_AsFileDescriptor(arg);
	if (fd < 0)
		return NULL;

	memset(&info, 0, sizeof(info));
	Py_BEGIN_ALLOW_THREADS
	rc = ioctl(fd, MMAPDEV_IOC_GET_INFO, &info);
	Py_END_ALLOW_THREADS
	if (rc < 0)
		/* ENOTTY: not an mmapdev device; the caller words that. */
		return PyErr_SetFromErrno(PyExc_OSError);

	return Py_BuildValue(
		"{s:K,s:K,s:I,s:I,s:I,s:I}",
		"size", (unsigned long long)info.size,
		"events", (unsigned long long)info.events,
		"page_size", (unsigned int)info.page_size,
		"abi_version", (unsigned int)info.abi_version,
		"index", (unsigned int)info.index,
		"heartbeat_ms", (unsigned int)info.heartbeat_ms);
}

PyObject *
device_fs_space(PyObject *Py_UNUSED(module), PyObject *arg)
{
	struct statfs st;
	int fd, rc;

	fd = PyObject_AsFileDescriptor(arg);
	if (fd < 0)
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	rc = fstatfs(fd, &st);
	Py_END_ALLOW_THREADS
	if (rc < 0)
		return PyErr_SetFromErrno(PyExc_OSError);
	/* f_blocks 0: no size limit (the memfd mount, tmpfs with size=0) */
	if (st.f_blocks == 0)
		return Py_BuildValue("(NO)", PyBool_FromLong(st.f_type == TMPFS_MAGIC), Py_None);
	return Py_BuildValue("(NK)", PyBool_FromLong(st.f_type == TMPFS_MAGIC),
			     (unsigned long long)st.f_bavail * (unsigned long long)st.f_bsize);
}
