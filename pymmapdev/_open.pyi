import os
from collections.abc import Callable

from ._core import Mapping

PAGESIZE: int
MAX_OFFSET: int
MEMFD_NAME_MAX: int
OPEN_FLAGS: int
CGROUP_ROOT: str
PROC_SELF_CGROUP: str
PROTECTED_REGULAR: str
READ_ONLY_ADVICE: str

def open_file(path: str | bytes | os.PathLike[str] | os.PathLike[bytes], size: int | None = None, *,
              create: bool = True, readonly: bool = False, mode: int = 0o600,
              populate: bool = False) -> Mapping: ...
def open_file_checked(path: str | bytes | os.PathLike[str] | os.PathLike[bytes],
                      size: int | None = None, *, create: bool = True,
                      readonly: bool = False, mode: int = 0o600, populate: bool = False,
                      check_head: Callable[[bytes], object] | None = None,
                      head_size: int = 0,
                      read_only_advice: str = ...) -> Mapping: ...
def open_device(path: str | bytes | os.PathLike[str] | os.PathLike[bytes] = "/dev/mmapdev0",
                size: int | None = None, *, offset: int = 0, readonly: bool = False) -> Mapping: ...
def map_device_fd(fd: int, path: str, size: int | None, offset: int,
                  readonly: bool) -> Mapping: ...
def anonymous(size: int, *, name: str = "pymmapdev") -> Mapping: ...
def in_dev_filesystem(path: str) -> bool: ...
def map_file_range(path: str | bytes | os.PathLike[str] | os.PathLike[bytes], offset: int,
                   length: int) -> Mapping | None: ...

# for uio.py: the path checks and the open(2) open_device() makes
def _str_path(path: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> str: ...
def _open(path: str, flags: int, mode: int = 0o600) -> int: ...
