"""Run as a script by test_sharing.py: a plain python parent whose
multiprocessing "spawn" children map /dev/mmapdev0 and exchange bytes with
it.  (Spawned from pytest itself, each child would import pytest again,
which costs tens of seconds under TCG.)

Usage: spawn_helper.py OFFSET...   one child per page offset
"""
import multiprocessing
import sys

import pymmapdev


def child(offset, queue):
    with pymmapdev.open_device(offset=offset) as m:
        seen = m.read(0, 12)
        m.write(100, b"child-wrote")
        queue.put((offset, seen))


def main(offsets):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    with pymmapdev.open_device() as m:
        for off in offsets:
            m.write(off, b"parent-wrote")
            m.write(off + 100, bytes(11))
        children = [ctx.Process(target=child, args=(off, queue)) for off in offsets]
        for c in children:
            c.start()
        seen = dict(queue.get(timeout=120) for _ in children)
        for c in children:
            c.join(60)
            assert c.exitcode == 0, c.exitcode
        for off in offsets:
            assert seen[off] == b"parent-wrote", (off, seen[off])
            assert m.read(off + 100, 11) == b"child-wrote", off
    print("ok", len(offsets))


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]])
