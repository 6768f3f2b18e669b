/*
 * Sequentially consistent atomics on aligned u32/u64 words of a mapping.
 *
 * One implementation, parameterised by the operation and the width; the
 * wrappers come from a macro so that the compiler sees constant arguments
 * and folds the dispatch away.
 */
#include "atomic.h"
#include "args.h"

enum atomic_op {
	OP_LOAD,
	OP_STORE,
	OP_FETCH_ADD,
	OP_EXCHANGE,
	OP_CAS,
};

struct atomic_call {
	void *addr;
	enum width width;
	enum atomic_op op;
	uint64_t a;	/* value, delta or expected */
	uint64_t b;	/* desired */
	uint64_t old;	/* the previous value (the current one for a load) */
};

/* GCC's __atomic builtins are type-generic: one body per width. */
#define WORD_OP(type, c)							\
	do {									\
		type *w = (c)->addr, old = (type)(c)->a;			\
		switch ((c)->op) {						\
		case OP_LOAD:							\
			(c)->old = __atomic_load_n(w, __ATOMIC_SEQ_CST);	\
			break;							\
		case OP_STORE:							\
			__atomic_store_n(w, (type)(c)->a, __ATOMIC_SEQ_CST);	\
			break;							\
		case OP_FETCH_ADD:	/* unsigned: wraps modulo 2^bits */	\
			(c)->old = __atomic_fetch_add(w, (type)(c)->a, __ATOMIC_SEQ_CST); \
			break;							\
		case OP_EXCHANGE:						\
			(c)->old = __atomic_exchange_n(w, (type)(c)->a, __ATOMIC_SEQ_CST); \
			break;							\
		case OP_CAS:	/* on failure @old receives the current value */ \
			__atomic_compare_exchange_n(w, &old, (type)(c)->b, 0,	\
						    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); \
			(c)->old = old;						\
			break;							\
		}								\
	} while (0)

static int
atomic_body(void *arg)
{
	struct atomic_call *c = arg;

	switch (c->width) {
	case WIDTH_U8:
		WORD_OP(uint8_t, c);
		break;
	case WIDTH_U16:
		WORD_OP(uint16_t, c);
		break;
	case WIDTH_U32:
		WORD_OP(uint32_t, c);
		break;
	case WIDTH_U64:
		WORD_OP(uint64_t, c);
		break;
	}
	return 0;
}

static inline PyObject *
atomic_call(MappingObject *self, PyObject *const *args, Py_ssize_t nargs,
	    const char *name, enum atomic_op op, enum width width)
{
	static const Py_ssize_t arity[] = {
		[OP_LOAD] = 1, [OP_STORE] = 2, [OP_FETCH_ADD] = 2,
		[OP_EXCHANGE] = 2, [OP_CAS] = 3,
	};
	struct atomic_call c = {NULL, width, op, 0, 0, 0};
	struct fault_span span;
	Py_ssize_t offset;
	struct gate g;
	const char *addr;
	int bits = (int)width * 8;

	if (args_exact(name, nargs, arity[op]) < 0 || arg_offset(args[0], &offset) < 0)
		return NULL;
	if (op == OP_FETCH_ADD ? arg_delta(args[1], bits, &c.a) < 0
			       : (nargs > 1 && arg_uint(args[1], bits, &c.a) < 0) ||
				 (nargs > 2 && arg_uint(args[2], bits, &c.b) < 0))
		return NULL;
	if (gate_enter(&g, self, offset, width, width, op == OP_LOAD ? GATE_READ : GATE_WRITE,
		       PIN_ACCESS) < 0)
		return NULL;
	c.addr = g.addr;
	span = (struct fault_span){g.addr, width};
	if (fault_run(atomic_body, &c, &span, 1, &addr) == FAULT_HIT) {
		gate_leave(&g);
		return mapping_raise_fault(self, addr, NULL);
	}
	gate_leave(&g);
	if (op == OP_STORE)
		Py_RETURN_NONE;
	return PyLong_FromUnsignedLongLong(c.old);
}

#define ATOMIC_METHODS(bits)							\
PyObject *									\
atomic_load_u##bits(MappingObject *self, PyObject *arg)				\
{										\
	return atomic_call(self, &arg, 1, "load_u" #bits, OP_LOAD, WIDTH_OF_BITS(bits)); \
}										\
PyObject *									\
atomic_store_u##bits(MappingObject *self, PyObject *const *args, Py_ssize_t nargs) \
{										\
	return atomic_call(self, args, nargs, "store_u" #bits, OP_STORE,	\
			   WIDTH_OF_BITS(bits));				\
}										\
PyObject *									\
atomic_fetch_add_u##bits(MappingObject *self, PyObject *const *args, Py_ssize_t nargs) \
{										\
	return atomic_call(self, args, nargs, "fetch_add_u" #bits, OP_FETCH_ADD, \
			   WIDTH_OF_BITS(bits));				\
}										\
PyObject *									\
atomic_exchange_u##bits(MappingObject *self, PyObject *const *args, Py_ssize_t nargs) \
{										\
	return atomic_call(self, args, nargs, "exchange_u" #bits, OP_EXCHANGE,	\
			   WIDTH_OF_BITS(bits));				\
}										\
PyObject *									\
atomic_compare_exchange_u##bits(MappingObject *self, PyObject *const *args,	\
				Py_ssize_t nargs)				\
{										\
	return atomic_call(self, args, nargs, "compare_exchange_u" #bits, OP_CAS, \
			   WIDTH_OF_BITS(bits));				\
}
FOR_EACH_ATOMIC_WIDTH(ATOMIC_METHODS)
#undef ATOMIC_METHODS
