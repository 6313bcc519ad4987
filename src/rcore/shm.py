"""Shared memory a restart makes again: the objects behind MAP_SHARED mappings
that no path reaches any more.

- MAP_SHARED|MAP_ANONYMOUS memory ("/dev/zero (deleted)", a shmem inode):
  rcore maps shared anonymous memory itself, opens that object through
  /proc/self/map_files (CAP_CHECKPOINT_RESTORE: root), fills it from the core
  and unmaps it; the process maps the descriptor, so the object is the same
  kind as the original (same name in maps, MADV_DONTNEED keeps the data).
  Without the capability it is a memfd (it then shows as
  /memfd:rcore-shared-anonymous (deleted)), and restart says so.
- a deleted file mapped shared (a POSIX named semaphore /dev/shm/sem.NAME, a
  shm_open'ed object unlinked since): made again with the core's bytes under
  its old name if that is free (O_EXCL), else under a private name beside it,
  opened and unlinked at once, so that the process maps a deleted file of the
  same name again.  A deleted file a descriptor holds too is the ghost the
  descriptor layer made (fds/ghost.py): one file for both.
- SysV shared memory ("/SYSV%08x (deleted)", inode = shmid): the segment is
  kept when it still exists (sysvipc.restore checked id, key, size, owner and
  mode), or recreated by sysvipc.restore with the same id and filled here from
  the core; the process attaches it by an injected shmat (attach()), so that it
  is a real attachment: shm_nattch counts it and shmdt() detaches it, which a
  mapping of the segment's file through map_files would not be (shmdt looks
  for the shm vm_ops; CRIU's restorer calls shmat too).

The first two become mappings of a descriptor installed in the process at a
spare number (/proc/self/fd/N, closed by fds.finish once mapped), as memfd
mappings are (fds/memfd.py).  `registry`, one dict for the whole tree, makes
each object once: the first process holding it creates it, each process
fills the parts of it that its own mappings cover and no earlier process
filled, and every process maps the same object.

For a tree (restart.py does the same for one process, with a fresh dict):

    registry = {}
    made = sysvipc.restore(root_core.state.sysvipc, registry, warnings)  # once
    for each process, in pre-order, as its core's owner (owner.as_owner):
        plan = fds.plan_files(...)
        plan.mappings = shm.map_sources(plan, plan.mappings, core.read, registry)
    ... every process built ...
    on failure: sysvipc.undo(made)

An object's descriptor belongs to the plan of the first process that maps it
(plan.own): every plan must stay open until every process of the tree has been
rebuilt (the others' spare descriptors are copies of it, installed by spawn)."""

import ctypes
import errno
import mmap
import os

from . import arch, owner, ranges, rebuild
from .record import field, record, replace
from .state import is_sysv
from .errors import Incompatible, Unsupported
from .linux import libc, procfs
from .linux.libc import SHM_EXEC, SHM_RDONLY, SHM_REMAP
from .memory import nonzero_runs

CHUNK = 1 << 20
FALLBACK_NAME = "rcore-shared-anonymous"
MREMAP_MAYMOVE, MREMAP_FIXED = 1, 2
NOT_FILES = {"ht", "io", "pf"}      # VmFlags of hugetlb and device mappings
SEGSZ = arch.host().SHMID64_SEGSZ


@record
class Shared:
    """One rebuilt object: rcore's descriptor of it (None for SysV: the
    segment itself), the file ranges filled so far, and its size."""
    fd: int = None
    size: int = 0
    filled: list = field(default_factory=list)     # (start, end) file offsets
    removed: bool = False       # SysV: marked for removal (IPC_RMID) at the checkpoint


def kind_of(m):
    """"anon", "deleted" or "sysv" for a shared mapping whose object restart
    makes here; None for any other."""
    if not m.shared:
        return None
    if rebuild.is_shared_anon(m):
        return "anon"
    if is_sysv(m):
        return "sysv"
    if not m.deleted or not m.file_backed or m.path.startswith("/memfd:") \
            or NOT_FILES & set(m.vmflags) or os.path.basename(m.path).startswith("["):
        return None     # hugetlb ("/anon_hugepage"), device memory, "/[aio]"...
    return "deleted"


def rebuildable(m):
    """Can a restart rebuild this mapping of a deleted object (restart.py's
    check): the core must hold its bytes."""
    return kind_of(m) is not None and m.stored == "all"


