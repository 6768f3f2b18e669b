"""An mmapdev mapping that starts inside a page: it covers exactly the range
asked for, words align by their place in the device, and WAIT/WAKE name
the same word as a mapping of the whole device does (the module addresses
words by their offset in the buffer)."""
import os
import threading

import pytest

import pymmapdev

from . import devlib

pytestmark = pytest.mark.device

PAGE = devlib.PAGE
BASE = 44 * PAGE                 # a region no other device test uses
GUARD = 60


@pytest.fixture
def whole():
    with pymmapdev.open_device() as m:
        m[BASE:BASE + PAGE] = bytes(PAGE)
        yield m


def test_covers_exactly_the_range(whole):
    with pymmapdev.open_device(offset=BASE + 4, size=60) as part:
        assert (part.offset, part.size, part.waker) == (BASE + 4, 60, "mmapdev")
        part.write(0, b"inside")
        assert whole.read(BASE + 4, 6) == b"inside"
        whole.write_u32(BASE + 8, 77)
        assert part.read_u32(4) == 77                 # device offset BASE + 8: aligned
        with pytest.raises(ValueError, match="not aligned to 8 bytes in the file or device"):
            part.load_u64(0)
        with pytest.raises(ValueError, match="outside the mapping of 60 bytes"):
            part.read(56, 8)
    with pytest.raises(ValueError, match=r"outside the device buffer of \d+ bytes \('/dev/mmapdev0'\)"):
        pymmapdev.open_device(offset=devlib.DEFAULT_SIZE)


def test_wait_and_wake_name_the_device_word(whole):
    with pymmapdev.open_device(offset=BASE + 4, size=60) as part:
        got = []
        t = threading.Thread(target=lambda: got.append(part.wait(12, 0, GUARD)))
        t.start()
        devlib.wait_until(lambda: devlib.blocked_in_wait(os.getpid()), GUARD,
                          "the waiter asleep in WAIT")
        assert whole.wake(BASE + 16) == 1            # part's word 12 is the device's BASE + 16
        t.join(GUARD)
        assert got == [True]

        def child():
            with pymmapdev.open_device(offset=BASE + 4, size=60) as mine:
                if not mine.wait(12, 0, GUARD):
                    raise OSError(1, "not woken")

        pid = devlib.fork_call(child)
        devlib.wait_in_wait(pid)
        whole.store_u32(BASE + 16, 1)
        whole.wake(BASE + 16)
        assert devlib.reap(pid, GUARD) == 0
