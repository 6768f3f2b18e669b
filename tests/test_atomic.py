"""Atomics on aligned u32/u64 words: semantics, errors, and races between processes."""
import multiprocessing as mp
import random

import pytest

import pymmapdev
from conftest import scaled
from _sync_workers import GUARD, cas_worker, fetch_add_worker, run_child  # noqa: F401

WIDTHS = [32, 64]


def ops(m, bits):
    return {name: getattr(m, f"{name}_u{bits}")
            for name in ("load", "store", "fetch_add", "exchange", "compare_exchange")}


@pytest.fixture
def m(shm_path):
    with pymmapdev.open_file(shm_path, 4096) as mapping:
        yield mapping


@pytest.mark.parametrize("bits", WIDTHS)
def test_load_store_roundtrip_is_width_exact(m, bits):
    o = ops(m, bits)
    m[:32] = b"\xaa" * 32
    top = (1 << bits) - 1
    o["store"](8, top - 1)
    assert o["load"](8) == top - 1
    width = bits // 8
    assert m[8 - 1] == 0xAA and m[8 + width] == 0xAA      # neighbours untouched
    assert (m.read_u32 if bits == 32 else m.read_u64)(8) == top - 1
    assert o["store"](8, 0) is None


@pytest.mark.parametrize("bits", WIDTHS)
def test_fetch_add_wraps_and_takes_negative_deltas(m, bits):
    o = ops(m, bits)
    top = (1 << bits) - 1
    o["store"](0, top)
    assert o["fetch_add"](0, 1) == top
    assert o["load"](0) == 0
    assert o["fetch_add"](0, -1) == 0
    assert o["load"](0) == top
    assert o["fetch_add"](0, -(1 << (bits - 1))) == top
    assert o["load"](0) == top - (1 << (bits - 1))
    o["store"](0, 5)
    assert o["fetch_add"](0, top) == 5                    # + (2**n - 1) == - 1
    assert o["load"](0) == 4


@pytest.mark.parametrize("bits", WIDTHS)
def test_fetch_add_delta_range(m, bits):
    o = ops(m, bits)
    for bad in (1 << bits, -(1 << (bits - 1)) - 1, 1 << 200, -(1 << 200)):
        with pytest.raises(OverflowError, match="delta"):
            o["fetch_add"](0, bad)
    with pytest.raises(TypeError):
        o["fetch_add"](0, 1.5)
    assert o["load"](0) == 0


@pytest.mark.parametrize("bits", WIDTHS)
def test_exchange_and_compare_exchange(m, bits):
    o = ops(m, bits)
    o["store"](16, 7)
    assert o["exchange"](16, 9) == 7
    assert o["load"](16) == 9
    assert o["compare_exchange"](16, 8, 1) == 9           # failed: returns current
    assert o["load"](16) == 9
    assert o["compare_exchange"](16, 9, 1) == 9           # succeeded: returns expected
    assert o["load"](16) == 1
    top = (1 << bits) - 1
    assert o["compare_exchange"](16, 1, top) == 1
    assert o["load"](16) == top


@pytest.mark.parametrize("bits", WIDTHS)
def test_bad_offsets_raise_valueerror_naming_offset(m, bits):
    o = ops(m, bits)
    width = bits // 8
    for name, args in (("load", ()), ("store", (1,)), ("fetch_add", (1,)),
                       ("exchange", (1,)), ("compare_exchange", (0, 1))):
        fn = o[name]
        with pytest.raises(ValueError, match=r"offset 2\b.*aligned"):
            fn(2, *args)
        with pytest.raises(ValueError, match="4096"):
            fn(4096, *args)
        with pytest.raises(ValueError, match="4096"):
            fn(1 << 40, *args)
        with pytest.raises(ValueError, match="negative"):
            fn(-width, *args)
    fn = o["load"]
    assert fn(4096 - width) == 0                           # the last word is fine


@pytest.mark.parametrize("bits", WIDTHS)
def test_bad_values_and_arity(m, bits):
    o = ops(m, bits)
    with pytest.raises(OverflowError):
        o["store"](0, 1 << bits)
    with pytest.raises(OverflowError):
        o["store"](0, -1)
    with pytest.raises(OverflowError):
        o["compare_exchange"](0, 0, 1 << bits)
    with pytest.raises(TypeError):
        o["store"](0, "1")
    with pytest.raises(TypeError, match="exactly (1|one) argument"):
        o["load"]()
    with pytest.raises(TypeError, match="exactly 3 arguments"):
        o["compare_exchange"](0, 1)
    with pytest.raises(TypeError):
        o["load"](offset=0)                                # positional-only


