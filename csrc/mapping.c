/*
 * The Mapping type: lifetime, buffer protocol, byte and typed access,
 * msync/madvise.  Modelled on CPython's Modules/mmapmodule.c, but one
 * gatekeeper (mapping_span) checks every access, and every touch of mapped
 * memory runs under the SIGBUS guard of fault.h.
 */
#include "mapping.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "structmember.h"

static long page_size;

module_state *
mapping_state_of(MappingObject *self)
{
	return (module_state *)PyType_GetModuleState(Py_TYPE(self));
}

int
mapping_check_open(MappingObject *self)
{
	if (self->data == NULL) {
		PyErr_SetString(PyExc_ValueError, "mapping is closed");
		return -1;
	}
	return 0;
}

char *
mapping_span(MappingObject *self, Py_ssize_t offset, Py_ssize_t size,
	     Py_ssize_t align, int for_write)
{
	if (mapping_check_open(self) < 0)
		return NULL;
	if (offset < 0 || size < 0 || offset > self->size || size > self->size - offset) {
		PyErr_Format(PyExc_ValueError,
			     "offset %zd + %zd bytes is outside the mapping of %zd bytes",
			     offset, size, self->size);
		return NULL;
	}
	if (offset % align != 0) {
		PyErr_Format(PyExc_ValueError,
			     "offset %zd is not aligned to %zd bytes (mapping of %zd bytes)",
			     offset, align, self->size);
		return NULL;
	}
	if (for_write && self->readonly) {
		PyErr_SetString(PyExc_TypeError, "mapping is read-only");
		return NULL;
	}
	return self->data + offset;
}

int
mapping_offset_converter(PyObject *obj, void *out)
{
	/* Exact ints skip the __index__ protocol: this is on every hot path. */
	Py_ssize_t value = PyLong_CheckExact(obj) ? PyLong_AsSsize_t(obj)
						 : PyNumber_AsSsize_t(obj, PyExc_OverflowError);

	if (value == -1 && PyErr_Occurred())
		return 0;
	if (value < 0) {
		PyErr_Format(PyExc_ValueError, "offset %zd is negative", value);
		return 0;
	}
	*(Py_ssize_t *)out = value;
	return 1;
}

int
mapping_unsigned_arg(PyObject *obj, int bits, uint64_t *out)
{
	unsigned long long value;

	if (!PyLong_Check(obj)) {
		PyErr_Format(PyExc_TypeError, "expected an int, got %.100s",
			     Py_TYPE(obj)->tp_name);
		return -1;
	}
	value = PyLong_AsUnsignedLongLong(obj);
	if (value == (unsigned long long)-1 && PyErr_Occurred())
		goto out_of_range;
	if (bits < 64 && value >> bits)
		goto out_of_range;
	*out = value;
	return 0;

out_of_range:
	PyErr_Clear();
	PyErr_Format(PyExc_OverflowError, "value %R does not fit in u%d", obj, bits);
	return -1;
}

int
mapping_place_args(PyObject *module, const char *fname, PyObject *const *args,
		   Py_ssize_t nargs, Py_ssize_t want, MappingObject **map,
		   Py_ssize_t *offset)
{
	PyTypeObject *type = mapping_module_state(module)->mapping_type;

	if (nargs != want) {
		PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd arguments (%zd given)",
			     fname, want, nargs);
		return -1;
	}
	if (!PyObject_TypeCheck(args[0], type)) {
		PyErr_Format(PyExc_TypeError, "%s() needs a pymmapdev.Mapping, not %.100s",
			     fname, Py_TYPE(args[0])->tp_name);
		return -1;
	}
	*map = (MappingObject *)args[0];
	return mapping_offset_converter(args[1], offset) ? 0 : -1;
}

PyObject *
mapping_raise_fault(MappingObject *self, Py_ssize_t offset)
{
	PyObject *message, *args;

	message = PyUnicode_FromFormat(
		"bus error at offset %zd of the mapping of %zd bytes "
		"(was the file truncated by another process?)", offset, self->size);
	if (message == NULL)
		return NULL;
	args = Py_BuildValue("(iNO)", EFAULT, message, self->path);
	if (args == NULL)
		return NULL;
	PyErr_SetObject(mapping_state_of(self)->fault_error, args);
	Py_DECREF(args);
	return NULL;
}

/*
 * Copies into or out of the mapping under the SIGBUS guard.  memmove: the
 * other side may be a view of this very mapping.
 */
