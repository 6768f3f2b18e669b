/*
 * Helpers for mmapdev devices and the files behind mappings (device.c).
 */
#ifndef PYMMAPDEV_DEVICE_H
#define PYMMAPDEV_DEVICE_H

#include "mapping.h"

PyObject *device_info(PyObject *module, PyObject *arg);
PyObject *device_fs_space(PyObject *module, PyObject *arg);

#define DEVICE_FUNCTIONS_METHODDEFS						\
	{"device_info", device_info, METH_O,					\
	 "device_info(fd, /)\n--\n\n"						\
	 "ioctl(MMAPDEV_IOC_GET_INFO) on an open mmapdev device: size, events,\n" \
	 "page_size, abi_version, index, heartbeat_ms.  Also marks the device's\n" \
	 "events as seen by this open file, which re-arms poll() on it.\n"	\
	 "Raises OSError with the ioctl's errno (ENOTTY: not an mmapdev device)."}, \
	{"fs_space", device_fs_space, METH_O,					\
	 "fs_space(fd, /)\n--\n\n"						\
	 "(is_tmpfs, bytes_available or None: no limit) of the file system\n" \
	 "holding fd (fstatfs): " \
	 "what open_file() and anonymous() check before reserving memory."},

#endif
