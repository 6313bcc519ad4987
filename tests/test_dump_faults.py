"""Faults during a dump must not hurt the target: a storm of signals, a seccomp
filter, rcore killed at any instant, and what a killed rcore leaves behind."""

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

import rcore
from rcore.elf.reader import CoreFile
from conftest import ROOT, SRC, dump_as_nobody, proc_status, rcore_cmd, read_lines, wait_for, wait_lines


def _counts(line):
    # "tick usr1=N rt=M" / "report usr1=N rt=M"
    fields = dict(f.split("=") for f in line.split()[1:])
    return int(fields["usr1"]), int(fields["rt"])


def test_dumps_under_a_signal_storm_and_thread_churn(build, procs, tmp_path):
    """100 dumps while another process sends SIGUSR1 and queued SIGRTMIN as fast as
    it can and the target creates and joins threads: every dump succeeds, and every
    SIGRTMIN the kernel accepted reaches the program exactly once (none lost or
    swallowed while rcore injected calls)."""
    target = procs.start([build("signal_storm")])
    wait_lines(target.out_path, 1)
    sender = procs.start([build("storm_sender"), str(target.pid)], stdout=subprocess.PIPE,
                         text=True)
    core = tmp_path / "core"
    failures = []
    for _ in range(100):
        try:
            rcore.dump(target.pid, str(core))
        except rcore.RcoreError as err:
            failures.append(str(err))
    sender.send_signal(signal.SIGTERM)
    sent_rt = int(sender.communicate(timeout=10)[0].split("=")[1])
    assert failures == []
    os.unlink(core)
    assert sent_rt > 100
    # the signals still queued reach the program; then it reports its count
    wait_for(lambda: int(proc_status(target.pid).get("ShdPnd", "1"), 16) == 0,
             what="the signal queue drained")
    n = len(read_lines(target.out_path))
    os.kill(target.pid, signal.SIGUSR2)
    lines = wait_for(lambda: [ln for ln in read_lines(target.out_path)[n:]
                              if ln.startswith("report")], what="the report")
    usr1, rt = _counts(lines[0])
    assert rt == sent_rt and usr1 > 0
    st = proc_status(target.pid)
    assert st["TracerPid"] == "0" and st["State"][0] in "SR"


def _ticks(path):
    return [ln.split() for ln in read_lines(path) if ln.startswith("tick ")]


def _still_ticking(p):
    """p (seccomp_allowlist) runs on untraced, its memory checksum unchanged."""
    before = _ticks(p.out_path)
    wait_for(lambda: len(_ticks(p.out_path)) >= len(before) + 3, what="more ticks")
    assert p.poll() is None
    assert {t[2] for t in _ticks(p.out_path)} == {before[0][2]}
    st = proc_status(p.pid)
    assert st["TracerPid"] == "0" and st["Seccomp"] == "2", st


@pytest.mark.parametrize("how", [[], ["--no-fork"]], ids=["fork", "no-fork"])
def test_a_seccomp_allow_list_that_kills(build, procs, tmp_path, how):
    """A filter that kills the process on any unlisted call (brk, mmap, clone...
    are not listed): rcore suspends it for its calls, so the dump succeeds and the
    target lives."""
    p = procs.start([build("seccomp_allowlist")])
    wait_lines(p.out_path, 3)
    for i in range(5):
        r = rcore_cmd("dump", p.pid, "-o", tmp_path / f"core{i}", *how)
        assert r.returncode == 0, r.stderr
        assert os.path.getsize(tmp_path / f"core{i}") > 0
        os.unlink(tmp_path / f"core{i}")
    _still_ticking(p)


def test_a_seccomp_target_without_root_is_refused_before_anything(build, procs):
    """An unprivileged user cannot suspend a filter: one line, nothing injected,
    the target lives."""
    p = procs.start(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                     build("seccomp_allowlist")])
    wait_lines(p.out_path, 3)
    outdir = tempfile.mkdtemp(prefix="rcore-test-")
    try:
        r = dump_as_nobody(p.pid, outdir)
        assert r.returncode == 1
        assert r.stderr.count("\n") == 1 and "seccomp" in r.stderr, r.stderr
        assert os.listdir(outdir) == []
    finally:
        shutil.rmtree(outdir)
    _still_ticking(p)


# rcore dies (os._exit: the kernel detaches its tracees at once) with every
# thread of the target in a given state of a guarded injected call.
_DIE_DURING_CALL = r"""
import os, signal, sys
from rcore import capture
from rcore.linux import inject, procfs
from rcore.linux.ptrace import FrozenProcess
pid, when = int(sys.argv[1]), sys.argv[2]
frozen = FrozenProcess(pid).__enter__()
maps = procfs.read_maps(pid)
safe = inject.SafeSites.find(pid, maps)
assert safe is not None
code = None
for t in frozen.threads.values():
    inj = inject.Injector(t, None, safe=safe)
    if when == "run-stopped":               # at the end of a run of code
        if code is None:
            scratch = inj.call("mmap", 0, 4096, 3, 0x22, -1, 0)
            code = capture._map_code(inj, pid) + capture._THREAD_CODE_OFFSET
        end = code + len(inject.ARCH.THREAD_INFO_CODE) - 1
        inj.run_to_signal(code, scratch, sig=signal.SIGURG, end=end)
        continue
    if when in ("exit", "mask-restored"):
        inj.call("getpid")                  # ends at the call's syscall-exit stop
        if when == "mask-restored":
            t.set_sigmask(inj.saved_mask)   # the first step of restore()
        continue
    regs = inj.saved.copy()                 # the first steps of a call
    inject.ARCH.set_syscall(regs, inj.addr, inject.ARCH.SYS["getpid"], [])
    regs.sp = inj._call_sp
    t.set_regs(regs)
    t.set_sigmask(inject.BLOCK_ALL)
    if when == "entry":
        t.syscall()
        t.wait()
os._exit(0)
"""


