"""Where the bench runs: machine facts, CPU placement, scratch files, C anchors.

Everything a case needs from its surroundings comes from here, so a case
module holds only what it measures.
"""
import os
import platform
import shutil
import subprocess
import tempfile

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
# A 1-minute load average above this means other work shares the CPUs: the
# run is still printed and saved, but marked as not quiet.
QUIET_LOAD = 0.5


def placements():
    """[(name, (cpu_a, cpu_b))] this machine can offer, split first."""
    return ([("split", SPLIT)] if SPLIT else []) + [("shared", SHARED)]


def pin(cpu):
    """Pin the calling process to *cpu* (None: leave it where it is)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def unpin():
    os.sched_setaffinity(0, CPUS)


def scratch_path(name):
    """A path on tmpfs (when there is one) private to this run."""
    return os.path.join(SHM, f"pymmapdev-bench-{os.getpid()}-{name}")


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
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
        subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-Werror", "-o", exe, src], check=True)
    return exe
