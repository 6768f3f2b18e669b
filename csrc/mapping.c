/*
 * The Mapping type: lifetime, attributes, the buffer protocol, and the one
 * method table (each entry block comes from the file that implements it).
 * Modelled on CPython's Modules/mmapmodule.c; the checks every access makes
 * live in gate.c, the fault guard in fault.c.
 */
#include "mapping.h"
#include "access.h"
#include "args.h"
#include "array.h"
#include "atomic.h"
#include "pages.h"
#include "wait.h"
#include "words.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "structmember.h"

module_state *
mapping_state_of(MappingObject *self)
{
	return (module_state *)PyType_GetModuleState(Py_TYPE(self));
}

int
arg_mapping(module_state *st, const char *fname, PyObject *obj, MappingObject **out)
{
	if (!PyObject_TypeCheck(obj, st->mapping_type)) {
		PyErr_Format(PyExc_TypeError, "%s() needs a pymmapdev.Mapping, not %.100s",
			     fname, Py_TYPE(obj)->tp_name);
		return -1;
	}
	*out = (MappingObject *)obj;
	return 0;
}

/* ---- faults ------------------------------------------------------------ */

/* The Mapping a buffer views, or NULL (a memoryview's exporter counts). */
static MappingObject *
buffer_owner(module_state *st, const Py_buffer *view)
{
	PyObject *obj = view->obj;

	if (obj != NULL && PyMemoryView_Check(obj))
		obj = PyMemoryView_GET_BUFFER(obj)->obj;
	if (obj != NULL && PyObject_TypeCheck(obj, st->mapping_type))
		return (MappingObject *)obj;
	return NULL;
}

const char *
mapping_fault_cause(const MappingObject *map)
{
	return map->kind == MAPPING_KIND_DEVICE
		? "the driver provides no page there (was the range madvise()d away, "
		  "or does the device not back it?)"
		: "was the file truncated by another process?";
}

static PyObject *
raise_fault_at(MappingObject *map, Py_ssize_t offset, const char *side)
{
	const char *cause = mapping_fault_cause(map);
	PyObject *message, *args;

	message = PyUnicode_FromFormat("bus error %sat offset %zd of the mapping of %zd bytes: %s",
				       side, offset, map->size, cause);
	if (message == NULL)
		return NULL;
	args = Py_BuildValue("(iNO)", EFAULT, message, map->path);
	if (args == NULL)
		return NULL;
	PyErr_SetObject(mapping_state_of(map)->fault_error, args);
	Py_DECREF(args);
	return NULL;
}

PyObject *
mapping_raise_fault(MappingObject *map, const char *addr, const Py_buffer *source)
{
	return mapping_raise_copy_fault(map, addr, source, 1);
}

PyObject *
mapping_raise_copy_fault(MappingObject *map, const char *addr, const Py_buffer *other,
			 int other_is_source)
{
	module_state *st = mapping_state_of(map);
	MappingObject *owner;
	PyObject *args;

	if (addr >= map->data && addr < map->data + map->size)
		return raise_fault_at(map, addr - map->data, "");
	if (other != NULL && addr >= (const char *)other->buf &&
	    addr < (const char *)other->buf + other->len) {
		owner = buffer_owner(st, other);
		if (owner != NULL && addr >= owner->data && addr < owner->data + owner->size)
			return raise_fault_at(owner, addr - owner->data,
					      other_is_source ? "reading the source "
							      : "writing the destination ");
		args = Py_BuildValue(
			"(iN)", EFAULT,
			PyUnicode_FromFormat("bus error %s byte %zd of the %s buffer "
					     "(a mapping of a file that was truncated?)",
					     other_is_source ? "reading" : "writing",
					     (Py_ssize_t)(addr - (const char *)other->buf),
					     other_is_source ? "source" : "destination"));
		if (args != NULL) {
			PyErr_SetObject(st->fault_error, args);
			Py_DECREF(args);
		}
		return NULL;
	}
	/* A fault at an address we did not name: a bug of ours, said so. */
	PyErr_Format(PyExc_SystemError, "bus error at %p outside the guarded spans", addr);
	return NULL;
}

/* ---- lifetime ---------------------------------------------------------- */

static const char *const waker_names[] = {
	[MAPPING_WAKE_FUTEX] = "futex",
	[MAPPING_WAKE_MMAPDEV] = "mmapdev",
	[MAPPING_WAKE_POLL] = "poll",
};

