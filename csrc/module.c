/*
 * pymmapdev._core: the module object.  A thin table over the files that
 * each own one concern (psutil's layout):
 *
 *	mapping.c	the Mapping type: lifetime, attributes, buffer protocol
 *	gate.c		the access gate: pins, span checks, close(), fork
 *	fault.c		the SIGBUS guard
 *	args.c		argument conversion
 *	access.c	bytes and typed access      atomic.c   atomics
 *	block.c		the one blocking loop       wait.c     wait/wake
 *	peer.c		peer identities, liveness
 *	owner.c		owner words (who holds a side or a lock)
 *	lock.c		the Lock type               slot.c     the Slot type
 *	channel*.c	the Channel type: ring, calls, send/recv, zero copy
 *			(channel_internal.h says which file does what)
 *	pages.c		msync/madvise               array.c    ndarray (numpy)
 *	words.c		read_words/write_words (register files)
 *	device.c	mmapdev GET_INFO, file system space
 *	watch.c		waits split into polls, for asyncio (pymmapdev/_aio.py)
 */
#include "mapping.h"
#include "block.h"
#include "channel.h"
#include "device.h"
#include "lock.h"
#include "pages.h"
#include "peer.h"
#include "slot.h"
#include "wait.h"
#include "watch.h"

#include <errno.h>
#include <pthread.h>
#include <unistd.h>

static struct PyModuleDef core_module;

module_state *
module_state_of(PyObject *module)
{
	return (module_state *)PyModule_GetState(module);
}

module_state *
module_state_of_type(PyTypeObject *type)
{
	/*
	 * By definition, not PyType_GetModuleState(): a Python subclass of
	 * one of our types (pymmapdev.Channel) has no module of its own.
	 * PyType_GetModuleByDef() is 3.11+; on 3.10 walk the MRO the same way.
	 */
#if PY_VERSION_HEX >= 0x030B0000
	PyObject *module = PyType_GetModuleByDef(type, &core_module);

	return module == NULL ? NULL : module_state_of(module);
#else
	PyObject *mro = type->tp_mro;

	for (Py_ssize_t i = 0; mro != NULL && i < PyTuple_GET_SIZE(mro); i++) {
		PyTypeObject *base = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
		PyObject *module;

		if (!(base->tp_flags & Py_TPFLAGS_HEAPTYPE))
			continue;
		module = ((PyHeapTypeObject *)base)->ht_module;
		if (module != NULL && PyModule_GetDef(module) == &core_module)
			return module_state_of(module);
	}
	PyErr_Format(PyExc_TypeError, "%s is not a pymmapdev type", type->tp_name);
	return NULL;
#endif
}

int
type_add_int(PyTypeObject *type, const char *name, long value)
{
	PyObject *obj = PyLong_FromLong(value);
	int rc;

	if (obj == NULL)
		return -1;
	rc = PyDict_SetItemString(type->tp_dict, name, obj);
	Py_DECREF(obj);
	PyType_Modified(type);
	return rc;
}

/* pymmapdev.<name>, a subclass of @base, added to the module. */
static PyObject *
add_exception(PyObject *module, const char *name, const char *doc, PyObject *base)
{
	PyObject *exc = PyErr_NewExceptionWithDoc(name, doc, base, NULL);

	if (exc == NULL || PyModule_AddObjectRef(module, strrchr(name, '.') + 1, exc) < 0) {
		Py_XDECREF(exc);
		return NULL;
	}
	return exc;
}

static PyTypeObject *
add_type(PyObject *module, PyType_Spec *spec, int (*ready)(PyTypeObject *))
{
	PyTypeObject *type = (PyTypeObject *)PyType_FromModuleAndSpec(module, spec, NULL);

	if (type == NULL)
		return NULL;
	if ((ready != NULL && ready(type) < 0) || PyModule_AddType(module, type) < 0) {
		Py_DECREF(type);
		return NULL;
	}
	return type;
}

/* What a forked child must forget: it is a copy with one thread. */
static void
after_fork_in_child(void)
{
	gate_after_fork();
	peer_after_fork();
}

