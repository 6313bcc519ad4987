"""Incremental checkpoints: a core that stores only the pages written since its
parent checkpoint, and reading one through its chain of parents.

An incremental core (dump --incremental PARENT, with dirty tracking armed
relative to PARENT) is a complete core but for memory: its notes hold the whole
state; an RCORE_PARENT note names the parent (path, size, mtime and a digest of
its notes, so that a replaced parent is refused); each mapping inherited from
the parent (Mapping.stored == INHERITED: the same private anonymous mapping,
tracked since) is cut into PT_LOADs: runs of pages written since the parent,
stored here, and runs unchanged, with p_filesz 0 (debuggers then report that
memory as unavailable instead of showing zeros).  Other mappings are stored as
in a full core.

Reading: CoreFile resolves a chain when opened (flatten_into): it writes the
standalone core into an unlinked temporary file beside the core and serves
memory from there, so restore, restart and diff see an ordinary core.
`rcore flatten` writes that standalone core under a name."""

import copy
import dataclasses
import hashlib
import os

from .errors import CoreFormatError
from .memory import CHUNK

INHERITED = "incremental"


def notes_digest(core):
    """sha256 over a core's notes: changes when the checkpoint is replaced."""
    h = hashlib.sha256()
    for owner, ntype, desc in core.notes:
        h.update(f"{owner}:{ntype}:{len(desc)}:".encode())
        h.update(desc)
    return h.hexdigest()


def parent_identity(core):
    st = os.stat(core.path)
    return {"path": os.path.abspath(core.path), "size": st.st_size,
            "mtime_ns": st.st_mtime_ns, "notes_sha256": notes_digest(core)}


def open_parent(core, resolve=True):
    """The parent CoreFile of incremental `core`, checked to be the very
    checkpoint the increment was made against."""
    from .elf.reader import CoreFile
    want = core.parent
    path = want.get("path", "")
    try:
        parent = CoreFile(path, resolve=resolve)
    except CoreFormatError as err:
        raise CoreFormatError(core.path, f"its parent checkpoint cannot be read: {err}") from None
    try:
        st = os.stat(path)
        if (st.st_size, st.st_mtime_ns) != (want.get("size"), want.get("mtime_ns")) \
                or notes_digest(parent) != want.get("notes_sha256"):
            raise CoreFormatError(core.path, f"its parent checkpoint {path} was replaced "
                                             "since (size, mtime or notes differ)")
    except BaseException:
        parent.close()
        raise
    return parent


def describe_chain(core):
    """[{path, status}] from core's parent up to the first full core."""
    out, cur, opened = [], core, []
    seen = {os.path.abspath(core.path)}
    try:
        while cur.parent:
            path = cur.parent.get("path", "")
            if path in seen:
                out.append({"path": path, "status": "a loop"})
                break
            seen.add(path)
            try:
                parent = open_parent(cur, resolve=False)
            except CoreFormatError as err:
                out.append({"path": path, "status": str(err)})
                break
            opened.append(parent)
            out.append({"path": path, "status": "incremental" if parent.parent else "full"})
            cur = parent
    finally:
        for c in opened:
            c.close()
    return out


@dataclasses.dataclass
class Increment:
    """What an incremental dump builds on: the parent's identity (for the
    RCORE_PARENT note) and its mappings."""
    parent: dict
    mappings: list


def prepare_increment(pid, parent_path):
    """(Increment, None) when process pid's dirty tracking is relative to the
    checkpoint at parent_path, else (None, why a full core is written)."""
    from . import dirty
    from .elf.reader import CoreFile
    tracking = dirty.load(pid)
    try:
        armed = tracking is not None and tracking.baseline == dirty.core_identity(parent_path)
    except OSError as err:
        return None, f"full dump: {parent_path}: {err.strerror}"
    if not armed:
        return None, (f"full dump: dirty tracking is not armed relative to {parent_path} "
                      "(dump --track it first)")
    with CoreFile(parent_path, resolve=False) as parent:
        return Increment(parent_identity(parent), parent.state.mappings), None


