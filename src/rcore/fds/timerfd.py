"""timerfd: a timer read as data."""

import os
import re
import time

from ..linux import libc
from .kind import Rebuilt, check_int, copy_of, fdinfo_int

# Clocks whose absolute time means the same after a reboot: an absolute timer
# on them keeps its deadline; on the others it keeps its remaining time.
WALL_CLOCKS = (0, 8, 11)               # CLOCK_REALTIME, _REALTIME_ALARM, _TAI
CLOCKS = (0, 1, 7, 8, 9)               # those timerfd_create takes
# The alarm clocks are read through the clocks they follow.
CLOCK_READ = {8: 0, 9: 7}              # _REALTIME_ALARM, _BOOTTIME_ALARM
_PAIR = re.compile(r"\((-?\d+),\s*(-?\d+)\)")


def _ns(fdinfo, key):
    m = _PAIR.match(fdinfo.get(key, ""))
    if not m:
        raise ValueError(f"fdinfo has no {key!r}")
    return int(m.group(1)) * 1000000000 + int(m.group(2))


class Timerfd(Rebuilt):
    """Captured (fdinfo): `clockid`, `flags` (settime flags: TFD_TIMER_ABSTIME,
    TFD_TIMER_CANCEL_ON_SET), `value_ns` (time left), `interval_ns`, `ticks`
    (expirations not read yet) and, for an absolute timer, `deadline_ns` on
    its clock.
    Restart: a new timerfd on the same clock, armed just before the process
    runs again: with the time it had left (the time spent dead does not count,
    as for sleeps and itimers), or for an absolute timer on a wall clock at its
    deadline; its unread expirations are put back (TFD_IOC_SET_TICKS).
    Restore: kept, and set again as at the checkpoint (time left, interval,
    unread expirations)."""
    new_description = True

    def capture(self, ctx, f, fdinfo):
        st = {"clockid": fdinfo_int(fdinfo, "clockid"),
              "flags": fdinfo_int(fdinfo, "settime flags", 8),
              "value_ns": _ns(fdinfo, "it_value"), "interval_ns": _ns(fdinfo, "it_interval"),
              "ticks": fdinfo_int(fdinfo, "ticks")}
        if st["flags"] & libc.TFD_TIMER_ABSTIME and st["value_ns"]:
            st["deadline_ns"] = _now(st["clockid"]) + st["value_ns"]
        f.kind_state = st

    def decode(self, f):
        st = f.kind_state
        if st["clockid"] not in CLOCKS:
            raise ValueError(f"clockid {st['clockid']!r}")
        check_int(st["flags"], "flags", high=4)
        for key in ("value_ns", "interval_ns", "deadline_ns"):
            if key in st:
                check_int(st[key], key, high=1 << 63)
        check_int(st["ticks"], "ticks")

    def open(self, plan, f):
        st = f.kind_state
        fd = plan.own(libc.timerfd_create(st["clockid"], os.O_CLOEXEC))
        plan.at_commit.append(lambda: _arm(fd, st))
        return fd

    def roll_back(self, pid, live, want):
        if live.kind_state["clockid"] != want.kind_state["clockid"]:
            return [f"fd {want.fd} (timerfd): it runs on another clock than at the "
                    "checkpoint: left as it is"]
        with copy_of(pid, want.fd) as fd:
            libc.timerfd_settime(fd, 0, 0, 0)          # disarmed, no expirations
            _arm(fd, want.kind_state)
        return []

    def describe(self, f):
        st = f.kind_state
        if not st["value_ns"]:
            armed = "disarmed"
        else:
            armed = f"{st['value_ns'] / 1e9:.3f} s left"
        if st["interval_ns"]:
            armed += f", every {st['interval_ns'] / 1e9:.3f} s"
        if st["flags"] & libc.TFD_TIMER_ABSTIME:
            armed += ", absolute"
        return f"clock {st['clockid']}, {armed}, {st['ticks']} expirations unread"

    def action(self, f, plan):
        return "a new timerfd armed with the time it had left, unread expirations kept"


def _now(clockid):
    return time.clock_gettime_ns(CLOCK_READ.get(clockid, clockid))


def _arm(fd, st):
    value = st["value_ns"]
    if value:
        if st["flags"] & libc.TFD_TIMER_ABSTIME:
            if st["clockid"] in WALL_CLOCKS and "deadline_ns" in st:
                value = max(st["deadline_ns"], 1)
            else:
                value += _now(st["clockid"])
        libc.timerfd_settime(fd, st["flags"], value, st["interval_ns"])
    if st["ticks"]:
        libc.timerfd_set_ticks(fd, st["ticks"])


KIND = Timerfd()