static int
guarded_copy(MappingObject *self, void *dst, const void *src, size_t len)
{
	struct fault_guard guard;

	fault_guard_enter(&guard, self->data, self->size);
	if (sigsetjmp(guard.env, 0)) {
		mapping_raise_fault(self, guard.fault_addr - self->data);
		return -1;
	}
	memmove(dst, src, len);
	fault_guard_leave(&guard);
	return 0;
}

/* ---- lifetime ---------------------------------------------------------- */

static int
populate(char *data, size_t size, int readonly)
{
	/* MADV_POPULATE_* (5.14) faults the pages in as writes, so the first
	 * store does not take a page_mkwrite fault; MAP_POPULATE would only
	 * read-fault a shared mapping.  Older kernels: touch every page. */
#ifdef MADV_POPULATE_WRITE
	if (madvise(data, size, readonly ? MADV_POPULATE_READ : MADV_POPULATE_WRITE) == 0)
		return 0;
	if (errno != EINVAL)
		return -1;
#endif
	for (size_t off = 0; off < size; off += page_size) {
		if (readonly)
			(void)__atomic_load_n(data + off, __ATOMIC_RELAXED);
		else	/* an atomic add of 0 write-faults without racing peers */
			(void)__atomic_fetch_add(data + off, 0, __ATOMIC_RELAXED);
	}
	return 0;
}

