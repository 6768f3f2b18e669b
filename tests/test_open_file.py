"""open_file(): creation, sizing, and every documented refusal."""
import errno
import os
import stat
import subprocess
import sys

import pytest

import pymmapdev
from pymmapdev import _open

from conftest import as_nobody, child_env



def test_creates_and_sizes_new_file(shm_path):
    assert not os.path.exists(shm_path)
    with pymmapdev.open_file(shm_path, 10000, mode=0o640) as m:
        m[9999] = 1  # a fresh ftruncate-less mapping would die with SIGBUS here
        assert m.size == 10000
    st = os.stat(shm_path)
    assert st.st_size == 10000 and stat.S_IMODE(st.st_mode) == 0o640


def test_blocks_are_reserved(tmp_path):
    path = tmp_path / "reserved"
    with pymmapdev.open_file(path, 1 << 20):
        pass
    assert os.stat(path).st_blocks * 512 >= 1 << 20  # not a sparse file


def test_data_survives_close_and_reopen(shm_path):
    with pymmapdev.open_file(shm_path, 4096) as m:
        m[100:105] = b"kept!"
    with pymmapdev.open_file(shm_path) as m:
        assert m.size == 4096 and m[100:105] == b"kept!"


def test_flush_reaches_plain_read(tmp_path):
    path = tmp_path / "flushed"
    with pymmapdev.open_file(path, 8192) as m:
        m.write(5000, b"on disk")
        m.flush(5000, 7)
        fd = os.open(path, os.O_RDONLY)
        try:
            assert os.pread(fd, 7, 5000) == b"on disk"
        finally:
            os.close(fd)


def test_existing_longer_file_is_never_shrunk(shm_path):
    with open(shm_path, "wb") as f:
        f.write(b"x" * 20000)
    with pymmapdev.open_file(shm_path, 4096) as m:
        assert m.size == 4096 and m[:3] == b"xxx"
    assert os.path.getsize(shm_path) == 20000


def test_shorter_file_is_extended_keeping_data(shm_path):
    with open(shm_path, "wb") as f:
        f.write(b"head")
    with pymmapdev.open_file(shm_path, 8192) as m:
        assert m[:4] == b"head" and m[4:8192] == bytes(8188)
    assert os.path.getsize(shm_path) == 8192


def test_whole_file_when_size_is_none(shm_path):
    with open(shm_path, "wb") as f:
        f.write(b"abc")
    with pymmapdev.open_file(shm_path) as m:
        assert m.size == 3 and m[:] == b"abc"


@pytest.mark.parametrize("size", [0, -1])
def test_non_positive_size(shm_path, size):
    with pytest.raises(ValueError, match="size must be positive"):
        pymmapdev.open_file(shm_path, size)


def test_empty_file_without_size(shm_path):
    open(shm_path, "wb").close()
    with pytest.raises(ValueError, match="empty: pass size="):
        pymmapdev.open_file(shm_path)


def test_missing_file_without_size_is_file_not_found(shm_path):
    """A reader started before its writer: the file is not there yet.  It
    was a ValueError saying the file 'is empty', which it never was (it did
    not exist), and no FileNotFoundError to retry on."""
    with pytest.raises(FileNotFoundError, match="pass size= to create it") as info:
        pymmapdev.open_file(shm_path)
    assert info.value.errno == errno.ENOENT and info.value.filename == shm_path
    assert not os.path.exists(shm_path)


def test_readonly_beyond_file(shm_path):
    with open(shm_path, "wb") as f:
        f.write(b"abc")
    with pytest.raises(ValueError, match="read-only mapping cannot extend"):
        pymmapdev.open_file(shm_path, 4096, readonly=True)
    assert os.path.getsize(shm_path) == 3


def test_missing_file_with_create_false(tmp_path):
    path = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError) as info:
        pymmapdev.open_file(path, 4096, create=False)
    assert info.value.errno == errno.ENOENT and info.value.filename == path
    assert not os.path.exists(path)


def test_missing_file_readonly_is_not_created(tmp_path):
    with pytest.raises(FileNotFoundError):
        pymmapdev.open_file(tmp_path / "missing", readonly=True)