/* waker= of the constructor; None: what the kind implies. */
static int
set_waker(MappingObject *self, const char *wake)
{
	if (wake == NULL)
		self->wake = self->kind == MAPPING_KIND_DEVICE ? MAPPING_WAKE_MMAPDEV
							       : MAPPING_WAKE_FUTEX;
	else if (strcmp(wake, "futex") == 0)
		self->wake = MAPPING_WAKE_FUTEX;
	else if (strcmp(wake, "mmapdev") == 0 && self->kind == MAPPING_KIND_DEVICE)
		self->wake = MAPPING_WAKE_MMAPDEV;
	else if (strcmp(wake, "poll") == 0)
		self->wake = MAPPING_WAKE_POLL;
	else {
		PyErr_Format(PyExc_ValueError,
			     "waker must be 'futex', 'poll' or (devices) 'mmapdev', not '%s'",
			     wake);
		return -1;
	}
	return 0;
}

static PyObject *
mapping_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
	static char *kwlist[] = {"fd", "size", "offset", "readonly", "kind", "path",
				 "populate", "waker", NULL};
	int fd, readonly = 0, populate = 0, saved_errno, rc;
	Py_ssize_t size, offset = 0, lead;
	const char *kind = "file", *waker = NULL;
	PyObject *path = Py_None;
	MappingObject *self;
	long page = sysconf(_SC_PAGESIZE);
	char *base;

	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "in|n$psOpz:Mapping", kwlist, &fd, &size,
					 &offset, &readonly, &kind, &path, &populate, &waker))
		return NULL;
	if (size <= 0) {
		PyErr_Format(PyExc_ValueError, "size must be positive, not %zd", size);
		return NULL;
	}
	if (offset < 0) {
		PyErr_Format(PyExc_ValueError, "offset %zd is negative", offset);
		return NULL;
	}
	/* The enclosing pages are mapped; the Mapping covers [offset, offset + size). */
	lead = offset % page;
	if (size > PY_SSIZE_T_MAX - lead) {
		PyErr_Format(PyExc_ValueError, "size %zd is too large", size);
		return NULL;
	}
	if (path != Py_None && !PyUnicode_Check(path)) {
		PyErr_SetString(PyExc_TypeError, "path must be a str or None");
		return NULL;
	}

	self = (MappingObject *)type->tp_alloc(type, 0);
	if (self == NULL)
		return NULL;
	self->fd = -1;
	self->pins = MAPPING_CLOSED;	/* until mapped */
	self->fork_generation = gate_generation();
	self->path = Py_NewRef(path);
	self->readonly = readonly;
	if (strcmp(kind, "file") == 0) {
		self->kind = MAPPING_KIND_FILE;
	} else if (strcmp(kind, "device") == 0) {
		self->kind = MAPPING_KIND_DEVICE;
	} else {
		PyErr_Format(PyExc_ValueError, "kind must be 'file' or 'device', not '%s'", kind);
		goto error;
	}
	if (set_waker(self, waker) < 0)
		goto error;

	/* Our own descriptor: the caller may close theirs right away. */
	self->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (self->fd < 0) {
		PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
		goto error;
	}

	Py_BEGIN_ALLOW_THREADS
	base = mmap(NULL, (size_t)(size + lead), readonly ? PROT_READ : PROT_READ | PROT_WRITE,
		    MAP_SHARED, self->fd, offset - lead);
	saved_errno = errno;
	Py_END_ALLOW_THREADS
	if (base == MAP_FAILED) {
		errno = saved_errno;
		PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
		goto error;
	}
	self->map_base = base;
	self->map_len = (size_t)(size + lead);
	self->data = base + lead;
	self->size = size;
	self->map_offset = offset;
	self->pins = 0;

	if (populate) {
		Py_BEGIN_ALLOW_THREADS
		rc = pages_populate(self->map_base, self->map_len, readonly);
		saved_errno = errno;
		Py_END_ALLOW_THREADS
		if (rc < 0) {
			errno = saved_errno;
			PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
			goto error;
		}
	}

	/* A handler installed after ours (faulthandler, say) would swallow
	 * our SIGBUS; re-arm on top of it, chaining to it. */
	if (fault_rearm() < 0) {
		PyErr_SetFromErrno(PyExc_OSError);
		goto error;
	}
	return (PyObject *)self;