static PyObject *
mapping_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
	static char *kwlist[] = {"fd", "size", "offset", "readonly", "kind",
				 "path", "populate", NULL};
	int fd, readonly = 0, populate_pages = 0, saved_errno;
	Py_ssize_t size, offset = 0;
	const char *kind = "file";
	PyObject *path = Py_None;
	MappingObject *self;
	char *data;

	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "in|n$psOp:Mapping", kwlist,
					 &fd, &size, &offset, &readonly, &kind,
					 &path, &populate_pages))
		return NULL;
	if (size <= 0) {
		PyErr_Format(PyExc_ValueError, "size must be positive, not %zd", size);
		return NULL;
	}
	if (offset < 0 || offset % page_size != 0) {
		PyErr_Format(PyExc_ValueError,
			     "offset %zd must be a non-negative multiple of the page size %ld",
			     offset, page_size);
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

	/* Our own descriptor: the caller may close theirs right away. */
	self->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (self->fd < 0) {
		PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
		goto error;
	}

	Py_BEGIN_ALLOW_THREADS
	data = mmap(NULL, size, readonly ? PROT_READ : PROT_READ | PROT_WRITE,
		    MAP_SHARED, self->fd, offset);
	saved_errno = errno;
	Py_END_ALLOW_THREADS
	if (data == MAP_FAILED) {
		errno = saved_errno;
		PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
		goto error;
	}
	self->data = data;
	self->size = size;
	self->map_offset = offset;

	if (populate_pages) {
		int rc;

		Py_BEGIN_ALLOW_THREADS
		rc = populate(self->data, size, readonly);
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
	if (fault_handler_install() < 0) {
		PyErr_SetFromErrno(PyExc_OSError);
		goto error;
	}
	return (PyObject *)self;

error:
	Py_DECREF(self);
	return NULL;
}

/* Unmaps and closes exactly once; the caller has checked exports. */
static int
mapping_release(MappingObject *self)
{
	int rc = 0;

	if (self->data != NULL) {
		rc = munmap(self->data, self->size);
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
	if (self->exports > 0) {
		PyErr_Format(PyExc_BufferError,
			     "cannot close the mapping: %zd exported buffer(s) "
			     "(memoryview, numpy array, ...) still alive",
			     self->exports);
		return NULL;
	}
	if (mapping_release(self) < 0)
		return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, self->path);
	Py_RETURN_NONE;
}

static PyObject *
mapping_enter(MappingObject *self, PyObject *Py_UNUSED(ignored))
{
	if (mapping_check_open(self) < 0)
		return NULL;
	return Py_NewRef(self);
}

static PyObject *
mapping_exit(MappingObject *self, PyObject *const *Py_UNUSED(args),
	     Py_ssize_t Py_UNUSED(nargs))
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

static PyObject *
mapping_repr(MappingObject *self)
{
	const char *kind = self->kind == MAPPING_KIND_DEVICE ? "device" : "file";

	if (self->data == NULL)
		return PyUnicode_FromFormat("<pymmapdev.Mapping closed kind=%s path=%R>",
					    kind, self->path);
	return PyUnicode_FromFormat("<pymmapdev.Mapping kind=%s path=%R size=%zd%s>",
				    kind, self->path, self->size,
				    self->readonly ? " readonly" : "");
}

/* ---- buffer protocol --------------------------------------------------- */

static int
mapping_getbuffer(MappingObject *self, Py_buffer *view, int flags)
{
	if (mapping_check_open(self) < 0)
		return -1;
	if (PyBuffer_FillInfo(view, (PyObject *)self, self->data, self->size,
			      self->readonly, flags) < 0)
		return -1;
	self->exports++;
	return 0;
}

static void
mapping_releasebuffer(MappingObject *self, Py_buffer *Py_UNUSED(view))
{
	self->exports--;
}

/* ---- sequence / slicing ------------------------------------------------ */

static Py_ssize_t
mapping_length(MappingObject *self)
{
	if (mapping_check_open(self) < 0)
		return -1;
	return self->size;
}

static PyObject *
mapping_subscript(MappingObject *self, PyObject *key)
{
	Py_ssize_t start, stop, step, count;
	PyObject *result;
	char *dst;

	if (mapping_check_open(self) < 0)
		return NULL;
	if (PyIndex_Check(key)) {
		Py_ssize_t i = PyNumber_AsSsize_t(key, PyExc_IndexError);
		unsigned char byte;

		if (i == -1 && PyErr_Occurred())
			return NULL;
		if (i < 0)
			i += self->size;
		if (i < 0 || i >= self->size) {
			PyErr_Format(PyExc_IndexError,
				     "index %zd out of range for a mapping of %zd bytes",
				     i, self->size);
			return NULL;
		}
		if (guarded_copy(self, &byte, self->data + i, 1) < 0)
			return NULL;
		return PyLong_FromLong(byte);
	}
	if (!PySlice_Check(key)) {
		PyErr_Format(PyExc_TypeError, "mapping indices must be integers or slices, not %.100s",
			     Py_TYPE(key)->tp_name);
		return NULL;
	}
	if (PySlice_Unpack(key, &start, &stop, &step) < 0)
		return NULL;
	count = PySlice_AdjustIndices(self->size, &start, &stop, step);
	result = PyBytes_FromStringAndSize(NULL, count);
	if (result == NULL || count == 0)
		return result;
	dst = PyBytes_AS_STRING(result);
	if (step == 1) {
		if (guarded_copy(self, dst, self->data + start, count) < 0)
			goto error;
	} else {
		for (Py_ssize_t i = 0, at = start; i < count; i++, at += step)
			if (guarded_copy(self, dst + i, self->data + at, 1) < 0)
				goto error;
	}
	return result;

error:
	Py_DECREF(result);
	return NULL;
}

static int
mapping_ass_subscript(MappingObject *self, PyObject *key, PyObject *value)
{
	Py_ssize_t start, stop, step, count;
	Py_buffer src;
	int rc = -1;

	if (mapping_check_open(self) < 0)
		return -1;
	if (value == NULL) {
		PyErr_SetString(PyExc_TypeError, "mapping bytes cannot be deleted");
		return -1;
	}
	if (self->readonly) {
		PyErr_SetString(PyExc_TypeError, "mapping is read-only");
		return -1;
	}
	if (PyIndex_Check(key)) {
		Py_ssize_t i = PyNumber_AsSsize_t(key, PyExc_IndexError);
		uint64_t byte;

		if (i == -1 && PyErr_Occurred())
			return -1;
		if (i < 0)
			i += self->size;
		if (i < 0 || i >= self->size) {
			PyErr_Format(PyExc_IndexError,
				     "index %zd out of range for a mapping of %zd bytes",
				     i, self->size);
			return -1;
		}
		if (mapping_unsigned_arg(value, 8, &byte) < 0)
			return -1;
		return guarded_copy(self, self->data + i, &(unsigned char){(unsigned char)byte}, 1);
	}
	if (!PySlice_Check(key)) {
		PyErr_Format(PyExc_TypeError, "mapping indices must be integers or slices, not %.100s",
			     Py_TYPE(key)->tp_name);
		return -1;
	}
	if (PySlice_Unpack(key, &start, &stop, &step) < 0)
		return -1;
	count = PySlice_AdjustIndices(self->size, &start, &stop, step);
	if (PyObject_GetBuffer(value, &src, PyBUF_SIMPLE) < 0)
		return -1;
	if (src.len != count) {
		PyErr_Format(PyExc_IndexError,
			     "slice assignment of %zd bytes to a slice of %zd bytes: "
			     "the mapping cannot change size", src.len, count);
		goto out;
	}
	if (step == 1) {
		/* memmove semantics matter when src is a view of this mapping */
		if (count > 0 && guarded_copy(self, self->data + start, src.buf, count) < 0)
			goto out;
	} else {
		for (Py_ssize_t i = 0, at = start; i < count; i++, at += step)
			if (guarded_copy(self, self->data + at, (char *)src.buf + i, 1) < 0)
				goto out;
	}
	rc = 0;
out:
	PyBuffer_Release(&src);
	return rc;
}

/* ---- bytes and typed access -------------------------------------------- */

static PyObject *
mapping_read(MappingObject *self, PyObject *args)
{
	Py_ssize_t offset, size;
	PyObject *result;
	char *src;

	if (!PyArg_ParseTuple(args, "O&n:read", mapping_offset_converter, &offset, &size))
		return NULL;
	src = mapping_span(self, offset, size, 1, 0);
	if (src == NULL)
		return NULL;
	result = PyBytes_FromStringAndSize(NULL, size);
	if (result == NULL)
		return NULL;
	if (guarded_copy(self, PyBytes_AS_STRING(result), src, size) < 0) {
		Py_DECREF(result);
		return NULL;
	}
	return result;
}

static PyObject *
mapping_write(MappingObject *self, PyObject *args)
{
	Py_ssize_t offset;
	Py_buffer data;
	PyObject *result = NULL;
	char *dst;

	if (!PyArg_ParseTuple(args, "O&y*:write", mapping_offset_converter, &offset, &data))
		return NULL;
	dst = mapping_span(self, offset, data.len, 1, 1);
	if (dst != NULL && guarded_copy(self, dst, data.buf, data.len) == 0)
		result = PyLong_FromSsize_t(data.len);
	PyBuffer_Release(&data);
	return result;
}

/*
 * Width-exact access: one volatile load or store of exactly @width bytes,
 * so a device register or a peer's word is never read in pieces.  The
 * guarded frames hold no locals that change after sigsetjmp.
 */
static int
guarded_load(MappingObject *self, const char *p, Py_ssize_t width, uint64_t *out)
{
	struct fault_guard guard;

	fault_guard_enter(&guard, self->data, self->size);
	if (sigsetjmp(guard.env, 0)) {
		mapping_raise_fault(self, guard.fault_addr - self->data);
		return -1;
	}
	switch (width) {
	case 1: *out = *(const volatile uint8_t *)p; break;
	case 2: *out = *(const volatile uint16_t *)p; break;
	case 4: *out = *(const volatile uint32_t *)p; break;
	default: *out = *(const volatile uint64_t *)p; break;
	}
	fault_guard_leave(&guard);
	return 0;
}

static int
guarded_store(MappingObject *self, char *p, Py_ssize_t width, uint64_t value)
{
	struct fault_guard guard;

	fault_guard_enter(&guard, self->data, self->size);
	if (sigsetjmp(guard.env, 0)) {
		mapping_raise_fault(self, guard.fault_addr - self->data);
		return -1;
	}
	switch (width) {
	case 1: *(volatile uint8_t *)p = (uint8_t)value; break;
	case 2: *(volatile uint16_t *)p = (uint16_t)value; break;
	case 4: *(volatile uint32_t *)p = (uint32_t)value; break;
	default: *(volatile uint64_t *)p = value; break;
	}
	fault_guard_leave(&guard);
	return 0;
}

/* read_uN(offset) and write_uN(offset, value): @store says which. */
static inline PyObject *
typed_access(MappingObject *self, PyObject *const *args, Py_ssize_t nargs,
	     Py_ssize_t width, const char *name, int store)
{
	Py_ssize_t offset;
	uint64_t value = 0;
	char *p;

	if (nargs != 1 + store) {
		PyErr_Format(PyExc_TypeError, "%s() takes exactly %d argument%s (%s)", name,
			     1 + store, store ? "s" : "", store ? "offset, value" : "offset");
		return NULL;
	}
	if (!mapping_offset_converter(args[0], &offset))
		return NULL;
	if (store && mapping_unsigned_arg(args[1], (int)width * 8, &value) < 0)
		return NULL;
	p = mapping_span(self, offset, width, width, store);
	if (p == NULL)
		return NULL;
	if (store) {
		if (guarded_store(self, p, width, value) < 0)
			return NULL;
		Py_RETURN_NONE;
	}
	if (guarded_load(self, p, width, &value) < 0)
		return NULL;
	return PyLong_FromUnsignedLongLong(value);
}

#define TYPED_ACCESSORS(bits)							\
static PyObject *								\
mapping_read_u##bits(MappingObject *self, PyObject *const *args, Py_ssize_t nargs) \
{										\
	return typed_access(self, args, nargs, (bits) / 8, "read_u" #bits, 0);	\
}										\
static PyObject *								\
mapping_write_u##bits(MappingObject *self, PyObject *const *args, Py_ssize_t nargs) \
{										\
	return typed_access(self, args, nargs, (bits) / 8, "write_u" #bits, 1);	\
}
TYPED_ACCESSORS(8)
TYPED_ACCESSORS(16)
TYPED_ACCESSORS(32)
TYPED_ACCESSORS(64)
#undef TYPED_ACCESSORS

/* ---- msync / madvise --------------------------------------------------- */

/*
 * Parses (offset=0, size=None) into the page-aligned range the kernel wants:
 * callers may name any byte range, we widen it to whole pages.
 */
static int
page_range(MappingObject *self, Py_ssize_t offset, PyObject *size_obj,
	   char **start, size_t *len)
{
	Py_ssize_t size, aligned;

	if (mapping_check_open(self) < 0)
		return -1;
	if (size_obj == Py_None) {
		size = offset <= self->size ? self->size - offset : 0;
	} else {
		size = PyNumber_AsSsize_t(size_obj, PyExc_OverflowError);
		if (size == -1 && PyErr_Occurred())
			return -1;
	}
	if (mapping_span(self, offset, size, 1, 0) == NULL)
		return -1;
	aligned = offset - offset % page_size;
	*start = self->data + aligned;
	*len = (size_t)(offset + size - aligned);
	return 0;
}

/*
 * msync and madvise share a signature: run one on a range, GIL released.
 * The call holds an export meanwhile, so another thread's close() fails
 * with BufferError instead of unmapping the range under us (a new mapping
 * at the same address would then get our MADV_DONTNEED).
 */
static PyObject *
page_call(MappingObject *self, int (*call)(void *, size_t, int), char *start,
	  size_t len, int arg)
{
	int rc, saved_errno;

	if (len == 0)
		Py_RETURN_NONE;
	self->exports++;
	Py_BEGIN_ALLOW_THREADS
	rc = call(start, len, arg);
	saved_errno = errno;
	Py_END_ALLOW_THREADS
	self->exports--;
	if (rc < 0) {
		errno = saved_errno;
		return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, self->path);
	}
	Py_RETURN_NONE;
}

static PyObject *
mapping_flush(MappingObject *self, PyObject *args, PyObject *kwargs)
{
	static char *kwlist[] = {"offset", "size", "wait", NULL};
	Py_ssize_t offset = 0;
	PyObject *size = Py_None;
	int wait = 1;
	size_t len;
	char *start;

	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O&O$p:flush", kwlist,
					 mapping_offset_converter, &offset, &size, &wait))
		return NULL;
	if (page_range(self, offset, size, &start, &len) < 0)
		return NULL;
	if (self->kind == MAPPING_KIND_DEVICE)
		Py_RETURN_NONE;		/* device memory has no backing store to sync */
	return page_call(self, msync, start, len, wait ? MS_SYNC : MS_ASYNC);
}

