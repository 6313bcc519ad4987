"""rcore info FILE [--json]: what a core file holds."""


def add_parser(sub):
    p = sub.add_parser("info", help="show what a core file holds",
                       description="Show the program, threads, memory regions, files and "
                                   "rcore's kernel state in a core (rcore's, the kernel's "
                                   "or gdb's).")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args):
    import json
    from ..elf.reader import CoreFile
    from ..info import describe, format_text
    with CoreFile(args.file, resolve=False) as core:
        d = describe(core)
    print(json.dumps(d, indent=1) if args.json else format_text(d))
