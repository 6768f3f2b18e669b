"""iceoryx2 publish-subscribe (its Python bindings), two ways of waiting:
busy-polling ``receive()``, and an event service whose listener sleeps
until the publisher's notifier fires after each send.

Samples are ``Slice[c_uint8]``; the publisher retries until delivered (no
sample is dropped when the subscriber's buffer is full).  Each side makes
its own node after the fork.
"""
import ctypes
import os
import time

from . import Transport, read_stamp, register, stamp_frame
from .. import procs


class _Iox(Transport):
    needs = ("iceoryx2",)
    figures = ("tput64", "rtt64", "frames", "frames_zc", "crash")
    not_applicable = {"tput64_batch": "no batch send/receive API"}
    event = False

    def __init__(self, tag, capacity, max_message):
        super().__init__(tag, capacity, max_message)
        self.name = f"pymmapdev-bench/{os.getpid()}/{tag}"
        # deep enough to stream small messages; big frames need less
        self.depth = 16 if max_message > (64 << 10) else 256

    def _service(self, iox, node):
        return (node.service_builder(iox.ServiceName.new(self.name))
                .publish_subscribe(iox.Slice[ctypes.c_uint8])
                .enable_safe_overflow(False)
                .subscriber_max_buffer_size(self.depth)
                .max_publishers(8)
                .open_or_create())

    def _event(self, iox, node):
        return node.service_builder(iox.ServiceName.new(self.name + "/ev")).event() \
            .max_notifiers(8).open_or_create()

    @staticmethod
    def _node(iox):
        # quiet: each process would otherwise log that it found no config file
        iox.set_log_level(iox.LogLevel.Error)
        return iox.NodeBuilder.new().create(iox.ServiceType.Ipc)

    def sender(self):
        import iceoryx2 as iox
        node = self._node(iox)
        # a killed producer's node is dead: clean it so its ports are freed
        node.try_cleanup_dead_nodes()
        pub = (self._service(iox, node).publisher_builder()
               .initial_max_slice_len(self.max_message)
               .allocation_strategy(iox.AllocationStrategy.PowerOfTwo)
               .backpressure_strategy(iox.BackpressureStrategy.RetryUntilDelivered)
               .create())
        notifier = self._event(iox, node).notifier_builder().create() if self.event else None
        return _IoxSender(node, pub, notifier)

    def receiver(self):
        import iceoryx2 as iox
        node = self._node(iox)
        sub = self._service(iox, node).subscriber_builder().buffer_size(self.depth).create()
        listener = self._event(iox, node).listener_builder().create() if self.event else None
        return _IoxReceiver(iox, node, sub, listener)

    def cleanup(self):
        # The crash probe SIGKILLs producers: their nodes' files stay in
        # /dev/shm until a live node cleans them up.  In a child, so that
        # the bench process never holds an iceoryx2 node across its forks.
        procs.run_sides([(_cleanup_dead_nodes, (), None)], 30)


def _cleanup_dead_nodes():
    import iceoryx2 as iox
    _Iox._node(iox).try_cleanup_dead_nodes()


@register
class IoxPoll(_Iox):
    key = "iceoryx2_poll"
    label = "iceoryx2, busy-poll"


@register
class IoxEvent(_Iox):
    key = "iceoryx2_event"
    label = "iceoryx2, event wait"
    event = True


class _IoxSender:
    def __init__(self, node, pub, notifier):
        self.node, self.pub, self.notifier = node, pub, notifier
        self.sent = 0
        self.loan = pub.loan_slice_uninit
        self.notify = notifier.notify if notifier else None

    def _send(self, sample):
        self.sent += 1
        if sample.assume_init().send() == 0:
            raise RuntimeError(f"iceoryx2 delivered sample {self.sent} to no subscriber")
        if self.notify:
            self.notify()

    def send(self, data):
        sample = self.loan(len(data))
        ctypes.memmove(sample.payload_ptr, data, len(data))
        self._send(sample)

    def send_array(self, arr):
        sample = self.loan(arr.nbytes)
        ctypes.memmove(sample.payload_ptr, arr.ctypes.data, arr.nbytes)
        self._send(sample)

    def fill_frame(self, nbytes, seq):
        sample = self.loan(nbytes)
        stamp_frame(sample.payload().as_memory_view(), seq)
        self._send(sample)

    def close(self):
        self.notifier = self.notify = self.loan = self.pub = None
        self.node = None


class _IoxReceiver:
    def __init__(self, iox, node, sub, listener):
        self.node, self.sub, self.listener = node, sub, listener
        self.receive = sub.receive
        self.forever = iox.Duration.from_secs(3600)
        self.duration = iox.Duration.from_secs_f64

    def _sample(self, timeout):
        """The next sample, waiting the transport's way; None after *timeout*."""
        receive = self.receive
        sample = receive()
        if sample is not None:
            return sample
        deadline = time.monotonic() + timeout
        while True:
            if self.listener is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return receive()
                self.listener.timed_wait(self.duration(left))
                sample = receive()
                if sample is not None:
                    return sample
            else:
                for _ in range(256):             # look at the clock now and then
                    sample = receive()
                    if sample is not None:
                        return sample
                if time.monotonic() > deadline:
                    return None

    def recv(self):
        return bytes(self._sample(3600).payload().as_memory_view())

    def recv_timeout(self, timeout):
        sample = self._sample(timeout)
        return None if sample is None else bytes(sample.payload().as_memory_view())

    def recv_frame(self, timeout, zero_copy):
        sample = self._sample(timeout)
        return None if sample is None else read_stamp(sample.payload().as_memory_view())

    def close(self):
        self.listener = self.sub = self.receive = None
        self.node = None