static PyObject *
mapping_madvise(MappingObject *self, PyObject *args, PyObject *kwargs)
{
	static char *kwlist[] = {"advice", "offset", "size", NULL};
	Py_ssize_t offset = 0;
	PyObject *size = Py_None;
	int advice;
	size_t len;
	char *start;

	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "i|O&O:madvise", kwlist, &advice,
					 mapping_offset_converter, &offset, &size))
		return NULL;
	if (page_range(self, offset, size, &start, &len) < 0)
		return NULL;
	return page_call(self, madvise, start, len, advice);
}

/* ---- numpy ------------------------------------------------------------- */

/*
 * An array hands the memory to code we cannot guard, so before making one
 * check that the file still backs the whole range: one fstat instead of a
 * SIGBUS in numpy later.  (Pages past EOF fault; the last partial page
 * does not.)
 */
static int
check_backed(MappingObject *self, Py_ssize_t offset, Py_ssize_t len)
{
	struct stat st;
	Py_ssize_t backed;

	if (self->kind != MAPPING_KIND_FILE || len == 0)
		return 0;
	if (fstat(self->fd, &st) < 0) {
		PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, self->path);
		return -1;
	}
	backed = ((Py_ssize_t)st.st_size + page_size - 1) / page_size * page_size;
	if (offset + len > backed) {
		mapping_raise_fault(self, offset > backed ? offset : backed);
		return -1;
	}
	return 0;
}

