"""Incremental checkpoints: a core that stores only the pages written since its
parent checkpoint, and reading one through its chain of parents.

An incremental core (dump --incremental PARENT, with dirty tracking armed
relative to PARENT) is a complete core but for memory: its notes hold the whole
state; an RCORE_PARENT note names the parent (its path and checkpoint_id, so
that a parent replaced by another checkpoint is refused, while its own
flattened core is accepted); each mapping inherited from
the parent (Mapping.stored == INHERITED: the same private anonymous mapping,
tracked since) is cut into PT_LOADs: runs of pages written since the parent,
stored here, and runs unchanged, with p_filesz 0 (debuggers then report that
memory as unavailable instead of showing zeros).  Other mappings are stored as
in a full core.

Reading: CoreFile resolves a chain when opened (ChainData): nothing is
written; it lays out the standalone core's data as a virtual file (one segment
per mapping, the layout `rcore flatten` would write) whose pieces are read from
the newest core of the chain that stores each page, so restore, restart and
diff see an ordinary core whose data are read (CoreBytes) but never mapped
from a file.  `rcore flatten` writes that standalone core under a name."""

import bisect
import os

from .errors import CoreFormatError
from .memory import CHUNK
from .ranges import merge_ranges
from .record import record, replace

INHERITED = "incremental"


def parent_identity(core):
    return {"path": os.path.abspath(core.path),
            "checkpoint_id": core.state.extra.get("checkpoint_id", "")}


def open_parent(core):
    """The parent CoreFile of incremental `core` (opened without resolving its
    own chain), checked to be the very checkpoint the increment was made against."""
    from .elf.reader import CoreFile
    want = core.parent
    path = want.get("path", "")
    try:
        parent = CoreFile(path, resolve=False)
    except CoreFormatError as err:
        raise CoreFormatError(core.path, f"its parent checkpoint cannot be read: {err}") from None
    if not want.get("checkpoint_id") or \
            parent.state.extra.get("checkpoint_id") != want.get("checkpoint_id"):
        parent.close()
        raise CoreFormatError(core.path, f"its parent checkpoint {path} was replaced "
                                         "by another checkpoint")
    return parent


def _ancestors(core):
    """(path, parent) from core's parent up to the first full core: each parent a
    CoreFile opened without resolving and checked, or the CoreFormatError that
    ends the walk.  The caller closes what it gets."""
    seen = {os.path.abspath(core.path)}
    while core.parent:
        path = core.parent.get("path", "")
        if path in seen:
            yield path, CoreFormatError(core.path, f"its chain of parents loops at {path}")
            return
        seen.add(path)
        try:
            core = open_parent(core)
        except CoreFormatError as err:
            yield path, err
            return
        yield path, core


def open_chain(core):
    """[parent, grandparent, ..., the full core], each opened without resolving."""
    out = []
    try:
        for _, parent in _ancestors(core):
            if isinstance(parent, CoreFormatError):
                raise parent
            out.append(parent)
    except BaseException:
        for c in out:
            c.close()
        raise
    return out


def describe_chain(core):
    """[{path, status}] from core's parent up to the first full core."""
    out = []
    for path, parent in _ancestors(core):
        if isinstance(parent, CoreFormatError):
            out.append({"path": path, "status": str(parent)})
        else:
            out.append({"path": path, "status": "incremental" if parent.parent else "full"})
            parent.close()
    return out


@record
class Increment:
    """What an incremental dump builds on: the parent's identity (for the
    RCORE_PARENT note), its mappings, and the dirty.Tracking relative to it."""
    parent: dict
    mappings: list
    tracking: object = None


def prepare_increment(pid, parent_path):
    """(Increment, None) when process pid's dirty tracking is relative to the
    checkpoint at parent_path, else (None, why a full core is written)."""
    from . import dirty
    from .elf.reader import CoreFile
    tracking = dirty.load(pid)
    with CoreFile(parent_path, resolve=False) as parent:
        if tracking is None or tracking.baseline != dirty.core_identity(parent):
            return None, (f"full dump: dirty tracking is not armed relative to {parent_path} "
                          "(dump --track it first)")
        return Increment(parent_identity(parent), parent.state.mappings, tracking), None


def mark_inherited(plan, increment, written, sparse):
    """Mark the mappings of a dump's plan ((mapping, how) pairs) that the
    increment inherits (Mapping.stored = INHERITED): the parent has the same
    private anonymous mapping stored and dirty tracking covers all of it since
    (written: dirty.Written).  Mapping by mapping: the freeze waits for this;
    WrittenRuns cuts them into runs later."""
    parents = {(p.start, p.end) for p in increment.mappings
               if p.stored in ("all", INHERITED) and not p.file_backed and not p.shared}
    same = [m for m, how in plan if how == sparse and (m.start, m.end) in parents]
    for m, tracked in zip(same, written.tracks_whole(same)):
        if tracked:
            m.stored = INHERITED


