"""rcore dump of a process tree (dumptree.py): one core per live process, the
root's holding the tree (RCORE_TREE), every process frozen together and left as
it was whatever happens."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from elftools.elf.elffile import ELFFile

import rcore
from rcore import tree
from rcore.dump import ProcessDump
from rcore.elf import rcore_notes as R
from rcore.elf.reader import CoreFile
from rcore.errors import CoreFormatError, RcoreError

from conftest import HERE, proc_status, rcore_cmd, wait_for, wait_lines

FAMILY = os.path.join(HERE, "data", "dumptree_family.py")


def start_family(procs, tmp_path, mib=0):
    """The tree of tests/data/dumptree_family.py: {"root", "a", "b", "z", "c": pid},
    every one ended by the procs fixture; each live one fills mib MiB."""
    p = procs.start([sys.executable, FAMILY, str(tmp_path / "held"), str(mib)])
    line = wait_lines(p.out_path, 1, timeout=60)[0]
    pids = dict(zip(("root", "a", "b", "z", "c"), map(int, line.split())))
    for pid in pids.values():
        procs.adopt(pid)
    return pids


@pytest.fixture
def family(procs, tmp_path):
    return start_family(procs, tmp_path)


def untouched(pids):
    """Each live process of pids runs on, not traced, not stopped."""
    for pid in pids:
        st = proc_status(pid)
        assert st, f"process {pid} is gone"
        if st["State"][0] == "Z":
            continue
        assert st["TracerPid"] == "0", (pid, st["TracerPid"])
        assert st["State"][0] in "SR", (pid, st["State"])


def test_the_tree_note_records_every_process(family, tmp_path):
    core = tmp_path / "job.core"
    s = rcore.dump(family["root"], str(core))
    assert (s.processes, s.zombies) == (4, 1)
    f = family
    t = CoreFile(str(core)).tree
    assert [m.pid for m in t.processes] == [f["root"], f["a"], f["b"], f["z"], f["c"]]
    assert t.root == f["root"] and t.member(f["root"]).ppid == os.getpid()
    a, b, z, c = (t.member(f[k]) for k in "abzc")
    assert (a.ppid, a.pgid, a.pdeath_signal) == (f["root"], f["a"], 9)
    assert a.tids == [f["a"]] + sorted(int(x) for x in os.listdir(f"/proc/{f['a']}/task")
                                       if int(x) != f["a"]) and len(a.tids) == 2
    assert (b.ppid, b.pgid, b.sid) == (f["a"], f["b"], f["b"])
    assert (z.zombie, z.exit_status, z.core, z.tids) == (True, 3 << 8, "", [f["z"]])
    assert (c.exit_signal, a.exit_signal, c.zombie, c.exit_status) == (0, 17, False, 0)
    assert [m.pid for m in t.children(f["root"])] == [f["a"], f["z"], f["c"]]
    assert t.member(f["root"]).core == "job.core" and a.core == f"job.core.{f['a']}"
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["held", "out.0", "job.core"] + [f"job.core.{f[k]}" for k in "abc"])
    assert sorted(s.cores) == sorted(str(tmp_path / n) for n in os.listdir(tmp_path)
                                     if n.startswith("job.core"))
    for k in "abc":
        member = CoreFile(tree.member_path(str(core), t.member(f[k])))
        assert member.tree is None and member.state.extra["tree_root"] == f["root"]
        assert member.state.pid == f[k]
    untouched(f.values())


def test_a_tree_shares_descriptions_and_queues_a_pipe_once(family, tmp_path):
    core = tmp_path / "job.core"
    rcore.dump(family["root"], str(core))
    root = CoreFile(str(core)).state
    pipe_r = next(x for x in root.files if x.kind == "pipe" and x.queued)
    assert bytes.fromhex(pipe_r.queued) == b"queued once"
    held = next(x for x in root.files if x.path == str(tmp_path / "held"))
    assert all(x.shared is None for x in root.files)
    for k in "abc":
        files = {x.fd: x for x in CoreFile(f"{core}.{family[k]}").state.files}
        assert files[held.fd].shared == [family["root"], held.fd]
        assert files[pipe_r.fd].shared == [family["root"], pipe_r.fd]
        assert not any(x.queued for x in files.values() if x.kind == "pipe")
    # b's stdout is the root's (the test's output file): one description too
    b = {x.fd: x for x in CoreFile(f"{core}.{family['b']}").state.files}
    assert b[1].shared == [family["root"], 1]


def test_member_cores_read_by_gdb_and_pyelftools(family, tmp_path):
    core = tmp_path / "job.core"
    rcore.dump(family["root"], str(core))
    for k in ("root", "a", "b", "c"):
        path = str(core) if k == "root" else f"{core}.{family[k]}"
        r = subprocess.run(["gdb", "-nx", "-batch", "-ex", "info threads", sys.executable, path],
                           capture_output=True, text=True, timeout=120)
        assert f"LWP {family[k]}" in r.stdout, r.stdout + r.stderr
        with open(path, "rb") as fh:
            elf = ELFFile(fh)
            assert elf.header.e_type == "ET_CORE"
            notes = [n for seg in elf.iter_segments() if seg.header.p_type == "PT_NOTE"
                     for n in seg.iter_notes()]
            types = {n.n_type for n in notes if n.n_name == "RCORE"}
            assert (R.NT_RCORE_TREE in types) == (k == "root")


def test_no_children_dumps_the_root_alone_and_says_so(family, tmp_path):
    r = rcore_cmd("dump", "--no-children", family["root"], "-o", tmp_path / "job.core")
    assert r.returncode == 0, r.stderr
    assert "child process" in r.stderr and str(family["a"]) in r.stderr, r.stderr
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("job")) == ["job.core"]
    c = CoreFile(str(tmp_path / "job.core"))
    assert c.tree is None and c.state.children == sorted(family[k] for k in "azc")
    untouched(family.values())


def test_the_cli_says_how_many_processes(family, tmp_path):
    r = rcore_cmd("dump", family["root"], "-o", tmp_path / "job.core")
    assert r.returncode == 0, r.stderr
    assert "a tree of 4 processes and 1 zombie" in r.stdout, r.stdout


def test_kill_kills_the_whole_tree_after_the_dump(family, tmp_path, procs):
    r = rcore_cmd("dump", "--kill", family["root"], "-o", tmp_path / "job.core")
    assert r.returncode == 0, r.stderr
    procs.popens[0].wait(timeout=10)
    for k in "abc":
        # a zombie of init's, or reaped: not running
        assert not os.path.exists(f"/proc/{family[k]}") or \
            proc_status(family[k])["State"][0] in "ZX", k
    assert CoreFile(str(tmp_path / "job.core")).tree is not None


@pytest.mark.parametrize("step", ["capture", "prepare", "store", "commit"])
def test_a_failing_dump_leaves_every_process_as_it_was(family, tmp_path, monkeypatch, step):
    real = getattr(ProcessDump, step)

    def failing(self, *args, **kwargs):
        if self.pid == family["b"]:
            raise RcoreError(f"test failure in {step}")
        return real(self, *args, **kwargs)
    monkeypatch.setattr(ProcessDump, step, failing)
    with pytest.raises(RcoreError, match="test failure"):
        rcore.dump(family["root"], str(tmp_path / "job.core"), stop=True)
    assert not [n for n in os.listdir(tmp_path) if "job" in n]
    untouched(family.values())
    for pid in family.values():       # no copy left among anyone's children
        if proc_status(pid)["State"][0] != "Z":
            assert "rcore-dump-copy" not in _children_names(pid)


def _children_names(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        kids = fh.read().split()
    names = []
    for k in kids:
        try:
            with open(f"/proc/{k}/comm") as fh:
                names.append(fh.read().strip())
        except FileNotFoundError:
            pass
    return names


def test_rcore_killed_mid_tree_dump_leaves_no_process_stopped(procs, tmp_path):
    # 48 MiB each: the dump lasts long enough for the kills to land in each step
    family = start_family(procs, tmp_path, mib=48)
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(HERE), "src"))
    for delay in (0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.8):
        p = subprocess.Popen([sys.executable, "-m", "rcore", "dump", str(family["root"]),
                              "-o", str(tmp_path / "job.core")], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        deadline = time.monotonic() + 5
        while True:     # a copy ends itself once its tracer is gone
            try:
                untouched(family.values())
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    s = rcore.dump(family["root"], str(tmp_path / "job.core"))   # and a dump still works
    assert s.processes == 4
    for pid in family.values():     # the next dump had the killed dumps' copies reaped
        if proc_status(pid)["State"][0] != "Z":
            assert "rcore-dump-copy" not in _children_names(pid)


def test_stop_leaves_every_process_of_the_tree_stopped(family, tmp_path):
    rcore.dump(family["root"], str(tmp_path / "job.core"), stop=True)
    for k in ("root", "a", "b", "c"):
        pid = family[k]
        # the SIGSTOP sent at the release takes effect as the process runs again
        st = wait_for(lambda: (lambda s: s if s["State"][0] == "T" else None)(proc_status(pid)),
                      what=f"{k} stopped")
        assert st["TracerPid"] == "0", k
        os.kill(pid, signal.SIGCONT)


def test_rcore_is_no_member_of_the_tree_it_dumps(tmp_path):
    with pytest.raises(RcoreError, match="rcore itself"):
        rcore.dump(os.getppid(), str(tmp_path / "c"))


def _tree_note(processes, root=None):
    return R._encode({"root": root or processes[0]["pid"], "processes": processes})


def _member(pid, ppid, **kw):
    m = dict(pid=pid, ppid=ppid, pgid=pid, sid=pid, exit_signal=17, pdeath_signal=0,
             zombie=False, exit_status=0, core=f"job.core.{pid}", tids=[pid])
    m.update(kw)
    return m


GOOD = [_member(10, 1, core="job.core"), _member(11, 10), _member(12, 11)]


@pytest.mark.parametrize("change, why", [
    (lambda t: t.reverse(), "root"),
    (lambda t: t[2].update(ppid=99), "not an earlier process"),
    (lambda t: t[1].update(pid=12, tids=[12]), "twice"),
    (lambda t: t[2].update(tids=[12, 11]), "twice"),
    (lambda t: t[1].update(zombie=True, core="", exit_status=256), "zombie"),
    (lambda t: t[2].update(zombie=True, exit_status=256), "zombie has no core"),
    (lambda t: t[1].update(core="../etc/passwd"), "file name"),
    (lambda t: t[1].update(core=".."), "file name"),
    (lambda t: t[1].update(exit_signal=65), "out of range"),
    (lambda t: t[1].update(pdeath_signal=-1), "out of range"),
    (lambda t: t[1].update(pid=1 << 23), "out of range"),
    (lambda t: t[2].update(core=""), "needs a core"),
    (lambda t: t[2].update(core="job.core.11"), "two processes"),
    (lambda t: t[0].update(zombie=True, core="", exit_status=0), "zombie"),
])
def test_corrupt_tree_notes_are_refused(change, why):
    procs = [dict(m, tids=list(m["tids"])) for m in GOOD]
    assert R.decode_tree(_tree_note(procs)).root == 10
    change(procs)
    with pytest.raises(ValueError, match=why):
        R.decode_tree(_tree_note(procs, root=10))


def test_a_root_core_renamed_is_refused_by_name(family, tmp_path):
    core = tmp_path / "job.core"
    rcore.dump(family["root"], str(core))
    os.rename(core, tmp_path / "other.core")
    with pytest.raises(CoreFormatError, match="job.core"):
        CoreFile(str(tmp_path / "other.core"))


def test_a_process_without_children_is_dumped_as_before(procs, tmp_path):
    p = procs.start(["sleep", "100"])
    wait = time.monotonic() + 5
    while not os.path.exists(f"/proc/{p.pid}/exe") and time.monotonic() < wait:
        time.sleep(0.01)
    s = rcore.dump(p.pid, str(tmp_path / "c"))
    assert s.processes == 1 and sorted(os.listdir(tmp_path)) == ["c", "out.0"]
    c = CoreFile(str(tmp_path / "c"))
    assert c.tree is None and "tree_root" not in c.state.extra
    assert all(x.shared is None for x in c.state.files)


def test_discovery_lists_descendants_in_pre_order(family):
    f = family
    assert tree.descendants(f["root"]) == [f["root"], f["a"], f["b"], f["z"], f["c"]]


def test_info_shows_the_tree_and_a_member_names_its_root(family, tmp_path):
    core = tmp_path / "job.core"
    rcore.dump(family["root"], str(core))
    r = rcore_cmd("info", core)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "tree:     4 processes and 1 zombie(s), root %d" % family["root"] in lines, r.stdout
    row = {int(x.split()[0]): x for x in lines if x.startswith("  ") and x.split()[0].isdigit()}
    a, z, c = (row[family[k]].split() for k in "azc")
    assert a[:3] == [str(family["a"]), str(family["root"]), str(family["a"])]
    assert f"job.core.{family['a']}" in a and "parent-death signal 9" in row[family["a"]]
    assert "zombie, exit 3" in row[family["z"]] and "exit signal 0" in row[family["c"]]
    r = rcore_cmd("info", f"{core}.{family['a']}")
    assert f"of the tree of process {family['root']}: its root core job.core" in r.stdout
    assert f"shared with process {family['root']} fd 1" in r.stdout, r.stdout
    r = rcore_cmd("info", "--json", core)
    t = json.loads(r.stdout)["tree"]
    assert [m["pid"] for m in t["processes"]][0] == family["root"]
    assert all(m["present"] for m in t["processes"] if m["core"])


def test_a_member_whose_main_thread_exited_is_refused_not_dropped(procs, build, tmp_path):
    # its leader shows state Z, but the process lives: it is no zombie of the tree
    sh = procs.start(["sh", "-c", f"{build('exited_leader')}; wait"])
    pid, kid = map(int, wait_lines(sh.out_path, 1)[0].split())
    procs.adopt(pid)
    procs.adopt(kid)
    with pytest.raises(RcoreError, match=f"process {pid}: its main thread has exited"):
        rcore.dump(sh.pid, str(tmp_path / "job.core"))
    untouched([sh.pid, kid])
    assert not [n for n in os.listdir(tmp_path) if "job" in n]


@pytest.mark.parametrize("shared", [[0, 3], [10, 1 << 20], [10], "10:3", [10, -1]])
def test_a_corrupt_shared_key_is_refused(shared):
    entry = dict(fd=3, kind="file", path="/f", flags=0, pos=0, cloexec=False, description=3,
                 inode=1, dev=1, rdev=0, size=0, mtime_ns=0, deleted=False)
    assert R.decode_files(R._encode({"fds": [dict(entry, shared=[10, 3])]}))[0].shared == [10, 3]
    with pytest.raises(ValueError, match="shared"):
        R.decode_files(R._encode({"fds": [dict(entry, shared=shared)]}))


def test_pipes_between_members_are_not_refused_but_a_pidfd_is_still_said(procs, tmp_path):
    # a pipe from parent to child (each holds one end only) is the tree's own; a
    # pidfd of PID 1 in each process (the same inode in both) must still be said
    script = ("import os, sys, time\n"
              "r, w = os.pipe()\n"
              "k = os.fork()\n"
              "if k == 0:\n"
              "    os.close(w); fd = os.pidfd_open(1); print(os.getpid(), flush=True)\n"
              "    time.sleep(1000)\n"
              "os.close(r); fd = os.pidfd_open(1); time.sleep(1000)\n")
    p = procs.start([sys.executable, "-c", script])
    kid = int(wait_lines(p.out_path, 1)[0])
    procs.adopt(kid)
    s = rcore.dump(p.pid, str(tmp_path / "job.core"))
    assert not any("pipe whose other end is outside" in w for w in s.warnings), s.warnings
    single = rcore.dump(kid, str(tmp_path / "kid.core"))
    assert any("pipe whose other end is outside" in w for w in single.warnings)
    said = [w for w in s.warnings if "pidfd of process 1" in w]
    assert len(said) == 2 and any(w.startswith(f"process {kid}: ") for w in said), s.warnings


def test_a_pipe_from_outside_the_tree_is_still_refused(procs, tmp_path):
    # both processes hold the read end of a pipe whose writer is outside the tree
    r, w = os.pipe()
    script = ("import os, sys, time\n"
              f"os.dup2({r}, 7)\n"
              "k = os.fork()\n"
              "if k == 0:\n"
              "    print(os.getpid(), flush=True)\n"
              "time.sleep(1000)\n")
    try:
        p = procs.start([sys.executable, "-c", script], pass_fds=(r,))
        kid = int(wait_lines(p.out_path, 1)[0])
        procs.adopt(kid)
        s = rcore.dump(p.pid, str(tmp_path / "job.core"))
    finally:
        os.close(r)
        os.close(w)
    said = [x for x in s.warnings if "fd 7" in x and "other end is outside" in x]
    assert len(said) == 2, s.warnings


def test_one_progress_for_the_whole_tree(family, tmp_path):
    seen = []
    s = rcore.dump(family["root"], str(tmp_path / "job.core"),
                   progress=lambda d, t: seen.append((d, t)))
    done, total = max(seen)
    # the sums over every process (one process's alone is less than all stored)
    assert total >= done >= s.bytes_stored, (done, total, s.bytes_stored)


_FORKS_ON_USR1 = """
import os, signal, sys, time
def fork(*_):
    if os.fork() == 0:
        time.sleep(60)
        os._exit(0)
