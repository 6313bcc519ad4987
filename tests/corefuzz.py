"""Deterministic mutations of core files, for tests/test_fuzz.py.

mutate(base, seed, scope) returns (what, bytes): the same base and seed give the
same mutation.  scope "any" may change any byte (for `rcore info`); scope
"headers" changes only what describes the process and its memory (ELF and
program headers, note headers, the standard notes' bookkeeping fields, the
structure of rcore's JSON notes) and never memory, register or XSAVE contents,
nor a JSON value into another value of its own type and range: those are the
process's state itself, and a core edited that way is a valid core of another
state.  A restart or restore that accepts a "headers" mutation must therefore
give back the same process.

This module parses cores on its own (struct, no rcore code), so that a bug in
rcore's reader cannot hide the mutations it should catch."""

import json
import random
import struct

EHDR_SIZE, PHDR_SIZE, NHDR_SIZE = 64, 56, 12
PT_LOAD, PT_NOTE = 1, 4
NT_PRSTATUS, NT_PRPSINFO, NT_FILE, NT_SIGINFO = 1, 3, 0x46494C45, 0x53494749
RCORE_TYPES = (0x52430001, 0x52430002, 0x52430003, 0x52430004, 0x52430006)
PR_REG = (112, 328)             # pr_reg within NT_PRSTATUS (x86-64): register contents


def _pad4(n):
    return (n + 3) & ~3


class Note:
    __slots__ = ("at", "owner", "ntype", "desc", "name_bytes")

    def __init__(self, at, name_bytes, ntype, desc):
        self.at, self.name_bytes, self.ntype, self.desc = at, name_bytes, ntype, desc
        self.owner = name_bytes.rstrip(b"\0").decode("ascii", "replace")

    @property
    def desc_at(self):
        return self.at + NHDR_SIZE + _pad4(len(self.name_bytes))

    def encode(self):
        return (struct.pack("<III", len(self.name_bytes), len(self.desc), self.ntype)
                + self.name_bytes.ljust(_pad4(len(self.name_bytes)), b"\0")
                + self.desc.ljust(_pad4(len(self.desc)), b"\0"))


class Layout:
    """Where a (well-formed) core's headers and notes are."""

    def __init__(self, data):
        self.phoff, self.phnum = struct.unpack_from("<Q", data, 32)[0], \
            struct.unpack_from("<H", data, 56)[0]
        self.phdrs = []                 # (offset of the header, p_type, p_offset, p_filesz)
        for i in range(self.phnum):
            at = self.phoff + i * PHDR_SIZE
            p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", data, at)
            self.phdrs.append((at, p_type, p_offset, p_filesz))
        self.note_phdr = next(p for p in self.phdrs if p[1] == PT_NOTE)
        _, _, off, size = self.note_phdr
        self.notes, pos = [], off
        while pos + NHDR_SIZE <= off + size:
            namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
            name_at = pos + NHDR_SIZE
            desc_at = name_at + _pad4(namesz)
            self.notes.append(Note(pos, bytes(data[name_at:name_at + namesz]), ntype,
                                   bytes(data[desc_at:desc_at + descsz])))
            pos = desc_at + _pad4(descsz)
        self.notes_end = off + size

    def header_ranges(self):
        """Byte ranges a "headers" mutation may flip."""
        out = [(0, EHDR_SIZE), (self.phoff, self.phoff + self.phnum * PHDR_SIZE)]
        for n in self.notes:
            out.append((n.at, n.desc_at))
            if n.owner == "CORE" and n.ntype == NT_PRSTATUS:
                out += [(n.desc_at, n.desc_at + PR_REG[0]),
                        (n.desc_at + PR_REG[1], n.desc_at + len(n.desc))]
            elif n.owner == "CORE" and n.ntype in (NT_PRPSINFO, NT_FILE, NT_SIGINFO):
                out.append((n.desc_at, n.desc_at + len(n.desc)))
            elif n.owner == "RCORE":
                out.append((n.desc_at, n.desc_at + 4))        # the format version
        return [(a, b) for a, b in out if b > a]


def with_notes(data, notes):
    """data with its PT_NOTE segment replaced by `notes`, written at the end of the
    file (page-aligned) so that no data segment moves."""
    lay = Layout(data)
    blob = b"".join(n.encode() for n in notes)
    at = _pad_page(len(data))
    out = bytearray(data) + b"\0" * (at - len(data)) + blob
    struct.pack_into("<Q", out, lay.note_phdr[0] + 8, at)
    struct.pack_into("<Q", out, lay.note_phdr[0] + 32, len(blob))
    return bytes(out)


def _pad_page(n):
    return (n + 4095) & ~4095


# --- JSON-level mutations -----------------------------------------------------------

