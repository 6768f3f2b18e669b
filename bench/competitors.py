"""The competitors' packages: what each is, how to install it, whether it is here.

``make bench`` installs every requirement below before the run
(``python -m bench.install``); the run itself never installs anything.  A competitor that is not importable stays in every table, marked
missing with the import error.
"""
import importlib
import importlib.metadata
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Competitor:
    name: str            # as the tables show it
    module: str          # what to import
    requirement: str     # pip requirement (pinned: versions that work on CPython 3.11)
    used_for: str


REGISTRY = {c.name: c for c in (
    Competitor("pyzmq", "zmq", "pyzmq==27.3.0", "channel: PUSH/PULL over ipc://"),
    Competitor("posix_ipc", "posix_ipc", "posix_ipc==1.3.2",
               "ping-pong: semaphore pair; channel: MessageQueue"),
    Competitor("iceoryx2", "iceoryx2", "iceoryx2==0.10.0",
               "channel: publish-subscribe, busy-poll and event wait"),
    Competitor("faster-fifo", "faster_fifo", "faster-fifo==1.5.2", "channel: Queue"),
    Competitor("numpy", "numpy", "numpy>=1.25", "channel: 1 MiB frames"),
    Competitor("atomics", "atomics", "atomics==1.0.3", "atomics: fetch_add on the same memory"),
    Competitor("matplotlib", "matplotlib", "matplotlib>=3.7", "the chart"),
)}

_status = {}


def status(name):
    """(True, version) when importable, else (False, why)."""
    if name not in _status:
        comp = REGISTRY[name]
        try:
            importlib.import_module(comp.module)
            dist = re.split(r"[=<>!~ ]", comp.requirement, maxsplit=1)[0]
            try:
                version = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                version = "installed"
            _status[name] = (True, version)
        except Exception as exc:         # ImportError, or a broken build raising anything
            _status[name] = (False, f"{comp.name} not installed ({type(exc).__name__}: {exc})")
    return _status[name]


def available(name):
    return status(name)[0]


def why_missing(names):
    """The reason the first unavailable competitor among *names* gives, or None."""
    for n in names:
        ok, why = status(n)
        if not ok:
            return why
    return None