@pytest.mark.parametrize("readonly", [False, True])
def test_directory(tmp_path, readonly):
    with pytest.raises(IsADirectoryError) as info:
        pymmapdev.open_file(tmp_path, 4096 if not readonly else None, readonly=readonly)
    assert info.value.errno == errno.EISDIR and info.value.filename == str(tmp_path)
    # one error, not "During handling of the above exception (FileExistsError
    # of the O_EXCL try), another exception occurred": a traceback twice as
    # long, led by an error that is not the user's
    assert info.value.__context__ is None


def test_permission_denied(tmp_path):
    path = tmp_path / "locked"
    path.write_bytes(b"x" * 10)
    os.chmod(path, 0o600)
    os.chmod(tmp_path, 0o755)

    def try_open():
        try:
            pymmapdev.open_file(path)
        except PermissionError as e:
            return ("PermissionError", e.errno, e.filename)
        return "opened"
    if os.geteuid() == 0:
        assert as_nobody(try_open) == repr(("PermissionError", errno.EACCES, str(path)))
    else:
        os.chmod(path, 0o400)
        assert try_open()[0] == "PermissionError"


def test_a_file_it_may_only_read_points_to_readonly(shm_path):
    """The usual first PermissionError: a file the user may read but not
    write, opened without readonly=True.  The message says what to pass."""
    with open(shm_path, "wb") as f:
        f.write(b"x" * 4096)
    os.chmod(shm_path, 0o444)

    def try_open():
        try:
            pymmapdev.open_file(shm_path)
        except PermissionError as e:
            return (e.errno, e.filename, e.strerror)
        return "opened"
    result = as_nobody(try_open) if os.geteuid() == 0 else repr(try_open())
    assert result == repr((errno.EACCES, shm_path, "Permission denied: it may be read, not "
                           "written: pass readonly=True to map it read-only")), result

    def try_readonly():
        with pymmapdev.open_file(shm_path, readonly=True) as m:
            return m.read(0, 2)
    assert (as_nobody(try_readonly) if os.geteuid() == 0 else repr(try_readonly())) == "b'xx'"

def test_character_device_points_to_open_device():
    with pytest.raises(ValueError, match="open_device"):
        pymmapdev.open_file("/dev/zero", 4096, create=False)


@pytest.mark.parametrize("create", [True, False])
def test_an_absent_name_in_dev_is_a_missing_device_not_a_new_file(create):
    """/dev holds devices: open_file("/dev/mmapdev0") without the module
    loaded created a regular file there, which then hid the device node
    that udev makes when the module loads."""
    path = f"/dev/mmapdev-missing-{os.getpid()}"
    try:
        with pytest.raises(FileNotFoundError, match="open_device") as info:
            pymmapdev.open_file(path, 4096, create=create)
        assert info.value.filename == path
        assert not os.path.lexists(path)
    finally:
        if os.path.isfile(path):
            os.unlink(path)


def test_a_name_reaching_dev_through_a_symlink_and_dotdot_is_no_new_file(tmp_path):
    """Whether a path is in /dev was judged on os.path.abspath, which folds
    'link/..' away as text while the kernel follows link first: with link ->
    /dev/shm, 'link/../name' is /dev/name to the kernel and tmp_path/name to
    abspath, so a regular file was created in /dev."""
    (tmp_path / "link").symlink_to("/dev/shm")
    name = f"mmapdev-dotdot-{os.getpid()}"
    try:
        with pytest.raises(FileNotFoundError, match="open_device"):
            pymmapdev.open_file(tmp_path / "link" / ".." / name, 4096)
        assert not os.path.lexists(f"/dev/{name}")
    finally:
        if os.path.isfile(f"/dev/{name}"):
            os.unlink(f"/dev/{name}")


def test_files_in_dev_shm_are_still_created(tmp_path):
    """/dev/shm is a tmpfs of its own, for files: only /dev itself refuses."""
    path = f"/dev/shm/pymmapdev-created-{os.getpid()}"
    try:
        with pymmapdev.open_file(path, 4096) as m:
            assert m.size == 4096
        assert stat.S_ISREG(os.stat(path).st_mode)
    finally:
        os.unlink(path)


