"""pymmapdev.Lock: a process-shared lock of plain words living in the mapping."""
import gc
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import pytest

import pymmapdev
from pymmapdev import _core
from conftest import child_env
from pymmapdev.sync import OwnerDiedWarning
from _sync_workers import (GUARD, asleep_on, held_in_its_exit, hold_lock_forever,  # noqa: F401
                           lock_churn, lock_init_race, locked_increments, run_child,
                           run_thread_to_its_end, spin_until)


# The owner word's "someone waits" bit: a waiter sets it before it sleeps,
# so a test can see that another process is inside acquire().
OWNER_WAITERS = 1 << 31


@pytest.fixture
def m(shm_path):
    with pymmapdev.open_file(shm_path, 4096) as mapping:
        yield mapping


def test_layout_constants():
    assert (pymmapdev.Lock.SIZE, pymmapdev.Lock.ALIGN) == (64, 64)
    assert pymmapdev.Lock is _core.Lock


def test_acquire_release_and_context_manager(m):
    lock = pymmapdev.Lock(m, 64)
    assert m.read_u64(64 + 8) != 0                  # its users' namespace, recorded
    assert lock.acquire() is True
    assert lock.owner_died is False
    lock.release()
    with lock as held:
        assert held is lock
        with pytest.raises(RuntimeError, match="not recursive"):
            lock.acquire(timeout=0)
    assert lock.acquire(timeout=0) is True
    lock.release()


def test_second_lock_object_shares_the_mutex(m):
    a, b = pymmapdev.Lock(m, 0), pymmapdev.Lock(m, 0)
    with a:
        t = threading.Thread(target=lambda: out.append(b.acquire(timeout=0.05)))
        out = []
        t.start()
        t.join(GUARD)
        assert out == [False]
    assert b.acquire(timeout=0) is True
    b.release()


def test_reacquire_from_owner_thread_raises(m):
    lock = pymmapdev.Lock(m, 0)
    with lock:
        for timeout in (None, 1, 0):
            with pytest.raises(RuntimeError, match="already held"):
                lock.acquire(timeout=timeout)


def test_a_lock_dropped_while_held_is_still_this_threads(m):
    """The hold outlives its object: acquiring again through another object
    is the same thread's second acquire (not a holder from before an exec)."""
    lock = pymmapdev.Lock(m, 0)
    lock.acquire()
    del lock
    gc.collect()
    again = pymmapdev.Lock(m, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError, match="already held"):
            again.acquire(timeout=0)


# The program a Lock holder exec()s: it maps the lock again and acquires it
# in the same thread (same tid and start time: the identity survives exec).
_AFTER_EXEC = """
import sys, warnings, pymmapdev
with pymmapdev.open_file(sys.argv[1]) as m:
    lock = pymmapdev.Lock(m, 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ok = lock.acquire(timeout=0)
        except RuntimeError as exc:
            ok = type(exc).__name__
    print(ok, lock.owner_died, [w.category.__name__ for w in caught], flush=True)
    if ok is True:
        lock.release()
"""


@pytest.mark.parametrize("execs", ["the holder", "another thread"])
def test_a_program_that_execs_holding_a_lock_can_take_it_back(shm_path, run_child, execs):
    """A holder that exec()s a program which takes the lock again: the word
    names the very thread that asks (exec keeps the tid and start time; a
    non-leader thread that execs takes the leader's), so the new program was
    told "already held by this thread" for good, though no program holds
    it any more.  It is a dead holder's lock: taken over, with the warning."""
    pymmapdev.open_file(shm_path, 4096).close()
    child = run_child("""
        import os, sys, threading, pymmapdev
        m = pymmapdev.open_file(sys.argv[1])
        pymmapdev.Lock(m, 0).acquire()
        argv = [sys.executable, "-c", sys.argv[2], sys.argv[1]]
        if sys.argv[3] == "the holder":
            os.execv(sys.executable, argv)
        threading.Thread(target=os.execv, args=(sys.executable, argv)).start()
        threading.Event().wait()
    """, shm_path, _AFTER_EXEC, execs)
    out, err = child.communicate(timeout=GUARD)
    assert child.returncode == 0, err
    assert out.split() == ["True", "True", "['OwnerDiedWarning']"]
    with pymmapdev.open_file(shm_path) as m:
        lock = pymmapdev.Lock(m, 0)
        assert lock.acquire(timeout=0) is True          # released by the new program
        lock.release()


