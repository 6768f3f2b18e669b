"""A test double for pymmapdev.Channel (issue 9's API), only for the bench's
smoke test: it lets the bench's Channel case run end to end before the real
Channel exists.  A single-producer single-consumer byte ring in Python over
the mapping's atomics and wait/wake; no crash safety, no speed.

Layout at *offset*: u64 head (consumed bytes), u64 tail (published bytes),
u32 sequence bumped on every head or tail move (the futex word both sides
sleep on), then *capacity* ring bytes.  Records are a u32 length + data.
"""
import contextlib
import time

HEAD, TAIL, SEQ, DATA = 0, 8, 16, 24


class FakeChannel:
    @staticmethod
    def size_for(capacity):
        return DATA + capacity

    def __init__(self, m, offset, capacity):
        self.m, self.off, self.cap = m, offset, capacity
        self.max_message = capacity - 4

    def _bump(self):
        self.m.fetch_add_u32(self.off + SEQ, 1)
        self.m.wake(self.off + SEQ, 2)

    def _await(self, ready, timeout):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            seq = self.m.load_u32(self.off + SEQ)
            if ready():
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            self.m.wait(self.off + SEQ, seq, left)

    def _copy_in(self, pos, data):
        start = self.off + DATA + pos % self.cap
        first = min(len(data), self.off + DATA + self.cap - start)
        self.m[start:start + first] = data[:first]
        self.m[self.off + DATA:self.off + DATA + len(data) - first] = data[first:]

    def _copy_out(self, pos, n):
        start = self.off + DATA + pos % self.cap
        first = min(n, self.off + DATA + self.cap - start)
        return self.m[start:start + first] + self.m[self.off + DATA:self.off + DATA + n - first]

    def send(self, data, *, timeout=None):
        data = bytes(data)
        if len(data) > self.max_message:
            raise ValueError(f"{len(data)}-byte message > max_message {self.max_message}")
        need = 4 + len(data)
        tail = self.m.load_u64(self.off + TAIL)
        if not self._await(lambda: self.cap - (tail - self.m.load_u64(self.off + HEAD)) >= need,
                           timeout):
            return False
        self._copy_in(tail, len(data).to_bytes(4, "little") + data)
        self.m.store_u64(self.off + TAIL, tail + need)
        self._bump()
        return True

    def recv(self, *, timeout=None):
        head = self.m.load_u64(self.off + HEAD)
        if not self._await(lambda: self.m.load_u64(self.off + TAIL) != head, timeout):
            return None
        n = int.from_bytes(self._copy_out(head, 4), "little")
        data = self._copy_out(head + 4, n)
        self.m.store_u64(self.off + HEAD, head + 4 + n)
        self._bump()
        return data

    def send_many(self, messages, *, timeout=None):
        sent = 0
        for msg in messages:
            if not self.send(msg, timeout=timeout):
                break
            sent += 1
        return sent

    def recv_many(self, max_count, *, timeout=None):
        first = self.recv(timeout=timeout)
        if first is None:
            return []
        out = [first]
        while len(out) < max_count:
            msg = self.recv(timeout=0)
            if msg is None:
                break
            out.append(msg)
        return out

    @contextlib.contextmanager
    def reserve(self, nbytes, *, timeout=None):
        buf = bytearray(nbytes)
        yield memoryview(buf)
        self.send(buf, timeout=timeout)

    @contextlib.contextmanager
    def recv_view(self, *, timeout=None):
        data = self.recv(timeout=timeout)
        yield None if data is None else memoryview(data)

    def send_array(self, arr, *, timeout=None):
        return self.send(arr.tobytes(), timeout=timeout)

    def recv_array(self, *, timeout=None):
        import numpy
        data = self.recv(timeout=timeout)
        return None if data is None else numpy.frombuffer(data, numpy.uint8)
