"""Keep the SIGBUS guard armed when Python code installs a SIGBUS handler.

The package turns a SIGBUS on its own accesses (a page of a truncated file)
into :class:`MappingFault` with a process-wide handler that chains to the
previous one.  A handler installed *after* it takes SIGBUS away: Python's
own ``signal.signal(SIGBUS, f)`` handler returns to the faulting instruction,
which faults again forever, and ``faulthandler.enable()``'s kills the
process.  The C core re-arms itself when a Mapping is created and before
bulk copies; the stdlib calls that install a SIGBUS handler are wrapped here
so that it is re-armed on top of theirs at once (chaining to them for faults
that are not ours).  Handlers installed by C code behind Python's back are
only caught at the next re-arm.
"""
from __future__ import annotations

import faulthandler
import functools
import signal

from . import _core


def _rearm_after(function, installs_sigbus):
    if getattr(function, "__pymmapdev_rearms__", False):
        return function                 # the package was imported twice

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        finally:
            if installs_sigbus(*args, **kwargs):
                _core.rearm_fault_handler()

    wrapper.__pymmapdev_rearms__ = True
    return wrapper


def _signal_is_sigbus(signalnum, *_args, **_kwargs):
    return signalnum == signal.SIGBUS


def _register_is_sigbus(signum, *_args, **_kwargs):
    return signum == signal.SIGBUS


def install():
    signal.signal = _rearm_after(signal.signal, _signal_is_sigbus)
    faulthandler.enable = _rearm_after(faulthandler.enable, lambda *a, **k: True)
    faulthandler.register = _rearm_after(faulthandler.register, _register_is_sigbus)
