"""Ping-pong: round trips between two processes, pymmapdev's u32 word against
Python's IPC and against C (bench/pingpong.c: spin and futex, the physical
limit), with the two processes on different CPUs ("split") and on one
("shared").

pymmapdev modes: ``spin`` (load/store only), ``hybrid`` (wait/wake with the
default spin), ``sleep`` (wait/wake with spin=0: every wait sleeps in the
kernel, the figure issue 8 compares with the C futex and posix_ipc).
Per placement and contender, the trial with the best p50 is kept (trials
are run round-robin, so a burst of load hits every contender).
"""
import json
import os
import subprocess
import time

import pymmapdev

from . import competitors, env, procs
from .stats import round_trips

NAME = "pingpong"


class WordPingPong:
    """Two processes bounce a u32 in a file mapping (2i+1 out, 2i+2 back)."""

    needs = ()
    message = "u32 word"

    def __init__(self, label, spin):
        self.label, self.spin = label, spin    # spin: None = spin only, else wait()'s spin

    def make(self):
        path = env.scratch_path("pp")
        pymmapdev.open_file(path, 4096).close()
        return path

    def cleanup(self, path):
        os.unlink(path)

    def timer(self, path, rounds):
        m = pymmapdev.open_file(path)
        load, store, wait, wake = m.load_u32, m.store_u32, m.wait, m.wake
        spin, now = self.spin, time.perf_counter_ns
        stamps = [0] * (rounds + 1)
        for i in range(rounds):
            want = 2 * i + 2
            stamps[i] = now()
            store(0, want - 1)
            if spin is None:
                while load(0) != want:
                    pass
            else:
                wake(0)
                # wait first: the answer is rarely there yet, so this saves a
                # load per round (wait() returns at once if it is)
                wait(0, want - 1, None, spin)
                while load(0) != want:
                    wait(0, want - 1, None, spin)
        stamps[rounds] = now()
        m.close()
        return stamps

    def echo(self, path, rounds):
        m = pymmapdev.open_file(path)
        load, store, wait, wake = m.load_u32, m.store_u32, m.wait, m.wake
        spin = self.spin
        for i in range(rounds):
            want = 2 * i + 1
            if spin is None:
                while load(0) != want:
                    pass
                store(0, want + 1)
            else:
                wait(0, want - 1, None, spin)
                while load(0) != want:
                    wait(0, want - 1, None, spin)
                store(0, want + 1)
                wake(0)
        m.close()


class PipePingPong:
    needs = ()
    label = "multiprocessing.Pipe"
    message = "4-byte bytes"

    def make(self):
        return procs.CTX.Pipe()

    def cleanup(self, ends):
        for c in ends:
            c.close()

    def timer(self, ends, rounds):
        conn, now, msg = ends[0], time.perf_counter_ns, b"ping"
        stamps = [0] * (rounds + 1)
        for i in range(rounds):
            stamps[i] = now()
            conn.send_bytes(msg)
            conn.recv_bytes()
        stamps[rounds] = now()
        return stamps

    def echo(self, ends, rounds):
        conn = ends[1]
        for _ in range(rounds):
            conn.send_bytes(conn.recv_bytes())


class QueuePingPong:
    needs = ()
    label = "multiprocessing.Queue"
    message = "small int (pickled)"

    def make(self):
        return procs.CTX.Queue(), procs.CTX.Queue()

    def cleanup(self, ends):
        for q in ends:
            q.close()

    def timer(self, ends, rounds):
        there, back = ends
        now = time.perf_counter_ns
        stamps = [0] * (rounds + 1)
        for i in range(rounds):
            stamps[i] = now()
            there.put(i)
            back.get()
        stamps[rounds] = now()
        return stamps

    def echo(self, ends, rounds):
        there, back = ends
        for _ in range(rounds):
            back.put(there.get())


