"""restart of a process tree: what it refuses and what it says (treerestart.py),
and pipes whose other end every process had closed (fds/pipe.py).  The
programs that come back whole are in test_tree_progs.py and
test_tree_programs.py."""

import os
import sys

from conftest import (SRC, all_children, dump_tree_and_kill, finish, read_lines, restart_tree,
                      start_tree, rcore_cmd, wait_for)

# A parent with one child; both sleep until killed.  The child's stdout is a pipe
# to the parent, which reads it.
FAMILY = r"""
import os, sys, time
r, w = os.pipe()
if os.fork() == 0:
    os.close(r)
    os.write(w, b"from the child\n")
    time.sleep(600)
    os._exit(0)
os.close(w)
print("ready", flush=True)
print(os.read(r, 100).decode().strip(), flush=True)
time.sleep(600)
"""


def released(pid, script="family.py"):
    """pid runs its checkpointed program again, no longer traced by rcore."""
    try:
        status = open(f"/proc/{pid}/status").read()
    except FileNotFoundError:
        return False
    # (before its execve, a process being made is a fork of rcore: its cmdline
    # is rcore's, and it is not traced yet either)
    return "\nTracerPid:\t0\n" in status and script.encode() in open(f"/proc/{pid}/cmdline", "rb").read()


def family(procs, tmp_path):
    script = tmp_path / "family.py"
    script.write_text(FAMILY)
    p = start_tree(procs, [sys.executable, str(script)], cwd=tmp_path)
    wait_for(lambda: "from the child" in read_lines(p.out_path), what="the family ready")
    core = tmp_path / "f.core"
    dump_tree_and_kill(p, core)
    return p, core


def test_refusals_name_what_to_do(procs, tmp_path):
    p, core = family(procs, tmp_path)
    (child,) = [n for n in os.listdir(tmp_path) if n.startswith("f.core.")]
    # a member's core alone: refused, naming the root's
    r = rcore_cmd("restart", tmp_path / child)
    assert r.returncode == 1
    assert f"is process {child.split('.')[-1]} of the tree checkpointed in f.core" in r.stderr
    # --any-pid is for one process
    r = rcore_cmd("restart", "--any-pid", core)
    assert r.returncode == 1 and "--pid-namespace" in r.stderr, r.stderr
    # restore of a tree's root into a live process would roll back only it
    r = rcore_cmd("restore", os.getpid(), core)
    assert r.returncode == 1 and "the others would not be rolled back" in r.stderr, r.stderr
    # info says what restart does with the pipe between the two: one pipe again
    r = rcore_cmd("info", tmp_path / child)
    assert r.returncode == 0
    pipe = [line for line in r.stdout.splitlines() if " pipe " in line]
    assert pipe, r.stdout
    after = r.stdout.splitlines()[r.stdout.splitlines().index(pipe[0]) + 1]
    assert "a new pipe" in after and "rcore's own" not in after, after
    # and the tree does come back
    restarted = restart_tree(procs, core)
    wait_for(lambda: released(p.pid) and released(int(child.split(".")[-1])), timeout=60,
             what="the tree back and running")
    os.kill(p.pid, 9)
    assert finish(restarted, 60) == 128 + 9


# A reader whose writer had exited and closed the pipe: after the restart it must
# read the queued bytes and then end of file, not rcore's own stdin.
READER = r"""
import os, sys, time
print("ready", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
data = sys.stdin.buffer.read()
print("read", len(data), data[:20], flush=True)
"""


def test_pipe_whose_writer_had_exited_ends_after_its_bytes(procs, tmp_path):
    script = tmp_path / "reader.py"
    script.write_text(READER)
    go = tmp_path / "go"
    r_fd, w_fd = os.pipe()
    os.write(w_fd, b"queued bytes\n")
    p = start_tree(procs, [sys.executable, str(script), str(go)], stdin=r_fd, cwd=tmp_path)
    os.close(r_fd)
    os.close(w_fd)          # nobody holds the write end any more
    wait_for(lambda: "ready" in read_lines(p.out_path), what="the reader ready")
    core = tmp_path / "r.core"
    dumped = dump_tree_and_kill(p, core)
    assert "other end" not in dumped.stderr, dumped.stderr
    info = rcore_cmd("info", core).stdout
    assert "its other end closed" in info, info
    go.touch()
    # rcore's own stdin is a pipe that stays open: given that, the reader would
    # wait forever (finish() fails the test after 60 s)
    r_keep, w_keep = os.pipe()
    try:
        restarted = procs.start([sys.executable, "-m", "rcore", "restart", str(core)],
                                stdin=r_keep, env=dict(os.environ, PYTHONPATH=SRC),
                                start_new_session=True)
        status = finish(restarted, 60)
    finally:
        os.close(r_keep)
        os.close(w_keep)
    assert status == 0, read_lines(restarted.out_path)
    assert "read 13 b'queued bytes\\n'" in read_lines(p.out_path)


