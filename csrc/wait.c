/*
 * Mapping.wait()/wake() on an aligned u32 word: the blocking loop
 * (block.c) with the simplest condition, "the word differs".
 */
#include "wait.h"
#include "args.h"
#include "block.h"

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
	    arg_offset(argv[0], &offset) < 0 || arg_uint(argv[1], 32, &expected) < 0 ||
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