static PyObject *
import_numpy(void)
{
	PyObject *numpy = PyImport_ImportModule("numpy");

	if (numpy == NULL && PyErr_ExceptionMatches(PyExc_ImportError)) {
		PyErr_Clear();
		PyErr_SetString(PyExc_ImportError,
				"Mapping.ndarray() needs numpy, which could not be "
				"imported: pip install numpy");
	}
	return numpy;
}

static PyObject *
mapping_ndarray(MappingObject *self, PyObject *args, PyObject *kwargs)
{
	static char *kwlist[] = {"dtype", "shape", "offset", NULL};
	PyObject *dtype_arg, *shape = Py_None, *numpy = NULL, *dtype = NULL;
	PyObject *flat = NULL, *result = NULL, *name;
	Py_ssize_t offset = 0, itemsize, count;

	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OO&:ndarray", kwlist,
					 &dtype_arg, &shape, mapping_offset_converter, &offset))
		return NULL;
	if (mapping_span(self, offset, 0, 1, 0) == NULL)
		return NULL;
	numpy = import_numpy();
	if (numpy == NULL)
		return NULL;
	/* CallMethodOneArg: with a "O" format a tuple argument would be unpacked */
	name = PyUnicode_FromString("dtype");
	if (name == NULL)
		goto out;
	dtype = PyObject_CallMethodOneArg(numpy, name, dtype_arg);
	Py_DECREF(name);
	if (dtype == NULL)
		goto out;
	{
		PyObject *size_obj = PyObject_GetAttrString(dtype, "itemsize");

		if (size_obj == NULL)
			goto out;
		itemsize = PyLong_AsSsize_t(size_obj);
		Py_DECREF(size_obj);
		if (itemsize <= 0) {
			if (!PyErr_Occurred())
				PyErr_SetString(PyExc_ValueError, "dtype has no fixed item size");
			goto out;
		}
	}
	if (shape == Py_None) {
		count = (self->size - offset) / itemsize;
	} else {
		PyObject *prod;

		name = PyUnicode_FromString("prod");
		if (name == NULL)
			goto out;
		prod = PyObject_CallMethodOneArg(numpy, name, shape);
		Py_DECREF(name);
		if (prod == NULL)
			goto out;
		count = PyNumber_AsSsize_t(prod, PyExc_OverflowError);
		Py_DECREF(prod);
		if (count == -1 && PyErr_Occurred())
			goto out;
		if (count < 0) {
			PyErr_Format(PyExc_ValueError, "shape %R has a negative dimension", shape);
			goto out;
		}
	}
	if (count > (self->size - offset) / itemsize) {
		PyErr_Format(PyExc_ValueError,
			     "%zd items of %zd bytes at offset %zd do not fit in the mapping of %zd bytes",
			     count, itemsize, offset, self->size);
		goto out;
	}
	if (check_backed(self, offset, count * itemsize) < 0)
		goto out;
	flat = PyObject_CallMethod(numpy, "frombuffer", "OOnn", (PyObject *)self, dtype,
				   count, offset);
	if (flat == NULL || shape == Py_None) {
		result = flat;
		flat = NULL;
		goto out;
	}
	name = PyUnicode_FromString("reshape");
	if (name != NULL) {
		result = PyObject_CallMethodOneArg(flat, name, shape);
		Py_DECREF(name);
	}
