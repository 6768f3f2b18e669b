"""SIGBUS becomes pymmapdev.MappingFault: the file is truncated under a live mapping."""
import errno
import os
import signal
import textwrap

import pytest

import pymmapdev

from conftest import run_python

PAGE = pymmapdev.PAGESIZE


@pytest.fixture
def truncated(shm_path):
    m = pymmapdev.open_file(shm_path, 4 * PAGE)
    m.write(0, b"first page survives")
    os.truncate(shm_path, PAGE)  # as another process might
    yield m
    m.close()


@pytest.mark.parametrize("access", [
    lambda m: m.read(2 * PAGE, 10),
    lambda m: m.read(PAGE - 5, 10),
    lambda m: m.write(3 * PAGE, b"lost"),
    lambda m: m[2 * PAGE],
    lambda m: m[2 * PAGE:2 * PAGE + 4],
    lambda m: m[2 * PAGE:2 * PAGE + 8:2],      # strided: a copy of its own
    lambda m: m.__setitem__(2 * PAGE, 1),
    lambda m: m.__setitem__(slice(2 * PAGE, 2 * PAGE + 2), b"ab"),
    lambda m: m.read_u8(2 * PAGE),
    lambda m: m.read_u64(2 * PAGE),
    lambda m: m.write_u32(2 * PAGE, 1),
    # synchronisation: atomics, wait/wake (the futex itself would say EFAULT;
    # the word is touched under the guard first), Slot
    lambda m: m.fetch_add_u32(2 * PAGE, 1),
    lambda m: m.load_u64(2 * PAGE),
    lambda m: m.compare_exchange_u64(2 * PAGE, 0, 1),
    lambda m: m.exchange_u32(2 * PAGE, 1),
    lambda m: m.wait(2 * PAGE, 0, timeout=0.1),
    lambda m: m.wait(2 * PAGE, 0, timeout=0.1, spin=0),
    lambda m: m.wake(2 * PAGE),
    lambda m: pymmapdev.Slot(m, 2 * PAGE, 64).publish(b"lost"),
    lambda m: pymmapdev.Slot(m, 2 * PAGE, 64).read(),
    # the kernel faults the pages in: it said OSError "Bad address", which
    # `except MappingFault` did not catch
    pytest.param(lambda m: m.madvise(pymmapdev.MADV_POPULATE_READ, 2 * PAGE, PAGE),
                 marks=pytest.mark.skipif(not hasattr(pymmapdev, "MADV_POPULATE_READ"),
                                          reason="no MADV_POPULATE_* in this build")),
    pytest.param(lambda m: m.madvise(pymmapdev.MADV_POPULATE_WRITE, 0, 4 * PAGE),
                 marks=pytest.mark.skipif(not hasattr(pymmapdev, "MADV_POPULATE_WRITE"),
                                          reason="no MADV_POPULATE_* in this build")),
])
def test_access_past_truncation_raises(truncated, access):
    with pytest.raises(pymmapdev.MappingFault) as info:
        access(truncated)
    assert isinstance(info.value, OSError) and info.value.errno == errno.EFAULT
    assert info.value.filename == truncated.path and "offset" in str(info.value)
    # The interpreter and the rest of the mapping are fine.
    assert truncated.read(0, 19) == b"first page survives"


