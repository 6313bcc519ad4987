"""Directories, deleted ones among them."""

import os

from . import ghost
from .kind import Rebuilt, open_path
from ..record import replace


class Directory(Rebuilt):
    """Captured: path and identity; a deleted directory's mode and owner.
    Restart: reopened by path (O_DIRECTORY), at its offset; a deleted one is
    made again, empty, in a private place, opened and removed (ghost.py).
    Restore: kept, or reopened by path."""
    reopenable = True

    def seekable(self, f):
        return True

    def capture(self, ctx, f, fdinfo):
        if f.deleted:
            ghost.capture(ctx, f)

    def decode(self, f):
        ghost.decode(f)

    def open(self, plan, f):
        if f.deleted:
            path, _ = ghost.make(plan, f.path, (f.dev, f.inode),
                                 lambda p: os.mkdir(p, 0o700), f.kind_state)
            f = _at(f, path)
        return open_path(plan, f, f.flags | os.O_DIRECTORY)

    def action(self, f, plan):
        return "made again empty, opened, removed" if f.deleted else "reopened by path"


def _at(f, path):
    # An empty directory read from its start: the old offset means nothing here.
    return replace(f, path=path, pos=0)


KIND = Directory()