@pytest.fixture(params=["O_TMPFILE", "temp name"])
def creation(request, monkeypatch):
    """How open_file() makes a new file: unnamed (O_TMPFILE), or under a
    temporary name where the file system has no O_TMPFILE (here made so by
    refusing it as such file systems do)."""
    if request.param == "temp name":
        real_open = os.open

        def no_tmpfile(path, flags, *args, **kwargs):
            if flags & os.O_TMPFILE == os.O_TMPFILE:
                raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP), path)
            return real_open(path, flags, *args, **kwargs)
        monkeypatch.setattr(os, "open", no_tmpfile)
    return request.param


def test_full_tmpfs_fails_at_open_not_with_sigbus(tmp_path, creation):
    # A 1 MiB tmpfs: asking for 4 MiB must be ENOSPC now, never SIGBUS later.
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)]).returncode:
        pytest.fail("cannot mount a tmpfs to test ENOSPC (tests run as root)")
    try:
        with pytest.raises(OSError) as info:
            pymmapdev.open_file(mnt / "big", 4 << 20)
        assert info.value.errno == errno.ENOSPC and info.value.filename == str(mnt / "big")
        assert os.listdir(mnt) == []                # no file, no temporary name
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def resident_pages(m):
    """How many pages of mapping m are resident (mincore)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    pages = -(-m.size // pymmapdev.PAGESIZE)
    vec = (ctypes.c_ubyte * pages)()
    import numpy                    # only for the address of a (read-only) mapping
    anchor = numpy.frombuffer(m, numpy.uint8)      # an export; touches nothing
    try:
        if libc.mincore(ctypes.c_void_p(anchor.ctypes.data), ctypes.c_size_t(m.size), vec):
            raise OSError(ctypes.get_errno(), "mincore")
    finally:
        del anchor
    return sum(v & 1 for v in vec)


def test_populate_prefaults_the_pages(tmp_path):
    # A disk file: fallocate reserves blocks but caches no pages, so only
    # populate=True makes them resident before the first access.
    size = 256 * pymmapdev.PAGESIZE
    with pymmapdev.open_file(tmp_path / "cold", size) as m:
        assert resident_pages(m) < 16
    with pymmapdev.open_file(tmp_path / "warm", size, populate=True) as m:
        assert resident_pages(m) == 256
        m[-1] = 1
        assert m[-1] == 1
    with pymmapdev.open_file(tmp_path / "warm", readonly=True, populate=True) as m:
        assert resident_pages(m) == 256 and m[-1] == 1


def test_pathlike_and_bytes_paths(tmp_path):
    with pymmapdev.open_file(tmp_path / "p", 10) as m:
        assert m.path == str(tmp_path / "p")
    with pymmapdev.open_file(os.fsencode(tmp_path / "b"), 10) as m:
        assert m.path == str(tmp_path / "b")


def test_anonymous_shared_with_fork():
    m = pymmapdev.anonymous(4096)
    pid = os.fork()
    if pid == 0:
        m.write(0, b"from child")
        os._exit(0)
    os.waitpid(pid, 0)
    assert m.read(0, 10) == b"from child"
    m.close()


@pytest.mark.parametrize("version", [1, 2])
def test_a_parent_cgroups_memory_limit_is_refused_before_allocating(tmp_path, monkeypatch,
                                                                     version):
    """A cgroup's memory limit binds every cgroup below it (a systemd slice
    over its services, a container over its own sub-groups): only the
    process's own cgroup was read, "max" there, so a size its parent cannot
    hold was allocated until the cgroup's OOM killer struck.  A fake
    hierarchy (the real one belongs to whatever runs the tests): 8 MiB on
    the parent, none on the child."""
    from pymmapdev import _open
    root = tmp_path / "cgroup"
    base, name, none = (root / "memory", "memory.limit_in_bytes", "9223372036854771712") \
        if version == 1 else (root, "memory.max", "max")
    (base / "parent" / "child").mkdir(parents=True)
    (base / "parent" / name).write_text(f"{8 << 20}\n")
    (base / "parent" / "child" / name).write_text(f"{none}\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("4:memory:/parent/child\n" if version == 1 else "0::/parent/child\n")
    monkeypatch.setattr(_open, "CGROUP_ROOT", str(root))
    monkeypatch.setattr(_open, "PROC_SELF_CGROUP", str(proc))
    with pytest.raises(OSError, match="cannot back") as info:
        pymmapdev.anonymous(16 << 20).close()
    assert info.value.errno == errno.ENOMEM
    with pymmapdev.anonymous(1 << 20) as m:         # within the limit: allowed
        assert m.size == 1 << 20


@pytest.mark.parametrize("opener", ["open_file", "open_device"])
@pytest.mark.parametrize("path", ["/tmp/a\0b", b"/tmp/a\0b"])
def test_a_path_with_a_nul_byte_is_named_in_the_error(opener, path):
    """os.open's "embedded null byte" said neither which argument nor
    which path (a name built from user input, say)."""
    with pytest.raises(ValueError, match=r"NUL byte.*'/tmp/a\\x00b'"):
        getattr(pymmapdev, opener)(path, 4096)


@pytest.mark.parametrize("name", ["x" * 250, "\u00e9" * 125])
def test_an_anonymous_name_too_long_for_memfd_says_so(name):
    """memfd_create(2) takes at most 249 bytes of name: a longer one was a
    bare 'Invalid argument' that did not say which argument."""
    with pytest.raises(ValueError, match="249 bytes"):
        pymmapdev.anonymous(4096, name=name)
    with pymmapdev.anonymous(4096, name="x" * 249) as m:        # the longest allowed
        assert m.size == 4096


# ---- creation: a file appears at its path only once complete ----------------

RACING_OPENER = """
import sys, pymmapdev
m = pymmapdev.open_file(sys.argv[1], 4096)
m.write(0, b"theirs")
print("mapped", flush=True)
sys.stdin.readline()                # until the test's later opener has written
print(m.read(100, 5).decode(), flush=True)
"""


def _racing_opener(path):
    """Another process that open_file()s *path* and keeps it mapped; it
    has written b"theirs" at 0 when this returns."""
    proc = subprocess.Popen([sys.executable, "-c", RACING_OPENER, path], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=child_env())
    line = proc.stdout.readline()
    if line != "mapped\n":
        proc.kill()
        proc.wait()
        raise AssertionError(f"the racing opener did not map {path}: {line!r}")
    return proc


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"),
                                     KeyboardInterrupt()], ids=["ENOSPC", "interrupt"])
def test_a_failed_creation_does_not_unlink_a_file_a_concurrent_opener_maps(
        shm_path, monkeypatch, creation, failure):
    """open_file() created the file with O_EXCL, at its path at once, and
    unlinked it when anything failed afterwards (ENOSPC reserving it, a
    KeyboardInterrupt): another process that had opened it in between kept
    an orphan, and the next opener created a new file under the same
    path, so the two believed they shared memory and did not."""
    racing = []

    def reserve_then_fail(*args, **kwargs):
        racing.append(_racing_opener(shm_path))     # it opens while ours is being made
        raise failure
    monkeypatch.setattr(_open, "_reserve", reserve_then_fail)
    with pytest.raises(type(failure)):
        pymmapdev.open_file(shm_path, 4096)
    monkeypatch.undo()
    [proc] = racing
    try:
        with pymmapdev.open_file(shm_path, 4096) as m:
            assert m.read(0, 6) == b"theirs"        # the file the other process maps
            m.write(100, b"later")
        out, _ = proc.communicate("go\n", timeout=30)
        assert out == "later\n"                     # and it sees what we wrote
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_new_file_is_at_its_path_only_once_complete(shm_path, monkeypatch, creation):
    """While its blocks were being reserved, the new file was already at
    its path, empty or partly grown: an opener of size=None then found it
    "empty", and one on a full disk saw a file that was then removed."""
    seen = []
    reserve = _open._reserve

    def watched(*args, **kwargs):
        seen.append(os.path.lexists(shm_path))
        return reserve(*args, **kwargs)
    monkeypatch.setattr(_open, "_reserve", watched)
    with pymmapdev.open_file(shm_path, 4096, mode=0o640) as m:
        m[4095] = 1
    assert seen == [False]
    st = os.stat(shm_path)
    assert st.st_size == 4096 and stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_blocks * 512 >= 4096               # reserved


def test_a_creator_that_loses_the_race_maps_the_winners_file(tmp_path, monkeypatch, creation):
    """Another process creates the file while ours is being made: ours is
    dropped and theirs mapped, so the two share memory."""
    path = str(tmp_path / "f")
    racing = []
    reserve = _open._reserve

    def race(*args, **kwargs):
        if not racing:
            racing.append(_racing_opener(path))
        return reserve(*args, **kwargs)
    monkeypatch.setattr(_open, "_reserve", race)
    proc = None
    try:
        with pymmapdev.open_file(path, 4096) as m:
            [proc] = racing
            assert m.read(0, 6) == b"theirs"
            m.write(100, b"loser")
        out, _ = proc.communicate("go\n", timeout=30)
        assert out == "loser\n"
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
    assert os.listdir(tmp_path) == ["f"]            # no temporary name left


def _interrupt(monkeypatch, where):
    """Make open_file() raise KeyboardInterrupt at step *where* of making a
    new file."""
    if where == "reserving":
        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt
        monkeypatch.setattr(_open, "_reserve", interrupted)
        return
    link = os.link

    def interrupted_link(*args, **kwargs):
        if where == "after linking":
            link(*args, **kwargs)
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "link", interrupted_link)


@pytest.mark.parametrize("where", ["reserving", "linking"])
def test_a_creation_interrupted_before_linking_leaves_nothing(tmp_path, monkeypatch, creation,
                                                              where):
    """Nothing at the path and no temporary name in its directory."""
    directory = tmp_path / "d"
    directory.mkdir()
    _interrupt(monkeypatch, where)
    with pytest.raises(KeyboardInterrupt):
        pymmapdev.open_file(directory / "f", 4096)
    assert os.listdir(directory) == []


def test_a_creation_interrupted_after_linking_leaves_the_whole_file(tmp_path, monkeypatch,
                                                                    creation):
    """Linked, the file may be another process's already: it stays, whole,
    and only it (no temporary name)."""
    directory = tmp_path / "d"
    directory.mkdir()
    _interrupt(monkeypatch, "after linking")
    with pytest.raises(KeyboardInterrupt):
        pymmapdev.open_file(directory / "f", 4096, mode=0o640)
    assert os.listdir(directory) == ["f"]
    st = os.stat(directory / "f")
    assert st.st_size == 4096 and stat.S_IMODE(st.st_mode) == 0o640


def test_an_o_tmpfile_made_without_the_umask_is_not_used(tmp_path, monkeypatch):
    """Kernels before 6.0 made an O_TMPFILE with *mode* unmasked on file
    systems without POSIX ACLs: a 0o666 file under umask 0o022 would have
    been world-writable, where open(2) makes it 0o644."""
    real_open = os.open

    def unmasked_tmpfile(path, flags, mode=0o777, *args, **kwargs):
        fd = real_open(path, flags, mode, *args, **kwargs)
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            os.fchmod(fd, mode)                     # as those kernels left it
        return fd
    monkeypatch.setattr(os, "open", unmasked_tmpfile)
    old = os.umask(0o022)
    try:
        with pymmapdev.open_file(tmp_path / "f", 4096, mode=0o666):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "f").st_mode) == 0o644
    assert os.listdir(tmp_path) == ["f"]


def test_a_name_dangling_symlink_creates_its_target(tmp_path, creation):
    """As open(O_CREAT) does: a symlink of ours to a missing file makes
    that file (in the link's target directory), whole."""
    (tmp_path / "target-dir").mkdir()
    os.symlink("target-dir/file", tmp_path / "link")
    with pymmapdev.open_file(tmp_path / "link", 4096) as m:
        m[0] = 7
    assert os.path.getsize(tmp_path / "target-dir" / "file") == 4096
    assert os.listdir(tmp_path / "target-dir") == ["file"]


def test_a_path_made_and_removed_by_others_without_end_is_an_error_not_a_loop(
        tmp_path, monkeypatch, creation):
    """Each lost race opens the winner's file; one removed again before
    that is made anew: others doing so forever get a bounded error."""
    def always_taken(*args, **kwargs):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST))
    monkeypatch.setattr(os, "link", always_taken)
    path = str(tmp_path / "f")
    with pytest.raises(OSError, match="created and removed again") as info:
        pymmapdev.open_file(path, 4096)
    assert info.value.filename == path
    assert os.listdir(tmp_path) == []


