"""The injected part of capture: signal handlers and per-thread state read by
guarded calls must be exactly what the process installed, and leave it running as
before, also when it may not execute new code (MDWE)."""

import os
import signal

import pytest

from conftest import proc_status, read_lines, wait_for, wait_lines
from rcore import capture
from rcore.dump import dump
from rcore.elf.reader import CoreFile
from rcore.linux import inject, libc, procfs
from rcore.linux.calllist import CallList
from rcore.linux.ptrace import FrozenProcess
from rcore.state import ProcessState, ThreadState

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


def _read_injected(pid):
    """Handlers and the leader's thread state as a dump reads them: by one run of
    code each (the call list, thread_info; ended by SIGURG, which the program
    ignores), and one call at a time.  Both must agree."""
    with FrozenProcess(pid) as frozen:
        safe = inject.SafeSites.find(pid, procfs.read_maps(pid))
        assert safe is not None
        with inject.Injector(frozen.leader(), None, safe=safe) as inj:
            scratch = inj.call("mmap", 0, 2 * 4096, 3, 0x22, -1, 0)
            code = capture._map_code(inj, pid)
            try:
                got = []
                for runner in (capture._Runner(code, signal.SIGURG, scratch, pid),
                               capture._Runner(None, None, scratch, pid)):
                    ts = ThreadState(tid=pid)
                    runner.thread_info(inj, ts)
                    calls = CallList()
                    actions = capture.ask_sigactions(calls, pid)
                    calls.run(inj, scratch, code=runner.code, sig=runner.sig)
                    got.append((actions(), ts))
            finally:
                inj.call("munmap", code, 4096)
                inj.call("munmap", scratch, 2 * 4096)
    assert code is not None
    assert got[0][0] == got[1][0]
    assert (got[0][1].clear_child_tid, got[0][1].sigaltstack) == \
        (got[1][1].clear_child_tid, got[1][1].sigaltstack)
    return got[0]


def test_stop_signal_is_one_nobody_would_see():
    proc = ProcessState(pid=1, threads=[ThreadState(tid=1, sigmask=0), ThreadState(tid=2)])
    status = {"SigCgt": "0", "SigIgn": "0"}
    assert capture.stop_signal(status, proc) == signal.SIGURG
    status["SigCgt"] = f"{1 << (signal.SIGURG - 1):x}"                  # a handler
    proc.threads[1].sigmask = 1 << (signal.SIGWINCH - 1)                 # sigwait?
    proc.shared_pending = [int(signal.SIGCHLD).to_bytes(4, "little") + bytes(124)]
    assert capture.stop_signal(status, proc) is None
    status["SigIgn"] = f"{1 << (signal.SIGPIPE - 1):x}"                  # SIG_IGN
    assert capture.stop_signal(status, proc) == signal.SIGPIPE


def test_thread_state_read_by_injected_calls(build, procs):
    p, *_ = _start(build, procs)
    _, ts = _read_injected(p.pid)
    assert ts.clear_child_tid != 0                  # glibc points it at the TCB
    assert ts.sigaltstack["ss_size"] == 64 * 1024 and ts.sigaltstack["ss_sp"]
    _still_handles_usr1(p)


def _still_handles_usr1(p):
    os.kill(p.pid, signal.SIGUSR1)
    wait_lines(p.out_path, 2)
    assert read_lines(p.out_path)[1] == "usr1"


def test_handlers_read_by_injected_calls(build, procs):
    p, rt, on_usr1, on_rt = _start(build, procs)
    maps_before = open(f"/proc/{p.pid}/maps").read()
    actions, _ = _read_injected(p.pid)
    _check_installed(actions, rt, on_usr1, on_rt)
    assert open(f"/proc/{p.pid}/maps").read() == maps_before    # scratch unmapped
    _still_handles_usr1(p)


def test_target_refusing_executable_memory(build, procs, tmp_path):
    """MDWE: the fork's code page is mapped executable and written through
    /proc/PID/mem, which it allows; the copy's own loop it refuses: the copy is read."""
    p, rt, on_usr1, on_rt = _start(build, procs, "mdwe")
    core = tmp_path / "mdwe.core"
    summary = dump(p.pid, str(core))
    assert summary.copy_method == "read"     # the fork copy may not map its loop
    with CoreFile(str(core)) as c:
        _check_installed(c.state.sigactions, rt, on_usr1, on_rt)
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


def _blocked(pid, tid):
    with open(f"/proc/{pid}/task/{tid}/status") as f:
        return next(line.split()[1] for line in f if line.startswith("SigBlk:"))


