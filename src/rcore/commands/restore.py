"""rcore restore PID [FILE]: roll a running process back to a checkpoint of itself."""

from ..progress import Progress


def add_parser(sub):
    p = sub.add_parser("restore", help="roll a running process back to a checkpoint",
                       description="Restore a core file into the same live process: memory, "
                                   "mappings, threads, registers, descriptors and signal "
                                   "state go back to the checkpoint, and the process runs "
                                   "on from there.  Cores of gdb (gcore) or the kernel "
                                   "restore memory and registers only.  Everything is "
                                   "checked before the process is changed; a refused core "
                                   "leaves it running untouched.  Once the restore has "
                                   "started changing the process, a failure or a SIGKILL of "
                                   "rcore kills the process (PTRACE_O_EXITKILL): a "
                                   "half-restored process never runs on.  Killed before "
                                   "that, rcore leaves it running untouched.")
    p.add_argument("pid", type=int)
    p.add_argument("file", nargs="?", help="core file (default: core.PID)")
    p.add_argument("--stop", action="store_true",
                   help="leave the process stopped (SIGSTOP) instead of running on")
    p.add_argument("--force", action="store_true",
                   help="restore even into another process than the checkpoint's (another "
                        "PID, or its PID reused by a later process) or when the "
                        "executable changed since the checkpoint")
    p.add_argument("--map-core", action="store_true",
                   help="map large anonymous regions from the core file instead of "
                        "writing them (milliseconds; they then show as the core file "
                        "in /proc/PID/maps, and the core must not be changed in place)")
    p.set_defaults(func=run)


def run(args):
    from ..restore import restore
    bar = Progress("restoring")
    try:
        s = restore(args.pid, args.file, stop=args.stop, force=args.force,
                    map_core=args.map_core, progress=bar)
    finally:
        bar.finish()
    print(f"process {s.pid} restored from {s.path}: {s.threads} threads "
          f"({s.threads_created} created, {s.threads_ended} ended), "
          f"{s.regions_unmapped} regions unmapped, {s.regions_mapped} mapped, "
          f"{s.bytes_written / 1048576:.1f} MiB written of "
          f"{s.bytes_compared / 1048576:.1f} MiB compared"
          + (f", {s.bytes_mapped_from_core / 1048576:.1f} MiB mapped from the core"
             if s.bytes_mapped_from_core else "") + f", {s.seconds * 1000:.0f} ms")
    if s.tracking:
        print(s.tracking)
    for what in s.not_restored:
        print(f"not restored: {what}")
    for what in s.notes:
        print(f"note: {what}")
