"""rcore run: a job checkpointed periodically into a directory; killed, it restarts
from the directory and finishes byte-identical; --keep bounds the directory; a
checkpoint that is not complete is never chosen; rcore's death leaves the job be."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from rcore.elf.reader import CoreFile
from rcore.run import checkpoints, latest_checkpoint
from conftest import SRC, children, rcore_cmd, wait_for
from test_dirty import state_dir  # noqa: F401  (autouse fixture)

JOB = r"""
import hashlib, sys, time
out = open(sys.argv[1], "w")
h = hashlib.sha256()
blob = bytearray(8 << 20)
for i in range(int(sys.argv[2])):
    h.update(str(i).encode())
    blob[(i * 4096 * 37) % len(blob)] = i % 256
    out.write(f"{i} {h.hexdigest()} {hashlib.sha256(blob).hexdigest()[:16]}\n")
    out.flush()
    time.sleep(0.01)
out.close()
"""
LINES = 250


def rcore_popen(procs, *args, **kwargs):
    env = dict(os.environ, PYTHONPATH=SRC)
    return procs.start([sys.executable, "-m", "rcore", *map(str, args)], env=env, **kwargs)


@pytest.fixture
def job(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(JOB)
    ref = tmp_path / "ref.txt"
    subprocess.run([sys.executable, str(script), str(ref), str(LINES)], check=True)
    return script, ref


def job_pid(rcore_pid):
    kids = children(rcore_pid)
    return kids[0] if kids else None


def start_and_kill(procs, tmp_path, argv, keep=None, stdout=None):
    """rcore run argv with checkpoints every 0.3 s; once two exist, SIGKILL the
    job; returns the directory."""
    d = tmp_path / "ckpt"
    opts = ["-i", "0.3", "-d", d] + (["--keep", keep] if keep else [])
    runner = rcore_popen(procs, "run", *opts, "--", *argv, stdout=stdout)
    wait_for(lambda: len(checkpoints(str(d))) >= 3 and job_pid(runner.pid), timeout=60,
             what="three checkpoints")
    os.kill(job_pid(runner.pid), signal.SIGKILL)
    assert runner.wait(timeout=30) == 128 + signal.SIGKILL
    return d


def test_python_job_killed_restarts_from_dir_byte_identical(procs, tmp_path, job):
    script, ref = job
    out = tmp_path / "out.txt"
    d = start_and_kill(procs, tmp_path, [sys.executable, script, out, LINES], keep=2)
    assert out.read_bytes() != ref.read_bytes()          # killed mid-run
    # --keep 2: two checkpoints, the oldest standalone
    kept = checkpoints(str(d))
    assert len(kept) == 2
    with CoreFile(kept[0], resolve=False) as first, CoreFile(kept[1], resolve=False) as last:
        assert first.parent is None and last.parent["path"] == kept[0]
    r = rcore_cmd("restart", d)
    assert r.returncode == 0, r.stderr
    assert f"restarting from {kept[-1]}" in r.stderr
    assert out.read_bytes() == ref.read_bytes()


def test_gzip_killed_restarts_from_dir_byte_identical(procs, tmp_path):
    data = tmp_path / "input"
    with open(data, "wb") as f:
        for i in range(1_500_000):
            f.write(b"%d line of text %x\n" % (i, i * 2654435761 % 4294967296))
    want = subprocess.run(["gzip", "-c", "-n", "-9", str(data)], check=True,
                          capture_output=True).stdout
    out = tmp_path / "out.gz"
    with open(out, "wb") as f:
        d = start_and_kill(procs, tmp_path, ["gzip", "-c", "-n", "-9", data], stdout=f)
    assert out.read_bytes() != want
    r = rcore_cmd("restart", d)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == want


def test_incomplete_checkpoints_are_never_chosen(procs, tmp_path, job):
    script, _ = job
    d = start_and_kill(procs, tmp_path, [sys.executable, script, tmp_path / "o", LINES])
    *_, parent, newest = checkpoints(str(d))
    assert latest_checkpoint(str(d)) == newest
    # what a dump killed halfway leaves: its temporary file, never a checkpoint name
    shutil.copy(newest, d / ".ckpt-000098.core.rcore-1-0")
    # a checkpoint cut short anyway
    with open(newest, "rb") as src, open(d / "ckpt-000099.core", "wb") as dst:
        dst.write(src.read(os.path.getsize(newest) // 2))
    assert latest_checkpoint(str(d)) == newest
    # an increment whose parent is gone: the newest whole one is older
    os.rename(parent, parent + ".moved")
    older = checkpoints(str(d))[-3]
    assert older != newest and latest_checkpoint(str(d)) == older
    r = rcore_cmd("restart", d, "--detach")
    assert r.returncode == 0, r.stderr
    procs.adopt(int(r.stdout.split()[-1]))
    assert f"restarting from {older}" in r.stderr


def test_sigkill_of_rcore_leaves_the_job_running(procs, tmp_path, job):
    script, ref = job
    out = tmp_path / "out.txt"
    d = tmp_path / "ckpt"
    runner = rcore_popen(procs, "run", "-i", "0.05", "-d", d, "--", sys.executable, script,
                         out, LINES)
    wait_for(lambda: len(checkpoints(str(d))) >= 2 and job_pid(runner.pid), timeout=60,
             what="checkpoints")
    pid = job_pid(runner.pid)
    procs.adopt(pid)
    time.sleep(0.12)                  # most likely inside a dump
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait(timeout=10)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or
             open(f"/proc/{pid}/stat").read().split(")")[1].split()[0] == "Z",
             timeout=60, what="the job to finish")
    got, want = out.read_bytes(), ref.read_bytes()
    assert got == want, (f"{len(got.splitlines())} lines of {len(want.splitlines())}; "
                         f"first difference at line "
                         f"{next((i for i, (a, b) in enumerate(zip(got.splitlines(), want.splitlines())) if a != b), None)}")



TREE_JOB = r"""#!/bin/bash
# a shell script whose pipeline is killed mid-run: the output must not change
for round in $(seq 1 14); do
    seq 1 400000 | awk -v r=$round '{s+=$1*r} END {print r, s}' | sha256sum >> "$1"
    sleep 0.3
