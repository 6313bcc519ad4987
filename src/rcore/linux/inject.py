"""Running system calls inside a stopped thread of the target.

The thread is pointed at an existing `syscall` instruction (the vDSO has one in
every process) and stepped with PTRACE_SYSCALL to the syscall-exit stop, so no code
is written into the target.  For a long series of calls, run() executes code
the caller placed in the target, up to its `int3`.  Registers are put back on
`restore()`, with the restart fix-up the kernel would otherwise skip (LINUX-NOTES:
-ERESTART* leaks to user space if a thread interrupted in a system call resumes
from a syscall stop).

A target that must survive rcore's death at any instant (a dump's) gets guarded
calls (`SafeSites`, arch "injected calls that need no tracer to end"): a thread
left alone by a dead rcore finishes the call and returns to its own context
through a signal frame rcore wrote below its stack's red zone."""

import os
import signal
import struct

from .. import arch
from ..errors import InjectedSyscallError, InjectionFault, ProcessExited, RcoreError
from . import libc, procfs
from .ptrace import PTRACE_EVENT_STOP

ARCH = arch.host()
FAULTS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE}
# The int3 ending an unguarded injected call is a forced SIGTRAP: if the thread
# blocks SIGTRAP, the kernel unblocks it and resets the program's handler to
# SIG_DFL (force_sig_info_to_task).  So SIGTRAP is never blocked while calls are
# injected (under ptrace the trap is a stop rcore discards, never delivered).
TRAP_BIT = 1 << (signal.SIGTRAP - 1)
# Every signal an injector blocks (the kernel leaves SIGKILL and SIGSTOP out).
BLOCK_ALL = (1 << 64) - 1 & ~TRAP_BIT
# An injected call that a signal interrupted returns one of these (the kernel
# restarts it only for a thread going back to its own code): run it again.
RESTART_CODES = {ARCH.ERESTARTSYS, ARCH.ERESTARTNOINTR, ARCH.ERESTARTNOHAND,
                 ARCH.ERESTART_RESTARTBLOCK}
_RESTARTS = 1000


class SafeSites:
    """Where guarded calls run in process pid: a vDSO `syscall` followed only by
    register clears and `ret` (.syscall), and the program's own rt_sigreturn
    trampoline (.sigreturn).  find() returns None when either is missing (no vDSO
    path of that shape, or no C library code for signals): calls are then not
    guarded."""

    def __init__(self, syscall, sigreturn):
        self.syscall, self.sigreturn = syscall, sigreturn

    @classmethod
    def find(cls, pid, maps):
        vdso = next((m for m in maps if m.path == "[vdso]"), None)
        if vdso is None:
            return None
        at = ARCH.find_syscall_then_ret(libc.read_memory(pid, vdso.start, vdso.end - vdso.start))
        sigreturn = _find_sigreturn(pid, maps)
        if at is None or sigreturn is None:
            return None
        return cls(vdso.start + at, sigreturn)


def _find_sigreturn(pid, maps):
    # The C library's restorer (glibc's and musl's __restore_rt) is the usual one.
    code_maps = [m for m in maps if m.perms[2] == "x" and m.file_backed]
    code_maps.sort(key=lambda m: "libc" not in m.path and "musl" not in m.path)
    overlap = max(map(len, ARCH.SIGRETURN_GADGETS)) - 1
    for m in code_maps:
        # in pieces: it is usually found well before the end of the C library
        for start in range(m.start, m.end, _SEARCH_CHUNK):
            try:
                code = libc.read_memory(pid, start, min(_SEARCH_CHUNK + overlap, m.end - start))
            except OSError:
                break
            for gadget in ARCH.SIGRETURN_GADGETS:
                at = code.find(gadget)
                if at >= 0:
                    return start + at
    return None


_SEARCH_CHUNK = 256 << 10