class WrittenRuns:
    """Cuts the inherited mappings of a dump's plan into the runs of pages
    written since the parent (written: dirty.Written) and `always` page
    ranges, stored whatever tracking says (the rseq areas: the dump puts back
    their bytes of the frozen instant, which the kernel changed since).  Their
    unchanged pages then have no PT_LOAD."""

    def __init__(self, written, always=()):
        self.written, self.always = written, always
        self._runs = {}

    def runs(self, m):
        if m.start not in self._runs:
            forced = [(max(s, m.start), min(e, m.end)) for s, e in self.always
                      if s < m.end and e > m.start]
            written = self.written.written_in(m.start, m.end)
            self._runs[m.start] = [_Run(m, s, e) for s, e in
                                   (merge_ranges(written + forced) if forced else written)]
        return self._runs[m.start]

    def cut(self, plan):
        """plan ((mapping, how) pairs) with each inherited mapping replaced by
        its runs, (a _Run, how) each."""
        out = []
        for m, how in plan:
            if m.stored == INHERITED and not isinstance(m, _Run):
                out += [(run, how) for run in self.runs(m)]
            else:
                out.append((m, how))
        return out


class _Run:
    """A run of written pages of an inherited mapping, for the core writer and
    the dump's copier: the mapping's attributes with the run's addresses.
    (Thousands are made while the process is frozen: a Mapping copy per run
    cost 5-20 us each.)"""
    __slots__ = ("mapping", "start", "end", "anonymous")

    def __init__(self, mapping, start, end):
        self.mapping, self.start, self.end, self.anonymous = mapping, start, end, end - start

    @property
    def size(self):
        return self.end - self.start

    def __getattr__(self, name):
        return getattr(self.mapping, name)


def flatten(core, out_path):
    """Write the standalone core of incremental CoreFile `core` (opened without
    resolving) to out_path: the same state, every mapping whole, each page from
    the newest core of the chain that stores it.  Returns out_path."""
    from .elf.writer import CoreWriter
    chain = [core] + open_chain(core)
    try:
        proc = replace(core.state, mappings=[replace(m, stored="all") if m.stored == INHERITED
                                             else m for m in core.state.mappings])
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
                    _copy_mapping(chain, writer, m, filesz)
            writer.commit()
        finally:
            writer.abort()
    finally:
        for c in chain[1:]:
            c.close()
    return out_path


def _stored(core, start, end):
    """(start, end, file offset) of what core stores within [start, end)."""
    i = max(0, bisect.bisect_right(core.segments, start, key=lambda g: g.vaddr) - 1)
    out = []
    for seg in core.segments[i:]:
        if seg.vaddr >= end:
            break
        s, e = max(start, seg.vaddr), min(end, seg.vaddr + seg.filesz)
        if s < e:
            out.append((s, e, seg.offset + (s - seg.vaddr)))
    return out


def _sources(chain, m, filesz):
    """(start, end, core, file offset) for mapping m's first filesz bytes: each
    range from the newest core of the chain that stores it."""
    from .ranges import subtract_ranges
    start, end = m.start, m.start + filesz
    covered = []
    for core in chain:
        held = _stored(core, start, end)
        if not held:
            continue
        starts = [a for a, _, _ in held]
        for s, e in subtract_ranges([(a, b) for a, b, _ in held], covered):
            a, _, off = held[bisect.bisect_right(starts, s) - 1]
            yield s, e, core, off + (s - a)
        covered = merge_ranges(covered + [(a, b) for a, b, _ in held])
        if covered == [(start, end)]:
            return
    missing = subtract_ranges([(start, end)], covered)
    raise CoreFormatError(chain[0].path, f"no checkpoint of its chain holds {missing[0][0]:#x}")


def _copy_mapping(chain, writer, m, filesz):
    for s, e, core, off in _sources(chain, m, filesz):
        _copy_data(core, off, writer, writer.data_offset(m, s), e - s)


