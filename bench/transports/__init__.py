"""Message transports for the channel case: pymmapdev.Channel and every competitor.

One class per transport, all with the same small interface, registered in
REGISTRY (in the order the tables show them).  The channel case drives them
all with the same code (case_channel.py); a transport only says how to send
and receive.

A transport object is made in the bench process before the sides fork (so
multiprocessing objects are inherited) and is then used in the children:

    t = Cls(tag, capacity, max_message)   # bench process: create names/objects
    s = t.sender()                   # producer child (after the fork)
    s.send(data); s.send_many(list); s.send_array(arr); s.fill_frame(nbytes, seq); s.close()
    r = t.receiver()                 # consumer child
    r.recv() -> bytes                # blocking, the transport's fastest idiom
    r.recv_timeout(t) -> bytes|None  # with a timeout (round trips, crash probe)
    r.recv_many(n, t) -> list        # batches (only where the transport has them)
    r.recv_frame(t, zero_copy) -> seq|None   # a frame, checked, its stamp returned
    t.cleanup()                      # bench process, after the sides ended

``figures`` lists the figures a transport takes part in; for the others the
report says why not (``not_applicable``).
"""
import struct

FIGURES = ("tput64", "tput64_batch", "rtt64", "frames", "frames_zc", "crash")
STAMP = struct.Struct("Q")


class Torn(Exception):
    """A received message or frame failed its check."""


def stamp_frame(buf, seq):
    """Write *seq* at both ends of a frame buffer (the zero-copy producers' only work)."""
    STAMP.pack_into(buf, 0, seq)
    STAMP.pack_into(buf, len(buf) - 8, seq)


def read_stamp(buf):
    """The frame's stamp; Torn when its two ends disagree (a frame mixed from two)."""
    a = STAMP.unpack_from(buf, 0)[0]
    b = STAMP.unpack_from(buf, len(buf) - 8)[0]
    if a != b:
        raise Torn(f"frame stamps differ: {a} at the start, {b} at the end")
    return a


class Transport:
    key = ""                   # figure keys: channel.<figure>.<key>
    label = ""
    needs = ()                 # competitor names (bench.competitors) it imports
    figures = FIGURES
    not_applicable = {}        # figure -> why this transport does not take part
    unbounded_send = False     # send() buffers without limit (the crash probe paces it)
    message_scale = 1          # x the 64 B messages per throughput trial: a transport
                               # 10x faster sends 10x more, so its timed window is not a
                               # few ms of start-up (every trial lasts tens of ms or more)
    def __init__(self, tag, capacity, max_message):
        self.tag, self.capacity, self.max_message = tag, capacity, max_message

    @classmethod
    def unavailable(cls):
        """Why this transport cannot run here (a missing package), or None."""
        from .. import competitors
        return competitors.why_missing(cls.needs)

    def cleanup(self):
        pass


REGISTRY = {}


def register(cls):
    REGISTRY[cls.key] = cls
    return cls


# Import order is table order: ours first, the C ceiling last.
from . import ours, stdlib, zeromq, posixmq, iox, fifo, cring  # noqa: E402,F401
