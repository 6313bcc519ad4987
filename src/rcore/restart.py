"""restart: a checkpoint comes back as a new process.

    check      the core is rcore's, of this architecture and kernel (vDSO), its
               executable and mapped files are unchanged, its descriptors can be
               rebuilt, its PID and TIDs are free, the user may have its creds
    spawn      a fresh process of the executable with the checkpointed PID,
               descriptors installed, stopped right after execve (spawn.py)
    rebuild    exec-time rseq dropped, address space made the checkpoint's and
               memory filled (rebuild.py), [vdso]/[vvar*] moved, mm fields set
               (mm.py); with lazy, large anonymous regions are mapped from the
               core file instead of copied (see rebuild.map_from_core)
    threads    created with their TIDs (apply.create_thread) and given their
               registers, XSAVE, masks, sigaltstack, robust list, rseq
    process    handlers, cwd, umask (apply.py), close-on-exec flags
               (fds/), POSIX timers with their IDs (timers.py), rlimits,
               itimers, personality, dumpable,
               no_new_privs (attrs.py), pending signals queued again with their
               siginfo
    release    the workspace unmapped, final registers set, every thread detached

Any failure after spawning kills the half-built process and reaps it: nothing is
left behind (PTRACE_O_EXITKILL covers rcore itself dying).

A core with a tree (RCORE_TREE) restarts the whole tree: treerestart.py.

Not carried over (README, restart): child processes of a core dumped with
--no-children (a restarted process waiting for one gets ECHILD), sockets and
pidfds of other processes (refused,
or disconnected with skip_unsupported; see fds/), events queued in an inotify,
pipes to other processes except on fds 0-2 (those get rcore's own), SysV semaphore undo
adjustments (sysvipc.py), seccomp filters, namespaces and chroot,
the process group and session (the process joins rcore's; detached, a session
of its own).  Time: CLOCK_MONOTONIC and BOOTTIME go on from their checkpointed
values in a time namespace (timens.py), unless host_clocks; relative timers and
sleeps resume with the time they had left."""

import os
import select
import signal

from . import (apply, arch, attrs, fds, identity, mm, owner, rebuild, rseq, settings,
               shm, spawn, sysvipc, timens, timers, validate, vdso)
from .elf.reader import CoreFile
from .errors import CoreFormatError, Incompatible, Unsupported
from .interrupts import signals_held
from .linux import inject, procfs, ptrace
from .linux.inject import Injector
from .linux.ptrace import FrozenProcess
from .record import replace
from .tree import alone, children_not_carried

ARCH = arch.host()
PAGE = ARCH.PAGE_SIZE


class Restarted:
    """A restarted process.  `pid`; wait() returns its exit status like
    subprocess (negative: killed by that signal); send_signal(sig).  When
    detached, it is not rcore's child: wait() only waits for it to end and
    returns None."""

    def __init__(self, pid, pidfd, detached, warnings, waiter=None):
        self.pid = pid
        self.detached = detached
        self.warnings = warnings
        self.returncode = None
        self._pidfd = pidfd         # opened while the process was still stopped
        # (pid, pidfd) of what wait() waits for instead: a PID namespace's init
        # (treespawn.py), which ends with the root's status once all have ended.
        self._waiter = waiter
        self.at_end = []            # called once it has ended (the terminal back)

    def send_signal(self, sig):
        if self._pidfd is not None and self.returncode is None:
            try:
                signal.pidfd_send_signal(self._pidfd, sig)
            except ProcessLookupError:
                pass

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def poll(self):
        return self.wait(timeout=0)

    def wait(self, timeout=None):
        if self.returncode is not None or self._pidfd is None:
            return self.returncode
        pid, pidfd = self._waiter or (self.pid, self._pidfd)
        if not select.select([pidfd], [], [], timeout)[0]:
            if timeout is not None and timeout > 0:
                raise TimeoutError(f"process {self.pid} is still running")
            return None
        if not self.detached:
            while True:
                try:
                    _, status = os.waitpid(pid, 0)
                    break
                except InterruptedError:
                    continue
                except ChildProcessError:
                    # Reaped by the ptrace wait of a checkpoint taken as it ended.
                    status = ptrace.EXITED.pop(pid, None)
                    if status is None:
                        raise
                    break
            self.returncode = os.waitstatus_to_exitcode(status)
        for step in self.at_end:
            step()
        self.at_end = []
        self.close()
        return self.returncode

    def close(self):
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        if self._waiter:
            os.close(self._waiter[1])
            self._waiter = None

    def __repr__(self):
        return f"Restarted(pid={self.pid}, returncode={self.returncode})"


