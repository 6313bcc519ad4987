"""The shape of rcore's JSON notes, declared once and checked as they are read.

A core file is untrusted input: every value a note holds is checked here for its
type and range before it reaches the state model, so that restore and restart
never act on a string where a number belongs, a negative descriptor or a signal
65.  Specs are plain values (Int, Str, Hex, List, Map, Record...); check(spec,
value) raises SchemaError naming the field ("fds[3].fd: ...").

Records accept unknown keys (the format lets writers add fields; readers ignore
what they do not know).  Keys written since format 1 began are optional, the
others required.  A Record can dispatch on one of its keys (a descriptor's
"kind") to a per-kind Record that adds that kind's fields: register them in
FD_KINDS."""

import functools
import re
import signal

from ..linux import libc

U32 = (1 << 32) - 1
U64 = (1 << 64) - 1
PATH_LIMIT = 4096 + 64          # PATH_MAX, plus room for " (deleted)"
FD_LIMIT = 1 << 20              # fs.nr_open's ceiling (NR_OPEN, include/uapi/linux/fs.h)
LIST_LIMIT = 1 << 20            # no list in a note is longer (mappings: vm.max_map_count)


class SchemaError(ValueError):
    def __init__(self, where, why):
        self.where, self.why = where, why
        super().__init__(f"{where}: {why}" if where else why)


def _kind(value):
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "an object", type(None): "null"}.get(type(value),
                                                                     type(value).__name__)


def _fail(where, why):
    raise SchemaError(where, why)


class Int:
    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def check(self, v, where):
        if type(v) is not int:
            _fail(where, f"expected an integer, got {_kind(v)}")
        if not self.lo <= v <= self.hi:
            _fail(where, f"{v} is out of range {self.lo}..{self.hi}")


class Bool:
    def check(self, v, where):
        if type(v) is not bool:
            _fail(where, f"expected true or false, got {_kind(v)}")


class Str:
    def __init__(self, max_len=PATH_LIMIT, choices=None, pattern=None):
        self.max_len, self.choices = max_len, choices
        self._pattern = pattern

    @functools.cached_property
    def pattern(self):
        # compiled when first checked: a dump, which checks nothing, compiles nothing
        return re.compile(self._pattern) if self._pattern else None

    def check(self, v, where):
        if type(v) is not str:
            _fail(where, f"expected a string, got {_kind(v)}")
        if len(v) > self.max_len:
            _fail(where, f"string of {len(v)} characters, at most {self.max_len} allowed")
        if "\0" in v:
            _fail(where, "string holds a NUL character")
        if self.choices is not None and v not in self.choices:
            _fail(where, f"{v[:40]!r} is not one of {', '.join(sorted(self.choices))}")
        if self.pattern is not None and not self.pattern.fullmatch(v):
            _fail(where, f"{v[:40]!r} is malformed")


class Hex(Str):
    """Bytes as a hex string; `size` fixes their number."""

    def __init__(self, max_bytes, size=None):
        super().__init__(2 * max_bytes, pattern="(?:[0-9a-fA-F]{2})*")
        self.size = size

    def check(self, v, where):
        super().check(v, where)
        if self.size is not None and len(v) != 2 * self.size:
            _fail(where, f"{len(v) // 2} bytes, expected {self.size}")


class Nullable:
    def __init__(self, spec):
        self.spec = spec

    def check(self, v, where):
        if v is not None:
            self.spec.check(v, where)


class List:
    """A list of items of one spec; `rule` as for Record, on the whole list."""

    def __init__(self, item, max_len=LIST_LIMIT, size=None, rule=None):
        self.item, self.max_len, self.size, self.rule = item, max_len, size, rule

    def check(self, v, where):
        if type(v) is not list:
            _fail(where, f"expected a list, got {_kind(v)}")
        if self.size is not None and len(v) != self.size:
            _fail(where, f"{len(v)} items, expected {self.size}")
        if len(v) > self.max_len:
            _fail(where, f"{len(v)} items, at most {self.max_len} allowed")
        for i, x in enumerate(v):
            self.item.check(x, f"{where}[{i}]")
        why = self.rule and self.rule(v)
        if why:
            _fail(where, why)


class Map:
    """An object with free keys (names, paths) and values of one spec."""

    def __init__(self, value, key=None, max_len=LIST_LIMIT):
        self.value, self.key, self.max_len = value, key or Str(), max_len

    def check(self, v, where):
        if type(v) is not dict:
            _fail(where, f"expected an object, got {_kind(v)}")
        if len(v) > self.max_len:
            _fail(where, f"{len(v)} entries, at most {self.max_len} allowed")
        for k, x in v.items():
            self.key.check(k, f"{where} key")
            self.value.check(x, f"{where}[{k[:60]!r}]")


