"""What the interpreter does around pymmapdev objects: subinterpreters,
shutdown.  Each case runs in a child python: a failure there is an abort
("Fatal Python error") or a hang, which the child's timeout turns into a
failed test instead of a dead or stuck suite."""
import sys

import pytest

from conftest import run_python

# A subinterpreter sharing the main GIL: the only kind that may import
# pymmapdev._core (it does not declare Py_MOD_PER_INTERPRETER_GIL_SUPPORTED).
LEGACY_SUBINTERPRETER = """
    import sys
    try:
        import _interpreters as interpreters            # 3.13
        iid = interpreters.create(interpreters.new_config("legacy"))
    except ImportError:
        import _xxsubinterpreters as interpreters       # 3.12
        iid = interpreters.create(isolated=False)
"""

# 3.10/3.11's _xxsubinterpreters.destroy() refuses an interpreter with a
# second thread before Py_EndInterpreter() runs its atexit handlers; from
# 3.12 destroy() is Py_EndInterpreter(), which runs them and then aborts
# the process if any thread of the interpreter is still alive.
needs_atexit_before_end = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="destroy() runs no atexit handlers before 3.12")

FINISHED_WAIT = """
import asyncio, pymmapdev
m = pymmapdev.anonymous(4096)
print(m.waker, asyncio.run(m.wait_async(0, 0, timeout=0.01)))
"""

# a wait left pending in a loop that never runs again
PENDING_WAIT = """
import asyncio, pymmapdev
m = pymmapdev.anonymous(4096)
loop = asyncio.new_event_loop()
task = loop.create_task(m.wait_async(0, 0))
loop.run_until_complete(asyncio.sleep(0.05))
print(m.waker, task.done())
"""


@needs_atexit_before_end
@pytest.mark.parametrize("code", [FINISHED_WAIT, PENDING_WAIT], ids=["finished", "pending"])
def test_a_subinterpreter_that_awaited_a_futex_ends(code):
    """wait_async on a futex sleeps in a pool thread that lingers after the
    wait: alive when the interpreter ends, it made Py_EndInterpreter()
    abort the process ("not the last thread")."""
    proc = run_python(LEGACY_SUBINTERPRETER + f"""
    interpreters.run_string(iid, {code!r})
    interpreters.destroy(iid)
    print("destroyed")
""", check=False)
    assert "Fatal Python error" not in proc.stderr
    assert (proc.returncode, proc.stdout.split()) == (0, ["futex", "False", "destroyed"]), \
        proc.stderr


needs_subinterpreters = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="no per-interpreter GIL before 3.12")

ISOLATED_SUBINTERPRETER = """
    try:
        import _interpreters as interpreters            # 3.13
    except ImportError:
        import _xxsubinterpreters as interpreters       # 3.12
    iid = interpreters.create()                         # its own GIL
"""


@needs_subinterpreters
def test_an_interpreter_with_its_own_gil_cannot_import_the_core():
    """The core keeps process-wide state (the SIGBUS handler, the fork
    handler, the fork generation) that only one GIL may guard: refused
    with a clean ImportError, and the main interpreter goes on."""
    proc = run_python(ISOLATED_SUBINTERPRETER + """
    try:
        failed = interpreters.run_string(iid, "import pymmapdev")
        text = failed.formatted if failed else ""   # 3.13 returns the error
    except interpreters.RunFailedError as exc:      # 3.12 raises it
        text = str(exc)
    print("ImportError" in text.split(":")[0] and "pymmapdev._core" in text)
    interpreters.destroy(iid)
    import pymmapdev
    with pymmapdev.anonymous(4096) as m:
        m.write_u32(0, 7)
        print(m.read_u32(0))
""", check=False)
    assert (proc.returncode, proc.stdout.split()) == (0, ["True", "7"]), proc.stderr


@needs_subinterpreters
def test_a_fault_in_a_subinterpreter_is_its_own_mapping_fault(shm_path):
    """Per-interpreter module state: a SIGBUS on a truncated file in a
    subinterpreter raises that interpreter's MappingFault, and the main
    interpreter's still works after the subinterpreter ended."""
    code = f"""
import os, pymmapdev
m = pymmapdev.open_file({shm_path!r}, 8192)
os.truncate({shm_path!r}, 0)
try:
    m.read_u32(4096)
except pymmapdev.MappingFault as exc:
    print(type(exc).__module__, type(exc).__name__)
"""
    proc = run_python(LEGACY_SUBINTERPRETER + f"""
    import os, pymmapdev
    interpreters.run_string(iid, {code!r})
    interpreters.destroy(iid)
    m = pymmapdev.open_file({shm_path!r}, 8192)
    os.truncate({shm_path!r}, 0)
    try:
        m.read_u32(4096)
    except pymmapdev.MappingFault:
        print("main", "MappingFault")
""", check=False)
    assert (proc.returncode, proc.stdout.split()) == (
        0, ["pymmapdev", "MappingFault", "main", "MappingFault"]), proc.stderr
