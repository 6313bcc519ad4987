"""Regular files, and unlinked ones (their contents stored in the core)."""

import os

from ..errors import Incompatible, Unsupported
from ..linux import procfs
from . import ghost
from .kind import STATUS_FLAGS, Rebuilt, open_path


class RegularFile(Rebuilt):
    """Captured: path, identity (inode, size, mtime), offset, flags; for an
    unlinked file, its mode and owner (ghost.py) and, when its data (holes
    left out) is at most the dump's --unlinked-limit, its contents: a file
    without holes in `contents` (`contents_stored`), one with holes as
    `extents` [[offset, hex]] in kind_state (contents_stored stays false, so
    that an rcore without extents refuses it instead of making it empty).

    Restart: reopened by path with its flags (O_APPEND kept), at its offset; a
    file open with O_APPEND that grew since the checkpoint is cut back to its
    checkpointed size (what the process appended after the checkpoint it
    appends again; other written files are simply rewritten from the offset);
    a file open only for reading must be unchanged.  An unlinked file is
    recreated from the core as a ghost (ghost.py: holes, mode and owner too),
    once for all its descriptions, and deleted again before the process runs.
    Restore: kept if still open, else reopened by path and its offset set."""
    reopenable = True

    def seekable(self, f):
        return True

    def capture(self, ctx, f, fdinfo):
        if not f.deleted:
            return
        ghost.capture(ctx, f)
        seen = ctx.kind_data.setdefault("unlinked", set())
        if not ctx.with_data or (f.dev, f.inode) in seen:
            return                  # stored once per file, with its first description
        seen.add((f.dev, f.inode))
        with open(procfs.path(ctx.pid, "fd", str(f.fd)), "rb") as src:
            extents = data_extents(src.fileno(), f.size)
            stored = sum(n for _, n in extents)
            f.kind_state["data_bytes"] = stored
            if stored > ctx.unlinked_limit:
                return
            if extents in ([], [(0, f.size)]):
                f.contents = os.pread(src.fileno(), f.size, 0).hex()
                f.contents_stored = True
            else:
                f.kind_state["extents"] = [[at, os.pread(src.fileno(), n, at).hex()]
                                           for at, n in extents]

    def decode(self, f):
        bytes.fromhex(f.contents)
        ghost.decode(f)
        for at, data in f.kind_state.get("extents", []):
            if not isinstance(at, int) or at < 0 or at + len(data) // 2 > f.size:
                raise ValueError(f"extent at {at!r}")
            bytes.fromhex(data)

    def open(self, plan, f):
        return _open_unlinked(plan, f) if f.deleted else _open_regular(plan, f)

    def describe(self, f):
        return f"pos {f.pos}" + (" (unlinked)" if f.deleted else "")

    def action(self, f, plan):
        # (info shows check()'s refusal instead when the contents are missing)
        if not f.deleted:
            return "reopened by path at its offset"
        return "recreated from the core with its mode and holes, then unlinked"

    def holder_of(self, f, plan):
        """The entry holding unlinked file f's contents: its first description's."""
        return next((e for e in plan.files if e.kind == "file" and e.deleted
                     and (e.dev, e.inode) == (f.dev, f.inode) and stored(e)), f)

    def check(self, f, plan):
        f = self.holder_of(f, plan) if f.deleted else f
        if f.deleted and not stored(f):
            data = f.kind_state.get("data_bytes", f.size)
            raise Unsupported(f"fd {f.fd}: the unlinked file {f.path} ({data} bytes of data) is "
                              "not stored in the core: more than the dump's --unlinked-limit "
                              f"(dump with --unlinked-limit {data} to keep it)")


def stored(f):
    return f.contents_stored or "extents" in f.kind_state


def data_extents(fd, size):
    """[(offset, length)] of the data of file fd, holes left out (SEEK_DATA/HOLE)."""
    extents, pos = [], 0
    while pos < size:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:             # ENXIO: only a hole is left
            break
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), size)
        if hole > data:
            extents.append((data, hole - data))
        pos = hole
    return extents


def _open_regular(plan, f):
    fd = open_path(plan, f, f.flags)
    st = os.fstat(fd)
    if (st.st_ino, st.st_dev) != (f.inode, f.dev):      # zeroed fields too
        raise Incompatible(f"fd {f.fd}: {f.path} is another file than at the checkpoint")
    writable = f.flags & os.O_ACCMODE != os.O_RDONLY
    if writable:
        if st.st_size < f.size:
            raise Incompatible(f"fd {f.fd}: {f.path} is shorter ({st.st_size} bytes) than at "
                               f"the checkpoint ({f.size}): data the process wrote is gone")
        if st.st_size > f.size and f.flags & os.O_APPEND:
            # Appends made after the checkpoint would be made again after them.
            plan.truncate.append((fd, f.size))
    elif (st.st_size, st.st_mtime_ns) != (f.size, f.mtime_ns) \
            or f.ctime_ns and st.st_ctime_ns != f.ctime_ns:     # ctime: 0 in older cores
        raise Incompatible(f"fd {f.fd}: {f.path} changed since the checkpoint "
                           "(size, modification or change time)")
    return fd


def _open_unlinked(plan, f):
    holder = KIND.holder_of(f, plan)
    path, _ = ghost.make(plan, f.path, (f.dev, f.inode), lambda p: _fill(p, holder),
                         f.kind_state)
    try:
        fd = plan.own(os.open(path, (f.flags & STATUS_FLAGS) | os.O_CLOEXEC))
    except OSError as err:
        raise Incompatible(f"fd {f.fd}: cannot open the recreated {f.path}: "
                           f"{err.strerror}") from None
    os.lseek(fd, f.pos, os.SEEK_SET)
    return fd


def _fill(path, f):
    """Write the ghost of unlinked file f: its size, its data, its holes."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        if "extents" in f.kind_state:
            os.ftruncate(fd, f.size)
            for at, data in f.kind_state["extents"]:
                os.pwrite(fd, bytes.fromhex(data), at)
        else:
            write_all(fd, bytes.fromhex(f.contents))
    finally:
        os.close(fd)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


KIND = RegularFile()
