"""Share memory between a QEMU guest and its host (ivshmem), with a Slot.

Host: a file, given to QEMU as the memory behind an ivshmem-plain device:

    qemu-system-x86_64 ... \\
        -object memory-backend-file,id=shm,mem-path=/dev/shm/vm-share,size=1M,share=on \\
        -device ivshmem-plain,memdev=shm
    python examples/vm_share.py publish /dev/shm/vm-share       # on the host

Guest: the same bytes are the device's BAR 2 ("ivshmem" finds it), as root:

    python examples/vm_share.py follow ivshmem                  # in the guest

Either side can publish or follow, and a plain file works on both ends too;
a COUNT after the target stops after that many messages (default: until
Ctrl-C).
A Slot's reader never sees a value torn by the writer.  Neither side can wake
the other (futexes do not cross the VM boundary): a follower on the BAR
polls (Mapping.waker is 'poll'), every millisecond while it waits.
"""
import os
import sys
import time

import pymmapdev

OFFSET = 65536                  # where the Slot lives in the shared memory
CAPACITY = 256
SIZE = 1 << 20


def find_ivshmem(base: str = "/sys/bus/pci/devices") -> str:
    """BAR 2 of the first ivshmem device (vendor 0x1af4, device 0x1110)."""
    try:
        names = os.listdir(base)
    except OSError as exc:                  # no PCI bus, or no /sys (a container)
        sys.exit(f"vm_share: cannot list the PCI devices in {base!r}: {exc.strerror} "
                 f"(is this a VM with an ivshmem device, /sys mounted?)")
    for name in sorted(names):
        try:
            with open(f"{base}/{name}/vendor") as v, open(f"{base}/{name}/device") as d:
                ids = (v.read().strip(), d.read().strip())
        except OSError:
            continue                        # unplugged while we looked
        if ids == ("0x1af4", "0x1110"):
            return f"{base}/{name}/resource2"
    sys.exit("vm_share: no ivshmem device (was QEMU started with -device ivshmem-plain?)")


def open_shared(path: str) -> pymmapdev.Mapping:
    if path == "ivshmem":
        path = find_ivshmem()
    if path.startswith("/sys/"):            # a PCI BAR's resource file
        return pymmapdev.open_device(path)
    return pymmapdev.open_file(path, SIZE)


def publish(path: str, count: int = 0, interval: float = 0.5) -> None:
    with open_shared(path) as m:
        slot = pymmapdev.Slot(m, OFFSET, CAPACITY)
        n = 0
        try:
            while count == 0 or n < count:
                n += 1
                slot.publish(f"message {n} from pid {os.getpid()}".encode())
                time.sleep(interval)
        except KeyboardInterrupt:           # how one without a COUNT ends
            pass


def follow(path: str, count: int = 0) -> None:
    with open_shared(path) as m:
        slot = pymmapdev.Slot(m, OFFSET, CAPACITY)
        version, seen = slot.version, 0
        try:
            while count == 0 or seen < count:
                if slot.wait_newer(version, timeout=10):
                    version, data = slot.read()
                    # the other side may be any program: show what it sent
                    text = data.decode(errors="replace")
                    print(f"version {version}: {text}", flush=True)
                    seen += 1
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    actions = {"publish": publish, "follow": follow}
    if not 3 <= len(sys.argv) <= 4 or sys.argv[1] not in actions:
        sys.exit(__doc__)
    action, target = sys.argv[1], sys.argv[2]
    if len(sys.argv) > 3 and not sys.argv[3].isdigit():
        sys.exit(__doc__)
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    try:
        actions[action](target, n)
    except (OSError, ValueError) as exc:    # no such file, not a BAR, no permission
        sys.exit(f"vm_share: {exc}")
