"""restart of a process tree: the root's core names every process (RCORE_TREE,
tree.py); each comes back as restart.py brings back one, made by its own
parent so that the links are the kernel's (treespawn.py).

    check      every member core: as restart checks one (owner, identities,
               values), plus: it is the process the tree names, every PID and
               TID of the tree is free (or --pid-namespace), every process
               group and session can be made again
    plan       every descriptor of every process with one fds.TreeFiles: pipes
               and socket pairs between processes are one pipe, one pair; an
               open file description shared across processes is one
               description (one offset)
    spawn      the tree of placeholders: PIDs, parents, sessions, groups, exit
               and parent-death signals, zombies (treespawn.py)
    build      each process as build_stopped does; then groups whose
               leader was made after a member are joined (injected setpgid)
    release    every plan committed, every process let go, children first

A failure kills every process made so far: nothing half-built runs."""

import os
import signal

from . import fds, identity, owner, shm, spawn, sysvipc, treespawn
from .restart import (CoreFile, Restarted, build_stopped, check_restartable, clocks_for,
                      creds_to_take, plan_cwd, release_built)
from .errors import NotPermitted, Unsupported
from .interrupts import signals_held
from .linux import inject, procfs
from .linux.inject import Injector
from .tree import member_path


def restart_tree(core, tree, path, *, detach=False, lazy=False, stdin=None, stdout=None,
                 stderr=None, skip_unsupported=False, host_clocks=False, inherit=None,
                 progress=None, tcp_established=False, pid_namespace=False):
    """Restart the tree whose root's core is `core` (opened from `path`); returns
    the root's Restarted handle once every process runs.  tree: the core's
    (tree.Tree), or one of the root alone (tree.alone)."""
    if os.geteuid() != 0:
        raise NotPermitted("restarting a process tree needs root: every process is made "
                           "with its PID (clone3 set_tid, CAP_CHECKPOINT_RESTORE)")
    cores = {tree.root: core}
    try:
        for m in tree.processes:
            if not m.zombie and m.pid != tree.root:
                cores[m.pid] = CoreFile(member_path(path, m))
        speakers = {pid: _check_member(c, tree.member(pid)) for pid, c in cores.items()}
        nodes = _nodes(tree, cores)
        if not pid_namespace:
            stand_ins = [g for n in nodes.values() for g in n.group_leaders]
            try:
                spawn.check_pids_free([t for m in tree.processes for t in m.tids] + stand_ins)
            except spawn.PidTaken as err:
                raise spawn.PidTaken(err.pid, hint="restart with --pid-namespace") from None
        files = fds.TreeFiles([c.state for c in cores.values()])
        plans = {}
        made = []
        try:
            for m in tree.processes:
                if m.zombie:
                    continue
                proc = cores[m.pid].state
                root = m.pid == tree.root
                with owner.as_owner(speakers[m.pid]):
                    plans[m.pid] = fds.plan_files(
                        proc, (stdin, stdout, stderr) if root else (None, None, None),
                        skip_unsupported, cores[m.pid].read, inherit if root else None,
                        tcp_established, tree=files)
                    plan_cwd(proc, plans[m.pid])
                nodes[m.pid].fds = plans[m.pid].fds
            # Shared memory objects once for the tree (shm.py): SysV ones first,
            # since a segment recreated there is filled from the mappings.
            registry = {}
            with owner.as_owner(speakers[tree.root]):
                made = sysvipc.restore(core.state.sysvipc, registry, plans[tree.root].warnings)
            for pid, plan in plans.items():
                with owner.as_owner(speakers[pid]):
                    plan.mappings = shm.map_sources(plan, plan.mappings, cores[pid].read,
                                                    registry)
            with signals_held():
                return _make(tree, cores, plans, nodes, speakers, detach, lazy, host_clocks,
                             pid_namespace, progress)
        except BaseException:
            sysvipc.undo(made)
            raise
        finally:
            for plan in plans.values():
                plan.close()
    finally:
        for c in cores.values():
            if c is not core:
                c.close()


def _check_member(core, member):
    speaker = check_restartable(core, any_pid=True)
    proc = core.state
    if proc.pid != member.pid or sorted(t.tid for t in proc.threads) != sorted(member.tids):
        raise Unsupported(f"{core.path} is not the core of process {member.pid} of the tree "
                          f"(it holds process {proc.pid})")
    return speaker


def _nodes(tree, cores):
    """treespawn.Node of every process, linked as the tree says; raises
    Unsupported for a session that cannot be made again."""
    root = tree.member(tree.root)
    pids = {m.pid for m in tree.processes}
    nodes = {}
    orphaned = {}               # process group whose leader is gone -> its session
    for m in tree.processes:
        if m.sid == m.pid:
            leader, group = True, 0
        elif m.pgid == m.pid or m.pgid in pids:
            leader, group = False, m.pgid
        elif m.pgid == root.pgid:
            leader, group = False, -1       # the root's group at restart
        else:
            # Its leader has exited (a shell job whose first process was
            # reaped): a stand-in leads the group while the members join it.
            leader, group = False, m.pgid
            orphaned.setdefault(m.pgid, m.sid)
        if m.sid != m.pid and m.sid != root.sid and m.sid not in pids:
            raise Unsupported(f"process {m.pid} is in session {m.sid}, whose leader is not "
                              "part of the checkpoint: the session cannot be made again")
        node = treespawn.Node(pid=m.pid, session_leader=leader, group=group,
                              exit_signal=m.exit_signal or 0, pdeath_signal=m.pdeath_signal,
                              zombie=m.zombie, exit_status=m.exit_status)
        if not m.zombie:
            proc = cores[m.pid].state
            node.exe = proc.exe.path
            node.argv = proc.cmdline or [proc.exe.path]
            node.creds = creds_to_take(proc)
        nodes[m.pid] = node
        if m.pid != tree.root:
            nodes[m.ppid].children.append(node)
    if nodes[tree.root].group == -1:
        nodes[tree.root].group = 0          # it stays in rcore's group, as one process does
    for group, sid in orphaned.items():
        # Made by the session's leader (every member is its descendant), or by
        # the root in the root's session.
        nodes[sid if sid in nodes else tree.root].group_leaders.append(group)
    return nodes


