"""What a core file holds, as a dict (for --json) and as text."""

import os

from . import fds, settings, sysvipc, timens, timers, tree
from .errors import RcoreError


SIGNALS = {1: "HUP", 2: "INT", 3: "QUIT", 6: "ABRT", 9: "KILL", 10: "USR1", 12: "USR2",
           13: "PIPE", 14: "ALRM", 15: "TERM", 17: "CHLD", 19: "STOP"}


def describe(core):
    proc = core.state
    a = core.arch
    d = {
        "path": core.path, "arch": a.NAME, "pid": proc.pid, "comm": proc.comm,
        "cmdline": proc.cmdline, "made_by": "rcore" if core.has_rcore else "kernel or gdb",
        "exe": proc.exe.to_dict() if proc.exe else None,
        "threads": [{"tid": t.tid, "rip": t.regs["rip"], "rsp": t.regs["rsp"],
                     "comm": t.comm} for t in proc.threads],
        "regions": [],
        "files": [f.to_dict() for f in proc.files],
    }
    if core.has_rcore:
        described = fds.describe(proc, _tree_files(core))
        for f in d["files"]:
            f["state"], f["restart"] = described[f["fd"]]
    for m in proc.mappings:
        # an incremental core has a segment per run of pages written since its parent
        segs = [g for g in core.segments if m.start <= g.vaddr < m.end] \
            if m.stored == "incremental" else [core.segment_at(m.start)]
        stored = sum(_stored_bytes(core, g) for g in segs if g is not None and g.filesz)
        d["regions"].append({"start": m.start, "end": m.end, "size": m.size, "perms": m.perms,
                             "path": m.path, "offset": m.offset, "stored": stored})
    if core.tree is not None:
        d["tree"] = _describe_tree(core)
    if "tree_root" in proc.extra:
        d["tree_root"] = {"pid": proc.extra["tree_root"], "core": _root_core_name(core)}
    if core.parent:
        from .chain import describe_chain
        d["parent"] = core.parent
        d["chain"] = describe_chain(core)
    if core.has_rcore:
        d["rcore"] = {
            "cwd": proc.cwd, "umask": oct(proc.umask), "brk": proc.mm.brk,
            "rlimits": proc.rlimits, "itimers": proc.itimers, "creds": proc.creds,
            "clocks": proc.clocks, "timers": proc.timers, "settings": proc.settings,
            "sysvipc": proc.sysvipc,
            "handlers": {s.signo: s.handler for s in proc.sigactions if s.handler},
            "threads": [{"tid": t.tid, "sigmask": t.sigmask, "pending": len(t.pending),
                         "rseq": t.rseq, "clear_child_tid": t.clear_child_tid,
                         "sigaltstack": t.sigaltstack} for t in proc.threads],
        }
    return d


def _tree_files(core):
    """The descriptors of every process of the tree core belongs to (the root's
    or a member's core), for what restart does with each; None: not a tree, or
    a core of it is missing."""
    from .elf.reader import CoreFile
    root_path = core.path
    if core.tree is None:
        name = _root_core_name(core) if "tree_root" in core.state.extra else ""
        if not name:
            return None
        root_path = os.path.join(os.path.dirname(core.path), name)
    procs = []
    try:
        with CoreFile(root_path, resolve=False) as root:
            for m in root.tree.processes if root.tree else []:
                path = tree.member_path(root_path, m)
                if m.zombie:
                    continue
                if path == core.path:
                    procs.append(core.state)
                    continue
                with CoreFile(path, resolve=False) as member:
                    procs.append(member.state)
    except (OSError, RcoreError):
        return None
    return fds.TreeFiles(procs) if procs else None


def _describe_tree(core):
    t = core.tree
    out = {"root": t.root, "processes": []}
    for m in t.processes:
        entry = m.to_dict()
        path = tree.member_path(core.path, m)
        entry["present"] = bool(path) and os.path.isfile(path)
        out["processes"].append(entry)
    return out


def _root_core_name(core):
    """The root core's file name, as the dump named a member core (ROOT.PID)."""
    name, _, pid = os.path.basename(core.path).rpartition(".")
    return name if pid == str(core.state.pid) else ""


def _member_state(m):
    if not m["zombie"]:
        return "live"
    status = m["exit_status"]
    if status & 0x7F:
        return f"zombie, killed by signal {status & 0x7F}"
    return f"zombie, exit {status >> 8}"


