"""Keep the SIGBUS guard armed when Python code installs a SIGBUS handler.

The package turns a SIGBUS on its own accesses (a page of a truncated file)
into :class:`MappingFault` with a process-wide handler that chains to the
previous one.  A handler installed *after* it takes SIGBUS away: Python's
own ``signal.signal(SIGBUS, f)`` handler returns to the faulting instruction,
which faults again forever, and ``faulthandler.enable()``'s kills the
process.  The C core re-arms itself when a Mapping is created and before
bulk copies; the stdlib calls that install a SIGBUS handler are wrapped here
so that it is re-armed on top of theirs at once (chaining to them for faults
that are not ours).  ``faulthandler.disable()`` is wrapped too: it puts back
the action ``enable()`` found, and the chain must drop its handler, which
then handles nothing.  Handlers installed by C code behind Python's back, or
through a faulthandler function bound before this import (``from
faulthandler import enable``: a builtin, which cannot be wrapped in place),
are only caught at the next re-arm.
"""
from __future__ import annotations

import faulthandler
import functools
import importlib
import signal
from typing import Any, Callable, Iterable, TypeVar

from . import _core

F = TypeVar("F", bound=Callable[..., Any])


def _rearm() -> None:
    _core.rearm_fault_handler()


def _rearm_after(function: F, installs_sigbus: Callable[..., bool],
                 rearm: Callable[[], None] = _rearm) -> F:
    if getattr(function, "__pymmapdev_rearms__", False):
        return function                 # the package was imported twice

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        finally:
            if installs_sigbus(*args, **kwargs):
                rearm()

    setattr(wrapper, "__pymmapdev_rearms__", True)
    return wrapper  # type: ignore[return-value]


def _never_blocking_sigbus(function: F) -> F:
    """pthread_sigmask() that leaves SIGBUS unblocked.  A fault while SIGBUS
    is blocked is never delivered: the kernel kills the process (POSIX: the
    result is undefined), so a thread that blocks every signal (the
    sigwait() design) would die on a truncated page instead of raising
    MappingFault.  Only a SIGBUS sent by kill() could be held back by the
    block; it now reaches the handlers as if the thread had not blocked it."""
    if getattr(function, "__pymmapdev_rearms__", False):
        return function                 # the package was imported twice

    @functools.wraps(function)
    def wrapper(how: int, mask: Iterable[int]) -> Any:
        if how in (signal.SIG_BLOCK, signal.SIG_SETMASK):
            mask = [number for number in mask if number != signal.SIGBUS]
        return function(how, mask)

    setattr(wrapper, "__pymmapdev_rearms__", True)
    return wrapper  # type: ignore[return-value]


# The SIGBUS handler faulthandler.enable() installed, as the re-arm after it
# found it on top of ours (its function's address; None: not seen).
# faulthandler.disable() puts back what enable() found -- ours -- and that
# handler then does nothing: we must stop handing faults to it, or a fault
# not ours would return to its instruction and fault again forever.
_faulthandler_handler: list[int | None] = [None]


def _rearm_over_faulthandler() -> None:
    displaced = _core.rearm_fault_handler()
    if displaced is not None:           # None: enabled already, or it failed
        _faulthandler_handler[0] = displaced


def _rearm_without_faulthandler() -> None:
    gone, _faulthandler_handler[0] = _faulthandler_handler[0], None
    _core.rearm_fault_handler(gone)     # enabled before import: ours may be gone


def _signal_is_sigbus(signalnum: int, *_args: Any, **_kwargs: Any) -> bool:
    return signalnum == signal.SIGBUS


def _always(*_args: Any, **_kwargs: Any) -> bool:
    return True


def install() -> None:
    # signal.signal() is a Python function that looks _signal.signal up at
    # each call: wrapping that one re-arms after signal.signal() calls, even
    # through a reference taken before this import (`from signal import
    # signal`), which a wrapper of signal.signal itself would miss
    low = importlib.import_module("_signal")     # no stub: typed as a module
    setattr(low, "signal", _rearm_after(getattr(low, "signal"), _signal_is_sigbus))
    if hasattr(low, "pthread_sigmask"):         # the same lookup in signal.pthread_sigmask()
        setattr(low, "pthread_sigmask", _never_blocking_sigbus(getattr(low, "pthread_sigmask")))
    faulthandler.enable = _rearm_after(faulthandler.enable, _always, _rearm_over_faulthandler)
    faulthandler.disable = _rearm_after(faulthandler.disable, _always,
                                        _rearm_without_faulthandler)
    faulthandler.register = _rearm_after(faulthandler.register, _signal_is_sigbus)