def write_code(pid, addr, code):
    """Write code into a page of pid that is executable and not writable: through
    /proc/PID/mem, which may write any page of a traced process (copy-on-write),
    so that no W^X policy (MDWE) has to allow a writable page to become code."""
    fd = os.open(procfs.path(pid, "mem"), os.O_RDWR | os.O_CLOEXEC)
    try:
        if os.pwrite(fd, code, addr) != len(code):
            raise OSError(14, f"short write of code at {addr:#x} in {pid}")
    finally:
        os.close(fd)


# The first page of every mapping a dump makes in its target ends with this mark:
# who made it (pid, start time) and its size.  A dump killed before it could
# unmap them leaves them; the next one recognises and removes them.
_LEFTOVER = struct.Struct("<16sIQQ4x")
_LEFTOVER_MAGIC = b"rcore-leftover\0\1"


def map_marked(inj, size, prot):
    """mmap(size, prot) in inj's process, private and anonymous, with the mark;
    an executable mapping is never writable (written through /proc/PID/mem).
    Returns its address, or the negative errno."""
    import mmap
    # MAP_NORESERVE: a VMA flag of its own, so that the kernel does not merge the
    # mapping with an anonymous neighbour, where its mark would not be found
    addr = inj.call("mmap", 0, size, prot,
                    mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | libc.MAP_NORESERVE, -1, 0,
                    check=False)
    if not -4096 < addr < 0:
        mark = _LEFTOVER.pack(_LEFTOVER_MAGIC, *procfs.process_identity(), size)
        at = addr + ARCH.PAGE_SIZE - _LEFTOVER.size
        if prot & mmap.PROT_WRITE:
            libc.write_memory(inj.thread.tgid, at, mark)
        else:
            write_code(inj.thread.tgid, at, mark)
    return addr


