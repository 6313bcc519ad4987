"""diff: what a process did between two of its states.

Each side is a ProcessState with a memory reader: a core file (CoreImage) or a
live process (LiveImage, see capture_live).  compare() returns a plain dict
(for --json); format_text() turns it into lines for people.

Memory is compared only where either side can hold data: the core's stored
extents (holes of a sparse core are zero pages), the live process's populated
pages (pagemap).  Pages neither side holds are zero (anonymous) or the mapped
file's bytes on both sides, hence equal.  Ranges are compared 1 MiB at a time,
bytes equality first; only chunks that differ are looked at page by page."""

import os
import signal

from .memory import CHUNK, PAGE, LiveMemory
from .ranges import merge_ranges
from .rebuild import CoreBytes
from .record import record

# --- the two sides -------------------------------------------------------------------

class CoreImage:
    """Memory of a core file: its stored bytes, the mapped file's bytes where a
    file mapping is not stored, zeros elsewhere."""

    def __init__(self, core):
        self.core = core
        self.bytes = CoreBytes(core)
        self._files = {}

    def close(self):
        for fd in self._files.values():
            if fd is not None:
                os.close(fd)
        self._files.clear()

    def _stored(self, start, end):
        """(file offset, stored end address) of the core's data from start, or None."""
        where = self.core.stored_range(start)
        if where is None:
            return None
        off, avail = where
        return off, min(end, start + avail)

    def data_runs(self, m, start, end):
        """[(addr, length)] in [start, end) of mapping m where the core has data."""
        where = self._stored(start, end)
        if where is None:
            return []
        off, stop = where
        return [(start + (eoff - off), elen) for eoff, elen, has in
                self.bytes.extents(off, stop - start, self.core.has_rcore) if has]

    def readinto(self, buf, m, addr, n):
        view = memoryview(buf)[:n]
        where = self._stored(addr, addr + n)
        stored = 0
        if where is not None:
            off, stop = where
            stored = stop - addr
            self.bytes.readinto(view, off, stored)
        if stored < n:
            self._unstored(view[stored:], m, addr + stored)

    def _unstored(self, view, m, addr):
        view[:] = bytes(len(view))
        fd = self._file(m) if m.file_backed else None
        if fd is not None:
            got = os.preadv(fd, [view], m.offset + addr - m.start)
            view[got:] = bytes(len(view) - got)

    def _file(self, m):
        if m.path not in self._files:
            try:
                self._files[m.path] = os.open(m.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self._files[m.path] = None
        return self._files[m.path]


class LiveImage:
    """Memory of a live process through /proc/PID/mem and pagemap."""

    def __init__(self, pid):
        self.mem = LiveMemory(pid)

    def close(self):
        self.mem.close()

    def data_runs(self, m, start, end):
        if m.shared and not m.file_backed or m.deleted:
            return [(start, end - start)]       # held nowhere else: as the dump stores it
        if m.file_backed and m.shared:
            return []                           # the file itself
        return self.mem.populated_runs(start, end, private_only=m.file_backed)

    def readinto(self, buf, m, addr, n):
        got = self.mem.readinto(buf, addr, n)
        if got < n:
            buf[got:n] = bytes(n - got)


@record
class Side:
    """One side of a diff: a checkpoint or the live process."""
    label: str
    state: object           # ProcessState
    image: object           # CoreImage or LiveImage


def capture_live(pid):
    """The ProcessState of live process pid, taken in one brief freeze (the same
    capture as a dump, without memory: a few calls run inside it, then it runs
    on).  Its memory is read afterwards, while it runs."""
    from .capture import capture_mappings, capture_process
    from .interrupts import signals_held
    from .linux import inject, procfs
    from .linux.ptrace import FrozenProcess
    run_state = procfs.read_stat(pid).state
    with signals_held(), FrozenProcess(pid) as frozen:
        mappings, files, _ = capture_mappings(pid)
        syscall_addr = inject.find_syscall_insn(pid, mappings)
        return capture_process(frozen, syscall_addr, mappings, files, run_state,
                               unlinked_limit=0)


# --- comparison ------------------------------------------------------------------------

def compare(a, b):
    """Everything that differs from Side a to Side b, as a dict."""
    sa, sb = a.state, b.state
    layout, pairs = _compare_layout(sa.mappings, sb.mappings)
    memory = _compare_memory(a.image, b.image, pairs)
    out = {
        "a": a.label, "b": b.label,
        "mappings": layout,
        "memory": memory,
        "memory_total": {"pages": sum(r["pages"] for r in memory),
                         "bytes": sum(r["bytes"] for r in memory)},
        "threads": _compare_threads(sa.threads, sb.threads),
        "files": _compare_files(sa.files, sb.files),
        "signals": _compare_signals(sa, sb),
        "limits": [{"name": k, "a": sa.rlimits.get(k), "b": sb.rlimits.get(k)}
                   for k in sorted(set(sa.rlimits) | set(sb.rlimits))
                   if sa.rlimits.get(k) != sb.rlimits.get(k)],
        "process": {k: {"a": va, "b": vb} for k, va, vb in _process_fields(sa, sb) if va != vb},
    }
    return out


def _process_fields(sa, sb):
    yield "cwd", sa.cwd, sb.cwd
    yield "umask", oct(sa.umask), oct(sb.umask)
    yield "brk", sa.mm.brk, sb.mm.brk
    yield "exe", sa.exe.path if sa.exe else None, sb.exe.path if sb.exe else None
    yield "creds", sa.creds, sb.creds
    yield "itimers", sa.itimers, sb.itimers


def _same_backing(x, y):
    if x.shared != y.shared or x.file_backed != y.file_backed or x.path != y.path:
        return False
    if x.file_backed:
        return x.inode == y.inode and x.offset - x.start == y.offset - y.start
    return True


def _brief(m):
    return {"start": m.start, "end": m.end, "perms": m.perms, "path": m.path}


def _compare_layout(ma, mb):
    """Mappings added, removed, reprotected or replaced (another backing at the
    same addresses), by address range; and the (start, end, a, b) pieces where
    both sides map the same backing, whose memory is compared."""
    cuts = sorted({x for m in ma + mb for x in (m.start, m.end)})
    ia = ib = 0
    pieces = []             # (start, end, a mapping or None, b mapping or None)
    for s, e in zip(cuts, cuts[1:]):
        while ia < len(ma) and ma[ia].end <= s:
            ia += 1
        while ib < len(mb) and mb[ib].end <= s:
            ib += 1
        x = ma[ia] if ia < len(ma) and ma[ia].start <= s else None
        y = mb[ib] if ib < len(mb) and mb[ib].start <= s else None
        if x or y:
            pieces.append((s, e, x, y))
    kinds = {"added": [], "removed": [], "reprotected": [], "replaced": []}
    pairs = []
    for s, e, x, y in pieces:
        if x is None:
            kind, entry = "added", dict(_brief(y), start=s, end=e)
        elif y is None:
            kind, entry = "removed", dict(_brief(x), start=s, end=e)
        elif not _same_backing(x, y):
            kind, entry = "replaced", {"start": s, "end": e, "a": _brief(x), "b": _brief(y)}
        else:
            pairs.append((s, e, x, y))
            if x.perms == y.perms:
                continue
            kind, entry = "reprotected", {"start": s, "end": e, "path": y.path,
                                          "a": x.perms, "b": y.perms}
        _append_merged(kinds[kind], entry)
    return kinds, pairs


def _append_merged(entries, entry):
    """Adjacent pieces of one change (a mapping split by its neighbours' cuts)
    become one entry."""
    if entries:
        last = entries[-1]
        if last["end"] == entry["start"] and \
                {k: v for k, v in last.items() if k not in ("start", "end")} == \
                {k: v for k, v in entry.items() if k not in ("start", "end")}:
            last["end"] = entry["end"]
            return
    entries.append(entry)


def _compare_memory(ia, ib, pairs):
    """Per mapping of b: pages and bytes that differ, where both sides map it."""
    out = {}
    abuf, bbuf = bytearray(CHUNK), bytearray(CHUNK)
    for s, e, x, y in pairs:
        if "[vvar" in y.path or y.path == "[vsyscall]":
            continue
        runs = merge_ranges([(a, a + n) for a, n in ia.data_runs(x, s, e) + ib.data_runs(y, s, e)])
        pages = nbytes = 0
        for rs, re in runs:
            for at in range(rs, re, CHUNK):
                n = min(CHUNK, re - at)
                ia.readinto(abuf, x, at, n)
                ib.readinto(bbuf, y, at, n)
                if abuf[:n] == bbuf[:n]:
                    continue
                p, d = _count_differences(abuf, bbuf, n)
                pages += p
                nbytes += d
        if pages:
            r = out.setdefault(y.start, {"start": y.start, "end": y.end, "path": y.path,
                                         "pages": 0, "bytes": 0})
            r["pages"] += pages
            r["bytes"] += nbytes
    return [out[k] for k in sorted(out)]


def _count_differences(abuf, bbuf, n):
    """(pages, bytes) that differ in abuf[:n] and bbuf[:n]."""
    pages = nbytes = 0
    va, vb = memoryview(abuf), memoryview(bbuf)
    for p in range(0, n, PAGE):
        x, y = va[p:p + PAGE], vb[p:p + PAGE]
        if x == y:
            continue
        pages += 1
        xor = int.from_bytes(x, "little") ^ int.from_bytes(y, "little")
        nbytes += len(x) - xor.to_bytes(len(x), "little").count(0)
    return pages, nbytes


def _compare_threads(ta, tb):
    a = {t.tid: t for t in ta}
    b = {t.tid: t for t in tb}
    changed = []
    for tid in sorted(set(a) & set(b)):
        x, y = a[tid], b[tid]
        regs = {k: [x.regs.get(k), y.regs.get(k)] for k in y.regs
                if x.regs.get(k) != y.regs.get(k)}
        entry = {"tid": tid, "registers": regs}
        if x.xstate and y.xstate and x.xstate != y.xstate:
            entry["xstate"] = True          # FPU/SSE/AVX state differs
        for name in ("sigaltstack", "rseq", "robust_list", "clear_child_tid", "comm"):
            if getattr(x, name) != getattr(y, name):
                entry[name] = [getattr(x, name), getattr(y, name)]
        if len(entry) > 2 or regs:
            changed.append(entry)
    return {"added": sorted(set(b) - set(a)), "removed": sorted(set(a) - set(b)),
            "changed": changed}


def _fd_brief(f):
    return {"fd": f.fd, "kind": f.kind, "path": f.path, "pos": f.pos}


def _compare_files(fa, fb):
    a = {f.fd: f for f in fa}
    b = {f.fd: f for f in fb}
    out = {"opened": [_fd_brief(b[fd]) for fd in sorted(set(b) - set(a))],
           "closed": [_fd_brief(a[fd]) for fd in sorted(set(a) - set(b))],
           "reopened": [], "moved": [], "flags": []}
    for fd in sorted(set(a) & set(b)):
        x, y = a[fd], b[fd]
        if (x.path, x.inode, x.dev, x.kind) != (y.path, y.inode, y.dev, y.kind):
            out["reopened"].append({"fd": fd, "a": _fd_brief(x), "b": _fd_brief(y)})
            continue
        if x.pos != y.pos:
            out["moved"].append({"fd": fd, "path": y.path, "a": x.pos, "b": y.pos})
        if (x.flags, x.cloexec) != (y.flags, y.cloexec):
            out["flags"].append({"fd": fd, "path": y.path, "a": [x.flags, x.cloexec],
                                 "b": [y.flags, y.cloexec]})
    return out


def signal_name(signo):
    try:
        return signal.Signals(signo).name
    except ValueError:
        rtmin = signal.SIGRTMIN
        return f"SIGRTMIN+{signo - rtmin}" if signo > rtmin else f"SIG{signo}"


def _pending_signals(siginfos):
    return sorted(int.from_bytes(si[:4], "little", signed=True) for si in siginfos)


def _compare_signals(sa, sb):
    ha = {s.signo: s for s in sa.sigactions}
    hb = {s.signo: s for s in sb.sigactions}
    handlers = []
    for signo in sorted(set(ha) | set(hb)):
        x, y = ha.get(signo), hb.get(signo)
        dx, dy = (x.to_dict() if x else None), (y.to_dict() if y else None)
        if dx != dy:
            handlers.append({"signo": signo, "name": signal_name(signo), "a": dx, "b": dy})
    ta = {t.tid: t for t in sa.threads}
    masks, pending = [], []
    for t in sb.threads:
        x = ta.get(t.tid)
        if x is None:
            continue
        if x.sigmask != t.sigmask:
            masks.append({"tid": t.tid, "a": x.sigmask, "b": t.sigmask})
        if _pending_signals(x.pending) != _pending_signals(t.pending):
            pending.append({"tid": t.tid, "a": _pending_signals(x.pending),
                            "b": _pending_signals(t.pending)})
    shared = None
    if _pending_signals(sa.shared_pending) != _pending_signals(sb.shared_pending):
        shared = {"a": _pending_signals(sa.shared_pending),
                  "b": _pending_signals(sb.shared_pending)}
    return {"handlers": handlers, "masks": masks, "pending": pending, "shared_pending": shared}


# --- text ---------------------------------------------------------------------------------

def _signals_text(signos):
    return ",".join(map(signal_name, signos)) or "-"


def _mask_names(mask):
    return _signals_text([s for s in range(1, 65) if mask >> (s - 1) & 1])


def _handler_text(h):
    if h is None:
        return "-"
    what = {0: "SIG_DFL", 1: "SIG_IGN"}.get(h["handler"], f"{h['handler']:#x}")
    return f"{what} flags {h['flags']:#x} mask {_mask_names(h['mask'])}"


def _range(r):
    return f"{r['start']:#x}-{r['end']:#x}"


def format_text(d):
    lines = [f"--- {d['a']}", f"+++ {d['b']}"]
    lay = d["mappings"]
    for m in lay["added"]:
        lines.append(f"mapping added       {_range(m)} {m['perms']} {m['path']}".rstrip())
    for m in lay["removed"]:
        lines.append(f"mapping removed     {_range(m)} {m['perms']} {m['path']}".rstrip())
    for m in lay["reprotected"]:
        lines.append(f"mapping reprotected {_range(m)} {m['a']} -> {m['b']} {m['path']}".rstrip())
    for m in lay["replaced"]:
        lines.append(f"mapping replaced    {_range(m)} {m['a']['path'] or '[anon]'} -> "
                     f"{m['b']['path'] or '[anon]'}")
    for r in d["memory"]:
        lines.append(f"memory  {_range(r)} {r['pages']} pages, {r['bytes']} bytes changed "
                     f"{r['path']}".rstrip())
    t = d["memory_total"]
    lines.append(f"memory  total {t['pages']} pages, {t['bytes']} bytes changed")
    th = d["threads"]
    for tid in th["added"]:
        lines.append(f"thread  {tid} started")
    for tid in th["removed"]:
        lines.append(f"thread  {tid} ended")
    for e in th["changed"]:
        regs = " ".join(f"{k} {v[0]:#x}->{v[1]:#x}" for k, v in e["registers"].items()
                        if v[0] is not None and v[1] is not None)
        extra = [k for k in e if k not in ("tid", "registers")]
        lines.append(f"thread  {e['tid']} {regs}" + (f" ({', '.join(extra)} changed)" if extra else ""))
    f = d["files"]
    for x in f["opened"]:
        lines.append(f"fd {x['fd']} opened {x['kind']} {x['path']}")
    for x in f["closed"]:
        lines.append(f"fd {x['fd']} closed {x['kind']} {x['path']}")
    for x in f["reopened"]:
        lines.append(f"fd {x['fd']} now {x['b']['kind']} {x['b']['path']} (was {x['a']['path']})")
    for x in f["moved"]:
        lines.append(f"fd {x['fd']} offset {x['a']} -> {x['b']} {x['path']}")
    for x in f["flags"]:
        lines.append(f"fd {x['fd']} flags {x['a'][0]:#o}{' cloexec' if x['a'][1] else ''} -> "
                     f"{x['b'][0]:#o}{' cloexec' if x['b'][1] else ''} {x['path']}")
    s = d["signals"]
    for h in s["handlers"]:
        lines.append(f"signal  {h['name']} handler {_handler_text(h['a'])} -> {_handler_text(h['b'])}")
    for m in s["masks"]:
        lines.append(f"signal  thread {m['tid']} mask {_mask_names(m['a'])} -> {_mask_names(m['b'])}")
    for p in s["pending"]:
        lines.append(f"signal  thread {p['tid']} pending {_signals_text(p['a'])} -> "
                     f"{_signals_text(p['b'])}")
    if s["shared_pending"]:
        sp = s["shared_pending"]
        lines.append(f"signal  process pending {_signals_text(sp['a'])} -> "
                     f"{_signals_text(sp['b'])}")
    for lim in d["limits"]:
        lines.append(f"limit   {lim['name']} {_limit_text(lim['a'])} -> {_limit_text(lim['b'])}")
    for k, v in d["process"].items():
        va, vb = (f"{x:#x}" if k == "brk" else x for x in (v["a"], v["b"]))
        lines.append(f"{k:<7} {va} -> {vb}")
    return "\n".join(lines)


def _limit_text(v):
    if v is None:
        return "-"
    return "/".join("unlimited" if x == -1 else str(x) for x in v)


def open_side(spec):
    """A Side for a core file path, or for a live PID (digits, and no such file)."""
    from .elf.reader import CoreFile
    if spec.isdigit() and not os.path.exists(spec):
        pid = int(spec)
        return Side(f"process {pid} (live; memory read while it runs)", capture_live(pid),
                    LiveImage(pid))
    core = CoreFile(spec)
    return Side(spec, core.state, CoreImage(core))


def close_side(side):
    side.image.close()
    core = getattr(side.image, "core", None)
    if core is not None:
        core.close()


def diff(a, b):
    """compare() of two specs (core paths or live PIDs)."""
    sa = open_side(a)
    try:
        sb = open_side(b)
        try:
            return compare(sa, sb)
        finally:
            close_side(sb)
    finally:
        close_side(sa)

