"""Child-process bodies for the synchronisation tests.

They live in an importable module (not in the test files' closures) so that
multiprocessing's spawn start method can find them.  Each opens the mapping
itself by path, as an unrelated process would.
"""
import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import zlib

import pytest

import pymmapdev

HERE = os.path.dirname(os.path.abspath(__file__))
# Children import the pymmapdev under test (the sanitizer run puts an
# instrumented copy first), and this module.
PKG_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(pymmapdev.__file__)))

# hang guard for every wait inside a child: a bug fails the test, never hangs it
GUARD = 60.0


def spin_until(pred, guard=GUARD):
    deadline = time.monotonic() + guard
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("hang guard expired")
        time.sleep(0.001)


def run_thread_to_its_end(target):
    """Runs *target* in a thread of ours and returns once the kernel has
    ended that thread.  Thread.join() returns when the thread's Python code
    is done, a moment before the OS thread exits: a liveness check made in
    that moment (a zero-timeout Lock.acquire() has only one) still finds it
    alive."""
    t = threading.Thread(target=target)
    t.start()
    t.join(GUARD)
    assert not t.is_alive(), "hang guard expired"
    spin_until(lambda: not os.path.exists(f"/proc/self/task/{t.native_id}"))


async def ticking(coro, interval=0.005):
    """(what *coro* returns, how many times a task sleeping *interval* s got
    to run meanwhile): whether the call let the event loop run."""
    ticks = 0

    async def tick():
        nonlocal ticks
        while True:
            await asyncio.sleep(interval)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        return await coro, ticks
    finally:
        ticker.cancel()


def asleep_on(m, offset, thread):
    """True when *thread* (of this process) is blocked in a syscall on the word.

    /proc/<pid>/task/<tid>/syscall shows the syscall a blocked thread is in
    and its arguments; a futex wait has the word's address first.
    """
    import ctypes
    word = ctypes.c_uint32.from_buffer(m, offset)
    addr = ctypes.addressof(word)
    del word                                    # drop the buffer export
    try:
        with open(f"/proc/self/task/{thread.native_id}/syscall") as f:
            fields = f.read().split()
    except FileNotFoundError:                   # thread already gone
        return False
    return len(fields) > 1 and int(fields[1], 16) == addr


def signal_once_asleep(m, offset, signum):
    """Sends *signum* to the calling thread once it sleeps on the word at
    *offset* of *m* (asleep_on), from another thread: a handler that must
    run inside a wait, however late the wait begins."""
    me = threading.current_thread()

    def send():
        spin_until(lambda: asleep_on(m, offset, me))
        signal.pthread_kill(me.ident, signum)
    threading.Thread(target=send, daemon=True).start()


def process_asleep_on(pid, path, offset):
    """True when the main thread of process *pid* is blocked in a syscall on
    the word at *offset* of its mapping of the file *path* (as asleep_on():
    a futex wait has the word's address first)."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            starts = [int(line.split("-", 1)[0], 16) for line in f
                      if line.split(maxsplit=5)[5:] == [path + "\n"]
                      and int(line.split()[2], 16) == 0]
        with open(f"/proc/{pid}/task/{pid}/syscall") as f:
            fields = f.read().split()
    except FileNotFoundError:                   # process already gone
        return False
    return len(fields) > 1 and int(fields[1], 16) in [start + offset for start in starts]


def fetch_add_worker(path, offset, bits, n, delta=1):
    with pymmapdev.open_file(path) as m:
        add = m.fetch_add_u32 if bits == 32 else m.fetch_add_u64
        for _ in range(n):
            add(offset, delta)


def cas_worker(path, offset, bits, n):
    """Increment with a compare-exchange loop; returns nothing, counts retries."""
    with pymmapdev.open_file(path) as m:
        load = m.load_u32 if bits == 32 else m.load_u64
        cas = m.compare_exchange_u32 if bits == 32 else m.compare_exchange_u64
        mask = (1 << bits) - 1
        for _ in range(n):
            old = load(offset)
            while True:
                seen = cas(offset, old, (old + 1) & mask)
                if seen == old:
                    break
                old = seen


def waiter(path, offset, expected, timeout, ready_offset, result_offset):
    """Announce readiness, wait once, store 1 + the wait result (1 False, 2 True)."""
    with pymmapdev.open_file(path) as m:
        m.fetch_add_u32(ready_offset, 1)
        ok = m.wait(offset, expected, timeout)
        m.store_u32(result_offset, 2 if ok else 1)


def wait_for_change(path, offset, ready_offset, done_offset):
    """Loop-wait until the word is non-zero (tolerates spurious wake-ups)."""
    with pymmapdev.open_file(path) as m:
        m.fetch_add_u32(ready_offset, 1)
        while m.load_u32(offset) == 0:
            m.wait(offset, 0, GUARD)
        m.fetch_add_u32(done_offset, 1)


def pong(path, rounds, spin):
    """Answer the parent's pings: word 0 odd -> make it even."""
    with pymmapdev.open_file(path) as m:
        for i in range(rounds):
            want = 2 * i + 1
            while m.load_u32(0) != want:
                if not m.wait(0, 2 * i, GUARD, spin=spin):
                    raise TimeoutError("ping never came")
            m.store_u32(0, want + 1)
            m.wake(0)


