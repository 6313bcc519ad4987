"""Process trees (issue 11), acceptance with real programs: each job is killed
midway by `rcore dump --kill` of its root, restarted with `rcore restart`, and its
results must be exactly those of the same job run uninterrupted.  Without the
children a restart is silently wrong (bash gets ECHILD and writes empty results),
so these compare exact outputs; each also checks the dump landed midway."""

import filecmp
import os
import shutil
import sys

from conftest import (HERE, all_children, dump_tree_and_kill, finish, rcore_cmd, read_lines, restart_tree,
                      start_tree, wait_for)

DATA = os.path.join(HERE, "data")
KILLED_MIDWAY = "the job went on after dump --kill: the dump was not midway, or --kill left children running"
TIMEOUT = 600       # a hung job fails the test instead of hanging it
ENV = dict(os.environ, LC_ALL="C")


def run_job(procs, argv, cwd, checkpoint, midway, core, restart_flags=(), before_restart=None):
    """Run argv in cwd as a tree; with checkpoint, once midway() is true dump it
    with --kill, call before_restart(p) (the killed root's Popen), restart it and let it finish.
    Returns (the job's exit status, its output lines)."""
    os.makedirs(cwd, exist_ok=True)
    p = start_tree(procs, argv, cwd=cwd, env=ENV)
    waited = p
    if checkpoint:
        wait_for(lambda: midway(p), timeout=120, what="the job midway")
        dump_tree_and_kill(p, core)
        if before_restart:
            before_restart(p)
        waited = restart_tree(procs, core, *restart_flags)
    status = finish(waited, TIMEOUT)
    assert status == 0, (status, read_lines(p.out_path), checkpoint and read_lines(waited.out_path))
    return status, read_lines(p.out_path)


def same_files(a, b, names):
    for name in names:
        assert filecmp.cmp(os.path.join(a, name), os.path.join(b, name), shallow=False), name


# A shell script and its pipelines ------------------------------------------------

PIPELINE = ["bash", os.path.join(DATA, "tree_pipeline.sh")]
PIPELINE_FILES = ["log", "out", "tail7", "letters", "sizes"]


def pipeline_running(cwd):
    """The first pipeline is running: seq, awk and sha256sum are bash's children."""
    log = os.path.join(cwd, "log")
    return lambda p: os.path.exists(log) and read_lines(log) == ["started"] and len(all_children(p.pid)) == 3


def check_pipeline_midway(cwd):
    # The dump landed while the first pipeline ran, and --kill ended all of it:
    # its result is not written.
    assert read_lines(os.path.join(cwd, "log")) == ["started"] and \
        os.path.getsize(os.path.join(cwd, "out")) == 0, KILLED_MIDWAY


def test_shell_pipeline(procs, tmp_path):
    ref, job = str(tmp_path / "ref"), str(tmp_path / "job")
    run_job(procs, PIPELINE, ref, False, None, None)
    assert read_lines(os.path.join(ref, "log")) == ["started", "sum done", "finished"]
    run_job(procs, PIPELINE, job, True, pipeline_running(job), tmp_path / "job.core",
            before_restart=lambda p: check_pipeline_midway(job))
    same_files(ref, job, PIPELINE_FILES)


def hold_pid(procs, pid):
    """Start a process with PID pid (free: the tree was killed), as root, through
    /proc/sys/kernel/ns_last_pid; other processes of the machine may take it
    first, so try a few times.  Returns its Popen."""
    for _ in range(50):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        holder = procs.start(["sleep", "1000"])
        if holder.pid == pid:
            return holder
        holder.kill()
        holder.wait()
    raise AssertionError(f"could not start a process with PID {pid}")


