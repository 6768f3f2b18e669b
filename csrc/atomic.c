/*
 * Sequentially consistent atomics on aligned u32/u64 words of a mapping.
 *
 * One implementation, parameterised by the operation and the width; the
 * wrappers come from a macro so that the compiler sees constant arguments
 * and folds the dispatch away.  The accesses themselves are fault.h's:
 * one guarded instruction each on x86-64, no sigsetjmp.
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

static inline PyObject *
atomic_call(MappingObject *self, PyObject *const *args, Py_ssize_t nargs,
	    const char *name, enum atomic_op op, enum width width)
{
	static const Py_ssize_t arity[] = {
		[OP_LOAD] = 1, [OP_STORE] = 2, [OP_FETCH_ADD] = 2,
		[OP_EXCHANGE] = 2, [OP_CAS] = 3,
	};
	static const enum fault_rmw rmw[] = {
		[OP_STORE] = FAULT_XCHG, [OP_FETCH_ADD] = FAULT_XADD,
		[OP_EXCHANGE] = FAULT_XCHG, [OP_CAS] = FAULT_CMPXCHG,
	};
	uint64_t a = 0, b = 0, old = 0;
	Py_ssize_t offset;
	struct gate g;
	const char *addr;
	int bits = (int)width * 8, rc;

	if (args_exact(name, nargs, arity[op]) < 0 || arg_offset(args[0], &offset) < 0)
		return NULL;
	if (op == OP_FETCH_ADD ? arg_delta(args[1], bits, &a) < 0
			       : (nargs > 1 && arg_uint(args[1], op == OP_CAS ? "expected" : "value",
						       bits, &a) < 0) ||
				 (nargs > 2 && arg_uint(args[2], "desired", bits, &b) < 0))
		return NULL;
	if (gate_enter(&g, self, offset, width, width, op == OP_LOAD ? GATE_READ : GATE_WRITE,
		       PIN_ACCESS) < 0)
		return NULL;
	if (op == OP_LOAD) {
		/* On x86-64 a seq_cst load is a plain load, the stores being
		 * exchanges; elsewhere fault_load's plain load is fenced on
		 * both sides. */
#ifndef FAULT_HAVE_FIXUPS
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
		rc = fault_load(g.addr, width, &old, &addr);
#ifndef FAULT_HAVE_FIXUPS
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
	} else {
		/* a seq_cst store: an exchange whose old value goes unused */
		rc = fault_rmw(g.addr, width, rmw[op], a, b, &old, &addr);
	}
	gate_leave(&g);
	if (rc == FAULT_HIT)
		return mapping_raise_fault(self, addr, NULL);
	if (op == OP_STORE)
		Py_RETURN_NONE;
	return PyLong_FromUnsignedLongLong(old);
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
