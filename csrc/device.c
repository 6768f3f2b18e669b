/*
 * Module-level helpers for mmapdev devices (the kernel module in kmod/).
 * Only what needs the uapi header lives here; opening and mapping a device
 * is done by pymmapdev._open with the ordinary Mapping constructor.
 */
#include "mapping.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#include "mmapdev.h"

/* The dict keys name the fields of struct mmapdev_info one to one. */
static PyObject *
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

PyDoc_STRVAR(device_info_doc,
"device_info(fd) -> dict\n\n"
"ioctl(MMAPDEV_IOC_GET_INFO) on an open mmapdev device: size, events,\n"
"page_size, abi_version, index, heartbeat_ms.  Also marks the device's\n"
"events as seen by this open file, which re-arms poll() on it.\n"
"Raises OSError with the ioctl's errno (ENOTTY: not an mmapdev device).");

PyMethodDef device_functions[] = {
	{"device_info", device_info, METH_O, device_info_doc},
	{NULL, NULL, 0, NULL},
};
