#!/usr/bin/env python3
"""``python bench/run.py [args]`` = ``python -m bench [args]`` (kept for old docs)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.__main__ import main  # noqa: E402

sys.exit(main())
