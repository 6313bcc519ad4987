"""Dirty-page tracking without soft-dirty: userfaultfd write-protection in
asynchronous mode, read with the PAGEMAP_SCAN ioctl (Linux 6.7+).

    arm()       (dump --track, inside the dump's freeze) the target creates a
                userfaultfd (injected calls), moves it to a high descriptor,
                enables UFFD_FEATURE_WP_ASYNC | WP_UNPOPULATED and registers its
                private anonymous writable mappings for write-protection; rcore
                then write-protects every page from outside (PAGEMAP_SCAN with
                PM_SCAN_WP_MATCHING on /proc/PID/pagemap).  From then on the
                kernel resolves the program's write faults itself and marks
                each page it lets be written.
    scan()      (restore) which pages were written since, in one ioctl from
                outside; a rollback compares only those.  An incremental dump
                lists them (take_written, while the process runs, then Written
                with protect at its freeze) and write-protects them again in the
                same walks (readahead.py).
    rearm()     (after a restore: memory equals the core again) register what
                the rebuild mapped anew and write-protect the written pages.

Where the userfaultfd lives: in the target, at a high descriptor (close-on-exec),
because dump and restore are separate commands and the registration ends when
the last descriptor of the userfaultfd closes.  rcore remembers it in a small
state file (STATE_DIR/PID.json: the descriptor, its inode, the process's start
time and the checkpoint the tracking is relative to, its "baseline").  Every
dump and restore recognises that descriptor as rcore's own (own_fds): it is not
stored as the program's, and restore does not close it.  A program that closes
it (close_range, a daemon's close-all) ends the tracking; rcore notices and
compares all memory.

What tracking guarantees: a page of a registered mapping that the scan does not
report written holds what it held at the baseline.  Pages MADV_DONTNEED'ed
since are reported written (their page-table entry is gone); memory mapped or
moved since (mremap drops the registration) is not registered, so it is
compared whole.  Where tracking cannot be armed -- an older kernel (ENOTTY or
EINVAL), a seccomp filter, vm.unprivileged_userfaultfd, hugetlb or shared
memory (not registered) -- rcore compares all memory, and says so."""

import bisect
import functools
import json
import mmap
import os

from . import arch
from .errors import InjectedSyscallError
from .linux import libc, procfs
from .linux import uffd as U
from .ranges import merge_ranges
from .record import asdict, record
from .state import is_kernel_mapping

ARCH = arch.host()
PAGE = ARCH.PAGE_SIZE
USER_SPACE_END = 0x7FFFFFFFF000
PROBES = 200              # mappings asked one by one at most (Written.tracks_whole)
FD_BELOW = 1024           # the descriptor is placed just under this (or the soft limit)
# Write-protecting unpopulated memory installs markers in page tables for the
# whole range (8 bytes per page): huge sparse reservations are left untracked.
MAX_MAPPING = 8 << 30
MAX_TOTAL = 32 << 30


def state_dir():
    d = os.environ.get("RCORE_STATE_DIR")
    if d:
        return d
    if os.geteuid() == 0:
        return "/run/rcore/tracking"
    return f"/tmp/rcore-{os.geteuid()}/tracking"


def _state_path(pid):
    return os.path.join(state_dir(), f"{pid}.json")


def _starttime(pid):
    data = procfs.read_bytes(pid, "stat")
    return int(data[data.rindex(b")") + 2:].split()[19])     # proc(5) field 22


@record
class Tracking:
    """Dirty tracking armed in a process: its userfaultfd, and the core it is relative to."""
    pid: int
    starttime: int
    fd: int                     # the userfaultfd's descriptor in the target
    ino: int                    # its inode (every userfaultfd has its own)
    baseline: dict = None       # identity of the core the written pages are relative to

    def save(self):
        os.makedirs(state_dir(), mode=0o700, exist_ok=True)
        tmp = _state_path(self.pid) + ".tmp"
        with open(tmp, "w") as f:
            json.dump(asdict(self), f)
        os.replace(tmp, _state_path(self.pid))


