"""Shared memory and SysV IPC across a checkpoint, kill and restart: each C
program under tests/progs/shm_*.c and sysv_ipc.c sets up its objects, is
checkpointed, killed and restarted, then checks them itself and prints a
verdict."""

import contextlib
import glob
import os
import random
import shutil
import subprocess
import sys
import tempfile

import pytest

import rcore
from rcore import fds, shm
from rcore.elf import rcore_notes as R
from rcore.state import Mapping, ProcessState
from corenotes import rewrite_rcore_note
from conftest import SRC, rcore_cmd, read_lines, restart, wait_for, wait_lines
from test_fd_kinds import restarted_verdict
from test_trust import as_user, built, dump_as_user, home, user  # noqa: F401 (fixtures)


def test_shared_anonymous_memory_is_one_object_again(procs, build, tmp_path):
    lines, _, h = restarted_verdict(procs, build, tmp_path, "shm_anon")
    assert not h.warnings, h.warnings


def test_posix_shm_and_named_semaphores(procs, build, tmp_path):
    name = f"rcore-test-{tmp_path.name}"
    try:
        lines, _, h = restarted_verdict(procs, build, tmp_path, "shm_posix", name)
    finally:
        for leftover in ("sem", "gone", "kept", "held"):
            for path in (f"/dev/shm/{name}-{leftover}", f"/dev/shm/sem.{name}-{leftover}"):
                if os.path.exists(path):
                    os.unlink(path)
    assert not h.warnings, h.warnings


def _ipc_key():
    return 0x5c000000 | (os.getpid() & 0xffff) << 8 | random.randrange(0, 256, 4)


def _remove_ipc(ids):
    """Remove SysV objects a failed test left: (shmid, semid, msqid, a shmid
    never attached); None: keep."""
    for flag, ident in zip(("-m", "-s", "-q", "-m"), ids):
        if ident is not None:
            subprocess.run(["ipcrm", flag, str(ident)], capture_output=True)


def _ids(lines):
    return [int(x) for x in lines[0].split()[1:]]


def test_sysv_objects_still_there_are_kept(procs, build, tmp_path):
    ids = ()
    try:
        lines, summary, h = restarted_verdict(procs, build, tmp_path, "sysv_ipc",
                                              hex(_ipc_key()))
        ids = _ids(lines)
    finally:
        _remove_ipc(ids)
    assert any("SEM_UNDO" in w for w in summary.warnings), summary.warnings
    lone = f"the SysV shared memory segment {ids[3]} (key 0x0), created by process"
    assert any(w.startswith(lone) and "was not attached" in w for w in summary.warnings), \
        summary.warnings
    info = rcore_cmd("info", tmp_path / "core").stdout
    assert f"semaphore set {ids[1]}  key " in info and "mode 600  values 1 5 9" in info, info
    assert f"message queue {ids[2]}  key " in info and "2 messages, 13 bytes" in info, info
    assert "mode 640  12188 bytes" in info and "4096 bytes, removed" in info, info
    # only the segment removed (IPC_RMID) while attached, which died with the process
    made = [w for w in h.warnings if "made again" in w]
    assert len(made) == 1 and "(key 0x0)" in made[0], h.warnings


def test_sysv_objects_removed_are_made_again_with_their_ids(procs, build, tmp_path):
    go = tmp_path / "go"
    p = procs.start([build("sysv_ipc"), str(go), hex(_ipc_key())])
    ids = _ids(wait_lines(p.out_path, 2))
    try:
        rcore.dump(p.pid, str(tmp_path / "core"), kill=True)
        p.wait(timeout=10)
        _remove_ipc(ids)
        h = restart(procs, tmp_path / "core")
        go.touch()
        assert h.wait(30) == 0
        lines = read_lines(p.out_path)
        assert lines[-1] == "verdict: ok", "\n".join(lines)
        made = [w for w in h.warnings if "was gone: made again" in w]
        assert len(made) == 4, h.warnings
        lone = f"the SysV shared memory segment {ids[3]} (key 0x0) was not attached"
        assert any(w.startswith(lone) and w.endswith("it is gone") for w in h.warnings), \
            h.warnings
    finally:
        _remove_ipc(ids)


LOCKS = """
import multiprocessing, os, sys, time
lock = multiprocessing.Lock()
sem = multiprocessing.Semaphore(3)
sem.acquire()
with lock:
    pass
print("ready", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
checks = {
    "lock taken": lock.acquire(timeout=5),
    "lock held": not lock.acquire(block=False),
    "semaphore value": sem.get_value() == 2,
}
lock.release()
sem.release()
checks["semaphore released"] = sem.get_value() == 3
checks["lock free again"] = lock.acquire(block=False)
bad = [name for name, ok in checks.items() if not ok]
print("verdict:", "FAIL " + ", ".join(bad) if bad else "ok", flush=True)
"""


