/*
 * pymmapdev.Slot (slot.c): a seqlock "latest value" cell.
 */
#ifndef PYMMAPDEV_SLOT_H
#define PYMMAPDEV_SLOT_H

#include "mapping.h"

extern PyType_Spec slot_type_spec;
int slot_type_ready(PyTypeObject *type);

#endif
