"""An interrupt loop on a UIO device: sleep until the device interrupts,
look at its registers, unmask, repeat.

    python examples/uio_irq.py [NAME_OR_PATH]      (default: mmapdev)

With the bundled module loaded as  sudo insmod kmod/mmapdev.ko uio=1
heartbeat_ms=500  the device "mmapdev" interrupts at every heartbeat, and
its map 0 holds the heartbeat's counter at offset 8.  The interrupt masks
itself when it fires (as uio_pci_generic's does): enable_irq() unmasks it.
Ctrl-C to stop.
"""
import sys

import pymmapdev


def main(device: str = "mmapdev") -> None:
    with pymmapdev.UIO(device) as uio, uio.map(0) as regs:
        print(f"{uio.path}: {uio.name}, maps {uio.maps}", flush=True)
        try:
            while True:
                uio.enable_irq()
                count = uio.wait_irq(timeout=5)
                if count is None:
                    print("no interrupt for 5 s", file=sys.stderr, flush=True)
                    continue
                print(f"interrupt {count}: counter = {regs.read_u64(8)}", flush=True)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    if len(sys.argv) > 2:
        sys.exit(__doc__)
    try:
        main(*sys.argv[1:2])
    except (OSError, ValueError) as exc:    # no such device, not one, no permission
        sys.exit(f"uio_irq: {exc}")