def load(pid):
    """The Tracking of live process pid, or None when it has none (or it ended:
    another process with the PID, the descriptor closed or replaced)."""
    try:
        with open(_state_path(pid)) as f:
            t = Tracking(**json.load(f))
        if t.pid != pid or t.starttime != _starttime(pid):
            return None
        link = procfs.path(pid, "fd", str(t.fd))
        if os.readlink(link) != "anon_inode:[userfaultfd]" or os.stat(link).st_ino != t.ino:
            return None
        return t
    except (OSError, ValueError, TypeError, KeyError):
        return None


def forget(pid):
    try:
        os.unlink(_state_path(pid))
    except FileNotFoundError:
        pass


def own_fds(pid):
    """Descriptors of process pid that are rcore's, not the program's."""
    t = load(pid)
    return {t.fd} if t else set()


def core_identity(core):
    """What names the checkpoint in open CoreFile core: its checkpoint_id (kept
    when an incremental core is flattened), or for a core without one (gdb's,
    the kernel's) the file's identity."""
    cid = core.state.extra.get("checkpoint_id")
    if cid:
        return {"checkpoint_id": cid}
    st = os.stat(core.path)
    return {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def set_baseline(tracking, identity):
    """The written pages are now relative to the checkpoint of that identity
    (core_identity), or to none."""
    tracking.baseline = identity
    tracking.save()


def trackable(m):
    """Private anonymous writable user memory (userfaultfd write-protection
    covers anonymous, shmem and hugetlb memory; rcore registers the first)."""
    return (not m.shared and m.perms[1] == "w" and (m.inode == 0 or m.path == "[heap]")
            and not is_kernel_mapping(m) and not {"io", "pf", "ht"} & set(m.vmflags))


@functools.cache
def _pagemap_scan_missing():
    """Why this kernel has no PAGEMAP_SCAN (asked on rcore's own pagemap), or None."""
    fd = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    try:
        U.pagemap_scan(fd, 0, PAGE, category_mask=U.PAGE_IS_WRITTEN)
    except OSError as err:
        return f"the kernel lacks the PAGEMAP_SCAN ioctl (Linux 6.7+): {err.strerror}"
    finally:
        os.close(fd)
    return None


def _blocker(pid):
    """Why tracking cannot be armed in pid before trying, or None."""
    missing = _pagemap_scan_missing()
    if missing:
        return missing
    status = procfs.read_status(pid)
    if status.get("Seccomp", "0") != "0":
        return ("the process runs under a seccomp filter (userfaultfd could be "
                "forbidden, or kill it)")
    return None


def _ranges(mappings, already=()):
    """(start, end) runs of adjacent trackable mappings not in `already`, within
    the size bounds."""
    runs, total = [], 0
    for m in mappings:
        if not trackable(m) or m.size > MAX_MAPPING or (m.start, m.end) in already:
            continue
        if total + m.size > MAX_TOTAL:
            break
        total += m.size
        if runs and runs[-1][1] == m.start:
            runs[-1] = (runs[-1][0], m.end)
        else:
            runs.append((m.start, m.end))
    return runs


class _Target:
    """The injected side: calls run by a stopped thread, structures passed
    through a scratch page (the caller's, or one mapped here)."""

    def __init__(self, inj, pid, scratch=None):
        self.inj, self.pid = inj, pid
        self.own_scratch = scratch is None
        self.scratch = scratch if scratch is not None else inj.call(
            "mmap", 0, PAGE, mmap.PROT_READ | mmap.PROT_WRITE,
            mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)

    def close(self):
        if self.own_scratch:
            self.inj.call("munmap", self.scratch, PAGE, check=False)

    def ioctl(self, fd, request, struct_):
        libc.write_memory(self.pid, self.scratch, bytes(struct_))
        ret = self.inj.call("ioctl", fd, request, self.scratch, check=False)
        got = libc.read_memory(self.pid, self.scratch, len(bytes(struct_)))
        return ret, type(struct_).from_buffer_copy(got)

    def create(self, nofile_soft):
        """A userfaultfd with async write-protection at a high descriptor;
        returns (fd, None) or (None, why not)."""
        fd0 = self.inj.call("userfaultfd", os.O_CLOEXEC | os.O_NONBLOCK | U.UFFD_USER_MODE_ONLY,
                            check=False)
        if fd0 < 0:
            return None, f"userfaultfd() failed in the process: {os.strerror(-fd0)}"
        fd = self.inj.call("fcntl", fd0, 1030, max(3, min(nofile_soft, FD_BELOW) - 16),
                           check=False)               # F_DUPFD_CLOEXEC
        self.inj.call("close", fd0, check=False)
        if fd < 0:
            return None, f"no free descriptor for the userfaultfd: {os.strerror(-fd)}"
        want = U.UFFD_FEATURE_WP_ASYNC | U.UFFD_FEATURE_WP_UNPOPULATED
        ret, api = self.ioctl(fd, U.UFFDIO_API, U.UffdioApi(api=U.UFFD_API, features=want))
        if ret < 0 or api.features & want != want:
            self.inj.call("close", fd, check=False)
            why = os.strerror(-ret) if ret < 0 else "features missing"
            return None, f"the kernel lacks asynchronous userfaultfd write-protection ({why})"
        return fd, None

    def register(self, fd, ranges):
        """Register each range (a failed run is retried mapping by mapping by the
        caller's next arm; here it is just left out).  Returns those registered."""
        done = []
        for s, e in ranges:
            reg = U.UffdioRegister(range=U.UffdioRange(s, e - s), mode=U.UFFDIO_REGISTER_MODE_WP)
            if self.ioctl(fd, U.UFFDIO_REGISTER, reg)[0] == 0:
                done.append((s, e))
        return done


def _protect(pid, ranges=((0, USER_SPACE_END),)):
    """Write-protect every page of the registered ranges that is not (pages
    written since, and pages of ranges just registered), from outside; only
    within `ranges`."""
    fd = procfs.open_pagemap(pid)
    try:
        for start, end in ranges:
            U.pagemap_scan(fd, start, end, flags=U.PM_SCAN_WP_MATCHING,
                           category_mask=U.PAGE_IS_WRITTEN)
    finally:
        os.close(fd)


def _scan_written(fd, protect, start=0, end=USER_SPACE_END):
    """Merged (start, end) ranges of the tracked pages written since they were
    last write-protected; protect: write-protect them again in the same walk."""
    written = U.pagemap_scan(fd, start, end, flags=U.PM_SCAN_WP_MATCHING if protect else 0,
                             category_mask=U.PAGE_IS_WPALLOWED | U.PAGE_IS_WRITTEN,
                             return_mask=U.PAGE_IS_WRITTEN)
    return merge_ranges([(s, e) for s, e, _ in written])


def take_written(tracking):
    """The pages written since the baseline, write-protected again in the same
    walk, while the process runs (an incremental dump's read-ahead): a write
    from now on, even one racing this walk, is reported at the freeze.  The
    baseline is cleared first: these pages are reported nowhere else, so no
    later dump may count from the baseline again."""
    set_baseline(tracking, None)
    fd = procfs.open_pagemap(tracking.pid)
    try:
        return _scan_written(fd, protect=True)
    finally:
        os.close(fd)


def arm(frozen, syscall_addr, mappings, safe=None):
    """Arm (or re-arm) tracking in FrozenProcess frozen, whose mappings (with
    VmFlags) are `mappings`.  Returns (Tracking or None, message).  The baseline
    is cleared: the caller sets it once the checkpoint is complete.  safe
    (inject.SafeSites): the calls are guarded, as a dump's are, so that rcore
    may die in the middle (restore passes none: its target dies with it)."""
    from .linux.inject import Injector
    pid = frozen.pid
    why = _blocker(pid)
    if why:
        return None, why
    tracking = load(pid)
    if tracking:
        set_baseline(tracking, None)      # the written set is about to be reset
    ranges = _unregistered(pid, mappings)
    with Injector(frozen.leader(), syscall_addr, block_signals=safe is not None,
                  safe=safe) as inj:
        try:
            target = _Target(inj, pid)
        except InjectedSyscallError as err:
            return None, f"dirty tracking not armed: {err}"
        try:
            if tracking is None:
                soft = procfs.read_rlimits(pid).get("nofile", [FD_BELOW])[0]
                fd, why = target.create(FD_BELOW if soft < 0 else soft)
                if fd is None:
                    return None, why
                st = os.stat(procfs.path(pid, "fd", str(fd)))
                tracking = Tracking(pid, _starttime(pid), fd, st.st_ino)
                tracking.save()
            target.register(tracking.fd, ranges)
        finally:
            target.close()
    _protect(pid)
    return tracking, _armed(tracking)


def track_new(frozen, syscall_addr, mappings, tracking, safe):
    """At an incremental dump's freeze, after Written.take (which protected the
    written pages again): register the trackable mappings that are not yet
    (mapped since) and write-protect them.  Nothing is injected when there are
    none.  Returns the message arm would."""
    from .linux.inject import Injector
    ranges = _unregistered(frozen.pid, mappings)
    if ranges and not _blocker(frozen.pid):
        with Injector(frozen.leader(), syscall_addr, block_signals=True, safe=safe) as inj:
            try:
                target = _Target(inj, frozen.pid)
            except InjectedSyscallError:
                ranges = []
            else:
                try:
                    ranges = target.register(tracking.fd, ranges)
                finally:
                    target.close()
        _protect(frozen.pid, ranges)
    return _armed(tracking)


def _unregistered(pid, mappings):
    """Runs of the trackable mappings of stopped process pid not registered
    yet (asked of the kernel: Written.tracks_whole)."""
    candidates = [m for m in mappings if trackable(m) and m.size <= MAX_MAPPING]
    tracked = Written(pid).tracks_whole(candidates)
    return _ranges([m for m, t in zip(candidates, tracked) if not t])


def _armed(tracking):
    return f"dirty tracking armed (userfaultfd at fd {tracking.fd} in the process)"


class Written:
    """Which pages of a stopped process were written since the baseline:
    `tracked` (start, end) ranges registered for tracking, `written` ranges
    within them; select() narrows a range to what must be compared.

    A dump's freeze calls take() instead of scan(): one walk lists the pages
    written since they were last write-protected (`since`) and protects them
    again, and tracks_whole() asks about a few mappings only.  earlier: merged
    ranges written since the baseline that take_written listed (and
    protected) before the freeze: they count as written too."""

    def __init__(self, pid, earlier=()):
        self.pid, self.earlier = pid, earlier
        self._tracked = self._written = self.since = None

    def scan(self):
        """Read the page tables now (once): after the layout of the process has
        been rebuilt, just before memory is compared."""
        if self._tracked is not None:
            return
        # Two walks, each listing few regions: tracked pages merge into one
        # region per run of mappings, and only written pages are listed.  (One
        # walk returning both categories lists every tracked run between two
        # written pages too, and turning thousands of those into Python tuples
        # cost more than the second walk.)
        fd = procfs.open_pagemap(self.pid)
        try:
            tracked = U.pagemap_scan(fd, 0, USER_SPACE_END, category_mask=U.PAGE_IS_WPALLOWED,
                                     return_mask=U.PAGE_IS_WPALLOWED)
            if self.since is None:
                self.since = _scan_written(fd, protect=False)
        finally:
            os.close(fd)
        self._tracked = merge_ranges([(s, e) for s, e, _ in tracked])

    def take(self):
        """At a dump's freeze: list the pages written since they were last
        write-protected and protect them again, in one walk (1 ms for 1 GiB
        here, where the walk for `tracked` takes 2-3 ms more)."""
        fd = procfs.open_pagemap(self.pid)
        try:
            self.since = _scan_written(fd, protect=True)
        finally:
            os.close(fd)

    def tracks_whole(self, mappings):
        """Whether each of mappings (as /proc/PID/maps lists them: one VMA each)
        is tracked.  Registration is a property of the whole VMA (the kernel
        reports PAGE_IS_WPALLOWED for a VMA's every page or none), so a walk of
        its first page tells (a walk of ~10 us each: for many mappings the
        walk of the whole address space is cheaper)."""
        if self._tracked is not None or len(mappings) > PROBES:
            return [self.split(m.start, m.end) == [(m.start, m.end, True)] for m in mappings]
        fd = procfs.open_pagemap(self.pid)
        try:
            return [bool(U.pagemap_scan(fd, m.start, m.start + PAGE,
                                        category_mask=U.PAGE_IS_WPALLOWED,
                                        return_mask=U.PAGE_IS_WPALLOWED)) for m in mappings]
        finally:
            os.close(fd)

    @property
    def tracked(self):
        self.scan()
        return self._tracked

    @property
    def written(self):
        if self._written is None:
            if self.since is None:
                self.scan()
            # thousands of earlier ranges: merged when first asked for, not
            # while a dump holds the process frozen
            self._written = merge_ranges(self.since + list(self.earlier)) \
                if self.earlier else self.since
        return self._written

    def split(self, start, end):
        """[(start, end, tracked)] covering [start, end)."""
        return _split(self.tracked, start, end)

    def written_in(self, start, end):
        """The written (start, end) ranges within [start, end), clipped."""
        w = self.written
        i = max(0, bisect.bisect_right(w, (start, USER_SPACE_END)) - 1)
        j = bisect.bisect_left(w, (end, 0))
        out = [r for r in w[i:j] if r[1] > start]
        if out:
            out[0] = (max(out[0][0], start), out[0][1])
            out[-1] = (out[-1][0], min(out[-1][1], end))
        return out


def _split(ranges, start, end):
    out, cur = [], start
    i = max(0, bisect.bisect_right(ranges, (start, USER_SPACE_END)) - 1)
    while i < len(ranges) and cur < end:
        s, e = ranges[i]
        i += 1
        if e <= cur:
            continue
        if s >= end:
            break
        if s > cur:
            out.append((cur, s, False))
        out.append((max(s, cur), min(e, end), True))
        cur = min(e, end)
    if cur < end:
        out.append((cur, end, False))
    return out


def for_restore(pid, core):
    """(Written or None, message) for a restore of pid from open CoreFile core:
    Written when tracking is armed relative to that very checkpoint."""
    tracking = load(pid)
    if tracking is None:
        return None, None
    if tracking.baseline != core_identity(core):
        return None, ("dirty tracking is armed relative to another checkpoint "
                      "(or a dump that did not finish): all memory compared")
    return Written(pid), None


def rearm(pid, inj, scratch, core, written=None):
    """After a restore from open CoreFile core (memory equals it): register the
    trackable mappings that are not (the rebuild mapped them anew, or the
    program did since) and write-protect what was written, then make core the
    baseline.  inj: an Injector on a stopped thread; scratch: a page of the
    target rcore may use.  Returns a message, or None without tracking."""
    tracking = load(pid)
    if tracking is None:
        return None
    set_baseline(tracking, None)
    tracked = (written or Written(pid)).tracked
    untracked = [m for m in procfs.read_maps(pid) if trackable(m)
                 and not m.start <= scratch < m.end       # rcore's workspace
                 and not any(inside for _, _, inside in _split(tracked, m.start, m.end))]
    _Target(inj, pid, scratch).register(tracking.fd, _ranges(untracked))
    _protect(pid)
    set_baseline(tracking, core_identity(core))
    return f"dirty tracking re-armed relative to {core.path}"