def warnings_of(tree):
    """What a tree restart does not carry, said at dump and at restart."""
    out = []
    for m in tree.processes:
        if m.exit_signal not in (0, signal.SIGCHLD) and m.pid != tree.root:
            out.append(f"process {m.pid}: its exit signal {signal.Signals(m.exit_signal).name} "
                       "becomes SIGCHLD (the kernel resets it when the restarted process "
                       "executes its program)")
    return out


def _make(tree, cores, plans, nodes, speakers, detach, lazy, host_clocks, pid_namespace,
          progress):
    root_proc = cores[tree.root].state
    warnings = list(warnings_of(tree))
    clocks = clocks_for(root_proc, host_clocks, warnings)
    root = nodes[tree.root]
    waited = treespawn.spawn_tree(root, detach=detach, clocks=clocks,
                                  pid_namespace=pid_namespace)
    if pid_namespace and not treespawn.has_own_proc(root.host_pid):
        warnings.append("the processes see the host's /proc (a mount namespace could not "
                        "be made): /proc/PID of their own PIDs names other processes")
    pidfd = waiter = None
    frozen = {}
    try:
        pidfd = os.pidfd_open(root.host_pid)
        if waited != root.host_pid:
            waiter = (waited, os.pidfd_open(waited))
        for m in tree.processes:
            if m.zombie:
                continue
            node, core = nodes[m.pid], cores[m.pid]
            identity.check_file(f"the executable {core.state.exe.path}",
                                procfs.path(node.host_pid, "exe"), core.state.exe,
                                speakers[m.pid] is None)
            owner.check_exec(speakers[m.pid], node.host_pid)
        _join_late_groups(tree, nodes, pid_namespace)
        for m in tree.processes:
            if m.zombie:
                continue
            node, plan = nodes[m.pid], plans[m.pid]
            # Thread IDs are kept in a namespace too (set_tid is per namespace).
            frozen[m.pid] = build_stopped(node.host_pid, cores[m.pid], plan, lazy,
                                                  True, progress if m.pid == tree.root else None,
                                                  commit=False)
            prefix = "" if m.pid == tree.root else f"process {m.pid}: "
            warnings += [prefix + w for w in plan.warnings]
        for plan in plans.values():
            plan.commit()
    except BaseException:
        for f in frozen.values():
            f.threads.clear()
        treespawn.kill_tree(root, waited if pid_namespace else None)
        for fd in (pidfd, waiter and waiter[1]):
            if fd is not None:
                os.close(fd)
        raise
    terminal = _terminal_to_give(tree, cores, plans, nodes)
    if terminal is not None:
        _set_foreground(terminal, root.host_pid)
    for m in reversed(tree.processes):
        if m.pid in frozen:
            release_built(frozen[m.pid], cores[m.pid].state, plans[m.pid])
    handle = Restarted(root.host_pid, pidfd, detach, warnings, waiter)
    if terminal is not None:
        handle.at_end.append(lambda: _set_foreground(terminal, os.getpgrp(), close=True))
    return handle


def _terminal_to_give(tree, cores, plans, nodes):
    """The root leads a process group of its own again (a shell's job), so it is
    not in rcore's: when it had its terminal in the foreground and rcore has
    it now, the root's group gets it, and rcore takes it back at the end, as a
    shell does.  Returns rcore's descriptor of that terminal, or None."""
    node = nodes[tree.root]
    if node.session_leader or node.group != tree.root:
        return None
    for f in cores[tree.root].state.files:
        tty = f.kind_state.get("tty") if f.kind == "chr" else None
        if tty and tty.get("foreground") and f.fd in plans[tree.root].fds:
            fd = plans[tree.root].fds[f.fd]
            try:
                if os.tcgetpgrp(fd) == os.getpgrp():
                    return os.dup(fd)
            except OSError:
                return None
    return None


def _set_foreground(fd, pgid, close=False):
    # A background process group calling tcsetpgrp gets SIGTTOU unless blocked.
    old = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTTOU])
    try:
        os.tcsetpgrp(fd, pgid)
    except OSError:
        pass
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        if close:
            os.close(fd)


def _join_late_groups(tree, nodes, pid_namespace):
    """A member made before its group's leader could not join it then: now that
    every process exists, it joins by an injected setpgid (still before its
    program runs)."""
    for m in tree.processes:
        node = nodes[m.pid]
        if m.zombie or node.session_leader or node.group <= 0:
            continue
        if procfs.read_stat(node.host_pid).pgrp == _host_group(nodes, node.group):
            continue
        with Injector(node.thread, inject.find_syscall_insn(node.host_pid)) as inj:
            got = inj.call("setpgid", 0, node.group, 0, 0, 0, check=False)
        if got < 0:
            raise Unsupported(f"process {m.pid} cannot join process group {node.group} "
                              f"again: {os.strerror(-got)}")


def _host_group(nodes, group):
    n = nodes.get(group)
    return n.host_pid if n and n.host_pid else group