def map_sources(plan, mappings, read_memory, registry):
    """The mappings to rebuild, with each shared object made (or found in
    `registry`) and filled: anonymous and deleted ones become mappings of
    /proc/self/fd/N (a spare number in plan.fds, closed by fds.finish), SysV
    ones stay and are attached by rebuild (attach()).  read_memory(addr,
    length): the core's bytes.  Call it with the core owner's identity
    (owner.as_owner), after fds.plan_files."""
    # Numbers of this process's descriptors (kind_data is the whole tree's).
    numbers = plan.kind_data.setdefault(("shm", plan.pid), {})
    spare = max([2, *plan.fds, *plan.spare, *(f.fd for f in plan.files)]) + 1
    out = []
    for m in mappings:
        kind = kind_of(m)
        if kind is None:
            out.append(m)
            continue
        if m.stored != "all":
            raise Unsupported(f"the shared mapping {m.start:#x}-{m.end:#x} of {m.path} is "
                              "not stored in the core")
        if kind == "sysv":
            _sysv_source(plan, m, mappings, read_memory, registry)
            out.append(m)
            continue
        key = (m.dev, m.inode)
        mine = [e for e in mappings if (e.dev, e.inode) == key and kind_of(e) == kind]
        size = max(e.offset + e.size for e in mine)
        obj = registry.get(key)
        if obj is None:
            obj = registry[key] = _make(plan, kind, size, m)
        if size > obj.size:         # as far as this process's mappings reach
            os.ftruncate(obj.fd, size)
            obj.size = size
        _fill(obj, mine, read_memory, lambda off, data: os.pwrite(obj.fd, data, off))
        if key not in numbers:
            plan.fds[spare] = obj.fd
            plan.spare.append(spare)
            numbers[key] = spare
            spare += 1
        out.append(replace(m, path=f"/proc/self/fd/{numbers[key]}", deleted=False))
    return out


def _make(plan, kind, size, m):
    if kind == "anon":
        return Shared(_anonymous(plan, size), size)
    return Shared(_deleted_file(plan, m), 0)


def _anonymous(plan, size):
    """A shmem object of MAP_SHARED|MAP_ANONYMOUS memory: rcore maps some
    itself and keeps a descriptor of it (/proc/self/map_files needs
    CAP_CHECKPOINT_RESTORE); without that, a memfd."""
    area = mmap.mmap(-1, size, mmap.MAP_SHARED)
    view = ctypes.c_char.from_buffer(area)
    addr = ctypes.addressof(view)
    del view                    # it pins the buffer: area.close() needs it gone
    try:
        with owner.as_rcore():
            fd = os.open(f"/proc/self/map_files/{addr:x}-{addr + size:x}",
                         os.O_RDWR | os.O_CLOEXEC)
        return plan.own(fd)
    except OSError as err:
        plan.warnings.append(f"shared anonymous memory comes back as a memfd "
                             f"(/memfd:{FALLBACK_NAME}): /proc/self/map_files, which gives "
                             f"rcore the kernel's own kind of object, refused it "
                             f"({err.strerror}; it needs CAP_CHECKPOINT_RESTORE)")
        fd = plan.own(os.memfd_create(FALLBACK_NAME, os.MFD_CLOEXEC))
        os.ftruncate(fd, size)
        return fd
    finally:
        area.close()


def _deleted_file(plan, m):
    """The deleted file m maps, made again: the ghost of a descriptor that holds
    it too, else a new file under its old name if free, else a private name
    beside it; opened, then unlinked at once."""
    ghosts = plan.kind_data.get("ghosts", {})
    ghost = ghosts.get((procfs.parse_dev(m.dev), m.inode))
    if ghost is not None:
        return plan.own(os.open(ghost, os.O_RDWR | os.O_CLOEXEC))
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(m.path, flags, 0o600)
        made = m.path
    except OSError as err:
        why = "another file has its name now" if err.errno == errno.EEXIST else err.strerror
        import tempfile         # (rarely needed: not imported by every rcore command)
        fd, made = None, None
        for where in (os.path.dirname(m.path) or "/", tempfile.gettempdir()):
            try:
                fd, made = tempfile.mkstemp(prefix=os.path.basename(m.path) + ".rcore-",
                                            dir=where)
                break
            except OSError:
                continue
        if fd is None:
            raise Incompatible(f"cannot make the deleted {m.path} (mapped at {m.start:#x}) "
                               f"again: {err.strerror}") from None
        plan.warnings.append(f"the deleted {m.path} mapped at {m.start:#x} comes back deleted "
                             f"as {made} ({why})")
    os.unlink(made)
    return plan.own(fd)