def test_release_when_not_held_raises(m):
    lock = pymmapdev.Lock(m, 0)
    with pytest.raises(RuntimeError, match="does not hold"):
        lock.release()
    lock.acquire()
    errors = []

    def other():
        try:
            lock.release()
        except RuntimeError as exc:
            errors.append(exc)
    t = threading.Thread(target=other)
    t.start()
    t.join(GUARD)
    assert len(errors) == 1                           # owned by a thread
    lock.release()


def test_timeout_then_acquire_after_release_by_other_thread(m):
    lock = pymmapdev.Lock(m, 0)
    got = []

    def take(timeout):
        ok = lock.acquire(timeout=timeout)
        got.append(ok)
        if ok:
            lock.release()

    lock.acquire()
    t = threading.Thread(target=take, args=(0.05,))
    t.start()
    t.join(GUARD)
    assert got == [False]
    t = threading.Thread(target=take, args=(GUARD,))
    t.start()
    spin_until(lambda: m.load_u64(0) & OWNER_WAITERS)    # it waits in acquire
    lock.release()                                    # the sleeper had released the GIL
    t.join(GUARD)
    assert got == [False, True]


def take_over_from_a_thread_that_died_holding(lock):
    """A thread of ours acquires *lock* and ends holding it; this thread's
    acquire() then takes it over with an OwnerDiedWarning."""
    t = threading.Thread(target=lock.acquire)
    t.start()
    t.join(GUARD)
    with pytest.warns(OwnerDiedWarning):
        assert lock.acquire(timeout=GUARD)


def test_thread_exit_while_holding_counts_as_owner_death(m):
    lock = pymmapdev.Lock(m, 0)
    take_over_from_a_thread_that_died_holding(lock)
    assert lock.owner_died
    lock.release()
    m.close()                   # the dead thread's hold left no pin behind