def _stored_bytes(core, seg):
    """Bytes of the segment really on disk (holes in a sparse file excluded)."""
    fd = core.fileno()
    total, pos, end = 0, seg.offset, seg.offset + seg.filesz
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:
            break
        if data >= end:
            break
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        total += hole - data
        pos = hole
    return total


def _size(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def format_text(d):
    lines = [f"core:     {d['path']} ({d['made_by']}, {d['arch']})",
             f"program:  {d['exe']['path'] if d['exe'] else d['comm']}  "
             f"[{' '.join(d['cmdline'])}]",
             f"pid:      {d['pid']}",
             f"threads:  {len(d['threads'])}"]
    for t in d["threads"]:
        lines.append(f"  tid {t['tid']:<8} rip {t['rip']:#018x}  rsp {t['rsp']:#018x}  {t['comm']}")
    if d.get("tree"):
        lines += _tree_lines(d["tree"])
    if d.get("tree_root"):
        root = d["tree_root"]
        lines.append(f"tree:     process {d['pid']} of the tree of process {root['pid']}: "
                     f"its root core {root['core'] or '(renamed)'} holds the tree; "
                     "restart that core")
    total = sum(r["stored"] for r in d["regions"])
    lines.append(f"regions:  {len(d['regions'])} ({_size(total)} stored)")
    for r in d["regions"]:
        lines.append(f"  {r['start']:#014x}-{r['end']:#014x} {r['perms']} {_size(r['size']):>10} "
                     f"stored {_size(r['stored']):>10}  {r['path']}")
    if d.get("parent"):
        lines.append("parent:   incremental checkpoint: memory not stored here comes from")
        for link in d["chain"]:
            lines.append(f"  {link['path']} ({link['status']})")
        lines.append("          (gdb reads this file alone: unchanged memory is unavailable "
                     "there; `rcore flatten` writes a standalone core)")
    if d["files"]:
        lines.append(f"files:    {len(d['files'])}")
        for f in d["files"]:
            state = f.get("state") or (f"pos {f['pos']}" if f["kind"] == "file" else "")
            lines.append(f"  fd {f['fd']:<3} {f['kind']:<8} {f['path']}"
                         + (f"  {state}" if state else ""))
            if f.get("shared"):
                lines.append(f"  {'':<12} shared with process {f['shared'][0]} fd "
                             f"{f['shared'][1]} (one open file description)")
            if f.get("restart"):
                lines.append(f"  {'':<12} restart: {f['restart']}")
    if "rcore" in d:
        r = d["rcore"]
        lines.append(f"cwd:      {r['cwd']}   umask {r['umask']}   brk {r['brk']:#x}")
        handlers = ", ".join(f"{SIGNALS.get(int(s), s)}={h:#x}" for s, h in r["handlers"].items())
        lines.append(f"signals:  {handlers or 'all default'}")
        if r.get("clocks"):
            lines.append(f"clocks:   {timens.describe(r['clocks'])} at the checkpoint "
                         "(restart goes on from there)")
        if r.get("settings") and settings.describe(r["settings"]):
            lines.append(f"settings: {settings.describe(r['settings'])}")
        if r.get("timers"):
            lines.append(f"timers:   {len(r['timers'])} POSIX timers")
            lines += [f"  {timers.describe(t)}" for t in r["timers"]]
        if r.get("sysvipc"):
            lines.append("sysvipc:  SysV IPC objects (restart keeps them, or makes them again)")
            lines += [f"  {line}" for line in sysvipc.describe(r["sysvipc"])]
    return "\n".join(lines)


def _tree_lines(t):
    procs = t["processes"]
    zombies = sum(m["zombie"] for m in procs)
    lines = [f"tree:     {len(procs) - zombies} processes"
             + (f" and {zombies} zombie(s)" if zombies else "") + f", root {t['root']}",
             f"  {'pid':<8} {'ppid':<8} {'pgid':<8} {'sid':<8} {'state':<28} core"]
    for m in procs:
        core = m["core"] or "-"
        if m["core"] and not m["present"]:
            core += " (missing)"
        extra = []
        if m["exit_signal"] != 17:
            extra.append(f"exit signal {m['exit_signal']}")
        if m["pdeath_signal"]:
            extra.append(f"parent-death signal {m['pdeath_signal']}")
        lines.append(f"  {m['pid']:<8} {m['ppid']:<8} {m['pgid']:<8} {m['sid']:<8} "
                     f"{_member_state(m):<28} {core}"
                     + (f"  ({', '.join(extra)})" if extra else ""))
    return lines