done
"""


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            todo += children(p)
        except FileNotFoundError:
            pass
    return out


def kill_job_tree(procs, pid):
    """What a crash of the whole job does: every process stopped, then killed
    (stopped first, so that no member sees another's end and acts on it)."""
    tree = descendants(pid)
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for p in tree:
            procs.adopt(p)
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass                # a short-lived member of a pipeline ended meanwhile


def test_tree_job_killed_twice_restarts_from_dir_and_goes_on(procs, tmp_path):
    """A job with children gets tree checkpoints; restarted from DIR it is
    checkpointed there again, so a second crash loses nothing either."""
    script = tmp_path / "job.sh"
    script.write_text(TREE_JOB)
    script.chmod(0o755)
    ref, out = tmp_path / "ref", tmp_path / "out"
    subprocess.run([str(script), str(ref)], check=True)
    d = tmp_path / "ckpt"
    runner = rcore_popen(procs, "run", "-i", "0.3", "-d", d, "--keep", 2, "--", script, out)
    wait_for(lambda: len(checkpoints(str(d))) >= 3 and job_pid(runner.pid), timeout=60,
             what="three checkpoints")
    kill_job_tree(procs, job_pid(runner.pid))
    assert runner.wait(timeout=30) == 128 + signal.SIGKILL
    roots = checkpoints(str(d))
    assert len(roots) == 2
    # --keep removed the member cores of the checkpoints it removed
    kept = {os.path.basename(r) for r in roots}
    assert all(n.split(".core")[0] + ".core" in kept for n in os.listdir(d) if ".core" in n)
    with CoreFile(roots[-1]) as newest:
        assert newest.tree is not None and len(newest.tree.processes) > 1
    before = set(roots)
    runner = rcore_popen(procs, "restart", d, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: set(checkpoints(str(d))) - before and job_pid(runner.pid),
                 timeout=60, what="a checkpoint of the restarted job")
    except AssertionError:
        runner.kill()
        raise AssertionError(runner.stderr.read().decode()) from None
    kill_job_tree(procs, job_pid(runner.pid))
    assert runner.wait(timeout=30) == 128 + signal.SIGKILL
    assert b"checkpointing it every" in runner.stderr.read()
    r = rcore_cmd("restart", d)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == ref.read_bytes()
