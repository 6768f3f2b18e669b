"""Read registers of a PCI device through its BAR, as root.

    python examples/pci_bar.py /sys/bus/pci/devices/0000:00:04.0/resource2 [OFFSET [COUNT]]

The sysfs resourceN file of a memory BAR maps the BAR itself; pymmapdev sizes
the mapping by the BAR.  read_words() reads each register with one access of
exactly its width (here 32 bits), in address order: what register files need
and what a bytes copy does not promise.  The same BAR can be mapped through
/dev/mem at its physical address (printed below), at any offset.
"""
import os
import sys

import pymmapdev


def bar_address(path: str) -> int:
    """The BAR's physical address: line N of the device's resource file."""
    real = os.path.realpath(path)
    number = int(os.path.basename(real)[len("resource"):].split("_")[0])
    with open(os.path.join(os.path.dirname(real), "resource")) as f:
        return int(f.read().splitlines()[number].split()[0], 16)


def main(path: str, offset: int = 0, count: int = 4) -> None:
    with pymmapdev.open_device(path, readonly=True) as regs:   # checks it is a BAR file
        start = bar_address(path)
        device = os.path.basename(os.path.dirname(os.path.realpath(path)))
        print(f"{os.path.basename(path)} of {device}: {regs.size} bytes at {start:#x}")
        words = regs.read_words(offset, count, width=4)
        for i, value in enumerate(words):
            print(f"  {offset + 4 * i:#06x}: {value:#010x}")
    # the same registers through /dev/mem, mapped from any offset
    with pymmapdev.open_device("/dev/mem", size=4 * count, offset=start + offset,
                               readonly=True) as same:
        assert same.read_words(0, count).tolist() == words.tolist()
        print(f"  (the same {count} words through /dev/mem at {start + offset:#x})")


if __name__ == "__main__":
    if not 2 <= len(sys.argv) <= 4:
        sys.exit(__doc__)
    try:
        main(sys.argv[1], *(int(a, 0) for a in sys.argv[2:4]))
    except (OSError, ValueError) as exc:
        sys.exit(f"pci_bar: {exc}")
