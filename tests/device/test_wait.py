"""WAIT/WAKE: futex semantics on device words, across processes.

Shared futexes fail with EFAULT on these pages, so this is the only
cross-process sleep/wake there is for them.  The raw ioctl is tested for the
kernel's exact contract (errno, ABSTIME, restart after signals); the Mapping
methods for what scripts use."""
import errno
import mmap
import os
import signal
import threading
import time

import pytest

import pymmapdev

from . import devlib

pytestmark = pytest.mark.device

PAGE = devlib.PAGE
X, Y = 2 * PAGE + 64, 2 * PAGE + 128      # two words no other test uses

def _errno_of(func, *args):
    with pytest.raises(OSError) as exc:
        func(*args)
    return exc.value.errno


@pytest.fixture
def words(fd):
    os.pwrite(fd, bytes(4), X)
    os.pwrite(fd, bytes(4), Y)
    return fd


def _start_waiters(fd, offsets):
    pids = [devlib.fork_call(devlib.wait, fd, off, 0, -1) for off in offsets]
    for pid in pids:
        devlib.wait_in_wait(pid)
    return pids


def _outcome(proc):
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return out.strip()


def test_returns_at_once_when_word_differs(words):
    os.pwrite(words, (7).to_bytes(4, "little"), X)
    t0 = time.monotonic()
    assert devlib.wait(words, X, 0, -1) == 0      # no timeout: it returned, it did not sleep
    assert time.monotonic() - t0 < 10             # hang guard only


@pytest.mark.parametrize("timeout_ns", [0, 1, 50_000_000])
def test_relative_timeout(words, timeout_ns):
    t0 = time.monotonic()
    assert _errno_of(devlib.wait, words, X, 0, timeout_ns) == errno.ETIMEDOUT
    elapsed = time.monotonic() - t0
    assert timeout_ns / 1e9 <= elapsed < timeout_ns / 1e9 + 20    # upper: a hang guard


def test_absolute_deadline(words):
    deadline = time.clock_gettime_ns(time.CLOCK_MONOTONIC) + 100_000_000
    assert _errno_of(devlib.wait, words, X, 0, deadline, devlib.WAIT_ABSTIME) == errno.ETIMEDOUT
    assert time.clock_gettime_ns(time.CLOCK_MONOTONIC) >= deadline
    # a deadline in the past times out at once; one in the far future is
    # not an error (no overflow)
    assert _errno_of(devlib.wait, words, X, 0, 1, devlib.WAIT_ABSTIME) == errno.ETIMEDOUT
    os.pwrite(words, (1).to_bytes(4, "little"), X)
    assert devlib.wait(words, X, 0, (1 << 63) - 1, devlib.WAIT_ABSTIME) == 0
    assert devlib.wait(words, X, 0, (1 << 63) - 1) == 0


CLONE_NEWTIME = 0x80


def _absolute_wait_in_time_namespace(fd, monotonic_offset_s):
    """In a new time namespace whose CLOCK_MONOTONIC runs ahead of the
    host's, a child waits for an absolute deadline 0.2 s ahead of its own
    clock.  Raises unless it timed out after 0.2 s and within 10 s."""
    if devlib.libc.unshare(CLONE_NEWTIME) != 0:
        raise OSError(devlib.ctypes.get_errno(), "unshare(CLONE_NEWTIME)")
    with open("/proc/self/timens_offsets", "w") as f:
        f.write(f"monotonic {monotonic_offset_s} 0")
    pid = os.fork()                     # the child is the one in the namespace
    if pid == 0:
        code = 1
        try:
            deadline = time.clock_gettime_ns(time.CLOCK_MONOTONIC) + 200_000_000
            try:
                devlib.wait(fd, X, 0, deadline, devlib.WAIT_ABSTIME)
            except OSError as exc:
                if exc.errno == errno.ETIMEDOUT:
                    code = 0 if time.clock_gettime_ns(time.CLOCK_MONOTONIC) >= deadline else 2
        finally:
            os._exit(code)
    status = devlib.reap(pid, timeout=10)
    assert status == 0, f"status {status}"