class Record:
    """An object with named fields.  `optional` fields may be missing; `rule`
    is a function(value) returning an error string for constraints between
    fields; `variants` (key, registry) adds the fields registry[value[key]]."""

    def __init__(self, fields, optional=(), rule=None, variants=None):
        self.fields, self.optional = fields, frozenset(optional)
        self.rule, self.variants = rule, variants

    def check(self, v, where):
        if type(v) is not dict:
            _fail(where, f"expected an object, got {_kind(v)}")
        for name, spec in self.fields.items():
            if name in v:
                spec.check(v[name], _join(where, name))
            elif name not in self.optional:
                _fail(_join(where, name), "missing")
        if self.variants is not None:
            key, registry = self.variants
            extra = registry.get(v.get(key))
            if extra is not None:
                extra.check(v, where)
        if self.rule is not None:
            why = self.rule(v)
            if why:
                _fail(where, why)


def _join(where, name):
    return f"{where}.{name}" if where else name


def check(spec, value, where=""):
    spec.check(value, where)
    return value


# --- rcore's notes (docs/ARCHITECTURE.md, "rcore's notes") ----------------------------

PID = Int(1, libc.PID_MAX_LIMIT)
PID0 = Int(0, libc.PID_MAX_LIMIT)        # 0: none (a parent outside the namespace)
ADDR = Int(0, U64)
COUNT = Int(0, (1 << 63) - 1)            # sizes, offsets, inode numbers, times
LIMIT = Int(-1, U64)                     # rlimit values, -1 = unlimited
SIGNO = Int(1, 64)
NAME = Str(64)                           # comm, arch, a state letter
SIGINFO = Hex(128, size=128)


def _span_rule(start, end):
    return lambda v: (f"{start} {v[start]:#x} is above {end} {v[end]:#x}"
                      if v[start] > v[end] else None)


IDENTITY = {"path": Str(), "dev": COUNT, "inode": COUNT, "size": COUNT, "mtime_ns": COUNT,
            "ctime_ns": COUNT}
IDENTITY_LATER = ("ctime_ns",)

EXE = Record(dict(IDENTITY, build_id=Hex(64)), optional=IDENTITY_LATER)

MM = Record({k: ADDR for k in ("start_code", "end_code", "start_data", "end_data",
                               "start_brk", "brk", "start_stack", "arg_start", "arg_end",
                               "env_start", "env_end")},
            rule=lambda v: (_span_rule("start_code", "end_code")(v)
                            or _span_rule("start_brk", "brk")(v)
                            or _span_rule("arg_start", "arg_end")(v)
                            or _span_rule("env_start", "env_end")(v)))

SIGACTION = Record({"signo": SIGNO, "handler": ADDR, "flags": ADDR, "restorer": ADDR,
                    "mask": ADDR})


def distinct(key):
    """A List rule: no two items have the same `key`."""
    def rule(items):
        seen = set()
        for item in items:
            if item[key] in seen:
                return f"two entries for {key} {item[key]}"
            seen.add(item[key])
        return None
    return rule


def _sigactions_rule(sigactions):
    # rcore records every signal's action but SIGKILL's and SIGSTOP's: one
    # missing would leave the restarted process with rcore's action for it.
    missing = ALL_SIGNALS - {s["signo"] for s in sigactions}
    return f"no action for signal {min(missing)}" if missing else None


ALL_SIGNALS = frozenset(range(1, 65)) - {signal.SIGKILL, signal.SIGSTOP}

PROCESS = Record({
    "pid": PID, "arch": NAME, "ppid": PID0, "pgrp": PID0, "sid": PID0, "state": NAME,
    "comm": NAME, "cmdline": List(Str(1 << 17), max_len=1 << 17), "cwd": Str(), "root": Str(),
    "umask": Int(0, 0o777),
    "rlimits": Map(List(LIMIT, size=2), key=Str(32), max_len=64),
    "itimers": Map(List(COUNT, size=2), key=Str(16, choices={"real", "virtual", "prof"})),
    "personality": Int(0, U32),
    "creds": Record({"uid": List(Int(0, U32), size=4), "gid": List(Int(0, U32), size=4),
                     "groups": List(Int(0, U32), max_len=65536)}),
    "dumpable": Int(0, 2), "no_new_privs": Int(0, 1), "nice": Int(-20, 19),
    "times": Map(COUNT, key=Str(16), max_len=16),
    "exe": Nullable(EXE),
    "mm": MM,
    "sigactions": List(SIGACTION, max_len=64, rule=distinct("signo")),   # _sigactions_rule
    "shared_pending": List(SIGINFO),
    "start_time": COUNT,
    "children": List(PID, max_len=1 << 16),
    "tree_root": PID,                    # a tree member's core: the root of its tree
}, optional=("start_time", "children", "tree_root"), rule=lambda v: _sigactions_rule(v["sigactions"]))