# --- checks, before anything is built ----------------------------------------------

def check_restartable(core, any_pid=False):
    """Everything that can be checked without starting a process.  Returns the
    owner.Owner the core speaks for (None: a core rcore trusts).  Raises
    CoreFormatError, Unsupported, Incompatible, NotPermitted or spawn.PidTaken."""
    proc = core.state
    if not core.has_rcore:
        raise Unsupported(f"{core.path} was not written by rcore (a kernel or gdb core "
                          "lacks the kernel state a restart needs)")
    if core.arch is not ARCH:
        raise Incompatible(f"{core.path} is a core of {core.arch.NAME}, this is {ARCH.NAME}")
    speaker = owner.of_core(core)
    owner.check_creds(speaker, core)
    core.require_complete()
    validate.check_checkpoint(core)
    try:
        settings.check(proc.settings)
    except ValueError as err:
        raise CoreFormatError(core.path, f"bad process settings: {err}") from None
    with owner.as_owner(speaker):
        _check_exe(proc, speaker is None)
        _check_mapped_files(proc, speaker is None)
        _check_fd_identities(proc, speaker is None)
        apply.check_process_state(replace(proc, cwd="") if _cwd_deleted(proc) else proc)
    vdso.check_vdso(core)
    _check_creds(proc)
    timers.check(proc.timers, {t.tid for t in proc.threads})
    if not any_pid:
        spawn.check_pids_free([t.tid for t in proc.threads])
    return speaker


def _check_exe(proc, trusted):
    exe = proc.exe
    if exe is None:
        raise Unsupported("the core does not name its executable")
    identity.check_file(f"the executable {exe.path}", exe.path, exe, trusted)


def _check_mapped_files(proc, trusted):
    for m in proc.mappings:
        if not rebuild.is_file_mapping(m):
            continue
        if m.deleted and not (m.stored == "all" and (not m.shared
                                                    or fds.memfd.is_memfd_mapping(m)
                                                    or shm.rebuildable(m))):
            raise Unsupported(f"the mapping {m.start:#x}-{m.end:#x} of the deleted file "
                              f"{m.path} cannot be rebuilt")
    identity.require_mappings_recorded(proc)
    for path, ident in proc.mapped_files.items():
        if any(m.path == path and m.deleted for m in proc.mappings):
            continue
        identity.check_file(f"the mapped file {path}", path, ident, trusted)


def _check_fd_identities(proc, trusted):
    """Files reopened by path (the fds kinds compare them as they open them) must
    have their identity recorded, or the comparison would be vacuous."""
    for f in proc.files:
        if f.kind == "file" and not f.deleted:
            identity.require_recorded(f"fd {f.fd} ({f.path})", f, trusted)


def creds_to_take(proc):
    """The uid/gid/groups the new process must take, or None (rcore's own)."""
    creds = proc.creds
    if not creds or not creds.get("uid"):
        return None
    mine = {"uid": list(os.getresuid()), "gid": list(os.getresgid()),
            "groups": sorted(os.getgroups())}
    want = {"uid": creds["uid"][:3], "gid": creds["gid"][:3],
            "groups": sorted(creds.get("groups", []))}
    return None if want == mine else want


def _check_creds(proc):
    want = creds_to_take(proc)
    if want and os.geteuid() != 0:
        raise Incompatible(f"the checkpointed process ran as uid {want['uid'][0]} gid "
                           f"{want['gid'][0]}; only root can restart it with other "
                           "credentials than its own")


# --- building -------------------------------------------------------------------