def test_a_directory_it_may_not_write_is_named_in_the_error(tmp_path, creation):
    """The unnamed file is made in the directory: its refusal (EACCES) is
    the path's, as open(O_CREAT)'s was."""
    directory = tmp_path / "ro"
    directory.mkdir()
    os.chmod(directory, 0o555)
    os.chmod(tmp_path, 0o755)
    path = str(directory / "f")

    def try_create():
        try:
            pymmapdev.open_file(path, 4096)
        except PermissionError as e:
            return (e.errno, e.filename, e.strerror, e.__context__ is None)
        return "created"
    result = as_nobody(try_create) if os.geteuid() == 0 else repr(try_create())
    assert result == repr((errno.EACCES, path, os.strerror(errno.EACCES), True)), result
    assert os.listdir(directory) == []


def test_a_file_system_without_hard_links_still_gets_its_file(tmp_path, monkeypatch):
    """vfat and some FUSE file systems have neither O_TMPFILE nor link(2)
    (EPERM): the file made under a temporary name is renamed to its path,
    and no temporary name is left; an existing file is not replaced."""
    real_open = os.open

    def no_tmpfile(path, flags, *args, **kwargs):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP), path)
        return real_open(path, flags, *args, **kwargs)

    def no_link(*args, **kwargs):
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))
    monkeypatch.setattr(os, "open", no_tmpfile)
    monkeypatch.setattr(os, "link", no_link)
    directory = tmp_path / "d"
    directory.mkdir()
    with pymmapdev.open_file(directory / "f", 8192, mode=0o640) as m:
        m[0:5] = b"first"
    assert os.listdir(directory) == ["f"]
    st = os.stat(directory / "f")
    assert st.st_size == 8192 and stat.S_IMODE(st.st_mode) == 0o640
    with pymmapdev.open_file(directory / "f", 4096) as m:      # there: opened, not replaced
        assert m[0:5] == b"first"
    assert os.listdir(directory) == ["f"]