def _altstack_rule(v):
    if v and not set(v) >= {"ss_sp", "ss_flags", "ss_size"}:
        return "needs ss_sp, ss_flags and ss_size, or nothing"
    if v and v["ss_flags"] & ~(libc.SS_ONSTACK | libc.SS_DISABLE | libc.SS_AUTODISARM):
        return f"ss_flags {v['ss_flags']:#x} holds unknown flags"
    return None


def _rseq_rule(v):
    if v and not set(v) >= {"ptr", "size", "signature"}:
        return "needs ptr, size and signature, or nothing"
    if v and v["size"] < libc.RSEQ_MIN_SIZE:
        return f"size {v['size']} is below the {libc.RSEQ_MIN_SIZE} bytes of struct rseq"
    if v and v["ptr"] % libc.RSEQ_MIN_SIZE:
        return f"ptr {v['ptr']:#x} is not aligned to {libc.RSEQ_MIN_SIZE} bytes"
    return None


def thread_record(robust_head_size):
    """NT_RCORE_THREAD for an architecture whose struct robust_list_head has
    robust_head_size bytes (the kernel refuses another length)."""
    return Record({
        "tid": PID, "sigmask": ADDR, "pending": List(SIGINFO),
        "sigaltstack": Record({"ss_sp": ADDR, "ss_flags": Int(0, U32), "ss_size": ADDR},
                              optional=("ss_sp", "ss_flags", "ss_size"), rule=_altstack_rule),
        "clear_child_tid": ADDR,
        "robust_list": List(ADDR, size=2),
        "rseq": Record({"ptr": ADDR, "size": Int(0, U32), "signature": Int(0, U32)},
                       optional=("ptr", "size", "signature"), rule=_rseq_rule),
        "comm": NAME,
    }, rule=lambda v: (None if v["robust_list"][1] in (0, robust_head_size) else
                       f"robust_list length {v['robust_list'][1]}, the kernel takes only "
                       f"{robust_head_size}"))


STORED = {"all", "dirty", "header", "none", "incremental"}

MAPPING = Record({
    "start": ADDR, "end": ADDR, "perms": Str(4, pattern="[r-][w-][x-][ps]"), "offset": COUNT,
    "dev": Str(16, pattern="[0-9a-f]+:[0-9a-f]+"), "inode": COUNT, "path": Str(),
    "deleted": Bool(), "vmflags": List(Str(2, pattern="[!-~]{2}"), max_len=64),
    "anonymous": COUNT, "stored": Str(16, choices=STORED),
}, rule=lambda v: (f"start {v['start']:#x} is not below end {v['end']:#x}"
                   if v["start"] >= v["end"] else
                   # pages are 4 KiB or a multiple of it on every Linux architecture
                   "start or end is not page-aligned" if (v["start"] | v["end"]) & 0xFFF
                   else None))


def _sorted_rule(mappings):
    for a, b in zip(mappings, mappings[1:]):
        if b["start"] < a["end"]:
            return f"mappings {a['start']:#x}-{a['end']:#x} and {b['start']:#x}-{b['end']:#x} " \
                   "overlap or are out of order"
    return None


MAPPINGS = Record({
    "mappings": List(MAPPING, rule=_sorted_rule),
    "files": Map(Record(IDENTITY, optional=IDENTITY_LATER)),
})

# Per-kind fields of a descriptor entry: kind -> Record of the fields that kind adds
# (descriptor modules register theirs; kinds not listed carry only the common ones).
FD_KINDS = {}

FD = Record({
    "fd": Int(0, FD_LIMIT - 1), "kind": Str(64), "path": Str(),
    "flags": Int(0, U32), "pos": COUNT, "cloexec": Bool(),
    "description": Int(0, FD_LIMIT - 1),
    "inode": COUNT, "dev": COUNT, "rdev": COUNT, "size": COUNT, "mtime_ns": COUNT,
    "deleted": Bool(),
    # written since format 1 began (older cores lack them)
    "queued": Hex(1 << 30), "pipe_size": Int(0, 1 << 31), "contents": Hex(1 << 40),
    "contents_stored": Bool(), "ctime_ns": COUNT,
    # a tree member's entry sharing its description with an earlier process's
    "shared": List(Int(0, libc.PID_MAX_LIMIT), size=2,
                   rule=lambda v: None if v[0] >= 1 and v[1] < FD_LIMIT
                   else f"[pid, fd] {v} names no process's descriptor"),
}, optional=("queued", "pipe_size", "contents", "contents_stored", "ctime_ns", "shared"),
    variants=("kind", FD_KINDS))


