"""rcore diff A B [--json]: what a process did between two checkpoints (or a
checkpoint and the live process)."""


def add_parser(sub):
    p = sub.add_parser("diff", help="show what changed between two checkpoints",
                       description="Compare two checkpoints of one process, or a checkpoint "
                                   "and the live process (B a PID): memory changed per "
                                   "mapping, mappings added, removed or reprotected, "
                                   "registers, descriptors, signals, limits and cwd.  A live "
                                   "process is frozen briefly to read its state; its memory "
                                   "is read while it runs.")
    p.add_argument("a", metavar="A", help="core file")
    p.add_argument("b", metavar="B", help="core file, or the PID of the live process")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args):
    from ..diff import diff, format_text
    d = diff(args.a, args.b)
    if args.json:
        import json
        print(json.dumps(d, indent=1))
    else:
        print(format_text(d))
