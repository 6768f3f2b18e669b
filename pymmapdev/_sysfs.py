"""What sysfs says about a device: its class, PCI BAR files, UIO devices.

Used by open_device() (how big, how to wake), UIO and the CLI's ``info``.
Every reader returns None when sysfs does not know (not mounted, not that
kind of device) rather than guessing.
"""
from __future__ import annotations

import os
import re
import stat
from typing import NamedTuple

SYS = "/sys"
PROC = "/proc"

# /sys/devices/pci0000:00/0000:00:04.0/resource2 (also resource2_wc: the same
# BAR mapped write-combining); /sys/bus/pci/devices/<bdf>/ links there.
_RESOURCE = re.compile(r"^resource(\d+)(_wc)?$")
_PCI_ADDRESS = re.compile(r"^[0-9a-f]{4,}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
IORESOURCE_IO = 0x100
IORESOURCE_MEM = 0x200
IORESOURCE_PREFETCH = 0x2000


def read_text(path: str) -> str | None:
    """The text of a sysfs file, stripped; bytes that are not UTF-8 (a
    driver's name is any bytes) appear as \\xNN escapes."""
    try:
        with open(path, encoding="utf-8", errors="backslashreplace") as f:
            return f.read().strip()
    except OSError:
        return None


def read_int(path: str, base: int = 0) -> int | None:
    text = read_text(path)
    try:
        return int(text, base) if text is not None else None
    except ValueError:
        return None


def char_class(st: os.stat_result) -> str | None:
    """The class of a character device ("mmapdev", "uio", "mem", "misc"...),
    or None when sysfs does not say."""
    if not stat.S_ISCHR(st.st_mode):
        return None
    link = f"{SYS}/dev/char/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}/subsystem"
    try:
        return os.path.basename(os.readlink(link))
    except OSError:
        return None


def char_major_name(st: os.stat_result) -> str | None:
    """The name its driver registered the device's major number under
    (/proc/devices), or None when /proc does not say."""
    if not stat.S_ISCHR(st.st_mode):
        return None
    text = read_text(f"{PROC}/devices") or ""
    section = text.split("Block devices:", 1)[0]
    for line in section.splitlines()[1:]:
        fields = line.split()
        if len(fields) == 2 and fields[0] == str(os.major(st.st_rdev)):
            return fields[1]
    return None


def is_mmapdev(st: os.stat_result) -> bool:
    """Whether a character device belongs to our module, by its sysfs class,
    or, when sysfs does not know it (not mounted, a node without a sysfs
    entry), by the name of its major number.  The module's ioctl numbers
    may mean something else to another driver: nothing is sent to a device
    this does not vouch for."""
    cls = char_class(st)
    if cls is not None:
        return cls == "mmapdev"
    return char_major_name(st) == "mmapdev"


class Bar(NamedTuple):
    """One PCI BAR as its device directory's ``resource`` file lists it."""
    device: str          # the device directory, e.g. /sys/devices/pci0000:00/0000:00:04.0
    number: int          # N of resourceN
    start: int           # physical (bus) address
    size: int
    flags: int           # IORESOURCE_*

    @property
    def address(self) -> str:
        return os.path.basename(self.device)

    @property
    def kind(self) -> str:
        if self.flags & IORESOURCE_IO:
            return "I/O ports"
        if self.flags & IORESOURCE_MEM:
            return "memory, prefetchable" if self.flags & IORESOURCE_PREFETCH else "memory"
        return "unused"


def pci_bars(device: str) -> list[Bar]:
    """The BARs listed in ``device``/resource (unused ones left out)."""
    device = os.path.realpath(device)       # /sys/bus/pci/devices/X links there
    text = read_text(os.path.join(device, "resource"))
    bars = []
    for index, line in enumerate((text or "").splitlines()[:6]):
        try:
            start, end, flags = (int(field, 16) for field in line.split())
        except ValueError:
            continue
        if end > start:
            bars.append(Bar(device, index, start, end - start + 1, flags))
    return bars


def pci_resource_file(path: str) -> tuple[str, int] | None:
    """(the device directory, N) if *path* is a PCI device's sysfs
    ``resourceN`` (or ``resourceN_wc``) file, else None."""
    real = os.path.realpath(path)
    match = _RESOURCE.match(os.path.basename(real))
    device = os.path.dirname(real)
    if (match is None or not real.startswith(f"{SYS}/devices/") or
            not _PCI_ADDRESS.match(os.path.basename(device))):
        return None
    return device, int(match.group(1))


def pci_bar_file(path: str) -> Bar | None:
    """The BAR behind a sysfs ``resourceN`` file, or None if *path* is not
    one or its device's ``resource`` listing does not show that BAR."""
    found = pci_resource_file(path)
    if found is None:
        return None
    device, index = found
    for bar in pci_bars(device):
        if bar.number == index:
            return bar
    return None


# ---- UIO ------------------------------------------------------------------------

class UioMap(NamedTuple):
    number: int
    name: str | None
    addr: int
    size: int
    offset: int          # of the memory in its first page


def uio_dir(name: str) -> str:
    return f"{SYS}/class/uio/{name}"


def uio_maps(name: str) -> list[UioMap]:
    """maps/mapN of a UIO device, in index order; those whose addr, size
    or offset is not a number are left out."""
    base = f"{uio_dir(name)}/maps"
    try:
        entries = os.listdir(base)
    except OSError:
        return []
    maps = []
    for entry in sorted(entries, key=lambda e: int(e[3:]) if e[3:].isdigit() else -1):
        if not (entry.startswith("map") and entry[3:].isdigit()):
            continue
        d = f"{base}/{entry}"
        addr, size = read_int(f"{d}/addr", 16), read_int(f"{d}/size", 16)
        # no offset file: a kernel older than the attribute, memory at the
        # page's start; one that is not a number says nothing
        offset = read_int(f"{d}/offset", 16) if os.path.lexists(f"{d}/offset") else 0
        if addr is None or size is None or offset is None:
            continue
        maps.append(UioMap(int(entry[3:]), read_text(f"{d}/name") or None, addr, size,
                           offset))
    return maps


def uio_names() -> list[str]:
    try:
        return sorted(os.listdir(f"{SYS}/class/uio"), key=lambda n: (len(n), n))
    except OSError:
        return []
