"""rcore restart FILE: start a checkpoint again as a new process.

By default rcore stays in the foreground as the process's parent: it forwards
SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to it and exits with its
exit status, or 128+N when signal N killed it, so that
`rcore restart x.core && next-step` works in scripts.  --detach prints the PID
and returns; the process runs on, reparented as a daemon would be."""

import argparse
import os
import signal
import sys

from ..progress import Progress

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
             signal.SIGUSR1, signal.SIGUSR2)


def add_parser(sub):
    p = sub.add_parser("restart", help="start a checkpoint again as a new process",
                       description="Start the process checkpointed in FILE again, as a new "
                                   "process with the same PID, memory, threads, files and "
                                   "signal state.  rcore stays its parent, forwards signals "
                                   "to it and exits with its status, unless --detach.")
    p.add_argument("file", help="core file, or a directory of `rcore run` checkpoints "
                                "(the newest complete one)")
    p.add_argument("--detach", action="store_true",
                   help="print the PID and return; the process runs on as a daemon")
    p.add_argument("--any-pid", action="store_true",
                   help="take another PID if the checkpointed one is in use (glibc's cached "
                        "thread IDs are then stale: pthread_kill, raise and robust or "
                        "error-checking mutexes may fail)")
    p.add_argument("--lazy", action="store_true",
                   help="map large anonymous memory from the core file instead of copying "
                        "it (fast start; the core file must stay unchanged while it runs)")
    for name in ("stdin", "stdout", "stderr"):
        p.add_argument(f"--{name}", metavar="FILE", help=f"connect {name} to FILE")
    p.add_argument("--skip-unsupported", action="store_true",
                   help="replace descriptors rcore cannot rebuild (sockets...) with "
                        "disconnected ones (end of file, EPIPE) instead of refusing; "
                        "listening sockets are refused all the same")
    p.add_argument("--inherit-fd", metavar="N:WHAT", action="append", default=[],
                   type=_inherit_fd,
                   help="descriptor N of the checkpoint (one it inherited from what started "
                        "it: a pipe from a CI runner...) becomes WHAT: a path (opened with "
                        "N's access mode; created and appended to if N wrote), or fd:M, "
                        "rcore's own descriptor M; repeatable")
    p.add_argument("--host-clocks", action="store_true",
                   help="keep the host's CLOCK_MONOTONIC and CLOCK_BOOTTIME (they jump by "
                        "the time the process was dead) instead of a time namespace in "
                        "which they go on from their checkpointed values")
    p.add_argument("--tcp-established", action="store_true",
                   help="bring established TCP connections back alive (TCP_REPAIR; root; "
                        "the dump must have used --tcp-established); otherwise they come "
                        "back reset")
    p.add_argument("--without-children", action="store_true",
                   help="restart only the root of a checkpointed process tree, or a process "
                        "dumped with --no-children that had children (refused otherwise: "
                        "waiting for them gets ECHILD)")
    p.add_argument("--pid-namespace", action="store_true",
                   help="restart the tree in a new PID namespace under a small init, every "
                        "process at its checkpointed PID even if the host uses it (root)")
    p.set_defaults(func=run)


def _inherit_fd(text):
    """N:PATH or N:fd:M -> (N, PATH or M)."""
    n, sep, what = text.partition(":")
    if not sep or not n.isdigit() or not what:
        raise argparse.ArgumentTypeError(f"{text!r}: expected N:PATH or N:fd:M")
    if what.startswith("fd:"):
        if not what[3:].isdigit():
            raise argparse.ArgumentTypeError(f"{text!r}: expected N:fd:M with a number M")
        return int(n), int(what[3:])
    return int(n), what


def run(args):
    import os
    from ..restart import restart
    resume = None
    if os.path.isdir(args.file):
        from ..run import latest_checkpoint, load_settings
        directory = args.file
        args.file = latest_checkpoint(directory)
        print(f"rcore: restarting from {args.file}", file=sys.stderr)
        # A job `rcore run` checkpointed goes on being checkpointed there.
        resume = None if args.detach else load_settings(directory)
    bar = Progress("restarting")
    try:
        proc = restart(args.file, detach=args.detach, any_pid=args.any_pid, lazy=args.lazy,
                       stdin=args.stdin, stdout=args.stdout, stderr=args.stderr,
                       skip_unsupported=args.skip_unsupported,
                       host_clocks=args.host_clocks, inherit=dict(args.inherit_fd),
                       tcp_established=args.tcp_established,
                       without_children=args.without_children,
                       pid_namespace=args.pid_namespace,
                       progress=bar)
    finally:
        bar.finish()
    for warning in proc.warnings:
        print(f"rcore: warning: {warning}", file=sys.stderr)
    if args.detach:
        print(proc.pid, flush=True)
        proc.close()
        return 0
    if resume:
        from ..run import Job
        from .run import checkpoint_periodically
        interval, keep = resume
        print(f"rcore: checkpointing it every {interval:g} s into {directory} again",
              file=sys.stderr)
        return checkpoint_periodically(Job(proc, directory), interval, keep)
    return _foreground(proc)


def _foreground(proc):
    """Wait for the process, passing on the signals rcore gets."""
    forward_signals(proc)
    return exit_code(proc.wait())


def forward_signals(proc):
    """Pass the signals rcore gets on to proc (anything with send_signal).  The
    process is in rcore's process group: Ctrl-C and Ctrl-\\ on rcore's terminal
    reach it directly, so SIGINT and SIGQUIT are not passed on a second time
    while rcore is in the terminal's foreground group (`kill -INT` on rcore
    alone is then not forwarded either; send it to the process's PID)."""
    keyboard = _in_terminal_foreground()
    for sig in FORWARDED:
        if keyboard and sig in (signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_IGN)
        else:
            signal.signal(sig, lambda signum, frame: proc.send_signal(signum))


def exit_code(status):
    """rcore's exit code for a wait status (negative: killed by that signal),
    with the signal handlers back to their defaults."""
    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_DFL)
    return status if status >= 0 else 128 - status


def _in_terminal_foreground():
    try:
        return os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False
