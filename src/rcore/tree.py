"""Process trees: the model of the RCORE_TREE note, the names of member cores,
and the discovery of a process's descendants.

A tree checkpoint is one ordinary core per live process: the root's at the
path the user gave, every other one beside it as PATH.PID.  The root's core
holds the tree (RCORE_TREE, elf/rcore_notes.py): every process in pre-order (a
parent before its children, siblings by PID), zombies included (they have no
core)."""

import os

from . import arch
from .errors import NoSuchProcess, RcoreError
from .linux import procfs
from .record import field, record
from .state import _Record

COPY_NAME = arch.host().COPY_NAME.decode()


@record
class Member(_Record):
    """One process of a checkpointed tree."""
    pid: int
    ppid: int
    pgid: int
    sid: int
    exit_signal: int = 17       # sent to the parent when it exits (17 SIGCHLD, 0 none)
    pdeath_signal: int = 0      # prctl(PR_SET_PDEATHSIG)
    zombie: bool = False
    exit_status: int = 0        # a zombie's raw wait status; 0 for live processes
    core: str = ""              # its core's file name, beside the root's; "" for zombies
    tids: list = field(default_factory=list)


@record
class Tree(_Record):
    """A checkpointed process tree: its root and its processes."""
    root: int
    processes: list = field(default_factory=list)   # Member, pre-order, root first

    def member(self, pid):
        for m in self.processes:
            if m.pid == pid:
                return m
        raise KeyError(pid)

    def children(self, pid):
        """The members whose parent is pid, by PID."""
        return [m for m in self.processes if m.ppid == pid and m.pid != self.root]

    def to_dict(self):
        return {"root": self.root, "processes": [m.to_dict() for m in self.processes]}

    @classmethod
    def from_dict(cls, data):
        return cls(data["root"], [Member.from_dict(m) for m in data["processes"]])


def alone(proc, core_name):
    """The tree of one process (ProcessState) restarted on its own (restart
    --pid-namespace of a core without RCORE_TREE, or --without-children)."""
    return Tree(proc.pid, [Member(pid=proc.pid, ppid=proc.ppid, pgid=proc.pgrp, sid=proc.sid,
                                  core=core_name, tids=[t.tid for t in proc.threads])])


def member_name(root_name, pid):
    """The file name of process pid's core in the tree whose root core is root_name."""
    return f"{root_name}.{pid}"


def member_path(root_path, member):
    """The path of member's core (a Member, or a PID) beside the root core
    root_path; the root's is root_path itself."""
    directory = os.path.dirname(root_path)
    if isinstance(member, Member):
        return os.path.join(directory, member.core) if member.core else ""
    return os.path.join(directory, member_name(os.path.basename(root_path), member))


# --- discovery ---------------------------------------------------------------------

def children(pid):
    """Child processes of pid (of every thread), by PID, but a dump's own fork
    copies (named COPY_NAME: never the program's).  Reliable only while pid is
    stopped (a running process may fork between two reads)."""
    kids = set()
    try:
        task = os.open(procfs.path(pid, "task"), os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return []
    try:
        # one open and read each, relative to the task directory: a process
        # of 1000 threads has as many files, read while it is frozen
        for tid in os.listdir(task):
            try:
                kids.update(int(c) for c in procfs.read_at(task, f"{tid}/children").split())
            except (FileNotFoundError, ProcessLookupError):   # the thread ended meanwhile
                continue
    finally:
        os.close(task)
    return sorted(k for k in kids if _comm(k) != COPY_NAME)


class Before:
    """A process's children read while it runs, and the kernel's count of
    created tasks, read first (see children_frozen)."""

    def __init__(self, pid):
        self.pid = pid
        self.forks = procfs.read_forks()
        self.children = children(pid)

    def refresh(self):
        """Read again if a task was created since: just before the freeze,
        the less time for one to be."""
        forks = procfs.read_forks()
        if forks != self.forks:
            self.forks, self.children = forks, children(self.pid)


def children_frozen(pid, before=None, ns_init=False):
    """children(pid) of a frozen pid.  When it had none while it ran (before, a
    Before) and no task was created on the machine since, it has none now: a
    child comes from a clone, or, for a namespace's init (ns_init) only, from an
    orphan handed to it (a subreaper gets orphans of its descendants only, and
    it had none).  That spares reading one children file per thread while the
    process is frozen: 3-7 ms for 1000 threads."""
    if before is not None and not before.children and not ns_init \
            and procfs.read_forks() == before.forks:
        return []
    return children(pid)


def children_not_carried(proc):
    """What to say, at dump and at restart, of a process that had children."""
    pids = ", ".join(map(str, proc.children[:10])) + (", ..." if len(proc.children) > 10 else "")
    return (f"process {proc.pid} has {len(proc.children)} child process(es) ({pids}) that "
            "this single-process checkpoint does not hold (dump --no-children): after a "
            "restart, waiting for them fails with ECHILD and what they were doing is lost")


def descendants(root):
    """root and all its descendants, pre-order, siblings by ascending PID."""
    out = []
    stack = [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(reversed(children(pid)))
    return out


def _comm(pid):
    try:
        return procfs.read_comm(pid)
    except (OSError, RcoreError):
        return ""


def read_member(pid, pdeath_signal=0):
    """A Member of process pid as /proc shows it now (its core name is set by
    the dump).  Raises NoSuchProcess when it is gone (reaped)."""
    st = procfs.read_stat(pid)
    zombie = is_zombie(pid)
    if zombie:
        tids = [pid]
    else:
        try:
            tids = [pid] + sorted(t for t in map(int, os.listdir(procfs.path(pid, "task")))
                                  if t != pid)
        except FileNotFoundError:
            raise NoSuchProcess(pid) from None
    return Member(pid=pid, ppid=st.ppid, pgid=st.pgrp, sid=st.session,
                  exit_signal=st.exit_signal, pdeath_signal=pdeath_signal, zombie=zombie,
                  exit_status=st.exit_code if zombie else 0, tids=tids)


def is_zombie(pid):
    """Whether pid has exited and waits to be reaped.  A leader that exited while
    other threads run on shows state Z too: that process is alive."""
    try:
        return procfs.read_stat(pid).state == "Z" and os.listdir(
            procfs.path(pid, "task")) == [str(pid)]
    except (NoSuchProcess, FileNotFoundError):
        return False