class ChainData:
    """The data of incremental CoreFile `core` through its chain, as a virtual
    standalone core: `segments` (one per mapping, a whole one for each
    inherited mapping) at offsets beyond the core's own file, and readinto()
    and extents() over those offsets (the interface of rebuild.CoreBytes),
    each piece read from the core of the chain that holds it.  Opening costs
    the chain's headers only: a restart from an increment no longer writes
    the flattened core first."""

    def __init__(self, core):
        from .elf.reader import Segment
        from .elf.writer import segment_flags
        from .rebuild import CoreBytes
        self.chain = [core] + open_chain(core)
        try:
            page = core.arch.PAGE_SIZE
            cursor = -(-core.size // page) * page     # past the core's own bytes
            # (voffset, length, CoreBytes, offset, dense): dense for the runs of an
            # inherited (private anonymous) mapping, whose holes are zero pages
            self.segments, self._pieces = [], []
            files = {id(c): CoreBytes(c, chain=False) for c in self.chain}
            for m in sorted(core.state.mappings, key=lambda m: m.start):
                own = core.segment_at(m.start)
                filesz = m.size if m.stored == INHERITED else (own.filesz if own else 0)
                seg = Segment.__new__(Segment)
                seg.vaddr, seg.memsz, seg.filesz = m.start, m.size, filesz
                seg.flags = own.flags if own else segment_flags(m.perms)
                seg.offset = cursor if filesz else 0
                self.segments.append(seg)
                if not filesz:
                    continue
                sources = (_sources(self.chain, m, filesz) if m.stored == INHERITED
                           else [(m.start, m.start + filesz, core, own.offset)])
                for s, e, c, off in sources:
                    self._pieces.append((cursor + (s - m.start), e - s, files[id(c)], off,
                                         m.stored == INHERITED))
                cursor += -(-filesz // page) * page
            self._pieces.sort(key=lambda p: p[0])
            self._starts = [p[0] for p in self._pieces]
        except BaseException:
            self.close()
            raise

    def close(self):
        for c in self.chain[1:]:
            c.close()
        self.chain = self.chain[:1]

    def _overlapping(self, offset, length):
        """(offset, length, piece or None) covering [offset, offset + length): the
        gaps between pieces (none within a mapping's data) read as zeros."""
        end = offset + length
        i = max(0, bisect.bisect_right(self._starts, offset) - 1)
        pos = offset
        while pos < end:
            piece = self._pieces[i] if i < len(self._pieces) else None
            if piece is None or piece[0] >= end:
                yield pos, end - pos, None
                return
            vstart, plen = piece[0], piece[1]
            if vstart + plen <= pos:
                i += 1
                continue
            if vstart > pos:
                yield pos, vstart - pos, None
                pos = vstart
            n = min(end, vstart + plen) - pos
            yield pos, n, piece
            pos += n
            i += 1

    def readinto(self, buf, offset, length):
        view = memoryview(buf)
        for pos, n, piece in self._overlapping(offset, length):
            at = pos - offset
            if piece is None:
                view[at:at + n] = bytes(n)
            else:
                piece[2].readinto(view[at:at + n], piece[3] + (pos - piece[0]), n)

    def extents(self, offset, length, sparse):
        """As CoreBytes.extents, adjacent data merged whatever file holds it: a
        reader then reads (readinto) and writes a big range at once rather than
        each of the thousands of pieces an old chain is cut into."""
        run = None                                          # [offset, length] of data
        for pos, n, piece in self._overlapping(offset, length):
            if piece is None:
                parts = [(pos, n, False)]
            elif piece[4] and n <= CHUNK:
                # pages written since a parent: a hole there is a zero page, read as
                # zeros (looking for holes would cost two calls per piece)
                parts = [(pos, n, True)]
            else:
                shift = piece[3] + (pos - piece[0]) - pos  # virtual -> the piece's file
                parts = [(off - shift, k, has)
                         for off, k, has in piece[2].extents(pos + shift, n, sparse)]
            for off, k, has in parts:
                if has and run is not None and run[0] + run[1] == off:
                    run[1] += k
                    continue
                if run is not None:
                    yield run[0], run[1], True
                    run = None
                if has:
                    run = [off, k]
                else:
                    yield off, k, False
        if run is not None:
            yield run[0], run[1], True


def _copy_data(src, src_off, writer, dst_off, length):
    """Copy bytes of src's file into the writer's, in the kernel (copy_file_range)
    where it can; the holes of large ranges stay holes."""
    if length <= CHUNK:         # a few pages written since the parent: no holes to keep
        _copy_bytes(src.fileno(), src_off, writer, dst_off, length)
        return
    from .rebuild import CoreBytes
    for off, n, has_data in CoreBytes(src).extents(src_off, length, True):
        if has_data:
            _copy_bytes(src.fileno(), off, writer, dst_off + (off - src_off), n)


def _copy_bytes(src_fd, src_off, writer, dst_off, n):
    while n:
        try:
            done = os.copy_file_range(src_fd, writer.fd, n, src_off, dst_off)
        except OSError:
            done = 0
        if done <= 0:               # another file system, or nothing copied: by hand
            data = os.pread(src_fd, min(n, CHUNK), src_off)
            if not data:
                raise CoreFormatError(writer.path, f"short read at offset {src_off}")
            writer.pwrite(data, dst_off)
            done = len(data)
        src_off, dst_off, n = src_off + done, dst_off + done, n - done
