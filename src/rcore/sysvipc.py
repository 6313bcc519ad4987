"""SysV IPC objects: semaphore sets, message queues and shared memory segments.

They live in the IPC namespace, not in any process, so nothing ties one to a
process but its use.  Which ones a checkpoint holds (the rule, README):
- shared memory segments the process has attached (its "/SYSV%08x (deleted)"
  mappings, inode = shmid): their metadata; their bytes are in those mappings;
  and, described but without their bytes (`detached`), the segments one of the
  processes created (cpid) and had not attached: kept if still there, said
  otherwise;
- semaphore sets and message queues whose owner or creator is one of the
  process's user IDs (real or effective) — of every process of a tree; for
  root (uid 0), only those a process of the checkpoint operated on last (the
  sempid of one of its semaphores — semop, SETVAL, SETALL — or the queue's
  lspid or lrpid), so that a root process does not carry every root-owned
  object of the system.

capture() reads them while the processes are frozen (/proc/sysvipc for the
metadata, semctl GETALL for the values, msgrcv MSG_COPY for the messages
without taking them out) into the RCORE_SYSVIPC note.  restore() keeps an
object that still exists with the same id, key, owner and mode (and size or
number of semaphores), as it is now; recreates a missing one with the same id
(/proc/sys/kernel/{sem,msg,shm}_next_id, root only), key, owner, mode and
contents; and refuses when another object holds the id or the key.

Not carried (said at dump and restart): the semaphore undo adjustments of
SEM_UNDO operations (the kernel shows them nowhere: /proc/PID has none, so a
restarted process that exits does not undo what it did before the
checkpoint), and of recreated objects the creator ids, the last operation's
PIDs and the times."""

import ctypes
import os
import struct

from . import arch, owner
from .errors import Incompatible
from .linux import libc
from .linux.libc import (GETALL, GETPID, IPC_CREAT, IPC_EXCL, IPC_NOWAIT, IPC64_PERM, MSG_COPY,
                         SETALL)
from .state import is_sysv

ARCH = arch.host()
SHM_DEST = 0o1000           # in a segment's mode: IPC_RMID done, gone at its last detach

KINDS = {   # note key: (the /proc/sysvipc file, the id column, get, ctl, next_id file, words)
    "shm": ("shm", "shmid", "shmget", "shmctl", "shm_next_id", "shared memory segment"),
    "sem": ("sem", "semid", "semget", "semctl", "sem_next_id", "semaphore set"),
    "msg": ("msg", "msqid", "msgget", "msgctl", "msg_next_id", "message queue"),
}
MSG_MAX = 1 << 16           # bytes of one message read at a time (MSGMAX is 8 KiB by default)
LONG = struct.Struct("<q")  # struct msgbuf's mtype
PROC_SYSVIPC = "/proc/sysvipc"
NEXT_ID = "/proc/sys/kernel"
WHAT_IS_LOST = ("semaphore undo adjustments (SEM_UNDO) are not carried: the kernel shows "
                "them nowhere")


def _table(kind):
    """Rows of /proc/sysvipc/KIND as dicts of ints (perms is octal)."""
    with open(os.path.join(PROC_SYSVIPC, KINDS[kind][0])) as f:
        head, *rows = f.read().splitlines()
    names = head.split()
    out = []
    for row in rows:
        values = dict(zip(names, row.split()))
        out.append({k: int(v, 8 if k == "perms" else 10) for k, v in values.items()})
    return out


def _record(kind, row):
    return {"id": row[KINDS[kind][1]], "key": row["key"], "mode": row["perms"] & 0o777,
            "uid": row["uid"], "gid": row["gid"], "cuid": row["cuid"], "cgid": row["cgid"]}


def capture(pid, states):
    """The SysV objects of the processes `states` (ProcessState of every
    process of the checkpoint, already captured and still frozen; pid: the
    root's) by the rule above.  Returns (the RCORE_SYSVIPC note's dict, {}
    when there are none; what could not be captured, in words)."""
    attached = {m.inode for s in states for m in s.mappings if is_sysv(m)}
    uids = {u for s in states for u in (s.creds.get("uid") or [])[:2]}
    pids = {s.pid for s in states}
    problems = []
    try:
        if os.readlink(f"/proc/{pid}/ns/ipc") != os.readlink("/proc/self/ns/ipc"):
            return {}, [f"process {pid} is in another IPC namespace than rcore: its SysV "
                        "IPC objects are not in the checkpoint"]
        tables = {kind: _table(kind) for kind in KINDS}
    except FileNotFoundError:
        return {}, []           # a kernel without SysV IPC
    out = {}
    for kind in KINDS:
        found = []
        for r in tables[kind]:
            if kind == "shm" and r["shmid"] not in attached:
                if r["cpid"] in pids and not r["perms"] & SHM_DEST:
                    problems.append(_detached(r["shmid"], r["key"], r["cpid"]))
                    found.append(dict(_record(kind, r), size=r["size"], detached=True))
                continue
            if kind != "shm" and not _belongs(kind, r, uids, pids):
                continue
            try:
                found.append(dict(_record(kind, r), **_contents(kind, r)))
            except OSError as err:
                problems.append(f"the SysV {KINDS[kind][5]} {r[KINDS[kind][1]]} could not be "
                                f"read ({err.strerror}): it is not in the checkpoint")
        if found:
            out[kind] = found
    return out, problems + warnings(out)


