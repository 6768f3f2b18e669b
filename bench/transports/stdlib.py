"""The standard library's IPC: multiprocessing Pipe, Queue and SimpleQueue, and
shared_memory with a Queue of slot indices (the usual way to pass numpy
frames without pickling them)."""
import multiprocessing.shared_memory as shared_memory

from . import Transport, read_stamp, register, stamp_frame
from .. import procs

NO_BATCH = "no batch send/receive API"
NO_LOAN = "no zero-copy send API"


@register
class PipeTransport(Transport):
    key = "pipe"
    label = "multiprocessing.Pipe"
    figures = ("tput64", "rtt64", "frames", "crash")
    not_applicable = {"tput64_batch": NO_BATCH, "frames_zc": NO_LOAN}

    def __init__(self, tag, capacity, max_message):
        super().__init__(tag, capacity, max_message)
        self.r, self.w = procs.CTX.Pipe(duplex=False)

    def sender(self):
        return _PipeSender(self.w)

    def receiver(self):
        return _PipeReceiver(self.r)

    def cleanup(self):
        self.r.close()
        self.w.close()


class _PipeSender:
    def __init__(self, conn):
        self.send = conn.send_bytes

    def send_array(self, arr):
        self.send(arr)                           # the buffer's bytes, no pickle

    def close(self):
        pass


class _PipeReceiver:
    def __init__(self, conn):
        self.conn = conn
        self.recv = conn.recv_bytes

    def recv_timeout(self, timeout):
        return self.conn.recv_bytes() if self.conn.poll(timeout) else None

    def recv_frame(self, timeout, zero_copy):
        data = self.recv_timeout(timeout)
        return None if data is None else read_stamp(data)

    def close(self):
        pass


@register
class QueueTransport(Transport):
    key = "queue"
    label = "multiprocessing.Queue"
    unbounded_send = True      # put() appends to the feeder thread's deque
    figures = ("tput64", "rtt64", "frames", "crash")
    not_applicable = {"tput64_batch": NO_BATCH, "frames_zc": NO_LOAN}

    def __init__(self, tag, capacity, max_message):
        super().__init__(tag, capacity, max_message)
        self.q = procs.CTX.Queue()

    def sender(self):
        return _QueueSender(self.q)

    def receiver(self):
        return _QueueReceiver(self.q)

    def cleanup(self):
        self.q.close()
        self.q.cancel_join_thread()


class _QueueSender:
    def __init__(self, q):
        self.q = q
        self.send = q.put

    def send_array(self, arr):
        # The feeder thread pickles later: a caller reusing its array must hand
        # over a copy (and the pickle is a second one).
        self.q.put(arr.copy())

    def close(self):
        self.q.close()
        self.q.join_thread()                     # everything put has reached the pipe


class _QueueReceiver:
    def __init__(self, q):
        self.q = q
        self.recv = q.get

    def recv_timeout(self, timeout):
        try:
            return self.q.get(timeout=timeout)
        except Exception:                        # queue.Empty
            return None

    def recv_frame(self, timeout, zero_copy):
        arr = self.recv_timeout(timeout)
        return None if arr is None else read_stamp(memoryview(arr).cast("B"))

    def close(self):
        pass


@register
class SimpleQueueTransport(Transport):
    """Only in the crash probe (issue 9 saw it hang there)."""

    key = "simplequeue"
    label = "multiprocessing.SimpleQueue"
    figures = ("crash",)
    not_applicable = {f: "crash probe only" for f in
                      ("tput64", "tput64_batch", "rtt64", "frames", "frames_zc")}

    def __init__(self, tag, capacity, max_message):
        super().__init__(tag, capacity, max_message)
        self.q = procs.CTX.SimpleQueue()

    def sender(self):
        return _SimpleSender(self.q)

    def receiver(self):
        return _SimpleReceiver(self.q)


class _SimpleSender:
    def __init__(self, q):
        self.send = q.put

    def close(self):
        pass


class _SimpleReceiver:
    def __init__(self, q):
        self.q = q

    def recv_timeout(self, timeout):
        # SimpleQueue.get() has no timeout; poll its reading end first (a
        # private attribute, but the only way to bound the wait).
        return self.q.get() if self.q._reader.poll(timeout) else None

    def close(self):
        pass


@register
class ShmQueueTransport(Transport):
    """Frames in a SharedMemory ring of slots; a Queue passes the slot
    index to the consumer and a second Queue hands it back."""

    key = "shm_queue"
    label = "shared_memory + Queue of slot indices"
    figures = ("frames", "frames_zc")
    not_applicable = {f: "a frame transport (slot indices)" for f in
                      ("tput64", "tput64_batch", "rtt64", "crash")}
    SLOTS = 4

    def __init__(self, tag, capacity, max_message):
        super().__init__(tag, capacity, max_message)
        self.slot = max_message
        self.shm = shared_memory.SharedMemory(create=True, size=self.SLOTS * max_message)
        self.full, self.free = procs.CTX.Queue(), procs.CTX.Queue()
        for i in range(self.SLOTS):
            self.free.put(i)

    def sender(self):
        return _ShmSender(self)

    def receiver(self):
        return _ShmReceiver(self)

    def cleanup(self):
        self.shm.close()
        self.shm.unlink()
        for q in (self.full, self.free):
            q.close()
            q.cancel_join_thread()


class _ShmEnd:
    def __init__(self, t):
        self.t = t
        # The mapping inherited through fork: attaching by name in a child
        # would register the segment with the resource tracker a second time.
        self.shm = t.shm

    def slot(self, i, nbytes):
        return self.shm.buf[i * self.t.slot:i * self.t.slot + nbytes]

    def close(self):
        pass


class _ShmSender(_ShmEnd):
    def send_array(self, arr):
        i = self.t.free.get()
        with self.slot(i, arr.nbytes) as view:
            view[:] = memoryview(arr).cast("B")
        self.t.full.put((i, arr.nbytes))

    def fill_frame(self, nbytes, seq):
        i = self.t.free.get()
        with self.slot(i, nbytes) as view:
            stamp_frame(view, seq)
        self.t.full.put((i, nbytes))

    def close(self):
        self.t.full.close()
        self.t.full.join_thread()


class _ShmReceiver(_ShmEnd):
    def recv_frame(self, timeout, zero_copy):
        try:
            i, nbytes = self.t.full.get(timeout=timeout)
        except Exception:                        # queue.Empty
            return None
        with self.slot(i, nbytes) as view:
            seq = read_stamp(view)
        self.t.free.put(i)
        return seq