@pytest.mark.parametrize("bits", WIDTHS)
def test_read_only_mapping(shm_path, bits):
    with pymmapdev.open_file(shm_path, 4096) as w:
        ops(w, bits)["store"](0, 42)
    with pymmapdev.open_file(shm_path, readonly=True) as r:
        o = ops(r, bits)
        assert o["load"](0) == 42
        for name, args in (("store", (1,)), ("fetch_add", (1,)), ("exchange", (1,)),
                           ("compare_exchange", (42, 1))):
            with pytest.raises(TypeError, match="read-only"):
                o[name](0, *args)
        assert o["load"](0) == 42


def test_closed_mapping(shm_path):
    m = pymmapdev.open_file(shm_path, 4096)
    m.close()
    with pytest.raises(ValueError, match="closed"):
        m.load_u32(0)
    with pytest.raises(ValueError, match="closed"):
        m.fetch_add_u64(0, 1)


def _run_all(ctx, target, argsets):
    procs = [ctx.Process(target=target, args=a) for a in argsets]
    for p in procs:
        p.start()
    for p in procs:
        p.join(GUARD)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0] * len(procs)


@pytest.mark.parametrize("method", ["spawn", "fork"])
@pytest.mark.parametrize("bits", WIDTHS)
def test_fetch_add_hammered_by_processes_is_exact(shm_path, method, bits):
    nproc, n = 4, 20000
    pymmapdev.open_file(shm_path, 4096).close()
    _run_all(mp.get_context(method), fetch_add_worker,
             [(shm_path, 64, bits, n)] * nproc)
    with pymmapdev.open_file(shm_path) as m:
        assert ops(m, bits)["load"](64) == nproc * n
        # neighbours untouched
        assert m.read_u64(56) == 0 and m.read_u64(72) == 0


def test_fetch_add_wraps_under_contention(shm_path):
    """Deltas near 2**64 from 3 processes: the exact sum modulo 2**64."""
    n, delta = 5000, (1 << 64) - 3                          # i.e. -3
    with pymmapdev.open_file(shm_path, 4096) as m:
        m.store_u64(0, 10)
    _run_all(mp.get_context("spawn"), fetch_add_worker,
             [(shm_path, 0, 64, n, delta)] * 3)
    with pymmapdev.open_file(shm_path) as m:
        assert m.load_u64(0) == (10 + 3 * n * delta) % (1 << 64)


@pytest.mark.parametrize("bits", WIDTHS)
def test_cas_counter_hammered_by_processes_is_exact(shm_path, bits):
    nproc, n = 4, 10000
    pymmapdev.open_file(shm_path, 4096).close()
    _run_all(mp.get_context("fork"), cas_worker, [(shm_path, 8, bits, n)] * nproc)
    with pymmapdev.open_file(shm_path) as m:
        assert ops(m, bits)["load"](8) == nproc * n


def test_fetch_add_with_an_unrelated_process(shm_path, run_child):
    """A separate interpreter (not a multiprocessing child) races the parent."""
    n = 20000
    with pymmapdev.open_file(shm_path, 4096) as m:
        child = run_child(f"""
            import pymmapdev
            with pymmapdev.open_file({shm_path!r}) as m:
                for _ in range({n}):
                    m.fetch_add_u32(0, 1)
        """)
        for _ in range(n):
            m.fetch_add_u32(0, 1)
        assert child.wait(GUARD) == 0, child.stderr.read()
        assert m.load_u32(0) == 2 * n


@pytest.mark.parametrize("bits", [32, 64])
def test_random_operations_match_a_model_and_spare_the_neighbours(m, bits):
    """Every read-modify-write is one instruction of exactly the width
    (fault.h): a model of the word agrees, the bytes around it stay."""
    rng = random.Random(bits)
    mask, width, off = (1 << bits) - 1, bits // 8, 64
    fetch_add, exchange, cas, store, load = (
        getattr(m, f"{name}_u{bits}")
        for name in ("fetch_add", "exchange", "compare_exchange", "store", "load"))
    m[off - 8:off] = b"\xaa" * 8
    m[off + width:off + width + 8] = b"\x55" * 8
    model = load(off)
    for _ in range(scaled(5000)):
        op, value = rng.randrange(4), rng.getrandbits(bits)
        if op == 0:
            assert fetch_add(off, value) == model
            model = (model + value) & mask
        elif op == 1:
            assert exchange(off, value) == model
            model = value
        elif op == 2:
            expected = model if rng.random() < 0.5 else rng.getrandbits(bits)
            assert cas(off, expected, value) == model
            model = value if expected == model else model
        else:
            store(off, value)
            model = value
        assert load(off) == model
    assert m[off - 8:off] == b"\xaa" * 8
    assert m[off + width:off + width + 8] == b"\x55" * 8