def _detached(shmid, key, cpid=None):
    """What dump and restart say of a segment the process made but had not
    attached: the checkpoint holds its description, not its bytes."""
    who = f", created by process {cpid}," if cpid else ""
    return (f"the SysV shared memory segment {shmid} (key {key & 0xffffffff:#x}){who} was "
            "not attached: its bytes are not in the checkpoint (a restart keeps it if it "
            "still exists, and cannot make it again)")


def _belongs(kind, r, uids, pids):
    owners = uids & {r["uid"], r["cuid"]}
    if owners != {0}:
        return bool(owners)
    if kind == "msg":
        return bool(pids & {r["lspid"], r["lrpid"]})
    try:
        return any(libc.syscall("semctl", r["semid"], i, GETPID, 0) in pids
                   for i in range(r["nsems"]))
    except OSError:
        return False            # removed meanwhile


def _contents(kind, r):
    if kind == "shm":
        # the bytes are in the process's mappings of it
        return {"size": r["size"], "removed": bool(r["perms"] & SHM_DEST)}
    if kind == "sem":
        values = (ctypes.c_ushort * r["nsems"])()
        libc.syscall("semctl", r["semid"], 0, GETALL, values)
        return {"values": list(values)}
    return {"qbytes": _qbytes(r["msqid"]), "messages": _messages(r["msqid"], r["qnum"])}


def _qbytes(msqid):
    buf = libc.ipc_stat("msgctl", msqid)
    return LONG.unpack_from(buf.raw, ARCH.MSQID64_QBYTES)[0]


def _messages(msqid, count):
    """Every message of the queue, in order, left in it: [[type, hex]]."""
    buf = ctypes.create_string_buffer(LONG.size + MSG_MAX)
    out = []
    for i in range(count):
        n = libc.syscall("msgrcv", msqid, buf, MSG_MAX, i, IPC_NOWAIT | MSG_COPY)
        out.append([LONG.unpack_from(buf.raw)[0], buf.raw[LONG.size:LONG.size + n].hex()])
    return out


def describe(objects):
    """One line per object, for rcore info."""
    out = []
    for kind, (*_, words) in KINDS.items():
        for obj in objects.get(kind, []):
            what = {"shm": lambda: f"{obj['size']} bytes" + (", removed" if obj.get("removed")
                                                              else "")
                    + (", not attached: bytes not stored" if obj.get("detached") else ""),
                    "sem": lambda: "values " + " ".join(map(str, obj["values"])),
                    "msg": lambda: f"{len(obj['messages'])} messages, "
                                   f"{sum(len(t) // 2 for _, t in obj['messages'])} bytes"}[kind]()
            out.append(f"{words} {obj['id']}  key {obj['key'] & 0xffffffff:#010x}  uid "
                       f"{obj['uid']} gid {obj['gid']} mode {obj['mode']:o}  {what}")
    return out


def warnings(objects):
    """What dump and restart say is not carried of a checkpoint's SysV objects."""
    return [WHAT_IS_LOST] if objects.get("sem") else []


# --- restart ------------------------------------------------------------------------

def restore(objects, registry, warnings_out):
    """Bring back the SysV objects of a checkpoint, before any process of it is
    built: kept when still there unchanged, recreated with the same id
    otherwise.  registry: the tree's dict (shm.py); a segment is entered there
    for shm.map_sources (to attach as it is, or to fill from the core).
    Returns what it created, for undo() if the restart fails.  Raises
    Incompatible when another object holds an id or a key."""
    from .shm import Shared, sysv_key       # the restart's: a dump does not load them
    made = []
    try:
        for kind in KINDS:
            for obj in objects.get(kind, []):
                if _kept(kind, obj):
                    if kind == "shm" and not obj.get("detached"):
                        registry[sysv_key(obj["id"])] = Shared(size=obj["size"],
                                                               filled=[(0, obj["size"])])
                    continue
                if obj.get("detached"):
                    warnings_out.append(_detached(obj["id"], obj["key"]) + ": it is gone")
                    continue
                _create(kind, obj)
                made.append((kind, obj["id"]))
                warnings_out.append(f"SysV {KINDS[kind][5]} {obj['id']} (key {obj['key']:#x}) "
                                    "was gone: made again with its contents")
                if kind == "shm":
                    registry[sysv_key(obj["id"])] = Shared(size=obj["size"],
                                                           removed=obj.get("removed", False))
    except BaseException:
        undo(made)
        raise
    warnings_out += warnings(objects)
    return made


