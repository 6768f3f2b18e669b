"""The suite tests the pymmapdev its runner installed, or says loudly that
it does not (tests/conftest.py, PYMMAPDEV_UNDER_TEST)."""
import os
import shutil
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


def test_a_source_tree_without_its_extension_says_so(tmp_path):
    """`python -c "import pymmapdev"` in a clone or an unpacked sdist that
    was installed with `pip install .` imports the source folder (the
    current directory comes first on sys.path), which holds no extension
    for this Python.  That must say so and what to do, not blame a
    'partially initialized module ... (most likely due to a circular
    import)'."""
    src = tmp_path / "pymmapdev"
    src.mkdir()
    for name in os.listdir(os.path.join(PKG_ROOT, "pymmapdev")):
        if name.endswith((".py", ".pyi")):
            shutil.copy(os.path.join(PKG_ROOT, "pymmapdev", name), src)
    env = child_env()
    env.pop("PYTHONSAFEPATH", None)     # the sanitizer run sets it; a user's shell does not
    # -S: no site-packages, whose editable install of pymmapdev (make test
    # makes one) would serve pymmapdev._core from its own tree whatever
    # folder the package itself came from
    proc = subprocess.run([sys.executable, "-S", "-c", "import pymmapdev"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: pymmapdev's C extension (_core) is not built for "
                           f"this Python in {src}"), proc.stderr
    assert "pip install -e ." in last and "circular" not in proc.stderr