def locked_increments(path, lock_offset, counter_offset, n):
    """Non-atomic read-modify-write of a u64, made safe by the Lock."""
    with pymmapdev.open_file(path) as m:
        lock = pymmapdev.Lock(m, lock_offset)
        for _ in range(n):
            with lock:
                v = m.read_u64(counter_offset)
                m.write_u64(counter_offset, v + 1)


def lock_churn(path, lock_offset, n, spin):
    """acquire(); release() n times, with *spin* rounds before each sleep."""
    pymmapdev.set_spin(spin)
    with pymmapdev.open_file(path) as m:
        lock = pymmapdev.Lock(m, lock_offset)
        for _ in range(n):
            lock.acquire()
            lock.release()


def lock_init_race(path, lock_offset, start_offset, counter_offset, n):
    """Line up with the others, then construct the Lock at the same instant."""
    with pymmapdev.open_file(path) as m:
        m.fetch_add_u32(start_offset, 1)
        spin_until(lambda: m.load_u32(start_offset) >= 1000)
        lock = pymmapdev.Lock(m, lock_offset)
        for _ in range(n):
            with lock:
                m.write_u64(counter_offset, m.read_u64(counter_offset) + 1)


def hold_lock_forever(path, lock_offset, flag_offset):
    """Take the lock, half-update the state, signal and sleep until killed."""
    with pymmapdev.open_file(path) as m:
        lock = pymmapdev.Lock(m, lock_offset)
        lock.acquire()
        m.write_u32(flag_offset + 4, 0xDEAD)   # "half-updated" protected state
        m.store_u32(flag_offset, 1)
        m.wake(flag_offset)
        while True:
            time.sleep(1)


