"""Running the two sides of a measurement in child processes, with a deadline.

Every multi-process figure runs each side in its own forked child, pinned to
its CPU, and the bench process only waits for their answers; a child dies
with the bench, however the bench ends.  A competitor
that hangs (a peer died holding its lock, a partial message in a pipe) is
killed at the deadline and reported as hung; the bench goes on.
"""
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import time
import traceback

from . import env

CTX = mp.get_context("fork")     # sides inherit the transports' objects


class Hung(Exception):
    """A side did not answer before the deadline (it was killed)."""


class SideFailed(Exception):
    """A side raised; the message carries its traceback's last line."""


def _side(fn, args, cpu, conn, parent):
    try:
        env.die_with_parent(parent)
        env.pin(cpu)
        result = ("ok", fn(*args))
    except BaseException as exc:       # reported, not lost in a child's stderr
        result = ("error", f"{type(exc).__name__}: {exc}", traceback.format_exc())
    try:
        conn.send(result)
    finally:
        conn.close()


class Side:
    """One started side: .proc, and .result() once it answered."""

    def __init__(self, fn, args=(), cpu=None, name=None):
        self._recv, send = CTX.Pipe(duplex=False)
        self.name = name or getattr(fn, "__name__", "side")
        self.proc = CTX.Process(target=_side, args=(fn, args, cpu, send, os.getpid()),
                                name=self.name, daemon=True)
        self.proc.start()
        send.close()
        self.answer = None

    def poll(self, timeout):
        if self.answer is None and self._recv.poll(timeout):
            try:
                self.answer = self._recv.recv()
            except EOFError:                   # died without answering
                self.proc.join(1)
                self.answer = ("error", f"died with exit code {self.proc.exitcode}", "")
        return self.answer is not None

    def kill(self):
        if self.proc.is_alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join(5)

    def result(self):
        if self.answer is None:
            raise Hung(f"{self.name} gave no answer")
        if self.answer[0] == "error":
            raise SideFailed(f"{self.name}: {self.answer[1]}")
        return self.answer[1]


def wait_all(sides, timeout):
    """Wait until every side answered or *timeout* seconds passed; kill the rest.

    A side that fails ends the wait at once (its peers would only wait for
    it).  Returns True when all answered.
    """
    deadline = time.monotonic() + timeout
    pending = [s for s in sides if not s.poll(0)]
    while pending:
        left = deadline - time.monotonic()
        if left <= 0 or any(s.answer[0] == "error" for s in sides if s.answer is not None):
            break                  # (a failed side: the others would only wait for it)
        mp.connection.wait([s._recv for s in pending], timeout=left)
        pending = [s for s in pending if not s.poll(0)]
    for s in sides:
        if s.answer is None:
            s.kill()
        else:
            s.proc.join(5)
            if s.proc.is_alive():
                s.kill()
    return not pending


def run_sides(specs, timeout):
    """Start one child per (fn, args, cpu) and return their results in order.

    Raises Hung (naming the silent sides, which were killed) or SideFailed.
    """
    sides = [Side(fn, args, cpu) for fn, args, cpu in specs]
    all_answered = wait_all(sides, timeout)
    for s in sides:
        if s.answer is not None and s.answer[0] == "error":
            s.result()                         # raises SideFailed
    if not all_answered:
        silent = [s.name for s in sides if s.answer is None]
        raise Hung(f"no answer within {timeout:g} s from {', '.join(silent)} (killed)")
    return [s.result() for s in sides]
