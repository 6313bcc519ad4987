"""treespawn: a tree of fresh processes with chosen PIDs, parents, process
groups and sessions, each stopped right after its execve (spawn.py does one).

    rcore --fork--> launcher [--unshare(PID)--> init (PID 1 of a new namespace)]
                      --clone3(set_tid=[root])--> root placeholder
    placeholder P:  setsid / setpgid as checkpointed; for each child C in order:
                    clone3(set_tid=[C], exit_signal=C's) and wait until C's own
                    subtree is made (C writes "r" on a pipe, or a zombie exits);
                    the exit signals of zombie children are taken (they were
                    blocked) so that none is delivered twice; then "r" to P's
                    parent; then as spawn.exec_when_told: wait for rcore's
                    "g" (rcore has seized it), descriptors, execve
    zombie Z:       setsid / setpgid, then exits with its checkpointed status
                    (its parent never reaps it: the program will)

Parents create their children, so parent links, exit signals and inherited
sessions are the kernel's own.  A process group whose leader is made after a
member (a younger sibling, a descendant) cannot be joined yet: the member's
`pgid_now` differs from what it wants, and restart joins it by an injected
setpgid once everything exists.  Placeholders are forks of a single-threaded
launcher (spawn._launch says why) and run only plain system calls.

If rcore dies before it has seized a placeholder, the placeholder reads end of
file on its "go" pipe and exits; after seizing, PTRACE_O_EXITKILL ends it.  A
placeholder that fails writes why on a pipe every placeholder shares, kills the
children it made and exits; its parent sees end of file instead of "r" and
does the same, up to rcore."""

import errno
import os
import signal

from .errors import RcoreError
from .linux import libc
from .linux.ptrace import Thread
from . import spawn, timens
from .record import field, record

CLONE_NEWPID = 0x20000000
CLONE_NEWNS = 0x00020000


@record
class Node:
    """What the tree spawner makes of one process of a checkpointed tree."""
    pid: int                    # checkpointed PID (in the new namespace with pid_namespace)
    exe: str = ""
    argv: list = field(default_factory=list)
    fds: dict = field(default_factory=dict)     # {number: rcore fd}
    creds: dict = None
    session_leader: bool = False    # setsid()
    group: int = 0                  # setpgid(0, group); 0: the parent's; -1: the root's
    exit_signal: int = signal.SIGCHLD
    pdeath_signal: int = 0
    zombie: bool = False
    exit_status: int = 0            # raw wait status of a zombie
    children: list = field(default_factory=list)
    # Process groups of its session whose leader had exited: a stand-in with
    # that PID leads each while the processes below join it, then exits.
    group_leaders: list = field(default_factory=list)
    # Filled by spawn_tree:
    host_pid: int = 0
    thread: Thread = None


class TreeSpawnFailed(RcoreError):
    pass


def walk(node):
    """Pre-order."""
    yield node
    for c in node.children:
        yield from walk(c)


class _Pipes:
    """rcore's side of each live process's go and exec-error pipes, and the
    pipes every process shares: `why` (a failure's words) and `ready` (the
    root's subtree is made)."""

    def __init__(self, root):
        self.go = {}        # pid -> (r, w)
        self.err = {}       # pid -> (r, w)
        for n in walk(root):
            if not n.zombie:
                self.go[n.pid] = os.pipe()
                self.err[n.pid] = os.pipe2(os.O_CLOEXEC)
        self.why = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.root_group = 0     # the launcher's group, set in the launcher
        self.ready = os.pipe2(os.O_CLOEXEC)

    def in_child(self):
        """In the launcher: give up every end only rcore may hold."""
        for r, w in self.go.values():
            os.close(w)
        os.close(self.why[0])
        os.close(self.ready[0])

    def in_rcore(self):
        for r, w in self.go.values():
            os.close(r)
        for r, w in self.err.values():
            os.close(w)
        os.close(self.why[1])
        os.close(self.ready[1])

    def close(self):
        for fd in [*(e for p in self.go.values() for e in p),
                   *(e for p in self.err.values() for e in p), *self.why, *self.ready]:
            try:
                os.close(fd)
            except OSError:
                pass


