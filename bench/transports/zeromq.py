"""pyzmq PUSH/PULL over ipc:// (issue 9's fastest Python competitor one way).

The consumer binds and producers connect, so a restarted producer (crash
probe) reaches the same consumer.
"""
import os

from . import Transport, read_stamp, register
from .. import env


@register
class ZmqTransport(Transport):
    key = "pyzmq"
    label = "pyzmq PUSH/PULL ipc://"
    needs = ("pyzmq",)
    figures = ("tput64", "rtt64", "frames", "crash")
    not_applicable = {"tput64_batch": "no batch send/receive API",
                      "frames_zc": "no zero-copy send API"}

    def __init__(self, tag, capacity, max_message):
        super().__init__(tag, capacity, max_message)
        self.path = env.scratch_path(f"zmq-{tag}")
        self.addr = "ipc://" + self.path

    def sender(self):
        return _ZmqSender(self.addr)

    def receiver(self):
        return _ZmqReceiver(self.addr)

    def cleanup(self):
        if os.path.exists(self.path):
            os.unlink(self.path)


class _ZmqSender:
    def __init__(self, addr):
        import zmq
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUSH)
        self.sock.connect(addr)
        self.send = self.sock.send

    def send_array(self, arr):
        # copied into a zmq message now: with copy=False zmq would read the
        # array later, after the caller reused it
        self.sock.send(arr)

    def close(self):
        self.sock.close(linger=5000)             # deliver what is queued
        self.ctx.term()


class _ZmqReceiver:
    def __init__(self, addr):
        import zmq
        self.zmq = zmq
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PULL)
        self.sock.bind(addr)
        self.recv = self.sock.recv
        self.timeout_ms = None

    def _set_timeout(self, timeout):
        ms = int(timeout * 1000)
        if ms != self.timeout_ms:                # one setsockopt, not one per call
            self.sock.setsockopt(self.zmq.RCVTIMEO, ms)
            self.timeout_ms = ms

    def recv_timeout(self, timeout):
        self._set_timeout(timeout)
        try:
            return self.sock.recv()
        except self.zmq.Again:
            return None

    def recv_frame(self, timeout, zero_copy):
        self._set_timeout(timeout)
        try:
            frame = self.sock.recv(copy=False)
        except self.zmq.Again:
            return None
        return read_stamp(frame.buffer)

    def close(self):
        self.sock.close(linger=0)
        self.ctx.term()
