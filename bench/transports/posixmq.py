"""posix_ipc MessageQueue: the kernel's POSIX message queues."""
from . import Transport, register
from .. import env

# fs/mqueue/msgsize_max is 8192 by default: a 1 MiB frame does not fit.
NO_FRAMES = "messages are limited to fs/mqueue/msgsize_max (8 KiB by default)"


@register
class PosixMqTransport(Transport):
    key = "posix_mq"
    label = "posix_ipc MessageQueue"
    needs = ("posix_ipc",)
    figures = ("tput64", "rtt64", "crash")
    not_applicable = {"tput64_batch": "no batch send/receive API", "frames": NO_FRAMES,
                      "frames_zc": NO_FRAMES}
    MAX_MESSAGE = 8192
    DEPTH = 10          # fs/mqueue/msg_max's default

    def __init__(self, tag, capacity, max_message):
        super().__init__(tag, capacity, max_message)
        import posix_ipc
        self.name = env.scratch_path(f"mq-{tag}").replace(env.SHM, "")
        posix_ipc.MessageQueue(self.name, posix_ipc.O_CREX, max_messages=self.DEPTH,
                               max_message_size=self.MAX_MESSAGE).close()

    def sender(self):
        return _MqEnd(self.name)

    receiver = sender

    def cleanup(self):
        import posix_ipc
        posix_ipc.unlink_message_queue(self.name)


class _MqEnd:
    def __init__(self, name):
        import posix_ipc
        self.busy = posix_ipc.BusyError
        self.mq = posix_ipc.MessageQueue(name)
        self.send = self.mq.send
        self._receive = self.mq.receive

    def recv(self):
        return self._receive()[0]

    def recv_timeout(self, timeout):
        try:
            return self._receive(timeout)[0]
        except self.busy:
            return None

    def close(self):
        self.mq.close()
