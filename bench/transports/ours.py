"""pymmapdev.Channel, written against issue 9's API (send/recv/send_many/
recv_many/reserve/recv_view/send_array/recv_array): it runs as soon as a
build has ``pymmapdev.Channel``, and is reported "not available in this
build" before that.

The "blocking" round trip sets ``pymmapdev.set_spin(0)`` in both processes
(every wait sleeps in the kernel, like the competitors' blocking calls); the
"spin-then-sleep" one keeps the default spin.
"""
import os

import pymmapdev

from . import FIGURES, Transport, read_stamp, register, stamp_frame
from .. import env


@register
class OursChannel(Transport):
    key = "pymmapdev"
    label = "pymmapdev Channel"
    figures = FIGURES + ("rtt64_spin",)
    message_scale = 10         # 50k messages at ~14 M/s were a 3.5 ms window

    @classmethod
    def unavailable(cls):
        if not hasattr(pymmapdev, "Channel"):
            return "pymmapdev.Channel: not available in this build"
        return None

    def __init__(self, tag, capacity, max_message):
        super().__init__(tag, capacity, max_message)
        self.path = env.scratch_path(f"channel-{tag}")
        # a new file is zeroed: an empty channel for every process that maps it
        pymmapdev.open_file(self.path, pymmapdev.Channel.size_for(capacity)).close()

    def _open(self):
        m = pymmapdev.open_file(self.path)
        return m, pymmapdev.Channel(m, 0, self.capacity)

    def sender(self):
        return _End(*self._open())

    receiver = sender

    def cleanup(self):
        os.unlink(self.path)


class _End:
    def __init__(self, m, ch):
        self.m, self.ch = m, ch
        self.send, self.send_many, self.recv = ch.send, ch.send_many, ch.recv

    def recv_timeout(self, timeout):
        return self.ch.recv(timeout=timeout)

    def recv_many(self, n, timeout):
        return self.ch.recv_many(n, timeout=timeout)

    def send_array(self, arr):
        self.ch.send_array(arr)

    def fill_frame(self, nbytes, seq):
        with self.ch.reserve(nbytes) as buf:
            stamp_frame(buf, seq)

    def recv_frame(self, timeout, zero_copy):
        if zero_copy:
            with self.ch.recv_view(timeout=timeout) as view:
                return None if view is None else read_stamp(view)
        arr = self.ch.recv_array(timeout=timeout)
        return None if arr is None else read_stamp(memoryview(arr).cast("B"))

    def close(self):
        del self.send, self.send_many, self.recv
        self.ch = None
        try:
            self.m.close()
        except BufferError:
            # a driver's local still holds a bound method of the channel (and
            # so maybe a pin of the mapping); the side's process exits next
            pass
