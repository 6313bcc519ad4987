"""Directories."""

import os

from .kind import Rebuilt, open_path


class Directory(Rebuilt):
    """Captured: path and identity.  Restart: reopened by path (O_DIRECTORY),
    at its offset.  Restore: kept, or reopened by path."""
    names = ("dir",)
    reopenable = True

    def seekable(self, f):
        return True

    def open(self, plan, f):
        return open_path(plan, f, f.flags | os.O_DIRECTORY)

    def action(self, f, plan):
        return "reopened by path"


KIND = Directory()
