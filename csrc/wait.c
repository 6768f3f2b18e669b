/*
 * Mapping.wait()/wake() on an aligned u32 word: the blocking loop
 * (block.c) with the simplest condition, "the word differs"; and
 * wait_async(), the same condition as a watch (watch.h).
 */
#include "wait.h"
#include "args.h"
#include "block.h"
#include "watch.h"

struct word_wait {
	const uint32_t *word;
	Py_ssize_t offset;
	uint32_t expected;
};

static int
word_poll(struct block_op *op, int Py_UNUSED(thorough))
{
	struct word_wait *c = op->ctx;

	if (__atomic_load_n(c->word, __ATOMIC_SEQ_CST) != c->expected)
		return BLOCK_READY;
	op->sleep_offset = c->offset;
	op->sleep_expected = c->expected;
	return BLOCK_SLEEP;
}

PyObject *
wait_wait(MappingObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	static const char *const names[] = {"offset", "expected", "timeout", "spin"};
	static const struct arg_spec spec = {"wait", names, 4, 2, 0, 4};
	PyObject *argv[4];
	Py_ssize_t offset;
	uint64_t expected;
	long spin = block_default_spin();
	struct deadline deadline;
	struct word_wait c;
	struct block_op op = {0};
	struct gate g;
	int rc;

	if (args_unpack(&spec, args, nargs, kwnames, argv) < 0 ||
	    arg_offset(argv[0], &offset) < 0 || arg_uint(argv[1], "expected", 32, &expected) < 0 ||
	    arg_deadline(argv[2], &deadline) < 0 ||
	    arg_count(argv[3], "spin", block_max_spin(), &spin) < 0)
		return NULL;
	if (gate_enter(&g, self, offset, 4, 4, GATE_READ, PIN_WAIT) < 0)
		return NULL;
	c = (struct word_wait){(const uint32_t *)g.addr, offset, (uint32_t)expected};
	op.gate = &g;
	op.poll = word_poll;
	op.ctx = &c;
	op.spin = spin;
	op.wake_is_ready = 1;
	rc = block_until(&op, &deadline);
	gate_leave(&g);
	if (rc == BLOCK_ERROR)
		return NULL;
	return PyBool_FromLong(rc == BLOCK_READY);
}

static PyObject *
word_fail(PyObject *Py_UNUSED(owner), int rc)
{
	/* word_poll() has no failures of its own */
	PyErr_Format(PyExc_SystemError, "wait: unexpected state %d", rc);
	return NULL;
}

static const struct watch_kind word_watch = {
	.poll = word_poll,
	.fail = word_fail,
	.wake_is_ready = 1,
};

/* A watch of the word at (offset, expected), both still objects. */
static PyObject *
word_watch_new(MappingObject *self, PyObject *offset_obj, PyObject *expected_obj)
{
	Py_ssize_t offset;
	uint64_t expected;
	struct word_wait c;
	struct gate g;

	if (arg_offset(offset_obj, &offset) < 0 || arg_uint(expected_obj, "expected", 32, &expected) < 0)
		return NULL;
	if (gate_enter(&g, self, offset, 4, 4, GATE_READ, PIN_WAIT) < 0)
		return NULL;
	c = (struct word_wait){(const uint32_t *)g.addr, offset, (uint32_t)expected};
	return watch_new((PyObject *)self, &g, &word_watch, &c, sizeof(c), 0);
}

PyObject *
wait_wait_async(MappingObject *self, PyObject *const *args, Py_ssize_t nargs,
		PyObject *kwnames)
{
	static const char *const names[] = {"offset", "expected", "timeout"};
	static const struct arg_spec spec = {"wait_async", names, 3, 2, 0, 3};
	PyObject *argv[3], *watch;

	if (args_unpack(&spec, args, nargs, kwnames, argv) < 0)
		return NULL;
	watch = word_watch_new(self, argv[0], argv[1]);
	return watch == NULL ? NULL : watch_await(watch, argv[2]);
}

PyObject *
wait_watch_word(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
	MappingObject *map;

	if (args_exact("watch_word", nargs, 3) < 0 ||
	    arg_mapping(module_state_of(module), "watch_word", args[0], &map) < 0)
		return NULL;
	return word_watch_new(map, args[1], args[2]);
}

PyObject *
wait_wake(MappingObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	static const char *const names[] = {"offset", "count"};
	static const struct arg_spec spec = {"wake", names, 2, 1, 0, 2};
	PyObject *argv[2];
	Py_ssize_t offset;
	long count = 1, woken;
	struct gate g;

	if (args_unpack(&spec, args, nargs, kwnames, argv) < 0 ||
	    arg_offset(argv[0], &offset) < 0 ||
	    arg_count(argv[1], "count", (long)UINT32_MAX, &count) < 0)
		return NULL;
	if (gate_enter(&g, self, offset, 4, 4, GATE_READ, PIN_ACCESS) < 0)
		return NULL;
	woken = block_wake(self, offset, (uint32_t)count);
	gate_leave(&g);
	return woken < 0 ? NULL : PyLong_FromLong(woken);
}
