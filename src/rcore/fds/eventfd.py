"""eventfd: a counter."""

import os
import select

from .kind import Rebuilt, check_int, copy_of, fdinfo_int

SEMAPHORE_DRAIN_MAX = 1 << 16       # reads restore makes to empty a semaphore


class Eventfd(Rebuilt):
    """Captured (fdinfo): `count` (eventfd-count, hex), `semaphore`
    (eventfd-semaphore, Linux 6.6+; None where the kernel does not say).
    Restart: a new eventfd with that count and flags (EFD_SEMAPHORE, nonblock).
    Restore: kept, its count put back; refused if closed or replaced since.  A
    replacement shows as another eventfd-id (`id`) only if the old eventfd
    still existed when the new one was made: ids of closed eventfds are
    reused, and all eventfds share one inode."""
    new_description = True

    def capture(self, ctx, f, fdinfo):
        semaphore = fdinfo_int(fdinfo, "eventfd-semaphore") if "eventfd-semaphore" in fdinfo \
            else None
        f.kind_state = {"count": fdinfo_int(fdinfo, "eventfd-count", 16),
                        "semaphore": None if semaphore is None else bool(semaphore)}
        if "eventfd-id" in fdinfo:
            f.kind_state["id"] = fdinfo_int(fdinfo, "eventfd-id")

    def decode(self, f):
        check_int(f.kind_state["count"], "count", high=(1 << 64) - 1)
        if f.kind_state.get("semaphore") not in (None, True, False):
            raise ValueError("semaphore")

    def same(self, live, want):
        ids = live.kind_state.get("id"), want.kind_state.get("id")
        return None in ids or ids[0] == ids[1]

    def roll_back(self, pid, live, want):
        have, count = live.kind_state["count"], want.kind_state["count"]
        if have == count:
            return []
        semaphore = live.kind_state.get("semaphore")
        if semaphore and have > SEMAPHORE_DRAIN_MAX:
            return [f"fd {want.fd} (eventfd): its count is {have}, {count} at the checkpoint: "
                    "left so (a semaphore that large takes too many reads to empty)"]
        with copy_of(pid, want.fd) as fd:
            # The copy shares the description, blocking or not: read only what
            # is there (another process may share it and read too).
            for _ in range(have if semaphore else 1):
                if not select.select([fd], [], [], 0)[0]:
                    break
                os.read(fd, 8)
            if count:
                os.write(fd, count.to_bytes(8, "little"))
        return []

    def open(self, plan, f):
        flags = os.EFD_CLOEXEC
        if f.kind_state.get("semaphore"):
            flags |= os.EFD_SEMAPHORE
        return plan.own(os.eventfd(f.kind_state["count"], flags))

    def warnings(self, f):
        if f.kind_state.get("semaphore") is None:
            return ["the kernel does not say whether it counts as a semaphore "
                    "(EFD_SEMAPHORE): it comes back without"]
        return []

    def describe(self, f):
        return f"count {f.kind_state['count']}" + (
            " semaphore" if f.kind_state.get("semaphore") else "")

    def action(self, f, plan):
        return "a new eventfd with the same count and flags"


KIND = Eventfd()
