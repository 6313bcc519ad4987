"""The mm_struct fields of a restarted process: code/data/brk/stack/arg/env/auxv,
set in one prctl(PR_SET_MM, PR_SET_MM_MAP) injected into the process.

They decide what /proc/PID/cmdline and environ show (arg_start..env_end), where
brk() grows the heap from (start_brk, brk), which mapping /proc/PID/maps names
[heap] and [stack], and the auxv that getauxval() and /proc/PID/auxv return.
PR_SET_MM_MAP needs no capability unless exe_fd is given; the executable is left
as it is (-1): a restarted process is exec'd from the checkpointed executable,
so /proc/PID/exe is already right."""

import ctypes

from .linux.libc import PR_SET_MM, PR_SET_MM_MAP


class PrctlMmMap(ctypes.Structure):
    """struct prctl_mm_map (include/uapi/linux/prctl.h)."""
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "start_code", "end_code", "start_data", "end_data", "start_brk", "brk",
        "start_stack", "arg_start", "arg_end", "env_start", "env_end", "auxv")] + [
        ("auxv_size", ctypes.c_uint32), ("exe_fd", ctypes.c_uint32)]


assert ctypes.sizeof(PrctlMmMap) == 104


def apply_mm_map(inj, ws, proc, exe_fd=-1):
    """Set the checkpoint's mm fields in inj's process (ws: rebuild.Workspace,
    whose scratch page carries the struct and the auxv).  Memory must already be
    in place; call it before RLIMIT_DATA is restored, which the brk check consults."""
    mm = proc.mm
    auxv = bytes(proc.auxv)
    size = ctypes.sizeof(PrctlMmMap)
    m = PrctlMmMap(mm.start_code, mm.end_code, mm.start_data, mm.end_data, mm.start_brk,
                   mm.brk, mm.start_stack, mm.arg_start, mm.arg_end, mm.env_start,
                   mm.env_end, ws.scratch + size if auxv else 0, len(auxv), exe_fd & 0xFFFFFFFF)
    addr = ws.put(bytes(m) + auxv)
    inj.call("prctl", PR_SET_MM, PR_SET_MM_MAP, addr, size, 0)
