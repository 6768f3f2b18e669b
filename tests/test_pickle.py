"""Mapping, Lock and Slot pickle, so they reach children under every
multiprocessing start method and through every launcher: a file mapping
travels by path, an anonymous (memfd) mapping by its descriptor, a Lock or a
Slot by its mapping and offset."""
import concurrent.futures
import errno
import multiprocessing
import os
import pathlib
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
from multiprocessing.reduction import ForkingPickler

import pytest

import pymmapdev
from _pickle_workers import COUNTER, NOTES, SLOT, SLOT_CAPACITY, bump
from conftest import as_nobody, child_env

SIZE = 2 * 4096
PAGE_SIZE = pymmapdev.PAGESIZE
PARTIES = 2
ROUNDS = 300


# ---- in one process ---------------------------------------------------------

def test_file_mapping_round_trip(shm_path):
    with pymmapdev.open_file(shm_path, SIZE) as m:
        copy = pickle.loads(pickle.dumps(m))
        with copy:
            assert copy is not m
            assert (copy.kind, copy.path, copy.size, copy.offset, copy.readonly) == \
                ("file", shm_path, SIZE, 0, False)
            copy.write(4100, b"through the copy")
            assert m.read(4100, 16) == b"through the copy"


def test_readonly_stays_readonly(shm_path):
    pymmapdev.open_file(shm_path, SIZE).close()
    with pymmapdev.open_file(shm_path, readonly=True) as m:
        with pickle.loads(pickle.dumps(m)) as copy:
            assert copy.readonly
            with pytest.raises(TypeError):
                copy.write(0, b"x")


def test_relative_path_is_resolved_when_pickled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pymmapdev.open_file("rel", SIZE) as m:
        data = pickle.dumps(m)
        monkeypatch.chdir("/")
        with pickle.loads(data) as copy:
            assert copy.path == str(tmp_path / "rel")
            m.write(0, b"same file")
            assert copy.read(0, 9) == b"same file"


@pytest.mark.parametrize("made", ["created", "existing"])
@pytest.mark.parametrize("there", ["nothing", "another file"])
def test_relative_path_after_a_chdir_names_the_mapped_file(tmp_path, monkeypatch, there, made):
    """A process that changed directory after opening by a relative path
    (a daemon's chdir("/")) sent a path naming no file, or another file of
    that name, and the child failed; the pickle names the mapped file
    (one open_file() created, whose /proc/self/fd name is "#<inode>
    (deleted)", or one that was there)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    if made == "existing":
        with open("rel", "wb") as f:
            f.truncate(SIZE)
    with pymmapdev.open_file("rel", SIZE) as m:
        monkeypatch.chdir(tmp_path / "b")
        if there == "another file":
            pymmapdev.open_file("rel", SIZE).close()
        with pickle.loads(pickle.dumps(m)) as copy:
            assert copy.path == str(tmp_path / "a" / "rel")
            m.write(0, b"same file")
            assert copy.read(0, 9) == b"same file"


def test_relative_path_through_a_symlinked_directory_and_dotdot(tmp_path, monkeypatch):
    """os.path.abspath folds "sub/.." away as text, but the kernel resolves
    ".." after following sub: with sub a symlink to another directory,
    "sub/../data" names a file beside that directory's target, and the
    child was sent a path naming another (here no) file."""
    (tmp_path / "other" / "inner").mkdir(parents=True)
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "sub").symlink_to(tmp_path / "other" / "inner")
    monkeypatch.chdir(tmp_path / "here")
    with pymmapdev.open_file("sub/../data", SIZE) as m:
        m.write(0, b"beside inner")
        data = pickle.dumps(m)
        monkeypatch.chdir("/")
        with pickle.loads(data) as copy:
            assert copy.read(0, 12) == b"beside inner"
    assert (tmp_path / "other" / "data").exists()


def test_removed_file(shm_path):
    with pymmapdev.open_file(shm_path, SIZE) as m:
        data = pickle.dumps(m)
    os.unlink(shm_path)
    with pytest.raises(FileNotFoundError) as exc:
        pickle.loads(data)
    assert exc.value.filename == shm_path


def test_replaced_file_is_refused(shm_path):
    """Sharing with a new file of the same name would share nothing."""
    with pymmapdev.open_file(shm_path, SIZE) as m:
        data = pickle.dumps(m)
    os.unlink(shm_path)
    pymmapdev.open_file(shm_path, SIZE).close()
    with pytest.raises(OSError) as exc:
        pickle.loads(data)
    assert exc.value.errno == errno.ESTALE and exc.value.filename == shm_path


@pytest.fixture
def disk_dir():
    """A directory beside the tests, on a disk file system: tmp_path is a
    tmpfs in the sid chroot's session (tests/debian/chroot.sh), and tmpfs
    never gives an inode number out twice."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = tempfile.mkdtemp(prefix="pymmapdev-inode-", dir=here)
    yield pathlib.Path(path)
    shutil.rmtree(path)


