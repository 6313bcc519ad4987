"""Ghosts: files a process held after they were deleted (CRIU's ghost files).

A restart recreates each one in a private place (a directory of mode 0700 made
beside its old path, or under /tmp when that directory is gone too), with its
mode and owner, opens it as the kinds need, and removes it again before the
process runs: the process holds a deleted file again, as it did.  One ghost
per file (device, inode), however many descriptions of it there are, so that
they stay one file.  Regular files bring their contents from the core
(file.py), FIFOs their queued bytes (pipe.py); a deleted directory comes back
empty (it had to be empty to be deleted), as does a deleted working directory
(restart.py)."""

import os
import stat

from ..errors import Incompatible
from ..linux import procfs

DELETED = " (deleted)"


def capture(ctx, f):
    """Mode and owner of deleted file f, into its kind_state."""
    st = os.stat(procfs.path(ctx.pid, "fd", str(f.fd)))
    f.kind_state.update(mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid)


def decode(f):
    for key in ("mode", "uid", "gid"):
        if key in f.kind_state and (not isinstance(f.kind_state[key], int)
                                    or f.kind_state[key] < 0):
            raise ValueError(f"{key} {f.kind_state[key]!r}")


def make(plan, path, key, create, owner=None):
    """The ghost of deleted file `key` (device, inode) that was at `path`:
    create(ghost_path) makes it, the first time only; owner: {mode, uid, gid}.
    Returns (its path, whether it was made now).  It is removed at commit, or
    when the plan closes."""
    import tempfile             # (restart only: not imported by every rcore command)
    ghosts = plan.kind_data.setdefault("ghosts", {})
    if key in ghosts:
        return ghosts[key], False
    private = None
    for where in (os.path.dirname(path), tempfile.gettempdir()):
        try:
            private = tempfile.mkdtemp(prefix=".rcore-ghost-", dir=where or "/")
            break
        except OSError:
            continue
    if private is None:
        raise Incompatible(f"cannot recreate the deleted {path}: no directory to make it in")
    plan.ghosts.append(private)
    ghost = os.path.join(private, os.path.basename(path) or "ghost")
    try:
        create(ghost)
        _set_owner(plan, ghost, path, owner or {})
    except OSError as err:
        raise Incompatible(f"cannot recreate the deleted {path}: {err.strerror}") from None
    ghosts[key] = ghost
    return ghost, True


def _set_owner(plan, ghost, path, owner):
    if "mode" in owner:
        os.chmod(ghost, owner["mode"])
    if "uid" in owner and (owner["uid"], owner["gid"]) != (os.geteuid(), os.getegid()):
        try:
            os.chown(ghost, owner["uid"], owner["gid"])
        except PermissionError:
            plan.warnings.append(f"the deleted {path} comes back owned by rcore's user, not "
                                 f"uid {owner['uid']} gid {owner['gid']} (chown needs root)")


def remove(paths):
    """Remove ghosts' private directories (with the ghost, if still there)."""
    if not paths:
        return
    import shutil       # (only here: 2-3 ms of a restart, with zlib, bz2, lzma)
    for private in paths:
        shutil.rmtree(private, ignore_errors=True)
