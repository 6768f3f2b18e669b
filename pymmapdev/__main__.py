import sys

from pymmapdev.cli import main

if __name__ == "__main__":     # importable (stubtest, pydoc) without running
    sys.exit(main())