def test_multiprocessing_lock_and_semaphore_of_one_process(procs, tmp_path):
    """Python's multiprocessing.Lock and Semaphore are POSIX named semaphores
    mapped from /dev/shm and unlinked at once: restart refused them before."""
    go = tmp_path / "go"
    p = procs.start([sys.executable, "-c", LOCKS, str(go)])
    wait_lines(p.out_path, 1)
    rcore.dump(p.pid, str(tmp_path / "core"), kill=True)
    p.wait(timeout=10)
    h = restart(procs, tmp_path / "core")
    go.touch()
    assert h.wait(30) == 0
    assert read_lines(p.out_path)[-1] == "verdict: ok", read_lines(p.out_path)


@pytest.mark.parametrize("prog", ["shm_anon", "shm_posix", "sysv_ipc"])
def test_restore_in_place_keeps_shared_memory(procs, build, tmp_path, prog):
    """rcore restore (the same live process) leaves these mappings in place."""
    with _started(procs, build, tmp_path, prog) as p:
        rcore.dump(p.pid, str(tmp_path / "core"))
        res = rcore_cmd("restore", p.pid, tmp_path / "core")
        assert res.returncode == 0, res.stderr
        (tmp_path / "go").touch()
        assert p.wait(timeout=30) == 0
        assert read_lines(p.out_path)[-1] == "verdict: ok", read_lines(p.out_path)


@contextlib.contextmanager
def _started(procs, build, tmp_path, prog):
    """One of the shared-memory programs, started and ready; its SysV objects
    and /dev/shm files are removed at the end."""
    arg = f"rcore-test-{tmp_path.name}" if prog == "shm_posix" else hex(_ipc_key())
    p = procs.start([build(prog), str(tmp_path / "go"), arg])
    lines = wait_lines(p.out_path, 2 if prog == "sysv_ipc" else 1)
    try:
        yield p
    finally:
        if prog == "sysv_ipc":
            _remove_ipc(_ids(lines))
        for path in glob.glob(f"/dev/shm/{arg}-*"):
            os.unlink(path)


def test_restart_refuses_when_another_object_holds_an_id(procs, build, tmp_path):
    go = tmp_path / "go"
    p = procs.start([build("sysv_ipc"), str(go), hex(_ipc_key())])
    ids = _ids(wait_lines(p.out_path, 2))
    other = None
    try:
        rcore.dump(p.pid, str(tmp_path / "core"), kill=True)
        p.wait(timeout=10)
        _remove_ipc(ids)
        with open("/proc/sys/kernel/sem_next_id", "w") as f:
            f.write(str(ids[1]))
        other = int(subprocess.run(["ipcmk", "-S", "2"], capture_output=True, text=True,
                                   check=True).stdout.split()[-1])
        assert other == ids[1]
        res = rcore_cmd("restart", tmp_path / "core")
        assert res.returncode != 0
        assert f"SysV semaphore set {ids[1]} is another object now" in res.stderr, res.stderr
        # nothing made before the refusal is left behind
        with open("/proc/sysvipc/shm") as f:
            assert ids[0] not in [int(line.split()[1]) for line in f.readlines()[1:]]
    finally:
        _remove_ipc(ids)
        if other is not None:
            subprocess.run(["ipcrm", "-s", str(other)], capture_output=True)