def _paths(node, path=()):
    """Every (path, value) in a JSON tree, the root excluded."""
    items = node.items() if isinstance(node, dict) else \
        enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        yield path + (k,), v
        yield from _paths(v, path + (k,))


def _get(node, path):
    for k in path:
        node = node[k]
    return node


DEEP = "\0DEEP\0"


def _other_type(rng, value):
    choices = ["x", 1.5, None, [], {}, True, 7, [1, 2, 3], {"a": 1}]
    return rng.choice([c for c in choices if type(c) is not type(value)])


def _json_mutation(rng, doc, scope):
    """(what, new document or None to drop a key, deep) for one JSON document."""
    paths = list(_paths(doc))
    ops = ["type", "range", "drop", "unknown", "huge_str", "deep", "nest", "dup_item"]
    op = rng.choice(ops)
    if not paths:
        op = "unknown"
    path, value = rng.choice(paths) if paths else ((), doc)
    parent = _get(doc, path[:-1]) if path else doc
    key = path[-1] if path else None
    where = ".".join(map(str, path))
    if op == "type":
        parent[key] = _other_type(rng, value)
        return f"{where} -> {parent[key]!r}"
    if op == "range":
        ints = [(p, v) for p, v in paths if type(v) is int]
        if ints:
            path, value = rng.choice(ints)
            parent, key, where = _get(doc, path[:-1]), path[-1], ".".join(map(str, path))
        parent[key] = rng.choice([-2, -(1 << 63), 1 << 64, (1 << 64) + 5, 10 ** 30, -10 ** 30])
        return f"{where} -> {parent[key]}"
    if op == "drop":
        # Dropping a list item or a map entry removes state (a descriptor, a
        # limit): a "headers" mutation drops only the keys of records.
        keyed = [(p, v) for p, v in paths if isinstance(_get(doc, p[:-1]), dict)
                 and (scope == "any" or not _in_map(p))]
        if keyed:
            path, _ = rng.choice(keyed)
            del _get(doc, path[:-1])[path[-1]]
            return f"{'.'.join(map(str, path))} dropped"
        op = "unknown"
    if op == "unknown":
        dicts = [doc] + [v for _, v in paths if isinstance(v, dict) and not _is_map(v)]
        target = rng.choice(dicts)
        target[f"fuzz_unknown_{rng.randrange(1000)}"] = _other_type(rng, None)
        return "unknown key added"
    if op == "huge_str":
        parent[key] = "A" * rng.choice([(1 << 17) + 1, 1 << 20, 5 << 20])
        return f"{where} -> huge string"
    if op == "deep":
        parent[key] = DEEP
        return f"{where} -> nested 100000 deep"
    if op == "nest":
        v = value
        for _ in range(rng.randrange(2, 60)):
            v = [v] if rng.random() < 0.5 else {"k": v}
        parent[key] = v
        return f"{where} -> nested in {type(v).__name__}s"
    # dup_item: a list gets one of its items twice
    lists = [(p, v) for p, v in paths if isinstance(v, list) and v]
    if not lists:
        return _json_mutation(rng, doc, scope)
    path, v = rng.choice(lists)
    i = rng.randrange(len(v))
    v.insert(i, json.loads(json.dumps(v[i])))
    return f"{'.'.join(map(str, path))}[{i}] duplicated"


# Maps with free keys (rlimits, itimers, times, mapped files): their entries are state.
_MAP_KEYS = {"rlimits", "itimers", "times", "files"}


def _in_map(path):
    return len(path) >= 2 and path[-2] in _MAP_KEYS


def _is_map(d):
    return any(k.startswith("/") for k in d) or "cpu" in d or "real" in d or "utime" in d


def _encode_json(doc, version):
    text = json.dumps(doc, separators=(",", ":"))
    text = text.replace(json.dumps(DEEP), "[" * 100000 + "]" * 100000)
    return struct.pack("<I", version) + text.encode()


# --- one mutation -------------------------------------------------------------------