def undo(made):
    """Remove the objects restore() created (a restart that failed)."""
    for kind, ident in made:
        try:
            _ctl(kind, ident, libc.IPC_RMID)
        except OSError:
            pass


def _ctl(kind, ident, cmd, arg=0):
    ctl = KINDS[kind][3]
    return libc.syscall(ctl, ident, 0, cmd, arg) if kind == "sem" \
        else libc.syscall(ctl, ident, cmd, arg)


def _kept(kind, obj):
    """Does the object still exist as the checkpoint has it?  False when it is
    gone; Incompatible when its id is another object's now."""
    name = f"SysV {KINDS[kind][5]} {obj['id']}"
    try:
        buf = libc.ipc_stat(KINDS[kind][3], obj["id"])
    except OSError:
        return False
    key, uid, gid, _, _, mode = IPC64_PERM.unpack_from(buf.raw)
    size = {"shm": lambda: _shm_size(buf), "sem": lambda: _nsems(buf)}.get(kind, lambda: None)()
    want = {"shm": obj.get("size"), "sem": len(obj.get("values", []))}.get(kind)
    if (key, uid, gid, mode & 0o777) != (obj["key"], obj["uid"], obj["gid"], obj["mode"]) \
            or size != want:
        raise Incompatible(f"{name} is another object now (key {key:#x}, uid {uid}, mode "
                           f"{mode & 0o777:o}; the checkpoint's has key {obj['key']:#x}, uid "
                           f"{obj['uid']}, mode {obj['mode']:o})")
    return True


def _shm_size(buf):
    return struct.unpack_from("<Q", buf.raw, ARCH.SHMID64_SEGSZ)[0]


def _nsems(buf):
    return struct.unpack_from("<Q", buf.raw, ARCH.SEMID64_NSEMS)[0]


def _create(kind, obj):
    """Make a missing object again with its id, key, owner, mode and contents."""
    _, _, get, ctl, next_file, words = KINDS[kind]
    name = f"SysV {words} {obj['id']}"
    key = obj["key"]
    if key != 0:
        try:
            other = libc.syscall(get, key, 0, 0)
        except OSError:
            other = None
        if other is not None:
            raise Incompatible(f"{name} is gone and its key {key:#x} is another object's "
                               f"now (id {other})")
    size = {"shm": obj.get("size", 0), "sem": len(obj.get("values", []))}.get(kind, 0)
    try:
        with owner.as_rcore():
            with open(os.path.join(NEXT_ID, next_file), "w") as f:
                f.write(str(obj["id"]))
        flags = IPC_CREAT | IPC_EXCL | obj["mode"] | 0o600
        if kind == "msg":
            ident = libc.syscall(get, key, flags)
        else:
            ident = libc.syscall(get, key, size, flags)
    except OSError as err:
        raise Incompatible(f"{name} is gone and cannot be made again with its id: "
                           f"{err.strerror}") from None
    if ident != obj["id"]:
        _ctl(kind, ident, libc.IPC_RMID)
        raise Incompatible(f"{name} is gone and its id is taken")
    try:
        _fill(kind, ident, obj)
        buf = libc.ipc_stat(ctl, ident)
        perm = list(IPC64_PERM.unpack_from(buf.raw))
        perm[1], perm[2], perm[5] = obj["uid"], obj["gid"], obj["mode"]
        IPC64_PERM.pack_into(buf, 0, *perm)
        with owner.as_rcore():
            libc.ipc_set(ctl, ident, buf)
    except BaseException:
        _ctl(kind, ident, libc.IPC_RMID)
        raise


def _fill(kind, ident, obj):
    if kind == "sem":
        values = (ctypes.c_ushort * len(obj["values"]))(*obj["values"])
        libc.syscall("semctl", ident, 0, SETALL, values)
    elif kind == "msg":
        buf = libc.ipc_stat("msgctl", ident)
        if obj.get("qbytes") and obj["qbytes"] != LONG.unpack_from(buf.raw, ARCH.MSQID64_QBYTES)[0]:
            LONG.pack_into(buf, ARCH.MSQID64_QBYTES, obj["qbytes"])
            with owner.as_rcore():         # above msgmnb: CAP_SYS_RESOURCE
                libc.ipc_set("msgctl", ident, buf)
        for mtype, data in obj.get("messages", []):
            text = bytes.fromhex(data)
            msg = ctypes.create_string_buffer(LONG.pack(mtype) + text, LONG.size + len(text))
            libc.syscall("msgsnd", ident, msg, len(text), IPC_NOWAIT)
