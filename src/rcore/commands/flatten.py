"""rcore flatten FILE -o OUT: the standalone core of an incremental checkpoint."""


def add_parser(sub):
    p = sub.add_parser("flatten", help="write the standalone core of an incremental checkpoint",
                       description="Write the standalone core of an incremental checkpoint "
                                   "(dump --incremental): the same state, with every page "
                                   "from the checkpoint or its parents, readable on its own "
                                   "by gdb and rcore.")
    p.add_argument("file")
    p.add_argument("-o", "--output", metavar="OUT", required=True)
    p.set_defaults(func=run)


def run(args):
    import os
    from ..chain import flatten
    from ..elf.reader import CoreFile
    from ..errors import RcoreError
    with CoreFile(args.file, resolve=False) as core:
        if not core.parent:
            raise RcoreError(f"{args.file} is not an incremental checkpoint")
        flatten(core, args.output)
    print(f"{os.path.abspath(args.output)}: standalone core of {args.file}")