@pytest.mark.parametrize("at_once", [True, False], ids=["at-once", "one-call-at-a-time"])
def test_many_threads_read_at_once(build, procs, tmp_path, monkeypatch, at_once):
    """The per-thread injected run goes to every thread at once, in batches
    (capture._PARALLEL): each thread's own answer (sigaltstack, clear_child_tid,
    name, robust list) lands in its own slot, and each thread gets its own mask
    and registers back.  Without a page of code (a process that may not map
    any), the same is read one injected call at a time."""
    n = capture._PARALLEL + 44 if at_once else 12
    if not at_once:
        monkeypatch.setattr(capture, "_map_code", lambda inj, pid: None)
    p = procs.start([build("many_altstacks"), str(n)])
    lines = wait_lines(p.out_path, n, timeout=30)
    want = {int(tid): int(size) for tid, size in (line.split() for line in lines)}
    masks = {tid: _blocked(p.pid, tid) for tid in want}
    core = tmp_path / "threads.core"
    dump(p.pid, str(core))
    with CoreFile(str(core)) as c:
        got = {t.tid: t for t in c.state.threads}
    assert set(want) <= set(got)
    assert {tid: got[tid].sigaltstack["ss_size"] for tid in want} == want
    assert all(got[tid].sigaltstack["ss_sp"] for tid in want)
    ctids = [t.clear_child_tid for t in got.values()]
    assert all(ctids) and len(set(ctids)) == len(ctids)     # each its own (glibc: its TCB)
    names = {tid: procfs.read_comm(p.pid, tid=tid) for tid in want}
    assert sorted(names.values()) == sorted(f"alt-{i}" for i in range(n))
    assert {tid: got[tid].comm for tid in want} == names
    assert got[p.pid].comm == procfs.read_comm(p.pid)
    robust = {tid: list(libc.get_robust_list(tid)) for tid in got}
    assert {tid: t.robust_list for tid, t in got.items()} == robust
    assert len({head for head, _ in robust.values()}) == len(robust)     # each its own
    assert {tid: _blocked(p.pid, tid) for tid in want} == masks
    assert p.poll() is None


def test_run_cut_short_is_run_again(build, procs, tmp_path, monkeypatch):
    """A thread whose run the signal ends before the code's end (here it starts
    at the final tgkill, as if its signal had come from elsewhere first) is
    seen by its results and run again alone: it gets its own answers, not the
    slot's initial values."""
    n = 8
    p = procs.start([build("many_altstacks"), str(n)])
    lines = wait_lines(p.out_path, n, timeout=30)
    sizes = {int(tid): int(size) for tid, size in (line.split() for line in lines)}
    victim = sorted(sizes)[3]
    start = inject.Injector.start_to_signal
    code = inject.ARCH.THREAD_INFO_CODE

    cut = []

    def early(self, pc, *args, sig):
        if self.thread.tid == victim and not cut:
            cut.append(pc)
            pc += len(code) - inject.ARCH.STOP_INSN_END - 1
        start(self, pc, *args, sig=sig)
    monkeypatch.setattr(inject.Injector, "start_to_signal", early)
    core = tmp_path / "short.core"
    dump(p.pid, str(core))
    with CoreFile(str(core)) as c:
        got = next(t for t in c.state.threads if t.tid == victim)
    assert got.sigaltstack["ss_size"] == sizes[victim]
    assert got.comm == procfs.read_comm(p.pid, tid=victim)
    assert got.robust_list == list(libc.get_robust_list(victim)) and got.clear_child_tid
    assert cut
    assert proc_status(p.pid)["TracerPid"] == "0"


def test_failed_run_in_one_thread_gives_every_thread_back(build, procs, tmp_path, monkeypatch):
    """One thread's run failing (here: its wait raises) fails the dump, after
    every other thread started was waited for and given back its mask and
    registers: the process runs on, untraced, as before."""
    n = 40
    p = procs.start([build("many_altstacks"), str(n)])
    lines = wait_lines(p.out_path, n, timeout=30)
    tids = [int(line.split()[0]) for line in lines]
    masks = {tid: _blocked(p.pid, tid) for tid in tids}
    finish = inject.Injector.finish_to_signal

    def failing(self, **kwargs):
        finish(self, **kwargs)
        if self.thread.tid == tids[5]:
            raise RuntimeError("injected failure")
    monkeypatch.setattr(inject.Injector, "finish_to_signal", failing)
    with pytest.raises(RuntimeError, match="injected failure"):
        dump(p.pid, str(tmp_path / "fail.core"))
    assert {tid: _blocked(p.pid, tid) for tid in tids} == masks
    # running on, untraced (it may be "R" for an instant on its way back to pause())
    wait_for(lambda: proc_status(p.pid)["State"][0] == "S", what="asleep in pause()")
    assert proc_status(p.pid)["TracerPid"] == "0"
    os.kill(p.pid, signal.SIGUSR2)          # default action: the process ends
    assert p.wait(timeout=10) == -signal.SIGUSR2