def test_replaced_file_with_the_same_inode_number_is_refused(disk_dir):
    """ext4 (and most disk file systems) gives a freed inode number to the
    next file created: (st_dev, st_ino) alone took the new file for the
    pickled one, and the copy silently mapped bytes nobody shares."""
    tmp_path = disk_dir
    path = tmp_path / "reused"
    for _ in range(100):
        with pymmapdev.open_file(path, SIZE) as m:
            data = pickle.dumps(m)
            ino = os.fstat(m.fileno()).st_ino
        path.unlink()
        path.write_bytes(b"new file" * (SIZE // 8))
        if os.stat(path).st_ino == ino:
            break
        path.unlink()
    else:
        pytest.fail(f"the file system of {tmp_path} never reused an inode number in 100 tries: "
                    f"this test needs one that does (ext4, as CI's)")
    with pytest.raises(OSError) as exc:
        pickle.loads(data).close()
    assert exc.value.errno == errno.ESTALE and exc.value.filename == str(path)


def test_path_replaced_by_a_fifo_is_refused_not_waited_on(shm_path):
    """A read-only mapping is reopened O_RDONLY, which on a FIFO waits in
    open(2) for a writer that never comes: the child hung unpickling."""
    pymmapdev.open_file(shm_path, SIZE).close()
    with pymmapdev.open_file(shm_path, readonly=True) as m:
        data = pickle.dumps(m)
    os.unlink(shm_path)
    os.mkfifo(shm_path)
    script = (f"import pickle, pymmapdev\n"
              f"try:\n    pickle.loads({data!r})\n"
              f"except OSError as exc:\n    print(exc.errno)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=30)
    assert proc.stdout.strip() == str(errno.ESTALE), proc.stderr


# A child in a session of its own (no controlling terminal) unpickles; it
# prints the errno it got and whether it then had a controlling terminal,
# which opening a tty without O_NOCTTY gives a session leader.
_UNPICKLE_IN_NEW_SESSION = """
import errno, os, pickle, sys
import pymmapdev
try:
    pickle.loads(bytes.fromhex(sys.argv[1]))
    got = "mapped"
except OSError as exc:
    got = errno.errorcode[exc.errno] + " " + str(exc.filename)
try:
    os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    tty = "tty"
except OSError:
    tty = "no tty"
print(got, tty, sep=", ")
"""


def _unpickle_in_new_session(data):
    proc = subprocess.run([sys.executable, "-c", _UNPICKLE_IN_NEW_SESSION, data.hex()],
                          capture_output=True, text=True, timeout=60, env=child_env(),
                          start_new_session=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture
def pty_path():
    master, slave = os.openpty()
    yield os.ttyname(slave)
    os.close(master)
    os.close(slave)


@pytest.mark.parametrize("kind", ["file", "device"])
def test_path_replaced_by_a_tty_is_not_opened(tmp_path, pty_path, kind):
    """The path was opened before its identity was checked: a symlink to a
    device put in its place reached the driver's open (here a tty, which
    became the child's controlling terminal; a watchdog would have started)."""
    target = tmp_path / "data"
    link = tmp_path / "link"
    if kind == "file":
        pymmapdev.open_file(target, SIZE).close()
        link.symlink_to(target)
        with pymmapdev.open_file(link) as m:
            data = pickle.dumps(m)
    else:
        link.symlink_to("/dev/zero")
        with pymmapdev.open_device(link, SIZE) as m:
            data = pickle.dumps(m)
    assert _unpickle_in_new_session(data) == "mapped, no tty"   # the same: reopened
    link.unlink()
    link.symlink_to(pty_path)
    assert _unpickle_in_new_session(data) == f"ESTALE {link}, no tty"


def test_device_replaced_by_another_device_is_refused(tmp_path):
    """A device pickled with no identity: whatever device now had its path
    was mapped (or refused with that driver's own error)."""
    link = tmp_path / "dev"
    link.symlink_to("/dev/zero")
    with pymmapdev.open_device(link, PAGE_SIZE) as m:
        data = pickle.dumps(m)
    link.unlink()
    link.symlink_to("/dev/null")
    with pytest.raises(OSError) as exc:
        pickle.loads(data)
    assert exc.value.errno == errno.ESTALE and exc.value.filename == str(link)


def test_reopened_by_a_process_that_may_not_open_it(shm_path):
    """Another user's child: the open's own error, naming the path."""
    with pymmapdev.open_file(shm_path, SIZE) as m:     # mode 0600, root's
        data = pickle.dumps(m)

    def attempt():
        try:
            pickle.loads(data)
        except PermissionError as exc:
            return exc.filename
        return "mapped"
    assert as_nobody(attempt) == repr(shm_path)


def test_truncated_file_is_refused(shm_path):
    with pymmapdev.open_file(shm_path, SIZE) as m:
        data = pickle.dumps(m)
    os.truncate(shm_path, 4096)
    with pytest.raises(ValueError, match=f"'{shm_path}' has 4096 bytes, fewer than offset 0 "
                                         f"\\+ size {SIZE}"):
        pickle.loads(data)


def test_closed_mapping_is_refused(shm_path):
    m = pymmapdev.open_file(shm_path, SIZE)
    m.close()
    with pytest.raises(ValueError, match="closed"):
        pickle.dumps(m)


def test_anonymous_mapping_only_through_multiprocessing():
    with pymmapdev.anonymous(SIZE) as m:
        with pytest.raises(TypeError, match="multiprocessing"):
            pickle.dumps(m)
        # multiprocessing's pickler hands the descriptor over a UNIX socket
        # (here to ourselves): the copy maps the same memfd.
        with pickle.loads(ForkingPickler.dumps(m)) as copy:
            assert (copy.kind, copy.path, copy.size, copy.offset) == ("file", None, SIZE, 0)
            copy.write_u64(16, 0xC0FFEE)
            assert m.read_u64(16) == 0xC0FFEE


def test_lock_round_trip_is_the_same_lock(shm_path):
    with pymmapdev.open_file(shm_path, SIZE) as m:
        lock = pymmapdev.Lock(m, 64)
        copy = pickle.loads(pickle.dumps(lock))
        assert type(copy) is type(lock) and copy.offset == 64
        assert copy.mapping is not m and copy.mapping.path == shm_path
        result = []
        with lock:       # another thread cannot take the copy meanwhile
            worker = threading.Thread(target=lambda: result.append(copy.acquire(timeout=0.05)))
            worker.start()
            worker.join()
        assert result == [False]
        assert copy.acquire(timeout=5)
        copy.release()
        copy.mapping.close()


def test_slot_round_trip_reads_the_same_slot(shm_path):
    with pymmapdev.open_file(shm_path, SIZE) as m:
        slot = pymmapdev.Slot(m, 128, 32)
        slot.publish(b"before")
        copy = pickle.loads(pickle.dumps(slot))
        assert type(copy) is type(slot)
        assert (copy.offset, copy.capacity) == (128, 32)
        assert copy.read() == (1, b"before")
        slot.publish(b"after")
        assert copy.read() == (2, b"after")
        copy.mapping.close()


def test_objects_sharing_a_mapping_share_it_after_pickling(shm_path):
    with pymmapdev.open_file(shm_path, SIZE) as m:
        lock, slot = pickle.loads(pickle.dumps((pymmapdev.Lock(m, 0), pymmapdev.Slot(m, 64, 8))))
        assert lock.mapping is slot.mapping
        lock.mapping.close()


# ---- to children: every start method, every launcher -------------------------

def _launch_processes(ctx, tasks):
    procs = [ctx.Process(target=bump, args=task) for task in tasks]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [proc.exitcode for proc in procs] == [0] * len(procs)
    return [proc.pid for proc in procs]


def _launch_pool(ctx, tasks):
    with ctx.Pool(PARTIES) as pool:
        return pool.starmap(bump, tasks, chunksize=1)


def _launch_executor(ctx, tasks):
    with concurrent.futures.ProcessPoolExecutor(PARTIES, mp_context=ctx) as executor:
        futures = [executor.submit(bump, *task) for task in tasks]
        return [future.result(timeout=120) for future in futures]


LAUNCHERS = {"Process": _launch_processes, "Pool": _launch_pool,
             "ProcessPoolExecutor": _launch_executor}


@pytest.mark.parametrize("launcher", LAUNCHERS)
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_children_write_and_exclude(shm_path, method, launcher):
    """PARTIES children, running at once, get an anonymous mapping, a file
    mapping, a Lock in the file and a Slot in the anonymous memory; each
    writes a note, bumps a counter under the lock and publishes to the slot;
    the parent sees every write, no lost update, and every publish."""
    ctx = multiprocessing.get_context(method)
    with pymmapdev.anonymous(SIZE) as anon, pymmapdev.open_file(shm_path, SIZE) as filem:
        lock = pymmapdev.Lock(filem, 0)
        slot = pymmapdev.Slot(anon, SLOT, SLOT_CAPACITY)
        tasks = [(anon, filem, lock, slot, worker, PARTIES, ROUNDS) for worker in range(PARTIES)]
        pids = LAUNCHERS[launcher](ctx, tasks)
        assert len(set(pids)) == PARTIES and os.getpid() not in pids
        for worker, pid in enumerate(pids):
            expected = f"worker {worker} pid {pid}".encode()
            assert filem.read(NOTES + 64 * worker, len(expected)) == expected
        assert anon.read_u64(COUNTER) == PARTIES * ROUNDS
        version, value = slot.read()
        assert version == PARTIES and value in {b"worker 0", b"worker 1"}
        del lock, slot


def test_truncated_file_is_named_escaped(tmp_path):
    """The refusal put the path in its words as given: a newline in it
    broke the message onto two lines (open_file's errors show it as repr()
    does)."""
    path = str(tmp_path / "a\nb")
    with pymmapdev.open_file(path, SIZE) as m:
        data = pickle.dumps(m)
    os.truncate(path, 4096)
    with pytest.raises(ValueError) as refused:
        pickle.loads(data)
    message = str(refused.value)
    assert repr(path) in message and "\n" not in message, message
