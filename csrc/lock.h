/*
 * pymmapdev.Lock (lock.c): a process-shared lock of plain words.
 */
#ifndef PYMMAPDEV_LOCK_H
#define PYMMAPDEV_LOCK_H

#include "mapping.h"

extern PyType_Spec lock_type_spec;
int lock_type_ready(PyTypeObject *type);

#endif
