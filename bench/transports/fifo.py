"""faster-fifo: a multiprocessing.Queue replacement over a shared circular
buffer with a process-shared mutex and condition variables.

Messages go through as bytes (its ``dumps``/``loads`` hooks set to pass
buffers through, so it is not charged for pickling); it is the one
competitor with native batches (put_many/get_many).
"""
from . import Transport, read_stamp, register


def _raw(obj):
    return obj


@register
class FasterFifoTransport(Transport):
    key = "faster_fifo"
    label = "faster-fifo Queue"
    needs = ("faster-fifo",)
    figures = ("tput64", "tput64_batch", "rtt64", "frames", "crash")
    not_applicable = {"frames_zc": "no zero-copy send API"}

    def __init__(self, tag, capacity, max_message):
        super().__init__(tag, capacity, max_message)
        import faster_fifo
        self.q = faster_fifo.Queue(max_size_bytes=max(capacity, 4 * max_message + 4096),
                                   loads=bytes, dumps=_raw)

    def sender(self):
        return _FifoSender(self.q)

    def receiver(self):
        return _FifoReceiver(self.q)

    def cleanup(self):
        self.q.close()


class _FifoSender:
    def __init__(self, q):
        self.q = q
        self.send = q.put

    def send_many(self, msgs):
        self.q.put_many(msgs)

    def send_array(self, arr):
        self.q.put(arr.tobytes())        # its put takes bytes only: one copy more

    def close(self):
        pass


class _FifoReceiver:
    def __init__(self, q):
        self.q = q
        self.empty = __import__("queue").Empty

    def recv(self):
        return self.q.get(timeout=3600)

    def recv_timeout(self, timeout):
        try:
            return self.q.get(timeout=timeout)
        except self.empty:
            return None

    def recv_many(self, n, timeout):
        try:
            return self.q.get_many(timeout=timeout, max_messages_to_get=n)
        except self.empty:
            return []

    def recv_frame(self, timeout, zero_copy):
        data = self.recv_timeout(timeout)
        return None if data is None else read_stamp(data)

    def close(self):
        pass
