"""Print the heartbeat text of /dev/mmapdev0 each time the module bumps it.

    python examples/device_reader.py [PATH]      (default: /dev/mmapdev0)

The driver writes, the script waits: no sleep(1) polling.  Load the module
with a heartbeat first, e.g.  sudo insmod kmod/mmapdev.ko heartbeat_ms=1000
(kmod/README.md).  The header at offset 0 is struct mmapdev_heartbeat of
kmod/uapi/mmapdev.h: a u32 seq (the word to wait on, bumped last), a u32
write_seq at 4 (odd while the module writes the payload: a seqlock), a u64
counter at 8 and the text "value = N\\n" at 16.  Ctrl-C to stop.
"""
import sys
import time

import pymmapdev

SEQ, WRITE_SEQ, TEXT, TEXT_SIZE = 0, 4, 16, 48


def read_beat(m: pymmapdev.Mapping) -> tuple[int, str]:
    """(write_seq, text) of one beat: read between two reads of write_seq
    that find it even and unchanged (no beat written meanwhile); that value
    names the beat (2 * its counter).  Tries a bounded number of times: a
    process that writes into the header can corrupt the text, not keep us
    here."""
    for attempt in range(100):
        if attempt:
            time.sleep(0.001)           # the module may be preempted mid-beat
        before = m.load_u32(WRITE_SEQ)  # load_u32: ordered with the read
        raw = m.read(TEXT, TEXT_SIZE)
        if before % 2 == 0 and m.load_u32(WRITE_SEQ) == before:
            break
    return before, raw.split(b"\0", 1)[0].decode(errors="replace")


def main(path: str = "/dev/mmapdev0") -> None:
    with pymmapdev.open_device(path, readonly=True) as m:
        seq = m.read_u32(SEQ)
        shown: int | None = None       # the write_seq of the beat printed last
        try:
            while True:
                # Sleeps in the kernel until the heartbeat bumps seq; the
                # timeout only lets us notice a module without heartbeat.
                if not m.wait(SEQ, seq, timeout=5):
                    print(f"no heartbeat for 5 s (was {path} loaded with heartbeat_ms=?)",
                          file=sys.stderr, flush=True)
                    continue
                new_seq = m.read_u32(SEQ)
                if new_seq == seq:
                    # Woken for a beat printed already: this loop read seq
                    # after that beat bumped it and before its wake came.
                    continue
                seq = new_seq
                beat, text = read_beat(m)
                if beat == shown and beat:
                    # Printed already: written after seq was read, it was
                    # read then, and this is its own bump of seq.  (0: a
                    # module older than write_seq, which names no beat.)
                    continue
                shown = beat
                print(text, end="" if text.endswith("\n") else "\n", flush=True)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    if len(sys.argv) > 2:
        sys.exit(__doc__)
    try:
        main(*sys.argv[1:2])
    except (OSError, ValueError) as exc:    # no such device, not one, no permission
        sys.exit(f"device_reader: {exc}")