def test_shell_pipeline_in_pid_namespace_while_its_pid_is_taken(procs, tmp_path):
    # The tree's root PID is held by another process on the host: restart
    # --pid-namespace brings the tree back in a namespace of its own.
    ref, job = str(tmp_path / "ref"), str(tmp_path / "job")
    run_job(procs, PIPELINE, ref, False, None, None)
    holders = []

    def take_root_pid(p):
        check_pipeline_midway(job)
        holders.append(hold_pid(procs, p.pid))
        refused = rcore_cmd("restart", tmp_path / "job.core")    # without the namespace
        assert refused.returncode != 0 and str(p.pid) in refused.stderr, refused.stderr

    run_job(procs, PIPELINE, job, True, pipeline_running(job), tmp_path / "job.core",
            restart_flags=["--pid-namespace"], before_restart=take_root_pid)
    same_files(ref, job, PIPELINE_FILES)
    assert holders[0].poll() is None            # the holder was left alone


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def test_pipeline_member_checkpointed_alone_is_said(procs, tmp_path):
    # A member of a pipeline dumped on its own: its stdin and stdout lead to
    # processes outside its checkpoint.  Dump and restart must say so, naming
    # them (it once became rcore's own streams without a word).
    p = start_tree(procs, ["bash", "-c", "seq 1 300000000 | cat | wc -l > n"], cwd=tmp_path)
    cat = wait_for(lambda: next((k for k in all_children(p.pid) if comm(k) == "cat"), None), what="cat running")
    dump = rcore_cmd("dump", cat, "-o", tmp_path / "cat.core", "--kill")
    assert dump.returncode == 0, dump.stderr
    for fd, other in ((0, "seq"), (1, "wc")):
        assert any(f"fd {fd}" in line and other in line for line in dump.stderr.splitlines()), dump.stderr
    wait_for(lambda: not os.path.exists(f"/proc/{cat}"), what="cat reaped by bash")
    restarted = restart_tree(procs, tmp_path / "cat.core")
    finish(restarted, TIMEOUT)
    said = open(restarted.out_path, errors="replace").read()
    assert "fd 0" in said and "fd 1" in said, said


# make -j2 -------------------------------------------------------------------------

MAKE_PRODUCTS = ["main.o"] + [f"f{i:02d}.o" for i in range(1, 12)] + ["prog", "result.txt"]


def objects(cwd):
    return [name for name in MAKE_PRODUCTS if name.endswith(".o") and os.path.exists(os.path.join(cwd, name))]


def test_make_j2(procs, tmp_path):
    ref, job = str(tmp_path / "ref"), str(tmp_path / "job")
    for d in (ref, job):
        shutil.copytree(os.path.join(DATA, "makeproj"), d)
    run_job(procs, ["make", "-j2"], ref, False, None, None)

    def building(p):                    # some objects made, compiles running
        return 2 <= len(objects(job)) <= 8 and all_children(p.pid)

    def check_midway(p):
        assert len(objects(job)) < 12 and not os.path.exists(os.path.join(job, "prog")), KILLED_MIDWAY

    run_job(procs, ["make", "-j2"], job, True, building, tmp_path / "make.core", before_restart=check_midway)
    same_files(ref, job, MAKE_PRODUCTS)


# Python: multiprocessing and subprocess -------------------------------------------

def test_multiprocessing_pool(procs, tmp_path):
    ref, job = str(tmp_path / "ref"), str(tmp_path / "job")
    argv = [sys.executable, os.path.join(DATA, "tree_pool.py")]
    _, want = run_job(procs, argv + [ref], ref, False, None, None)
    assert len(want) == 25 and want[-1] == "done"

    def working(p):                     # a few tasks started, not all
        return 4 <= len(os.listdir(job)) <= 16

    def check_midway(p):
        assert "done" not in read_lines(p.out_path), KILLED_MIDWAY

    _, got = run_job(procs, argv + [job], job, True, working, tmp_path / "pool.core", before_restart=check_midway)
    assert got == want


def test_subprocess_popen_pipes(procs, tmp_path):
    ref, job = str(tmp_path / "ref"), str(tmp_path / "job")
    argv = [sys.executable, os.path.join(DATA, "tree_popen.py")]
    _, want = run_job(procs, argv, ref, False, None, None)
    assert [line.split()[0] for line in want] == ["feeding", "sha256sum", "sha256sum", "sorted", "sort"]

    def feeding(p):                     # writing into sha256sum's stdin
        return read_lines(p.out_path) == ["feeding"] and all_children(p.pid)

    def check_midway(p):
        assert read_lines(p.out_path) == ["feeding"], KILLED_MIDWAY

    _, got = run_job(procs, argv, job, True, feeding, tmp_path / "popen.core", before_restart=check_midway)
    assert got == want