def spawn_tree(root, *, detach=False, clocks=None, pid_namespace=False, env=None):
    """Make every process of the tree `root` (a Node), live ones stopped after
    execve and seized (Node.thread, Node.host_pid), zombies exited.  Returns
    the PID rcore waits for: the root, or with pid_namespace the namespace's
    init (which exits when no process is left in it, with the root's status).
    Raises spawn.PidTaken, TreeSpawnFailed; on failure nothing is left alive."""
    pipes = _Pipes(root)
    waited = None
    try:
        launcher = os.fork()
        if launcher == 0:
            _launcher(root, pipes, detach, clocks, pid_namespace, env or {})
        pipes.in_rcore()
        os.waitpid(launcher, 0)
        ready = os.read(pipes.ready[0], 1)
        why = _read_why(pipes.why[0])
        if why.startswith("init "):         # with pid_namespace, the launcher says
            _, pid, why = why.split(" ", 2)
            waited = int(pid)
        if ready != b"r":
            raise _failure(why, root)
        if waited is None:
            waited = root.host_pid = root.pid
        _find_host_pids(root, waited if pid_namespace else None)
        for n in walk(root):
            if n.zombie:
                continue
            thread = Thread(n.host_pid, n.host_pid)
            thread.seize(spawn.SEIZE_OPTIONS)
            n.thread = thread
        for n in walk(root):
            if not n.zombie:
                os.write(pipes.go[n.pid][1], b"g")
        for n in walk(root):
            if not n.zombie:
                spawn.until_exec(n.thread, pipes.err[n.pid][0], n.exe)
        return waited
    except BaseException:
        kill_tree(root, waited if pid_namespace else None)
        raise
    finally:
        pipes.close()


def has_own_proc(host_pid):
    """Whether process host_pid runs in another mount namespace than rcore (its
    init mounted the namespace's own /proc there)."""
    return os.readlink(f"/proc/{host_pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")


def kill_tree(root, init_pid=None):
    """End every process made so far and reap what rcore may.  All are killed
    before any is waited for: a killed child stays a zombie until its parent,
    stopped under rcore, is gone too."""
    pids = [n.host_pid for n in walk(root) if n.host_pid] + ([init_pid] if init_pid else [])
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in pids:
        spawn.kill_and_reap(pid, reaped_elsewhere=pid != root.host_pid and pid != init_pid)


def _read_why(fd):
    try:
        return os.read(fd, 4096).decode(errors="replace")
    except BlockingIOError:
        return ""


def _failure(why, root):
    if why.startswith("EEXIST "):
        pid = int(why.split()[1])
        return spawn.PidTaken(pid)
    if why.startswith("EPERM "):
        return spawn.PidNotSettable(int(why.split()[1]))
    return TreeSpawnFailed(f"cannot make the process tree of {root.pid}: "
                           f"{why.strip() or 'a process of it exited'}")


def _find_host_pids(root, init_pid):
    """In a PID namespace the tree's PIDs are not the host's: walk the host's
    view down from init and match each process by its NSpid (innermost last)."""
    if init_pid is None:
        for n in walk(root):
            n.host_pid = n.pid
        return
    by_ns = {}
    todo = [init_pid]
    while todo:
        host = todo.pop()
        for tid in os.listdir(f"/proc/{host}/task"):
            with open(f"/proc/{host}/task/{tid}/children") as f:
                todo += [int(c) for c in f.read().split()]
        with open(f"/proc/{host}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    by_ns[int(line.split()[-1])] = host
    for n in walk(root):
        if n.pid not in by_ns:
            raise TreeSpawnFailed(f"process {n.pid} is missing from the new namespace")
        n.host_pid = by_ns[n.pid]


# --- in the launcher, init and placeholders: plain calls, never return --------

def _launcher(root, pipes, detach, clocks, pid_namespace, env):
    why_w = pipes.why[1]
    try:
        pipes.in_child()
        if detach:
            os.setsid()
        pipes.root_group = os.getpgrp()
        if clocks is not None:
            timens.enter_new(clocks)
        if pid_namespace:
            libc.unshare(CLONE_NEWPID)
            got = spawn.clone_with_pid(None, spawn.CLONE_PARENT)
            if got == 0:
                _init(root, pipes, env)
            os.write(why_w, f"init {got} ".encode())     # (before any failure's words)
        else:
            got = spawn.clone_with_pid(root.pid, 0 if detach else spawn.CLONE_PARENT)
            if got == 0:
                _placeholder(root, pipes.ready[1], pipes, env)
    except OSError as err:
        _say(why_w, err, root.pid)
    except BaseException as err:
        os.write(why_w, f"launcher: {err}".encode())
    os._exit(0)


def _init(root, pipes, env):
    """PID 1 of the tree's namespace: makes the root, then reaps whatever ends
    in the namespace; exits with the root's status once nothing is left (its
    death would kill every process still in the namespace)."""
    status = None
    try:
        libc.prctl(libc.PR_SET_NAME, b"rcore-init")
        try:
            # Its own /proc, so that a process's /proc/PID is its own (getpid()
            # gives the namespace's PIDs); mounts made in there stay in there.
            libc.unshare(CLONE_NEWNS)
            libc.mount("none", "/", None, libc.MS_REC | libc.MS_PRIVATE)
            libc.mount("proc", "/proc", "proc")
        except OSError:
            pass        # the host's /proc then: said by restart (proc_not_mounted)
        got = spawn.clone_with_pid(root.pid, 0)
        if got == 0:
            _placeholder(root, pipes.ready[1], pipes, env)
        root_pid = got
        spawn.close_all_but(set())
        while True:
            try:
                pid, st = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            if pid == root_pid:
                status = st
    except OSError as err:
        _say(pipes.why[1], err, root.pid)
    except BaseException:
        pass
    if status is None:
        os._exit(126)
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)