static int
core_exec(PyObject *module)
{
	module_state *st = module_state_of(module);
	static int fork_handler;
	int err;

	if (fault_rearm() < 0) {
		PyErr_SetFromErrno(PyExc_OSError);
		return -1;
	}
	if (!fork_handler) {	/* once per process, however many interpreters */
		err = pthread_atfork(NULL, NULL, after_fork_in_child);
		if (err) {
			errno = err;
			PyErr_SetFromErrno(PyExc_OSError);
			return -1;
		}
		fork_handler = 1;
	}
	st->fault_error = add_exception(
		module, "pymmapdev.MappingFault",
		"The mapped memory could not be accessed (SIGBUS): typically the file\n"
		"was truncated under the mapping by another process.", PyExc_OSError);
	st->peer_died_error = add_exception(
		module, "pymmapdev.PeerDied",
		"A peer process died in the middle of an operation on shared state and\n"
		"left it half done (errno EOWNERDEAD).", PyExc_OSError);
	st->owner_died_warning = add_exception(
		module, "pymmapdev.OwnerDiedWarning",
		"A Lock was acquired from a holder that died inside its critical section.",
		PyExc_RuntimeWarning);
	st->channel_corrupt = add_exception(
		module, "pymmapdev.ChannelCorrupt",
		"A Channel's header or ring holds impossible values: a peer overwrote\n"
		"them.  Nothing outside the channel's region was read or written.",
		PyExc_ValueError);
	/* private: users see a ValueError; open_channel() tells this one from
	 * the others by its class, not by its words */
	st->channel_mismatch = add_exception(
		module, "pymmapdev._core._ChannelMismatch",
		"A region holds a Channel of another capacity or mode than asked for.",
		PyExc_ValueError);
	if (st->fault_error == NULL || st->peer_died_error == NULL ||
	    st->owner_died_warning == NULL || st->channel_corrupt == NULL ||
	    st->channel_mismatch == NULL)
		return -1;

	st->mapping_type = add_type(module, &mapping_type_spec, NULL);
	st->lock_type = add_type(module, &lock_type_spec, lock_type_ready);
	st->slot_type = add_type(module, &slot_type_spec, slot_type_ready);
	st->channel_type = add_type(module, &channel_type_spec, channel_type_ready);
	st->watch_type = add_type(module, &watch_type_spec, watch_type_ready);
	if (st->mapping_type == NULL || st->lock_type == NULL || st->slot_type == NULL ||
	    st->channel_type == NULL || st->watch_type == NULL)
		return -1;

	if (PyModule_AddIntConstant(module, "PAGESIZE", sysconf(_SC_PAGESIZE)) < 0 ||
	    PyModule_AddIntConstant(module, "HAVE_FUTEX_WAITV", watch_have_waitv()) < 0)
		return -1;
	return pages_add_constants(module);
}

static PyObject *
core_rearm(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
	uintptr_t gone = 0, displaced;

	if (nargs > 1) {
		PyErr_Format(PyExc_TypeError,
			     "rearm_fault_handler() takes at most 1 argument (%zd given)", nargs);
		return NULL;
	}
	if (nargs == 1 && args[0] != Py_None) {
		gone = (uintptr_t)PyLong_AsUnsignedLongLong(args[0]);
		if (gone == (uintptr_t)-1 && PyErr_Occurred())
			return NULL;
	}
	if (fault_rearm_over(gone, &displaced) < 0)
		return PyErr_SetFromErrno(PyExc_OSError);
	if (displaced == 0)
		Py_RETURN_NONE;
	return PyLong_FromUnsignedLongLong(displaced);
}

static int
core_traverse(PyObject *module, visitproc visit, void *arg)
{
	module_state *st = module_state_of(module);

	Py_VISIT(st->mapping_type);
	Py_VISIT(st->lock_type);
	Py_VISIT(st->slot_type);
	Py_VISIT(st->channel_type);
	Py_VISIT(st->watch_type);
	Py_VISIT(st->fault_error);
	Py_VISIT(st->channel_corrupt);
	Py_VISIT(st->channel_mismatch);
	Py_VISIT(st->peer_died_error);
	Py_VISIT(st->owner_died_warning);
	return 0;
}

static int
core_clear(PyObject *module)
{
	module_state *st = module_state_of(module);

	Py_CLEAR(st->mapping_type);
	Py_CLEAR(st->lock_type);
	Py_CLEAR(st->slot_type);
	Py_CLEAR(st->channel_type);
	Py_CLEAR(st->watch_type);
	Py_CLEAR(st->fault_error);
	Py_CLEAR(st->channel_corrupt);
	Py_CLEAR(st->channel_mismatch);
	Py_CLEAR(st->peer_died_error);
	Py_CLEAR(st->owner_died_warning);
	return 0;
}

static void
core_free(void *module)
{
	core_clear((PyObject *)module);
}

static PyMethodDef core_functions[] = {
	DEVICE_FUNCTIONS_METHODDEFS	/* device.c */
	BLOCK_FUNCTIONS_METHODDEFS	/* block.c */
	WAIT_FUNCTIONS_METHODDEFS	/* wait.c */
	WATCH_FUNCTIONS_METHODDEFS	/* watch.c */
	{"rearm_fault_handler", (PyCFunction)(void (*)(void))core_rearm, METH_FASTCALL,
	 "rearm_fault_handler($module, gone=None, /)\n--\n\n"
	 "Put the SIGBUS guard's handler back on top of one installed since\n"
	 "(pymmapdev calls this after signal.signal(SIGBUS, ...) and\n"
	 "faulthandler.enable()); returns the function address of the handler\n"
	 "it displaced, or None.  gone: such an address, of a handler its owner\n"
	 "uninstalled (faulthandler.disable()): faults are no longer handed to it."},
	{NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot core_slots[] = {
	{Py_mod_exec, core_exec},
#ifdef Py_mod_multiple_interpreters
	/*
	 * Subinterpreters that share the main GIL, not those with their own:
	 * the module state is per interpreter, but the SIGBUS handler and its
	 * chain, the fork handler and generation and the peer identities are
	 * per process, and nothing here was reviewed for interpreters running
	 * in parallel (nor can pymmapdev/_aio.py start its daemon threads in
	 * them).  This is the default without the slot too: said here so that
	 * nobody widens it by accident (test_lifecycle.py checks).
	 */
	{Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_SUPPORTED},
#endif
	{0, NULL},
};

static struct PyModuleDef core_module = {
	PyModuleDef_HEAD_INIT,
	.m_name = "pymmapdev._core",
	.m_doc = "Shared memory mappings of files and devices.",
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
	return PyModuleDef_Init(&core_module);
}
