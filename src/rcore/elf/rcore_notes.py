"""rcore's own notes: the kernel and I/O state a restart needs that standard notes
lack.  Owner "RCORE"; each payload is a 4-byte little-endian format version
followed by UTF-8 JSON (byte strings as hex).  Readers ignore unknown notes, and
rcore ignores unknown JSON keys, so fields can be added without a version bump;
the version changes only when a field changes meaning.  docs/ARCHITECTURE.md
documents every field."""

import functools
import json
import struct

from .. import fds, tree
from ..state import (ExeIdentity, FileDescriptor, FileIdentity, Mapping, MmFields,
                     SigAction, ThreadState)

OWNER = "RCORE"
VERSION = 1
# Version 2: RCORE_MAPPINGS of an incremental core (a mapping's `stored` may be
# "incremental": part of its bytes are in the parent).  Only such cores carry it,
# so that an rcore that cannot follow the chain refuses them instead of
# restoring zeros.
READ_VERSION = 2

NT_RCORE_PROCESS = 0x52430001   # process-wide kernel state
NT_RCORE_THREAD = 0x52430002    # one per thread, same order as NT_PRSTATUS
NT_RCORE_MAPPINGS = 0x52430003  # every mapping with flags and file identity
NT_RCORE_FILES = 0x52430004     # the file-descriptor table
NT_RCORE_PARENT = 0x52430005    # incremental core: the checkpoint it builds on
NT_RCORE_TREE = 0x52430006      # root core of a tree: every process of it (tree.py)
NT_RCORE_SYSVIPC = 0x52430007   # SysV semaphore sets, message queues, shm segments (sysvipc.py)

NAMES = {NT_RCORE_PROCESS: "RCORE_PROCESS", NT_RCORE_THREAD: "RCORE_THREAD",
         NT_RCORE_MAPPINGS: "RCORE_MAPPINGS", NT_RCORE_FILES: "RCORE_FILES",
         NT_RCORE_PARENT: "RCORE_PARENT", NT_RCORE_TREE: "RCORE_TREE",
         NT_RCORE_SYSVIPC: "RCORE_SYSVIPC"}

_PROCESS_KEYS = ("pid", "arch", "ppid", "pgrp", "sid", "state", "comm", "cmdline", "cwd",
                 "root", "umask", "rlimits", "itimers", "personality", "creds", "dumpable",
                 "no_new_privs", "nice", "times", "clocks",
                 "timers", "settings", "start_time", "boot_id", "children")


def _encode(obj, version=VERSION):
    return struct.pack("<I", version) + json.dumps(obj, separators=(",", ":")).encode()


def _schema():
    # read only: a dump, which writes notes, never loads it (start-up)
    from . import schema
    return schema


def _decode(desc, spec):
    """The note's JSON, checked against its schema.  Raises ValueError (a
    SchemaError names the field) for anything else than the declared shape."""
    if len(desc) < 4:
        raise ValueError("note too short")
    (version,) = struct.unpack_from("<I", desc)
    if version > READ_VERSION:
        raise ValueError(f"format {version} is newer than this rcore ({READ_VERSION})")
    if version < 1:
        raise ValueError(f"format version {version} does not exist")
    try:
        d = json.loads(desc[4:].decode())
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except ValueError as err:      # JSONDecodeError, or an integer of 4300+ digits
        raise ValueError(f"not JSON: {err}") from None
    return _schema().check(spec, d)


def encode_process(proc):
    d = {k: getattr(proc, k) for k in _PROCESS_KEYS}
    d["exe"] = proc.exe.to_dict() if proc.exe else None
    d["mm"] = proc.mm.to_dict()
    d["sigactions"] = [s.to_dict() for s in proc.sigactions]
    d["shared_pending"] = [p.hex() for p in proc.shared_pending]
    d.update(proc.extra)
    return _encode(d)


def decode_process(desc, proc):
    """Fill `proc` (a ProcessState) from an NT_RCORE_PROCESS payload."""
    d = _decode(desc, _schema().PROCESS)
    for k in _PROCESS_KEYS:
        if k in d:
            setattr(proc, k, d.pop(k))
    proc.exe = ExeIdentity.from_dict(d.pop("exe")) if d.get("exe") else None
    proc.mm = MmFields.from_dict(d.pop("mm", {}))
    proc.sigactions = [SigAction.from_dict(s) for s in d.pop("sigactions", [])]
    proc.shared_pending = [bytes.fromhex(p) for p in d.pop("shared_pending", [])]
    proc.extra = d


def encode_thread(thread):
    return _encode(thread.to_dict())


def decode_thread(desc, arch_mod):
    return ThreadState.from_dict(_decode(desc, _thread_schema(arch_mod)))


@functools.cache
def _thread_schema(arch_mod):
    return _schema().thread_record(arch_mod.ROBUST_LIST_HEAD_SIZE)


def encode_mappings(proc):
    incremental = any(m.stored == "incremental" for m in proc.mappings)
    return _encode({"mappings": [m.to_dict() for m in proc.mappings],
                    "files": {p: f.to_dict() for p, f in proc.mapped_files.items()}},
                   2 if incremental else VERSION)


def encode_parent(parent):
    """{path, size, mtime_ns, notes_sha256} of the parent checkpoint (chain.py)."""
    return _encode(parent)


def decode_parent(desc):
    return _decode(desc, _schema().PARENT)


def encode_sysvipc(objects):
    return _encode(objects)


def decode_sysvipc(desc):
    return _decode(desc, _schema().SYSVIPC)


def decode_mappings(desc):
    d = _decode(desc, _schema().MAPPINGS)
    return ([Mapping.from_dict(m) for m in d.get("mappings", [])],
            {p: FileIdentity.from_dict(f) for p, f in d.get("files", {}).items()})


def encode_files(proc):
    return _encode({"fds": [_fd_dict(f) for f in proc.files]})


def _fd_dict(f):
    d = f.to_dict()
    if d.get("shared") is None:     # only a tree member's entries may share (tree.py)
        d.pop("shared", None)
    return d


def encode_tree(t):
    return _encode(t.to_dict())


def decode_tree(desc):
    return tree.Tree.from_dict(_decode(desc, _schema().TREE))


def decode_files(desc):
    return [fds.decode(FileDescriptor.from_dict(f)) for f in _decode(desc, _schema().FILES)["fds"]]
