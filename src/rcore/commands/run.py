"""rcore run [-i SECONDS] [-d DIR] [--keep N] -- CMD [ARGS]: run a command under
rcore, checkpointed every SECONDS into DIR (the first checkpoint full, the
later ones incremental); `rcore restart DIR` starts the newest complete one.

rcore stays in the foreground as the job's parent, as for `restart`: it
forwards signals to it and exits with its status (128+N when signal N killed
it).  A checkpoint that fails is reported and the job runs on."""

import sys
import time


def add_parser(sub):
    p = sub.add_parser("run", help="run a command, checkpointing it periodically",
                       description="Run CMD as rcore's child and checkpoint it every SECONDS "
                                   "into DIR: the first checkpoint full with dirty tracking, "
                                   "each later one storing only the pages written since.  "
                                   "`rcore restart DIR` restarts the newest complete one.")
    p.add_argument("-i", "--interval", metavar="SECONDS", type=float, default=60.0,
                   help="time between checkpoints (default 60)")
    p.add_argument("-d", "--dir", metavar="DIR", default="rcore-checkpoints",
                   help="where checkpoints go (default ./rcore-checkpoints)")
    p.add_argument("--keep", metavar="N", type=int,
                   help="keep only the newest N checkpoints (the oldest kept is made "
                        "standalone)")
    p.add_argument("cmd", nargs="+", metavar="CMD", help="the command (after --)")
    p.set_defaults(func=run)


def run(args):
    from ..errors import RcoreError
    from ..run import Job, save_settings
    if args.keep is not None and args.keep < 1:
        raise RcoreError("--keep needs at least 1")
    job = Job.start(args.cmd, args.dir)
    save_settings(args.dir, args.interval, args.keep)
    return checkpoint_periodically(job, args.interval, args.keep)


def checkpoint_periodically(job, interval, keep):
    """Wait for the job, checkpointing it every `interval` seconds; returns
    rcore's exit code for its status."""
    from ..errors import ProcessExited, NoSuchProcess, RcoreError
    from .restart import exit_code, forward_signals
    forward_signals(job)
    deadline = time.monotonic() + interval
    while True:
        status = job.wait(max(0.0, deadline - time.monotonic()))
        if status is not None:
            return exit_code(status)
        deadline = time.monotonic() + interval
        try:
            s = job.checkpoint()
            if s.tracking.startswith("full dump"):
                print(f"rcore: {s.tracking}", file=sys.stderr)
        except (ProcessExited, NoSuchProcess):
            pass                        # the job ended meanwhile: wait() says how
        except (RcoreError, OSError) as err:
            print(f"rcore: checkpoint failed: {err}; the job runs on", file=sys.stderr)
        # Also after a checkpoint whose last step saw the job end (its core may
        # be complete): the directory stays bounded whatever happened.
        if keep:
            try:
                job.prune(keep)
            except (RcoreError, OSError) as err:
                print(f"rcore: --keep: {err}", file=sys.stderr)
