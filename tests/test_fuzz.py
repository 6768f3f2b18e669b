"""Model-based fuzzing of the Mapping API against a bytearray mirror.

Every operation is applied to a real mapping and to the model; the model
says what must come back or which documented exception must be raised.  A
crash, a wrong byte or an undocumented exception fails the test.  The same
operation table drives a hypothesis state machine (shrinks failures) and a
seeded random run (guarantees volume: >= 100k calls in CI).
"""
import random
import sys

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import pymmapdev

from conftest import scaled

SIZE = 3 * 4096 + 100          # not a page multiple: the tail page is partial
WIDTHS = (1, 2, 4, 8)
ORDER = sys.byteorder


class Model:
    """What the mapping must contain and how it must behave."""

    def __init__(self, path):
        self.path = path
        self.mirror = bytearray(SIZE)
        self.readonly = False
        self.views = []
        self.m = pymmapdev.open_file(path, SIZE)
        self.calls = 0

    # -- checks shared by the operations, in the order the C code makes them
    def closed_error(self):
        return ValueError if self.m.closed else None

    def span_error(self, offset, size, align=1, write=False):
        if self.m.closed:
            return ValueError
        if offset < 0 or size < 0 or offset + size > SIZE:
            return ValueError
        if offset % align:
            return ValueError
        if write and self.readonly:
            return TypeError
        return None

    def expect(self, error, call):
        """Run *call*; it must raise exactly *error* (a type) or succeed."""
        self.calls += 1
        if error is None:
            return call()
        with pytest.raises(error):
            call()
        return None


