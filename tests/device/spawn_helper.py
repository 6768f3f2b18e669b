"""Run as a script by test_sharing.py: a plain python parent whose
multiprocessing "spawn" children get a device Mapping as their argument
(pickled by path, size and page offset) and exchange bytes through it.
(Spawned from pytest itself, each child would import pytest again, which
costs tens of seconds under TCG.)

Usage: spawn_helper.py OFFSET...   one child per page offset
"""
import multiprocessing
import sys

import pymmapdev


def child(m, queue):
    with m:
        seen = m.read(0, 12)
        m.write(100, b"child-wrote")
        queue.put((m.offset, m.kind, m.size, seen))


def main(offsets):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    with pymmapdev.open_device() as m:
        views = [pymmapdev.open_device(offset=off, size=2 * pymmapdev.PAGESIZE)
                 for off in offsets]
        for off in offsets:
            m.write(off, b"parent-wrote")
            m.write(off + 100, bytes(11))
        children = [ctx.Process(target=child, args=(view, queue)) for view in views]
        for c in children:
            c.start()
        seen = {off: rest for off, *rest in (queue.get(timeout=120) for _ in children)}
        for c in children:
            c.join(60)
            assert c.exitcode == 0, c.exitcode
        for off in offsets:
            assert seen[off] == ["device", 2 * pymmapdev.PAGESIZE, b"parent-wrote"], \
                (off, seen[off])
            assert m.read(off + 100, 11) == b"child-wrote", off
        for view in views:
            view.close()
    print("ok", len(offsets))


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]])
