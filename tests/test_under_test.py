"""The suite tests the pymmapdev its runner installed, or says loudly that
it does not (tests/conftest.py, PYMMAPDEV_UNDER_TEST)."""
import os
import subprocess
import sys

from conftest import PKG_ROOT, REPO, child_env


def collect(tmp_path, under_test):
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "-c", os.path.join(REPO, "pyproject.toml"), "--rootdir", REPO,
         os.path.join(REPO, "tests", "test_under_test.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env=child_env(PYMMAPDEV_UNDER_TEST=under_test))


def test_wrong_package_fails_the_run(tmp_path):
    proc = collect(tmp_path, str(tmp_path))
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert f"not from PYMMAPDEV_UNDER_TEST={tmp_path}" in proc.stdout + proc.stderr


def test_right_package_runs(tmp_path):
    proc = collect(tmp_path, PKG_ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test_right_package_runs" in proc.stdout