def restart(path, detach=False, any_pid=False, lazy=False, stdin=None, stdout=None,
            stderr=None, skip_unsupported=False, host_clocks=False, inherit=None,
            progress=None, tcp_established=False, without_children=False,
            pid_namespace=False):
    """Start the checkpoint in core file `path` as a new process; returns a
    Restarted handle once it runs.

    detach        the process is not the caller's child (it is reparented as a
                  daemon); otherwise wait() gives its exit status
    any_pid       take any free PID if the checkpointed one (or a TID) is in use;
                  glibc's cached TIDs are then stale: pthread_kill, raise() and
                  error-checking/robust mutexes of the restarted process break
    lazy          map large anonymous regions from the core file instead of
                  copying them (milliseconds for GiBs); see rebuild.map_from_core
                  for what that changes
    stdin/stdout/stderr  redirect a standard stream: a path, an fd or a file
    skip_unsupported     descriptors rcore cannot rebuild become disconnected
                  sockets (handle.warnings says which) instead of refusing; server
                  sockets are refused all the same (fds/__init__.py)
    inherit       {fd: a path or one of the caller's descriptors (int)}: what
                  checkpointed descriptor fd becomes instead of being rebuilt
                  (one the program inherited from what started it)
    host_clocks   the process sees the host's CLOCK_MONOTONIC and BOOTTIME, which
                  jumped by the time it was dead (or restarted near zero after a
                  reboot); by default it runs in a time namespace where they go
                  on from their checkpointed values (timens.py)
    tcp_established  established TCP connections captured by dump
                  --tcp-established come back alive (fds/tcp_repair.py);
                  otherwise they come back reset
    without_children  restart only the root of a checkpointed tree, or a process
                  dumped with --no-children that had children (refused
                  otherwise: a parent that waits for them gets ECHILD);
                  handle.warnings says so
    pid_namespace the tree (or process) comes back in a new PID namespace, under
                  a small init (PID 1 there), every process at its checkpointed
                  PID whatever the host's PIDs in use; wait() gives the root's
                  status once every process in it has ended"""
    core = CoreFile(path)
    tree = core.tree
    root = core.state.extra.get("tree_root")
    if root and not without_children:
        core.close()
        name = os.path.basename(path)
        suffix = f".{core.state.pid}"
        root_name = name[: -len(suffix)] if name.endswith(suffix) else f"the core of process {root}"
        raise Unsupported(f"{path} is process {core.state.pid} of the tree checkpointed in "
                          f"{root_name}; restart that core (or this process alone with "
                          "--without-children)")
    if pid_namespace and (tree is None or without_children):
        tree = alone(core.state, os.path.basename(path))
    if tree and not without_children and (len(tree.processes) > 1 or pid_namespace):
        from .treerestart import restart_tree
        try:
            if any_pid:
                raise Unsupported(f"{path} is a tree of {len(tree.processes)} processes, which "
                                  "keep their PIDs (--any-pid is for one process): restart it "
                                  "with --pid-namespace when a PID is taken")
            return restart_tree(core, tree, path, detach=detach, lazy=lazy, stdin=stdin,
                                stdout=stdout, stderr=stderr,
                                skip_unsupported=skip_unsupported, host_clocks=host_clocks,
                                inherit=inherit, progress=progress,
                                tcp_established=tcp_established, pid_namespace=pid_namespace)
        finally:
            core.close()
    try:
        speaker = check_restartable(core, any_pid)
        proc = core.state
        if proc.children and not without_children:
            raise Unsupported(children_not_carried(proc) + "; --without-children restarts "
                              "it all the same")
        # Descriptors, FIFOs, ghosts of deleted files, redirections and inherited
        # paths are opened as the core's owner; the process itself is its owner (spawn).
        with owner.as_owner(speaker):
            plan = fds.plan_files(proc, (stdin, stdout, stderr), skip_unsupported,
                                  core.read, inherit, tcp_established)
            made = []
            try:
                plan_cwd(proc, plan)
                # SysV objects first: a segment recreated there is filled from
                # the mappings.  One registry per tree (a single process here).
                registry = {}
                made = sysvipc.restore(proc.sysvipc, registry, plan.warnings)
                plan.mappings = shm.map_sources(plan, plan.mappings, core.read, registry)
            except BaseException:
                sysvipc.undo(made)
                plan.close()
                raise
        try:
            with signals_held():
                if proc.children:
                    plan.warnings.append(children_not_carried(proc))
                clocks = clocks_for(proc, host_clocks, plan.warnings)
                pid, same_tids = _spawn(proc, plan, detach, any_pid, clocks)
                pidfd = None
                try:
                    pidfd = os.pidfd_open(pid)
                    # What execve ran, not what the path named at the check.
                    identity.check_file(f"the executable {proc.exe.path}",
                                        procfs.path(pid, "exe"), proc.exe, speaker is None)
                    owner.check_exec(speaker, pid)
                    _build(pid, core, plan, lazy, same_tids, progress)
                    handle = Restarted(pid, pidfd, detach, list(plan.warnings))
                except BaseException:
                    spawn.kill_and_reap(pid)
                    if pidfd is not None:
                        os.close(pidfd)
                    raise
        except BaseException:
            sysvipc.undo(made)
            raise
        finally:
            plan.close()
    finally:
        core.close()
    return handle


