"""Reading a core file (rcore's, the kernel's, gdb's gcore) into the state model.

CoreFile parses headers and notes eagerly (they are small) and serves memory
lazily through read()/segments, like a live process does (LiveMemory)."""

import bisect
import ctypes
import mmap
import os
import stat

from .. import arch
from ..errors import CoreFormatError
from ..state import Mapping, ProcessState, ThreadState
from . import notes as N
from . import rcore_notes as R
from . import structs as S


class Segment:
    __slots__ = ("vaddr", "memsz", "offset", "filesz", "flags")

    def __init__(self, ph):
        self.vaddr, self.memsz = ph.p_vaddr, ph.p_memsz
        self.offset, self.filesz, self.flags = ph.p_offset, ph.p_filesz, ph.p_flags

    @property
    def end(self):
        return self.vaddr + self.memsz

    @property
    def perms(self):
        return "".join(c if self.flags & bit else "-" for c, bit in
                       (("r", S.PF_R), ("w", S.PF_W), ("x", S.PF_X))) + "p"


class CoreFile:
    """An opened core file.  `state` is the ProcessState it describes; `has_rcore`
    tells whether rcore's own notes were present (kernel and gdb cores lack them).
    `tree` is the process tree (tree.Tree) of a tree's root core, else None.
    An incremental core (`parent` set: chain.py) is resolved through its chain
    of parents unless resolve=False; `resolved` then says so."""

    def __init__(self, path, resolve=True):
        self.path = path
        self._map = b""
        self.parent = None
        self.resolved = False
        self.chain_data = None      # chain.ChainData of a resolved increment
        try:
            # O_NONBLOCK: a FIFO named as the core must not block rcore
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise CoreFormatError(path, "no such file") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise CoreFormatError(path, "is a directory, not a core file"
                                  if stat.S_ISDIR(st.st_mode) else "is not a regular file")
        self._file = os.fdopen(fd, "rb", buffering=0)
        try:
            self.size = st.st_size
            self._map = mmap.mmap(self._file.fileno(), 0, prot=mmap.PROT_READ) if self.size else b""
            self._parse()
            if self.parent and resolve:
                self._resolve_chain()
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        if self.chain_data is not None:
            self.chain_data.close()
            self.chain_data = None
        if isinstance(self._map, mmap.mmap):
            self._map.close()
        self._map = b""
        self._file.close()

    def _resolve_chain(self):
        """Serve memory through the chain of parents (chain.ChainData): the
        segments become those of the standalone core, read piece by piece from
        the cores that hold them (CoreBytes, read())."""
        from ..chain import INHERITED, ChainData
        self.chain_data = ChainData(self)
        self.segments = self.chain_data.segments
        self._starts = [seg.vaddr for seg in self.segments]
        for m in self.state.mappings:     # stored whole now, as in the flattened core
            if m.stored == INHERITED:
                m.stored = "all"
        self.resolved = True

    def fileno(self):
        return self._file.fileno()

    def _bad(self, msg, note=None):
        raise CoreFormatError(self.path, msg, note)

    def _parse(self):
        data = self._map
        if len(data) < ctypes.sizeof(S.Elf64_Ehdr) or data[:4] != S.ELFMAG:
            self._bad("not an ELF file")
        eh = S.Elf64_Ehdr.from_buffer_copy(data[:64])
        if eh.e_ident[4] != S.ELFCLASS64 or eh.e_ident[5] != S.ELFDATA2LSB:
            self._bad("not a 64-bit little-endian ELF file")
        if eh.e_type != S.ET_CORE:
            self._bad("is an ELF file but not a core file")
        self.arch = arch.by_elf_machine(eh.e_machine)
        if self.arch is None:
            self._bad(f"core of an unsupported architecture (e_machine {eh.e_machine})")
        self.segments, note_blobs = [], []
        for ph in self._program_headers(eh):
            if ph.p_type == S.PT_LOAD:
                self.segments.append(self._segment(ph))
            elif ph.p_type == S.PT_NOTE:
                self._head.append((ph.p_offset, ph.p_offset + ph.p_filesz))
                note_blobs.append(bytes(data[ph.p_offset: ph.p_offset + ph.p_filesz]))
        self.segments.sort(key=lambda seg: seg.vaddr)
        for a, b in zip(self.segments, self.segments[1:]):
            if b.vaddr < a.end:
                self._bad(f"segments {a.vaddr:#x}-{a.end:#x} and {b.vaddr:#x}-{b.end:#x} "
                          "overlap", "program headers")
        self._starts = [seg.vaddr for seg in self.segments]
        try:
            self.notes = [n for blob in note_blobs for n in N.iter_notes(blob)]
        except ValueError as err:
            self._bad(str(err), "notes")
        self.state = self._build_state()

    def _program_headers(self, eh):
        """The program headers, each within the file (the count is checked against
        the file's size before any is read)."""
        data = self._map
        phnum = eh.e_phnum
        if phnum == S.PN_XNUM:          # more than 65534 segments (fs/binfmt_elf.c)
            shsize = ctypes.sizeof(S.Elf64_Shdr)
            if eh.e_shoff + shsize > len(data) or eh.e_shoff == 0:
                self._bad("truncated: the section header holding the segment count is missing")
            phnum = S.Elf64_Shdr.from_buffer_copy(data, eh.e_shoff).sh_info
        phsize = ctypes.sizeof(S.Elf64_Phdr)
        if eh.e_phentsize != phsize:
            self._bad(f"entries of {eh.e_phentsize} bytes, expected {phsize}",
                      "program headers")
        if eh.e_phoff + phnum * phsize > len(data):
            self._bad("truncated: program headers are missing")
        # file extents of the headers and notes (no segment's data may overlap them)
        self._head = [(0, ctypes.sizeof(S.Elf64_Ehdr)), (eh.e_phoff, eh.e_phoff + phnum * phsize)]
        out = []
        for i in range(phnum):
            ph = S.Elf64_Phdr.from_buffer_copy(data, eh.e_phoff + i * phsize)
            if ph.p_type in (S.PT_LOAD, S.PT_NOTE) and ph.p_filesz \
                    and ph.p_offset + ph.p_filesz > len(data):
                self._bad("truncated: a segment runs past the end of the file")
            out.append(ph)
        return out

    def _segment(self, ph):
        if ph.p_filesz > ph.p_memsz:
            self._bad(f"segment {ph.p_vaddr:#x} stores {ph.p_filesz} bytes of a "
                      f"{ph.p_memsz}-byte region", "program headers")
        if ph.p_vaddr + ph.p_memsz > 1 << 64:
            self._bad(f"segment {ph.p_vaddr:#x} of {ph.p_memsz} bytes ends beyond the "
                      "address space", "program headers")
        return Segment(ph)

    def _note_name(self, owner, ntype):
        if owner == R.OWNER:
            return R.NAMES.get(ntype, f"RCORE note {ntype:#x}")
        if owner == "LINUX" and ntype == self.arch.NT_ARCH_XSTATE:
            return self.arch.NT_ARCH_XSTATE_NAME
        return S.NOTE_NAMES.get(ntype, f"{owner} note {ntype:#x}")

    def _build_state(self):
        """The state model from the notes, each checked as it is decoded: a note
        that does not have its declared shape, or contradicts another, raises
        CoreFormatError naming it."""
        proc = ProcessState(pid=0, arch=self.arch.NAME)
        self._threads, self._rthreads, self._once = {}, {}, {}
        self._file_note, self._mappings = [], None
        self.tree = None
        for owner, ntype, desc in self.notes:
            name = self._note_name(owner, ntype)
            try:
                self._take_note(proc, owner, ntype, desc, name)
            except ValueError as err:
                self._bad(str(err), name)
        threads = list(self._threads.values())
        if not threads:
            self._bad("no NT_PRSTATUS note: not a process core")
        self.has_rcore = any(owner == R.OWNER for owner, _, _ in self.notes)
        for tid in self._rthreads:
            if tid not in self._threads:
                self._bad(f"thread {tid} has no NT_PRSTATUS note", "RCORE_THREAD")
        for t in threads:                       # merge rcore's per-thread state
            extra = self._rthreads.get(t.tid)
            if extra:
                extra.regs, extra.xstate = t.regs, t.xstate
                t.__dict__.update(extra.__dict__)
        proc.threads = threads
        if not proc.pid:
            proc.pid = threads[0].tid
        if self.tree is not None:
            self._check_tree(proc)
        proc.mappings = self._mappings if self._mappings is not None \
            else self._mappings_from_segments(self._file_note)
        return proc

    def _once_only(self, name):
        if name in self._once:
            raise ValueError("the core holds two of them")
        self._once[name] = True

    def _take_note(self, proc, owner, ntype, desc, name):
        a = self.arch
        if owner == "CORE" and ntype == S.NT_PRSTATUS:
            st = N.decode_prstatus(desc)
            if st.pr_pid in self._threads:
                raise ValueError(f"two for thread {st.pr_pid}")
            self._threads[st.pr_pid] = ThreadState(
                tid=st.pr_pid, regs=a.UserRegs.from_buffer_copy(bytes(st.pr_reg)).as_dict(),
                sigmask=st.pr_sighold)
            self._last_thread = st.pr_pid
            if len(self._threads) == 1:
                proc.ppid, proc.pgrp, proc.sid = st.pr_ppid, st.pr_pgrp, st.pr_sid
        elif owner == "CORE" and ntype == S.NT_PRPSINFO:
            self._once_only(name)
            ps = N.decode_prpsinfo(desc)
            proc.pid = ps.pr_pid
            proc.comm = ps.pr_fname.decode("utf-8", "replace")
            proc.cmdline = ps.pr_psargs.decode("utf-8", "replace").split()
            proc.state = ps.pr_sname.decode("ascii", "replace")
            proc.creds = {"uid": [ps.pr_uid] * 4, "gid": [ps.pr_gid] * 4, "groups": []}
        elif owner == "CORE" and ntype == S.NT_AUXV:
            self._once_only(name)
            if len(desc) % 16:
                raise ValueError(f"{len(desc)} bytes, not a whole number of entries")
            proc.auxv = desc
        elif owner == "CORE" and ntype == S.NT_FILE:
            self._once_only(name)
            self._file_note = N.decode_file_note(desc)
        elif owner == "LINUX" and ntype == a.NT_ARCH_XSTATE:
            if not self._threads:
                raise ValueError("comes before any NT_PRSTATUS")
            thread = self._threads[self._last_thread]
            if thread.xstate:
                raise ValueError(f"two for thread {thread.tid}")
            if not a.XSTATE_MIN <= len(desc) <= a.XSTATE_MAX:
                raise ValueError(f"{len(desc)} bytes, expected {a.XSTATE_MIN} to {a.XSTATE_MAX}")
            thread.xstate = desc
        elif owner == R.OWNER and ntype == R.NT_RCORE_THREAD:
            t = R.decode_thread(desc, a)
            if t.tid in self._rthreads:
                raise ValueError(f"two for thread {t.tid}")
            self._rthreads[t.tid] = t
        elif owner == R.OWNER and ntype in R.NAMES:
            self._once_only(name)
            if ntype == R.NT_RCORE_PROCESS:
                R.decode_process(desc, proc)
            elif ntype == R.NT_RCORE_MAPPINGS:
                self._mappings, proc.mapped_files = R.decode_mappings(desc)
            elif ntype == R.NT_RCORE_FILES:
                proc.files = R.decode_files(desc)
            elif ntype == R.NT_RCORE_PARENT:
                self.parent = R.decode_parent(desc)
            elif ntype == R.NT_RCORE_TREE:
                self.tree = R.decode_tree(desc)

            elif ntype == R.NT_RCORE_SYSVIPC:
                proc.sysvipc = R.decode_sysvipc(desc)

    def _check_tree(self, proc):
        root = self.tree.processes[0]
        if root.pid != proc.pid:
            self._bad(f"the tree's root is process {root.pid}, the core's is {proc.pid}",
                      "RCORE_TREE")
        name = os.path.basename(self.path)
        if root.core != name:
            self._bad(f"the root's core is named {root.core!r}, this file is {name!r} "
                      "(the cores of a tree keep the names dump gave them)", "RCORE_TREE")

    def require_complete(self):
        """What a core must hold for restore or restart to act on it, checked in
        one place: a core without rcore's notes holds only memory and registers
        (restore applies those, restart refuses it); a core with any of rcore's
        notes must hold all of them, one RCORE_THREAD for each NT_PRSTATUS and
        the other way round, an XSAVE image per thread, and a segment for every
        mapping that says what it stores.  Raises CoreFormatError."""
        if not self.has_rcore:
            return
        for ntype in (R.NT_RCORE_PROCESS, R.NT_RCORE_MAPPINGS, R.NT_RCORE_FILES):
            if R.NAMES[ntype] not in self._once:
                self._bad(f"no {R.NAMES[ntype]} note: the core is incomplete")
        proc = self.state
        for t in proc.threads:
            if t.tid not in self._rthreads:
                self._bad(f"thread {t.tid} has no RCORE_THREAD note", "RCORE_THREAD")
            if not t.xstate:
                self._bad(f"thread {t.tid} has none", self.arch.NT_ARCH_XSTATE_NAME)
        if proc.threads[0].tid != proc.pid:
            self._bad(f"process {proc.pid} is not the first thread "
                      f"({proc.threads[0].tid})", "RCORE_PROCESS")
        if proc.exe is None:
            self._bad("the executable is not named", "RCORE_PROCESS")
        if not proc.auxv:
            self._bad("no NT_AUXV note: the core is incomplete")
        self._require_segments(proc.mappings)

    def _require_segments(self, mappings):
        """rcore writes one PT_LOAD per mapping ([vsyscall] aside), its data at a
        page-aligned offset of its own after the notes: a segment that moved,
        grew, or names no mapping means the headers were changed."""
        by_start = {seg.vaddr: seg for seg in self.segments}
        named = set()
        for m in mappings:
            if m.path == "[vsyscall]":      # a segment of it is allowed, never used
                named.add(m.start)
                continue
            seg = by_start.get(m.start)
            if seg is None or seg.memsz != m.size:
                self._bad(f"mapping {m.start:#x}-{m.end:#x} has no segment of its size",
                          "RCORE_MAPPINGS")
            holds = {"all": seg.filesz == seg.memsz, "none": seg.filesz == 0,
                     "header": 0 < seg.filesz}.get(m.stored, True)
            if not holds:
                self._bad(f"mapping {m.start:#x}-{m.end:#x} says it stores {m.stored!r}, "
                          f"its segment holds {seg.filesz} bytes", "RCORE_MAPPINGS")
            named.add(m.start)
        for seg in self.segments:
            if seg.vaddr not in named:
                self._bad(f"segment {seg.vaddr:#x} is of no mapping", "RCORE_MAPPINGS")
        page = self.arch.PAGE_SIZE
        extents = sorted(self._head + [(seg.offset, seg.offset + seg.filesz)
                                       for seg in self.segments if seg.filesz])
        for (_, end), (start, _) in zip(extents, extents[1:]):
            if start < end:
                self._bad(f"data at offset {start:#x} overlaps other data", "program headers")
        for seg in self.segments:
            if seg.filesz and seg.offset % page:
                self._bad(f"data of segment {seg.vaddr:#x} is not page-aligned",
                          "program headers")

    def _mappings_from_segments(self, file_note):
        """Kernel and gdb cores: mappings are the PT_LOADs, named by NT_FILE."""
        out = []
        named = {start: (offset, name) for start, end, offset, name in file_note}
        for seg in self.segments:
            m = Mapping(seg.vaddr, seg.end, seg.perms, stored="all" if seg.filesz else "none")
            if seg.vaddr in named:
                offset, name = named[seg.vaddr]
                deleted = name.endswith(" (deleted)")
                m.path = name[: -len(" (deleted)")] if deleted else name
                m.offset, m.deleted, m.inode = offset, deleted, 1
            out.append(m)
        return out

    # --- memory ----------------------------------------------------------------
    def segment_at(self, addr):
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and addr < self.segments[i].end:
            return self.segments[i]
        return None

    def stored_range(self, addr):
        """(file offset, bytes available from there) for addr, or None if the
        core holds no data at addr."""
        seg = self.segment_at(addr)
        if seg is None or addr - seg.vaddr >= seg.filesz:
            return None
        return seg.offset + addr - seg.vaddr, seg.filesz - (addr - seg.vaddr)

    def read(self, addr, length):
        """Bytes of memory at addr, as the core stores them (holes read as zeros)."""
        out = bytearray()
        while length:
            where = self.stored_range(addr)
            if where is None:
                raise CoreFormatError(self.path, f"no data for address {addr:#x} in the core")
            off, avail = where
            n = min(length, avail)
            if self.chain_data is not None:
                buf = bytearray(n)
                self.chain_data.readinto(buf, off, n)
                out += buf
            else:
                out += self._map[off: off + n]
            addr, length = addr + n, length - n
        return bytes(out)

    def view(self, offset, length):
        return memoryview(self._map)[offset: offset + length]


def open_core(path):
    return CoreFile(path)
