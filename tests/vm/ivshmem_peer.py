"""The host side of the ivshmem tests: tests/vm/run.sh starts it beside QEMU
on the file that backs the guest's ivshmem BAR, and stops it after the VM
ends.  It maps the file with pymmapdev.open_file, announces itself and
answers the guest's requests (tests/device/ivshmem_proto.py).

Usage: ivshmem_peer.py FILE      exits 0 on SIGTERM, non-zero on any error
"""
import os
import signal
import sys
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "device"))

import pymmapdev  # noqa: E402
import ivshmem_proto as p  # noqa: E402

IDLE = 0.001            # polling period while nothing happens


def echo(m, length):
    data = m.read(p.DATA_IN, min(length, p.DATA_MAX))
    m.write(p.DATA_OUT, data[::-1])
    return zlib.crc32(data), 0


def publish(m, millis):
    slot = pymmapdev.Slot(m, p.SLOT_HOST, p.SLOT_CAPACITY)
    count = 0
    end = time.monotonic() + millis / 1000
    while m.load_u32(p.STOP) == 0 and time.monotonic() < end:
        version = slot.version + 1
        slot.publish(p.payload(version))
        count += 1
        time.sleep(0.0001)      # the guest (emulated) needs time to copy one
    return count, 0


def read(m, _arg):
    slot = pymmapdev.Slot(m, p.SLOT_GUEST, p.SLOT_CAPACITY)
    torn = good = 0
    last = -1
    while m.load_u32(p.STOP) == 0:
        got = slot.read(timeout=5)
        if got is None:
            continue
        version, data = got
        if version > 0:
            if not p.payload_ok(data) or data != p.payload(version) or version < last:
                torn += 1
            else:
                good += 1
                m.store_u32(p.SEEN, good)
            last = version
        time.sleep(0.0002)
    return torn, good


OPS = {p.ECHO: echo, p.PUBLISH: publish, p.READ: read}


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with pymmapdev.open_file(sys.argv[1], p.SIZE) as m:
        m.store_u32(p.HOST_STATE, p.HOST_MAGIC)
        answered = m.load_u32(p.REQUEST)
        print(f"ivshmem peer: up on {sys.argv[1]}", flush=True)
        while True:
            request = m.load_u32(p.REQUEST)
            if request == answered:
                time.sleep(IDLE)
                continue
            op, arg = m.load_u32(p.OP), m.load_u32(p.ARG)
            result, result2 = OPS[op](m, arg)
            m.store_u32(p.RESULT, result)
            m.store_u32(p.RESULT2, result2)
            m.store_u32(p.REPLY, request)
            answered = request
            print(f"ivshmem peer: request {request} op {op} arg {arg} -> {result} {result2}",
                  flush=True)


if __name__ == "__main__":
    main()
