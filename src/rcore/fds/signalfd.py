"""signalfd: a set of signals read as data."""

import os

from ..linux import libc
from .kind import Rebuilt, check_int, copy_of, fdinfo_int


class Signalfd(Rebuilt):
    """Captured: `sigmask` (fdinfo, hex).  The signals it reads are the
    process's pending signals, which restart queues again.
    Restart: a new signalfd with that mask.  Restore: kept, its mask put back."""
    new_description = True

    def capture(self, ctx, f, fdinfo):
        f.kind_state = {"sigmask": fdinfo_int(fdinfo, "sigmask", 16)}

    def decode(self, f):
        check_int(f.kind_state["sigmask"], "sigmask")

    def open(self, plan, f):
        return plan.own(libc.signalfd(f.kind_state["sigmask"],
                                      os.O_CLOEXEC))

    def roll_back(self, pid, live, want):
        if live.kind_state["sigmask"] != want.kind_state["sigmask"]:
            with copy_of(pid, want.fd) as fd:
                libc.signalfd(want.kind_state["sigmask"], 0, fd)
        return []

    def describe(self, f):
        mask = f.kind_state["sigmask"]
        return "signals " + ",".join(str(s) for s in range(1, 65) if mask >> (s - 1) & 1)

    def action(self, f, plan):
        return "a new signalfd with the same mask"


KIND = Signalfd()