def _cwd_deleted(proc):
    return proc.cwd.endswith(fds.ghost.DELETED)


def plan_cwd(proc, plan):
    """A working directory deleted at the checkpoint comes back as an empty
    directory, made in a private place and removed before the process runs
    (fds/ghost.py): the process's cwd is a deleted directory again."""
    if _cwd_deleted(proc):
        path = proc.cwd[: -len(fds.ghost.DELETED)]
        # The process enters it itself, with its own credentials.
        uid, gid = (proc.creds.get("uid") or [os.geteuid()] * 4)[3], \
            (proc.creds.get("gid") or [os.getegid()] * 4)[3]
        proc.cwd, _ = fds.ghost.make(plan, path, ("cwd", path), lambda p: os.mkdir(p, 0o700),
                                     {"mode": 0o700, "uid": uid, "gid": gid})
        os.chmod(os.path.dirname(proc.cwd), 0o711)


def clocks_for(proc, host_clocks, warnings):
    """The clocks the process goes on from, or None: the host's."""
    if host_clocks or not proc.clocks:
        return None
    why_not = timens.unavailable()
    if why_not:
        warnings.append(why_not)
        return None
    return proc.clocks


def _spawn(proc, plan, detach, any_pid, clocks):
    """Start the executable as the checkpointed PID, or with any_pid as any PID
    when that one or a TID is in use.  Returns (pid, whether TIDs are kept)."""
    argv = proc.cmdline or [proc.exe.path]
    tids = [t.tid for t in proc.threads]
    same = not (any_pid and any(spawn.pid_in_use(t) for t in tids))
    creds = creds_to_take(proc)
    try:
        thread = spawn.spawn_stopped(proc.exe.path, argv, pid=proc.pid if same else None,
                                     fds=plan.fds, detach=detach, creds=creds,
                                     clocks=clocks)
    except (spawn.PidTaken, spawn.PidNotSettable):
        if not any_pid:
            raise
        same = False
        thread = spawn.spawn_stopped(proc.exe.path, argv, fds=plan.fds, detach=detach,
                                     creds=creds, clocks=clocks)
    return thread.tid, same


def _build(pid, core, plan, lazy, same_tids, progress):
    """Make the stopped, freshly executed process pid the checkpoint's, and let
    it run."""
    release_built(build_stopped(pid, core, plan, lazy, same_tids, progress), core.state, plan)


def release_built(frozen, proc, plan):
    # A process checkpointed while stopped (SIGSTOP, Ctrl-Z) comes back stopped.
    frozen.release(signal.SIGSTOP if proc.state == "T" else 0)
    plan.released(frozen.pid)


