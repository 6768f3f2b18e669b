"""Helpers for the device suite: the uapi header mirrored with ctypes, raw
syscalls whose errno the tests check exactly, and module load/unload.

The structs and ioctl numbers are those of kmod/uapi/mmapdev.h;
test_uapi.py checks this mirror against the header text.
"""
import ctypes
import ctypes.util
import errno
import os
import platform
import re
import select
import signal
import subprocess
import sys
import textwrap
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
DEV = "/dev/mmapdev0"
SYSFS = "/sys/class/mmapdev"
PAGE = os.sysconf("SC_PAGE_SIZE")
DEFAULT_SIZE = 1 << 20

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.mremap.restype = ctypes.c_void_p
libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
libc.syscall.restype = ctypes.c_long
MAP_FAILED = ctypes.c_void_p(-1).value

# ---- the uapi header, mirrored ----------------------------------------------

MAGIC = 0xB7
ABI_VERSION = 1
WAIT_ABSTIME = 1 << 0
HEARTBEAT_WAIT_OFFSET = 0
HEARTBEAT_WRITE_SEQ_OFFSET = 4
HEARTBEAT_TEXT_OFFSET = 16


class Info(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint64), ("events", ctypes.c_uint64),
                ("page_size", ctypes.c_uint32), ("abi_version", ctypes.c_uint32),
                ("index", ctypes.c_uint32), ("heartbeat_ms", ctypes.c_uint32)]


