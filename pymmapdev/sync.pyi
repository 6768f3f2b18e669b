from ._core import Lock as Lock
from ._core import OwnerDiedWarning as OwnerDiedWarning
from ._core import PeerDied as PeerDied
from ._core import Slot as Slot

__all__ = ["Lock", "OwnerDiedWarning", "PeerDied", "Slot"]