# A pre-forking server: the master's listening socket is shared by two workers
# (one open file description in three processes), each counting its requests.
PREFORK = r"""
import os, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as servers do
s.bind(("127.0.0.1", 0))
s.listen(16)
kids = []
for i in range(2):
    pid = os.fork()
    if pid == 0:
        n = 0
        while True:
            c, _ = s.accept()
            n += 1
            c.sendall(f"{os.getpid()} {n}\n".encode())
            c.close()
    kids.append(pid)
print("port", s.getsockname()[1], flush=True)
for k in kids:
    os.waitpid(k, 0)
"""


def ask(port):
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
        pid, n = c.makefile().readline().split()
    return int(pid), int(n)


def test_preforked_server_workers_share_their_socket_again(procs, tmp_path):
    script = tmp_path / "prefork.py"
    script.write_text(PREFORK)
    p = start_tree(procs, [sys.executable, str(script)], cwd=tmp_path)
    wait_for(lambda: any(line.startswith("port") for line in read_lines(p.out_path)),
             what="the server listening")
    port = int(read_lines(p.out_path)[0].split()[1])
    workers = set(all_children(p.pid))
    assert len(workers) == 2
    served = {}
    for _ in range(6):
        pid, n = ask(port)
        served[pid] = n
    core = tmp_path / "server.core"
    dump_tree_and_kill(p, core)
    # the workers' socket is the master's open file description
    assert "shared with process" in rcore_cmd("info", f"{core}.{min(workers)}").stdout
    restart_tree(procs, core)

    def serving():
        try:
            return ask(port)
        except ConnectionRefusedError:
            return None
    first = wait_for(serving, timeout=60, what="the server back")
    after = {first[0]: [first[1]]}
    for _ in range(11):
        pid, n = ask(port)
        after.setdefault(pid, []).append(n)
    # the same workers, on the same port, each counting on from where it was (the
    # kernel may have given every connection before the dump to one of them)
    assert set(served) <= workers and set(after) <= workers
    for pid, counts in after.items():
        assert counts[0] > served.get(pid, 0) and counts == sorted(counts), (served, after)


# A process group whose leader has exited and been reaped: b stays in a's group.
ORPHANED_GROUP = r"""
import os, sys, time
a = os.fork()
if a == 0:
    os.setpgid(0, 0)
    time.sleep(0.5)
    os._exit(0)
time.sleep(0.1)
b = os.fork()
if b == 0:
    os.setpgid(0, a)
    time.sleep(600)
    os._exit(0)
os.waitpid(a, 0)
print("ready", a, b, os.getpgid(b), flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
print("after", os.getpgid(b), os.path.exists(f"/proc/{a}"), flush=True)
os.kill(b, 9)
os.waitpid(b, 0)
"""


def test_group_whose_leader_had_exited(procs, tmp_path):
    script, go = tmp_path / "groups.py", tmp_path / "go"
    script.write_text(ORPHANED_GROUP)
    p = start_tree(procs, [sys.executable, str(script), str(go)], cwd=tmp_path)
    wait_for(lambda: read_lines(p.out_path)[:1] and read_lines(p.out_path)[0].startswith("ready"),
             what="the group made")
    _, a, b, pgid = read_lines(p.out_path)[0].split()
    assert pgid == a
    core = tmp_path / "g.core"
    dump_tree_and_kill(p, core)
    restarted = restart_tree(procs, core)
    wait_for(lambda: released(int(b), "groups.py") or restarted.poll() is not None,
             timeout=60, what="b back")
    assert released(int(b), "groups.py"), "\n".join(read_lines(restarted.out_path))
    # b is in group a again, and no process a exists (the stand-in is gone)
    assert os.getpgid(int(b)) == int(a) and not os.path.exists(f"/proc/{a}")
    go.touch()
    assert finish(restarted, 60) == 0
    assert f"after {a} False" in read_lines(p.out_path)
