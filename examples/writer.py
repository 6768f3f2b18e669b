"""Publish `value = N` once a second into a shared file.

Run `python examples/writer.py` in one terminal and `python examples/reader.py`
in another: two unrelated processes that share nothing but the path.
"""
import sys
import time

import pymmapdev

PATH = sys.argv[1] if len(sys.argv) > 1 else "/dev/shm/pymmapdev-example"
CAPACITY = 64

with pymmapdev.open_file(PATH, pymmapdev.Slot.size_for(CAPACITY)) as m:
    slot = pymmapdev.Slot(m, 0, CAPACITY)
    n = 0
    try:
        while True:
            n += 1
            version = slot.publish(f"value = {n}".encode())
            print(f"published value = {n} (version {version})", flush=True)
            time.sleep(1)
    except KeyboardInterrupt:
        pass
