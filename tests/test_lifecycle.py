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