def test_shared_anonymous_memory_without_privilege_is_a_memfd(procs, build):
    """Without CAP_CHECKPOINT_RESTORE, /proc/self/map_files is closed to rcore:
    the object is a memfd, still one object for every mapping, and restart
    says so.  All of it as the user nobody, in a directory it may use."""
    public = tempfile.mkdtemp(prefix="rcore-test-")
    try:
        os.chmod(public, 0o777)
        prog = shutil.copy(build("shm_anon"), public)
        out = os.path.join(public, "out")
        go = os.path.join(public, "go")
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        env = dict(os.environ, PYTHONPATH=SRC)
        with open(out, "w") as f:
            p = procs.start([*nobody, prog, go, "memfd"], stdout=f)
        os.chmod(out, 0o666)            # the restart reopens it as nobody
        wait_lines(out, 1)
        cli = [*nobody, sys.executable, "-m", "rcore"]
        core = os.path.join(public, "c")
        res = subprocess.run([*cli, "dump", str(p.pid), "-o", core, "--kill"], env=env,
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        p.wait(timeout=10)
        res = subprocess.run([*cli, "restart", core, "--any-pid", "--detach"], env=env,
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        procs.adopt(int(res.stdout.split()[-1]))
        assert "shared anonymous memory comes back as a memfd" in res.stderr, res.stderr
        open(go, "w").close()
        wait_for(lambda: read_lines(out)[-1].startswith("verdict"), what="the verdict")
        assert read_lines(out)[-1] == "verdict: ok", read_lines(out)
    finally:
        shutil.rmtree(public, ignore_errors=True)


def test_posix_shm_file_written_since_the_checkpoint_is_refused(procs, build, tmp_path):
    """A /dev/shm object that still exists is mapped again by path as it is now:
    written since the checkpoint, its bytes are not the checkpoint's, and the
    restart refuses it by its identity (tmpfs sets mtime at a page's first
    write fault, and write(2) does too)."""
    name = f"rcore-test-{tmp_path.name}"
    p = procs.start([build("shm_posix"), str(tmp_path / "go"), name])
    wait_lines(p.out_path, 1)
    try:
        rcore.dump(p.pid, str(tmp_path / "core"), kill=True)
        p.wait(timeout=10)
        with open(f"/dev/shm/{name}-kept", "r+b") as f:
            f.seek(100)
            f.write(b"changed")
        res = rcore_cmd("restart", tmp_path / "core")
        assert res.returncode != 0
        assert f"the mapped file /dev/shm/{name}-kept changed since the checkpoint" \
            in res.stderr, res.stderr
    finally:
        for path in glob.glob(f"/dev/shm/{name}-*"):
            os.unlink(path)


@pytest.mark.parametrize("prog", ["shm_anon", "shm_posix", "sysv_ipc"])
def test_restarted_shared_memory_checkpoints_again(procs, build, tmp_path, prog):
    """What a restart made is what a dump finds again: a second checkpoint,
    kill and restart of the restarted process."""
    with _started(procs, build, tmp_path, prog) as p:
        rcore.dump(p.pid, str(tmp_path / "core"), kill=True)
        p.wait(timeout=10)
        h = restart(procs, tmp_path / "core", detach=True)
        rcore.dump(h.pid, str(tmp_path / "core2"), kill=True)
        wait_for(lambda: not os.path.exists(f"/proc/{h.pid}"), what="the first restart gone")
        h = restart(procs, tmp_path / "core2")
        (tmp_path / "go").touch()
        assert h.wait(30) == 0
        assert read_lines(p.out_path)[-1] == "verdict: ok", read_lines(p.out_path)


def _plan(mappings):
    return fds.FdPlan(ProcessState(pid=1, mappings=mappings))


def test_registry_makes_each_object_once_for_a_tree(tmp_path):
    """The contract for a tree: one registry, map_sources per process.  Two
    processes map one shared anonymous object and one deleted file, the second
    further than the first: one object each, the first process's bytes where
    it mapped them, the second's only beyond."""
    gone = str(tmp_path / "gone")
    page = 4096

    def maps(base, pages, offset):
        return [Mapping(base, base + pages * page, "rw-s", offset * page, "00:01", 777,
                        "/dev/zero", True, stored="all"),
                Mapping(base + 0x100000, base + 0x100000 + pages * page, "rw-s", offset * page,
                        "fe:00", 888, gone, True, stored="all")]

    def memory(fill):
        return lambda addr, n: bytes([fill]) * n

    registry = {}
    first, second = _plan(maps(0x10000000, 2, 0)), _plan(maps(0x20000000, 2, 1))
    try:
        out1 = shm.map_sources(first, first.mappings, memory(1), registry)
        out2 = shm.map_sources(second, second.mappings, memory(2), registry)
        assert len(registry) == 2 and not os.path.exists(gone)
        for i in range(2):
            fd1 = first.fds[int(out1[i].path.rsplit("/", 1)[1])]
            fd2 = second.fds[int(out2[i].path.rsplit("/", 1)[1])]
            assert fd1 == fd2 and not out1[i].deleted
            data = os.pread(fd1, 3 * page, 0)
            assert data == bytes([1]) * 2 * page + bytes([2]) * page
        assert os.readlink(f"/proc/self/fd/{fd1}") == gone + " (deleted)"
    finally:
        first.close()
        second.close()


def test_root_objects_the_process_never_used_are_not_recorded(procs, build, tmp_path):
    """As root, the uid rule would take every root-owned set and queue: only
    those the process operated on last are recorded."""
    unrelated = int(subprocess.run(["ipcmk", "-S", "1"], capture_output=True, text=True,
                                   check=True).stdout.split()[-1])
    p = procs.start([build("sysv_ipc"), str(tmp_path / "go"), hex(_ipc_key())])
    ids = _ids(wait_lines(p.out_path, 2))
    try:
        rcore.dump(p.pid, str(tmp_path / "core"))
        info = rcore_cmd("info", tmp_path / "core").stdout
        assert f"semaphore set {ids[1]}  key" in info, info
        assert f"semaphore set {unrelated}  key" not in info, info
    finally:
        p.kill()
        p.wait(timeout=10)
        _remove_ipc(ids)
        subprocess.run(["ipcrm", "-s", str(unrelated)], capture_output=True)


def test_corrupt_sysvipc_note_is_refused_by_name(procs, build, tmp_path):
    p = procs.start([build("sysv_ipc"), str(tmp_path / "go"), hex(_ipc_key())])
    ids = _ids(wait_lines(p.out_path, 2))
    try:
        rcore.dump(p.pid, str(tmp_path / "core"))
    finally:
        p.kill()
        p.wait(timeout=10)
        _remove_ipc(ids)

    def bad_semaphore(d):
        # other root-owned sets of the namespace may be there too (the rule)
        i = [s["id"] for s in d["sem"]].index(ids[1])
        d["sem"][i]["values"][1] = 70000
        where.append(f"sem[{i}].values[1]")
    where = []
    rewrite_rcore_note(str(tmp_path / "core"), R.NT_RCORE_SYSVIPC, bad_semaphore)
    res = rcore_cmd("info", tmp_path / "core")
    assert res.returncode == 1
    assert f"corrupt RCORE_SYSVIPC: {where[0]}: 70000 is out of range" in res.stderr, \
        res.stderr


SPARSE = """
import mmap, os, sys, time
m = mmap.mmap(-1, 256 << 20, mmap.MAP_SHARED)
m[100 << 20] = 7
print("ready", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
print("verdict:", "ok" if m[100 << 20] == 7 and m[0] == 0 else "FAIL", flush=True)
"""


def test_untouched_shared_anonymous_memory_takes_none_after_restart(procs, tmp_path):
    """256 MiB of shared anonymous memory with one page written: the restarted
    object holds that page, not 256 MiB of zeros."""
    p = procs.start([sys.executable, "-c", SPARSE, str(tmp_path / "go")])
    wait_lines(p.out_path, 1)
    rcore.dump(p.pid, str(tmp_path / "core"), kill=True)
    p.wait(timeout=10)
    h = restart(procs, tmp_path / "core")
    with open(f"/proc/{h.pid}/maps") as f:
        span = next(line.split()[0] for line in f if line.endswith("/dev/zero (deleted)\n"))
    # the shmem object's allocated pages (a tmpfs inode counts them in st_blocks)
    held = os.stat(f"/proc/{h.pid}/map_files/{span}").st_blocks * 512
    (tmp_path / "go").touch()
    assert h.wait(30) == 0
    assert read_lines(p.out_path)[-1] == "verdict: ok"
    assert held <= 64 << 10, f"{held} bytes held"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (to create a user)")
@pytest.mark.parametrize("prog", ["shm_anon", "shm_posix", "sysv_ipc"])
def test_users_core_restarted_by_root(procs, user, home, prog):
    """A core a user dumped of their own process, restarted by root: files are
    made as the user, SysV objects kept or made for the user, shared anonymous
    memory is still the kernel's kind (rcore's own rights for map_files)."""
    arg = f"rcore-test-{os.path.basename(home)}" if prog == "shm_posix" else hex(_ipc_key())
    out = os.path.join(home, "out")
    with open(out, "ab") as f:
        os.fchown(f.fileno(), user.pw_uid, user.pw_gid)
        p = procs.start(as_user(user) + [built(home, prog), os.path.join(home, "go"), arg],
                        stdout=f, cwd=home)
    lines = wait_lines(out, 2 if prog == "sysv_ipc" else 1)
    try:
        core = os.path.join(home, "core")
        dump_as_user(user, p.pid, core)
        p.kill()
        p.wait(timeout=10)
        if prog == "sysv_ipc":      # made again, for the user
            _remove_ipc([None, *_ids(lines)[1:]])
        res = rcore_cmd("restart", core, "--detach")
        assert res.returncode == 0, res.stderr
        procs.adopt(int(res.stdout.split()[-1]))
        assert "memfd" not in res.stderr, res.stderr
        open(os.path.join(home, "go"), "w").close()
        wait_for(lambda: read_lines(out)[-1].startswith("verdict"), what="the verdict")
        assert read_lines(out)[-1] == "verdict: ok", read_lines(out)
    finally:
        if prog == "sysv_ipc":
            _remove_ipc(_ids(lines))
        for path in glob.glob(f"/dev/shm/{arg}-*"):
            os.unlink(path)
