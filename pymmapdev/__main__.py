import sys

from pymmapdev.cli import main

sys.exit(main())