def _say(why_w, err, pid):
    name = errno.errorcode.get(err.errno or 0, "EIO")
    try:
        os.write(why_w, f"{name} {pid} {err.strerror or err}".encode())
    except OSError:
        pass


def _placeholder(node, ready_w, pipes, env, parents_ready_w=None):
    """ready_w: where to say "r"; parents_ready_w: the parent's own, inherited,
    closed so that only the parent's death makes end of file on it."""
    made = []
    try:
        for fd in {pipes.ready[1], parents_ready_w} - {ready_w, None}:
            try:
                os.close(fd)
            except OSError:
                pass        # a grandparent's, closed by the parent already
        signal.pthread_sigmask(signal.SIG_SETMASK, signal.valid_signals())
        if node.session_leader:
            os.setsid()
        elif node.group:
            try:
                os.setpgid(0, pipes.root_group if node.group == -1 else node.group)
            except OSError:
                pass            # its leader comes later: joined once all exist
        stand_ins = [_stand_in(group) for group in node.group_leaders]
        for child in node.children:
            r, w = os.pipe2(os.O_CLOEXEC)
            try:
                got = spawn.clone_with_pid(child.pid, 0, child.exit_signal)
            except OSError as err:
                _say(pipes.why[1], err, child.pid)
                raise _Quiet() from None
            if got == 0:
                os.close(r)
                _placeholder(child, w, pipes, env, ready_w)
            os.close(w)
            made.append(got)
            ok = os.read(r, 1)
            os.close(r)
            if ok != b"r" and not child.zombie:
                # It said why, unless something killed it: say that then.
                _, status = os.waitpid(got, 0)
                if os.WIFSIGNALED(status):
                    os.write(pipes.why[1], f"process {child.pid} was killed by signal "
                                           f"{os.WTERMSIG(status)} as it was made; ".encode())
                raise _Quiet()
        for pid, w in stand_ins:        # every member has joined: the groups go on
            os.write(w, b"x")           # without a leader, as at the checkpoint
            os.close(w)
            os.waitpid(pid, 0)
        _take_pending_signals()
        if node.zombie:
            _exit_as(node.exit_status)
        os.write(ready_w, b"r")
        os.close(ready_w)
    except _Quiet:
        _abandon(made)
    except OSError as err:
        _say(pipes.why[1], err, node.pid)
        _abandon(made)
    except BaseException as err:
        try:
            os.write(pipes.why[1], f"process {node.pid}: {err}".encode())
        finally:
            _abandon(made)
    go_r, _ = pipes.go[node.pid]
    err_w = pipes.err[node.pid][1]
    spawn.exec_when_told(node.exe, node.argv, env, node.fds, go_r, None, err_w, node.creds,
                 node.pdeath_signal)


def _stand_in(group):
    """A process with PID `group` leading that process group until told to go:
    (its PID, the pipe to tell it).  It holds nothing of the tree's."""
    r, w = os.pipe()
    pid = spawn.clone_with_pid(group, 0)
    if pid == 0:
        try:
            spawn.close_all_but({r})
            os.setpgid(0, 0)
            os.read(r, 1)
        finally:
            os._exit(0)
    os.close(r)
    # The parent too, so that the group exists before the members it makes next
    # join it (the stand-in's own setpgid may not have run yet).
    os.setpgid(pid, pid)
    return pid, w


class _Quiet(Exception):
    """A child failed and said why already."""


def _abandon(made):
    for pid in made:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    os._exit(1)


def _take_pending_signals():
    """The exit signals of zombie children arrived while blocked: take them,
    so that only the checkpoint's pending signals are queued again."""
    while True:
        pending = signal.sigpending()
        if not pending:
            return
        signal.sigtimedwait(pending, 0)


def _exit_as(status):
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        import resource
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.kill(os.getpid(), sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)