error:
	Py_DECREF(self);
	return NULL;
}

/* Unmaps and closes; the caller sealed the mapping (no pins). */
static int
mapping_release(MappingObject *self)
{
	int rc = 0;

	if (self->map_base != NULL) {
		rc = munmap(self->map_base, self->map_len);
		self->map_base = NULL;
		self->data = NULL;
	}
	if (self->fd >= 0) {
		if (close(self->fd) < 0 && rc == 0)
			rc = -1;
		self->fd = -1;
	}
	return rc;
}

static void
mapping_dealloc(MappingObject *self)
{
	PyTypeObject *type = Py_TYPE(self);

	PyObject_GC_UnTrack(self);
	if (self->weakreflist != NULL)
		PyObject_ClearWeakRefs((PyObject *)self);
	/* No reference is left, so no call can be inside it; a pin still
	 * counted is a Lock's hold from before a fork, or leaked by a dying
	 * thread: nothing will touch the memory any more. */
	(void)mapping_release(self);
	Py_CLEAR(self->path);
	type->tp_free(self);
	Py_DECREF(type);
}

static int
mapping_traverse(MappingObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	return 0;
}

static PyObject *
mapping_close(MappingObject *self, PyObject *Py_UNUSED(ignored))
{
	if (mapping_seal(self) < 0)
		return NULL;
	if (mapping_release(self) < 0)
		return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, self->path);
	Py_RETURN_NONE;
}

static int
mapping_check_open(MappingObject *self)
{
	if (mapping_is_closed(self)) {
		PyErr_SetString(PyExc_ValueError, "mapping is closed");
		return -1;
	}
	return 0;
}

static PyObject *
mapping_enter(MappingObject *self, PyObject *Py_UNUSED(ignored))
{
	if (mapping_check_open(self) < 0)
		return NULL;
	return Py_NewRef(self);
}

static PyObject *
mapping_exit(MappingObject *self, PyObject *const *Py_UNUSED(args), Py_ssize_t Py_UNUSED(nargs))
{
	return mapping_close(self, NULL);
}

static PyObject *
mapping_fileno(MappingObject *self, PyObject *Py_UNUSED(ignored))
{
	if (mapping_check_open(self) < 0)
		return NULL;
	return PyLong_FromLong(self->fd);
}

static const char *
kind_name(MappingObject *self)
{
	return self->kind == MAPPING_KIND_DEVICE ? "device" : "file";
}

static PyObject *
mapping_repr(MappingObject *self)
{
	if (mapping_is_closed(self))
		return PyUnicode_FromFormat("<pymmapdev.Mapping closed kind=%s path=%R>",
					    kind_name(self), self->path);
	return PyUnicode_FromFormat("<pymmapdev.Mapping kind=%s path=%R size=%zd%s>",
				    kind_name(self), self->path, self->size,
				    self->readonly ? " readonly" : "");
}

/* ---- buffer protocol --------------------------------------------------- */

static int
mapping_getbuffer(MappingObject *self, Py_buffer *view, int flags)
{
	if (mapping_pin(self, PIN_VIEW) < 0)
		return -1;
	if (PyBuffer_FillInfo(view, (PyObject *)self, self->data, self->size, self->readonly,
			      flags) < 0) {
		mapping_unpin(self, PIN_VIEW);
		return -1;
	}
	return 0;
}

static void
mapping_releasebuffer(MappingObject *self, Py_buffer *Py_UNUSED(view))
{
	mapping_unpin(self, PIN_VIEW);
}

static Py_ssize_t
mapping_length(MappingObject *self)
{
	if (mapping_check_open(self) < 0)
		return -1;
	return self->size;
}

/* ---- attributes -------------------------------------------------------- */

static PyObject *
mapping_get_size(MappingObject *self, void *Py_UNUSED(closure))
{
	if (mapping_check_open(self) < 0)
		return NULL;
	return PyLong_FromSsize_t(self->size);
}

static PyObject *
mapping_get_offset(MappingObject *self, void *Py_UNUSED(closure))
{
	return PyLong_FromSsize_t(self->map_offset);
}

static PyObject *
mapping_get_waker(MappingObject *self, void *Py_UNUSED(closure))
{
	return PyUnicode_FromString(waker_names[self->wake]);
}

static PyObject *
mapping_get_closed(MappingObject *self, void *Py_UNUSED(closure))
{
	return PyBool_FromLong(mapping_is_closed(self));
}

