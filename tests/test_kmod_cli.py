"""python -m pymmapdev kmod build|install|dkms: the bundled module builds
against installed kernel headers, installs into a staging root, and every
missing prerequisite is a clear error naming what to do."""
import fnmatch
import glob
import os
import re
import subprocess
import sys

import pytest

import pymmapdev
from pymmapdev import _kmod

from conftest import REPO, as_nobody, child_env


def kmod_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "pymmapdev", "kmod", *args],
                          capture_output=True, text=True, timeout=300, env=env or child_env())


@pytest.fixture(scope="module")
def kernel_build_dir():
    """The newest installed kernel headers (make test installs Debian's
    linux-headers-amd64; the sid chroot has sid's)."""
    dirs = sorted(glob.glob("/lib/modules/*/build/Makefile"))
    if not dirs:
        pytest.fail("no kernel headers under /lib/modules/*/build: install linux-headers-amd64 "
                    "(make test does)", pytrace=False)
    return os.path.dirname(dirs[-1])


def modinfo(ko, field):
    return subprocess.run(["modinfo", "-F", field, str(ko)], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_sources_are_bundled():
    src = _kmod.sources()
    for name in ("Kbuild", "Makefile", "main.c", "uapi/mmapdev.h", "dkms.conf",
                 "99-mmapdev.rules", "LICENSE", "README.md"):
        assert (src / name).is_file(), name


def test_kbuild_output_stays_out_of_the_package():
    """A wheel built straight from a tree where the module was built
    (`make -C kmod`, then `pip install .`) must not ship kbuild's output
    as sources: mmapdev.mod.c matched the package data's "*.c" and went
    into every such wheel.  Every name kmod/.gitignore lists as kbuild
    output must miss the package-data patterns or hit an exclude."""
    try:
        import tomllib
    except ModuleNotFoundError:            # 3.10: pytest's own dependency
        import tomli as tomllib
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        setuptools = tomllib.load(f)["tool"]["setuptools"]
    include = setuptools["package-data"]["pymmapdev.kmod"]
    exclude = setuptools["exclude-package-data"]["pymmapdev.kmod"]
    with open(os.path.join(REPO, "kmod", ".gitignore")) as f:
        outputs = [line.strip() for line in f
                   if line.strip() and not line.startswith("#") and not line.strip().endswith("/")]
    assert "*.mod.c" in outputs
    shipped = [name for name in (p.replace("*", "mmapdev") for p in outputs)
               if any(fnmatch.fnmatch(name, p) for p in include) and
               not any(fnmatch.fnmatch(name, p) for p in exclude)]
    assert shipped == []

def test_one_version_everywhere():
    """The package, the module and its DKMS name carry one version."""
    src = _kmod.sources()
    assert _kmod.dkms_version() == pymmapdev.__version__
    main_c = (src / "main.c").read_text()
    assert re.search(r'MODULE_VERSION\("([^"]+)"\)', main_c).group(1) == pymmapdev.__version__


def test_build_and_rebuild(kernel_build_dir, tmp_path):
    out = kmod_cli("build", "--kernel-dir", kernel_build_dir, "--build-dir", str(tmp_path / "b"))
    assert out.returncode == 0, out.stdout + out.stderr
    ko = tmp_path / "b" / "mmapdev.ko"
    assert f"built {ko} for kernel {_kmod.release_of(_kmod.Path(kernel_build_dir))}" in out.stdout
    assert modinfo(ko, "version") == pymmapdev.__version__
    assert modinfo(ko, "vermagic").split()[0] == \
        _kmod.release_of(_kmod.Path(kernel_build_dir))
    # a directory an earlier build filled is emptied and built in again
    (tmp_path / "b" / "stale.o").write_text("from another kernel")
    out = kmod_cli("build", "--kernel-dir", kernel_build_dir, "--build-dir", str(tmp_path / "b"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert ko.is_file() and not (tmp_path / "b" / "stale.o").exists()


@pytest.mark.parametrize("kind", ["directory", "symlink", "file"])
def test_build_never_empties_a_directory_it_did_not_fill(kernel_build_dir, tmp_path, kind):
    """--build-dir . (or a typo naming one's home) deleted everything in it:
    build emptied whatever directory it was given before copying the sources."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("precious")
    given = {"directory": mine, "symlink": tmp_path / "link", "file": mine / "thesis.txt"}[kind]
    if kind == "symlink":
        given.symlink_to(mine)
    out = kmod_cli("build", "--kernel-dir", kernel_build_dir, "--build-dir", str(given))
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert str(given) in out.stderr and "--build-dir" in out.stderr, out.stderr
    assert os.listdir(mine) == ["thesis.txt"]
    assert (mine / "thesis.txt").read_text() == "precious"


def test_install_into_a_staging_root(kernel_build_dir, tmp_path):
    release = _kmod.release_of(_kmod.Path(kernel_build_dir))
    out = kmod_cli("install", "--kernel-dir", kernel_build_dir, "--build-dir",
                   str(tmp_path / "b"), "--root", str(tmp_path / "root"))
    assert out.returncode == 0, out.stdout + out.stderr
    moddir = tmp_path / "root" / "lib" / "modules" / release
    assert (moddir / "extra" / "mmapdev.ko").is_file()
    # depmod ran: modprobe would find it
    assert "extra/mmapdev.ko:" in (moddir / "modules.dep").read_text()


def test_install_builds_in_a_private_directory(kernel_build_dir, tmp_path):
    """install (root) built in ~/.cache, which under sudo may be the calling
    user's: they could swap the copied sources for their own Makefile before
    root's make ran.  It now builds in a private temporary directory and
    removes it."""
    cache, tmp = tmp_path / "cache", tmp_path / "tmp"
    tmp.mkdir()
    release = _kmod.release_of(_kmod.Path(kernel_build_dir))
    out = kmod_cli("install", "--kernel-dir", kernel_build_dir, "--root", str(tmp_path / "root"),
                   env=child_env(XDG_CACHE_HOME=str(cache), TMPDIR=str(tmp)))
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "root" / "lib" / "modules" / release / "extra" / "mmapdev.ko").is_file()
    assert not cache.exists() and os.listdir(tmp) == []


def test_missing_headers():
    out = kmod_cli("build", "--kernel-dir", "/nonexistent/build")
    assert out.returncode == 1
    assert "no kernel headers at this path" in out.stderr and "/nonexistent/build" in out.stderr
    assert "Traceback" not in out.stderr


def test_not_a_kernel_build_dir(tmp_path):
    out = kmod_cli("build", "--kernel-dir", str(tmp_path))
    assert out.returncode == 1 and "not a configured kernel build directory" in out.stderr


def test_running_kernel_without_headers_names_the_package(monkeypatch):
    monkeypatch.setattr(_kmod.os, "uname", lambda: os.uname_result(
        ("Linux", "h", "0.0.0-nothere", "#1", "x86_64")))
    with pytest.raises(FileNotFoundError, match="linux-headers-0.0.0-nothere") as exc:
        _kmod.kernel_dir(None)
    assert exc.value.filename == "/lib/modules/0.0.0-nothere/build"


def test_build_without_make(kernel_build_dir, tmp_path):
    out = kmod_cli("build", "--kernel-dir", kernel_build_dir, "--build-dir", str(tmp_path),
                   env=child_env(PATH=str(tmp_path)))
    assert out.returncode == 1 and "make not found on PATH" in out.stderr


def test_install_and_dkms_need_root(kernel_build_dir, tmp_path):
    def attempt(action):
        def run():
            try:
                if action == "install":
                    _kmod.install(_kmod.Path(kernel_build_dir), tmp_path / "b")
                else:
                    _kmod.dkms(_kmod.Path(kernel_build_dir))
            except PermissionError as exc:
                return str(exc)
            return "no error"
        return run
    os.chmod(tmp_path, 0o777)
    for action in ("install", "dkms"):
        message = as_nobody(attempt(action))
        assert "needs root" in message and "sudo" in message, message
    assert not (tmp_path / "b").exists()      # refused before building anything


def test_dkms_missing(kernel_build_dir, tmp_path):
    """dkms itself absent: named, with the package that has it (checked
    after root, so this runs as root with an empty PATH)."""
    out = kmod_cli("dkms", "--kernel-dir", kernel_build_dir,
                   env=child_env(PATH=str(tmp_path)))
    assert out.returncode == 1 and "dkms not found on PATH" in out.stderr
    assert "apt install dkms" in out.stderr


@pytest.mark.parametrize("release", ["../../../victim", "ABSOLUTE", ".."])
def test_a_release_that_is_no_directory_name_is_refused(tmp_path, release):
    """The release in the headers' utsrelease.h names directories: the
    default build directory ~/.cache/pymmapdev/kmod/<release>, emptied
    before each build, and <root>/lib/modules/<release>.  A --kernel-dir
    whose release held '..' or was absolute had build empty a directory
    outside the cache (here tmp_path/victim) and install copy outside root."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.txt").write_text("precious")
    release = str(victim) if release == "ABSOLUTE" else release
    kdir = tmp_path / "k"
    (kdir / "include" / "generated").mkdir(parents=True)
    (kdir / "Makefile").write_text("all:\n")
    (kdir / "include" / "generated" / "utsrelease.h").write_text(
        f'#define UTS_RELEASE "{release}"\n')
    cache = tmp_path / "cache"          # <cache>/pymmapdev/kmod/../../../victim is victim
    out = kmod_cli("build", "--kernel-dir", str(kdir),
                   env=child_env(XDG_CACHE_HOME=str(cache)))
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "utsrelease.h" in out.stderr and repr(release) in out.stderr, out.stderr
    assert (victim / "thesis.txt").read_text() == "precious"
    assert not cache.exists()