def payload(version, size):
    """Deterministic bytes for *version* with a trailing CRC32."""
    body = (version.to_bytes(8, "little") * (size // 8 + 1))[:max(size - 4, 0)]
    body = bytes(b ^ (i & 0xFF) for i, b in enumerate(body[:64])) + body[64:]
    return body + zlib.crc32(body).to_bytes(4, "little")


def payload_ok(data):
    if len(data) < 4:
        return len(data) == 0
    return zlib.crc32(data[:-4]) == int.from_bytes(data[-4:], "little")


def slot_writer(path, offset, capacity, count, stop_offset):
    """Publish *count* values of varying length as fast as possible.

    Sets the stop word when done (or failing), so readers never wait forever.
    """
    with pymmapdev.open_file(path) as m:
        try:
            slot = pymmapdev.Slot(m, offset, capacity)
            sizes = [min(s, capacity) for s in (capacity, 4, capacity // 2, 64, capacity - 1, 100)]
            pre = [payload(i, sizes[i % len(sizes)]) for i in range(64)]
            for i in range(count):
                if m.load_u32(stop_offset):
                    break
                slot.publish(pre[i % len(pre)])
        finally:
            m.store_u32(stop_offset, 1)


def slot_wait_reader(path, offset, capacity, ready_offset, result_offset):
    with pymmapdev.open_file(path) as m:
        slot = pymmapdev.Slot(m, offset, capacity)
        version, _ = slot.read()
        m.store_u32(ready_offset, 1)
        ok = slot.wait_newer(version, GUARD)
        new_version, data = slot.read()
        m.store_u32(result_offset, 2 if ok and new_version > version and data == b"news" else 1)


@pytest.fixture
def run_child():
    """Start *code* in an unrelated python process; returns the Popen.

    Children still running at the end of the test are killed.
    """
    children = []

    def start(code, *args, **popen_args):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (PKG_ROOT, HERE, env.get("PYTHONPATH")) if p)
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, **popen_args)
        children.append(proc)
        return proc

    yield start
    for proc in children:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


# What a child of held_in_its_exit() runs after its own code: say so, wait
# for the word, and exit (exit_group, no signal) with everything still held.
_THEN_EXIT = """
print("held", flush=True)
sys.stdin.readline()
os._exit(0)
"""
# /proc/<pid>/stat field 9: the task's flags; PF_EXITING (include/linux/sched.h)
PF_EXITING = 0x4


def task_state_and_flags(pid):
    """(state letter, flags) of task *pid*; fields after the last ')' (comm
    may hold spaces and parentheses)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[0], int(fields[6])


def _splicing_from(tid, pipe_end, sock):
    """Is our thread *tid* inside splice(pipe_end, NULL, sock, NULL, ...)?"""
    try:
        with open(f"/proc/self/task/{tid}/syscall") as f:
            call = f.read().split()
    except FileNotFoundError:
        return False
    return call[1:5] == [hex(pipe_end), "0x0", hex(sock.fileno()), "0x0"]


def _splice_until_failed(pipe_out, sock):
    try:
        return os.splice(pipe_out, sock.fileno(), 1 << 20)
    except OSError as e:                                 # its peer closed, as planned
        return e


@contextlib.contextmanager
def held_in_its_exit(start, code, *args):
    """Runs *code* (with os and sys imported) in a single-threaded child
    (*start*: the run_child fixture) to take what the test wants held, then
    has it exit normally and holds it inside the kernel's do_exit(): yields
    its pid once /proc shows it exiting (PF_EXITING) and not yet a zombie,
    and lets it end on leaving.

    The trap: the child holds the only reference to a pipe's write end; a
    thread of ours splices from that pipe into a socket whose send buffer is
    full, and sleeps in the send holding the pipe's mutex; the child's exit
    closes its files after setting PF_EXITING, and pipe_release() waits for
    that mutex.  (SO_LINGER on a full TCP socket does not do: inet_release()
    never lingers for an exiting task.)  The pipe is made big so the splice
    needs a new buffer of the socket whatever the kernel merges first."""
    ours, theirs = socket.socketpair()
    pipe_out, pipe_in = os.pipe()
    spliced = []
    splicer = threading.Thread(target=lambda: spliced.append(
        _splice_until_failed(pipe_out, ours)))
    proc = None
    try:
        ours.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:                                  # bounded by its send buffer
                ours.send(bytes(1 << 16))
        ours.setblocking(True)
        with contextlib.suppress(OSError):              # a per-user pipe quota: keep the default
            fcntl.fcntl(pipe_in, fcntl.F_SETPIPE_SZ, 1 << 18)
        os.set_blocking(pipe_in, False)
        with contextlib.suppress(BlockingIOError):
            while True:                                  # bounded by the pipe's size
                os.write(pipe_in, bytes(4096))
        proc = start("import os, sys\n" + textwrap.dedent(code) + _THEN_EXIT, *args,
                     stdin=subprocess.PIPE, pass_fds=(pipe_in,))
        os.close(pipe_in)
        pipe_in = -1
        assert proc.stdout.readline() == "held\n", proc.communicate(timeout=GUARD)
        assert len(os.listdir(f"/proc/{proc.pid}/task")) == 1, "the child has other threads"
        splicer.start()
        spin_until(lambda: (not splicer.is_alive() or
                            _splicing_from(splicer.native_id, pipe_out, ours)))
        assert splicer.is_alive(), f"the splice into a full socket did not wait: {spliced}"
        proc.stdin.write("exit\n")
        proc.stdin.flush()
        deadline = time.monotonic() + GUARD
        while True:
            state, flags = task_state_and_flags(proc.pid)
            if flags & PF_EXITING and state not in "ZXx":
                break
            assert state not in "ZXx" and time.monotonic() < deadline, \
                f"the child did not stay inside its exit: state {state}, flags {flags:#x}"
            time.sleep(0.001)
        yield proc.pid
    finally:
        if proc is not None:
            proc.stdin.close()                           # not told yet: EOF tells it
        theirs.close()                                   # the send fails: the splice lets go
        if splicer.ident is not None:
            splicer.join(GUARD)
            assert not splicer.is_alive(), "hang guard expired"
        if proc is not None:
            proc.wait(GUARD)
        ours.close()
        os.close(pipe_out)
        if pipe_in >= 0:
            os.close(pipe_in)
