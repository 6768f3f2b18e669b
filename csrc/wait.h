/*
 * Mapping.wait()/wake() (wait.c) and the spin setting (block.c).
 */
#ifndef PYMMAPDEV_WAIT_H
#define PYMMAPDEV_WAIT_H

#include "mapping.h"

PyObject *wait_wait(MappingObject *self, PyObject *const *args, Py_ssize_t nargs,
		    PyObject *kwnames);
PyObject *wait_wake(MappingObject *self, PyObject *const *args, Py_ssize_t nargs,
		    PyObject *kwnames);
PyObject *wait_wait_async(MappingObject *self, PyObject *const *args, Py_ssize_t nargs,
			  PyObject *kwnames);

#define WAIT_METHODDEFS								\
	{"wait", (PyCFunction)(void (*)(void))wait_wait, METH_FASTCALL | METH_KEYWORDS, \
	 "wait($self, /, offset, expected, timeout=None, spin=None)\n--\n\n"	\
	 "Sleep while the aligned u32 at offset equals expected.\n\n"		\
	 "Spins for `spin` rounds first (default: get_spin()), then sleeps\n"	\
	 "with the GIL released.  Returns True when woken or when the word\n"	\
	 "differs, False when `timeout` seconds pass (None: no limit).\n"	\
	 "Signal handlers run while waiting (Ctrl-C raises\n"			\
	 "KeyboardInterrupt).  Wake-ups may be spurious: re-check the word."},	\
	{"wake", (PyCFunction)(void (*)(void))wait_wake, METH_FASTCALL | METH_KEYWORDS, \
	 "wake($self, /, offset, count=1)\n--\n\n"				\
	 "Wake at most count processes or threads waiting on the aligned\n"	\
	 "u32 at offset; returns how many were woken (on an mmapdev device,\n"	\
	 "waiters of read-only opens are woken too and not counted)."},	\
	{"wait_async", (PyCFunction)(void (*)(void))wait_wait_async,		\
	 METH_FASTCALL | METH_KEYWORDS,						\
	 "wait_async($self, /, offset, expected, timeout=None)\n--\n\n"	\
	 "wait() for asyncio: a coroutine with wait()'s result that never\n"	\
	 "blocks the event loop and can be cancelled.  Files and memfds sleep\n" \
	 "in a shared waiter thread, mmapdev devices in the loop's own poll\n"	\
	 "of the device; any wake-up on such a device (another word's, the\n"	\
	 "heartbeat) ends the wait too: re-check the word."},

/* module function (wait.c) */
PyObject *wait_watch_word(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

#define WAIT_FUNCTIONS_METHODDEFS						\
	{"watch_word", (PyCFunction)(void (*)(void))wait_watch_word, METH_FASTCALL, \
	 "watch_word(mapping, offset, expected, /)\n--\n\n"			\
	 "A Watch of wait()'s condition (pymmapdev._aio awaits it): over when\n" \
	 "the aligned u32 at offset differs from expected or is woken."},

#endif
