"""epoll: the descriptors an epoll instance watches, with their events and data."""

import os
import re

from .. import arch
from ..errors import Unsupported
from ..linux import libc, procfs
from .kind import Rebuilt, check_int

ARCH = arch.host()
F_DUPFD_CLOEXEC = 1030
_WATCH = re.compile(r"tfd:\s*(\d+)\s+events:\s*([0-9a-f]+)\s+data:\s*([0-9a-f]+)")


class Epoll(Rebuilt):
    """Captured (fdinfo "tfd: N events: X data: Y" per watch): `watches`
    [{tfd, events, data, fd}].  epoll records the number given to epoll_ctl
    (tfd) and the open file description; kcmp(KCMP_EPOLL_TFD) tells whether fd
    tfd still is that description, and if not which fd is (`fd`); a watched
    description no fd holds any more cannot be rebuilt.
    Restart: rcore creates the instance; inside the new process, once every
    descriptor exists, epoll_ctl(EPOLL_CTL_ADD) adds each watch under its tfd,
    so that fdinfo shows the same numbers (a watch whose description moved to
    another fd: that fd is dup2'ed onto tfd for the call, then tfd is put
    back).  An epoll watched by another is completed first.
    Restore: kept if still open."""
    new_description = True
    stage = 2

    def capture(self, ctx, f, fdinfo):
        watches = []
        for line in fdinfo["lines"]:
            m = _WATCH.match(line)
            if not m:
                continue
            tfd = int(m.group(1))
            # Without data (restore's comparison) the holder is not looked for.
            watches.append({"tfd": tfd, "events": int(m.group(2), 16),
                            "data": int(m.group(3), 16),
                            "fd": _holder(ctx.pid, f.fd, tfd) if ctx.with_data else tfd})
        f.kind_state = {"watches": watches}

    def roll_back(self, pid, live, want):
        def key(st):
            return sorted((w["tfd"], w["events"], w["data"]) for w in st.get("watches", []))
        if key(live.kind_state) != key(want.kind_state):
            return [f"fd {want.fd} (epoll): its watches changed since the checkpoint and "
                    f"were left as they are now ({self.describe(live)})"]
        return []

    def decode(self, f):
        for w in f.kind_state["watches"]:
            check_int(w["tfd"], "watch tfd", high=1 << 31)
            check_int(w["events"], "watch events", high=1 << 32)
            check_int(w["data"], "watch data")
            if w["fd"] is not None:
                check_int(w["fd"], "watch fd", high=1 << 31)

    def check(self, f, plan):
        numbers = {e.fd for e in plan.files}
        for w in f.kind_state["watches"]:
            if w["fd"] is None or w["fd"] not in numbers:
                raise Unsupported(f"fd {f.fd} (epoll): it watches a file it knows as fd "
                                  f"{w['tfd']} that no descriptor of the process holds any more")

    def warnings(self, f):
        return [f"the watch added as fd {w['tfd']} is of the file now at fd {w['fd']} "
                f"(fd {w['tfd']} was closed or reused since): rebuilt that way"
                for w in f.kind_state["watches"] if w["fd"] not in (None, w["tfd"])]

    def open(self, plan, f):
        return plan.own(libc.epoll_create1(os.O_CLOEXEC))

    def order(self, f, plan):
        """Nesting depth: an epoll is completed after the epolls it watches."""
        by_fd = {e.fd: e for e in plan.files}
        masters = {e.fd: by_fd.get(e.description, e) for e in plan.files}

        def depth(entry, seen):
            inner = [masters.get(w["fd"]) for w in entry.kind_state.get("watches", [])]
            inner = [e for e in inner if e is not None and e.kind == "epoll"
                     and e.fd not in seen]
            return 1 + max((depth(e, seen | {e.fd}) for e in inner), default=0)
        return depth(f, {f.fd})

    def in_process(self, inj, ws, plan, f):
        for w in f.kind_state["watches"]:
            event = ws.put(ARCH.EPOLL_EVENT.pack(w["events"], w["data"]))
            tfd, now = w["tfd"], w["fd"]
            if now == tfd:
                inj.call("epoll_ctl", f.fd, libc.EPOLL_CTL_ADD, tfd, event)
                continue
            saved = inj.call("fcntl", tfd, F_DUPFD_CLOEXEC, 0, check=False)
            inj.call("dup2", now, tfd)
            inj.call("epoll_ctl", f.fd, libc.EPOLL_CTL_ADD, tfd, event)
            if saved >= 0:
                inj.call("dup2", saved, tfd)
                inj.call("close", saved)
            else:
                inj.call("close", tfd)

    def describe(self, f):
        return ", ".join(f"fd {w['tfd']}" + (f" (now {w['fd']})" if w["fd"] != w["tfd"] else "")
                         + f" events {w['events']:#x} data {w['data']:#x}"
                         for w in f.kind_state["watches"]) or "no watches"

    def action(self, f, plan):
        return "a new epoll; its watches added inside the new process under the same numbers"


def _holder(pid, epfd, tfd):
    """The fd of pid holding the description epoll epfd watches as tfd: tfd
    itself if it still does, else another; None if none does."""
    candidates = [tfd] + sorted(int(n) for n in os.listdir(procfs.path(pid, "fd"))
                                if int(n) != tfd)
    for fd in candidates:
        try:
            if libc.kcmp_epoll_tfd(pid, fd, epfd, tfd) == 0:
                return fd
        except OSError:
            continue                  # EBADF: no fd of that number
    return None


KIND = Epoll()
