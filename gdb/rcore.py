"""Load rcore's gdb commands: `source gdb/rcore.py` (from the rcore tree).
Adds `restore-core-file [FILE]` with the alias `rcore`; see src/rcore/gdb.py."""

import os
import sys

_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)

import rcore.gdb  # noqa: E402,F401  (registers the commands)
