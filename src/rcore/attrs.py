"""Per-process and per-thread attributes a new process starts without and a
restart must give back: rlimits, interval timers, personality,
dumpable, no_new_privs, and the signals that were pending.

Everything is set by system calls injected into the restarted process itself:
several of these calls act only on the calling process or thread, and the
others would need more privilege from outside."""

import struct

from .linux import procfs
from .linux.libc import PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS
from .state import ITIMERS

RLIMITS = {name: num for num, name in procfs.RLIMIT_NAMES.items()}
U64 = (1 << 64) - 1


def apply_rlimits(inj, ws, rlimits):
    """Soft and hard limits from the checkpoint, set by the process itself
    (prlimit64(0, ...)): from outside, prlimit needs CAP_SYS_RESOURCE as soon as
    the process's credentials differ from rcore's.  Raising a hard limit needs
    that capability too: then the soft limit is set under the current hard one.
    Returns the names of the limits that could not be set as checkpointed."""
    lowered = []
    for name, (soft, hard) in sorted(rlimits.items()):
        num = RLIMITS.get(name)
        if num is None:
            continue
        addr = ws.put(struct.pack("<QQ", soft & U64, hard & U64))
        if inj.call("prlimit64", 0, num, addr, addr + 16, check=False) == 0:
            continue
        cur_soft, cur_hard = struct.unpack("<QQ", ws.get(16, 16))
        ws.put(struct.pack("<QQ", min(soft & U64, cur_hard), cur_hard))
        inj.call("prlimit64", 0, num, addr, 0)
        lowered.append(name)
    return lowered


def apply_itimers(inj, ws, itimers):
    """ITIMER_REAL/VIRTUAL/PROF with the time that was left at the checkpoint:
    the time the process spent dead does not count (as with CRIU)."""
    armed = [(ITIMERS.index(name), v) for name, v in itimers.items()
             if name in ITIMERS and (v[0] or v[1])]
    if not armed:
        return
    for which, (interval, value) in armed:
        value = value or 1              # 0 would disarm a timer that was about to fire
        addr = ws.put(struct.pack("<qqqq", interval // 1000000, interval % 1000000,
                                  value // 1000000, value % 1000000))
        inj.call("setitimer", which, addr, 0)


def apply_personality(inj, personality):
    if personality != inj.call("personality", 0xFFFFFFFF):
        inj.call("personality", personality)


def apply_prctl_flags(inj, proc):
    if proc.dumpable in (0, 1):
        inj.call("prctl", PR_SET_DUMPABLE, proc.dumpable, 0, 0, 0)
    if proc.no_new_privs:
        inj.call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def queue_signals(inj, ws, tgid, tid, siginfos, shared):
    """Queue again the signals that were pending, each with its siginfo.  The
    process queues them to itself: only then does the kernel accept a siginfo
    that claims to come from the kernel (si_code >= 0).  Call it last, once
    handlers and masks are in place."""
    if not siginfos:
        return
    for info in siginfos:
        signo = struct.unpack_from("<i", info)[0]
        addr = ws.put(info)
        if shared:
            inj.call("rt_sigqueueinfo", tgid, signo, addr)
        else:
            inj.call("rt_tgsigqueueinfo", tgid, tid, signo, addr)