@pytest.mark.parametrize("when", ["registers-set", "entry", "exit", "mask-restored",
                                  "run-stopped"])
def test_rcore_dead_in_the_middle_of_a_guarded_call(build, procs, when):
    """Each thread holds a signal frame of its own context on its stack: left
    alone, it ends the call and gets back its registers (general and AVX), mask
    and sigaltstack, which steady's threads check all the time."""
    p = procs.start([build("steady"), "4", "3"])
    wait_lines(p.out_path, 3)
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", _DIE_DURING_CALL, str(p.pid), when],
                           env=dict(os.environ, PYTHONPATH=SRC), capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        n = len(read_lines(p.out_path))
        wait_lines(p.out_path, n + 5)
    lines = read_lines(p.out_path)
    assert not [ln for ln in lines if not ln.startswith("ok ")], lines[-3:]
    st = proc_status(p.pid)
    assert st["TracerPid"] == "0" and st["State"][0] in "SR", st


def test_rcore_dump_killed_at_random_instants(tmp_path):
    """bench/faults.py's dump part, 24 kills (the bench does 300): the target is
    never harmed, and what each killed run leaves (a temporary, a zombie copy) is
    gone after the next."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    try:
        import faults
    finally:
        sys.path.pop(0)
    args = argparse.Namespace(mib=16, threads=2)
    got = faults.bench_dumps(24, faults.build(str(tmp_path)), str(tmp_path), args,
                             random.Random(8))
    assert got["harmed"] == {}
    assert got["most_tmp"] <= 1 and got["most_zombies"] <= 1
    assert got["tmp_after"] == 0 and got["zombies_after"] == 0 and got["maps_after"] == 0


def test_a_thread_inside_an_rseq_critical_section_still_aborts_it(build, procs, tmp_path):
    """rseq_spin's thread sits in a critical section it enters again only from
    its abort handler; each SIGUSR1 is an abort.  Were the section's descriptor
    dropped on the way back from the injected calls (the kernel clears it when a
    thread returns to user space outside the section), no signal would abort it
    any more."""
    p = procs.start([build("rseq_spin")])
    wait_lines(p.out_path, 2)

    def aborts_after_signals():
        before = int(read_lines(p.out_path)[-1].split()[1])
        for _ in range(5):
            os.kill(p.pid, signal.SIGUSR1)
            time.sleep(0.01)
        n = len(read_lines(p.out_path))
        wait_lines(p.out_path, n + 2)
        return int(read_lines(p.out_path)[-1].split()[1]) - before

    assert aborts_after_signals() > 0
    for i in range(3):
        rcore.dump(p.pid, str(tmp_path / "core"))
        after_dump = aborts_after_signals()
        assert after_dump > 0


# A dump killed after mapping its scratch memory and code in the target.
_DIE_AFTER_MAPPING = r"""
import mmap, os, sys
from rcore.linux import inject, procfs
from rcore.linux.ptrace import FrozenProcess
pid = int(sys.argv[1])
frozen = FrozenProcess(pid).__enter__()
safe = inject.SafeSites.find(pid, procfs.read_maps(pid))
inj = inject.Injector(frozen.leader(), None, safe=safe)
for size, prot in ((3 * 4096, mmap.PROT_READ | mmap.PROT_WRITE),
                   (4096, mmap.PROT_READ | mmap.PROT_EXEC)):
    assert inject.map_marked(inj, size, prot) > 0
inj.restore()
os._exit(0)
"""


def test_memory_a_killed_dump_left_is_unmapped_by_the_next(build, procs, tmp_path):
    p = procs.start([build("steady"), "4", "1"])
    wait_lines(p.out_path, 3)

    def anonymous():
        return [ln.split()[0] for ln in open(f"/proc/{p.pid}/maps") if len(ln.split()) == 5]

    before = anonymous()
    r = subprocess.run([sys.executable, "-c", _DIE_AFTER_MAPPING, str(p.pid)],
                       env=dict(os.environ, PYTHONPATH=SRC), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    left = set(anonymous()) - set(before)
    assert len(left) == 2
    rcore.dump(p.pid, str(tmp_path / "core"))
    assert set(anonymous()) == set(before)
    with CoreFile(str(tmp_path / "core")) as core:
        stored = {f"{m.start:x}-{m.end:x}" for m in core.state.mappings}
    assert not stored & left
    n = len(read_lines(p.out_path))
    wait_lines(p.out_path, n + 3)
    assert all(ln.startswith("ok ") for ln in read_lines(p.out_path))