class Wait(ctypes.Structure):
    _fields_ = [("offset", ctypes.c_uint64), ("expected", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("timeout_ns", ctypes.c_int64)]


class Wake(ctypes.Structure):
    _fields_ = [("offset", ctypes.c_uint64), ("count", ctypes.c_uint32),
                ("flags", ctypes.c_uint32)]


class Heartbeat(ctypes.Structure):
    _fields_ = [("seq", ctypes.c_uint32), ("write_seq", ctypes.c_uint32),
                ("counter", ctypes.c_uint64), ("text", ctypes.c_char * 48)]


def _ioc(direction, nr, size):
    return (direction << 30) | (size << 16) | (MAGIC << 8) | nr


IOC_GET_INFO = _ioc(2, 0x00, ctypes.sizeof(Info))   # _IOR
IOC_WAIT = _ioc(1, 0x01, ctypes.sizeof(Wait))       # _IOW
IOC_WAKE = _ioc(1, 0x02, ctypes.sizeof(Wake))       # _IOW


def ioctl(fd, request, arg):
    """ioctl(2) with the exact errno: *arg* is a ctypes object, an int
    (passed as the pointer value) or None."""
    if arg is None or isinstance(arg, int):
        ptr = arg
    else:
        ptr = ctypes.addressof(arg)
    rc = libc.ioctl(fd, request, ptr)
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return rc


def get_info(fd):
    info = Info()
    ioctl(fd, IOC_GET_INFO, info)
    return info


def wait(fd, offset, expected, timeout_ns=-1, flags=0):
    """MMAPDEV_IOC_WAIT; returns 0 or raises OSError (ETIMEDOUT, EINTR...)."""
    return ioctl(fd, IOC_WAIT, Wait(offset, expected, flags, timeout_ns))


def wake(fd, offset, count=1, flags=0):
    return ioctl(fd, IOC_WAKE, Wake(offset, count, flags))


# ---- raw memory syscalls ----------------------------------------------------

def raw_mmap(fd, length, prot, flags, offset=0):
    """mmap(2) returning the address or raising OSError with its errno."""
    addr = libc.mmap(None, length, prot, flags, fd, offset)
    if addr == MAP_FAILED or addr is None:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return addr


def raw_munmap(addr, length):
    if libc.munmap(addr, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def raw_mremap(addr, old, new, flags=0):
    res = libc.mremap(addr, old, new, flags)
    if res == MAP_FAILED or res is None:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return res


def raw_mprotect(addr, length, prot):
    if libc.mprotect(addr, length, prot) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


# ---- sysfs ------------------------------------------------------------------

def sysfs(attr, index=0):
    with open(f"{SYSFS}/mmapdev{index}/{attr}") as f:
        return int(f.read())


# ---- loading and unloading the module --------------------------------------

_SYSCALLS = {"x86_64": (313, 176), "aarch64": (273, 106)}   # finit_module, delete_module
# ioctl's number in /proc/PID/syscall; on x86_64 also i386's 54, which a
# 32-bit (compat) caller shows (test_compat.py).  x86_64's own 54,
# setsockopt(), never has IOC_WAIT as its second argument.
_IOCTL_NRS = {"x86_64": ("16", "54"), "aarch64": ("29",)}.get(platform.machine(), ())


def ko_path():
    ko = os.environ.get("MMAPDEV_KO")
    if not ko or not os.path.exists(ko):
        raise RuntimeError(f"MMAPDEV_KO must name the built mmapdev.ko (got {ko!r}); "
                           f"run the suite through tests/vm/run.sh")
    return ko


def loaded():
    return os.path.isdir("/sys/module/mmapdev")


def load(params=""):
    """finit_module(2) with *params* ("size=8192 devices=3"); OSError on failure."""
    nr = _SYSCALLS[platform.machine()][0]
    fd = os.open(ko_path(), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.syscall(ctypes.c_long(nr), fd, params.encode(), 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"finit_module({params!r}): {os.strerror(err)}")
    finally:
        os.close(fd)


def unload():
    """delete_module(2) without waiting; OSError (EAGAIN while in use)."""
    nr = _SYSCALLS[platform.machine()][1]
    if libc.syscall(ctypes.c_long(nr), b"mmapdev", os.O_NONBLOCK) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"delete_module(mmapdev): {os.strerror(err)}")


def reload(params=""):
    if loaded():
        unload()
    load(params)


# ---- other processes --------------------------------------------------------

def child_env():
    path = [p for p in (os.environ.get("PYTHONPATH"), REPO, HERE) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path))


def lines_then_ctrl_c(argv, count):
    """Start *argv*, read *count* lines of its output, then Ctrl-C it.

    Returns (lines, returncode, stderr): a watcher must print and then exit
    cleanly on SIGINT."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env())
    try:
        lines = [proc.stdout.readline() for _ in range(count)]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    return lines, proc.returncode, err


# -S: no site.  The children need only the package (on PYTHONPATH) and the
# standard library, and under TCG site's .pth processing costs seconds per
# interpreter start.
PYTHON = [sys.executable, "-S"]


def python(code, *args, **kw):
    """Popen of an unrelated python running *code* (devlib importable)."""
    return subprocess.Popen(PYTHON + ["-c", textwrap.dedent(code), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env(), **kw)


def run_python(code, *args, timeout=60):
    proc = python(code, *args)
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"child failed ({proc.returncode}):\n{out}\n{err}")
    return out


def fork_call(func, *args):
    """Runs func(*args) in a forked child; its exit status is 0 on success,
    the errno of an OSError, or 255 for anything else.  Cheap under TCG,
    where each new interpreter costs seconds."""
    pid = os.fork()
    if pid == 0:
        code = 255
        try:
            func(*args)
            code = 0
        except OSError as exc:
            code = exc.errno or 255
        finally:
            os._exit(code)
    return pid


def reap(pid, timeout=30.0):
    """Exit status of a fork_call child (killed after *timeout*)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError(f"child {pid} did not finish in {timeout}s")
        time.sleep(0.01)


def kill_unreaped(pids):
    """Kills and reaps the fork_call children a failed test left behind
    (a test's finally: the reaped ones are gone from /proc)."""
    for pid in pids:
        if _state(pid) != "X":
            os.kill(pid, 9)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def _state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return "X"


def wait_in_wait(pid, timeout=60.0):
    """Returns once *pid* sleeps in ioctl(MMAPDEV_IOC_WAIT); fails if it
    exits first (its wait returned before anyone woke it)."""
    deadline = time.monotonic() + timeout
    while not blocked_in_wait(pid):
        if _state(pid) in ("Z", "X"):
            raise AssertionError(f"pid {pid} exited before sleeping in WAIT")
        if time.monotonic() > deadline:
            raise AssertionError(f"pid {pid} not in WAIT after {timeout}s")
        time.sleep(0.01)


def blocked_in_wait(pid):
    """True once some thread of *pid* sleeps in ioctl(MMAPDEV_IOC_WAIT)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return False
    return any(thread_blocked_in_wait(pid, tid) for tid in tids)


def thread_blocked_in_wait(pid, tid):
    """True while thread *tid* of *pid* sleeps in ioctl(MMAPDEV_IOC_WAIT)."""
    try:
        with open(f"/proc/{pid}/task/{tid}/syscall") as f:
            fields = f.read().split()
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    # "16 0x3 0x4018b701 ...": the syscall number, then its arguments
    return (len(fields) > 2 and fields[0] in _IOCTL_NRS and int(fields[2], 16) == IOC_WAIT
            and state == "S")


def stop_and_continue(pid):
    """SIGSTOP, then SIGCONT once *pid* is stopped: a sleeping system call
    has returned (to be restarted or to fail with EINTR) and no handler ran.
    SIGCONT sent earlier would discard a SIGSTOP still pending."""
    os.kill(pid, signal.SIGSTOP)
    wait_until(lambda: _state(pid) == "T", what=f"pid {pid} stopped")
    os.kill(pid, signal.SIGCONT)


def wait_until(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def readable(fd, timeout=0.0):
    r, _, _ = select.select([fd], [], [], timeout)
    return bool(r)


def header_text(path=os.path.join(REPO, "kmod", "uapi", "mmapdev.h")):
    with open(path) as f:
        return f.read()


def define(name, text=None):
    m = re.search(rf"#define\s+{name}\s+(\S+)", text or header_text())
    return m.group(1) if m else None


def errno_name(err):
    return errno.errorcode.get(err, str(err))
