"""Lock: one uncontended acquire + release, pymmapdev.Lock against
multiprocessing.Lock and against the glibc-based pymmapdev.Lock of commit
GLIBC_LOCK_COMMIT (the last one before issue 8 replaced it: issue 8 asks the
new lock to be at least as fast).

The old Lock is measured in the same run: the bench builds that commit's
extension once (git archive + build_ext, cached under bench/results/) and
runs the same probe in a child python that imports it.

Both idioms are timed: ``lock.acquire(); lock.release()`` through bound
methods, and ``with lock: pass``.  They differ a lot for
multiprocessing.Lock, whose acquire/release are the C methods of its SemLock
(a userspace sem_trywait, ~10 ns each) while its ``__enter__``/``__exit__``
are Python functions.  The ``with`` group also times that SemLock itself,
whose ``__enter__``/``__exit__`` are C: what a ``with`` statement costs on top
of an acquire + release as cheap as multiprocessing.Lock's, the floor under
any C lock's ``with`` on this interpreter.
"""
import json
import os
import subprocess
import sys

import pymmapdev

from . import env
from .stats import best_per_op

NAME = "lock"
GLIBC_LOCK_COMMIT = "9ce3665c2c1c385ee7dfc71b107a3994310f56e4"
BUILD_FILES = ("setup.py", "pyproject.toml", "csrc", "pymmapdev", "kmod/uapi")
_OLD = f"glibc-based pymmapdev.Lock @{GLIBC_LOCK_COMMIT[:7]}"
LABELS = {"pymmapdev": "pymmapdev.Lock acquire(); release()",
          "mp_lock": "multiprocessing.Lock acquire(); release()",
          "glibc_lock": f"{_OLD} acquire(); release()",
          "pymmapdev_with": "pymmapdev.Lock: with lock",
          "mp_lock_with": "multiprocessing.Lock: with lock",
          "semlock_with": "multiprocessing.Lock's C SemLock itself: with lock (the floor)",
          "glibc_lock_with": f"{_OLD}: with lock"}


def probe(number):
    """{name: seconds per acquire+release} for the pymmapdev this python imports."""
    import multiprocessing

    path = env.scratch_path(f"lock-{os.getpid()}")
    m = pymmapdev.open_file(path, 4096)
    try:
        lock = pymmapdev.Lock(m, 64)
        mp_lock = multiprocessing.get_context("fork").Lock()
        g = {"a": lock.acquire, "r": lock.release, "lk": lock,
             "ma": mp_lock.acquire, "mr": mp_lock.release, "mlk": mp_lock,
             "slk": mp_lock._semlock}
        return best_per_op({"pymmapdev": "a(); r()", "mp_lock": "ma(); mr()",
                            "pymmapdev_with": "with lk: pass", "mp_lock_with": "with mlk: pass",
                            "semlock_with": "with slk: pass"},
                           g, number)
    finally:
        m.close()
        os.unlink(path)


def _old_build():
    """Directory holding the old commit's pymmapdev, built in place (cached)."""
    where = os.path.join(env.RESULTS, f"lock-{GLIBC_LOCK_COMMIT[:12]}")
    stamp = os.path.join(where, ".built")
    if os.path.exists(stamp):
        return where
    os.makedirs(where, exist_ok=True)
    archive = subprocess.run(["git", "-C", env.ROOT, "archive", GLIBC_LOCK_COMMIT, *BUILD_FILES],
                             capture_output=True, check=True, timeout=60).stdout
    subprocess.run(["tar", "-x", "-C", where], input=archive, check=True, timeout=60)
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=where,
                   check=True, capture_output=True, timeout=600)
    open(stamp, "w").close()
    return where


def _old_probe(where, number, timeout):
    # cwd first on sys.path (python -c): the old pymmapdev; the bench from ROOT.
    code = ("import json, sys; from bench.case_lock import probe; "
            "import pymmapdev; assert pymmapdev.__file__.startswith(sys.argv[1]), pymmapdev.__file__; "
            "print(json.dumps(probe(int(sys.argv[2]))))")
    env_vars = dict(os.environ, PYTHONPATH=env.ROOT)
    env_vars.pop("PYTHONSAFEPATH", None)
    out = subprocess.run([sys.executable, "-c", code, where, str(number)], cwd=where,
                         env=env_vars, check=True, capture_output=True, text=True,
                         timeout=timeout).stdout
    res = json.loads(out)
    return {"glibc_lock": res["pymmapdev"], "glibc_lock_with": res["pymmapdev_with"]}


def run(figs, cfg):
    number = cfg.n(200_000)
    try:
        where, old_error = _old_build(), None
    except (OSError, subprocess.SubprocessError) as exc:
        where, old_error = None, f"could not build commit {GLIBC_LOCK_COMMIT[:7]}: {exc}"
    best = {}
    for _ in range(cfg.trials):                  # round-robin: ours, mp, then the old one
        for k, v in probe(number).items():
            best[k] = min(best.get(k, float("inf")), v)
        if where is not None and old_error is None:
            try:
                for k, v in _old_probe(where, number, cfg.timeout).items():
                    best[k] = min(best.get(k, float("inf")), v)
            except (OSError, subprocess.SubprocessError, ValueError) as exc:
                old_error = f"the old build's probe failed: {exc}"
    for k, label in LABELS.items():
        if best.get(k, 0) > 0:
            figs.put(f"{NAME}.{k}", best[k] * 1e9, "ns", label)
        else:
            figs.missing(f"{NAME}.{k}", old_error or "too fast to time at this scale", "ns",
                         label)
    for title, keys in (("acquire(); release()", ("pymmapdev", "glibc_lock", "mp_lock")),
                        ("with lock: pass", ("pymmapdev_with", "glibc_lock_with",
                                             "mp_lock_with", "semlock_with"))):
        figs.group(f"uncontended Lock, {title} (ns, lower is better)", "ns",
                   [f"{NAME}.{k}" for k in keys])
