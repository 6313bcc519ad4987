"""run: a job started under rcore and checkpointed periodically into a directory.

    Job.start(argv, dir)   the command runs as rcore's child
    job.checkpoint()       DIR/ckpt-NNNNNN.core: the first a full core with dirty
                           tracking armed, each later one incremental against the
                           previous (only the pages written since: chain.py)
    job.prune(keep)        at most `keep` checkpoints: the oldest one kept is
                           flattened in place (it keeps its checkpoint id, so its
                           children still accept it), the older ones deleted

A job that has child processes at a checkpoint (a shell script, make) gets a full
checkpoint of its tree (DIR/ckpt-NNNNNN.core and one ckpt-NNNNNN.core.PID per
other process, dumptree.py): incremental checkpoints are of single processes, so
the next single-process one is full again.

A checkpoint is written under a temporary name and renamed when complete, so a
checkpoint interrupted halfway (rcore killed) never carries a checkpoint's
name; latest_checkpoint() also skips any that cannot be read with its chain.
rcore dying never harms the job: a dump that is cut short detaches (the kernel
does, for a dead tracer) and the job runs on."""

import os
import re
import subprocess

from .errors import CoreFormatError, RcoreError

NAME = re.compile(r"^ckpt-(\d{6})\.core$")


def checkpoints(directory):
    """Paths of DIR's checkpoints, oldest first."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = sorted((int(m.group(1)), n) for n in names if (m := NAME.match(n)))
    return [os.path.join(directory, n) for _, n in found]


def latest_checkpoint(directory):
    """The newest checkpoint of DIR that reads whole (its chain, or the cores of
    every process of its tree, included)."""
    from .chain import open_chain
    from .elf.reader import CoreFile
    from .tree import member_path
    for path in reversed(checkpoints(directory)):
        try:
            with CoreFile(path, resolve=False) as core:
                for parent in open_chain(core):
                    parent.close()
                for m in core.tree.processes[1:] if core.tree else []:
                    if m.core:
                        CoreFile(member_path(path, m), resolve=False).close()
            return path
        except (CoreFormatError, OSError):
            continue
    raise RcoreError(f"no complete checkpoint in {directory}")


SETTINGS = "run.json"       # interval and --keep, for `rcore restart DIR` to go on


def save_settings(directory, interval, keep):
    import json
    with open(os.path.join(directory, SETTINGS), "w") as f:
        json.dump({"interval": interval, "keep": keep}, f)


def load_settings(directory):
    """(interval, keep) `rcore run` left in DIR, or None."""
    import json
    try:
        with open(os.path.join(directory, SETTINGS)) as f:
            d = json.load(f)
        interval, keep = d["interval"], d["keep"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(interval, (int, float)) or not 0 < interval < 1e9 or \
            not (keep is None or isinstance(keep, int) and keep >= 1):
        return None
    return float(interval), keep


class Job:
    """popen: the job (subprocess.Popen, or restart's Restarted handle when
    `rcore restart DIR` goes on checkpointing a restarted job)."""

    def __init__(self, popen, directory):
        self.popen = popen
        self.pid = popen.pid
        self.directory = directory
        existing = checkpoints(directory)
        self.next = int(NAME.match(os.path.basename(existing[-1])).group(1)) + 1 \
            if existing else 1
        self.last = None                    # the previous checkpoint of this job

    @classmethod
    def start(cls, argv, directory):
        os.makedirs(directory, exist_ok=True)
        try:
            popen = subprocess.Popen(argv)
        except OSError as err:
            raise RcoreError(f"cannot run {argv[0]}: {err.strerror}") from None
        return cls(popen, directory)

    def wait(self, timeout=None):
        """The exit status (negative: killed by that signal), or None if the job
        still runs after timeout seconds."""
        try:
            code = self.popen.wait(timeout)
        except (subprocess.TimeoutExpired, TimeoutError):
            return None
        from .linux.ptrace import EXITED
        if self.popen.pid in EXITED:     # reaped by a checkpoint's ptrace wait
            code = self.popen.returncode = os.waitstatus_to_exitcode(EXITED.pop(self.popen.pid))
        return code

    def send_signal(self, sig):
        self.popen.send_signal(sig)

    def checkpoint(self):
        """Write the next checkpoint; returns the DumpSummary."""
        from .dump import dump
        from .tree import children
        path = os.path.join(self.directory, f"ckpt-{self.next:06d}.core")
        if children(self.pid):
            summary = dump(self.pid, path)
            summary.tracking = "full checkpoint of the job's process tree (incremental " \
                               "checkpoints are of single processes)"
            path = None
        elif self.last is None:
            summary = dump(self.pid, path, track=True)
        else:
            summary = dump(self.pid, path, incremental=self.last)
        self.last = path
        self.next += 1
        return summary

    def prune(self, keep):
        """Keep the newest `keep` checkpoints (keep >= 1), each readable."""
        from .chain import flatten
        from .elf.reader import CoreFile
        paths = checkpoints(self.directory)
        if len(paths) <= keep:
            return
        oldest = paths[-keep]
        with CoreFile(oldest, resolve=False) as core:
            if core.parent:
                flat = os.path.join(self.directory, "." + os.path.basename(oldest) + ".flat")
                flatten(core, flat)
                os.rename(flat, oldest)
        for path in paths[:-keep]:
            _remove_checkpoint(path)


def _remove_checkpoint(path):
    """A checkpoint and the cores of the other processes of its tree (also
    those a checkpoint cut short left without their root)."""
    directory, name = os.path.split(path)
    member = re.compile(re.escape(name) + r"\.\d+$")
    for other in os.listdir(directory):
        if member.match(other):
            os.unlink(os.path.join(directory, other))
    os.unlink(path)
