"""python -m pymmapdev kmod build|install|dkms: the bundled kernel module.

The module's sources ship inside the package (pymmapdev/kmod in a wheel;
kmod/ beside the package in a source checkout), so a pip user can build and
install it for the running kernel, or for the kernel build directory they
name, without the source tree.  Every missing prerequisite (headers, make,
depmod, dkms, root) is a clear error before anything is built or copied.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pymmapdev

MODULE = "mmapdev"


class KmodError(RuntimeError):
    """A build or install step failed; the message says which and why."""


def sources() -> Path:
    """The directory holding the module's sources (Kbuild, *.c, uapi/)."""
    here = Path(pymmapdev.__file__).resolve().parent
    for candidate in (here / "kmod", here.parent / "kmod"):
        if (candidate / "Kbuild").is_file():
            return candidate
    raise FileNotFoundError(2, "the kernel module's sources are not bundled with this "
                            "installation of pymmapdev", str(here / "kmod"))


def kernel_dir(given: str | None = None) -> Path:
    """The kernel build directory: *given*, or the running kernel's."""
    if given is not None:
        kdir = Path(given)
        hint = "pass the build directory of a kernel, e.g. /lib/modules/<version>/build"
    else:
        release = os.uname().release
        kdir = Path("/lib/modules", release, "build")
        hint = (f"install the headers of the running kernel (Debian/Ubuntu: sudo apt install "
                f"linux-headers-{release}; Fedora: sudo dnf install kernel-devel-{release}) "
                f"or name another kernel with --kernel-dir DIR")
    if not kdir.is_dir():
        raise FileNotFoundError(2, f"no kernel headers at this path: {hint}", str(kdir))
    uts = release_of(kdir) if (kdir / "Makefile").is_file() else None
    if uts is None:
        raise FileNotFoundError(2, f"not a configured kernel build directory (no Makefile or "
                                f"include/generated/utsrelease.h): {hint}", str(kdir))
    # It names directories: ~/.cache/pymmapdev/kmod/<release>, emptied
    # before a build, and <root>/lib/modules/<release>.  '..' or an
    # absolute path would put those anywhere.
    if uts in (".", "..") or "/" in uts:
        raise ValueError(f"UTS_RELEASE {uts!r} in {kdir}/include/generated/utsrelease.h "
                         f"is no kernel release (one directory name): {hint}")
    return kdir


def release_of(kdir: Path) -> str | None:
    """The release the headers were built for (what `uname -r` says on that
    kernel, and the directory name under /lib/modules).  Not
    include/config/kernel.release: Debian's says "6.1.192" for 6.1.0-56-amd64."""
    try:
        text = (kdir / "include" / "generated" / "utsrelease.h").read_text()
    except OSError:
        return None
    match = re.search(r'UTS_RELEASE\s+"([^"]+)"', text)
    return match.group(1) if match else None


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(2, f"{name} not found on PATH: install it (Debian/Ubuntu: "
                                f"sudo apt install {package})", name)
    return path


def _need_root(what: str, target: Path) -> None:
    """Fails unless *target* (or the nearest existing parent) is writable."""
    probe = target
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise PermissionError(13, f"{what} writes to {target}, which needs root: run it as "
                              f"root (sudo {sys.executable} -m pymmapdev kmod ...)", str(probe))


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-25:])
        raise KmodError(f"{what} failed (exit {proc.returncode}): {' '.join(argv)}\n{tail}")


def default_build_dir(release: str) -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache, "pymmapdev", "kmod", release)


# Left in every build directory build() fills: only a directory holding it
# (or an empty one) is ever emptied by a later build.
MARKER = ".pymmapdev-kmod-build"


