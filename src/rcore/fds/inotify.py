"""inotify: watches of files and directories, found again by path."""

import os
import re

from ..errors import Incompatible, Unsupported
from ..linux import libc, pipes, procfs
from .kind import Rebuilt, check_int

_FIELD = re.compile(r"([\w-]+):(\S+)")
MAX_WD = 1 << 16                # wd numbers rcore walks up to (one add/rm each)
IN_CREATE = 0x100


class Inotify(Rebuilt):
    """Captured (fdinfo "inotify wd:N ino:I sdev:D mask:M ... f_handle:H" per
    watch): `watches` [{wd, mask, path, ino, dev}], the path found from the file
    handle with open_by_handle_at (needs CAP_DAC_READ_SEARCH); `queued`: bytes
    of events waiting to be read (FIONREAD on a copy of the descriptor).
    Restart: a new inotify; each watch added again by path with its mask, under
    the same watch number (the kernel hands them out in turn: rcore adds and
    removes a watch of a scratch directory to skip numbers, then drains the
    IN_IGNORED events that leaves).  The path must still be the same file.
    Events queued at the checkpoint are lost: dump and restart say so.
    Restore: kept if still open."""
    new_description = True

    def capture(self, ctx, f, fdinfo):
        watches = []
        for line in fdinfo["lines"]:
            if not line.startswith("inotify "):
                continue
            fields = dict(_FIELD.findall(line))
            sdev = int(fields["sdev"], 16)
            dev = os.makedev(sdev >> 20, sdev & 0xFFFFF)       # the kernel's dev_t
            watches.append({"wd": int(fields["wd"]), "mask": int(fields["mask"], 16),
                            "ino": int(fields["ino"], 16), "dev": dev, "path": ""})
            if ctx.with_data:        # restore's comparison needs no path
                watches[-1]["path"] = _path_of(ctx.pid, dev, int(fields["fhandle-type"]),
                                               bytes.fromhex(fields["f_handle"]))
        f.kind_state = {"watches": watches, "queued": _queued(ctx, f.fd) if ctx.with_data else 0}

    def roll_back(self, pid, live, want):
        def key(st):
            return sorted((w["wd"], w["mask"], w["ino"], w["dev"]) for w in st.get("watches", []))
        if key(live.kind_state) != key(want.kind_state):
            return [f"fd {want.fd} (inotify): its watches changed since the checkpoint and "
                    "were left as they are now"]
        return []

    def decode(self, f):
        st = f.kind_state
        check_int(st["queued"], "queued")
        for w in st["watches"]:
            check_int(w["wd"], "watch wd", 1, 1 << 31)
            check_int(w["mask"], "watch mask", high=1 << 32)
            check_int(w["ino"], "watch ino")
            check_int(w["dev"], "watch dev")
            if not isinstance(w["path"], str) or "\0" in w["path"]:
                raise ValueError(f"watch path {w['path']!r}")

    def check(self, f, plan):
        for w in f.kind_state["watches"]:
            if not w["path"].startswith("/") or w["path"].endswith(" (deleted)"):
                raise Unsupported(f"fd {f.fd} (inotify): watch {w['wd']} is of a file that "
                                  f"has no path any more ({w['path']})")
            if w["wd"] > MAX_WD:
                raise Unsupported(f"fd {f.fd} (inotify): watch number {w['wd']} is above "
                                  f"{MAX_WD}")

    def warnings(self, f):
        queued = f.kind_state["queued"]
        if queued:
            return [f"{queued} bytes of inotify events queued at the checkpoint are lost"]
        return []

    def open(self, plan, f):
        import shutil           # (restart only: not imported by every rcore command)
        import tempfile
        fd = plan.own(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        scratch = tempfile.mkdtemp(prefix=".rcore-inotify-")
        try:
            next_wd = 1
            for w in sorted(f.kind_state["watches"], key=lambda w: w["wd"]):
                while next_wd < w["wd"]:
                    libc.inotify_rm_watch(fd, libc.inotify_add_watch(fd, scratch, IN_CREATE))
                    next_wd += 1
                _check_same_file(f, w)
                got = libc.inotify_add_watch(fd, w["path"], w["mask"])
                if got != w["wd"]:
                    raise Incompatible(f"fd {f.fd} (inotify): {w['path']} got watch number "
                                       f"{got}, not {w['wd']}")
                next_wd = got + 1
        except OSError as err:
            raise Incompatible(f"fd {f.fd} (inotify): cannot watch again: {err}") from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        while pipes.queued_bytes(fd):          # the scratch watches' IN_IGNORED
            os.read(fd, 65536)
        return fd

    def describe(self, f):
        st = f.kind_state
        text = ", ".join(f"wd {w['wd']} {w['path']} mask {w['mask']:#x}" for w in st["watches"])
        return (text or "no watches") + (f"; {st['queued']} bytes of events queued"
                                         if st["queued"] else "")

    def action(self, f, plan):
        return "a new inotify, each watch added again by path (queued events lost)"


def _check_same_file(f, w):
    try:
        st = os.stat(w["path"])
    except OSError as err:
        raise Incompatible(f"fd {f.fd} (inotify): {w['path']}: {err.strerror}") from None
    if (st.st_ino, st.st_dev) != (w["ino"], w["dev"]):
        raise Incompatible(f"fd {f.fd} (inotify): {w['path']} is another file than the one "
                           "watched at the checkpoint")


def _path_of(pid, dev, handle_type, handle):
    """The path of a file given by its file handle on device dev."""
    mount = _mount_of(pid, dev)
    # an O_PATH descriptor will not do: open_by_handle_at takes it with fdget()
    mount_fd = os.open(procfs.path(pid, "root") + mount, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fd = libc.open_by_handle_at(mount_fd, handle_type, handle, os.O_PATH | os.O_CLOEXEC)
    finally:
        os.close(mount_fd)
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _mount_of(pid, dev):
    """A mount point of device dev in pid's mount table, its whole file system first."""
    want = f"{os.major(dev)}:{os.minor(dev)}"
    found = []
    for line in procfs.read_bytes(pid, "mountinfo").decode("utf-8", "surrogateescape").splitlines():
        parts = line.split()
        if len(parts) > 4 and parts[2] == want:
            found.append((parts[3] != "/", parts[4].replace("\\040", " ")))
    if not found:
        raise ValueError(f"no mount of device {want}")
    return min(found)[1]


def _queued(ctx, fd):
    """Bytes of events waiting in inotify fd of the process."""
    copy = ctx.copy_fd(fd)
    try:
        return pipes.queued_bytes(copy)
    finally:
        os.close(copy)


KIND = Inotify()