def build_stopped(pid, core, plan, lazy, same_tids, progress, commit=True):
    """Everything but the release: returns the FrozenProcess, every thread
    stopped with its checkpointed registers and mask.  commit=False: the
    caller commits the plan (a tree: once every process is built, since a
    ghost file one process maps may be another's)."""
    proc = core.state
    frozen = FrozenProcess(pid, options=spawn.SEIZE_OPTIONS)
    leader = ptrace.Thread(pid, pid)
    frozen.threads[pid] = leader
    try:
        # Every signal stays blocked until the end (threads inherit the mask):
        # delivered while calls are injected, a handler would run on borrowed
        # registers, and the pending signals queued below must wait for the
        # checkpointed masks.
        leader.set_sigmask(inject.BLOCK_ALL)
        inj = Injector(leader, inject.find_syscall_insn(pid))
        rseq.drop_registration(inj)
        avoid = [(m.start, m.end) for m in proc.mappings]
        ws = rebuild.Workspace.create(inj, pid, avoid)
        mappings = [_as_anonymous(m) for m in plan.mappings]
        summary = rebuild.rebuild_address_space(pid, inj, ws, mappings, core, mm=None,
                                                progress=progress, map_core=lazy)
        plan.warnings += summary.skipped
        mm.apply_mm_map(inj, ws, proc)
        settings.apply_memory(inj, proc.mappings, proc.settings)

        threads = [(leader, proc.threads[0])]
        for ts in proc.threads[1:]:
            t = apply.create_thread(frozen, inj, ws, ts, same_tid=same_tids)
            threads.append((t, ts))
        # The fresh process has every signal at its default (spawn.py): only the
        # others need an injected rt_sigaction.  Descriptors are in place already.
        changed = [sa for sa in proc.sigactions if (sa.handler, sa.flags, sa.mask) != (0, 0, 0)]
        plan.warnings += apply.apply_process_state(
            pid, inj, ws, replace(proc, sigactions=changed), files_plan=apply.FilesPlan())
        tids = {ts.tid: t.tid for t, ts in threads}
        fds.finish(inj, ws, plan, tids)
        timers.create(inj, ws, proc.timers, tids)
        plan.warnings += timers.warnings(proc.timers)
        attrs.apply_personality(inj, proc.personality)
        attrs.apply_prctl_flags(inj, proc)
        settings.apply_process(inj, pid, proc.settings)
        for t, ts in threads:
            if ts.comm:
                apply.set_thread_name(t, ws, ts.comm)
        final = {}
        for t, ts in threads:
            ts = _at_rseq_abort(core, ts)
            plan.warnings += apply.apply_thread_state(t, ts, ws, full=True,
                                                      restart_block_kept=False)
            final[t.tid] = (t.get_regs(), ts.sigmask)
            t.set_sigmask(inject.BLOCK_ALL)
        for t, ts in threads:
            if ts.pending:
                with Injector(t, ws.syscall_addr) as tinj:
                    attrs.queue_signals(tinj, ws, pid, t.tid, ts.pending, shared=False)
        attrs.queue_signals(inj, ws, pid, pid, proc.shared_pending, shared=True)
        # rlimits late: RLIMIT_DATA/AS/NOFILE could refuse the calls above.
        lowered = attrs.apply_rlimits(inj, ws, proc.rlimits)
        plan.warnings += [f"rlimit {n}: the hard limit could not be raised (it needs "
                          "CAP_SYS_RESOURCE)" for n in lowered]
        attrs.apply_itimers(inj, ws, proc.itimers)     # last: their time runs from here
        timers.arm(inj, ws, proc.timers)
        ws.remove(inj)
        if hasattr(progress, "finish"):
            progress.finish()       # before the terminal is the program's again
        for t, _ in threads:
            regs, mask = final[t.tid]
            t.set_regs(regs)
            t.set_sigmask(mask)
        if commit:
            plan.commit()
    except BaseException:
        frozen.threads.clear()          # killed by the caller, never released alive
        raise
    return frozen


def _as_anonymous(m):
    """A private mapping of a file deleted since it was mapped cannot be mapped
    again; when the core holds all of it, anonymous memory with the same bytes
    does (check_restartable refuses the others)."""
    if rebuild.is_file_mapping(m) and m.deleted and not m.shared and m.stored == "all":
        return replace(m, inode=0, dev="00:00", path="", deleted=False, offset=0)
    return m


def _at_rseq_abort(core, ts):
    """A thread stopped inside an rseq critical section resumes at its abort
    handler, as the kernel would have moved it on its next return to user space."""
    regs = ts.regs
    abort = rseq.abort_ip(core.read, ts.rseq, regs.get("rip", 0))
    if abort is None:
        return ts
    ts = replace(ts, regs=dict(regs, rip=abort, orig_rax=(1 << 64) - 1))
    return ts
