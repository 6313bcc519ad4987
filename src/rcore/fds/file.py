"""Regular files, and unlinked ones (their contents stored in the core)."""

import os

from ..errors import Incompatible, Unsupported
from ..linux import procfs
from .kind import STATUS_FLAGS, Rebuilt, open_path


class RegularFile(Rebuilt):
    """Captured: path, identity (inode, size, mtime), offset, flags; for an
    unlinked file of at most the dump's --unlinked-limit, its contents
    (`contents`, `contents_stored`).

    Restart: reopened by path with its flags (O_APPEND kept), at its offset; a
    file open with O_APPEND that grew since the checkpoint is cut back to its
    checkpointed size (what the process appended after the checkpoint it
    appends again; other written files are simply rewritten from the offset);
    a file open only for reading must be unchanged.  An unlinked file is
    recreated from the core, then unlinked again.
    Restore: kept if still open, else reopened by path and its offset set."""
    names = ("file",)
    reopenable = True

    def seekable(self, f):
        return True

    def capture(self, ctx, f, fdinfo):
        limit = ctx.unlinked_limit
        if ctx.with_data and f.deleted and f.size <= limit:
            with open(procfs.path(ctx.pid, "fd", str(f.fd)), "rb") as src:
                f.contents = src.read(limit + 1)[:limit].hex()
            f.contents_stored = True

    def decode(self, f):
        bytes.fromhex(f.contents)

    def open(self, plan, f):
        return _open_unlinked(plan, f) if f.deleted else _open_regular(plan, f)

    def describe(self, f):
        return f"pos {f.pos}" + (" (unlinked)" if f.deleted else "")

    def action(self, f, plan):
        if not f.deleted:
            return "reopened by path at its offset"
        if f.contents_stored:
            return "recreated from the core, then unlinked"
        return "refused: its contents are not in the core"

    def check(self, f, plan):
        if f.deleted and not f.contents_stored:
            raise Unsupported(f"fd {f.fd}: the unlinked file {f.path} ({f.size} bytes) is "
                              "not stored in the core (larger than the dump's --unlinked-limit)")


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
    data = bytes.fromhex(f.contents)
    directory = os.path.dirname(f.path) or "/"
    candidates = [f.path] + [os.path.join(d, f".rcore-unlinked-{os.getpid()}-{f.fd}")
                             for d in (directory, "/tmp")]
    for path in candidates:
        try:
            tmp = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError:
            continue
        try:
            write_all(tmp, data)
            fd = plan.own(os.open(path, (f.flags & STATUS_FLAGS) | os.O_CLOEXEC))
            os.lseek(fd, f.pos, os.SEEK_SET)
            return fd
        finally:
            os.close(tmp)
            os.unlink(path)
    raise Incompatible(f"fd {f.fd}: cannot recreate the unlinked file {f.path}")


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


KIND = RegularFile()
