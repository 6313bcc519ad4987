"""rcore dump PID [-o FILE]: write a core file of a running process."""

import os
import sys

from ..progress import Progress


def add_parser(sub):
    p = sub.add_parser("dump", help="write a core file of a running process",
                       description="Write a core file of a running process; it runs on "
                                   "(frozen only for milliseconds) unless --stop or --kill.")
    p.add_argument("pid", type=int)
    p.add_argument("-o", "--output", metavar="FILE", help="core file (default: core.PID)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--stop", action="store_true", help="leave the process stopped (SIGSTOP)")
    mode.add_argument("--kill", action="store_true", help="kill the process after a complete dump")
    p.add_argument("--full", action="store_true",
                   help="also store unmodified file-backed memory (a self-contained core)")
    p.add_argument("--no-fork", action="store_true",
                   help="read all memory while the process is frozen (longer freeze)")
    p.add_argument("--unlinked-limit", metavar="BYTES", type=int,
                   help="store open unlinked files up to this size in the core, for "
                        "restart (default 1 MiB: capture.UNLINKED_FILE_LIMIT)")
    p.add_argument("--tcp-established", action="store_true",
                   help="capture established TCP connections for restart --tcp-established "
                        "(TCP_REPAIR; root); with --kill the peer is not told of the close")
    p.add_argument("--track", action="store_true",
                   help="arm dirty-page tracking (userfaultfd, in the process) so that a "
                        "later `rcore restore` of this core compares only the pages "
                        "written since")
    p.add_argument("--incremental", metavar="PARENT",
                   help="store only the pages written since checkpoint PARENT (made with "
                        "--track or --incremental): the core names PARENT, which must "
                        "stay in place; `rcore flatten` makes a standalone core")
    p.add_argument("--no-children", action="store_true",
                   help="checkpoint only PID, not its descendants (by default every "
                        "process of the tree gets a core: FILE.PID beside FILE)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args):
    from ..dump import dump
    limit = {} if args.unlinked_limit is None else {"unlinked_limit": args.unlinked_limit}
    bar = Progress("dumping")
    try:
        s = dump(args.pid, args.output, stop=args.stop, kill=args.kill, full=args.full,
                 fork=not args.no_fork, progress=bar,
                 tcp_established=args.tcp_established, track=args.track,
                 incremental=args.incremental, children=not args.no_children, **limit)
    finally:
        bar.finish()
    for warning in s.warnings:
        print(f"rcore: warning: {warning}", file=sys.stderr)
    if args.json:
        import json
        print(json.dumps(s.__dict__))
    elif s.processes > 1:
        zombies = f" and {s.zombies} zombie(s)" if s.zombies else ""
        print(f"{s.path}: a tree of {s.processes} processes{zombies} ({s.processes} cores: "
              f"{os.path.basename(s.path)} and {os.path.basename(s.path)}.PID), "
              f"{s.threads} threads, {s.regions} regions, "
              f"{s.bytes_stored / 1048576:.1f} MiB stored, frozen {s.freeze_seconds * 1000:.1f} ms")
    else:
        print(f"{s.path}: {s.threads} threads, {s.regions} regions, "
              f"{s.bytes_stored / 1048576:.1f} MiB stored, frozen {s.freeze_seconds * 1000:.1f} ms")
        if s.tracking:
            print(s.tracking)
