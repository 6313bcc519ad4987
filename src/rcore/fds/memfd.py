"""memfd: an anonymous file in memory, with its name, contents and seals."""

import fcntl
import os

from ..errors import Unsupported
from ..linux import procfs
from .file import write_all
from .kind import Rebuilt, check_int
from ..record import replace

PREFIX = "/memfd:"
NAME_MAX = 249                              # MFD_NAME_MAX_LEN
CHUNK = 1 << 20


class Memfd(Rebuilt):
    """Captured: the name (from the path "/memfd:NAME"), offset and flags; once
    per file (several descriptions may open it), through /proc/PID/fd/N (a new
    description of the same file): `contents` (hex) when at most the dump's
    --unlinked-limit, `seals` (F_GET_SEALS), `mode`.
    Restart: memfd_create with the same name, filled, its mode and seals put
    back; each description opens it again with its own access mode and
    offset.  A shared mapping of it maps the same new memfd (restart.py).
    Restore: kept if still open; refused if closed since."""
    new_description = True

    def capture(self, ctx, f, fdinfo):
        seen = ctx.kind_data.setdefault("memfds", set())
        if not ctx.with_data or (f.dev, f.inode) in seen:
            return
        seen.add((f.dev, f.inode))
        with open(procfs.path(ctx.pid, "fd", str(f.fd)), "rb") as src:
            st = os.fstat(src.fileno())
            f.kind_state = {"seals": fcntl.fcntl(src.fileno(), fcntl.F_GET_SEALS),
                            "mode": st.st_mode & 0o7777}
            if st.st_size <= ctx.unlinked_limit:
                f.contents = src.read(ctx.unlinked_limit + 1)[:ctx.unlinked_limit].hex()
                f.contents_stored = True

    def decode(self, f):
        bytes.fromhex(f.contents)
        if not f.path.startswith(PREFIX) or len(f.path) - len(PREFIX) > NAME_MAX:
            raise ValueError(f"memfd name {f.path!r}")
        if "seals" in f.kind_state:
            check_int(f.kind_state["seals"], "seals", high=1 << 16)
        if "mode" in f.kind_state:
            check_int(f.kind_state["mode"], "mode", high=0o10000)

    def check(self, f, plan):
        if not _holder(plan, f).contents_stored:
            raise Unsupported(f"fd {f.fd}: the memfd {f.path} ({f.size} bytes) is not stored "
                              "in the core (larger than the dump's --unlinked-limit)")

    def open(self, plan, f):
        base = memfd_for(plan, f.dev, f.inode)
        flags = (f.flags & os.O_ACCMODE) | os.O_CLOEXEC
        fd = plan.own(os.open(f"/proc/self/fd/{base}", flags))
        os.lseek(fd, f.pos, os.SEEK_SET)
        return fd

    def describe(self, f):
        seals = f.kind_state.get("seals")
        return f"{f.size} bytes" + (f", seals {seals:#x}" if seals else "")

    def action(self, f, plan):
        return "a new memfd of the same name, contents and seals"


def _holder(plan, f):
    """The entry that holds the file's contents (the first of its descriptions)."""
    return next((e for e in plan.all_files if e.kind == "memfd" and (e.dev, e.inode) == (f.dev, f.inode)
                 and e.contents_stored), f)


def memfd_for(plan, dev, inode):
    """rcore's descriptor of the new memfd standing for checkpointed file (dev,
    inode), created once per plan.  Also used for shared mappings of it."""
    built = plan.kind_data.setdefault("memfds", {})
    if (dev, inode) not in built:
        f = next(e for e in plan.all_files if e.kind == "memfd" and (e.dev, e.inode) == (dev, inode)
                 and e.contents_stored)
        name = f.path[len(PREFIX):] if f.path.startswith(PREFIX) else f.path
        fd = plan.own(os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING))
        write_all(fd, bytes.fromhex(f.contents))
        mode = f.kind_state.get("mode")
        if mode is not None:
            os.fchmod(fd, mode)
        seals = f.kind_state.get("seals", 0)
        if seals:
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
        built[(dev, inode)] = fd
    return built[(dev, inode)]


KIND = Memfd()


def is_memfd_mapping(m):
    return m.shared and m.deleted and m.path.startswith(PREFIX)


def map_sources(plan, mappings, read_memory):
    """Shared mappings of memfds, turned into mappings of the rebuilt memfd
    through /proc/self/fd/N in the new process, so that the mapping and the
    descriptors stay one file.  A memfd no descriptor holds any more (closed
    after mmap) is made here from what is mapped (read_memory(addr, length):
    the core's bytes), at a spare number that finish() closes; its size beyond
    the mappings and its seals are not known."""
    numbers = {f.inode: f.fd for f in plan.files if f.kind == "memfd" and f.fd in plan.fds}
    spare = max([2, *plan.fds, *(f.fd for f in plan.files)]) + 1
    out = []
    for m in mappings:
        if not is_memfd_mapping(m):
            out.append(m)
            continue
        if m.inode not in numbers:
            size = max(e.offset + e.size for e in mappings if is_memfd_mapping(e)
                       and e.inode == m.inode)
            fd = plan.own(os.memfd_create(m.path[len(PREFIX):], os.MFD_CLOEXEC))
            os.ftruncate(fd, size)
            for e in mappings:
                if is_memfd_mapping(e) and e.inode == m.inode:
                    for off in range(0, e.size, CHUNK):
                        n = min(CHUNK, e.size - off)
                        os.pwrite(fd, read_memory(e.start + off, n), e.offset + off)
            plan.fds[spare] = fd
            plan.spare.append(spare)
            numbers[m.inode] = spare
            plan.warnings.append(f"the memfd {m.path} mapped at {m.start:#x} had no descriptor "
                                 f"left: made again from its mappings ({size} bytes, no seals)")
            spare += 1
        out.append(replace(m, path=f"/proc/self/fd/{numbers[m.inode]}", deleted=False))
    return out