def test_absolute_deadline_in_a_time_namespace(words):
    """ABSTIME is a deadline on the caller's CLOCK_MONOTONIC, which a time
    namespace offsets from the host's: it is converted like futex() does.
    With the deadline taken as a host time, a namespace one day ahead
    slept one day instead of 0.2 s."""
    # every kernel of the matrix has them (Debian: CONFIG_TIME_NS=y since 5.6)
    assert os.path.exists("/proc/self/timens_offsets"), "kernel without time namespaces"
    pid = devlib.fork_call(_absolute_wait_in_time_namespace, words, 86400)
    assert devlib.reap(pid, timeout=30) == 0


def test_wake_counts_and_offsets(words):
    """WAKE returns how many it woke, at most count, only on that offset."""
    assert devlib.wake(words, X, 10) == 0                 # nobody waits yet
    pids = _start_waiters(words, [X, X, X, Y])
    try:
        assert devlib.wake(words, X, 0) == 0
        assert devlib.wake(words, X, 2) == 2
        assert devlib.wake(words, X, 5) == 1
        assert devlib.wake(words, X, 5) == 0
        # the waiter on Y slept through all of that
        time.sleep(0.2)
        assert devlib.blocked_in_wait(pids[3])
        assert devlib.wake(words, Y, 0xFFFFFFFF) == 1
    finally:
        codes = [devlib.reap(pid) for pid in pids]
    assert codes == [0, 0, 0, 0]


def test_wake_is_fifo_and_exact(words):
    """Each WAKE of count 1 ends exactly one sleeper, oldest first."""
    pids = []
    for _ in range(3):            # one at a time: queue order == start order
        pids += _start_waiters(words, [X])
    try:
        for pid in pids:
            assert devlib.wake(words, X, 1) == 1
            assert devlib.reap(pid) == 0
    finally:
        devlib.kill_unreaped(pids)


def test_timeout_in_other_process(words):
    pid = devlib.fork_call(devlib.wait, words, X, 0, 200_000_000)
    assert devlib.reap(pid) == errno.ETIMEDOUT


def test_waiter_killed_while_sleeping(words):
    pid = devlib.fork_call(devlib.wait, words, X, 0, -1)
    devlib.wait_in_wait(pid)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert devlib.wake(words, X, 10) == 0     # its entry left the queue


