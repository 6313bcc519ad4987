"""rseq (restartable sequences) in a restarted process.

glibc 2.35+ registers a struct rseq in every thread.  A fresh process must not
keep a registration that points into memory about to be replaced (the kernel
writes to it on every preemption and kills the process with SIGSEGV when it
cannot), and each restored thread is registered again at its checkpointed
address and signature once memory is in place (apply.apply_thread_state).  A
thread checkpointed inside an rseq critical section is moved to the section's
abort handler, which is what the kernel does to a preempted thread."""

import errno
import struct

from .errors import InjectedSyscallError

RSEQ_FLAG_UNREGISTER = 1
RSEQ_CS_OFFSET = 8          # struct rseq: u32 cpu_id_start, u32 cpu_id, u64 rseq_cs
RSEQ_CS_SIZE = 32           # struct rseq_cs: u32 version, u32 flags, u64 start_ip,
                            #                 u64 post_commit_offset, u64 abort_ip


def drop_registration(inj):
    """Unregister whatever rseq area the (fresh) thread has.  At the
    PTRACE_EVENT_EXEC stop the kernel still reports the pre-exec registration;
    it clears it itself as the thread leaves execve (rseq_execve), which the
    first injected call does: EINVAL then means nothing is registered."""
    conf = inj.thread.rseq_config()
    if conf is None or not conf.rseq_abi_pointer:
        return
    try:
        inj.call("rseq", conf.rseq_abi_pointer, conf.rseq_abi_size,
                 RSEQ_FLAG_UNREGISTER, conf.signature)
    except InjectedSyscallError as err:
        if err.errno != errno.EINVAL:
            raise
    conf = inj.thread.rseq_config()
    if conf is not None and conf.rseq_abi_pointer:
        raise InjectedSyscallError(inj.thread.tgid, "rseq(unregister)", errno.EBUSY)


def abort_ip(read_memory, rseq, pc):
    """The abort handler's address if pc is inside the critical section the
    thread's rseq area points at, else None.  read_memory(addr, n) reads the
    checkpointed memory."""
    if not rseq or not rseq.get("ptr"):
        return None
    try:
        (cs_ptr,) = struct.unpack("<Q", read_memory(rseq["ptr"] + RSEQ_CS_OFFSET, 8))
        if not cs_ptr:
            return None
        _, _, start, length, abort = struct.unpack("<IIQQQ", read_memory(cs_ptr, RSEQ_CS_SIZE))
    except Exception:
        return None
    if start <= pc < start + length:
        return abort
    return None
