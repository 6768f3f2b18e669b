"""Where the bench runs: machine facts, CPU placement, scratch files, C anchors.

Everything a case needs from its surroundings comes from here, so a case
module holds only what it measures.
"""
import ctypes
import os
import platform
import shutil
import signal
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")

SHM = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
CPUS = sorted(os.sched_getaffinity(0))
# (first process's CPU, second process's CPU).  "split" puts two processes
# on different CPUs, "shared" on one: the sleeping paths are judged on both,
# because a wake-up to another CPU and a switch on the same CPU cost
# differently.
SPLIT = (CPUS[0], CPUS[1]) if len(CPUS) >= 2 else None
SHARED = (CPUS[0], CPUS[0])
# A 1-minute load average above this at the start, or other work using more
# than QUIET_OTHER CPUs on average during the run, means the figures were
# taken beside other work: the run is still printed and saved, but marked
# as not quiet.
QUIET_LOAD = 0.5
QUIET_OTHER = 0.25


def placements():
    """[(name, (cpu_a, cpu_b))] this machine can offer, split first."""
    return ([("split", SPLIT)] if SPLIT else []) + [("shared", SHARED)]


def pin(cpu):
    """Pin the calling process to *cpu* (None: leave it where it is)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


PR_SET_PDEATHSIG = 1                # <linux/prctl.h>


def die_with_parent(parent):
    """Make the calling (forked) process die when *parent* does.

    A bench killed from outside (a CI timeout's SIGTERM, the OOM killer)
    runs no exit handlers, so multiprocessing never ends its daemon
    children; a side left behind would spin on its pinned CPU for good.
    getppid() covers a parent that died before the prctl.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    if os.getppid() != parent:
        os._exit(1)


def unpin():
    os.sched_setaffinity(0, CPUS)


def scratch_path(name):
    """A path on tmpfs (when there is one) private to this run."""
    return os.path.join(SHM, f"pymmapdev-bench-{os.getpid()}-{name}")


class OtherLoad:
    """How many CPUs, on average, ran work other than this bench since start().

    The load average cannot tell: the bench's own two pinned processes put
    it near 2.  So: all busy CPU time (/proc/stat, steal included: a
    hypervisor's other guests count too) minus this process's and its reaped
    children's CPU time (os.times), over the wall time.
    """

    def __init__(self):
        self.start = self._snapshot()

    @staticmethod
    def _snapshot():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal ...: idle and iowait are not busy
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system
        return busy, own, time.monotonic()

    def cpus(self):
        """Average CPUs used by others since start (clamped at 0: clock ticks are coarse)."""
        busy0, own0, t0 = self.start
        busy1, own1, t1 = self._snapshot()
        return max(0.0, ((busy1 - busy0) - (own1 - own0)) / max(t1 - t0, 1e-9))


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine():
    """Facts printed at the top of a run and saved with its results."""
    import pymmapdev
    return {
        "cpu": cpu_model(), "cpus": len(CPUS), "kernel": platform.release(),
        "python": platform.python_version(), "loadavg_start": os.getloadavg(),
        "pymmapdev": os.path.dirname(pymmapdev.__file__),
        "pymmapdev_spin": pymmapdev.get_spin(), "shm": SHM,
    }


def build_c(name):
    """bench/NAME.c -> bench/results/NAME, rebuilt when the source is newer.

    Returns the executable's path, or None when there is no C compiler (the
    figures anchored on it are then reported missing, not dropped).
    """
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    os.makedirs(RESULTS, exist_ok=True)
    exe = os.path.join(RESULTS, name)
    src = os.path.join(HERE, f"{name}.c")
    newest = max(os.path.getmtime(src), os.path.getmtime(os.path.join(HERE, "anchor.h")))
    if not os.path.exists(exe) or os.path.getmtime(exe) < newest:
        subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-Werror", "-o", exe, src], check=True)
    return exe