def _ping_pong(fd, word, first, rounds):
    """Takes turns with a peer on *word*: waits for the value *first*,
    2 + first, ...; answers with the next one and wakes the peer.  A lost
    wake-up shows as ETIMEDOUT (the peer never sleeps longer than 20 s)."""
    view = mmap.mmap(fd, devlib.PAGE, mmap.MAP_SHARED, offset=(word // PAGE) * PAGE)
    at = word % PAGE
    try:
        for i in range(rounds):
            want = first + 2 * i
            while True:
                value = int.from_bytes(view[at:at + 4], "little")
                if value == want:
                    break
                devlib.wait(fd, word, value, 20_000_000_000)
            view[at:at + 4] = (want + 1).to_bytes(4, "little")
            devlib.wake(fd, word, 1)
    finally:
        view.close()


def test_ping_pong_loses_no_wakeup(words):
    """Two processes hand a token back and forth through WAIT/WAKE: every
    hand-over races a wake against the peer going to sleep."""
    rounds = 300
    pid = devlib.fork_call(_ping_pong, words, X, 1, rounds)
    try:
        _ping_pong(words, X, 0, rounds)
    finally:
        assert devlib.reap(pid, timeout=60) == 0
    assert int.from_bytes(os.pread(words, 4, X), "little") == 2 * rounds


# ---- signals: EINTR vs restart ----

class _Signal:
    """SIGUSR1 sent to the main thread once it sleeps in WAIT, at least
    *delay* after entering, with SA_RESTART set (signal.siginterrupt(False))
    or not.  A signal sent by the clock alone could come before the ioctl
    (a stalled vCPU): the Python handler would run then, and the wait would
    see no signal at all."""

    def __init__(self, delay, restart):
        self.count = 0
        self.delay, self.restart = delay, restart
        self.sent, self.stop = threading.Event(), threading.Event()

    def __enter__(self):
        self.old = signal.signal(signal.SIGUSR1, self._handler)
        signal.siginterrupt(signal.SIGUSR1, not self.restart)
        self.sender = threading.Thread(target=self._send)
        self.sender.start()
        return self

    def _send(self):
        main = threading.main_thread()
        if self.stop.wait(self.delay):
            return
        while not devlib.thread_blocked_in_wait(os.getpid(), main.native_id):
            if self.stop.wait(0.01):
                return                  # the wait ended unsignalled: count says so
        signal.pthread_kill(main.ident, signal.SIGUSR1)
        self.sent.set()

    def _handler(self, signum, frame):
        self.count += 1

    def __exit__(self, *exc):
        self.stop.set()
        self.sender.join()
        signal.signal(signal.SIGUSR1, self.old)


class _Waker:
    """Wakes *offset* again and again from *delay* after entering until the
    block ends: one wake could come while the woken wait is being restarted
    after the signal, when nobody sleeps, and the word never changes."""

    def __init__(self, fd, offset, delay, after):
        self.args, self.delay, self.after = (fd, offset, 1), delay, after
        self.stop = threading.Event()

    def __enter__(self):
        self.thread = threading.Thread(target=self._wake)
        self.thread.start()
        return self

    def _wake(self):
        if self.stop.wait(self.delay) or not self._wait_for(self.after):
            return
        while True:
            devlib.wake(*self.args)
            if self.stop.wait(0.05):
                return

    def _wait_for(self, event):
        while not event.wait(0.01):
            if self.stop.is_set():
                return False
        return True

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def test_signal_interrupts_relative_wait(words):
    """A relative timeout cannot be restarted: EINTR even with SA_RESTART."""
    with _Signal(0.2, restart=True) as sig:
        t0 = time.monotonic()
        assert _errno_of(devlib.wait, words, X, 0, 10_000_000_000) == errno.EINTR
        assert time.monotonic() - t0 < 8
    assert sig.count == 1


def test_signal_restarts_infinite_wait(words):
    """An infinite wait is restarted under SA_RESTART: the caller only sees
    the wake that follows the signal."""
    with _Signal(0.2, restart=True) as sig:
        t0 = time.monotonic()
        with _Waker(words, X, 1.0, after=sig.sent):
            assert devlib.wait(words, X, 0, -1) == 0
        assert time.monotonic() - t0 >= 0.9
    assert sig.count == 1


def test_signal_restarts_absolute_wait(words):
    # 2 s: the signal needs the wait asleep before its deadline
    with _Signal(0.2, restart=True) as sig:
        deadline = time.clock_gettime_ns(time.CLOCK_MONOTONIC) + 2_000_000_000
        assert _errno_of(devlib.wait, words, X, 0, deadline,
                         devlib.WAIT_ABSTIME) == errno.ETIMEDOUT
        assert time.clock_gettime_ns(time.CLOCK_MONOTONIC) >= deadline
    assert sig.count == 1


def test_signal_without_restart_is_eintr(words):
    with _Signal(0.2, restart=False) as sig:
        assert _errno_of(devlib.wait, words, X, 0, -1) == errno.EINTR
    assert sig.count == 1


def test_stop_and_continue_restart_a_wait_without_deadline(words):
    """A stopped and continued WAIT ran no handler: without a deadline (or
    with an absolute one) the kernel restarts it, and only the wake that
    follows ends it."""
    pid = devlib.fork_call(devlib.wait, words, X, 0, -1)
    try:
        devlib.wait_in_wait(pid)
        devlib.stop_and_continue(pid)
        devlib.wait_in_wait(pid)
        assert devlib.wake(words, X, 1) == 1
        assert devlib.reap(pid) == 0
    finally:
        devlib.kill_unreaped([pid])


def test_stop_and_continue_end_a_relative_wait_with_eintr(words):
    """A relative timeout cannot be restarted without starting over, so a
    stop ends the wait with EINTR even when no handler ran (kmod/README,
    Signals): a C caller must expect it."""
    pid = devlib.fork_call(devlib.wait, words, X, 0, 20_000_000_000)
    try:
        devlib.wait_in_wait(pid)
        devlib.stop_and_continue(pid)
        assert devlib.reap(pid) == errno.EINTR
    finally:
        devlib.kill_unreaped([pid])


# ---- through the Mapping methods ----

def _api_wait(map_offset, word, timeout=20):
    with pymmapdev.open_device(offset=map_offset) as m:
        if not m.wait(word, 0, timeout=timeout):
            raise OSError(errno.ETIMEDOUT, "timeout")


def test_api_wait_timeout(words):
    with pymmapdev.open_device() as m:
        t0 = time.monotonic()
        assert m.wait(X, 0, timeout=0.1) is False
        assert 0.1 <= time.monotonic() - t0 < 30                    # upper: a hang guard
        m.write_u32(X, 3)
        assert m.wait(X, 0, timeout=5) is True


@pytest.mark.parametrize("map_offset", [0, 2 * PAGE])
def test_api_wait_wake_across_processes(words, map_offset):
    """The waiter maps at *map_offset* and waits on X relative to it; the
    waker maps the whole buffer: the word is the same buffer offset."""
    pid = devlib.fork_call(_api_wait, map_offset, X - map_offset)
    try:
        devlib.wait_in_wait(pid)
        with pymmapdev.open_device() as m:
            m.write_u32(X, 1)
            assert m.wake(X) <= 1    # 0 if it was between two sleep slices
    finally:
        assert devlib.reap(pid) == 0


def test_api_wake_without_change(words):
    """wait() returns True on a wake even if the word did not change.  The
    method sleeps in slices (to run signal handlers), so a wake can fall
    between two of them and find nobody: retry until one counts."""
    pid = devlib.fork_call(_api_wait, 0, X)
    try:
        devlib.wait_in_wait(pid)
        with pymmapdev.open_device() as m:
            devlib.wait_until(lambda: m.wake(X, count=3) == 1, what="a counted wake")
    finally:
        assert devlib.reap(pid) == 0


def test_api_wait_unrelated_process(words):
    """An unrelated process (not forked from us) sleeps in wait() until we
    change the word and wake it."""
    proc = devlib.python(API_WAITER, 0, X)
    try:
        devlib.wait_in_wait(proc.pid)
        with pymmapdev.open_device() as m:
            m.write_u32(X, 1)
            m.wake(X)
        assert _outcome(proc) == "woken"
    finally:
        proc.kill()
        proc.wait()


API_WAITER = """
import sys, pymmapdev
offset, word = int(sys.argv[1]), int(sys.argv[2])
with pymmapdev.open_device(offset=offset) as m:
    print("woken" if m.wait(word, 0, timeout=20) else "timeout", flush=True)
"""


def test_readonly_waiter_cannot_take_a_wake_up(words):
    """A waiter of a read-only open is an observer: every WAKE on its word
    wakes it, uncounted, so it cannot take the wake-up meant for a peer.
    It could: WAKE(1) (a Lock's release) went to the oldest waiter, a
    read-only opener queued early, and the writer waiting for the lock
    slept on, lock free, until its own deadline."""
    ro = os.open(devlib.DEV, os.O_RDONLY | os.O_CLOEXEC)
    try:
        observer = devlib.fork_call(devlib.wait, ro, X, 0, -1)
        devlib.wait_in_wait(observer)
    finally:
        os.close(ro)                              # the child holds its own copy
    peer = devlib.fork_call(devlib.wait, words, X, 0, 20_000_000_000)
    try:
        devlib.wait_in_wait(peer)
        # No store: the word still holds what the peer expects, so only
        # the wake-up can end its wait early (a changed word would end it
        # with 0 at its deadline too).
        assert devlib.wake(words, X, 1) == 1                # the peer's, counted
        assert devlib.reap(peer, timeout=60) == 0           # woken, not ETIMEDOUT
        assert devlib.reap(observer) == 0                   # and the observer too
    finally:
        devlib.kill_unreaped([observer, peer])


def test_readonly_waiters_do_not_count(words):
    """WAKE's result counts the waiters of writable opens only."""
    ro = os.open(devlib.DEV, os.O_RDONLY | os.O_CLOEXEC)
    try:
        observers = _start_waiters(ro, [X, X])
    finally:
        os.close(ro)
    peers = _start_waiters(words, [X])
    try:
        assert devlib.wake(words, X, 5) == 1
    finally:
        codes = [devlib.reap(pid) for pid in observers + peers]
    assert codes == [0, 0, 0]
