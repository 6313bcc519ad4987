"""Is a file still the one a checkpoint names?  The one comparison restore and
restart make for the executable and every mapped file.

The identity recorded at dump (state.FileIdentity) is device, inode, size,
mtime, ctime and GNU build-id.  Every field is compared, whatever value the core
gives it: a zeroed field is a mismatch, never a skipped check, and a core that
does not record device and inode at all is refused.  ctime is what catches an
in-place rewrite with the same size and a reset mtime (utime(2) sets mtime, and
no one but the kernel sets ctime); the build-id catches a rebuild of the code.

Cores written before ctime and the mapped files' build-ids were recorded have
ctime_ns 0.  Such a core is accepted only from a trusted source (a core root
wrote, or rcore's caller's own: see owner.py), with the older checks: device,
inode, size, mtime, and the build-id where one was recorded."""

import os

from .elf.notes import find_build_id
from .errors import Incompatible


def require_recorded(what, ident, trusted):
    """Refuse an identity that cannot be compared: no device or inode, or no
    ctime in a core that is not trusted to be an old one."""
    missing = [name for name, value in (("device", ident.dev), ("inode", ident.inode))
               if not value]
    if not ident.ctime_ns and not trusted:
        missing.append("ctime")
    if missing:
        raise Incompatible(f"the core does not record the identity of {what} "
                           f"({', '.join(missing)} missing)")


def require_mappings_recorded(proc):
    """Every file a mapping names (but deleted ones) has its identity in the core:
    a mapping without one would be opened unchecked."""
    for m in proc.mappings:
        if m.file_backed and not m.deleted and m.path not in proc.mapped_files:
            raise Incompatible(f"the core does not record the identity of the mapped "
                               f"file {m.path}")


def diffs(ident, st, build_id_of):
    """The names of the identity fields in which the file differs from `ident`:
    st is its os.stat_result, build_id_of the path its build-id is read from."""
    out = []
    if (st.st_dev, st.st_ino) != (ident.dev, ident.inode):
        out.append("device/inode")
    if st.st_size != ident.size:
        out.append("size")
    if st.st_mtime_ns != ident.mtime_ns:
        out.append("mtime")
    new_core = bool(ident.ctime_ns)     # older cores: see the module's comment
    if new_core and st.st_ctime_ns != ident.ctime_ns:
        out.append("ctime")
    # A new core records every file's build-id, "" for a file without one, so
    # "" is compared too; an old core recorded only the executable's.
    if (new_core or ident.build_id) and find_build_id(build_id_of) != ident.build_id:
        out.append("build-id")
    return out


def check_file(what, path, ident, trusted):
    """Refuse (Incompatible, one line) when the file at `path` is not the one
    `ident` records; `what` names it in the message ("the executable /bin/x")."""
    require_recorded(what, ident, trusted)
    try:
        st = os.stat(path)
    except OSError as err:
        raise Incompatible(f"{what} is gone: {err.strerror}") from None
    changed = diffs(ident, st, path)
    if changed:
        raise Incompatible(f"{what} changed since the checkpoint "
                           f"({', '.join(changed)} differ)")