def test_owner_died_warning_as_an_error_leaves_the_lock_to_repair(m, shm_path, run_child):
    """Under -W error the take-over raises and the caller holds nothing;
    the lock used to be freed then, so the next acquire() (a retry, another
    process) took it as if nothing had happened: owner_died False, no
    warning, and the half-updated state was never repaired.  The next
    acquirer must be told, as the one that raised was."""
    lock = pymmapdev.Lock(m, 0)
    t = threading.Thread(target=lock.acquire)
    t.start()
    t.join(GUARD)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(OwnerDiedWarning, match="offset 0"):
            lock.acquire(timeout=GUARD)
        with pytest.raises(OwnerDiedWarning):      # a retry is told again
            with lock:
                pass
    assert lock.locked()                           # not free: dead, to repair
    child = run_child("""
        import sys, warnings, pymmapdev
        with pymmapdev.open_file(sys.argv[1]) as m:
            lock = pymmapdev.Lock(m, 0)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ok = lock.acquire(timeout=60)
            print(ok, lock.owner_died, [w.category.__name__ for w in caught])
            lock.release()
    """, shm_path)
    out, err = child.communicate(timeout=GUARD)
    assert child.returncode == 0, err
    assert out.split() == ["True", "True", "['OwnerDiedWarning']"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # repaired and released: a plain lock
        assert lock.acquire(timeout=GUARD) is True
    assert lock.owner_died is False
    lock.release()
    m.close()                   # no pin left behind by the refused holds


@pytest.mark.parametrize("timeout", [0, 1e-6])
def test_a_zero_timeout_still_takes_over_a_dead_holder(m, timeout):
    """acquire(timeout=0), the try-lock: with the default spin the deadline
    passed during the spin, before the first slow check (is the holder
    alive?), so a dead holder's lock was never taken over: every try
    returned False for good."""
    assert pymmapdev.get_spin() > 0                     # the default: the case at hand
    lock = pymmapdev.Lock(m, 0)
    # gone for the kernel too: one check, made while the thread exits, finds it alive
    run_thread_to_its_end(lock.acquire)
    with pytest.warns(OwnerDiedWarning):
        assert lock.acquire(timeout=timeout) is True
    assert lock.owner_died
    lock.release()


def test_a_holder_inside_its_exit_counts_as_dead(m, shm_path, run_child):
    """A thread in do_exit() (PF_EXITING) never runs user code again, so it
    never releases: its lock is taken over at once.  It counted as alive
    until the kernel made it a zombie, and acquire(timeout=0) after the
    holder ended was refused (False) in that window."""
    pymmapdev.Lock(m, 0)
    with held_in_its_exit(run_child, """
            import pymmapdev
            m = pymmapdev.open_file(sys.argv[1])
            pymmapdev.Lock(m, 0).acquire()
            """, shm_path):
        lock = pymmapdev.Lock(m, 0)
        with pytest.warns(OwnerDiedWarning):
            assert lock.acquire(timeout=0) is True
        assert lock.owner_died
        lock.release()


def test_timed_out_acquire_leaves_the_holders_owner_died(m):
    """owner_died describes the hold: another thread's acquire() that times out
    on the same Lock object must not clear it before the holder repairs."""
    lock = pymmapdev.Lock(m, 0)
    take_over_from_a_thread_that_died_holding(lock)
    got = []
    t = threading.Thread(target=lambda: got.append(lock.acquire(timeout=0.01)))
    t.start()
    t.join(GUARD)
    assert got == [False]
    assert lock.owner_died is True
    lock.release()


def test_bad_arguments(m, shm_path):
    with pytest.raises(ValueError, match=r"offset 8\b.*aligned"):
        pymmapdev.Lock(m, 8)
    with pytest.raises(ValueError, match="4096"):
        pymmapdev.Lock(m, 4096)
    with pytest.raises(ValueError, match="negative"):
        pymmapdev.Lock(m, -64)
    with pytest.raises(TypeError, match="Mapping"):
        pymmapdev.Lock(bytearray(64), 0)
    lock = pymmapdev.Lock(m, 0)
    with pytest.raises(ValueError, match="timeout"):
        lock.acquire(timeout=-1)
    # threading.Lock's habit: acquire(True) means "block", acquire(False)
    # "try once".  Taken as seconds, True was a 1 s timeout that returned
    # False under contention, which a caller who never checks (a blocking
    # threading acquire always succeeds) would run past unlocked.
    for flag in (True, False):
        with pytest.raises(TypeError, match="timeout is a number of seconds or None, not a "
                           "bool"):
            lock.acquire(flag)
    assert not lock.locked()
    m.write_u32(128, 0x12345678)                      # not zero, not a lock
    with pytest.raises(ValueError, match="does not hold a pymmapdev.Lock"):
        pymmapdev.Lock(m, 128)
    with pymmapdev.open_file(shm_path, readonly=True) as r:
        with pytest.raises(TypeError, match="read-only"):
            pymmapdev.Lock(r, 0)


def test_close_refused_while_held(shm_path):
    m = pymmapdev.open_file(shm_path, 4096)
    lock = pymmapdev.Lock(m, 0)
    lock.acquire()
    with pytest.raises(BufferError):
        m.close()                                     # a held lock pins the mapping
    lock.release()
    m.close()
    with pytest.raises(ValueError, match="closed"):
        lock.acquire()


def test_close_names_a_thread_waiting_for_the_lock_as_waiting(shm_path):
    """close() says what holds the mapping: a thread in acquire() is not a
    second holder (its admission pins as a hold so that a success keeps the
    pin without a way to fail, so the count says both)."""
    m = pymmapdev.open_file(shm_path, 4096)
    lock = pymmapdev.Lock(m, 0)
    lock.acquire()
    waiter = threading.Thread(target=lambda: (lock.acquire(timeout=GUARD), lock.release()))
    waiter.start()
    deadline = time.monotonic() + GUARD
    alone = ("cannot close the mapping while it is in use: "
             "1 pymmapdev.Lock held or being acquired; close() again once they have ended")
    message = alone
    while message == alone and time.monotonic() < deadline:      # until it is asleep
        try:
            m.close()
        except BufferError as exc:
            message = str(exc)
        time.sleep(0.01)
    assert message.endswith(": 2 pymmapdev.Lock held or being acquired; "
                            "close() again once they have ended"), message
    lock.release()
    waiter.join(GUARD)
    assert not waiter.is_alive() and not lock.locked()
    m.close()


def test_holder_that_exited_without_releasing_is_taken_over(m):
    """No robust list is needed: the owner word names the holder."""
    lock = pymmapdev.Lock(m, 0)
    pid = os.fork()
    if pid == 0:
        lock.acquire()
        os._exit(0)                                   # exits holding it
    os.waitpid(pid, 0)
    assert lock.locked()
    with pytest.warns(OwnerDiedWarning):
        assert lock.acquire(timeout=GUARD)
    assert lock.owner_died
    lock.release()
    assert not lock.locked()


def test_holder_that_is_a_zombie_is_taken_over(m):
    """A holder that exited but was not reaped yet (a zombie: its /proc entry
    is still there) is dead all the same."""
    lock = pymmapdev.Lock(m, 0)
    pid = os.fork()
    if pid == 0:
        lock.acquire()
        os._exit(0)                                   # exits holding it
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)   # exited, not reaped
        assert lock.locked()
        with pytest.warns(OwnerDiedWarning):
            assert lock.acquire(timeout=GUARD)
        assert lock.owner_died
        lock.release()
    finally:
        os.waitpid(pid, 0)


