"""The conversation between the ivshmem tests in the guest
(test_ivshmem.py) and the host peer (tests/vm/ivshmem_peer.py) that
tests/vm/run.sh starts beside QEMU, over the shared memory itself.

Neither side can wake the other (a futex wake does not cross the VM
boundary), so both poll.  The guest asks, the host answers:

    REQUEST  guest: seq + 1 after OP and ARG are written
    REPLY    host: the seq it answered, after RESULT/RESULT2
    SEEN     host: during READ, the good reads so far (the guest zeroes it
             before asking, and publishes until the host has seen enough:
             a host slow to notice the request must not find it over)
"""
import zlib

SIZE = 1 << 20                   # the memory-backend-file's size= (the BAR)
HOST_MAGIC = 0x54534F48          # "HOST": the peer is up

HOST_STATE, REQUEST, OP, ARG, REPLY, RESULT, RESULT2, STOP, SEEN = range(0, 36, 4)
DATA_IN = 4096                   # the guest's bytes for ECHO
DATA_OUT = 8192                  # the host's answer
DATA_MAX = 4096
SLOT_HOST = 16384                # the host publishes here (PUBLISH)
SLOT_GUEST = 32768               # the guest publishes here (READ)
SLOT_CAPACITY = 1024

ECHO = 1       # ARG bytes at DATA_IN -> reversed at DATA_OUT; RESULT = their crc32
PUBLISH = 2    # publish into SLOT_HOST until STOP (at most ARG ms); RESULT = how many
READ = 3       # read SLOT_GUEST until STOP; RESULT = torn reads, RESULT2 = good ones
READ_ENOUGH = 20   # good reads the guest waits for before it says STOP
PUBLISH_ENOUGH = 10   # reads of a publication the guest makes before it says STOP


def payload(version, size=SLOT_CAPACITY):
    """*version* over and over, ending in the CRC32 of that: a value half of
    one version and half of another fails the check.  Cheap to make (the
    guest is emulated)."""
    body = (version.to_bytes(8, "little") * (size // 8))[:size - 4]
    return body + zlib.crc32(body).to_bytes(4, "little")


def payload_ok(data):
    return len(data) >= 4 and zlib.crc32(data[:-4]) == int.from_bytes(data[-4:], "little")
