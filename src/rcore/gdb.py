"""gdb commands: `restore-core-file [FILE]` (alias `rcore`) rolls the process gdb
is debugging back to a core file, rcore's or gdb's own gcore's.

Load it with `source gdb/rcore.py` or `python import rcore.gdb` inside gdb.

The stopped inferior is handed to rcore's library rather than rewritten through
gdb's inferior API: gdb detaches with a SIGSTOP queued (the process goes into
a job-control stop instead of running), rcore restores it and leaves it stopped,
and gdb attaches again, so that it reads the restored registers and memory
afresh: `bt` shows the checkpointed stack.  The core is checked before gdb lets
go of the process, so a wrong file changes nothing."""

import os
import signal
import time

import gdb

from .elf.reader import CoreFile
from .errors import RcoreError
from .linux import procfs
from .restore import check_restorable, restore


def _wait_stopped(pid, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if procfs.read_stat(pid).state in ("T", "t"):
            return
        time.sleep(0.005)
    raise RcoreError(f"process {pid} did not stop")


def restore_inferior(path=None):
    """Restore the selected inferior from core `path` (default core.PID); returns
    the RestoreSummary.  gdb is attached to the process again afterwards."""
    pid = gdb.selected_inferior().pid
    if not pid:
        raise gdb.GdbError("restore-core-file: the program is not being run")
    path = os.path.abspath(os.path.expanduser(path or f"core.{pid}"))
    try:
        with CoreFile(path) as core:
            check_restorable(pid, core)
    except RcoreError as err:
        raise gdb.GdbError(f"restore-core-file: {err}") from None
    os.kill(pid, signal.SIGSTOP)            # delivered as gdb detaches: stays stopped
    gdb.execute("detach", to_string=True)
    try:
        _wait_stopped(pid)
        return restore(pid, path, stop=True)
    except RcoreError as err:
        raise gdb.GdbError(f"restore-core-file: {err}") from None
    finally:
        if os.path.exists(f"/proc/{pid}"):
            _attach_stopped(pid)


def _attach_stopped(pid):
    """Attach gdb again to `pid`, which is in a job-control stop.

    gdb takes the attach for the stop, but the job-control stop stays in effect:
    the process would stop again when gdb detaches, and the user's next
    `continue` would report SIGSTOP.  A SIGCONT sent while gdb holds it ends the
    job-control stop (and discards the SIGSTOP that PTRACE_ATTACH queued)
    without letting it run; SIGSTOP and SIGCONT are then neither shown nor
    passed to the program until the next stop event, when the user's own
    handling of them is put back."""
    saved = {sig: _signal_handling(sig) for sig in ("SIGSTOP", "SIGCONT")}
    gdb.execute(f"attach {pid}", to_string=True)
    os.kill(pid, signal.SIGCONT)
    for sig in saved:
        gdb.execute(f"handle {sig} nostop noprint nopass", to_string=True)

    def put_back(event):
        gdb.events.stop.disconnect(put_back)
        for sig, how in saved.items():
            gdb.execute(f"handle {sig} {how}", to_string=True)
    gdb.events.stop.connect(put_back)


def _signal_handling(name):
    """`handle` keywords that give signal `name` its current handling."""
    for line in gdb.execute(f"info signals {name}", to_string=True).splitlines():
        words = line.split()
        if words and words[0] == name:
            stop, prnt, pass_ = (w == "Yes" for w in words[1:4])
            return " ".join(("stop" if stop else "nostop", "print" if prnt else "noprint",
                             "pass" if pass_ else "nopass"))
    return "stop print pass"


class RestoreCoreFile(gdb.Command):
    """Restore the process being debugged to a core file.
Usage: restore-core-file [FILE]   (alias: rcore)
FILE defaults to core.PID.  A core written by `rcore dump` restores memory,
mappings, threads, registers, descriptors and signal state; a core written by
gdb's gcore restores memory and registers, and the command says what else it
could not restore."""

    def __init__(self):
        super().__init__("restore-core-file", gdb.COMMAND_FILES, gdb.COMPLETE_FILENAME)

    def invoke(self, arg, from_tty):
        args = gdb.string_to_argv(arg)
        if len(args) > 1:
            raise gdb.GdbError("usage: restore-core-file [FILE]")
        s = restore_inferior(args[0] if args else None)
        print(f"Restored process {s.pid} from {s.path}: {s.threads} threads, "
              f"{s.bytes_written} bytes written.")
        for what in s.not_restored:
            print(f"Not restored: {what}")
        for what in s.notes:
            print(f"Note: {what}")


RestoreCoreFile()
gdb.execute("alias -a rcore = restore-core-file")
