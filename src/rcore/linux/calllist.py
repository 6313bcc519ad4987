"""System calls gathered first, then run inside a frozen process in one go.

A dump asks the process for what only it can tell (its brk, signal handlers,
itimers, timers, prctl flags...).  Injected one at a time, each call costs two
ptrace stops and rcore's turn through the scheduler; a tree of ten processes
pays it ten times within its freeze.  A CallList is run by the arch's
CALL_LIST_CODE (a loop over a table of {number, six arguments, result} in
scratch memory) ending in one signal-delivery stop (Injector.run_to_signal), or,
where the process may not map code, by one injected call after the other: the
same results either way.

    calls = CallList()
    brk = calls.add("brk", 0)
    old = calls.add("getitimer", 0, OUT, out=32)     # OUT: 32 bytes of its own
    scratch = ... calls.size bytes ...
    calls.run(inj, scratch, code=..., sig=...)
    brk.ret, old.data"""

import struct

from .. import arch
from ..errors import InjectedSyscallError
from . import libc

ARCH = arch.host()
ENTRY = struct.Struct("<Q6Qq")          # number, arguments, result (CALL_LIST_CODE)


class _Out:
    """An argument: the address of the call's output (OUT), or of a place in
    it (OUT + 8)."""
    __slots__ = ("offset",)

    def __init__(self, offset=0):
        self.offset = offset

    def __add__(self, n):
        return _Out(self.offset + n)


OUT = _Out()


class Call:
    """One call of a CallList; ret and data (its output bytes) once run."""
    __slots__ = ("name", "args", "out", "ret", "data", "_at")

    def __init__(self, name, args, out):
        self.name, self.args, self.out = name, args, out
        self.ret, self.data, self._at = None, b"", 0

    def arguments(self):
        """The arguments, OUT (OUT + n) as the address in its output."""
        return [self._at + a.offset if isinstance(a, _Out) else a for a in self.args]

    def result(self, pid):
        """ret, raising InjectedSyscallError for an error."""
        if -4096 < self.ret < 0:
            raise InjectedSyscallError(pid, self.name, -self.ret)
        return self.ret


class CallList:
    def __init__(self):
        self.calls = []

    def add(self, name, *args, out=0):
        """A call of syscall `name`; an argument OUT (OUT + n) is replaced by the
        address of (n bytes into) `out` bytes of scratch memory of its own,
        returned as Call.data."""
        call = Call(name, args, (out + 7) & ~7)
        self.calls.append(call)
        return call

    @property
    def size(self):
        """Bytes of scratch memory run() needs."""
        return sum(ENTRY.size + c.out for c in self.calls)

    def _table(self, scratch):
        """The table CALL_LIST_CODE runs, each call given its output's address."""
        table = bytearray()
        at = scratch + len(self.calls) * ENTRY.size
        for c in self.calls:
            c._at = at
            args = c.arguments()
            table += ENTRY.pack(ARCH.SYS[c.name], *args, *[0] * (6 - len(args)), 0)
            at += c.out
        return table

    def run(self, inj, scratch, *, code=None, sig=None):
        """Run every call in inj's process, scratch being `size` writable bytes
        there: by one run of CALL_LIST_CODE placed at `code` (ending with the
        delivery of `sig`, capture.stop_signal), or one call after the other
        when code is None.  Fills each Call's ret and data."""
        if not self.calls:
            return
        pid = inj.thread.tgid
        table = self._table(scratch)
        if code is None:
            for c in self.calls:
                c.ret = inj.call(c.name, *c.arguments(), check=False)
        else:
            libc.write_memory(pid, scratch, bytes(table))
            inj.run_to_signal(code, scratch, len(self.calls), sig=sig,
                              end=code + len(ARCH.CALL_LIST_CODE) - 1)
        data = libc.read_memory(pid, scratch, self.size)
        for i, c in enumerate(self.calls):
            if code is not None:
                c.ret = ENTRY.unpack_from(data, i * ENTRY.size)[-1]
            off = c._at - scratch
            c.data = data[off:off + c.out]