def test_ndarray_creation_over_truncated_pages_raises(truncated):
    with pytest.raises(pymmapdev.MappingFault, match=f"offset {PAGE} "):
        truncated.ndarray("u1", offset=PAGE // 2)
    arr = truncated.ndarray("u1", shape=(PAGE,))   # still backed: fine
    assert bytes(arr[:19]) == b"first page survives"
    del arr


def test_ndarray_over_a_file_grown_to_the_largest_size_is_backed(shm_path):
    # A peer may extend the file (sparsely) to the largest off_t: rounding
    # that size up to whole pages must not overflow into "truncated".
    with pymmapdev.open_file(shm_path, PAGE) as m:
        os.truncate(shm_path, 2**63 - 1)
        arr = m.ndarray("u1")
        assert arr.shape == (PAGE,)
        del arr


def test_fault_offset_is_named(truncated):
    with pytest.raises(pymmapdev.MappingFault, match=f"offset {2 * PAGE + 8} "):
        truncated.read_u64(2 * PAGE + 8)


def test_fault_outside_the_package_still_signals(shm_path):
    # A third-party consumer of the buffer (memoryview here) is not guarded:
    # the process must still die of SIGBUS rather than hang or misbehave.
    proc = run_python("""
        import os, sys, pymmapdev
        m = pymmapdev.open_file(sys.argv[1], 4 * 4096)
        os.truncate(sys.argv[1], 4096)
        try:
            m.read(8192, 1)
        except pymmapdev.MappingFault:
            print("guarded ok", flush=True)
        memoryview(m)[8192]
        print("unreachable")
    """, shm_path, check=False)
    assert proc.stdout.strip() == "guarded ok"
    assert proc.returncode == -7  # SIGBUS


def test_previous_handler_is_chained(shm_path):
    # faulthandler installed its SIGBUS handler before ours: a fault outside
    # the package must still reach it (it prints the Python traceback).
    proc = run_python("""
        import faulthandler, os, sys
        faulthandler.enable()
        import pymmapdev
        m = pymmapdev.open_file(sys.argv[1], 4 * 4096)
        os.truncate(sys.argv[1], 4096)
        memoryview(m)[8192]
    """, shm_path, check=False)
    assert proc.returncode == -7
    assert "Fatal Python error: Bus error" in proc.stderr


def test_handler_rearmed_over_a_later_handler(shm_path):
    # faulthandler enabled after import replaces our handler; the next
    # Mapping re-installs ours on top (chaining to it).
    proc = run_python("""
        import faulthandler, os, sys
        import pymmapdev
        faulthandler.enable()
        m = pymmapdev.open_file(sys.argv[1], 4 * 4096)
        os.truncate(sys.argv[1], 4096)
        try:
            m.read_u32(8192)
        except pymmapdev.MappingFault:
            print("guarded ok", flush=True)
        memoryview(m)[8192]
    """, shm_path, check=False)
    assert proc.stdout.strip() == "guarded ok"
    assert proc.returncode == -7 and "Fatal Python error: Bus error" in proc.stderr


def test_ignored_sigbus_sent_by_kill_leaves_the_guard_armed(shm_path):
    # SIGBUS ignored by the program (our handler goes on top, chaining to
    # SIG_IGN): a SIGBUS sent by kill() is ignored as asked, and must not
    # take our handler down with it, or the next guarded access of a
    # truncated page kills the process instead of raising MappingFault.
    proc = run_python("""
        import os, signal, sys, pymmapdev
        signal.signal(signal.SIGBUS, signal.SIG_IGN)
        m = pymmapdev.open_file(sys.argv[1], 4 * 4096)
        os.kill(os.getpid(), signal.SIGBUS)
        print("survived the kill", flush=True)
        os.truncate(sys.argv[1], 4096)
        try:
            m.read_u32(8192)
        except pymmapdev.MappingFault:
            print("guarded ok", flush=True)
    """, shm_path, check=False)
    assert proc.stdout.split() == ["survived", "the", "kill", "guarded", "ok"], proc
    assert proc.returncode == 0, proc.stderr


# sigaction(SIGBUS) from C with SA_SIGINFO and SIG_IGN / SIG_DFL as the
# "handler" (a library restoring a saved action does this): the kernel
# ignores SA_SIGINFO for those two, and so must our chaining.
SIGACTION_SIGINFO = """
    import ctypes, os, signal, sys, pymmapdev

    class Sigaction(ctypes.Structure):      # glibc's struct sigaction
        _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * 16),
                    ("flags", ctypes.c_int), ("restorer", ctypes.c_void_p)]

    act = Sigaction(handler=int(sys.argv[2]), flags=4)      # SA_SIGINFO
    assert ctypes.CDLL(None).sigaction(signal.SIGBUS, ctypes.byref(act), None) == 0
    m = pymmapdev.open_file(sys.argv[1], 4 * 4096)          # re-arms on top of it
"""


def test_chaining_to_an_ignoring_siginfo_action_ignores_a_kill(shm_path):
    proc = run_python(SIGACTION_SIGINFO + """
    os.kill(os.getpid(), signal.SIGBUS)
    print("ignored", flush=True)
    """, shm_path, str(int(signal.SIG_IGN)), check=False)
    assert (proc.returncode, proc.stdout.strip()) == (0, "ignored"), proc.stderr


def test_chaining_to_a_default_siginfo_action_dies_of_sigbus(shm_path):
    proc = run_python(SIGACTION_SIGINFO + """
    os.truncate(sys.argv[1], 4096)
    memoryview(m)[8192]
    """, shm_path, str(int(signal.SIG_DFL)), check=False)
    assert proc.returncode == -signal.SIGBUS, proc.stderr


def test_a_sigbus_sent_during_a_guarded_copy_is_not_taken_for_a_fault():
    # Only the kernel reports faults (si_code > 0).  A SIGBUS queued by
    # another process (rt_tgsigqueueinfo: any same-user peer may send one,
    # with any si_addr) arriving while a copy ran under the guard, its
    # address inside the copy's span, was taken for a fault of that copy:
    # a spurious MappingFault, and the program's handler never ran.  (Sent
    # from another process: a thread of ours would need the GIL, which the
    # copy holds, so its signals would land between copies.)
    proc = run_python('''
        import ctypes, os, signal, subprocess, sys, threading, pymmapdev
        handled = []
        signal.signal(signal.SIGBUS, lambda *a: handled.append(1))
        size = 16 << 20
        dst, src = pymmapdev.anonymous(size), pymmapdev.anonymous(size)
        src[:] = bytes(size)
        probe = ctypes.c_char.from_buffer(dst)
        target = ctypes.addressof(probe) + size // 2        # inside the span
        del probe
        sender = subprocess.Popen([sys.executable, "-c", SENDER, str(os.getpid()),
                                   str(threading.get_native_id()), str(target)])
        faults, copies = [], 0
        while sender.poll() is None:
            copies += 1
            try:
                dst.write(0, memoryview(src))
            except pymmapdev.MappingFault as exc:
                faults.append(str(exc))
        print(sender.returncode, len(faults), len(handled) > 0, copies > 0, faults[:1])
    '''.replace("SENDER", repr(textwrap.dedent("""
        import ctypes, platform, signal, struct, sys, time
        pid, tid, target = map(int, sys.argv[1:])
        libc = ctypes.CDLL(None, use_errno=True)
        # siginfo: signo, errno, code (SI_QUEUE = -1), padding, then the
        # union, whose first word is si_addr for SIGBUS
        info = struct.pack("iiiiQ", signal.SIGBUS, 0, -1, 0, target)
        info = ctypes.create_string_buffer(info, 128)
        rt_tgsigqueueinfo = {"x86_64": 297, "aarch64": 240}[platform.machine()]
        for _ in range(100):
            if libc.syscall(rt_tgsigqueueinfo, pid, tid, signal.SIGBUS, info) != 0:
                sys.exit(f"rt_tgsigqueueinfo: errno {ctypes.get_errno()}")
            time.sleep(0.002)
    """))), timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split(maxsplit=4)[:4] == ["0", "0", "True", "True"], proc.stdout


def test_a_previous_handler_that_leaves_by_siglongjmp_is_chained_every_time(shm_path, tmp_path):
    # A fault that is not ours is handed to the handler we displaced.  One
    # that recovers by siglongjmp (another library's fault guard: here a
    # second copy of our own extension, loaded from another file) never
    # returns to us, and the flag we set around the call stayed set: from
    # then on every fault not ours was taken for a re-raise from inside
    # that handler and killed the process with SIGBUS instead of reaching
    # it.  The second of these faults died so.
    proc = run_python("""
        import importlib.util, os, shutil, sys, pymmapdev
        from pymmapdev import _core
        copy = os.path.join(sys.argv[2], os.path.basename(_core.__file__))
        shutil.copy(_core.__file__, copy)       # a new inode: dlopen loads it again
        spec = importlib.util.spec_from_file_location("_core", copy)
        other = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(other)
        assert other.Mapping is not _core.Mapping
        fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(fd, 4 * 4096)
        theirs = other.Mapping(fd, 4 * 4096)    # its handler installed
        ours = pymmapdev.open_file(sys.argv[1], 4 * 4096)   # ours on top of it
        os.truncate(sys.argv[1], 4096)
        for attempt in range(3):
            try:
                theirs.read(8192, 10)           # its guard, not ours: chained
            except OSError as exc:
                print(exc.errno, flush=True)
        ours.read_u8(0)
    """, shm_path, tmp_path, check=False)
    assert (proc.returncode, proc.stdout.split()) == (0, ["14"] * 3), proc.stderr


@pytest.mark.parametrize("enabled_before_import", [False, True],
                         ids=["enabled after import", "enabled before import"])
def test_faulthandler_disabled_again_leaves_the_guard_and_the_default_action(
        shm_path, enabled_before_import):
    # faulthandler.disable() puts back the SIGBUS action enable() found.
    # Enabled after import, that was ours, and we kept chaining to its
    # handler, now disabled: it returns at once, and a fault outside our
    # guards ran again forever (a hang, where the process dies of SIGBUS
    # without us).  Enabled before import, that was SIG_DFL: our handler
    # was gone, and the next guarded access of a truncated page killed the
    # process instead of raising MappingFault.
    proc = run_python(f"""
        import faulthandler, os, sys
        if {enabled_before_import}:
            faulthandler.enable()
        import pymmapdev
        if not {enabled_before_import}:
            faulthandler.enable()
        m = pymmapdev.open_file(sys.argv[1], 4 * 4096)
        faulthandler.disable()
        os.truncate(sys.argv[1], 4096)
        try:
            m.read(8192, 10)
        except pymmapdev.MappingFault:
            print("guarded ok", flush=True)
        memoryview(m)[8192]             # not ours: the default action, as without us
    """, shm_path, check=False, timeout=15)
    assert (proc.returncode, proc.stdout.strip()) == (-signal.SIGBUS, "guarded ok"), proc.stderr