signal.signal(signal.SIGUSR1, fork)
print("ready", flush=True)
while True:
    time.sleep(1)
"""


def test_children_of_a_frozen_process_without_reading_each_thread(procs, tmp_path, monkeypatch):
    """tree.children_frozen: a child forked after the process was looked at
    running (tree.Before) is found while it is frozen; with no task created
    since and no child before, none is, without reading its children files;
    a namespace's init, which orphans are given to, is always read."""
    from rcore.linux import procfs
    from rcore.linux.ptrace import FrozenProcess
    p = procs.start([sys.executable, "-c", _FORKS_ON_USR1])
    wait_lines(p.out_path, 1)
    before = tree.Before(p.pid)
    assert before.children == []
    p.send_signal(signal.SIGUSR1)
    kid = wait_for(lambda: tree.children(p.pid), what="the forked child")
    procs.adopt(kid[0])
    assert procfs.read_forks() > before.forks
    with FrozenProcess(p.pid):
        assert tree.children_frozen(p.pid, before) == kid
    before.refresh()                        # as the dump does before freezing
    assert before.children == kid
    # the machine forks on meanwhile: its count held still
    monkeypatch.setattr(procfs, "read_forks", lambda: 12345)
    quiet = tree.Before(p.pid)
    quiet.children = []
    read = []
    monkeypatch.setattr(tree, "children", lambda pid: read.append(pid) or [])
    assert tree.children_frozen(p.pid, quiet) == [] and read == []
    assert tree.children_frozen(p.pid, quiet, ns_init=True) == [] and read == [p.pid]
    quiet.children = kid
    assert tree.children_frozen(p.pid, quiet) == [] and read == [p.pid] * 2
