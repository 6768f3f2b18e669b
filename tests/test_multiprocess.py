"""Writes through one process's mapping are seen by another process's mapping.

Three kinds of "other process": multiprocessing children started with spawn
(fresh interpreter, shares only the path) and fork (inherits the address
space), and unrelated python processes started with subprocess.
"""
import multiprocessing
import os

import pytest

import pymmapdev

from conftest import child_env, run_python

SIZE = 3 * 4096


def _child_write(path, offset, payload, word):
    with pymmapdev.open_file(path, create=False) as m:
        m.write(offset, payload)
        m.write_u64(offset + 1024, word)


def _child_read(path, offset, size, queue):
    with pymmapdev.open_file(path, create=False) as m:
        queue.put((m.read(offset, size), m.read_u64(offset + 1024)))


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_child_writes_parent_reads(shm_path, method):
    ctx = multiprocessing.get_context(method)
    with pymmapdev.open_file(shm_path, SIZE) as m:
        for offset in (0, 4096 + 8):  # first page and a later one
            payload = f"{method} child at {offset}".encode()
            child = ctx.Process(target=_child_write, args=(shm_path, offset, payload, 2**64 - 3))
            child.start()
            child.join(30)
            assert child.exitcode == 0
            assert m.read(offset, len(payload)) == payload
            assert m.read_u64(offset + 1024) == 2**64 - 3


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_parent_writes_child_reads(shm_path, method):
    ctx = multiprocessing.get_context(method)
    queue = ctx.Queue()
    with pymmapdev.open_file(shm_path, SIZE) as m:
        m.write(8000, b"parent says hi")
        m.write_u64(8000 + 1024, 0x1122334455667788)
        child = ctx.Process(target=_child_read, args=(shm_path, 8000, 14, queue))
        child.start()
        assert queue.get(timeout=30) == (b"parent says hi", 0x1122334455667788)
        child.join(30)
        assert child.exitcode == 0


def test_fork_inherits_the_same_mapping(shm_path):
    with pymmapdev.open_file(shm_path, SIZE) as m:
        pid = os.fork()
        if pid == 0:
            try:
                m.write(100, b"inherited")
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert status == 0 and m.read(100, 9) == b"inherited"


def test_unrelated_processes_share_only_the_path(shm_path):
    # Writer and reader are separate interpreters that only know the path.
    run_python("""
        import sys, pymmapdev
        with pymmapdev.open_file(sys.argv[1], 8192) as m:
            m[4096:4101] = b"hello"
            m.write_u32(4104, 42)
    """, shm_path)
    out = run_python("""
        import sys, pymmapdev
        with pymmapdev.open_file(sys.argv[1], create=False, readonly=True) as m:
            print(m[4096:4101].decode(), m.read_u32(4104))
    """, shm_path).stdout
    assert out.split() == ["hello", "42"]


def test_live_concurrent_processes_see_each_other(shm_path):
    # Both processes map the file at the same time: the parent writes a token,
    # the unrelated child echoes it back through the mapping.
    import subprocess, sys, time
    with pymmapdev.open_file(shm_path, 4096) as m:
        env = child_env()
        child = subprocess.Popen([sys.executable, "-c", """
import sys, time, pymmapdev
m = pymmapdev.open_file(sys.argv[1], create=False)
deadline = time.monotonic() + 30
while m[0] == 0 and time.monotonic() < deadline:
    time.sleep(0.001)
m[100:116] = m[1:17]   # echo the token
m[99] = 1
""", shm_path], env=env)
        m[1:17] = token = os.urandom(16)
        m[0] = 1
        deadline = time.monotonic() + 30
        while m[99] == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert child.wait(30) == 0
        assert m[100:116] == token
