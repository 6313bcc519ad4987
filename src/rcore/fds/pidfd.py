"""pidfd: a descriptor of a process or thread."""

import os

from ..errors import Unsupported
from .kind import Rebuilt, check_int, fdinfo_int

PIDFD_THREAD = os.O_EXCL                  # include/uapi/linux/pidfd.h


class Pidfd(Rebuilt):
    """Captured: `pid` (fdinfo Pid: -1 once the process is gone), the flags
    (PIDFD_NONBLOCK, PIDFD_THREAD).
    Restart: only a pidfd of a process or thread that comes back, so for now of
    the process itself or one of its threads (other processes belong to
    checkpoints of process trees); made inside the new process once its threads
    exist (pidfd_open of the PID or TID it has now, then dup2 to its number).
    Restore: kept if still open."""
    stage = 1

    def capture(self, ctx, f, fdinfo):
        f.kind_state = {"pid": fdinfo_int(fdinfo, "Pid")}

    def decode(self, f):
        check_int(f.kind_state["pid"], "pid", -1, 1 << 31)

    def check(self, f, plan):
        pid = f.kind_state["pid"]
        if pid <= 0:
            raise Unsupported(f"fd {f.fd} is a pidfd of a process that had exited")
        if pid not in plan.tids:
            raise Unsupported(f"fd {f.fd} is a pidfd of process {pid}, which is not part of "
                              "the checkpoint (only pidfds of the process itself and its "
                              "threads come back)")

    def open(self, plan, f):
        return None

    def in_process(self, inj, ws, plan, f):
        flags = f.flags & (os.O_NONBLOCK | PIDFD_THREAD)
        fd = inj.call("pidfd_open", plan.tids[f.kind_state["pid"]], flags)
        if fd != f.fd:
            inj.call("dup2", fd, f.fd)
            inj.call("close", fd)

    def describe(self, f):
        what = "thread" if f.flags & PIDFD_THREAD else "process"
        return f"{what} {f.kind_state['pid']}"

    def action(self, f, plan):
        return "pidfd_open inside the new process (its own PID or TID)"


KIND = Pidfd()
