"""Who may open the node.  The module's mode= parameter sets the
permission devtmpfs gives the nodes (default 0600: root only); production
systems grant a group with the udev rule kmod/99-mmapdev.rules (0660).
mode=0666 appears here only to prove the parameter works: never use it."""
import errno
import os
import stat
import subprocess

import pytest

import pymmapdev

from . import devlib

pytestmark = pytest.mark.device

NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]


def _as_nobody(script):
    # /bin/sh, not python: the interpreter under /root is not reachable for
    # uid 65534, and the shell's redirections are open(2) calls.
    return subprocess.run(NOBODY + ["sh", "-c", script], capture_output=True, text=True,
                          cwd="/", timeout=60)


def test_default_node_mode():
    st = os.stat(devlib.DEV)
    assert stat.S_ISCHR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert (st.st_uid, st.st_gid) == (0, 0)


def test_nobody_denied_with_default_mode():
    for redirection in (f"< {devlib.DEV}", f"> {devlib.DEV}", f"<> {devlib.DEV}"):
        proc = _as_nobody(f": {redirection}")
        assert proc.returncode != 0, redirection
        assert "Permission denied" in proc.stderr, proc.stderr
    # and the uid really was 65534 (the command itself works)
    assert _as_nobody("id -u").stdout.strip() == "65534"


def test_mode_parameter_grants_access(kmod):
    """mode=0666, only as a test of the parameter (use a group in practice)."""
    kmod.reload("mode=0666")
    assert stat.S_IMODE(os.stat(devlib.DEV).st_mode) == 0o666
    with pymmapdev.open_device() as m:
        proc = _as_nobody(f"printf by-nobody | dd of={devlib.DEV} bs=1 seek=300 "
                          f"conv=notrunc status=none")
        assert proc.returncode == 0, proc.stderr
        assert m.read(300, 9) == b"by-nobody"
        m.write(0, b"by-root!!")
        proc = _as_nobody(f"head -c 9 {devlib.DEV}")
        assert (proc.returncode, proc.stdout) == (0, "by-root!!"), proc.stderr


def test_mode_parameter_group(kmod):
    """mode=0640 with the node's group: group members read, others do not."""
    kmod.reload("mode=0640")
    os.chown(devlib.DEV, 0, 65534)       # what the udev rule's GROUP= does
    proc = _as_nobody(f"head -c 1 {devlib.DEV} > /dev/null")
    assert proc.returncode == 0, proc.stderr
    proc = _as_nobody(f": >> {devlib.DEV}")
    assert proc.returncode != 0 and "Permission denied" in proc.stderr
    proc = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "1", "--clear-groups",
                           "sh", "-c", f"head -c 1 {devlib.DEV}"],
                          capture_output=True, text=True, cwd="/", timeout=60)
    assert proc.returncode != 0 and "Permission denied" in proc.stderr


def test_open_device_denied_names_path_and_hint():
    from conftest import as_nobody   # tests/conftest.py: a forked child as uid 65534

    def try_open():
        try:
            pymmapdev.open_device(devlib.DEV)
        except PermissionError as e:
            return ("PermissionError", e.errno, e.filename, "mode=" in e.strerror)
        return "opened"
    assert as_nobody(try_open) == repr(("PermissionError", errno.EACCES, devlib.DEV, True))


def test_sysfs_counters_hidden_from_users_the_node_denies():
    """size says no more than the world-readable size parameter; maps and
    events say when and how often the device's users map it and wake each
    other (every WAKE counts): a timing side channel into a device whose
    node (0600 by default) denies them.  Those two are root's only."""
    base = f"{devlib.SYSFS}/mmapdev0"
    proc = _as_nobody(f"cat {base}/size")
    assert (proc.returncode, proc.stdout.strip()) == (0, str(devlib.DEFAULT_SIZE)), proc.stderr
    for attr in ("maps", "events"):
        proc = _as_nobody(f"cat {base}/{attr}")
        assert proc.returncode != 0 and "Permission denied" in proc.stderr, (attr, proc.stdout)
