"""POSIX timers (timer_create) with their IDs, clocks, notification and time left.

    dump     /proc/PID/timers lists each timer's ID, signal and sigev_value,
             notification (signal, none, thread; to the process or to one
             thread: SIGEV_THREAD_ID) and clock; timer_gettime, injected into
             the target (only the process may ask), gives the time left and
             the interval
    restart  inside the new process, once its threads exist:
             prctl(PR_TIMER_CREATE_RESTORE_IDS, 1) makes timer_create take the
             ID passed in *timerid, so every timer gets its old ID back (the
             program holds the IDs in its memory; glibc's SIGEV_THREAD timers
             are SIGEV_THREAD_ID timers aimed at its helper thread, whose TID
             comes back too); the setting is turned off again; then, last with
             the itimers, timer_settime with the time left and the interval

Not carried: the overrun count, and whether a timer was armed with
TIMER_ABSTIME (the time left is kept; in the restarted process's time
namespace that is the same deadline on CLOCK_MONOTONIC and BOOTTIME, but an
absolute CLOCK_REALTIME timer moves by the time the process was dead: said at
dump and restart).  Timers on another process's CPU clock are refused."""

import struct

from .errors import Incompatible, Unsupported
from .linux import libc, procfs
from .linux.calllist import OUT
from .linux.libc import (PR_TIMER_CREATE_RESTORE_IDS, RESTORE_IDS_GET, RESTORE_IDS_OFF,
                         RESTORE_IDS_ON)

SIGEV = {"signal": 0, "none": 1, "thread": 2}
SIGEV_THREAD_ID = 4
# struct sigevent: sigev_value, sigev_signo, sigev_notify, then a union whose
# first int is the target TID for SIGEV_THREAD_ID (asm-generic/siginfo.h).
SIGEVENT = struct.Struct("<Qiii44x")
ITIMERSPEC = struct.Struct("<qqqq")          # it_interval, it_value (sec, nsec)
NS = 1_000_000_000
WALL_CLOCKS = (0, 8, 11)                     # REALTIME, REALTIME_ALARM, TAI

assert SIGEVENT.size == 64


def parse_timers(text):
    """/proc/PID/timers as dicts: id, signo, value, notify, to_thread, target, clockid."""
    blocks = []
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        if key == "ID":
            blocks.append({})
        if blocks:
            blocks[-1][key] = value.strip()
    timers = []
    for lines in blocks:
        signo, value = lines["signal"].split("/")
        how, target = lines["notify"].split("/")
        scope, tid = target.split(".")
        timers.append({"id": int(lines["ID"]), "signo": int(signo), "value": int(value, 16),
                       "notify": how, "to_thread": scope == "tid", "target": int(tid),
                       "clockid": int(lines["ClockID"])})
    return timers


def capture(calls, pid):
    """Every POSIX timer of frozen process pid, with time left and interval:
    adds a timer_gettime for each to `calls` (calllist.CallList) and returns
    the function that, once they have run, returns the timers."""
    try:
        text = procfs.read_bytes(pid, "timers").decode()
    except FileNotFoundError:
        text = ""
    timers = parse_timers(text)
    asked = [calls.add("timer_gettime", t["id"], OUT, out=ITIMERSPEC.size) for t in timers]

    def done():
        for t, call in zip(timers, asked):
            call.result(pid)
            isec, insec, vsec, vnsec = ITIMERSPEC.unpack(call.data)
            t["interval_ns"], t["value_ns"] = isec * NS + insec, vsec * NS + vnsec
        return timers
    return done


def warnings(timers):
    """What a restart will not carry of them, in words."""
    out = []
    for t in timers:
        if t["clockid"] in WALL_CLOCKS and t["value_ns"]:
            out.append(f"POSIX timer {t['id']} on clock {t['clockid']}: armed again with the "
                       "time it had left (a TIMER_ABSTIME deadline on the wall clock is not "
                       "known)")
    return out


def check(timers, tids):
    """Before a restart: raise Unsupported for what cannot be rebuilt."""
    if not timers:
        return
    for t in timers:
        _check_entry(t)
        if t["clockid"] < 0:
            raise Unsupported(f"POSIX timer {t['id']} runs on another process's CPU clock")
        if t["notify"] not in SIGEV:
            raise Unsupported(f"POSIX timer {t['id']}: unknown notification {t['notify']!r}")
        if t["to_thread"] and t["target"] not in tids:
            raise Unsupported(f"POSIX timer {t['id']} signals thread {t['target']}, which is "
                              "not a thread of the process")
    try:
        libc.prctl(PR_TIMER_CREATE_RESTORE_IDS, RESTORE_IDS_GET)
    except OSError:
        raise Incompatible("this kernel cannot create POSIX timers with given IDs "
                           "(PR_TIMER_CREATE_RESTORE_IDS, Linux 6.14+): the process's "
                           f"{len(timers)} timers cannot come back") from None


def _check_entry(t):
    """The core is untrusted: every field the calls take, of the right type."""
    keys = ("id", "signo", "value", "target", "clockid", "value_ns", "interval_ns")
    if not isinstance(t, dict) or not all(isinstance(t.get(k), int) for k in keys) \
            or not 0 <= t["id"] < 1 << 31 or not 0 <= t["value"] < 1 << 64 \
            or t["value_ns"] < 0 or t["interval_ns"] < 0:
        raise Unsupported(f"a POSIX timer entry of the core is malformed: {t!r:.200}")


def create(inj, ws, timers, tids):
    """In the new process: every timer with its ID, not armed yet.
    tids: checkpointed TID -> TID now."""
    if not timers:
        return
    inj.call("prctl", PR_TIMER_CREATE_RESTORE_IDS, RESTORE_IDS_ON, 0, 0, 0)
    try:
        for t in timers:
            notify = SIGEV[t["notify"]] | (SIGEV_THREAD_ID if t["to_thread"] else 0)
            tid = tids.get(t["target"], t["target"]) if t["to_thread"] else 0
            event = SIGEVENT.pack(t["value"], t["signo"], notify, tid)
            addr = ws.put(event + struct.pack("<i", t["id"]))
            inj.call("timer_create", t["clockid"], addr, addr + SIGEVENT.size)
            got = struct.unpack("<i", ws.get(4, SIGEVENT.size))[0]
            if got != t["id"]:
                raise Incompatible(f"POSIX timer {t['id']} came back as {got}")
    finally:
        inj.call("prctl", PR_TIMER_CREATE_RESTORE_IDS, RESTORE_IDS_OFF, 0, 0, 0, check=False)


def arm(inj, ws, timers):
    """Last, as the itimers: each timer with the time it had left."""
    for t in timers:
        if not t["value_ns"]:
            continue
        addr = ws.put(ITIMERSPEC.pack(*divmod(t["interval_ns"], NS), *divmod(t["value_ns"], NS)))
        inj.call("timer_settime", t["id"], 0, addr, 0)


def describe(t):
    """rcore info: one timer in a few words."""
    to = f"thread {t['target']}" if t["to_thread"] else "the process"
    how = "no notification" if t["notify"] == "none" else f"signal {t['signo']} to {to}"
    if t["notify"] == "thread":
        how += " (SIGEV_THREAD)"
    armed = f"{t['value_ns'] / NS:.3f} s left" if t["value_ns"] else "disarmed"
    if t["interval_ns"]:
        armed += f", every {t['interval_ns'] / NS:.3f} s"
    return f"timer {t['id']}: clock {t['clockid']}, {how}, value {t['value']:#x}, {armed}"