def find_leftovers(pid, maps):
    """(address, size) of the mappings in pid that rcore processes no longer
    alive made and could not unmap (see map_marked).  Only the marked extent is
    returned, even when the kernel merged it with a neighbour."""
    found = []
    candidates = [m for m in maps if not m.file_backed and not m.path and not m.shared
                  and m.perms[0] == "r"]
    n = _LEFTOVER.size
    for i in range(0, len(candidates), _BATCH):     # one call for many mappings
        batch = candidates[i:i + _BATCH]
        buf = bytearray(n * len(batch))
        at = libc.buffer_address(buf)
        try:
            got = libc.process_vm_readv(pid, [(at + k * n, n) for k in range(len(batch))],
                                        [(m.start + ARCH.PAGE_SIZE - n, n) for m in batch])
        except OSError:
            got = 0
        for k, m in enumerate(batch[:got // n]):
            magic, maker, start, size = _LEFTOVER.unpack_from(buf, k * n)
            if (magic == _LEFTOVER_MAGIC and 0 < size <= m.end - m.start
                    and not procfs.identity_alive(maker, start)):
                found.append((m.start, size))
        if got < len(buf):        # a mapping that could not be read ends the call
            found += find_leftovers(pid, batch[got // n + 1:])
    return found


_BATCH = 512


def find_syscall_insn(pid, maps=None):
    """Address of a `syscall` instruction in the target's vDSO."""
    if maps is None:
        vdso = procfs.find_mapping(pid, "[vdso]")
    else:
        vdso = next((m for m in maps if m.path == "[vdso]"), None)
    if vdso is not None:
        code = libc.read_memory(pid, vdso.start, vdso.end - vdso.start)
        at = code.find(ARCH.SYSCALL_INSN)
        if at >= 0:
            return vdso.start + at
    raise InjectedSyscallError(pid, "syscall", 2)   # no vDSO: ENOENT


def frame_slot_size(xstate):
    """Bytes a guarded Injector's frame_at needs for a thread with this XSAVE image."""
    return (64 + ARCH.sigframe_size(xstate) + 63) & ~63


class Injector:
    """System calls run by one stopped thread.  Use as a context manager, or call
    restore() when done; until then the thread's registers are not its own.

    When the `syscall` is followed by an `int3` (rcore's own workspace, not the
    vDSO), a call is one ptrace stop, at the trap, instead of two (entry and exit
    of the call)."""

    def __init__(self, thread, syscall_addr, block_signals=False, safe=None, frame_at=None,
                 xstate=None, known=None, frames=None):
        """block_signals: every signal stays blocked in the thread while calls are
        injected (its own mask is put back by restore()), so that the target's
        signals neither interrupt the calls nor are taken out of its queue: they
        stay pending for the program.

        safe (SafeSites): guarded calls at safe.syscall (syscall_addr is then only
        the default of `addr`), signals blocked too.  The thread's context is first
        written as a signal frame below its stack's red zone (the bytes there are
        put back by restore()), or at frame_at, memory rcore mapped for it
        (frame_slot_size() bytes, 64-byte aligned); each call gets a stack pointer
        at the address of the rt_sigreturn trampoline, just below the frame.
        xstate: the thread's XSAVE image, when the caller has just read it.
        known: (registers, signal mask, rseq configuration, rseq area bytes or
        None) the caller has just read from the stopped thread (capture.py), so
        as not to read them again: a dump of many threads pays for every call.
        frames: with frame_at, a list that gets (address, bytes) of the frame
        instead of its being written: the caller writes many threads' frames in
        one call, before running any."""
        self.thread = thread
        area = None
        if known is not None:
            self.saved, mask, rseq, area = known
            self.saved = self.saved.copy()
        else:
            self.saved, mask, rseq = thread.get_regs(), None, _UNKNOWN
        if block_signals or safe is not None:
            # the thread goes back to its own code afterwards: as the kernel would
            _resume_at_rseq_abort(thread, self.saved, rseq, area)
        self.used = False
        self.saved_mask = None
        self._stack = None            # (address, bytes under the frame)
        self._call_sp = None
        if safe is not None:
            # guarded calls never end at a trap (_call_once): no trap to look for
            self._addr, self._trap_at = safe.syscall, None
            block_signals = True
        else:
            self.addr = syscall_addr
        self._mask = None             # the mask rcore gave the thread (None: its own)
        self._block = block_signals
        if block_signals:
            self.saved_mask = thread.get_sigmask() if mask is None else mask
        if safe is not None:
            self._write_frame(safe, frame_at, xstate, frames if frame_at is not None else None)

    def _write_frame(self, safe, frame_at, xstate, frames=None):
        """A signal frame of the thread's own context, as a signal handler's would
        be, below the red zone (or at frame_at); the trampoline's address just
        below it."""
        regs = ARCH.restart_interrupted_syscall(self.saved, restart_block_kept=False)
        xstate = xstate or self.thread.get_xstate()
        if frame_at is None:
            at = (self.saved.sp - ARCH.RED_ZONE - ARCH.sigframe_size(xstate)) & ~63
        else:
            at = frame_at + 64
        frame = ARCH.encode_sigframe(regs, xstate, self.saved_mask, at, safe.sigreturn)
        start = at - 8
        pid = self.thread.tgid
        self._call_sp = start
        if frames is not None:
            frames.append((start, frame))
            return
        try:
            old = libc.read_memory(pid, start, len(frame)) if frame_at is None else None
            libc.write_memory(pid, start, frame)
        except OSError as err:
            raise RcoreError(f"cannot write a signal frame below the stack pointer of "
                             f"thread {self.thread.tid}: {os.strerror(err.errno or 14)}") \
                from None
        if old is not None:
            self._stack = (start, old)

    @property
    def addr(self):
        return self._addr

    @addr.setter
    def addr(self, value):
        self._addr = value
        after = value + len(ARCH.SYSCALL_INSN)
        try:
            self._trap_at = after if libc.read_memory(
                self.thread.tgid, after, len(ARCH.TRAP_INSN)) == ARCH.TRAP_INSN else None
        except OSError:
            self._trap_at = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.restore()
        return False

    def call(self, name, *args, check=True, on_event=None, stop_at_exit=False):
        """Run syscall `name` and return its result (negative errno when not
        checked).  `on_event(event, msg)` sees ptrace events the call causes
        (a clone's PTRACE_EVENT_CLONE, with the new pid).  stop_at_exit: end at
        the call's syscall-exit stop even when a trap follows (a call that
        unmaps the trap itself)."""
        for _ in range(_RESTARTS):
            ret = self._call_once(name, args, on_event, stop_at_exit)
            if -ret not in RESTART_CODES:
                break
        if check and -4096 < ret < 0:
            raise InjectedSyscallError(self.thread.tgid, name, -ret)
        return ret

    def frame_area(self):
        """(address, the bytes the signal frame covers) of a guarded Injector, or
        None: a fork made meanwhile must get the bytes back in its copy."""
        return self._stack

    def _call_once(self, name, args, on_event, stop_at_exit):
        thread = self.thread
        regs = self.saved.copy()
        ARCH.set_syscall(regs, self.addr, ARCH.SYS[name], args)
        if self._call_sp is not None:
            regs.sp = self._call_sp
        thread.set_regs(regs)
        # only now: a thread left with its own registers keeps its own mask
        self._prepare_mask()
        self.used = True
        if self._trap_at is not None and not stop_at_exit and self._call_sp is None:
            trap_end = self._trap_at + len(ARCH.TRAP_INSN)
            self._run_until(thread.cont, lambda stop: stop.is_signal_delivery
                            and stop.sig == signal.SIGTRAP
                            and thread.get_regs().pc == trap_end, on_event)
        else:
            self._step_to_syscall_stop()          # entry
            self._step_to_syscall_stop(on_event)  # exit
        return ARCH.signed(getattr(thread.get_regs(), ARCH.SYSCALL_RET_REG))

    def run(self, pc, *args, trap_at):
        """Run code the target holds at pc (a function of up to six arguments)
        until it reaches its `int3` at trap_at.  The code's results are left in
        memory; its registers are dropped, as a call's are."""
        thread = self.thread
        regs = self.saved.copy()
        ARCH.set_call(regs, pc, args)
        thread.set_regs(regs)
        self._prepare_mask()
        self.used = True
        after_trap = trap_at + len(ARCH.TRAP_INSN)
        self._run_until(thread.cont, lambda stop: stop.is_signal_delivery
                        and stop.sig == signal.SIGTRAP and thread.get_regs().pc == after_trap)

    def _prepare_mask(self):
        if self._block:
            self._set_mask(BLOCK_ALL)
        elif self._mask is None:
            mask = self.thread.get_sigmask()
            if mask & TRAP_BIT:             # see TRAP_BIT
                self.saved_mask = mask
                self._set_mask(mask & ~TRAP_BIT)

    def _set_mask(self, mask):
        if self._mask != mask:
            self.thread.set_sigmask(mask)
            self._mask = mask

    def run_to_signal(self, pc, *args, end, sig):
        """Run code the target holds at pc (a function of up to six arguments
        that ends in the arch's tgkill-then-ret, `end` being the address of that
        ret) up to the delivery stop of its signal `sig`, which must be one the
        program ignores: left alone, the thread takes it and goes back through
        the frame.  Only for guarded Injectors.  The results are left in memory."""
        self.start_to_signal(pc, *args, sig=sig)
        self.finish_to_signal(end=end, sig=sig)

    def start_to_signal(self, pc, *args, sig):
        """The first half of run_to_signal: the thread is set running.  Many
        threads run at once this way (capture.py): each is then waited for by
        finish_to_signal, instead of one round trip through the scheduler after
        the other."""
        thread = self.thread
        regs = self.saved.copy()
        ARCH.set_call(regs, pc, args)
        ARCH.set_run_stop(regs, thread.tgid, thread.tid, sig)
        regs.sp = self._call_sp
        thread.set_regs(regs)
        self._set_mask(BLOCK_ALL & ~(1 << (sig - 1)))
        self.used = True
        thread.cont()

    def finish_to_signal(self, *, end, sig):
        """The second half of run_to_signal: wait for the thread's stop at `end`.
        end None: at the first delivery of `sig`, wherever (one ptrace request
        fewer); the caller then tells from the results whether the code ran to
        its end (the signal may have come from elsewhere first) and runs it
        again if not."""
        thread = self.thread
        self._run_until(None, lambda stop: stop.is_signal_delivery and stop.sig == sig
                        and (end is None or thread.get_regs().pc == end))

    def _step_to_syscall_stop(self, on_event=None):
        self._run_until(self.thread.syscall, lambda stop: stop.is_syscall, on_event)

    def _run_until(self, resume, done, on_event=None):
        """resume None: the thread was already set running (start_to_signal)."""
        thread = self.thread
        if resume is None:
            resume = thread.cont
        else:
            resume()
        while True:
            stop = thread.wait()
            if stop.exited:
                raise ProcessExited(thread.tgid)
            if done(stop):
                return
            if stop.event and stop.event != PTRACE_EVENT_STOP:
                if on_event:
                    on_event(stop.event, thread.event_msg())
            elif stop.is_signal_delivery and stop.sig in FAULTS:
                # The injected call itself faulted (e.g. a stale rseq area): going on
                # would loop on the fault forever.
                raise InjectionFault(thread.tgid, signal.Signals(stop.sig).name)
            elif stop.is_signal_delivery:
                # Not now: a handler would run on borrowed registers.  It is
                # handed back when the thread is detached.
                thread.pending_signal = stop.sig
            resume()

    def restore(self):
        # Mask first, registers next: until the registers are the thread's own, a
        # dead rcore's thread still takes its frame's way back (mask included).
        if self._mask is not None:
            self.thread.set_sigmask(self.saved_mask)
            self._mask = None
        if self.used:
            regs = ARCH.restart_interrupted_syscall(self.saved, restart_block_kept=True)
        else:
            regs = self.saved
        self.thread.set_regs(regs)
        self.used = False
        if self._stack is not None:
            start, old = self._stack
            self._stack = self._call_sp = None
            try:
                libc.write_memory(self.thread.tgid, start, old)
            except OSError:
                pass                 # below the red zone: nothing the program holds


# struct rseq: rseq_cs (the active critical section's descriptor) at offset 8;
# struct rseq_cs {u32 version, flags; u64 start_ip, post_commit_offset, abort_ip}
_RSEQ_CS_FIELD = 8
_RSEQ_CS = struct.Struct("<IIQQQ")


_UNKNOWN = object()


def _resume_at_rseq_abort(thread, regs, conf=_UNKNOWN, area=None):
    """A thread stopped inside an rseq critical section must resume at its abort
    handler: the stop preempted it.  The kernel would move it there on its next
    return to user space, but the first return is to an injected call, outside
    the section, and the kernel then only drops the section's descriptor: the
    thread would run on inside the section unaborted.  So do what the kernel
    would have done, in the registers the thread gets back.  conf: the thread's
    rseq configuration when the caller has it; area: the bytes of its rseq area
    when the caller has read them."""
    if conf is _UNKNOWN:
        conf = thread.rseq_config()
    if conf is None or not conf.rseq_abi_pointer:
        return
    pid = thread.tgid
    try:
        if area is not None and len(area) >= _RSEQ_CS_FIELD + 8:
            (cs_at,) = struct.unpack_from("<Q", area, _RSEQ_CS_FIELD)
        else:
            (cs_at,) = struct.unpack("<Q", libc.read_memory(
                pid, conf.rseq_abi_pointer + _RSEQ_CS_FIELD, 8))
        if not cs_at:
            return
        _, _, start, length, abort = _RSEQ_CS.unpack(libc.read_memory(pid, cs_at, _RSEQ_CS.size))
        if not start <= regs.pc < start + length:
            return
        (signature,) = struct.unpack("<I", libc.read_memory(pid, abort - 4, 4))
    except (OSError, struct.error):
        return
    if signature == conf.signature:
        regs.pc = abort


def errno_of(ret):
    return -ret if -4096 < ret < 0 else 0


def strerror(ret):
    return os.strerror(errno_of(ret))
