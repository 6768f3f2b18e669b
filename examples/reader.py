"""Print each new value the writer publishes; sleeps in between (no polling).

See writer.py. Ctrl-C to stop.
"""
import sys

import pymmapdev

PATH = sys.argv[1] if len(sys.argv) > 1 else "/dev/shm/pymmapdev-example"
CAPACITY = 64

with pymmapdev.open_file(PATH, pymmapdev.Slot.size_for(CAPACITY)) as m:
    slot = pymmapdev.Slot(m, 0, CAPACITY)
    version, data = slot.read()
    try:
        while True:
            if data:
                # any process that maps the file may publish: show what it sent
                print(f"{data.decode(errors='replace')} (version {version})", flush=True)
            slot.wait_newer(version)
            version, data = slot.read()
    except KeyboardInterrupt:
        pass
