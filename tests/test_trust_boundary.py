"""The trust boundary: shared memory is input from other processes, and Python
code can run in the middle of our calls.  Whatever a peer writes and whatever a
callback does, our process never crashes, never waits without a bound and never
touches memory outside its mapping.  (Issue "Shared memory is untrusted input".)

Scenarios that used to crash run in a child interpreter, so a regression fails
the test instead of killing the test run; each child prints what it saw.
"""
import errno
import os
import re
import signal
import stat
import struct
import subprocess
import sys
import threading
import textwrap

import pytest

import pymmapdev
from pymmapdev import _open
from conftest import child_env, run_python
from _sync_workers import asleep_on, spin_until

PAGE = pymmapdev.PAGESIZE
TESTS = os.path.dirname(os.path.abspath(__file__))     # children import _sync_workers from here


def outcome(code, *args, timeout=60):
    """Run *code* in a fresh python; return its last stdout line.

    A crash (signal) or a hang fails the test with the child's output.
    """
    try:
        proc = run_python(code, *args, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child hung for {timeout} s")
    if proc.returncode != 0:
        pytest.fail(f"the child died (status {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout.strip().splitlines()[-1]


# ---- 1. re-entrancy: Python code that closes the mapping mid-call ------------

CLOSER = """
import pymmapdev, sys
m = pymmapdev.anonymous(1 << 16)
other = []                   # mappings that may land at the freed address
class Closer:
    def __init__(self, value): self.value = value
    def __index__(self):
        m.close()
        other.append(pymmapdev.anonymous(1 << 16))
        return self.value
    def __float__(self):
        m.close()
        other.append(pymmapdev.anonymous(1 << 16))
        return float(self.value)
X = Closer
try:
    {stmt}
except ValueError as exc:
    print("ValueError", exc)
except Exception as exc:
    print(type(exc).__name__, exc)
else:
    print("no error")
assert all(o[:] == bytes(1 << 16) for o in other), "another mapping was written"
"""


@pytest.mark.parametrize("stmt", [
    "m[X(5)]",
    "m[X(0):100]",
    "m[0:100:X(3)]",
    "m[X(-1)]",
    "m[X(5)] = 7",
    "m[5] = X(7)",
    "m[X(0):4] = b'abcd'",
    "m[0:8:X(2)] = b'abcd'",
    "m.read(X(0), 10)",
    "m.write(X(0), b'abcd')",
    "m.read_u32(X(0))",
    "m.write_u32(0, X(1))",
    "m.write_u64(X(8), 1)",
    "m.fetch_add_u32(0, X(1))",
    "m.compare_exchange_u32(0, X(0), 1)",
    "m.compare_exchange_u64(0, 0, X(1))",
    "m.wait(0, 1, timeout=X(0))",
    "m.wait(0, 0, timeout=X(0))",
    "m.wait(0, 0, timeout=0, spin=X(10))",
    "m.wake(0, X(1))",
    "m.flush(X(0))",
    "m.flush(0, X(10))",
    "m.madvise(pymmapdev.MADV_NORMAL, 0, X(10))",
    "m.ndarray('u1', offset=X(0))",
    "m.ndarray('u1', shape=(X(4),))",
    "pymmapdev.Lock(m, X(0))",
    "pymmapdev.Lock(m, 0).acquire(timeout=X(1))",
    "pymmapdev.Slot(m, 0, X(64)).read()",
    "pymmapdev.Slot(m, 0, 64).publish(b'x'); pymmapdev.Slot(m, 0, 64).wait_newer(X(1), timeout=0)",
    "pymmapdev.Slot(m, 0, 64).read(timeout=X(1))",
    "pymmapdev.Slot(m, 0, 64).wait_newer(0, timeout=X(0))",
    "pymmapdev.Channel(m, X(0), 4096)",
    "pymmapdev.Channel(m, 0, 4096).send(b'x', timeout=X(1))",
    "pymmapdev.Channel(m, 0, 4096).recv(timeout=X(0))",
    "pymmapdev.Channel(m, 0, 4096).recv_many(X(2), timeout=0)",
    "with pymmapdev.Channel(m, 0, 4096).reserve(X(8), timeout=0) as buf: pass",
])
def test_callback_that_closes_the_mapping(stmt):
    line = outcome(CLOSER.format(stmt=stmt))
    assert line.startswith("ValueError") and "closed" in line, line


def test_ndarray_dtype_that_closes_the_mapping():
    pytest.importorskip("numpy")
    line = outcome("""
        import pymmapdev
        m = pymmapdev.anonymous(4096)
        import numpy
        class D:
            @property
            def dtype(self):
                m.close()
                return numpy.dtype("u1")
        try:
            m.ndarray(D())
        except Exception as exc:
            print(type(exc).__name__, exc)
        """)
    assert line.startswith("ValueError") and "closed" in line, line


def test_signal_handler_cannot_close_a_spinning_wait():
    line = outcome("""
        import pymmapdev, signal
        m = pymmapdev.anonymous(4096)
        seen = []
        def handler(*_):
            try:
                m.close()
                seen.append("closed")
            except BufferError as exc:
                seen.append("BufferError")
        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        print(m.wait(0, 0, timeout=0.3, spin=2**30), seen)
        """)
    assert line == "False ['BufferError']"


def test_thread_cannot_close_under_a_blocked_slot_read():
    # A publish "in progress" by a live writer (this thread): read() waits
    # until the writer ends it, and a close() meanwhile is refused, not
    # allowed to unmap the slot under it.  Ordered by events, not sleeps:
    # the closer tries once the read sleeps on the slot's word, and ends
    # the publish after.  (A closer 0.05 s after its start raced a read
    # with a 0.5 s timeout: one that ran late found it over and closed.)
    line = outcome("""
        import sys, threading, pymmapdev
        sys.path.insert(0, sys.argv[1])
        from _sync_workers import asleep_on, spin_until
        m = pymmapdev.anonymous(4096)
        slot = pymmapdev.Slot(m, 0, 64)
        slot.publish(b"x")                 # records this thread as the writer
        seq = m.load_u64(0)
        m.store_u64(0, seq | 1)
        reader, seen = threading.current_thread(), []
        def closer():
            spin_until(lambda: asleep_on(m, 0, reader))     # the read sleeps
            try:
                m.close()
                seen.append("closed")
            except BufferError as exc:
                seen.append("BufferError" if "1 blocking call" in str(exc) else str(exc))
            m.store_u64(0, seq + 2)        # the writer's publish ends
            m.wake(0)
        t = threading.Thread(target=closer)
        t.start()
        seen.append(slot.read(timeout=30))
        t.join()
        print(seen)
        """, TESTS)
    assert line == "['BufferError', (2, b'x')]"


def test_thread_cannot_close_under_a_sleeping_lock_acquire():
    # Ordered by events, not sleeps: the holder has the lock before this
    # thread's acquire() starts, and keeps it until the closer has tried;
    # the closer tries once the refusal counts that acquire() too (2).
    # (A holder started 0.05 s late, or a closer 0.15 s late, on a loaded
    # machine gave [True, 'BufferError'] or [True, 'closed'].)
    line = outcome("""
        import os, pymmapdev, threading, time
        m = pymmapdev.anonymous(4096)
        lock = pymmapdev.Lock(m, 0)
        seen = []
        held, tried = threading.Event(), threading.Event()
        def holder():
            with pymmapdev.Lock(m, 0):
                held.set()
                tried.wait(30)
        h = threading.Thread(target=holder)
        h.start()
        held.wait(30)
        def closer():
            deadline = time.monotonic() + 20        # then seen lacks 'BufferError'
            while time.monotonic() < deadline:
                try:
                    m.close()
                    seen.append("closed")
                    break
                except BufferError as exc:
                    if ": 2 pymmapdev.Lock held or being acquired" in str(exc):
                        seen.append("BufferError")
                        break
                time.sleep(0.01)
            tried.set()
        t = threading.Thread(target=closer)
        t.start()
        seen.append(lock.acquire(timeout=30))
        lock.release()
        t.join(); h.join()
        print(seen)
        """)
    assert line == "['BufferError', True]"


# ---- 2. the Lock keeps no pointers and no glibc state in shared memory -------

def _mapped_ranges():
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = line.split()[0].split("-")
            yield int(lo, 16), int(hi, 16)


def test_held_lock_exposes_no_addresses(shm_path):
    with pymmapdev.open_file(shm_path, 4096) as m:
        lock = pymmapdev.Lock(m, 0)
        ranges = list(_mapped_ranges())
        with lock:
            words = struct.unpack("8Q", m.read(0, 64))
            # Whole 64-bit words, as pointers are stored: a 32-bit half of
            # the namespace tag (a hash) once landed in the low brk heap
            # of Debian's non-PIE python3.14.
            for word in words:
                assert not any(lo <= word < hi for lo, hi in ranges if word > 1 << 20), \
                    f"lock word {word:#x} points into this process"


def test_peer_scribbling_a_held_lock_cannot_crash_release():
    line = outcome("""
        import os, pymmapdev
        m = pymmapdev.anonymous(4096)
        lock = pymmapdev.Lock(m, 0)
        results = []
        for trial in range(200):
            lock.acquire()
            m[0:64] = os.urandom(64)          # a hostile peer rewrites it all
            try:
                lock.release()
                results.append("released")
            except (RuntimeError, ValueError, pymmapdev.PeerDied) as exc:
                results.append(type(exc).__name__)
                m[0:64] = bytes(64)
                lock = pymmapdev.Lock(m, 0)   # the holder pin goes with the old object
        print("ok", len(results))
        """)
    assert line == "ok 200"


def test_random_lock_bytes_never_crash_or_hang():
    line = outcome("""
        import os, pymmapdev, warnings
        warnings.simplefilter("ignore")
        m = pymmapdev.anonymous(4096)
        kinds = set()
        for trial in range(300):
            m[0:64] = os.urandom(64)
            try:
                lock = pymmapdev.Lock(m, 0)
                if lock.acquire(timeout=0.01):
                    lock.release()
                    kinds.add("acquired")
                else:
                    kinds.add("timeout")
            except (ValueError, RuntimeError, pymmapdev.PeerDied) as exc:
                kinds.add(type(exc).__name__)
        print("ok", sorted(kinds))
        """, timeout=120)
    assert line.startswith("ok")


def test_dropped_held_lock_never_writes_into_a_later_mapping():
    line = outcome("""
        import gc, pymmapdev
        m1 = pymmapdev.anonymous(1 << 20)
        lock = pymmapdev.Lock(m1, 0)
        lock.acquire()
        del lock
        gc.collect()
        m1.close()                           # the pin went with the Lock object
        m2 = pymmapdev.anonymous(1 << 20)    # likely at m1's old address
        m2[:] = b"\\xee" * (1 << 20)
        m3 = pymmapdev.anonymous(4096)
        other = pymmapdev.Lock(m3, 0)
        for _ in range(10):
            with other:
                pass
        print(m2[:] == b"\\xee" * (1 << 20))
        """)
    assert line == "True"


# ---- 3. nothing waits without a bound on garbage -----------------------------

def test_slot_read_with_timeout_on_a_publish_that_never_ends():
    # a live writer (this thread) "mid-publish": not dead, so no PeerDied;
    # the timeout ends the read
    line = outcome("""
        import time, pymmapdev
        m = pymmapdev.anonymous(4096)
        slot = pymmapdev.Slot(m, 0, 64)
        slot.publish(b"x")                 # records this thread as the writer
        m.store_u64(0, m.load_u64(0) | 1)
        start = time.monotonic()
        print(slot.read(timeout=0.2), time.monotonic() - start >= 0.2)   # waited it out
        """, timeout=30)                   # a read the timeout did not end: hangs
    assert line == "None True"


def test_slot_read_on_a_dead_writer_raises_peer_died():
    line = outcome("""
        import errno, os, time, pymmapdev
        m = pymmapdev.anonymous(4096)
        slot = pymmapdev.Slot(m, 0, 64)
        slot.publish(b"before")
        pid = os.fork()
        if pid == 0:                       # the writer dies mid-publish
            try:
                scratch = pymmapdev.anonymous(4096)
                pymmapdev.Slot(scratch, 0, 8).publish(b"x")
                m.store_u64(24, scratch.load_u64(24))     # its identity
                m.store_u64(0, m.load_u64(0) | 1)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        try:
            seen = slot.read()             # no timeout: only PeerDied ends it
        except pymmapdev.PeerDied as exc:
            assert exc.errno == errno.EOWNERDEAD and "offset 0" in str(exc), exc
            seen = "PeerDied"
        slot.publish(b"after")             # a new publish repairs it
        print(seen, slot.read()[1])
        """, timeout=30)
    assert line == "PeerDied b'after'"


@pytest.mark.parametrize("word", [0xa5000001, 0xa5000000 | os.getpid(), 0xffffffff, 0x4c4f434b])
def test_lock_on_garbage_state_does_not_hang(word):
    line = outcome(f"""
        import pymmapdev, warnings
        warnings.simplefilter("ignore")
        m = pymmapdev.anonymous(4096)
        m.write_u32(0, {word})
        try:
            lock = pymmapdev.Lock(m, 0)
            print("acquired" if lock.acquire(timeout=0.5) else "timeout")
        except (ValueError, pymmapdev.PeerDied) as exc:
            print(type(exc).__name__)
        """, timeout=30)
    assert line in ("acquired", "timeout", "ValueError", "PeerDied")


@pytest.mark.parametrize("readonly", [True, False])
def test_open_file_on_a_fifo_does_not_block(tmp_path, readonly):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    line = outcome(f"""
        import pymmapdev
        try:
            pymmapdev.open_file({str(fifo)!r}, readonly={readonly})
        except ValueError as exc:
            print("ValueError", exc)
        """, timeout=20)
    assert line.startswith("ValueError") and "fifo" in line.lower()


# ---- 4. sizes the machine cannot back are refused before allocating ----------

def confined(code, timeout=60):
    """Run *code* in a child python whose files cannot grow past 64 MiB.

    A safety net should a size check ever regress: tmpfs and memfd growth goes
    through the kernel's RLIMIT_FSIZE check, so a missing check fails with
    EFBIG here instead of filling memory until the OOM killer picks victims
    among unrelated processes.  Returns the child's stdout.
    """
    prologue = ("import resource, signal\n"
                "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
                "resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, 64 << 20))\n")
    proc = run_python(prologue + textwrap.dedent(code), timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip()


MACHINE = """
import os
machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
machine += int(open("/proc/meminfo").read().split("SwapTotal:")[1].split()[0]) * 1024
"""


@pytest.mark.parametrize("size", ["2**63 - 1", "2**62", "machine + 4096"])
def test_anonymous_larger_than_memory_is_refused(size):
    out = confined(MACHINE + f"""
import pymmapdev
try:
    pymmapdev.anonymous({size})
except OSError as exc:
    print("OSError", exc.errno, exc)
""")
    assert out.startswith(f"OSError {errno.ENOMEM}"), out
    assert "memory" in out


@pytest.mark.parametrize("there", [None, b"kept"])
def test_open_file_on_tmpfs_larger_than_memory_is_refused(shm_path, there):
    if there is not None:
        with open(shm_path, "wb") as f:
            f.write(there)
    out = confined(MACHINE + f"""
import pymmapdev
try:
    pymmapdev.open_file({shm_path!r}, machine + 4096)
except OSError as exc:
    print("OSError", exc.errno, exc)
""")
    assert out.startswith(f"OSError {errno.ENOMEM}"), out
    if there is None:
        assert not os.path.exists(shm_path)     # the file it created is gone again
    else:
        with open(shm_path, "rb") as f:         # a file that was there is kept
            assert f.read() == there


# ---- 5. data integrity -------------------------------------------------------

@pytest.mark.parametrize("dst,src", [
    (slice(0, 20, 2), slice(1, 11)),
    (slice(10, 0, -1), slice(0, 10)),
    (slice(30, 0, -3), slice(5, 15)),
    (slice(2, 40, 4), slice(0, 10)),
    (slice(5, 15), slice(0, 10)),
])
def test_overlapping_strided_assignment(dst, src):
    m = pymmapdev.anonymous(4096)
    m[0:64] = bytes(range(64))
    model = bytearray(range(64))
    model[dst] = bytes(model[src])
    view = memoryview(m)
    m[dst] = view[src]
    view.release()
    assert m[0:64] == bytes(model)


def test_non_contiguous_source_is_a_clear_error():
    m = pymmapdev.anonymous(4096)
    with pytest.raises(BufferError, match="contiguous"):
        m[0:10] = memoryview(bytes(20))[::2]


def test_existing_sparse_file_on_a_full_filesystem_fails_at_open(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("needs root to mount a small tmpfs (CI runs as root)")
    script = tmp_path / "inner.py"
    script.write_text(f"""
import errno, os, sys
sys.path[:0] = {sys.path!r}
import pymmapdev
d = sys.argv[1]
sparse = os.path.join(d, "sparse")
with open(sparse, "wb") as f:
    f.truncate(512 * 1024)                 # all holes
try:                                       # fill the file system
    with open(os.path.join(d, "fill"), "wb") as f:
        while True:
            f.write(b"x" * 65536)
            f.flush()
except OSError as exc:
    assert exc.errno == errno.ENOSPC
try:
    m = pymmapdev.open_file(sparse, 512 * 1024)
except OSError as exc:
    print("OSError", exc.errno)
else:
    print("mapped")
""")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    # A private mount namespace, so the small tmpfs is gone with the child.
    # Inside a chroot (the 3.14 leg of the matrix runs in one) "/" is no
    # mount point and its propagation cannot be changed; the chroot's own
    # namespace is private already, so there it is left unchanged.
    for propagation in ("private", "unchanged"):
        proc = subprocess.run(
            ["unshare", "--mount", f"--propagation={propagation}", "sh", "-c",
             f"mount -t tmpfs -o size=256k none {mnt} && {sys.executable} {script} {mnt}"],
            capture_output=True, text=True, timeout=60, env=child_env())
        if "cannot change root filesystem propagation" not in proc.stderr:
            break
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"OSError {errno.ENOSPC}", proc.stdout + proc.stderr


def test_copy_from_a_truncated_mapping_raises(shm_path):
    line = outcome(f"""
        import os, pymmapdev
        src = pymmapdev.open_file({shm_path!r}, 4 * {PAGE})
        dst = pymmapdev.anonymous(4 * {PAGE})
        os.truncate({shm_path!r}, {PAGE})
        seen = []
        view = memoryview(src)
        for call in (lambda: dst.write(0, view[2 * {PAGE}:3 * {PAGE}]),
                     lambda: dst.__setitem__(slice(0, {PAGE}), view[2 * {PAGE}:3 * {PAGE}]),
                     lambda: dst.__setitem__(slice(0, {PAGE}, 2),
                                             view[2 * {PAGE}:2 * {PAGE} + {PAGE} // 2]),
                     lambda: pymmapdev.Slot(dst, 0, 2 * {PAGE}).publish(view[{PAGE}:3 * {PAGE}])):
            try:
                call()
                seen.append("no error")
            except pymmapdev.MappingFault as exc:
                seen.append("fault" if {shm_path!r} in str(exc) or "source" in str(exc) else str(exc))
        print(seen)
        """)
    assert line == "['fault', 'fault', 'fault', 'fault']"


def test_read_into_a_truncated_mapping_names_the_destination(shm_path):
    """read_into()'s buffer is the destination of the copy: a fault there
    said 'bus error reading the source' (the wording of write()'s source)."""
    line = outcome(f"""
        import ctypes, os, pymmapdev
        dst = pymmapdev.open_file({shm_path!r}, 4 * {PAGE})
        m = pymmapdev.anonymous(4 * {PAGE})
        os.truncate({shm_path!r}, {PAGE})
        view = memoryview(dst)
        raw = (ctypes.c_char * {PAGE}).from_buffer(dst, 2 * {PAGE})   # no Mapping view
        seen = []
        for target in (view[2 * {PAGE}:3 * {PAGE}], raw):
            try:
                m.read_into(0, target)
                seen.append("no error")
            except pymmapdev.MappingFault as exc:
                seen.append(str(exc).split(":")[0])
        print(seen)
        """)
    # which byte faults first is the copy's choice (ASan's memcpy starts at
    # the end): any byte of the truncated page
    found = re.fullmatch(r"\['\[Errno 14\] bus error writing the destination at offset (\d+) of "
                         rf"the mapping of {4 * PAGE} bytes', '\[Errno 14\] bus error writing "
                         r"byte (\d+) of the destination buffer \(a mapping of a file that was "
                         r"truncated\?\)'\]", line)
    assert found, line
    assert 2 * PAGE <= int(found[1]) < 3 * PAGE and 0 <= int(found[2]) < PAGE, line


def test_a_publish_that_faulted_is_not_waited_for(shm_path):
    """A publish whose source faulted leaves the slot mid-publish for good,
    in the name of a writer that lives on: read() waited for it until its
    timeout (for ever without one, a deadlock in that very thread).  It is
    told at once that there is no value until the next publish."""
    line = outcome(f"""
        import os, pymmapdev
        src = pymmapdev.open_file({shm_path!r}, 2 * {PAGE})
        os.truncate({shm_path!r}, {PAGE})
        m = pymmapdev.anonymous({PAGE})
        slot = pymmapdev.Slot(m, 0, 64)
        slot.publish(b"one")
        view = memoryview(src)
        try:
            slot.publish(view[{PAGE}:{PAGE} + 8])
        except pymmapdev.MappingFault:
            pass
        try:
            seen = slot.read(timeout=2)
        except pymmapdev.PeerDied as exc:
            seen = type(exc).__name__
        print(seen, slot.publish(b"two"), slot.read())
        """)
    assert line == "PeerDied 2 (2, b'two')"


@pytest.mark.parametrize("install", ["signal.signal", "from signal import signal"])
def test_python_sigbus_handler_installed_later_does_not_loop(shm_path, install):
    """A Python SIGBUS handler installed after the mapping took SIGBUS from
    the guard, and a guarded access of a truncated page re-ran its faulting
    load forever (a hang at 100 % CPU).  `from signal import signal` at the
    top of a module imported before pymmapdev keeps the unwrapped function:
    that binding must re-arm the guard too."""
    line = outcome(f"""
        import signal as signal_module
        from signal import signal
        import os, pymmapdev
        install = {{"signal.signal": signal_module.signal, "from signal import signal": signal}}
        m = pymmapdev.open_file({shm_path!r}, 4 * {PAGE})
        install[{install!r}](signal_module.SIGBUS, lambda *a: print("python handler"))
        os.truncate({shm_path!r}, {PAGE})
        seen = []
        for call in (lambda: m.read(2 * {PAGE}, 10), lambda: m.read_u32(2 * {PAGE}),
                     lambda: m[2 * {PAGE}]):
            try:
                call()
            except pymmapdev.MappingFault:
                seen.append("fault")
        print(seen)
        """, timeout=30)
    assert line == "['fault', 'fault', 'fault']"


@pytest.mark.parametrize("binding", ["import signal", "from signal import pthread_sigmask"])
def test_a_thread_that_blocks_every_signal_gets_a_fault_not_death(shm_path, binding):
    """Blocking every signal in worker threads (the sigwait() design) blocked
    SIGBUS too, and a fault with SIGBUS blocked is not delivered: the kernel
    kills the process.  A truncated page read there must still be a
    MappingFault; signals other than SIGBUS stay blocked."""
    line = outcome(f"""
        {binding}
        import os, signal, threading, pymmapdev
        m = pymmapdev.open_file({shm_path!r}, 4 * {PAGE})
        os.truncate({shm_path!r}, {PAGE})
        seen = []
        def worker():
            mask = signal.pthread_sigmask if "{binding}" == "import signal" else pthread_sigmask
            mask(signal.SIG_BLOCK, signal.valid_signals())
            for call in (lambda: m.read_u32(2 * {PAGE}), lambda: m.read(2 * {PAGE}, 10)):
                try:
                    call()
                except pymmapdev.MappingFault:
                    seen.append("fault")
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
            seen.append(signal.SIGUSR1 in blocked and signal.SIGBUS not in blocked)
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        print(seen)
        """, timeout=30)
    assert line == "['fault', 'fault', True]"


def test_faulthandler_enabled_later_does_not_kill(shm_path):
    line = outcome(f"""
        import os, faulthandler, pymmapdev
        m = pymmapdev.open_file({shm_path!r}, 4 * {PAGE})
        faulthandler.enable()
        os.truncate({shm_path!r}, {PAGE})
        try:
            m.read(2 * {PAGE}, 10)
        except pymmapdev.MappingFault:
            print("fault")
        """, timeout=30)
    assert line == "fault"


# ---- 6. files ---------------------------------------------------------------

@pytest.mark.parametrize("mode", [0o4600, 0o2600, 0o1600, 0o10600, -1])
def test_mode_with_special_bits_is_refused(shm_path, mode):
    with pytest.raises(ValueError, match="mode"):
        pymmapdev.open_file(shm_path, 4096, mode=mode)
    assert not os.path.exists(shm_path)


@pytest.fixture
def sticky_dir(tmp_path):
    d = tmp_path / "sticky"
    d.mkdir()
    os.chmod(d, 0o1777)
    target = tmp_path / "victim"
    target.write_bytes(b"precious")
    return d, target


def test_symlink_planted_by_another_user_in_a_sticky_dir_is_refused(sticky_dir):
    if os.geteuid() != 0:
        pytest.fail("needs root to plant a link owned by another user (CI runs as root)")
    d, target = sticky_dir
    link = d / "chan"
    os.symlink(target, link)
    os.lchown(link, 65534, 65534)
    for kwargs in ({}, {"create": False}, {"readonly": True}):
        with pytest.raises(PermissionError, match="symlink") as info:
            pymmapdev.open_file(link, 4096 if not kwargs else None, **kwargs)
        assert str(link) in str(info.value)
    assert target.read_bytes() == b"precious"


@pytest.mark.parametrize("where", ["directory", "chain"])
def test_a_planted_symlink_anywhere_on_the_path_is_refused(sticky_dir, where):
    """fs.protected_symlinks checks every symlink the walk follows; only
    the last component was checked: a planted link to a directory
    (sticky/app -> elsewhere, then open_file("sticky/app/victim")) and a
    link of ours leading to a planted one were followed."""
    if os.geteuid() != 0:
        pytest.fail("needs root to plant a link owned by another user (CI runs as root)")
    d, target = sticky_dir
    planted = d / "planted"
    if where == "directory":
        os.symlink(target.parent, planted)
        path = planted / target.name
    else:
        os.symlink(target, planted)
        path = d / "mine"
        os.symlink(planted, path)                   # ours, leading to theirs
    os.lchown(planted, 65534, 65534)
    for kwargs in ({}, {"create": False}, {"readonly": True}):
        with pytest.raises(PermissionError, match="symlink") as info:
            pymmapdev.open_file(path, 4096 if not kwargs else None, **kwargs)
        assert info.value.filename == str(path)
    assert target.read_bytes() == b"precious"


@pytest.mark.parametrize("create", [True, False])
def test_a_memfd_opened_by_its_proc_fd_path_is_that_memfd(create):
    """/proc/PID/fd/N names an open file (a memfd another process shares
    by path): a magic link, whose readlink() text ("/memfd:x (deleted)")
    is no path to it.  The walk that checks every symlink followed that
    text: it mapped a new empty file it created in / instead."""
    fd = os.memfd_create("pymmapdev-proc-fd")
    try:
        os.ftruncate(fd, 4096)
        os.pwrite(fd, b"shared", 0)
        with pymmapdev.open_file(f"/proc/self/fd/{fd}", create=create) as m:
            assert m.read(0, 6) == b"shared"
            m.write(0, b"SHARED")
        assert os.pread(fd, 6, 0) == b"SHARED"
    finally:
        os.close(fd)
    assert not os.path.exists("/memfd:pymmapdev-proc-fd (deleted)")


def test_symlink_owned_by_the_sticky_dirs_owner_is_followed(sticky_dir):
    """As fs.protected_symlinks: the directory's owner could replace the
    link anyway, so a link of theirs is no plant."""
    if os.geteuid() != 0:
        pytest.fail("needs root to hand the directory and link to another user (CI runs as root)")
    d, target = sticky_dir
    os.chown(d, 65534, 65534)
    link = d / "owners"
    os.symlink(target, link)
    os.lchown(link, 65534, 65534)
    with pymmapdev.open_file(link) as m:
        assert m[:8] == b"precious"


def test_own_symlink_in_a_sticky_dir_and_links_elsewhere_are_followed(sticky_dir, tmp_path):
    d, target = sticky_dir
    link = d / "mine"
    os.symlink(target, link)                       # owned by us: allowed
    with pymmapdev.open_file(link) as m:
        assert m[:8] == b"precious"
    plain = tmp_path / "plain-link"
    os.symlink(target, plain)                      # not in a sticky dir
    with pymmapdev.open_file(plain) as m:
        assert m[:8] == b"precious"


# ---- 7. smaller --------------------------------------------------------------

def test_forked_child_can_close_while_parent_holds_a_lock_and_a_waiter(shm_path):
    m = pymmapdev.open_file(shm_path, 4096)
    lock = pymmapdev.Lock(m, 64)
    lock.acquire()
    waiter = threading.Thread(target=m.wait, args=(0, 0, 60))
    waiter.start()
    spin_until(lambda: asleep_on(m, 0, waiter))     # its pin is taken: fork now
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            m.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    m.wake(0)
    waiter.join()
    lock.release()
    m.close()
    assert os.waitstatus_to_exitcode(status) == 0


def test_forked_child_still_cannot_close_under_its_own_views(shm_path):
    m = pymmapdev.open_file(shm_path, 4096)
    view = memoryview(m)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            m.close()
        except BufferError:
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    view.release()
    m.close()
    assert os.waitstatus_to_exitcode(status) == 0


class Idx:
    def __init__(self, v):
        self.v = v

    def __index__(self):
        return self.v


@pytest.mark.parametrize("make", [Idx, lambda v: __import__("numpy").uint32(v)])
def test_index_objects_are_values_everywhere(make):
    if make is not Idx:
        pytest.importorskip("numpy")
    m = pymmapdev.anonymous(4096)
    m.write_u32(0, make(7))
    assert m.read_u32(0) == 7
    m.write_u8(8, make(200))
    m.store_u64(16, make(9))
    assert m.compare_exchange_u32(0, make(7), make(8)) == 7
    assert m.exchange_u64(16, make(10)) == 9
    assert m.fetch_add_u32(0, make(2)) == 8
    m[4] = make(3)
    assert (m.read_u32(0), m.read_u8(8), m.load_u64(16), m[4]) == (10, 200, 10, 3)
    assert m.wait(0, make(1), timeout=make(0)) is True


# ---- 8. found by the second hostile review -------------------------------------

def test_write_words_value_that_empties_the_list():
    line = outcome("""
        import pymmapdev
        m = pymmapdev.anonymous(4096)
        class Clearer:
            def __index__(self):
                values.clear()
                return 1
        values = [Clearer()] + list(range(100))
        m.write_words(0, values)
        print(m.read_words(0, 3).tolist())
        """)
    assert line == "[1, 0, 1]"          # the values as they were when the call began


def test_too_many_recv_views_are_refused_not_carried_into_closed():
    """One more holder than a pin field counts is a BufferError; it used to
    carry into the next field and, at 512, into the closed bit: close()
    then unmapped under 511 live views."""
    line = outcome("""
        import contextlib, pymmapdev
        from pymmapdev import Channel
        n, size = 300, Channel.size_for(128)
        m = pymmapdev.anonymous(n * size)
        chans = [Channel(m, i * size, 128) for i in range(n)]
        for c in chans:
            c.send(b"hi")
        views, refused = [], []
        with contextlib.ExitStack() as stack:
            for c in chans:
                try:
                    views.append(stack.enter_context(c.recv_view()))
                except BufferError as exc:
                    refused.append(str(exc))
            try:
                m.close()
                print("closed under", len(views), "views")
            except BufferError as exc:
                assert "open Channel reserve() or recv_view()" in str(exc), exc
                assert bytes(views[0]) == b"hi"
                print(len(views), len(refused), "too many" in refused[0])
        """)
    assert line == "255 45 True"


def test_read_of_a_size_past_the_end_is_refused_before_allocating():
    m = pymmapdev.anonymous(4096)
    with pytest.raises(ValueError, match="outside the mapping"):
        m.read(0, 2**45)
    with pytest.raises(ValueError, match="outside the mapping"):
        m.read(4000, 2**30)


def test_read_words_does_not_trust_a_replaced_array_type():
    line = outcome("""
        import array, pymmapdev
        m = pymmapdev.anonymous(1 << 20)
        real = array.array
        class Short(real):
            def __mul__(self, n):
                return real(self.typecode, [0])
        array.array = Short
        try:
            m.read_words(0, 1 << 17, 8)
            print("no error")
        except Exception as exc:
            print(type(exc).__name__)
        """)
    assert line == "SystemError"


def test_read_words_into_a_replaced_result_over_a_truncated_file_raises(shm_path):
    """The words are stored into whatever buffer the (replaceable) array
    type hands back: a view of another mapping whose file was truncated
    must be a MappingFault naming the destination, not a SIGBUS outside
    every guarded span (which killed the interpreter)."""
    line = outcome("""
        import array, os, sys, pymmapdev
        path = sys.argv[1]
        m = pymmapdev.anonymous(1 << 16)
        m.write_words(0, range(16), 4)
        other = pymmapdev.open_file(path, 1 << 16)
        os.truncate(path, 0)
        real = array.array
        class Hostile(real):
            def __mul__(self, n):
                return memoryview(other)[: n * self.itemsize]
        array.array = Hostile
        try:
            m.read_words(0, 16, 4)
            print("no error")
        except pymmapdev.MappingFault as exc:
            print(type(exc).__name__, "destination" in str(exc), "offset 0 " in str(exc))
        """, shm_path)
    assert line == "MappingFault True True"


# (never MADV_HWPOISON or MADV_SOFT_OFFLINE here: if the refusal broke, a
# root test run would take pages of memory away from the machine)
@pytest.mark.parametrize("advice", [10, 102, 103, 12345, -1, 2**70])
def test_madvise_refuses_advice_that_breaks_the_mapping(advice):
    """10 is MADV_DONTFORK (a forked child's copy points at nothing), 102
    MADV_GUARD_INSTALL (every access faults); unknown values are refused
    too, whatever a newer kernel makes of them."""
    m = pymmapdev.anonymous(4096)
    assert not hasattr(pymmapdev, "MADV_DONTFORK")
    with pytest.raises(ValueError, match="advice"):
        m.madvise(advice)
    m.write_u32(0, 1)
    assert m.read_u32(0) == 1


def test_madvise_remove_never_frees_bytes_outside_the_mapping(shm_path):
    with open(shm_path, "wb") as f:
        f.write(b"\x5a" * (2 * PAGE))
    fd = os.open(shm_path, os.O_RDWR)
    try:
        m = pymmapdev.Mapping(fd, 1000, 100)       # inside the first page
        with pytest.raises(ValueError, match="outside the mapping"):
            m.madvise(pymmapdev.MADV_REMOVE, 0, 10)
        m.close()
        whole = pymmapdev.Mapping(fd, 2 * PAGE)     # whole pages: allowed
        whole.madvise(pymmapdev.MADV_REMOVE, PAGE, PAGE)
        whole.close()
    finally:
        os.close(fd)
    with open(shm_path, "rb") as f:
        assert f.read() == b"\x5a" * PAGE + bytes(PAGE)


FORK_THEN_CLOSE = """
import os, pymmapdev, signal, sys
sys.path.insert(0, sys.argv[1])
from _sync_workers import signal_once_asleep
m = pymmapdev.anonymous(4096)
who, child_status = ["parent"], []
def fork_and_close():
    pid = os.fork()
    if pid == 0:                  # the child goes on with the call
        who[0] = "child"
        try:
            m.close()
            os.write(1, b"child closed\\n")
        except BufferError:
            os.write(1, b"child refused\\n")
        return
    child_status.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
def fork_then_end_the_wait(*_):      # a signal handler: ends the wait it ran in
    fork_and_close()
    m.store_u32(0, 1)
    m.wake(0)
{body}
sys.stdout.flush()
if who[0] == "child":
    os._exit(0)
print("child status", child_status)
"""


@pytest.mark.parametrize("body", [
    # send_many's iterator runs with the mapping pinned
    """
from pymmapdev import Channel
ch = Channel(m, 0, 1024)
def items():
    yield b"a"
    fork_and_close()
    yield b"b"
try:
    sent = ch.send_many(items())
except RuntimeError as exc:       # the child: the producer side is the parent's
    sent = "refused" if who[0] == "child" and "fork" in str(exc) else exc
print(who[0], sent, ch.recv_many(10, timeout=0) if who[0] == "parent" else [])
""",
    # a signal handler runs inside the spinning wait
    """
signal.signal(signal.SIGALRM, fork_then_end_the_wait)
signal.setitimer(signal.ITIMER_REAL, 0.05)
woken = m.wait(0, 0, timeout=60, spin=2**30)
print(who[0], woken)
""",
    """
signal.signal(signal.SIGALRM, fork_then_end_the_wait)
signal_once_asleep(m, 0, signal.SIGALRM)
woken = m.wait(0, 0, timeout=60, spin=0)
print(who[0], woken)
""",
], ids=["send_many's iterator", "spinning wait", "sleeping wait"])
def test_a_call_that_forks_mid_way_keeps_its_pin_in_the_child(body):
    """The forking thread goes on with its call in the child: that call's
    pin is not one of the parent's other threads' pins, so the child's
    close() must be refused until the call ends (it unmapped under it)."""
    proc = run_python(FORK_THEN_CLOSE.format(body=body), TESTS, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "child refused", lines
    assert lines[1].startswith("child ") and lines[2].startswith("parent "), lines
    if "send_many" in body:         # only the parent sends (the child is refused)
        assert lines[1:3] == ["child refused []", "parent 2 [b'a', b'b']"], lines
    assert lines[-1] == "child status [0]", lines


# A thread holds what the main thread then waits for; a signal handler run
# by that wait forks: the parent leaves the wait (Forked), the child goes on
# with it as another thread.
BLOCKED_THEN_FORK = """
import os, signal, sys, threading, pymmapdev
from pymmapdev import Channel
sys.path.insert(0, sys.argv[1])
from _sync_workers import signal_once_asleep
held, go = threading.Event(), threading.Event()
class Forked(Exception):
    pass
def hold(what):                   # a thread holds *what* until go
    def holder():
        with what:
            held.set()
            go.wait(30)
    t = threading.Thread(target=holder)
    t.start()
    held.wait(30)
    return t
def handler(*_):
    pid = os.fork()
    if pid:                       # the parent leaves its wait,
        raise Forked(pid)         # the child goes on with it
signal.signal(signal.SIGUSR1, handler)
def fork_once_asleep(m, offset):  # the fork, once this thread sleeps on the word
    signal_once_asleep(m, offset, signal.SIGUSR1)
def child_status(forked, t):      # in the parent: let the child have it
    go.set()
    t.join()
    _, status = os.waitpid(forked.args[0], 0)
    return os.waitstatus_to_exitcode(status)
def child_says(line, ok):
    os.write(1, line.encode() + b"\\n")
    os._exit(0 if ok else 1)
"""


def test_a_child_forked_inside_a_blocked_acquire_takes_the_lock_as_itself():
    """A signal handler run by a sleeping acquire() forks; the child goes on
    with the wait, as another thread.  It must take the lock in its own name:
    in the parent's, its release() was refused (the named thread lives on)
    and the parent's thread would have looked like the holder."""
    line = outcome(BLOCKED_THEN_FORK + textwrap.dedent("""
        m = pymmapdev.anonymous(4096)
        lock = pymmapdev.Lock(m, 0)
        t = hold(lock)
        fork_once_asleep(m, 0)
        try:
            got = lock.acquire(timeout=20)
        except Forked as exc:
            print("child status", child_status(exc, t))
        else:
            mine = m.read_u64(0) & ((1 << 22) - 1) == threading.get_native_id()
            try:
                lock.release()
                line = f"child {got} {mine} released"
            except RuntimeError as exc:
                line = f"child {got} {mine} {exc}"
            child_says(line, line == "child True True released")
        """), TESTS)
    assert line == "child status 0"


def test_a_child_forked_inside_a_blocked_multi_producer_send_takes_the_side_as_itself():
    """As for Lock: a child forked by a signal handler while a multi-producer
    send() waits for the side took it in the name of the parent's thread,
    which goes on too (both would then hold the side: two producers
    writing one place of the ring)."""
    line = outcome(BLOCKED_THEN_FORK + textwrap.dedent("""
        m = pymmapdev.anonymous(Channel.size_for(4096))
        ch = Channel(m, 0, 4096, multi_producer=True)
        def reserved():
            with ch.reserve(8) as buf:    # holds the producer side
                buf[:] = b"holder.."
                yield
        import contextlib
        t = hold(contextlib.contextmanager(reserved)())
        fork_once_asleep(m, 80)              # on the side's word
        try:
            other = Channel(m, 0, 4096, multi_producer=True)   # ch's reserve is open
            with other.reserve(8, timeout=20) as buf:
                # the child holds the side now: the word must name it
                owner = m.read_u64(80) & ((1 << 22) - 1)
                buf[:] = b"child..."
        except Forked as exc:
            print("child status", child_status(exc, t), ch.recv_many(9, timeout=5))
        else:
            mine = owner == threading.get_native_id()
            child_says(f"child owner is me: {mine}", mine)
        """), TESTS)
    assert line == "child status 0 [b'holder..', b'child...']"


@pytest.mark.parametrize("child_raises", [False, True])
def test_a_child_forked_inside_a_sleeping_wait_newer_keeps_the_waiter_count(child_raises):
    """The child goes on with the wait (or leaves it with its handler's
    exception); its end must not withdraw the announcement the parent's
    wait made (and withdraws too): the count went below zero, after which
    a sleeper announced as 0 missed the next publish's wake-up."""
    line = outcome(f"""
        import os, signal, sys, pymmapdev
        sys.path.insert(0, sys.argv[1])
        from _sync_workers import signal_once_asleep
        m = pymmapdev.anonymous(4096)
        slot = pymmapdev.Slot(m, 0, 64)
        pid = []
        def handler(*_):
            pid.append(os.fork())
            if pid[0] == 0 and {child_raises}:
                raise KeyboardInterrupt
        signal.signal(signal.SIGALRM, handler)
        signal_once_asleep(m, 0, signal.SIGALRM)       # on the slot's word
        pymmapdev.set_spin(0)
        try:
            ended = slot.wait_newer(0, timeout=1)
        except KeyboardInterrupt:
            ended = False
        if pid[0] == 0:
            os._exit(0 if ended is False else 1)
        _, status = os.waitpid(pid[0], 0)
        print(ended, os.waitstatus_to_exitcode(status), m.load_u32(16))
        """, TESTS)
    assert line == "False 0 0"


@pytest.mark.parametrize("depth", [1, 3, 40])
def test_pins_balance_in_a_child_forked_inside_nested_calls(depth):
    """Once the calls a child was forked inside have ended, the child (and
    the parent) can close the mapping: no pin is counted twice or lost,
    also past the 32 admissions a thread notes (gate.c HELD_MAX)."""
    proc = run_python("""
        import os, sys, pymmapdev
        from pymmapdev import Channel
        depth = int(sys.argv[1])
        size = Channel.size_for(128)
        m = pymmapdev.anonymous(depth * size)
        chans = [Channel(m, i * size, 128) for i in range(depth)]
        who = ["parent"]
        def nest(i):               # send_many inside send_many's iterator ...
            if i == depth:
                if os.fork() == 0:
                    who[0] = "child"
                return
            def items():
                nest(i + 1)
                yield b"x"
            chans[i].send_many(items())
        try:
            nest(0)
        except RuntimeError as exc:    # the child: the producer sides are the parent's
            assert who[0] == "child" and "fork" in str(exc), exc
        del chans
        try:
            m.close()
            line = f"{who[0]} closed"
        except BufferError as exc:
            line = f"{who[0]} {exc}"
        os.write(1, line.encode() + b"\\n")    # one write: parent and child race
        if who[0] == "child":
            os._exit(0)
        os.wait()
        """, depth, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.splitlines()) == ["child closed", "parent closed"], proc.stdout


def test_an_asyncio_watch_inherited_by_a_forked_child_does_not_touch_a_closed_mapping():
    """The watch behind wait_async() (its timer polls it): a child's copy has
    lost its pin, so the child may unmap the words; polling the copy then is
    an error, not a read of unmapped memory.  (No event loop in the child:
    asyncio's own state after fork differs between versions.)"""
    line = outcome("""
        import os, pymmapdev
        from pymmapdev import _core
        m = pymmapdev.anonymous(4096)
        watch = _core.watch_word(m, 0, 0)
        assert watch.arm() is False
        pid = os.fork()
        if pid == 0:
            m.close()                      # the watch's pin was the parent's
            for call in (watch.poll, watch.arm, watch.poll):
                try:
                    call()
                    os.write(1, b"child: polled\\n")
                except ValueError as exc:
                    os.write(1, b"child: " + str(exc).encode() + b"\\n")
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        m.store_u32(0, 1)
        print("parent", watch.poll(), os.waitstatus_to_exitcode(status))
        watch.close()
        m.close()
        """)
    assert line == "parent True 0"


def test_a_child_forked_with_asyncio_waits_pending_ends_them():
    """A child forked inside a coroutine (its loop goes on there) inherits
    the pending waits, but not the waiter thread that slept for them: they
    end at once with the inherited watch's error instead of waiting for it,
    and ending them never takes the pool lock, which another thread of the
    parent held at the fork (here on purpose; the waiter thread holds it
    briefly on every wake-up)."""
    line = outcome("""
        import asyncio, os, sys, threading, time, warnings
        import pymmapdev
        from pymmapdev import _aio
        warnings.simplefilter("ignore", DeprecationWarning)    # 3.12+: fork with threads
        m = pymmapdev.anonymous(4096)

        async def main():
            loop = asyncio.get_running_loop()
            task = asyncio.create_task(m.wait_async(0, 0))
            await asyncio.sleep(0.1)
            held, release = threading.Event(), threading.Event()

            def hold():
                with _aio._pool.lock:
                    held.set()
                    release.wait()

            threading.Thread(target=hold, daemon=True).start()
            held.wait()
            pid = os.fork()
            if pid == 0:
                os.write(1, b"child forked\\n")     # the at-fork hooks did not block
                if sys.version_info >= (3, 14):
                    os._exit(0)         # asyncio 3.14 runs no task in a forked child
                loop.call_later(2, task.cancel)         # the bound, if nothing ends it
                try:
                    out = f"child woken {await task}"
                except ValueError as exc:
                    out = f"child ValueError: {exc}"
                except asyncio.CancelledError:
                    out = "child cancelled"
                os.write(1, out.encode() + b"\\n")
                os._exit(0)
            release.set()
            deadline = time.monotonic() + 10
            while not os.waitpid(pid, os.WNOHANG)[0]:
                if time.monotonic() > deadline:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    print("child hung")
                    break
                await asyncio.sleep(0.05)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        asyncio.run(main())
        """)
    if sys.version_info >= (3, 14):
        # its at-fork hook resets the running loop in the child, where the
        # loop then runs no task step at all: only the hooks are checked
        assert line == "child forked"
    else:
        assert line.startswith("child ValueError: watch is closed: it was inherited across fork()")


@pytest.mark.parametrize("level, dir_mode, refused", [
    (1, 0o1777, True), (0, 0o1777, False), (1, 0o1770, False), (2, 0o1770, True),
    (1, 0o0777, False)])
def test_a_file_planted_in_a_sticky_dir_is_refused_as_protected_regular_says(
        tmp_path, monkeypatch, level, dir_mode, refused):
    """fs.protected_regular makes the kernel refuse open(O_CREAT) of
    another user's file in a sticky directory others may write: open_file()
    relied on it while it opened with O_CREAT; now that it makes a new file
    unnamed and opens an existing one without O_CREAT, it judges this
    itself.  (A fake sysctl file: the real one belongs to the machine.)"""
    if os.geteuid() != 0:
        pytest.fail("needs root to plant a file owned by another user (CI runs as root)")
    sysctl = tmp_path / "protected_regular"
    sysctl.write_text(f"{level}\n")
    monkeypatch.setattr(_open, "PROTECTED_REGULAR", str(sysctl))
    d = tmp_path / "sticky"
    d.mkdir()
    os.chmod(d, dir_mode)
    planted = d / "chan"
    planted.write_bytes(b"planted")
    os.chown(planted, 65534, 65534)
    if refused:
        with pytest.raises(PermissionError, match="protected_regular") as info:
            pymmapdev.open_file(planted, 4096)
        assert info.value.filename == str(planted)
        assert planted.read_bytes() == b"planted"
    else:
        pymmapdev.open_file(planted, 4096).close()
    # as the kernel: only a creating open is judged
    with pymmapdev.open_file(planted, create=False) as m:
        assert m[:7] == b"planted"
    os.chown(planted, 0, 0)                         # ours: never refused
    pymmapdev.open_file(planted, 4096).close()