def _fifo(path):
    os.mkfifo(path)


def _socket(path):
    os.mknod(path, stat.S_IFSOCK | 0o600)     # what bind() leaves: open(2) is ENXIO


def _link_to(target):
    return lambda path: os.symlink(target, path)


def _file_of(size):
    def make(path):
        with open(path, "wb") as f:
            f.write(b"x" * size)
    return make


@pytest.mark.parametrize("make, call, words", [
    (lambda path: None, lambda path: pymmapdev.open_file(path, _open.MAX_OFFSET + 1),
     "past the largest file offset"),
    (_fifo, lambda path: pymmapdev.open_file(path, 4096), "is a FIFO and cannot be mapped"),
    (_socket, lambda path: pymmapdev.open_file(path, 4096), "is a socket and cannot be mapped"),
    (_socket, lambda path: pymmapdev.open_file(path, readonly=True),
     "is a socket and cannot be mapped"),
    (_socket, lambda path: pymmapdev.open_device(path, 4096), "is a socket and cannot be mapped"),
    (_link_to("/dev/null"), lambda path: pymmapdev.open_file(path, 4096),
     "is a character device: use open_device()"),
    (_file_of(0), lambda path: pymmapdev.open_file(path), "is empty"),
    (_file_of(10), lambda path: pymmapdev.open_file(path, 4096, readonly=True),
     "has 10 bytes, fewer than size=4096"),
    (_link_to("/dev/zero"), lambda path: pymmapdev.open_device(path, offset=-1),
     "offset -1 is negative"),
    (_file_of(10), lambda path: pymmapdev.open_device(path), "is a regular file, not a device"),
    (_link_to("/dev/zero"), lambda path: pymmapdev.open_device(path), "pass size="),
    (_link_to("/dev/zero"),
     lambda path: pymmapdev.open_device(path, 4096, offset=_open.MAX_OFFSET - 100),
     "past the largest file offset"),
], ids=["size too large", "fifo", "socket", "socket read-only", "socket to open_device",
        "character device", "empty", "short read-only",
        "negative offset", "regular file to open_device", "no size", "offset too large"])