def test_a_holder_whose_name_mimics_stat_fields_stays_alive(m):
    """A thread's name (comm, 15 bytes, its own to set) sits between
    parentheses in /proc/<tid>/stat: one that reads as a thread with
    PF_EXITING (flags, field 9: 4) to a parser that stops at its first ')'
    must not make a live holder dead."""
    lock = pymmapdev.Lock(m, 0)
    held, done = threading.Event(), threading.Event()

    def hold():
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as f:
            f.write(") S 1 1 1 1 1 4")                # fields 3 to 9: flags 4
        with lock:
            held.set()
            done.wait(GUARD)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert held.wait(GUARD)
        with open(f"/proc/{t.native_id}/stat") as f:
            assert f.read().startswith(f"{t.native_id} () S 1 1 1 1 1 4) ")
        assert pymmapdev.Lock(m, 0).acquire(timeout=0) is False
    finally:
        done.set()
        t.join(GUARD)


def _start_time(tid):
    """Field 22 of /proc/<tid>/stat (after the last ')': comm may hold any)."""
    with open(f"/proc/{tid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


def test_holder_whose_thread_id_was_reused_is_taken_over(m):
    """The owner word names a thread id that a live process has now: the
    start time it records tells the dead holder from the new thread."""
    child = subprocess.Popen(["sleep", "600"])          # a live thread: its id
    try:
        start = _start_time(child.pid)
        lock = pymmapdev.Lock(m, 0)
        m.write_u64(0, (start & 0xffffffff) << 32 | child.pid)        # held by it
        assert lock.acquire(timeout=0) is False
        m.write_u64(0, ((start + 1) & 0xffffffff) << 32 | child.pid)  # by an earlier one
        with pytest.warns(OwnerDiedWarning):
            assert lock.acquire(timeout=GUARD) is True
        assert lock.owner_died
        lock.release()
    finally:
        child.kill()
        child.wait()


def test_holder_hidden_by_hidepid_is_not_taken_for_dead(shm_path, tmp_path):
    """With /proc mounted hidepid=2 (a common hardening), another user's
    threads have no /proc entry: a live holder of another user read as
    "no such thread", was declared dead, and the waiter took the lock
    while it was held.  A holder /proc does not show is only dead when
    the kernel has no such task either."""
    if os.geteuid() != 0:
        pytest.fail("needs root to mount /proc hidepid=2 and switch users (CI runs as root)")
    pymmapdev.open_file(shm_path, 4096).close()
    os.chmod(shm_path, 0o666)
    script = tmp_path / "inner.py"
    script.write_text(f"""
import os, sys, time, warnings
sys.path[:0] = {sys.path!r}
import pymmapdev

def as_user(uid, body):
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            with pymmapdev.open_file({shm_path!r}) as m:
                body(m, pymmapdev.Lock(m, 64))
        finally:
            os._exit(0)
    return pid

def hold(m, lock):
    lock.acquire()
    m.store_u32(0, 1)
    m.wake(0)
    while m.load_u32(4) == 0:
        m.wait(4, 0, 60)

def wait(m, lock):
    while m.load_u32(0) == 0:
        m.wait(0, 0, 60)
    print("hidden", not os.path.exists(f"/proc/{{m.load_u64(64) & 0x3fffff}}"), flush=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = lock.acquire(timeout=0.3)
    print("acquired", got, len(caught), flush=True)

holder = as_user(1, hold)
os.waitpid(as_user(65534, wait), 0)
with pymmapdev.open_file({shm_path!r}) as m:
    m.store_u32(4, 1)
    m.wake(4)
os.waitpid(holder, 0)
""")
    # A private mount namespace, so the hidepid /proc is gone with the
    # child (inside a chroot "/" is no mount point: see test_trust_boundary).
    for propagation in ("private", "unchanged"):
        proc = subprocess.run(
            ["unshare", "--mount", f"--propagation={propagation}", "sh", "-c",
             f"mount -t proc -o hidepid=2 proc /proc && {sys.executable} {script}"],
            capture_output=True, text=True, timeout=GUARD, env=child_env())
        if "cannot change root filesystem propagation" not in proc.stderr:
            break
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["hidden True", "acquired False 0"], \
        proc.stdout + proc.stderr


def test_lock_from_another_namespace_is_refused(m):
    m.write_u64(8, 0x1234)                            # a foreign namespace tag
    with pytest.raises(ValueError, match="another pid namespace"):
        pymmapdev.Lock(m, 0)


def test_garbage_owner_word_is_refused(m):
    lock = pymmapdev.Lock(m, 0)
    m.write_u64(0, 0x7fc00005)                        # tid 5 with stray flag bits
    with pytest.raises(ValueError, match="does not hold a pymmapdev.Lock"):
        lock.acquire(timeout=0)
    with pytest.raises(ValueError, match="does not hold a pymmapdev.Lock"):
        pymmapdev.Lock(m, 0)


def test_ten_contending_threads_all_progress(m):
    lock = pymmapdev.Lock(m, 0)
    counts = [0] * 10
    busy = time.monotonic() + 1.0                   # 1 s of contention at least,
    guard = time.monotonic() + GUARD                # then until each had the lock

    def worker(i):
        # a thread started late or kept off a CPU (a loaded machine) still
        # gets its turn under contention; one that never does fails at GUARD
        while time.monotonic() < busy or (not all(counts) and time.monotonic() < guard):
            with lock:
                counts[i] += 1
                m.write_u64(64, m.read_u64(64) + 1)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(GUARD)
    assert all(counts), counts
    assert m.read_u64(64) == sum(counts)


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_mutual_exclusion_across_processes(shm_path, method):
    nproc, n = 4, 2000
    pymmapdev.open_file(shm_path, 4096).close()
    ctx = mp.get_context(method)
    procs = [ctx.Process(target=locked_increments, args=(shm_path, 64, 8, n)) for _ in range(nproc)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(GUARD)
    assert [p.exitcode for p in procs] == [0] * nproc
    with pymmapdev.open_file(shm_path) as m:
        assert m.read_u64(8) == nproc * n


def test_contention_without_spinning_never_sleeps_on_the_wrong_word(shm_path):
    """With set_spin(0), a waiter whose poll found the word free and lost
    the compare-exchange to another process slept on offset 0 of the
    mapping (the sleep word was never set) with expected 0: a word nobody
    wakes, so acquire() without a timeout hung for good.  The lock sits
    at 64 so that offset 0 is another, zero, word."""
    nproc, n = 3, 300_000
    pymmapdev.open_file(shm_path, 4096).close()
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=lock_churn, args=(shm_path, 64, n, 0)) for _ in range(nproc)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + GUARD
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    hung = [p for p in procs if p.exitcode is None]
    for p in hung:
        p.kill()
        p.join()
    assert not hung, f"{len(hung)} of {nproc} processes hung in acquire()"
    assert [p.exitcode for p in procs] == [0] * nproc


def test_constructed_at_the_same_instant_on_a_fresh_region(shm_path):
    """Processes construct the Lock at the same instant on a zeroed region."""
    nproc, n = 4, 500
    with pymmapdev.open_file(shm_path, 4096) as m:
        ctx = mp.get_context("fork")
        procs = [ctx.Process(target=lock_init_race, args=(shm_path, 128, 0, 8, n))
                 for _ in range(nproc)]
        for p in procs:
            p.start()
        spin_until(lambda: m.load_u32(0) == nproc)
        m.store_u32(0, 1000)                          # go
        for p in procs:
            p.join(GUARD)
        assert [p.exitcode for p in procs] == [0] * nproc
        assert m.read_u64(8) == nproc * n


def test_mutual_exclusion_with_an_unrelated_process(shm_path, run_child):
    n = 3000
    pymmapdev.open_file(shm_path, 4096).close()
    child = run_child("""
        import sys
        from _sync_workers import locked_increments
        locked_increments(sys.argv[1], 64, 8, int(sys.argv[2]))
    """, shm_path, n)
    locked_increments(shm_path, 64, 8, n)
    assert child.wait(GUARD) == 0, child.stderr.read()
    with pymmapdev.open_file(shm_path) as m:
        assert m.read_u64(8) == 2 * n


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_holder_killed_next_acquirer_is_told(shm_path, method):
    with pymmapdev.open_file(shm_path, 4096) as m:
        lock = pymmapdev.Lock(m, 64)
        p = mp.get_context(method).Process(target=hold_lock_forever, args=(shm_path, 64, 0))
        p.start()
        while m.load_u32(0) == 0:
            assert m.wait(0, 0, GUARD), "holder never took the lock"
        assert lock.acquire(timeout=0.05) is False    # really held by the child
        os.kill(p.pid, signal.SIGKILL)
        p.join(GUARD)
        with pytest.warns(OwnerDiedWarning, match="offset 64"):
            assert lock.acquire(timeout=GUARD) is True
        assert lock.owner_died is True
        assert m.read_u32(4) == 0xDEAD                # the state to repair
        m.write_u32(4, 0)
        lock.release()
        # consistent again: a normal lock from now on
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert lock.acquire(timeout=GUARD) is True
        assert lock.owner_died is False
        lock.release()


def test_holder_killed_while_others_wait(shm_path, run_child):
    """The waiter sleeping in acquire() is the one told, in another process."""
    with pymmapdev.open_file(shm_path, 4096) as m:
        holder = run_child("""
            import sys
            from _sync_workers import hold_lock_forever
            hold_lock_forever(sys.argv[1], 64, 0)
        """, shm_path)
        while m.load_u32(0) == 0:
            assert m.wait(0, 0, GUARD), "holder never took the lock"
        waiter = run_child("""
            import sys, warnings, pymmapdev
            warnings.simplefilter("ignore")
            with pymmapdev.open_file(sys.argv[1]) as m:
                lock = pymmapdev.Lock(m, 64)
                m.store_u32(8, 1)
                ok = lock.acquire(timeout=60)
                print(ok, lock.owner_died)
                lock.release()
        """, shm_path)
        spin_until(lambda: m.load_u32(8) == 1)
        spin_until(lambda: m.load_u64(64) & OWNER_WAITERS)   # it is waiting in acquire
        holder.kill()
        holder.wait(GUARD)
        out, err = waiter.communicate(timeout=GUARD)
        assert waiter.returncode == 0, err
        assert out.split() == ["True", "True"]


def test_ctrl_c_interrupts_a_blocked_acquire(m, shm_path, run_child):
    lock = pymmapdev.Lock(m, 0)
    with lock:
        child = run_child("""
            import sys, time, pymmapdev
            with pymmapdev.open_file(sys.argv[1]) as m:
                lock = pymmapdev.Lock(m, 0)
                m.store_u32(64, 1)
                lock.acquire()
        """, shm_path)
        spin_until(lambda: m.load_u64(0) & OWNER_WAITERS)    # it is waiting in acquire
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=GUARD)   # a wait SIGINT did not end: hangs
        assert "KeyboardInterrupt" in err


def test_release_after_a_peer_overwrote_the_owner_word(m):
    """The error names the word as it was found, in hex."""
    lock = pymmapdev.Lock(m, 0)
    assert lock.acquire()
    m.write_u64(0, 0x0123456789ABCDEF)                 # not ours any more
    with pytest.raises(RuntimeError, match=r"reads 0x0123456789abcdef: a peer overwrote"):
        lock.release()
    m.write_u64(0, 0)
    assert lock.acquire(timeout=0)                       # the object holds nothing now
    lock.release()


@pytest.mark.parametrize("step", ["acquire", "release"])
def test_lock_word_on_a_truncated_page(shm_path, step):
    """Both the uncontended fast path and the long way report the fault."""
    with pymmapdev.open_file(shm_path, 8192) as m:
        lock = pymmapdev.Lock(m, 4096)
        if step == "release":
            assert lock.acquire()
        os.truncate(shm_path, 4096)                      # as another process might
        with pytest.raises(pymmapdev.MappingFault, match="offset 4096"):
            getattr(lock, step)()
        os.truncate(shm_path, 8192)
        if step == "release":
            m.write_u64(4096, 0)
