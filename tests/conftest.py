import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