def test_value_errors_name_a_path_escaped(tmp_path, make, call, words):
    """open_file's and open_device's ValueErrors put the path in their
    words as given: a newline in it broke the message onto two lines (a
    terminal escape went to the terminal), where their OSErrors, naming it
    as filename, show it as repr() does.  Now they show it so too."""
    path = str(tmp_path / "a\nb")
    make(path)
    with pytest.raises(ValueError) as refused:
        call(path)
    message = str(refused.value)
    assert words in message and repr(path) in message and "\n" not in message, message


@pytest.mark.parametrize("path, call", [
    ("/proc/self/comm", lambda path: pymmapdev.open_file(path)),
    ("/proc/self/comm", lambda path: pymmapdev.open_file(path, readonly=True)),
    ("/proc/self/comm", lambda path: pymmapdev.open_file(path, 100, readonly=True)),
    ("/proc/self/comm", lambda path: pymmapdev.open_file(path, 100, create=False)),
    ("/sys/kernel/uevent_seqnum", lambda path: pymmapdev.open_file(path, readonly=True)),
], ids=["proc", "proc read-only", "proc sized read-only", "proc sized", "sysfs"])
def test_files_of_proc_and_sys_are_refused_as_unmappable(path, call):
    # Their contents are made as they are read, and mmap() of them is
    # ENODEV.  A /proc file reports 0 bytes and was "empty: pass size=",
    # then, sized, "has 0 bytes, fewer than size=100: ... open it writable"
    # or (writable) "cannot reserve 100 bytes: Illegal seek": advice that
    # led nowhere.  A sysfs file (4096 bytes) was OSError "No such device".
    with pytest.raises(ValueError, match="cannot be mapped") as refused:
        call(path)
    assert repr(path) in str(refused.value)


