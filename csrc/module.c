/*
 * pymmapdev._core: the module object.  A thin table over the files that
 * each own one concern (psutil's layout): mapping.c (the Mapping type),
 * atomic.c and wait.c (its synchronisation methods), lock.c (robust mutex
 * primitives), device.c (mmapdev ioctls), fault.c (SIGBUS guard).
 */
#include "mapping.h"

#include <sys/mman.h>

module_state *
mapping_module_state(PyObject *module)
{
	return (module_state *)PyModule_GetState(module);
}

static int
add_madvise_constants(PyObject *module)
{
#define ADD(name) if (PyModule_AddIntConstant(module, #name, name) < 0) return -1
	ADD(MADV_NORMAL);
	ADD(MADV_RANDOM);
	ADD(MADV_SEQUENTIAL);
	ADD(MADV_WILLNEED);
	ADD(MADV_DONTNEED);
	ADD(MADV_REMOVE);
	ADD(MADV_DONTFORK);
	ADD(MADV_DOFORK);
	ADD(MADV_HUGEPAGE);
	ADD(MADV_NOHUGEPAGE);
	ADD(MADV_DONTDUMP);
	ADD(MADV_DODUMP);
#ifdef MADV_FREE
	ADD(MADV_FREE);
#endif
#ifdef MADV_COLD
	ADD(MADV_COLD);
	ADD(MADV_PAGEOUT);
#endif
#ifdef MADV_POPULATE_READ
	ADD(MADV_POPULATE_READ);
	ADD(MADV_POPULATE_WRITE);
#endif
#undef ADD
	return 0;
}

static int
core_exec(PyObject *module)
{
	module_state *state = mapping_module_state(module);
	PyObject *bases = NULL;

	if (fault_handler_install() < 0) {
		PyErr_SetFromErrno(PyExc_OSError);
		return -1;
	}

	if (mapping_type_prepare() < 0)
		return -1;

	bases = PyTuple_Pack(1, PyExc_OSError);
	if (bases == NULL)
		return -1;
	state->fault_error = PyErr_NewExceptionWithDoc(
		"pymmapdev.MappingFault",
		"The mapped memory could not be accessed (SIGBUS): typically the\n"
		"file was truncated under the mapping by another process.",
		bases, NULL);
	Py_DECREF(bases);
	if (state->fault_error == NULL)
		return -1;
	if (PyModule_AddObjectRef(module, "MappingFault", state->fault_error) < 0)
		return -1;

	state->mapping_type = (PyTypeObject *)PyType_FromModuleAndSpec(
		module, &mapping_type_spec, NULL);
	if (state->mapping_type == NULL)
		return -1;
	if (PyModule_AddType(module, state->mapping_type) < 0)
		return -1;

	if (PyModule_AddIntConstant(module, "PAGESIZE", sysconf(_SC_PAGESIZE)) < 0)
		return -1;
	return add_madvise_constants(module);
}

static int
core_traverse(PyObject *module, visitproc visit, void *arg)
{
	module_state *state = mapping_module_state(module);

	Py_VISIT(state->mapping_type);
	Py_VISIT(state->fault_error);
	return 0;
}

static int
core_clear(PyObject *module)
{
	module_state *state = mapping_module_state(module);

	Py_CLEAR(state->mapping_type);
	Py_CLEAR(state->fault_error);
	return 0;
}

static void
core_free(void *module)
{
	core_clear((PyObject *)module);
}

/*
 * Module-level functions come from several files; PyModuleDef wants one
 * array, so it is assembled once from the per-file tables.
 */
static PyMethodDef *const function_tables[] = {
	device_functions,
	lock_functions,
	slot_functions,
	wait_functions,
};

static PyMethodDef core_functions[64];

int
method_tables_join(PyMethodDef *out, size_t cap, PyMethodDef *const *tables,
		   size_t ntables)
{
	size_t n = 0;

	for (size_t t = 0; t < ntables; t++) {
		for (const PyMethodDef *def = tables[t]; def->ml_name != NULL; def++) {
			if (n + 1 >= cap) {	/* keep room for the sentinel */
				PyErr_SetString(PyExc_SystemError,
						"pymmapdev._core: method table too small");
				return -1;
			}
			out[n++] = *def;
		}
	}
	out[n] = (PyMethodDef){NULL};
	return 0;
}

static PyModuleDef_Slot core_slots[] = {
	{Py_mod_exec, core_exec},
	{0, NULL},
};

static struct PyModuleDef core_module = {
	PyModuleDef_HEAD_INIT,
	.m_name = "pymmapdev._core",
	.m_doc = "Shared memory mappings of files and mmapdev devices.",
	.m_size = sizeof(module_state),
	.m_methods = core_functions,
	.m_slots = core_slots,
	.m_traverse = core_traverse,
	.m_clear = core_clear,
	.m_free = core_free,
};

PyMODINIT_FUNC
PyInit__core(void)
{
	if (core_functions[0].ml_name == NULL &&
	    method_tables_join(core_functions, Py_ARRAY_LENGTH(core_functions),
			       function_tables, Py_ARRAY_LENGTH(function_tables)) < 0)
		return NULL;
	return PyModuleDef_Init(&core_module);
}