out:
	Py_XDECREF(flat);
	Py_XDECREF(dtype);
	Py_XDECREF(numpy);
	return result;
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
mapping_get_closed(MappingObject *self, void *Py_UNUSED(closure))
{
	return PyBool_FromLong(self->data == NULL);
}

static PyObject *
mapping_get_path(MappingObject *self, void *Py_UNUSED(closure))
{
	return Py_NewRef(self->path);
}

static PyObject *
mapping_get_kind(MappingObject *self, void *Py_UNUSED(closure))
{
	return PyUnicode_FromString(self->kind == MAPPING_KIND_DEVICE ? "device" : "file");
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
	{"closed", (getter)mapping_get_closed, NULL, "True after close().", NULL},
	{"path", (getter)mapping_get_path, NULL, "Path the mapping was opened from, or None.", NULL},
	{"kind", (getter)mapping_get_kind, NULL, "'file' or 'device'.", NULL},
	{"readonly", (getter)mapping_get_readonly, NULL, "True if mapped without write access.", NULL},
	{NULL},
};

static PyMemberDef mapping_members[] = {
	{"__weaklistoffset__", T_PYSSIZET, offsetof(MappingObject, weakreflist), READONLY, NULL},
	{NULL},
};

#define FASTCALL(name, doc) \
	{#name, (PyCFunction)(void (*)(void))mapping_##name, METH_FASTCALL, doc}

static PyMethodDef mapping_base_methods[] = {
	{"close", (PyCFunction)mapping_close, METH_NOARGS,
	 "Unmap and close; BufferError while buffers are exported. Idempotent."},
	{"fileno", (PyCFunction)mapping_fileno, METH_NOARGS, "The mapping's own file descriptor."},
	{"__enter__", (PyCFunction)mapping_enter, METH_NOARGS, NULL},
	{"__exit__", (PyCFunction)(void (*)(void))mapping_exit, METH_FASTCALL, NULL},
	{"read", (PyCFunction)mapping_read, METH_VARARGS, "read(offset, size) -> bytes"},
	{"write", (PyCFunction)mapping_write, METH_VARARGS, "write(offset, data) -> int"},
	FASTCALL(read_u8, "read_u8(offset) -> int"),
	FASTCALL(read_u16, "read_u16(offset) -> int: one aligned native-order 16-bit load"),
	FASTCALL(read_u32, "read_u32(offset) -> int: one aligned native-order 32-bit load"),
	FASTCALL(read_u64, "read_u64(offset) -> int: one aligned native-order 64-bit load"),
	FASTCALL(write_u8, "write_u8(offset, value)"),
	FASTCALL(write_u16, "write_u16(offset, value): one aligned native-order 16-bit store"),
	FASTCALL(write_u32, "write_u32(offset, value): one aligned native-order 32-bit store"),
	FASTCALL(write_u64, "write_u64(offset, value): one aligned native-order 64-bit store"),
	{"flush", (PyCFunction)(void (*)(void))mapping_flush, METH_VARARGS | METH_KEYWORDS,
	 "flush(offset=0, size=None, *, wait=True): msync the pages holding the range"},
	{"madvise", (PyCFunction)(void (*)(void))mapping_madvise, METH_VARARGS | METH_KEYWORDS,
	 "madvise(advice, offset=0, size=None)"},
	{"ndarray", (PyCFunction)(void (*)(void))mapping_ndarray, METH_VARARGS | METH_KEYWORDS,
	 "ndarray(dtype, shape=None, offset=0) -> numpy array viewing the mapping (no copy)"},
	{NULL},
};
#undef FASTCALL

/* The type's methods are the table above plus those of atomic.c and wait.c. */
static PyMethodDef *const method_tables[] = {
	mapping_base_methods,
	mapping_atomic_methods,
	mapping_wait_methods,
};
static PyMethodDef mapping_methods[96];

static PyType_Slot mapping_slots[] = {
	{Py_tp_doc, "Mapping(fd, size, offset=0, *, readonly=False, kind='file', path=None, populate=False)\n"
		    "--\n\n"
		    "A MAP_SHARED mapping of fd.  Use pymmapdev.open_file() or open_device()."},
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
	{Py_mp_subscript, mapping_subscript},
	{Py_mp_ass_subscript, mapping_ass_subscript},
	{0, NULL},
};

PyType_Spec mapping_type_spec = {
	.name = "pymmapdev.Mapping",
	.basicsize = sizeof(MappingObject),
	.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
	.slots = mapping_slots,
};

int
mapping_type_prepare(void)
{
	page_size = sysconf(_SC_PAGESIZE);
	if (page_size <= 0) {
		PyErr_SetFromErrno(PyExc_OSError);
		return -1;
	}
	if (mapping_methods[0].ml_name != NULL)
		return 0;
	return method_tables_join(mapping_methods, Py_ARRAY_LENGTH(mapping_methods),
				  method_tables, Py_ARRAY_LENGTH(method_tables));
}