def test_a_directory_named_like_proc_on_the_root_file_system_refuses_nothing(tmp_path,
                                                                            monkeypatch):
    # Without /proc mounted, /proc is a directory of the root file system:
    # its device is no sign of a /proc file, or every short file there
    # would be refused as one.  Here tmp_path plays the root and its
    # "self" the entry of an unmounted /proc.
    (tmp_path / "self").mkdir()
    monkeypatch.setattr(_open, "_MADE_AS_READ_MARKS", (str(tmp_path / "self"),))
    monkeypatch.setattr(_open, "_ROOT", str(tmp_path))
    with pymmapdev.open_file(tmp_path / "f", 4096) as m:
        assert m.size == 4096
    monkeypatch.setattr(_open, "_ROOT", "/proc/self")      # a root elsewhere: a mount
    with pytest.raises(ValueError, match="cannot be mapped"):
        pymmapdev.open_file(tmp_path / "g", 4096)


@pytest.mark.parametrize("existing", [False, True], ids=["new file", "existing file"])
def test_extending_without_fallocate_names_the_path_when_it_fails(tmp_path, monkeypatch,
                                                                  existing):
    # Where the file system cannot reserve blocks (EOPNOTSUPP), the file is
    # extended by ftruncate, whose OSError (EFBIG past the file size limit,
    # ENOSPC, EIO) names no file: an existing file's was raised as it was,
    # "[Errno 27] File too large" and no path.
    path = tmp_path / "f"
    if existing:
        path.write_bytes(b"x")

    def no_fallocate(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    def too_large(fd, length):
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
    monkeypatch.setattr(os, "posix_fallocate", no_fallocate)
    monkeypatch.setattr(os, "ftruncate", too_large)
    with pytest.raises(OSError) as refused:
        pymmapdev.open_file(path, 8192)
    assert refused.value.errno == errno.EFBIG and refused.value.filename == str(path)
    assert "8192 bytes" in refused.value.strerror
