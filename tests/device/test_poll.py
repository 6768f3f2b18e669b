"""poll()/select() on the node: readable once the device's event counter
(WAKE calls, heartbeats) moves past what this open file has seen; GET_INFO
marks the events seen."""
import os
import select
import threading
import time

import pytest

from . import devlib

pytestmark = pytest.mark.device

WORD = 3 * devlib.PAGE


def test_quiet_until_an_event(fd):
    devlib.get_info(fd)
    assert not devlib.readable(fd)
    other = os.open(devlib.DEV, os.O_RDWR | os.O_CLOEXEC)
    try:
        assert not devlib.readable(other)        # a new open starts quiet
        devlib.wake(other, WORD, 1)
        assert devlib.readable(fd)
        assert devlib.readable(other)            # the waker's own file too
        p = select.poll()
        p.register(fd, select.POLLIN | select.POLLPRI)
        events = dict(p.poll(0))[fd]
        assert events & select.POLLIN and events & select.POLLPRI
        devlib.get_info(fd)                      # seen: quiet again
        assert not devlib.readable(fd)
        assert devlib.readable(other)            # per open file
    finally:
        os.close(other)


def _wake_after(delay):
    time.sleep(delay)
    fd = os.open(devlib.DEV, os.O_RDWR)
    devlib.wake(fd, WORD, 1)


def test_select_sleeps_until_wake_from_another_process(fd):
    devlib.get_info(fd)
    pid = devlib.fork_call(_wake_after, 0.5)
    try:
        t0 = time.monotonic()
        assert devlib.readable(fd, timeout=30)
        assert time.monotonic() - t0 < 25
    finally:
        assert devlib.reap(pid) == 0


def test_events_counter_and_sysfs(fd):
    before = devlib.get_info(fd).events
    assert devlib.sysfs("events") == before
    for _ in range(3):
        devlib.wake(fd, WORD, 1)
    assert devlib.get_info(fd).events == before + 3
    assert devlib.sysfs("events") == before + 3


def test_epoll_edge(fd):
    devlib.get_info(fd)
    ep = select.epoll()
    try:
        ep.register(fd, select.EPOLLIN | select.EPOLLET)
        assert ep.poll(0) == []
        t = threading.Timer(0.2, devlib.wake, (fd, WORD, 1))
        t.start()
        ready = ep.poll(20)
        t.join()
        assert ready and ready[0][0] == fd
    finally:
        ep.close()
