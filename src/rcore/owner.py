"""Who a core speaks for: the owner of the core file.

rcore as root can open any file and give a process any credentials.  A core is
untrusted input that anyone may have written or edited, so root does for a core
only what the core's owner could do, as the kernel's core dumps, sudo and CRIU
draw the line:

    rcore as root, core owned by root        root's own: anything it asks
    rcore as root, core owned by user U      U's: at most what U has
        - refused if group or others may write it (then it speaks for no one;
          this holds for root's cores too)
        - its credential note must claim U's uid only, and only gids among
          U's primary and supplementary groups (the user database)
        - every path it names is opened with U's identity (as_owner): the
          kernel refuses what U could not open; restart gives the process the
          claimed credentials, restore writes only into a process U could trace
        - identities without a ctime (cores of older rcore) are refused
    rcore as user R                          the kernel limits it to R already;
        a core owned by another user (not root) is refused

`of_core()` returns None when the core is trusted (the first and the last
case) and an Owner otherwise; every function here does nothing for None."""

import os
import pwd
from contextlib import contextmanager

from .errors import NotPermitted
from .linux import libc, procfs
from .linux.libc import PR_GET_DUMPABLE, PR_SET_DUMPABLE
from .record import record


@record(frozen=True)
class Owner:
    """The user a process runs as: its IDs and name."""
    uid: int
    gid: int            # primary group
    groups: tuple       # supplementary groups (getgrouplist), the primary one included
    name: str

    def __str__(self):
        return f"{self.name} (uid {self.uid})"


def of_core(core):
    """The Owner a CoreFile speaks for, None when rcore may trust it; raises
    NotPermitted for a core rcore must not use at all."""
    st = os.fstat(core.fileno())        # the file read, whatever its path names now
    me = os.geteuid()
    if me != 0:
        if st.st_uid not in (0, me):
            raise NotPermitted(f"{core.path} belongs to uid {st.st_uid}: only that user "
                               "or root may use it")
        return None
    if st.st_mode & 0o022:
        who = " and ".join(w for w, bit in (("group", 0o020), ("others", 0o002))
                           if st.st_mode & bit)
        raise NotPermitted(f"{core.path} is writable by {who}, so it speaks for no one "
                           "(chmod go-w it if it is yours)")
    if st.st_uid == 0:
        return None
    try:
        pw = pwd.getpwuid(st.st_uid)
    except KeyError:
        raise NotPermitted(f"{core.path} belongs to uid {st.st_uid}, which is not in the "
                           "user database: rcore cannot tell what that user may do") from None
    groups = tuple(sorted(set(os.getgrouplist(pw.pw_name, pw.pw_gid))))
    return Owner(st.st_uid, pw.pw_gid, groups, pw.pw_name)


def check_creds(owner, core):
    """The credential note (real, effective, saved and filesystem uid and gid,
    supplementary groups) may claim nothing its owner does not have."""
    if owner is None:
        return
    creds = core.state.creds if isinstance(core.state.creds, dict) else {}
    uids, gids = creds.get("uid"), creds.get("gid")
    groups = creds.get("groups", [])
    if not (isinstance(uids, list) and len(uids) == 4 and isinstance(gids, list)
            and len(gids) == 4 and isinstance(groups, list)):
        raise NotPermitted(f"{core.path} belongs to {owner} but does not record its "
                           "credentials")
    other = next((u for u in uids if u != owner.uid), None)
    if other is not None:
        raise NotPermitted(f"{core.path} belongs to {owner} but claims uid {other}")
    other = next((g for g in gids + groups if g not in owner.groups), None)
    if other is not None:
        raise NotPermitted(f"{core.path} belongs to {owner} but claims gid {other}, "
                           f"not a group of {owner.name}")


@contextmanager
def as_owner(owner):
    """Run the block with the owner's identity in the calling thread: effective
    (and so filesystem) uid, gid and supplementary groups.  The kernel clears
    the effective capabilities while the effective uid is not 0
    (capabilities(7)), so files, directories, devices and /proc are checked as
    for the owner, CAP_DAC_OVERRIDE and CAP_SYS_PTRACE included.  Real and saved
    ids stay root's: the thread can come back, and the owner cannot signal or
    trace rcore meanwhile.  Per thread (raw system calls, libc.thread_*): other
    threads of rcore's process are not touched."""
    if owner is None:
        yield
        return
    # Any change of the effective ids makes the process undumpable (the
    # kernel's commit_creds): put the flag back afterwards.
    dumpable = libc.prctl(PR_GET_DUMPABLE)
    groups, egid = os.getgroups(), os.getegid()
    libc.thread_setgroups(owner.groups)
    try:
        libc.thread_setresgid(-1, owner.gid, -1)
        try:
            libc.thread_setresuid(-1, owner.uid, -1)
            try:
                yield
            finally:
                libc.thread_setresuid(-1, 0, -1)
        finally:
            libc.thread_setresgid(-1, egid, -1)
    finally:
        libc.thread_setgroups(groups)
        libc.prctl(PR_SET_DUMPABLE, dumpable)


@contextmanager
def as_rcore():
    """Inside as_owner: rcore's own effective ids (and with root's, its
    capabilities) for one step that opens no path the core names, such as
    /proc/self/map_files of rcore's own mapping (shm.py).  A no-op when the
    thread runs as itself."""
    ruid, euid, _ = os.getresuid()
    rgid, egid, _ = os.getresgid()
    if (ruid, rgid) == (euid, egid):
        yield
        return
    libc.thread_setresuid(-1, ruid, -1)
    libc.thread_setresgid(-1, rgid, -1)
    try:
        yield
    finally:
        libc.thread_setresgid(-1, egid, -1)
        libc.thread_setresuid(-1, euid, -1)


def check_target(owner, pid):
    """restore writes the core into live process pid: it must be a process the
    owner could write into with ptrace (same uids and gids, no capability the
    owner lacks, dumpable).  The kernel decides, as for the owner opening
    /proc/PID/mem (PTRACE_MODE_ATTACH_FSCREDS)."""
    if owner is None:
        return
    with as_owner(owner):
        try:
            os.close(os.open(procfs.path(pid, "mem"), os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            raise NotPermitted(f"the core belongs to {owner}, who may not change process "
                               f"{pid}") from None


def check_exec(owner, pid):
    """After restart's execve, before the program runs an instruction: a
    set-user-ID or set-group-ID executable, or one with file capabilities,
    would run the owner's memory with more than the owner has."""
    if owner is None:
        return
    status = procfs.read_status(pid)
    uids = [int(x) for x in status["Uid"].split()]
    gids = [int(x) for x in status["Gid"].split()]
    caps = int(status["CapPrm"], 16) | int(status["CapEff"], 16)
    if any(u != owner.uid for u in uids) or any(g not in owner.groups for g in gids) or caps:
        raise NotPermitted(f"{procfs.read_link(pid, 'exe')} is set-user-ID, set-group-ID "
                           f"or has file capabilities: it would run with more than "
                           f"{owner} has")