def _descriptions_rule(v):
    owners = {f["fd"]: f["description"] for f in v["fds"]}
    for f in v["fds"]:
        if owners.get(f["description"]) != f["description"]:
            return f"fd {f['fd']} shares the description of fd {f['description']}, " \
                   "which is not the lowest of its descriptors"
    return None


FILES = Record({"fds": List(FD, rule=distinct("fd"))}, rule=_descriptions_rule)

# An incremental core's parent (chain.py): where it is and which checkpoint it is.
PARENT = Record({"path": Str(), "checkpoint_id": Str(64)})


# The root core of a tree (tree.py): every process, pre-order, the root first.
TREE_LIMIT = 1 << 16                     # processes in one tree
SIGNAL0 = Int(0, 64)                     # 0: none
CORE_NAME = Str(255)

TREE_MEMBER = Record({
    "pid": PID, "ppid": PID0, "pgid": PID0, "sid": PID0, "exit_signal": SIGNAL0,
    "pdeath_signal": SIGNAL0, "zombie": Bool(), "exit_status": Int(0, 0xFFFF),
    "core": CORE_NAME, "tids": List(PID, max_len=1 << 22),
}, rule=lambda v: _tree_member_rule(v))


def _tree_member_rule(v):
    if v["core"] in (".", "..") or "/" in v["core"]:
        return f"core name {v['core'][:40]!r} is not a file name"
    if v["zombie"]:
        if v["core"]:
            return "a zombie has no core"
        if v["tids"] != [v["pid"]]:
            return "a zombie's tids are [pid]"
    elif not v["core"]:
        return "a live process needs a core"
    elif not v["tids"] or v["tids"][0] != v["pid"]:
        return "tids must start with the pid"
    elif v["exit_status"]:
        return "a live process has no exit status"
    return None


def _tree_rule(v):
    procs = v["processes"]
    if not procs or procs[0]["pid"] != v["root"]:
        return "the root must be the first process"
    if procs[0]["zombie"]:
        return "the root is a zombie"
    seen, tids, cores = set(), set(), set()
    for i, p in enumerate(procs):
        if p["pid"] in seen:
            return f"process {p['pid']} appears twice"
        for t in p["tids"]:
            if t in tids:
                return f"thread {t} appears twice"
            tids.add(t)
        if p["core"] and p["core"] in cores:
            return f"two processes have core {p['core'][:40]!r}"
        cores.add(p["core"])
        if i and p["ppid"] not in seen:
            return f"the parent {p['ppid']} of process {p['pid']} is not an earlier process"
        seen.add(p["pid"])
    zombies = {p["pid"] for p in procs if p["zombie"]}
    for p in procs[1:]:
        if p["ppid"] in zombies:
            return f"process {p['pid']} is the child of zombie {p['ppid']}"
    return None


TREE = Record({"root": PID, "processes": List(TREE_MEMBER, max_len=TREE_LIMIT)},
              rule=_tree_rule)

# SysV IPC objects of the checkpoint (sysvipc.py): ids are ints >= 0, keys
# signed 32-bit (key_t), mode the 9 permission bits, a semaphore 0..32767
# (SEMVMX), a message's type a positive long.
IPC_ID = Int(0, (1 << 31) - 1)
MSG_TYPE = Int(1, (1 << 63) - 1)
MSG_TEXT = Hex(1 << 16)


class Message:
    """A SysV message: [type, text as hex]."""

    def check(self, v, where):
        if type(v) is not list or len(v) != 2:
            _fail(where, "expected [type, text]")
        MSG_TYPE.check(v[0], f"{where}[0]")
        MSG_TEXT.check(v[1], f"{where}[1]")


IPC_COMMON = {"id": IPC_ID, "key": Int(-(1 << 31), (1 << 31) - 1), "mode": Int(0, 0o777),
              "uid": Int(0, U32), "gid": Int(0, U32), "cuid": Int(0, U32), "cgid": Int(0, U32)}
SYSVIPC = Record({
    "shm": List(Record(dict(IPC_COMMON, size=Int(1, 1 << 47), removed=Bool(), detached=Bool()),
                       optional=("removed", "detached")), rule=distinct("id")),
    "sem": List(Record(dict(IPC_COMMON, values=List(Int(0, 32767), max_len=65536))),
                rule=distinct("id")),
    "msg": List(Record(dict(IPC_COMMON, qbytes=COUNT, messages=List(Message()))),
                rule=distinct("id")),
}, optional=("shm", "sem", "msg"))