def pick_offset(rnd, align=1):
    r = rnd.random()
    if r < 0.7:
        return rnd.randrange(0, SIZE // align) * align
    if r < 0.85:
        return rnd.randrange(-16, SIZE + 16)
    return rnd.choice([0, SIZE - 1, SIZE, SIZE - 8, -1, SIZE + 4096])


def pick_size(rnd):
    return rnd.choice([0, 1, 7, 64, 4096, 5000, SIZE, -1]) if rnd.random() < 0.3 \
        else rnd.randrange(0, 300)


# ---- operations: each takes (model, rnd) -------------------------------------

def op_read(md, rnd):
    off, size = pick_offset(rnd), pick_size(rnd)
    got = md.expect(md.span_error(off, size), lambda: md.m.read(off, size))
    if got is not None:
        assert got == md.mirror[off:off + size]


def op_write(md, rnd):
    off = pick_offset(rnd)
    data = rnd.randbytes(max(0, pick_size(rnd)))
    if md.expect(md.span_error(off, len(data), write=True), lambda: md.m.write(off, data)) is not None:
        md.mirror[off:off + len(data)] = data


def op_typed(md, rnd):
    width = rnd.choice(WIDTHS)
    bits = width * 8
    off = pick_offset(rnd, width) if rnd.random() < 0.8 else pick_offset(rnd)
    if rnd.random() < 0.5:
        err = md.span_error(off, width, width)
        got = md.expect(err, lambda: getattr(md.m, f"read_u{bits}")(off))
        if err is None:
            assert got == int.from_bytes(md.mirror[off:off + width], ORDER)
        return
    value = rnd.choice([0, 2**bits - 1, rnd.randrange(2**bits), 2**bits, -1])
    # order of the checks: offset sign, value range, then span (incl. closed)
    if off < 0:
        err = ValueError
    elif not 0 <= value < 2**bits:
        err = OverflowError
    else:
        err = md.span_error(off, width, width, write=True)
    md.expect(err, lambda: getattr(md.m, f"write_u{bits}")(off, value))
    if err is None:
        md.mirror[off:off + width] = value.to_bytes(width, ORDER)


def op_atomic(md, rnd):
    width = rnd.choice((4, 8))
    bits = width * 8
    off = pick_offset(rnd, width) if rnd.random() < 0.9 else pick_offset(rnd)
    kind = rnd.choice(["load", "store", "fetch_add", "exchange", "compare_exchange"])
    method = getattr(md.m, f"{kind}_u{bits}")
    span = md.span_error(off, width, width, write=kind != "load")
    if md.m.closed or off < 0:
        span = ValueError
    old = int.from_bytes(md.mirror[off:off + width], ORDER) if span is None else None
    if kind == "load":
        got = md.expect(span, lambda: method(off))
        assert span is not None or got == old
        return
    if kind == "fetch_add":
        delta = rnd.choice([1, -1, rnd.randrange(-2**(bits - 1), 2**bits), 2**bits])
        err = ValueError if off < 0 else \
            OverflowError if not -2**(bits - 1) <= delta < 2**bits else span
        got = md.expect(err, lambda: method(off, delta))
        if err is None:
            assert got == old
            new = (old + delta) % 2**bits
        else:
            return
    elif kind == "compare_exchange":
        expected = old if (old is not None and rnd.random() < 0.5) else rnd.randrange(2**bits)
        desired = rnd.randrange(2**bits)
        got = md.expect(span, lambda: method(off, expected, desired))
        if span is not None:
            return
        assert got == old
        new = desired if old == expected else old
    else:
        value = rnd.randrange(2**bits)
        got = md.expect(span, lambda: method(off, value))
        if span is not None:
            return
        assert got == (None if kind == "store" else old)
        new = value
    md.mirror[off:off + width] = new.to_bytes(width, ORDER)


def op_index(md, rnd):
    i = rnd.randrange(-SIZE - 3, SIZE + 3)
    if md.m.closed:
        md.expect(ValueError, lambda: md.m[i])
        return
    ok = -SIZE <= i < SIZE
    if rnd.random() < 0.5:
        got = md.expect(None if ok else IndexError, lambda: md.m[i])
        assert not ok or got == md.mirror[i]
        return
    value = rnd.choice([0, 255, rnd.randrange(256), 256])
    # arguments are converted before the mapping is looked at
    err = IndexError if not ok else OverflowError if value > 255 else \
        TypeError if md.readonly else None
    md.expect(err, lambda: md.m.__setitem__(i, value))
    if err is None:
        md.mirror[i] = value


def op_slice(md, rnd):
    start = rnd.choice([None, rnd.randrange(-SIZE - 5, SIZE + 5)])
    stop = rnd.choice([None, rnd.randrange(-SIZE - 5, SIZE + 5)])
    step = rnd.choice([None, 1, 1, 2, 3, -1, -7])
    sl = slice(start, stop, step)
    if md.m.closed:
        md.expect(ValueError, lambda: md.m[sl])
        return
    if rnd.random() < 0.5:
        assert md.expect(None, lambda: md.m[sl]) == bytes(md.mirror[sl])
        return
    n = len(md.mirror[sl])
    data = rnd.randbytes(n if rnd.random() < 0.8 else n + 1)
    err = IndexError if len(data) != n else TypeError if md.readonly else None
    md.expect(err, lambda: md.m.__setitem__(sl, data))
    if err is None:
        md.mirror[sl] = data


def op_flush_madvise(md, rnd):
    off = pick_offset(rnd)
    size = rnd.choice([None, pick_size(rnd)])
    eff = (SIZE - off if 0 <= off <= SIZE else 0) if size is None else size
    err = md.span_error(off, eff)
    if off < 0:
        err = ValueError
    if rnd.random() < 0.5:
        md.expect(err, lambda: md.m.flush(off, size, wait=rnd.random() < 0.5))
    else:
        advice = rnd.choice([pymmapdev.MADV_NORMAL, pymmapdev.MADV_WILLNEED,
                             pymmapdev.MADV_SEQUENTIAL, pymmapdev.MADV_RANDOM])
        md.expect(err, lambda: md.m.madvise(advice, off, size))


def op_export(md, rnd):
    if md.m.closed:
        md.expect(ValueError, lambda: memoryview(md.m))
        return
    if md.views and rnd.random() < 0.5:
        md.views.pop(rnd.randrange(len(md.views))).release()
        return
    view = md.expect(None, lambda: memoryview(md.m))
    assert view.readonly == md.readonly and view.nbytes == SIZE
    if not md.readonly:
        off = rnd.randrange(SIZE)
        data = rnd.randbytes(min(16, SIZE - off))
        view[off:off + len(data)] = data
        md.mirror[off:off + len(data)] = data
    md.views.append(view)


def op_close_reopen(md, rnd):
    if md.m.closed:
        md.readonly = rnd.random() < 0.3
        md.m = pymmapdev.open_file(md.path, create=False, readonly=md.readonly)
        assert md.m.size == SIZE
        return
    if md.views:
        md.expect(BufferError, md.m.close)
        for view in md.views:
            view.release()
        md.views.clear()
    md.expect(None, md.m.close)
    md.expect(None, md.m.close)   # idempotent


OPS = [op_read, op_write, op_typed, op_atomic, op_index, op_slice, op_flush_madvise,
       op_export, op_close_reopen]
WEIGHTS = [10, 10, 14, 14, 8, 8, 3, 3, 1]


def finish(md):
    for view in md.views:
        view.release()
    if md.m.closed:
        md.m = pymmapdev.open_file(md.path, create=False)
    assert md.m[:] == bytes(md.mirror)
    md.m.close()


def test_random_operations_match_the_model(shm_path):
    rnd = random.Random(20261127)
    md = Model(shm_path)
    for _ in range(scaled(110_000)):
        rnd.choices(OPS, WEIGHTS)[0](md, rnd)
    finish(md)
    assert md.calls >= scaled(100_000)


class MappingMachine(RuleBasedStateMachine):
    @initialize()
    def start(self):
        import os, tempfile
        fd, self.path = tempfile.mkstemp(prefix="pymmapdev-fuzz-", dir="/dev/shm")
        os.close(fd)
        os.unlink(self.path)
        self.md = Model(self.path)

    @rule(op=st.sampled_from(OPS), rnd=st.randoms(use_true_random=False))
    def step(self, op, rnd):
        op(self.md, rnd)

    @invariant()
    def contents_match(self):
        if hasattr(self, "md") and not self.md.m.closed:
            assert self.md.m[:] == bytes(self.md.mirror)

    def teardown(self):
        import os
        if hasattr(self, "md"):
            finish(self.md)
            os.unlink(self.path)


TestMappingMachine = MappingMachine.TestCase
TestMappingMachine.settings = settings(max_examples=scaled(60, 5), stateful_step_count=60,
                                      deadline=None)


# ---- hostile peer: another process scribbles the shared structures -------------

SCRIBBLER = """
import os, random, sys, time, pymmapdev
rnd = random.Random(int(sys.argv[2]))
with pymmapdev.open_file(sys.argv[1]) as m:
    regions = [(64, 64), (256, pymmapdev.Slot.size_for(200))]     # the Lock, the Slot
    print("scribbling", flush=True)
    end = time.monotonic() + float(sys.argv[3])
    while time.monotonic() < end:
        base, size = rnd.choice(regions)
        where = rnd.randrange(0, size - 8) // 8 * 8
        if rnd.random() < 0.5:        # plausible values too: small, odd, our own
            m.write_u64(base + where, rnd.choice([0, 1, 3, 2**32 - 1, 2**63, os.getpid(),
                                                   rnd.getrandbits(64)]))
        else:
            m.write(base + where, os.urandom(rnd.choice([1, 4, 8])))
        if rnd.random() < 0.01:
            time.sleep(0.001)
"""


def test_hostile_peer_scribbling_lock_and_slot(shm_path, tmp_path):
    """While another process writes random bytes over a Lock and a Slot,
    every call here returns or raises a documented error within a bound,
    and the bytes around them are never touched."""
    import collections
    import subprocess
    import time
    import warnings
    from conftest import child_env

    size = 4096
    with pymmapdev.open_file(shm_path, size) as m:
        m[0:64] = b"\xa5" * 64                                  # canaries around
        slot_end = 256 + pymmapdev.Slot.size_for(200)
        m[128:256] = b"\xa5" * 128
        m[slot_end:size] = b"\x5a" * (size - slot_end)
        seconds = max(1.0, 4.0 * min(1.0, scaled(100) / 100))
        child = subprocess.Popen([sys.executable, "-c", SCRIBBLER, shm_path, "11", str(seconds)],
                                 env=child_env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        # the clock starts when the scribbling does (a child under ASan
        # takes most of a second to start)
        assert child.stdout.readline() == "scribbling\n", child.stderr.read()
        outcomes = collections.Counter()
        rnd = random.Random(5)
        end = time.monotonic() + seconds
        documented = (ValueError, RuntimeError, pymmapdev.PeerDied)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pymmapdev.OwnerDiedWarning)
            while time.monotonic() < end:
                t0 = time.monotonic()
                op = rnd.random()
                try:
                    if op < 0.4:
                        lock = pymmapdev.Lock(m, 64)
                        if lock.acquire(timeout=0.05):
                            lock.release()
                    elif op < 0.6:
                        pymmapdev.Slot(m, 256, 200).publish(rnd.randbytes(rnd.randrange(201)))
                    elif op < 0.85:
                        pymmapdev.Slot(m, 256, 200).read(timeout=0.05)
                    else:
                        slot = pymmapdev.Slot(m, 256, 200)
                        slot.wait_newer(slot.version, timeout=0.02)
                    outcomes["ok"] += 1
                except documented as exc:
                    outcomes[type(exc).__name__] += 1
                assert time.monotonic() - t0 < 2.5, "a call did not end on garbage"
        assert child.wait(60) == 0, child.stderr.read()
        assert m[0:64] == b"\xa5" * 64 and m[128:256] == b"\xa5" * 128
        assert m[slot_end:size] == b"\x5a" * (size - slot_end)
    assert outcomes["ok"] > 0 and len(outcomes) > 1, outcomes
