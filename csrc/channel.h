/*
 * pymmapdev.Channel (channel.c): a message channel in a mapping.  The
 * Python class in pymmapdev/channel.py adds the context managers, arrays
 * and asyncio on top of this type.
 */
#ifndef PYMMAPDEV_CHANNEL_H
#define PYMMAPDEV_CHANNEL_H

#include "mapping.h"

extern PyType_Spec channel_type_spec;
int channel_type_ready(PyTypeObject *type);

#endif
