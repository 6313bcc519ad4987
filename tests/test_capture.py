"""The injected part of capture: signal handlers read by one run of injected code,
or one injected call per signal when the target may not execute new code.  Both
must see exactly what the process installed, and leave it running as before."""

import os
import signal

import pytest

from conftest import proc_status, read_lines, wait_for, wait_lines
from rcore import capture
from rcore.dump import dump
from rcore.elf.reader import CoreFile
from rcore.linux import inject, procfs
from rcore.linux.ptrace import FrozenProcess
from rcore.state import ThreadState

SA_SIGINFO, SA_RESTART, SA_NODEFER = 0x4, 0x10000000, 0x40000000


def _start(build, procs, *args):
    p = procs.start([build("sigactions"), *args])
    wait_lines(p.out_path, 1)
    rt, on_usr1, on_rt = (int(x) for x in read_lines(p.out_path)[0].split())
    return p, rt, on_usr1, on_rt


def _check_installed(actions, rt, on_usr1, on_rt):
    by_sig = {a.signo: a for a in actions}
    assert len(actions) == 62 and signal.SIGKILL not in by_sig and signal.SIGSTOP not in by_sig
    usr1 = by_sig[signal.SIGUSR1]
    assert usr1.handler == on_usr1
    assert usr1.flags & (SA_SIGINFO | SA_RESTART) == SA_SIGINFO | SA_RESTART
    assert usr1.mask == 1 << (signal.SIGUSR2 - 1)
    assert by_sig[rt].handler == on_rt and by_sig[rt].flags & SA_NODEFER
    assert by_sig[rt].mask == 1 << (rt + 2 - 1)           # SIGRTMIN + 5
    assert by_sig[signal.SIGTERM].handler == 1            # SIG_IGN
    assert by_sig[signal.SIGUSR2].handler == 0            # SIG_DFL


def _read_both_ways(pid):
    with FrozenProcess(pid) as frozen:
        with inject.Injector(frozen.leader(), inject.find_syscall_insn(pid)) as inj:
            scratch = capture._Scratch(inj, pid)
            try:
                at_once = capture._read_sigactions_at_once(inj, scratch, pid)
                one_by_one = capture._read_sigactions_one_by_one(inj, scratch.addr, pid)
            finally:
                scratch.remove(inj)
    return at_once, one_by_one


def _thread_info_both_ways(pid):
    with FrozenProcess(pid) as frozen:
        with inject.Injector(frozen.leader(), inject.find_syscall_insn(pid)) as inj:
            scratch = capture._Scratch(inj, pid)
            try:
                one_run, two_calls = ThreadState(tid=pid), ThreadState(tid=pid)
                code = scratch.thread_code
                capture._read_thread_injected(inj, scratch, pid, one_run)
                scratch.thread_code = None
                capture._read_thread_injected(inj, scratch, pid, two_calls)
            finally:
                scratch.remove(inj)
    return code, one_run, two_calls


def test_thread_state_read_by_one_run_equals_two_calls(build, procs):
    p, *_ = _start(build, procs)
    code, one_run, two_calls = _thread_info_both_ways(p.pid)
    assert code is not None
    assert one_run.clear_child_tid != 0                  # glibc points it at the TCB
    assert one_run.sigaltstack["ss_size"] == 64 * 1024 and one_run.sigaltstack["ss_sp"]
    assert (one_run.clear_child_tid, one_run.sigaltstack) == \
        (two_calls.clear_child_tid, two_calls.sigaltstack)
    _still_handles_usr1(p)


def _still_handles_usr1(p):
    os.kill(p.pid, signal.SIGUSR1)
    wait_lines(p.out_path, 2)
    assert read_lines(p.out_path)[1] == "usr1"


def test_handlers_read_at_once_equal_one_call_per_signal(build, procs):
    p, rt, on_usr1, on_rt = _start(build, procs)
    maps_before = open(f"/proc/{p.pid}/maps").read()
    at_once, one_by_one = _read_both_ways(p.pid)
    assert at_once is not None
    assert at_once == one_by_one
    _check_installed(at_once, rt, on_usr1, on_rt)
    assert open(f"/proc/{p.pid}/maps").read() == maps_before    # scratch unmapped
    _still_handles_usr1(p)


def test_target_refusing_executable_memory_falls_back_to_one_call_per_signal(
        build, procs, tmp_path):
    p, rt, on_usr1, on_rt = _start(build, procs, "mdwe")
    maps_before = open(f"/proc/{p.pid}/maps").read()
    at_once, one_by_one = _read_both_ways(p.pid)
    assert open(f"/proc/{p.pid}/maps").read() == maps_before
    assert at_once is None                   # mprotect(PROT_EXEC) refused: MDWE
    _check_installed(one_by_one, rt, on_usr1, on_rt)
    core = tmp_path / "mdwe.core"
    summary = dump(p.pid, str(core))
    assert summary.copy_method == "read"     # the fork copy may not map its loop either
    with CoreFile(str(core)) as c:
        assert c.state.sigactions == one_by_one
        assert c.state.threads[0].sigaltstack["ss_size"] == 64 * 1024
    _still_handles_usr1(p)


@pytest.mark.parametrize("mode", ["", "mdwe"])
def test_captured_mappings_are_the_processes_own(build, procs, tmp_path, mode):
    """After a dump the process has exactly the mappings its core lists, on both
    paths: rcore's scratch pages, and the code page split off them, are gone."""
    p, *_ = _start(build, procs, *([mode] if mode else []))
    os.kill(p.pid, signal.SIGSTOP)                # its mappings hold still
    wait_for(lambda: proc_status(p.pid)["State"][0] == "T", what="stopped")
    core = tmp_path / "maps.core"
    dump(p.pid, str(core))
    own = [(m.start, m.end, m.perms, m.path) for m in procfs.read_maps(p.pid)]
    with CoreFile(str(core)) as c:
        got = [(m.start, m.end, m.perms, m.path) for m in c.state.mappings]
        assert all(m.vmflags for m in c.state.mappings)
    assert got == own
    os.kill(p.pid, signal.SIGCONT)
    _still_handles_usr1(p)