def _fresh_build_dir(build_dir: Path, ours: bool) -> None:
    """Empty *build_dir* for a new build, or create it.

    --build-dir is the user's to name, and `--build-dir .` or a typo naming
    their home must not delete what is there: only a directory an earlier
    build filled (it holds MARKER) or an empty one is emptied, or, if *ours*,
    the default one under ~/.cache/pymmapdev.  A symlink is never followed,
    nor its target emptied.
    """
    if build_dir.is_symlink() or (build_dir.exists() and not build_dir.is_dir()):
        raise KmodError(f"{build_dir} is not a directory: name a new or empty directory "
                        f"with --build-dir")
    if build_dir.is_dir() and any(build_dir.iterdir()):
        if not ours and not (build_dir / MARKER).is_file():
            raise KmodError(f"{build_dir} is not empty and no earlier `kmod build` filled it: "
                            f"refusing to delete what it holds; name a new or empty directory "
                            f"with --build-dir")
        shutil.rmtree(build_dir)
    elif build_dir.is_dir():
        build_dir.rmdir()


def build(kdir: Path, build_dir: Path | None = None) -> Path:
    """Build mmapdev.ko against *kdir* in a fresh copy of the sources; return
    the .ko's path."""
    make = _tool("make", "make")
    release = release_of(kdir)
    assert release is not None          # kernel_dir() checked it
    ours = build_dir is None
    build_dir = build_dir or default_build_dir(release)
    # A fresh copy every time: no stale objects from another kernel, and the
    # installed package is never written to.
    _fresh_build_dir(build_dir, ours)
    shutil.copytree(sources(), build_dir,
                    ignore=shutil.ignore_patterns("*.o", "*.ko", "*.mod*", ".*.cmd", "*.cmd",
                                                  "__pycache__", MARKER))
    (build_dir / MARKER).write_text("made by python -m pymmapdev kmod build: a later build "
                                    "empties this directory\n")
    _run([make, "-C", str(build_dir), f"KDIR={kdir}", "modules"],
         f"building {MODULE}.ko against {kdir}")
    ko = build_dir / f"{MODULE}.ko"
    if not ko.is_file():
        raise KmodError(f"the build left no {ko}")
    return ko


def install(kdir: Path, build_dir: Path | None = None, root: str = "/") -> Path:
    """Build, copy mmapdev.ko to <root>/lib/modules/<release>/extra and run
    depmod, so that `modprobe mmapdev` finds it; return the installed path.

    Without *build_dir* the build happens in a private temporary directory,
    removed afterwards: not in ~/.cache, which under sudo may be the
    invoking user's, who could then swap the sources between the copy and
    root's make (and run their own Makefile as root).
    """
    release = release_of(kdir)
    assert release is not None
    moddir = Path(root, "lib", "modules", release)
    _need_root("installing the module", moddir)
    depmod = _tool("depmod", "kmod")
    with tempfile.TemporaryDirectory(prefix="pymmapdev-kmod-") as private:
        ko = build(kdir, build_dir or Path(private, "build"))
        dest = moddir / "extra" / ko.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ko, dest)
    _run([depmod, "-b", root, "-a", release], "depmod")
    return dest


def dkms_version() -> str:
    text = (sources() / "dkms.conf").read_text()
    match = re.search(r'^PACKAGE_VERSION="([^"]+)"', text, re.M)
    if match is None:
        raise KmodError("dkms.conf has no PACKAGE_VERSION")
    return match.group(1)


def dkms(kdir: Path, src_root: str = "/usr/src") -> str:
    """Register the sources with DKMS (rebuilt for every kernel installed
    later) and build and install them for *kdir*'s kernel now."""
    release = release_of(kdir)
    assert release is not None
    version = dkms_version()
    dest = Path(src_root, f"{MODULE}-{version}")
    _need_root("registering the module with DKMS", dest)
    dkms_cmd = _tool("dkms", "dkms")
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(sources(), dest,
                    ignore=shutil.ignore_patterns("__pycache__", "*.o", "*.ko"))
    status = subprocess.run([dkms_cmd, "status", f"{MODULE}/{version}"], capture_output=True,
                            text=True).stdout
    if not status.strip():
        _run([dkms_cmd, "add", f"{MODULE}/{version}"], "dkms add")
    _run([dkms_cmd, "install", f"{MODULE}/{version}", "-k", release,
          "--kernelsourcedir", str(kdir)], "dkms install")
    return f"{MODULE}/{version}"
