"""pymmapdev: zero-copy shared memory over files and the mmapdev device.

>>> import pymmapdev
>>> with pymmapdev.open_file("/dev/shm/chan", 4096) as m:
...     m[:5] = b"hello"
...     m.write_u32(8, 42)
"""
try:
    from . import _core
except ImportError:
    import importlib.machinery as _machinery
    import os as _os
    _here = _os.path.dirname(_os.path.abspath(__file__))
    if any(_os.path.exists(_os.path.join(_here, "_core" + suffix))
           for suffix in _machinery.EXTENSION_SUFFIXES):
        raise                       # built, but it does not load: that error
    # Usually a clone or an unpacked sdist in the current directory, which
    # comes before the installed copy on sys.path.
    raise ImportError(
        f"pymmapdev's C extension (_core) is not built for this Python in {_here}: "
        f"this is a source folder (run from another directory to import the installed "
        f"pymmapdev), or build it in place: pip install -e .") from None
from . import _signals
from ._core import Mapping, MappingFault, PAGESIZE, PeerDied
from ._core import (MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL, MADV_WILLNEED,
                    MADV_DONTNEED, MADV_REMOVE, MADV_DOFORK,
                    MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_DONTDUMP, MADV_DODUMP)
from ._open import anonymous, open_device, open_file
from .sync import Lock, OwnerDiedWarning, Slot
from .uio import UIO
from .channel import Channel, ChannelCorrupt, open_channel
from ._core import get_spin, set_spin
from . import _pickle  # noqa: F401  (registers pickling of Mapping, Lock, Slot)

_signals.install()

__version__ = "0.1.0"

# Constants that only newer kernels/libcs define.
for _name in ("MADV_FREE", "MADV_COLD", "MADV_PAGEOUT", "MADV_POPULATE_READ",
              "MADV_POPULATE_WRITE"):
    if hasattr(_core, _name):
        globals()[_name] = getattr(_core, _name)
del _name

__all__ = ["Channel", "ChannelCorrupt", "Lock", "Mapping", "MappingFault", "OwnerDiedWarning",
           "PAGESIZE", "PeerDied", "Slot", "UIO", "anonymous", "open_channel",
           "get_spin", "open_device", "open_file", "set_spin"]
__all__ += [name for name in globals() if name.startswith("MADV_")]
