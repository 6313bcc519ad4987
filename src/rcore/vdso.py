"""Is the kernel's vDSO the one the checkpoint ran with?

A restarted process gets the running kernel's [vvar], [vvar_vclock] and [vdso],
which the rebuild moves to their checkpointed addresses (rebuild.py,
move_specials): glibc caches pointers into the vDSO.  That is only sound when
the vDSO is the same code, i.e. the same kernel: otherwise the cached pointers
may land anywhere in the new vDSO (CRIU then calls into the new vDSO instead;
rcore refuses).  Every process on this kernel has the same vDSO, so rcore
compares its own with the core's before it starts anything."""

import ctypes

from .errors import Incompatible
from .linux import procfs

# Mappings the kernel owns: moved as a whole (mremap), never unmapped, filled or
# recreated by mmap.
SPECIAL = ("[vvar]", "[vvar_vclock]", "[vdso]")


def _specials(mappings):
    return sorted((m for m in mappings if m.path in SPECIAL), key=lambda m: m.start)


def check_vdso(core):
    """Raise Incompatible unless the core's special mappings have the sizes and
    order of this kernel's and its vDSO holds the same bytes."""
    want = _specials(core.state.mappings)
    have = _specials(procfs.read_maps("self"))
    if [(m.path, m.size) for m in want] != [(m.path, m.size) for m in have]:
        raise Incompatible("the vDSO layout differs from the checkpoint's "
                           f"({_describe(want)} there, {_describe(have)} here): "
                           "it was taken under another kernel")
    for w, h in zip(want, have):
        if w.path == "[vdso]" and w.stored == "all" and core.stored_range(w.start):
            if core.read(w.start, w.size) != ctypes.string_at(h.start, h.size):
                raise Incompatible("the vDSO differs from the checkpoint's: "
                                   "it was taken under another kernel")


def _describe(ms):
    return ", ".join(f"{m.path} {m.size // 1024} KiB" for m in ms) or "none"
