"""`rcore restart` as a user runs it: foreground parent with the child's exit
status and forwarded signals, --detach, redirections, --skip-unsupported; and
the refusals, each a one-line error that leaves nothing behind."""

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

import rcore
from conftest import (SRC, checkpoint_and_kill, children, proc_status, rcore_cmd, read_lines,
                      wait_for, wait_lines)
from rcore import attrs
from rcore.elf.reader import CoreFile


def children_of(pid):
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(name))
            except (FileNotFoundError, ProcessLookupError):
                pass
    return out


def rcore_popen(*args):
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.Popen([sys.executable, "-m", "rcore", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_refused(res, *words):
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rcore: "), res.stderr
    for w in words:
        assert w in lines[0]


PY_EXIT = ("import time\nfor i in range(30):\n    print(i, flush=True)\n    time.sleep(0.03)\n"
           "raise SystemExit(7)")
PY_WAIT = ("import time\nprint('up', flush=True)\ntime.sleep(0.3)\n"
           "print('waiting', flush=True)\ntime.sleep(60)")


def test_foreground_exit_status(procs, tmp_path):
    p = procs.start([sys.executable, "-c", PY_EXIT])
    wait_lines(p.out_path, 5)
    checkpoint_and_kill(p, tmp_path / "core")
    res = rcore_cmd("restart", tmp_path / "core")
    assert res.returncode == 7, res.stderr
    assert read_lines(p.out_path) == [str(i) for i in range(30)]


def test_foreground_forwards_signals(procs, tmp_path):
    p = procs.start([sys.executable, "-c", PY_WAIT])
    wait_lines(p.out_path, 1)
    checkpoint_and_kill(p, tmp_path / "core")
    r = rcore_popen("restart", tmp_path / "core")
    procs.adopt(p.pid)
    wait_lines(p.out_path, 2)
    assert int(proc_status(p.pid)["PPid"]) == r.pid
    r.send_signal(signal.SIGTERM)
    assert r.wait(timeout=10) == 128 + signal.SIGTERM
    assert not os.path.exists(f"/proc/{p.pid}")


def test_detach_prints_pid_and_returns(procs, tmp_path):
    p = procs.start([sys.executable, "-c", PY_WAIT])
    wait_lines(p.out_path, 1)
    checkpoint_and_kill(p, tmp_path / "core")
    res = rcore_cmd("restart", "--detach", tmp_path / "core", timeout=20)
    assert res.returncode == 0, res.stderr
    pid = int(res.stdout.strip())
    procs.adopt(pid)
    assert pid == p.pid
    wait_lines(p.out_path, 2)
    status = proc_status(pid)
    assert status["TracerPid"] == "0" and status["State"].startswith("S")
    assert int(status["PPid"]) != os.getpid()      # reparented, not our child
    os.kill(pid, signal.SIGKILL)


def test_redirect_stdout(procs, tmp_path):
    data = tmp_path / "big"
    with open(data, "wb") as f:
        f.truncate(256 << 20)
    p = procs.start(["sha256sum", str(data)])
    time.sleep(0.2)
    checkpoint_and_kill(p, tmp_path / "core")
    res = rcore_cmd("restart", "--stdout", tmp_path / "new.out", tmp_path / "core")
    assert res.returncode == 0, res.stderr
    want = subprocess.run(["sha256sum", str(data)], capture_output=True, check=True).stdout
    assert (tmp_path / "new.out").read_bytes() == want
    assert open(p.out_path, "rb").read() == b""


def test_unsupported_fd_refused_then_skipped(procs, tmp_path):
    a = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    p = procs.start(["sleep", "1"], pass_fds=[a.fileno()])
    a.close()
    wait_for(lambda: proc_status(p.pid).get("State", "").startswith("S"))
    fd = sorted(int(x) for x in os.listdir(f"/proc/{p.pid}/fd"))[-1]
    checkpoint_and_kill(p, tmp_path / "core")
    res = rcore_cmd("restart", tmp_path / "core")
    assert_refused(res, f"fd {fd}", "socket", "--skip-unsupported")
    assert not os.path.exists(f"/proc/{p.pid}")
    res = rcore_cmd("restart", "--skip-unsupported", tmp_path / "core")
    assert res.returncode == 0
    assert f"fd {fd}" in res.stderr and "disconnected" in res.stderr


def test_pid_taken_refused(procs, tmp_path):
    p = procs.start(["sleep", "30"])
    wait_for(lambda: proc_status(p.pid).get("State", "").startswith("S"))
    rcore.dump(p.pid, str(tmp_path / "core"))
    before = children_of(os.getpid())
    res = rcore_cmd("restart", tmp_path / "core")
    assert_refused(res, f"PID {p.pid}", "--any-pid")
    assert proc_status(p.pid)["State"].startswith("S")     # untouched
    assert children_of(os.getpid()) == before


def test_changed_executable_refused(procs, tmp_path):
    exe = tmp_path / "mysleep"
    shutil.copy("/usr/bin/sleep", exe)
    p = procs.start([str(exe), "5"])
    wait_for(lambda: proc_status(p.pid).get("State", "").startswith("S"))
    checkpoint_and_kill(p, tmp_path / "core")
    with open(exe, "ab") as f:
        f.write(b"\0")
    res = rcore_cmd("restart", tmp_path / "core")
    assert_refused(res, str(exe), "changed")
    assert not os.path.exists(f"/proc/{p.pid}")


def test_changed_library_refused(procs, tmp_path):
    src = tmp_path / "lib.c"
    src.write_text("int rcore_test_lib_value = 42;\n")
    lib = tmp_path / "libtest.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    p = procs.start(["sleep", "5"], env=dict(os.environ, LD_PRELOAD=str(lib)))
    wait_for(lambda: proc_status(p.pid).get("State", "").startswith("S"))
    assert str(lib) in open(f"/proc/{p.pid}/maps").read()
    checkpoint_and_kill(p, tmp_path / "core")
    os.utime(lib, ns=(0, 1))
    res = rcore_cmd("restart", tmp_path / "core")
    assert_refused(res, str(lib), "changed")
    assert not os.path.exists(f"/proc/{p.pid}")


def test_truncated_core_and_not_a_core_refused(procs, tmp_path):
    p = procs.start(["sleep", "5"])
    wait_for(lambda: proc_status(p.pid).get("State", "").startswith("S"))
    checkpoint_and_kill(p, tmp_path / "core")
    size = os.path.getsize(tmp_path / "core")
    with open(tmp_path / "core", "r+b") as f:
        f.truncate(size // 2)
    res = rcore_cmd("restart", tmp_path / "core")
    assert_refused(res, "truncated")
    (tmp_path / "junk").write_bytes(os.urandom(10000))
    assert_refused(rcore_cmd("restart", tmp_path / "junk"), "not an ELF file")
    assert_refused(rcore_cmd("restart", tmp_path / "nothing"), "no such file")
    assert not os.path.exists(f"/proc/{p.pid}")


def test_non_root_cannot_restart_root_core(procs, tmp_path):
    if os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"):
        pytest.skip("needs root (to make a root-owned core) and a system python3")
    p = procs.start(["sleep", "5"])
    wait_for(lambda: proc_status(p.pid).get("State", "").startswith("S"))
    shared = tempfile.mkdtemp(prefix="rcore-test-")
    try:
        os.chmod(shared, 0o755)
        core = os.path.join(shared, "core")
        checkpoint_and_kill(p, core)
        os.chmod(core, 0o644)
        env = dict(os.environ, PYTHONPATH=SRC)
        res = subprocess.run(["/usr/bin/python3", "-m", "rcore", "restart", core],
                             env=env, capture_output=True, text=True, timeout=30,
                             user=65534, group=65534, extra_groups=[], cwd="/")
    finally:
        shutil.rmtree(shared)
    assert_refused(res, "uid 0", "only root")
    assert not os.path.exists(f"/proc/{p.pid}")


def test_failure_midway_leaves_nothing(procs, tmp_path, monkeypatch):
    p = procs.start(["sleep", "5"])
    wait_for(lambda: proc_status(p.pid).get("State", "").startswith("S"))
    checkpoint_and_kill(p, tmp_path / "core")

    def broken(*args):
        raise rcore.RcoreError("injected failure")
    monkeypatch.setattr(attrs, "apply_itimers", broken)
    before = children_of(os.getpid())
    with pytest.raises(rcore.RcoreError, match="injected failure"):
        rcore.restart(str(tmp_path / "core"))
    assert not os.path.exists(f"/proc/{p.pid}")
    assert children_of(os.getpid()) == before


def test_terminal_reattached_to_rcores_terminal(procs, tmp_path):
    _, old_tty = os.openpty()
    p = procs.start(["sleep", "30"], stdout=old_tty, stderr=old_tty)
    wait_for(lambda: proc_status(p.pid).get("State", "").startswith("S"))
    checkpoint_and_kill(p, tmp_path / "core")
    os.close(old_tty)
    # Without a terminal rcore refuses, naming the fd.
    assert_refused(rcore_cmd("restart", tmp_path / "core"), "fd 1", "terminal")
    master, tty = os.openpty()
    env = dict(os.environ, PYTHONPATH=SRC)
    r = subprocess.run([sys.executable, "-m", "rcore", "restart", "--detach",
                        str(tmp_path / "core")], env=env, stdin=subprocess.DEVNULL,
                       stdout=tty, stderr=subprocess.PIPE, timeout=30)
    assert r.returncode == 0, r.stderr
    pid = int(os.read(master, 100).split()[0])
    procs.adopt(pid)
    assert os.readlink(f"/proc/{pid}/fd/1") == os.ttyname(tty)
    assert os.readlink(f"/proc/{pid}/fd/2") == os.ttyname(tty)
    os.kill(pid, signal.SIGKILL)
    os.close(master)
    os.close(tty)


def test_credentials_restored_as_root(procs, tmp_path):
    """Supplementary groups differ from rcore's: the new process takes the
    checkpoint's.  (Another uid and gid: test_restart.py.)"""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    p = procs.start(["sleep", "1"], extra_groups=[65534, 100])
    wait_for(lambda: proc_status(p.pid).get("State", "").startswith("S"))
    checkpoint_and_kill(p, tmp_path / "core")
    assert sorted(os.getgroups()) != [100, 65534]
    h = rcore.restart(str(tmp_path / "core"))
    procs.adopt(h.pid)
    status = proc_status(h.pid)
    assert status["Groups"].split() == ["100", "65534"]
    assert status["Uid"].split() == ["0"] * 4
    assert h.wait(timeout=10) == 0


def test_other_kernels_vdso_refused(procs, tmp_path):
    """A core whose vDSO bytes differ (as under another kernel) is refused before
    any process is started: the program's cached vDSO pointers would be wrong."""
    p = procs.start(["sleep", "5"])
    wait_for(lambda: proc_status(p.pid).get("State", "").startswith("S"))
    checkpoint_and_kill(p, tmp_path / "core")
    with CoreFile(str(tmp_path / "core")) as c:
        vdso = next(m for m in c.state.mappings if m.path == "[vdso]")
        offset, _ = c.stored_range(vdso.start)
    with open(tmp_path / "core", "r+b") as f:
        f.seek(offset + 100)
        byte = f.read(1)
        f.seek(offset + 100)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert_refused(rcore_cmd("restart", tmp_path / "core"), "vDSO", "another kernel")
    assert not os.path.exists(f"/proc/{p.pid}")


def test_stopped_process_comes_back_stopped(procs, tmp_path):
    p = procs.start(["sleep", "1"])
    wait_for(lambda: proc_status(p.pid).get("State", "").startswith("S"))
    os.kill(p.pid, signal.SIGSTOP)
    wait_for(lambda: proc_status(p.pid).get("State", "").startswith("T"))
    checkpoint_and_kill(p, tmp_path / "core")
    h = rcore.restart(str(tmp_path / "core"))
    procs.adopt(h.pid)
    wait_for(lambda: proc_status(h.pid).get("State", "").startswith("T"))
    assert h.poll() is None
    os.kill(h.pid, signal.SIGCONT)
    assert h.wait(timeout=10) == 0


def test_high_fds_and_queued_pipe_under_a_lower_limit(procs, tmp_path):
    """fds 900/901 (a pipe holding 3 bytes) come back at their numbers although
    rcore runs with RLIMIT_NOFILE 256; the process gets its own limit back."""
    from rcore.linux import pipes
    r, w = os.pipe()
    os.write(w, b"xyz")
    hi_r, hi_w = os.dup2(r, 900), os.dup2(w, 901)
    try:
        p = procs.start(["sleep", "2"], pass_fds=[900, 901])
    finally:
        for fd in (r, w, hi_r, hi_w):
            os.close(fd)
    wait_for(lambda: proc_status(p.pid).get("State", "").startswith("S"))
    limit = open(f"/proc/{p.pid}/limits").read()
    checkpoint_and_kill(p, tmp_path / "core")
    env = dict(os.environ, PYTHONPATH=SRC)
    res = subprocess.run([sys.executable, "-m", "rcore", "restart", "--detach",
                          str(tmp_path / "core")], env=env, capture_output=True, text=True,
                         timeout=30, preexec_fn=lambda: resource.setrlimit(
                             resource.RLIMIT_NOFILE,
                             (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1])))
    assert res.returncode == 0, res.stderr
    pid = int(res.stdout)
    procs.adopt(pid)
    assert os.readlink(f"/proc/{pid}/fd/900") == os.readlink(f"/proc/{pid}/fd/901")
    assert pipes.peek_pipe(pid, 900)[0] == b"xyz"
    assert open(f"/proc/{pid}/limits").read() == limit
    os.kill(pid, signal.SIGKILL)


PY_BOTH = ("import sys, time\nfor i in range(40):\n    print('out', i, flush=True)\n"
           "    print('err', i, file=sys.stderr, flush=True)\n    time.sleep(0.02)")


def test_stdout_and_stderr_redirected_to_one_file(procs, tmp_path):
    p = procs.start([sys.executable, "-c", PY_BOTH])
    wait_lines(p.out_path, 10)
    checkpoint_and_kill(p, tmp_path / "core")
    both = tmp_path / "both.txt"
    res = rcore_cmd("restart", "--stdout", both, "--stderr", both, tmp_path / "core")
    assert res.returncode == 0, res.stderr
    lines = read_lines(both)
    first = int(lines[0].split()[1])
    want = [f"{s} {i}" for i in range(first, 40) for s in ("out", "err")]
    assert lines in (want, want[1:])       # it may have been checkpointed between the two


NOBODY_SCRIPT = """
cd "$1"
sleep 1 > out 2>&1 < /dev/null &
P=$!
while [ "$(cut -d' ' -f3 /proc/$P/stat)" != S ]; do :; done
/usr/bin/python3 -m rcore dump $P -o c.core --kill > /dev/null || exit 9
wait $P 2> /dev/null
/usr/bin/python3 -m rcore restart c.core 2> same.err
echo "same=$?"
/usr/bin/python3 -m rcore restart --any-pid c.core
echo "any=$?"
"""


def test_unprivileged_restart_needs_any_pid(tmp_path):
    """An ordinary user cannot choose PIDs: restart says so and --any-pid works
    (the whole round trip runs as nobody)."""
    if os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"):
        pytest.skip("needs root (to become nobody) and a system python3")
    work = tempfile.mkdtemp(prefix="rcore-test-")
    try:
        os.chmod(work, 0o777)
        res = subprocess.run(["bash", "-c", NOBODY_SCRIPT, "bash", work],
                             env=dict(os.environ, PYTHONPATH=SRC), capture_output=True,
                             text=True, timeout=60, user=65534, group=65534, extra_groups=[])
        same_err = open(os.path.join(work, "same.err")).read()
    finally:
        shutil.rmtree(work)
    assert res.stdout.split() == ["same=1", "any=0"], res.stdout + res.stderr
    assert "needs root" in same_err and "--any-pid" in same_err


def test_children_are_said_at_dump_and_refused_at_restart(procs, tmp_path):
    # bash waiting for its child: restarted without it, `wait` gets ECHILD and the
    # script runs on as if the child had finished (issue 11's silent wrong result).
    p = procs.start(["bash", "-c", "sleep 1000 & echo started; wait; echo finished"])
    wait_lines(p.out_path, 1)
    kid = wait_for(lambda: children(p.pid), what="bash's child")[0]
    procs.pids.add(kid)                   # ended by the fixture
    core = tmp_path / "core"
    s = rcore.dump(p.pid, str(core), kill=True, children=False)
    p.wait(timeout=10)
    assert any(f"({kid})" in w and "child process" in w for w in s.warnings), s.warnings
    r = rcore_cmd("restart", "--detach", core)
    assert r.returncode == 1, r.stdout
    assert str(kid) in r.stderr and "--without-children" in r.stderr, r.stderr
    assert not os.path.exists(f"/proc/{p.pid}")
    r = rcore_cmd("restart", "--detach", "--without-children", core)
    assert r.returncode == 0, r.stderr
    procs.adopt(int(r.stdout.split()[-1]))
    assert f"({kid})" in r.stderr and "warning" in r.stderr


def test_parser_built_for_the_named_command_only():
    """The CLI builds only the sub-parser its arguments name (start-up time);
    --help and a mistyped command still see every command."""
    from rcore import cli
    from rcore.commands import NAMES as names
    def choices(argv):
        sub = next(a for a in cli.build_parser(argv)._actions if a.dest == "command")
        return sorted(sub.choices)
    assert choices(["dump", "1"]) == ["dump"]
    assert choices(["--help"]) == choices(["dumpp"]) == choices([]) == sorted(names)
    assert cli.build_parser(["dump", "12", "--stop"]).parse_args(["dump", "12", "--stop"]).stop
    r = rcore_cmd("dumpp", "1")
    assert r.returncode == 2 and all(n in r.stderr for n in names)
    r = rcore_cmd("--help")
    assert r.returncode == 0 and all(n in r.stdout for n in names)
