import os
import subprocess
import sys
import textwrap

import pytest

import pymmapdev

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where the pymmapdev under test was imported from: child processes must load
# the same build (the sanitizer run puts an instrumented copy first).
PKG_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(pymmapdev.__file__)))


# The runner that installed the package names where it must come from: nox
# the venv's site-packages, the sanitizer run its instrumented build.  A
# source folder (the checkout, an unpacked sdist) on sys.path would shadow
# it and the run would test the wrong code, so that fails the run at once.
UNDER_TEST = os.environ.get("PYMMAPDEV_UNDER_TEST")


def pytest_configure(config):
    if UNDER_TEST and os.path.realpath(PKG_ROOT) != os.path.realpath(UNDER_TEST):
        pytest.exit(f"the pymmapdev under test was imported from {pymmapdev.__file__}, not "
                    f"from PYMMAPDEV_UNDER_TEST={UNDER_TEST} (is a source folder on sys.path?)",
                    returncode=pytest.ExitCode.USAGE_ERROR)


def pytest_report_header(config):
    return (f"pymmapdev {pymmapdev.__version__} under test: {pymmapdev.__file__} "
            f"(extension {pymmapdev._core.__file__})")


# Volume-heavy tests (fuzzing, hammering) scale their iteration counts by
# this; the sanitizer run sets 0.1 because everything is ~10x slower there,
# while the normal host suite runs the full volume.
SCALE = float(os.environ.get("PYMMAPDEV_TEST_SCALE", "1"))


def scaled(n, minimum=1):
    return max(minimum, int(n * SCALE))


def child_env(**extra):
    """os.environ for a child python that imports the pymmapdev under test."""
    path = [PKG_ROOT, os.environ.get("PYTHONPATH")]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p), **extra)


@pytest.fixture
def shm_path(tmp_path):
    """A path on tmpfs when there is one (like real users), else tmp_path."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tmp_path
    path = os.path.join(base, f"pymmapdev-test-{os.getpid()}-{os.urandom(4).hex()}")
    yield path
    if os.path.exists(path):
        os.unlink(path)


def run_python(code, *args, timeout=60, check=True):
    """Run *code* in an unrelated python process (not a multiprocessing child)."""
    env = child_env()
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def as_nobody(fn):
    """Run fn() in a forked child whose uid/gid are nobody's; return what it
    returned (root bypasses mode bits, and nobody cannot exec the pyenv
    python under /root, so the child is a fork of this interpreter)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            os.write(write_end, repr(fn()).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        result = f.read()
    os.waitpid(pid, 0)
    return result


@pytest.fixture
def forgotten_loops(monkeypatch):
    """For tests that drop an event loop unclosed, to be collected: its
    __del__ closes it, but may fail doing so when the collector finalized
    the loop's self-pipe socket first (3.10: "Invalid file descriptor: -1",
    asyncio's own).  The exception pytest's hook then keeps holds the loop,
    and its epoll descriptor, until the test ends.  Those failures are
    recorded here as text (the loop's descriptors go with it); any other
    goes to the hook as before."""
    seen = []
    previous = sys.unraisablehook

    def hook(unraisable):
        if getattr(unraisable.object, "__qualname__", "") == "BaseEventLoop.__del__":
            seen.append(f"{unraisable.err_msg}: {unraisable.exc_value!r}")
        else:
            previous(unraisable)

    monkeypatch.setattr(sys, "unraisablehook", hook)
    return seen
