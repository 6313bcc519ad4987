"""Process settings a new process starts without, and a restart gives back:
the THP-disable and child-subreaper prctls, oom_score_adj, locked memory
(mlock, MAP_LOCKED) and MADV_GUARD_INSTALL guard pages.

    dump     THP_enabled of /proc/PID/status (0: PR_SET_THP_DISABLE), the
             subreaper flag by an injected prctl(PR_GET_CHILD_SUBREAPER) (not
             shown in /proc), /proc/PID/oom_score_adj; locked memory is in the
             mappings' VmFlags (`lo`); guard pages: the pagemap
             bit PM_GUARD_REGION of the mappings whose VmFlags hold `gu` (a
             mapping where guards were ever installed)
    restart  once memory is in place: guard pages installed (MADV_GUARD_INSTALL),
             locked mappings mlock'ed, the prctls injected into the process;
             oom_score_adj written by rcore

Not carried (README): mlockall(MCL_FUTURE) (the kernel shows it nowhere:
mappings made later are not locked), MLOCK_ONFAULT (VmFlags does not tell it
from mlock: the whole mapping is locked and made resident)."""

import os
import struct

from .linux import procfs
from .linux.calllist import OUT
from .linux.libc import (MADV_GUARD_INSTALL, PR_GET_CHILD_SUBREAPER, PR_SET_CHILD_SUBREAPER,
                         PR_SET_THP_DISABLE)

PM_GUARD_REGION = 1 << 58              # pagemap: a guard page (Linux 6.14+)
PAGE = 4096
PAGEMAP_CHUNK = 1 << 16                # entries read at a time


def capture(calls, pid, mappings):
    """The settings of frozen process pid: adds the call only the process can
    answer to `calls` (calllist.CallList) and returns the function that, once
    it has run, returns them."""
    status = procfs.read_status(pid)
    subreaper = calls.add("prctl", PR_GET_CHILD_SUBREAPER, OUT, 0, 0, 0, out=4)

    def done():
        subreaper.result(pid)
        return {"thp_disabled": status.get("THP_enabled", "1") == "0",
                "child_subreaper": bool(struct.unpack("<i", subreaper.data[:4])[0]),
                "oom_score_adj": int(procfs.read_bytes(pid, "oom_score_adj")),
                "guards": guard_ranges(pid, mappings)}
    return done


def guard_ranges(pid, mappings):
    """[[start, end]] of the guard pages of the mappings that may hold some."""
    ranges = []
    fd = None
    try:
        for m in mappings:
            if "gu" not in m.vmflags:
                continue
            if fd is None:
                fd = procfs.open_pagemap(pid)
            for at in range(m.start, m.end, PAGEMAP_CHUNK * PAGE):
                n = min(PAGEMAP_CHUNK, (m.end - at) // PAGE)
                data = os.pread(fd, n * 8, at // PAGE * 8)
                for i, entry in enumerate(struct.unpack(f"<{len(data) // 8}Q", data)):
                    if entry & PM_GUARD_REGION:
                        page = at + i * PAGE
                        if ranges and ranges[-1][1] == page:
                            ranges[-1][1] = page + PAGE
                        else:
                            ranges.append([page, page + PAGE])
    finally:
        if fd is not None:
            os.close(fd)
    return ranges


def check(settings):
    """The core is untrusted: raise ValueError for a malformed entry."""
    if not isinstance(settings, dict):
        raise ValueError("settings is not an object")
    if not isinstance(settings.get("oom_score_adj", 0), int) \
            or not -1000 <= settings.get("oom_score_adj", 0) <= 1000:
        raise ValueError("oom_score_adj")
    for r in settings.get("guards", []):
        if not (isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) for x in r)
                and 0 <= r[0] < r[1] and r[0] % PAGE == 0 and r[1] % PAGE == 0):
            raise ValueError(f"guard range {r!r:.60}")


def apply_memory(inj, mappings, settings):
    """Once memory is in place: guard pages, then locked mappings."""
    for start, end in settings.get("guards", []):
        inj.call("madvise", start, end - start, MADV_GUARD_INSTALL)
    for m in mappings:
        if "lo" in m.vmflags:
            inj.call("mlock", m.start, m.size)


def apply_process(inj, pid, settings):
    if settings.get("thp_disabled"):
        inj.call("prctl", PR_SET_THP_DISABLE, 1, 0, 0, 0)
    if settings.get("child_subreaper"):
        inj.call("prctl", PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    adj = settings.get("oom_score_adj", 0)
    if adj != int(procfs.read_bytes(pid, "oom_score_adj")):
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write(str(adj))


def describe(settings):
    """rcore info: the settings that differ from a new process's."""
    out = []
    if settings.get("thp_disabled"):
        out.append("THP disabled (prctl)")
    if settings.get("child_subreaper"):
        out.append("child subreaper")
    if settings.get("oom_score_adj"):
        out.append(f"oom_score_adj {settings['oom_score_adj']}")
    if settings.get("guards"):
        out.append(f"{len(settings['guards'])} guard-page ranges")
    return ", ".join(out)