class SemaphorePingPong:
    needs = ("posix_ipc",)
    label = "posix_ipc semaphores"
    message = "none (semaphore post)"

    def make(self):
        import posix_ipc
        names = [env.scratch_path(s).replace(env.SHM, "") for s in ("ping", "pong")]
        for n in names:
            posix_ipc.Semaphore(n, posix_ipc.O_CREX, initial_value=0)
        return names

    def cleanup(self, names):
        import posix_ipc
        for n in names:
            posix_ipc.unlink_semaphore(n)

    def timer(self, names, rounds):
        import posix_ipc
        ping, pong = (posix_ipc.Semaphore(n) for n in names)
        now = time.perf_counter_ns
        stamps = [0] * (rounds + 1)
        for i in range(rounds):
            stamps[i] = now()
            ping.release()
            pong.acquire()
        stamps[rounds] = now()
        return stamps

    def echo(self, names, rounds):
        import posix_ipc
        ping, pong = (posix_ipc.Semaphore(n) for n in names)
        for _ in range(rounds):
            ping.acquire()
            pong.release()


class CPingPong:
    """bench/pingpong.c: no Python in the way."""

    needs = ()
    message = "u32 word"

    def __init__(self, label, mode):
        self.label, self.mode = label, mode


# kind: (contender, full round count, runs on a shared CPU too)
KINDS = {
    "spin": (WordPingPong("pymmapdev spin (load/store)", None), 20000, False),
    "hybrid": (WordPingPong("pymmapdev wait/wake, default spin", pymmapdev.get_spin()), 20000,
               True),
    "sleep": (WordPingPong("pymmapdev wait/wake, spin=0 (sleeping)", 0), 5000, True),
    "pipe": (PipePingPong(), 5000, True),
    "queue": (QueuePingPong(), 3000, True),
    "posix_ipc": (SemaphorePingPong(), 5000, True),
    # a spinner sharing a CPU only gets the answer at the next scheduler tick
    "c_spin": (CPingPong("C spin ping-pong", "spin"), 200000, False),
    "c_futex": (CPingPong("C futex ping-pong", "futex"), 20000, True),
}


def _one(cfg, contender, rounds, cpus, exe):
    if isinstance(contender, CPingPong):
        if exe is None:
            raise RuntimeError("no C compiler: bench/pingpong.c not built")
        out = subprocess.run([exe, contender.mode, str(rounds), str(cpus[0]), str(cpus[1])],
                             check=True, capture_output=True, text=True,
                             timeout=cfg.timeout).stdout
        return json.loads(out)
    ends = contender.make()
    try:
        stamps, _ = procs.run_sides([(contender.timer, (ends, rounds), cpus[0]),
                                     (contender.echo, (ends, rounds), cpus[1])], cfg.timeout)
    finally:
        contender.cleanup(ends)
    return round_trips(stamps)


def run(figs, cfg):
    exe = env.build_c("pingpong")
    for placement, cpus in env.placements():
        kinds = {k: v for k, v in KINDS.items() if placement == "split" or v[2]}
        best, errors = {}, {}
        for _ in range(cfg.trials):
            for kind, (contender, full, _) in kinds.items():
                if kind in errors or competitors.why_missing(contender.needs):
                    continue
                try:
                    r = _one(cfg, contender, cfg.n(full, 200), cpus, exe)
                except (procs.Hung, procs.SideFailed, RuntimeError, OSError,
                        subprocess.SubprocessError) as exc:
                    errors[kind] = exc
                    continue
                if kind not in best or r["p50_ns"] < best[kind]["p50_ns"]:
                    best[kind] = r
        keys = []
        for kind, (contender, _, _) in kinds.items():
            label = f"{contender.label} [{placement}]"
            for stat in ("p50", "p99"):
                key = f"{NAME}.{placement}.{kind}.{stat}"
                if kind in best:
                    figs.put(key, best[kind][f"{stat}_ns"], "ns", f"{label} {stat}")
                else:
                    why = errors.get(kind) or competitors.why_missing(contender.needs)
                    figs.missing(key, why, "ns", f"{label} {stat}")
            keys.append(f"{NAME}.{placement}.{kind}.p50")
        figs.group(f"round trip p50 [{placement}: CPUs {cpus[0]} and {cpus[1]}] "
                   "(lower is better)", "ns", keys)
