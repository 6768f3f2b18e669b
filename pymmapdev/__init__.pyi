# The public surface, spelled out: __init__.py adds the kernel-dependent
# MADV_* names in a loop that type checkers cannot follow.
from .channel import Channel as Channel
from .channel import ChannelCorrupt as ChannelCorrupt
from .channel import open_channel as open_channel
from ._core import MADV_COLD as MADV_COLD
from ._core import MADV_DODUMP as MADV_DODUMP
from ._core import MADV_DOFORK as MADV_DOFORK
from ._core import MADV_DONTDUMP as MADV_DONTDUMP
from ._core import MADV_DONTNEED as MADV_DONTNEED
from ._core import MADV_FREE as MADV_FREE
from ._core import MADV_HUGEPAGE as MADV_HUGEPAGE
from ._core import MADV_NOHUGEPAGE as MADV_NOHUGEPAGE
from ._core import MADV_NORMAL as MADV_NORMAL
from ._core import MADV_PAGEOUT as MADV_PAGEOUT
from ._core import MADV_POPULATE_READ as MADV_POPULATE_READ
from ._core import MADV_POPULATE_WRITE as MADV_POPULATE_WRITE
from ._core import MADV_RANDOM as MADV_RANDOM
from ._core import MADV_REMOVE as MADV_REMOVE
from ._core import MADV_SEQUENTIAL as MADV_SEQUENTIAL
from ._core import MADV_WILLNEED as MADV_WILLNEED
from ._core import PAGESIZE as PAGESIZE
from ._core import Mapping as Mapping
from ._core import MappingFault as MappingFault
from ._core import PeerDied as PeerDied
from ._core import get_spin as get_spin
from ._core import set_spin as set_spin
from ._open import anonymous as anonymous
from ._open import open_device as open_device
from ._open import open_file as open_file
from .sync import Lock as Lock
from .sync import OwnerDiedWarning as OwnerDiedWarning
from .sync import Slot as Slot
from .uio import UIO as UIO

__version__: str

__all__ = ["Channel", "ChannelCorrupt", "open_channel", "Lock", "Mapping", "MappingFault", "OwnerDiedWarning", "PAGESIZE", "PeerDied", "Slot",
           "UIO", "anonymous",
           "get_spin", "open_device", "open_file", "set_spin",
           "MADV_NORMAL", "MADV_RANDOM", "MADV_SEQUENTIAL", "MADV_WILLNEED", "MADV_DONTNEED",
           "MADV_REMOVE", "MADV_DOFORK", "MADV_HUGEPAGE", "MADV_NOHUGEPAGE",
           "MADV_DONTDUMP", "MADV_DODUMP", "MADV_FREE", "MADV_COLD", "MADV_PAGEOUT",
           "MADV_POPULATE_READ", "MADV_POPULATE_WRITE"]
