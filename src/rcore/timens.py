"""The clocks a restarted process sees: CLOCK_MONOTONIC and CLOCK_BOOTTIME go on
from their checkpointed values, as with CRIU, by running the process in a time
namespace of its own whose offsets make up for the time it spent dead (or for a
reboot, after which both clocks start again near zero).

    dump     capture_clocks: the target's two clocks at the freeze, i.e. rcore's
             clocks corrected by the difference of the two time namespaces
             (/proc/PID/timens_offsets; zero for both outside any namespace)
    restart  enter_new (in spawn's launcher, a single-threaded fork of rcore):
             unshare(CLONE_NEWTIME) puts the launcher's future children in a new
             namespace, whose offsets can be written until a process enters it;
             the offsets are (checkpointed - host clock now), then the launcher
             clones the process into it

Offsets are relative to the host's raw clocks (a new namespace starts with a
copy of its parent's).  CLOCK_REALTIME has no offset: wall time stays the
host's.  The vDSO of a process in a time namespace reads a namespace page
mapped into its [vvar]: the restart moves [vvar] like before (the kernel maps
the right page on fault wherever it lies), and the core never stores [vvar]."""

import os
import time

from .linux import libc

CLOCKS = {"monotonic": time.CLOCK_MONOTONIC, "boottime": time.CLOCK_BOOTTIME}
CLONE_NEWTIME = 0x00000080
NS = 1_000_000_000


def read_offsets(pid="self"):
    """{clock name: offset in ns} of /proc/PID/timens_offsets (the namespace its
    children get, which is its own unless it called unshare itself)."""
    out = dict.fromkeys(CLOCKS, 0)
    try:
        with open(f"/proc/{pid}/timens_offsets") as f:
            for line in f:
                name, sec, nsec = line.split()
                if name in out:
                    out[name] = int(sec) * NS + int(nsec)
    except FileNotFoundError:
        pass                        # a kernel without CONFIG_TIME_NS: no offsets
    return out


def capture_clocks(pid):
    """The target's CLOCK_MONOTONIC and BOOTTIME now, in ns (call it frozen)."""
    theirs, ours = read_offsets(pid), read_offsets()
    return {name: time.clock_gettime_ns(clock) - ours[name] + theirs[name]
            for name, clock in CLOCKS.items()}


HOST_CLOCKS = ("the process sees the host's CLOCK_MONOTONIC and CLOCK_BOOTTIME, which "
               "jumped by the time it was dead")


def unavailable():
    """Why the launcher could not make a time namespace here, or None.  A restart
    then keeps the host's clocks and says so (a warning), as --any-pid does for
    PIDs, rather than refusing what an ordinary user cannot do."""
    if not os.path.exists("/proc/self/timens_offsets"):
        return f"{HOST_CLOCKS} (this kernel has no time namespaces)"
    if os.geteuid() != 0:
        return f"{HOST_CLOCKS} (a time namespace needs root)"
    return None


def enter_new(clocks):
    """In a single-threaded process about to create the restarted one: a new time
    namespace for its children, with offsets that continue `clocks` (as
    capture_clocks returned them) from now on."""
    libc.unshare(CLONE_NEWTIME)
    ours = read_offsets()       # the new namespace's, a copy of our own for now
    lines = []
    for name, clock in CLOCKS.items():
        if name not in clocks:
            continue
        host = time.clock_gettime_ns(clock) - ours[name]
        sec, nsec = divmod(clocks[name] - host, NS)
        lines.append(f"{name} {sec} {nsec}\n")
    # One write: the kernel takes every clock of it or none.
    fd = os.open("/proc/self/timens_offsets", os.O_WRONLY)
    try:
        os.write(fd, "".join(lines).encode())
    finally:
        os.close(fd)


def describe(clocks):
    """rcore info: the clocks at the checkpoint."""
    return ", ".join(f"{name} {clocks[name] / NS:.3f} s" for name in CLOCKS if name in clocks)