def increment_plan(plan, segments, increment, written, sparse):
    """Cut a dump's plan and segments for an incremental core.  plan: (mapping,
    how) pairs; segments: the writer's (mapping, filesz) in the same order.  A
    mapping is inherited when the parent has the same private anonymous mapping
    stored and dirty tracking covers all of it since (written: dirty.Written).
    Inherited mappings are copied as their written runs only (a Mapping per
    run), and their unchanged runs become segments of filesz 0."""
    parents = {(p.start, p.end) for p in increment.mappings
               if p.stored in ("all", INHERITED) and not p.file_backed and not p.shared}
    new_plan, new_segments = [], []
    for (m, how), seg in zip(plan, segments):
        if how != sparse or (m.start, m.end) not in parents \
                or written.split(m.start, m.end) != [(m.start, m.end, True)]:
            new_plan.append((m, how))
            new_segments.append(seg)
            continue
        m.stored = INHERITED
        for s, e in written.written_in(m.start, m.end):
            run = dataclasses.replace(m, start=s, end=e, anonymous=e - s)
            new_segments.append((run, e - s))
            new_plan.append((run, how))
    return new_plan, new_segments


def flatten(core, out_path):
    """Write the standalone core of incremental CoreFile `core` (opened without
    resolving) to out_path: the same state, every mapping whole, memory from the
    core or its parents.  Returns out_path."""
    from .elf.writer import CoreWriter
    parent = open_parent(core)                  # resolved: a standalone core
    try:
        proc = copy.copy(core.state)
        proc.mappings = [dataclasses.replace(m, stored="all") if m.stored == INHERITED else m
                         for m in core.state.mappings]
        inherited = {m.start for m in core.state.mappings if m.stored == INHERITED}
        segments = []
        for m in proc.mappings:
            seg = core.segment_at(m.start)
            segments.append((m, m.size if m.start in inherited else
                             seg.filesz if seg is not None else 0))
        writer = CoreWriter(out_path, proc, segments, core.arch)
        writer.open()
        try:
            for m, filesz in segments:
                if filesz:
                    _copy_mapping(core, parent, writer, m, filesz)
            writer.commit()
        finally:
            writer.abort()
    finally:
        parent.close()
    return out_path


def _copy_mapping(core, parent, writer, m, filesz):
    """Mapping m's bytes into the writer: for each of core's segments within it,
    from the core when stored there, else from the parent."""
    addr, end = m.start, m.start + filesz
    while addr < end:
        seg = core.segment_at(addr)
        if seg is None:             # unchanged since the parent: up to the next run
            later = [x.vaddr for x in core.segments if x.vaddr > addr]
            stop = min([end] + later[:1])
        else:
            stop = min(end, seg.end)
        if seg is not None and seg.filesz:
            src, src_off = core, seg.offset + (addr - seg.vaddr)
            stop = min(stop, seg.vaddr + seg.filesz)
        else:
            where = parent.stored_range(addr)
            if where is None:
                raise CoreFormatError(core.path, f"neither it nor its parent holds "
                                                 f"{addr:#x}")
            src, src_off = parent, where[0]
            stop = min(stop, addr + where[1])
        _copy_extents(src, src_off, writer, writer.data_offset(m, addr), stop - addr)
        addr = stop


def _copy_extents(src, src_off, writer, dst_off, length):
    """Copy the data extents of src's file (holes stay holes)."""
    from .rebuild import CoreBytes
    buf = bytearray(CHUNK)
    for off, n, has_data in CoreBytes(src).extents(src_off, length, True):
        if not has_data:
            continue
        for p in range(0, n, CHUNK):
            k = min(CHUNK, n - p)
            got = os.preadv(src.fileno(), [memoryview(buf)[:k]], off + p)
            writer.pwrite(memoryview(buf)[:got], dst_off + (off - src_off) + p)


def flatten_into(core):
    """Resolve incremental CoreFile `core` in place: its standalone core is
    written beside it under a temporary name, opened, and unlinked; returns the
    open file object."""
    directory = os.path.dirname(os.path.abspath(core.path))
    tmp = os.path.join(directory, f".{os.path.basename(core.path)}.flat-{os.getpid()}")
    try:
        flatten(core, tmp)
        f = open(tmp, "rb")
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    return f