def mutate(base, seed, scope="any"):
    """(what, mutated bytes) for seed; scope "any" or "headers" (module doc)."""
    rng = random.Random(seed)
    lay = Layout(base)
    rnotes = [i for i, n in enumerate(lay.notes) if n.owner == "RCORE"]
    ops = ["flip", "run", "truncate", "note_drop", "note_dup", "note_retype", "nt_file"]
    if rnotes:
        ops += ["json"] * 6 + ["version", "garbage"]
    op = rng.choice(ops)
    notes = list(lay.notes)
    if op in ("flip", "run"):
        if scope == "any" and rng.random() < 0.3:
            lo, hi = 0, len(base)
        elif scope == "any":
            lo, hi = 0, min(len(base), lay.notes_end)
        else:
            lo, hi = rng.choice(lay.header_ranges())
        data = bytearray(base)
        at = rng.randrange(lo, hi)
        if op == "flip":
            data[at] ^= 1 << rng.randrange(8)
            return f"bit flip at {at:#x}", bytes(data)
        n = min(rng.choice([2, 4, 8, 16, 64]), hi - at)
        fill = rng.choice([b"\xff", b"\0", b"\x7f", None])
        data[at:at + n] = fill * n if fill else bytes(rng.randrange(256) for _ in range(n))
        return f"{n} bytes at {at:#x} set", bytes(data)
    if op == "truncate":
        cut = rng.choice([rng.randrange(len(base)), rng.randrange(lay.notes_end),
                          len(base) - rng.randrange(1, 4096 * 4)])
        return f"truncated to {max(cut, 0)} bytes", base[:max(cut, 0)]
    if op == "nt_file":
        files = [n for n in notes if n.owner == "CORE" and n.ntype == NT_FILE]
        if files:
            n = files[0]
            (count,) = struct.unpack_from("<Q", n.desc)
            new = rng.choice([0, count + 1, count - 1, count * 2, 1 << 32, (1 << 64) - 1,
                              (len(n.desc) - 16) // 24 + 1])
            data = bytearray(base)
            struct.pack_into("<Q", data, n.desc_at, new % (1 << 64))
            return f"NT_FILE count {count} -> {new % (1 << 64)}", bytes(data)
        op = "note_drop"
    i = rng.randrange(len(notes))
    if op in ("json", "version", "garbage"):
        i = rng.choice(rnotes)
    n = notes[i]
    name = f"{n.owner} {n.ntype:#x}"
    if op == "note_drop":
        del notes[i]
        what = f"{name} removed"
    elif op == "note_dup":
        notes.insert(i, n)
        what = f"{name} duplicated"
    elif op == "note_retype":
        new = rng.choice([t for t in RCORE_TYPES + (NT_PRSTATUS, NT_FILE, 0x1234, 0x202)
                          if t != n.ntype])
        if rng.random() < 0.2:
            notes[i] = Note(0, b"FUZZ\0", n.ntype, n.desc)
            what = f"{name} given owner FUZZ"
        else:
            notes[i] = Note(0, n.name_bytes, new, n.desc)
            what = f"{name} retyped {new:#x}"
    elif op == "version":
        v = rng.choice([0, 2, 0xFFFFFFFF])
        notes[i] = Note(0, n.name_bytes, n.ntype, struct.pack("<I", v) + n.desc[4:])
        what = f"{name} format version {v}"
    elif op == "garbage":
        body = n.desc[4:]
        choice = rng.randrange(3)
        if choice == 0:
            body = body[:rng.randrange(len(body))]
        elif choice == 1:
            body = body[:10] + b"\xff\xfe" + body[10:]
        else:
            body = b""
        notes[i] = Note(0, n.name_bytes, n.ntype, n.desc[:4] + body)
        what = f"{name} JSON text broken ({choice})"
    else:
        (version,) = struct.unpack_from("<I", n.desc)
        doc = json.loads(n.desc[4:])
        what = f"{name}: " + _json_mutation(rng, doc, scope)
        notes[i] = Note(0, n.name_bytes, n.ntype, _encode_json(doc, version))
    return what, with_notes(base, notes)


# --- many `rcore info` runs in one process ------------------------------------------

class Hang(BaseException):
    pass


def _alarm(signum, frame):
    raise Hang()


def run_info_batch(paths, timeout):
    """Run the CLI's `info` (rcore.cli.main, as `python3 -m rcore info` does) on
    each path in this process; yield one dict per path: rc, stderr, and
    traceback (the text, when an exception escaped the CLI) or hang."""
    import contextlib
    import io
    import signal
    import traceback
    from rcore import cli
    signal.signal(signal.SIGALRM, _alarm)
    for i, path in enumerate(paths):
        out, err = io.StringIO(), io.StringIO()
        result = {"path": path, "rc": None, "traceback": None, "hang": False}
        signal.alarm(timeout)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                result["rc"] = cli.main(["info", path] + (["--json"] if i % 2 else []))
        except Hang:
            result["hang"] = True
        except BaseException:       # MemoryError and RecursionError too
            result["traceback"] = traceback.format_exc()
        finally:
            signal.alarm(0)
        result["stderr"] = err.getvalue()
        yield result


if __name__ == "__main__":
    # python3 corefuzz.py TIMEOUT PATH...: one JSON line per path (tests/test_fuzz.py)
    import sys
    for r in run_info_batch(sys.argv[2:], int(sys.argv[1])):
        print(json.dumps(r), flush=True)
