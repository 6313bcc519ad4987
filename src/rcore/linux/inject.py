"""Running system calls inside a stopped thread of the target.

The thread is pointed at an existing `syscall` instruction (the vDSO has one in
every process) and stepped with PTRACE_SYSCALL to the syscall-exit stop, so no code
is written into the target.  For a long series of calls, run() executes code
the caller placed in the target, up to its `int3`.  Registers are put back on
`restore()`, with the restart fix-up the kernel would otherwise skip (LINUX-NOTES:
-ERESTART* leaks to user space if a thread interrupted in a system call resumes
from a syscall stop)."""

import os
import signal

from .. import arch
from ..errors import InjectedSyscallError, InjectionFault, ProcessExited
from . import libc, procfs
from .ptrace import PTRACE_EVENT_STOP

ARCH = arch.host()
FAULTS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE}
ALL_SIGNALS = (1 << 64) - 1          # the kernel leaves SIGKILL and SIGSTOP out
# An injected call that a signal interrupted returns one of these (the kernel
# restarts it only for a thread going back to its own code): run it again.
RESTART_CODES = {ARCH.ERESTARTSYS, ARCH.ERESTARTNOINTR, ARCH.ERESTARTNOHAND,
                 ARCH.ERESTART_RESTARTBLOCK}
_RESTARTS = 1000


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


class Injector:
    """System calls run by one stopped thread.  Use as a context manager, or call
    restore() when done; until then the thread's registers are not its own.

    When the `syscall` is followed by an `int3` (rcore's own workspace, not the
    vDSO), a call is one ptrace stop, at the trap, instead of two (entry and exit
    of the call)."""

    def __init__(self, thread, syscall_addr, block_signals=False):
        """block_signals: every signal stays blocked in the thread while calls are
        injected (its own mask is put back by restore()), so that the target's
        signals neither interrupt the calls nor are taken out of its queue: they
        stay pending for the program."""
        self.thread = thread
        self.addr = syscall_addr
        self.saved = thread.get_regs()
        self.used = False
        self.saved_mask = None
        if block_signals:
            self.saved_mask = thread.get_sigmask()
            thread.set_sigmask(ALL_SIGNALS)

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

    def _call_once(self, name, args, on_event, stop_at_exit):
        thread = self.thread
        regs = self.saved.copy()
        ARCH.set_syscall(regs, self.addr, ARCH.SYS[name], args)
        thread.set_regs(regs)
        self.used = True
        if self._trap_at is not None and not stop_at_exit:
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
        self.used = True
        after_trap = trap_at + len(ARCH.TRAP_INSN)
        self._run_until(thread.cont, lambda stop: stop.is_signal_delivery
                        and stop.sig == signal.SIGTRAP and thread.get_regs().pc == after_trap)

    def _step_to_syscall_stop(self, on_event=None):
        self._run_until(self.thread.syscall, lambda stop: stop.is_syscall, on_event)

    def _run_until(self, resume, done, on_event=None):
        thread = self.thread
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
        if self.saved_mask is not None:
            self.thread.set_sigmask(self.saved_mask)
            self.saved_mask = None
        if self.used:
            regs = ARCH.restart_interrupted_syscall(self.saved, restart_block_kept=True)
        else:
            regs = self.saved
        self.thread.set_regs(regs)
        self.used = False


def errno_of(ret):
    return -ret if -4096 < ret < 0 else 0


def strerror(ret):
    return os.strerror(errno_of(ret))
