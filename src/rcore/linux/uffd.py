"""userfaultfd write-protection and the PAGEMAP_SCAN ioctl: the kernel's dirty
tracking where soft-dirty is off (Linux 6.7+; the system headers are older than
the kernel, so the layouts are declared here).

Sources: include/uapi/linux/userfaultfd.h, include/uapi/linux/fs.h."""

import ctypes
import fcntl

UFFD_API = 0xAA
UFFD_USER_MODE_ONLY = 1             # userfaultfd(2) flag: no CAP_SYS_PTRACE needed
UFFD_FEATURE_WP_UNPOPULATED = 1 << 13
UFFD_FEATURE_WP_ASYNC = 1 << 15
UFFDIO_REGISTER_MODE_WP = 1 << 1


def _iowr(kind, nr, size):
    return (3 << 30) | (size << 16) | (kind << 8) | nr


class UffdioApi(ctypes.Structure):
    _fields_ = [("api", ctypes.c_uint64), ("features", ctypes.c_uint64),
                ("ioctls", ctypes.c_uint64)]


class UffdioRange(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class UffdioRegister(ctypes.Structure):
    _fields_ = [("range", UffdioRange), ("mode", ctypes.c_uint64),
                ("ioctls", ctypes.c_uint64)]


UFFDIO_API = _iowr(UFFD_API, 0x3F, ctypes.sizeof(UffdioApi))
UFFDIO_REGISTER = _iowr(UFFD_API, 0x00, ctypes.sizeof(UffdioRegister))

# PAGEMAP_SCAN (fs/proc/task_mmu.c)
PAGE_IS_WPALLOWED = 1 << 0          # in a range registered for async write-protection
PAGE_IS_WRITTEN = 1 << 1            # written since it was last write-protected
PAGE_IS_FILE = 1 << 2               # a page-cache (or shared memory) page
PAGE_IS_PRESENT = 1 << 3
PAGE_IS_SWAPPED = 1 << 4            # any swap-type entry: swapped, migrating, marker
PAGE_IS_PFNZERO = 1 << 5            # the shared zero page
PAGE_IS_GUARD = 1 << 8              # a MADV_GUARD_INSTALL page (Linux 6.14+)
PM_SCAN_WP_MATCHING = 1 << 0        # write-protect the pages reported, in the same walk


class PageRegion(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("end", ctypes.c_uint64),
                ("categories", ctypes.c_uint64)]


class PmScanArg(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint64), ("flags", ctypes.c_uint64),
                ("start", ctypes.c_uint64), ("end", ctypes.c_uint64),
                ("walk_end", ctypes.c_uint64), ("vec", ctypes.c_uint64),
                ("vec_len", ctypes.c_uint64), ("max_pages", ctypes.c_uint64),
                ("category_inverted", ctypes.c_uint64), ("category_mask", ctypes.c_uint64),
                ("category_anyof_mask", ctypes.c_uint64), ("return_mask", ctypes.c_uint64)]


PAGEMAP_SCAN = _iowr(ord("f"), 16, ctypes.sizeof(PmScanArg))
SCAN_BATCH = 4096                   # regions per ioctl


def pagemap_scan(pagemap_fd, start, end, *, flags=0, category_mask=0, anyof_mask=0,
                 return_mask=0):
    """[(start, end, categories)] of the pages in [start, end) whose categories
    include category_mask and one of anyof_mask (if given), contiguous pages
    with the same (return_mask'ed) categories merged, from an open
    /proc/PID/pagemap.  With return_mask 0
    nothing is listed (a walk for flags' sake: PM_SCAN_WP_MATCHING)."""
    out = []
    vec = (PageRegion * SCAN_BATCH)() if return_mask else None
    at = start
    while at < end:
        arg = PmScanArg(size=ctypes.sizeof(PmScanArg), flags=flags, start=at, end=end,
                        vec=ctypes.addressof(vec) if vec is not None else 0,
                        vec_len=SCAN_BATCH if vec is not None else 0,
                        category_mask=category_mask, category_anyof_mask=anyof_mask,
                        return_mask=return_mask)
        n = fcntl.ioctl(pagemap_fd, PAGEMAP_SCAN, arg)
        if n:
            words = iter(memoryview(vec).cast("B").cast("Q")[:3 * n].tolist())
            out += zip(words, words, words)
        if arg.walk_end <= at:
            break
        at = arg.walk_end
    return out