static PyObject *
mapping_get_path(MappingObject *self, void *Py_UNUSED(closure))
{
	return Py_NewRef(self->path);
}

static PyObject *
mapping_get_kind(MappingObject *self, void *Py_UNUSED(closure))
{
	return PyUnicode_FromString(kind_name(self));
}

static PyObject *
mapping_get_readonly(MappingObject *self, void *Py_UNUSED(closure))
{
	return PyBool_FromLong(self->readonly);
}

static PyGetSetDef mapping_getset[] = {
	{"size", (getter)mapping_get_size, NULL, "Bytes mapped.", NULL},
	{"offset", (getter)mapping_get_offset, NULL,
	 "Offset of byte 0 of the mapping in the file or device.", NULL},
	{"waker", (getter)mapping_get_waker, NULL,
	 "How wait() sleeps: 'futex' (files, memfds), 'mmapdev' (the module's\n"
	 "WAIT/WAKE ioctls) or 'poll' (other devices: nothing can wake a\n"
	 "sleeper, so it looks again every millisecond).", NULL},
	{"closed", (getter)mapping_get_closed, NULL, "True after close().", NULL},
	{"path", (getter)mapping_get_path, NULL, "Path the mapping was opened from, or None.", NULL},
	{"kind", (getter)mapping_get_kind, NULL, "'file' (files and anonymous() memfds) or 'device'.", NULL},
	{"readonly", (getter)mapping_get_readonly, NULL, "True if mapped without write access.",
	 NULL},
	{NULL},
};

static PyMemberDef mapping_members[] = {
	{"__weaklistoffset__", T_PYSSIZET, offsetof(MappingObject, weakreflist), READONLY, NULL},
	{NULL},
};

static PyMethodDef mapping_methods[] = {
	{"close", (PyCFunction)mapping_close, METH_NOARGS,
	 "close($self, /)\n--\n\n"
	 "Unmap and close; BufferError while anything uses the mapping. Idempotent."},
	{"fileno", (PyCFunction)mapping_fileno, METH_NOARGS,
	 "fileno($self, /)\n--\n\nThe mapping's own file descriptor."},
	{"__enter__", (PyCFunction)mapping_enter, METH_NOARGS, NULL},
	{"__exit__", (PyCFunction)(void (*)(void))mapping_exit, METH_FASTCALL, NULL},
	ACCESS_METHODDEFS	/* access.c: read/write, read_uN/write_uN */
	ATOMIC_METHODDEFS	/* atomic.c: load/store/fetch_add/... */
	WAIT_METHODDEFS		/* wait.c: wait/wake */
	PAGES_METHODDEFS	/* pages.c: flush/madvise */
	ARRAY_METHODDEFS	/* array.c: ndarray */
	WORDS_METHODDEFS	/* words.c: read_words/write_words */
	{NULL},
};

static PyType_Slot mapping_slots[] = {
	{Py_tp_doc, "Mapping(fd, size, offset=0, *, readonly=False, kind='file', path=None, "
		    "populate=False, waker=None)\n--\n\n"
		    "A MAP_SHARED mapping of [offset, offset + size) of fd (any offset: the\n"
		    "pages holding it are mapped).  waker: how wait() sleeps, 'futex',\n"
		    "'mmapdev' (the module's ioctls) or 'poll' (nothing can wake it);\n"
		    "None: futex for files, mmapdev for devices.\n"
		    "Use pymmapdev.open_file(), open_device() or anonymous()."},
	{Py_tp_new, mapping_new},
	{Py_tp_dealloc, mapping_dealloc},
	{Py_tp_traverse, mapping_traverse},
	{Py_tp_repr, mapping_repr},
	{Py_tp_methods, mapping_methods},
	{Py_tp_getset, mapping_getset},
	{Py_tp_members, mapping_members},
	{Py_bf_getbuffer, mapping_getbuffer},
	{Py_bf_releasebuffer, mapping_releasebuffer},
	{Py_mp_length, mapping_length},
	{Py_mp_subscript, access_subscript},
	{Py_mp_ass_subscript, access_ass_subscript},
	{0, NULL},
};

PyType_Spec mapping_type_spec = {
	.name = "pymmapdev.Mapping",
	.basicsize = sizeof(MappingObject),
	.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
	.slots = mapping_slots,
};