def _fill(obj, mappings, read_memory, write):
    """Write the core's bytes of `mappings` (all of one object) where no earlier
    process filled them.  The object is new (zeros): zero pages are left out,
    so that memory the program never touched takes none now."""
    for start, end in _missing(obj, mappings):
        for e in mappings:
            s, t = max(start, e.offset), min(end, e.offset + e.size)
            for off in range(s, t, CHUNK):
                n = min(CHUNK, t - off)      # t may end inside a page (SysV)
                data = read_memory(e.start + off - e.offset, _page_up(n))
                for run, length in nonzero_runs(data, len(data)):
                    length = min(length, n - run)
                    if length > 0:
                        write(off + run, data[run:run + length])
    obj.filled = ranges.merge_ranges(obj.filled + _wanted(obj, mappings))


def _wanted(obj, mappings):
    """The object's ranges the mappings show (within its size: a SysV segment's
    last page goes past it)."""
    return [(e.offset, min(e.offset + e.size, obj.size)) for e in mappings
            if e.offset < obj.size]


def _missing(obj, mappings):
    """The ranges the mappings show that no process has filled yet."""
    return ranges.subtract_ranges(_wanted(obj, mappings), obj.filled)


# --- SysV shared memory ------------------------------------------------------------

def sysv_key(shmid):
    return ("sysv", shmid)


def _sysv_source(plan, m, mappings, read_memory, registry):
    """Check that segment m.inode is there to attach (kept or recreated by
    sysvipc.restore, which put it in the registry), and fill a recreated one."""
    shmid = m.inode
    obj = registry.get(sysv_key(shmid))
    if obj is None:
        # A core without RCORE_SYSVIPC (or restore not called): the segment must
        # still exist; nothing says its key, so it is not compared.
        try:
            size = segment_size(shmid)
        except OSError:
            raise Unsupported(f"the SysV shared memory segment {shmid} mapped at "
                              f"{m.start:#x} is gone, and the core does not describe it") \
                from None
        if size < m.offset + m.size - (rebuild.PAGE - 1):
            raise Incompatible(f"the SysV shared memory segment {shmid} is {size} bytes now, "
                               f"smaller than its mapping at {m.start:#x}")
        plan.warnings.append(f"the SysV shared memory segment {shmid} is attached as it is "
                             "now (the core does not record its key and owner to compare)")
        registry[sysv_key(shmid)] = Shared(size=size, filled=[(0, size)])
        return
    if obj.removed:
        # Marked for removal at the checkpoint: again once this process has
        # attached it (the others of a tree attach it by id all the same).
        obj.removed = False
        plan.at_commit.append(lambda: libc.syscall("shmctl", shmid, libc.IPC_RMID, 0))
    mine = [e for e in mappings if kind_of(e) == "sysv" and e.inode == shmid]
    if not _missing(obj, mine):
        return          # kept as it is, or filled by an earlier process
    with owner.as_rcore():      # its mode may not let its owner write it
        addr = libc.syscall("shmat", shmid, 0, 0)
    try:
        _fill(obj, mine, read_memory, lambda off, data: ctypes.memmove(addr + off, data,
                                                                         len(data)))
    finally:
        libc.syscall("shmdt", addr)


def attach(inj, m):
    """Attach SysV segment m.inode at m.start in the process (rebuild's _map):
    shmat with SHM_REMAP where the mapping starts the segment, else the
    segment attached anywhere, the mapped part moved into place and the rest
    detached.  SHM_RDONLY unless the mapping may be written (VmFlags mw), as
    the original attach decided."""
    flags = (0 if "mw" in m.vmflags else SHM_RDONLY) | (SHM_EXEC if "me" in m.vmflags and
                                                       m.perms[2] == "x" else 0)
    seg = _page_up(segment_size(m.inode))
    if m.offset == 0:
        base = inj.call("shmat", m.inode, m.start, flags | SHM_REMAP)
    else:
        base = inj.call("shmat", m.inode, 0, flags)
        inj.call("mremap", base + m.offset, m.size, m.size, MREMAP_MAYMOVE | MREMAP_FIXED,
                 m.start)
    for s, e in ranges.subtract_ranges([(base, base + seg)], [(m.start, m.end)]):
        inj.call("munmap", s, e - s)


def segment_size(shmid):
    """shm_segsz of a SysV segment (IPC_STAT)."""
    return int.from_bytes(libc.ipc_stat("shmctl", shmid).raw[SEGSZ:SEGSZ + 8], "little")


def _page_up(n):
    return (n + rebuild.PAGE - 1) & ~(rebuild.PAGE - 1)
