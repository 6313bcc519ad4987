"""Reading a core file (rcore's, the kernel's, gdb's gcore) into the state model.

CoreFile parses headers and notes eagerly (they are small) and serves memory
lazily through read()/segments, like a live process does (LiveMemory)."""

import bisect
import ctypes
import mmap
import os

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
    An incremental core (`parent` set: chain.py) is resolved through its chain
    of parents unless resolve=False; `resolved` then says so."""

    def __init__(self, path, resolve=True):
        self.path = path
        self.parent = None
        self.resolved = False
        try:
            self._file = open(path, "rb")
        except IsADirectoryError:
            raise CoreFormatError(path, "is a directory, not a core file") from None
        except FileNotFoundError:
            raise CoreFormatError(path, "no such file") from None
        try:
            self.size = os.fstat(self._file.fileno()).st_size
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
        if isinstance(self._map, mmap.mmap):
            self._map.close()
        self._map = b""
        self._file.close()

    def _resolve_chain(self):
        """Serve memory from the standalone core of this increment (chain.py)."""
        from ..chain import flatten_into
        flat = flatten_into(self)
        self.close()
        self._file = flat
        self.size = os.fstat(flat.fileno()).st_size
        self._map = mmap.mmap(flat.fileno(), 0, prot=mmap.PROT_READ)
        parent, self.parent, notes = self.parent, None, self.notes
        self._parse()
        # the notes stay the increment's own (chain.notes_digest identifies it)
        self.parent, self.resolved, self.notes = parent, True, notes

    def fileno(self):
        return self._file.fileno()

    def _bad(self, msg):
        raise CoreFormatError(self.path, msg)

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
        phsize = ctypes.sizeof(S.Elf64_Phdr)
        end = eh.e_phoff + eh.e_phnum * phsize
        if eh.e_phentsize != phsize or end > len(data):
            self._bad("truncated: program headers are missing")
        self.segments, note_blobs = [], []
        for i in range(eh.e_phnum):
            ph = S.Elf64_Phdr.from_buffer_copy(data, eh.e_phoff + i * phsize)
            if ph.p_offset + ph.p_filesz > len(data):
                self._bad("truncated: a segment runs past the end of the file")
            if ph.p_type == S.PT_LOAD:
                self.segments.append(Segment(ph))
            elif ph.p_type == S.PT_NOTE:
                note_blobs.append(bytes(data[ph.p_offset: ph.p_offset + ph.p_filesz]))
        self.segments.sort(key=lambda seg: seg.vaddr)
        self._starts = [seg.vaddr for seg in self.segments]
        try:
            self.notes = [n for blob in note_blobs for n in N.iter_notes(blob)]
        except ValueError as err:
            self._bad(f"corrupt notes: {err}")
        self.state = self._build_state()

    def _build_state(self):
        a = self.arch
        proc = ProcessState(pid=0, arch=a.NAME)
        threads, rthreads, file_note = [], [], []
        mappings = None
        for owner, ntype, desc in self.notes:
            if owner == "CORE" and ntype == S.NT_PRSTATUS:
                st = N.decode_prstatus(desc)
                threads.append(ThreadState(tid=st.pr_pid, regs=a.UserRegs.from_buffer_copy(
                    bytes(st.pr_reg)).as_dict(), sigmask=st.pr_sighold))
                if len(threads) == 1:
                    proc.ppid, proc.pgrp, proc.sid = st.pr_ppid, st.pr_pgrp, st.pr_sid
            elif owner == "CORE" and ntype == S.NT_PRPSINFO:
                ps = N.decode_prpsinfo(desc)
                proc.pid = ps.pr_pid
                proc.comm = ps.pr_fname.decode("utf-8", "replace")
                proc.cmdline = ps.pr_psargs.decode("utf-8", "replace").split()
                proc.state = ps.pr_sname.decode("ascii", "replace")
                proc.creds = {"uid": [ps.pr_uid] * 4, "gid": [ps.pr_gid] * 4, "groups": []}
            elif owner == "CORE" and ntype == S.NT_AUXV:
                proc.auxv = desc
            elif owner == "CORE" and ntype == S.NT_FILE:
                file_note = N.decode_file_note(desc)
            elif owner == "LINUX" and ntype == a.NT_ARCH_XSTATE and threads:
                threads[-1].xstate = desc
            elif owner == R.OWNER:
                try:
                    if ntype == R.NT_RCORE_PROCESS:
                        R.decode_process(desc, proc)
                    elif ntype == R.NT_RCORE_THREAD:
                        rthreads.append(R.decode_thread(desc))
                    elif ntype == R.NT_RCORE_MAPPINGS:
                        mappings, proc.mapped_files = R.decode_mappings(desc)
                    elif ntype == R.NT_RCORE_FILES:
                        proc.files = R.decode_files(desc)
                    elif ntype == R.NT_RCORE_PARENT:
                        self.parent = R.decode_parent(desc)
                except ValueError as err:
                    self._bad(f"corrupt rcore note: {err}")
        if not threads:
            self._bad("no NT_PRSTATUS note: not a process core")
        self.has_rcore = bool(rthreads)
        for t in threads:                       # merge rcore's per-thread state
            extra = next((r for r in rthreads if r.tid == t.tid), None)
            if extra:
                extra.regs, extra.xstate = t.regs, t.xstate
                t.__dict__.update(extra.__dict__)
        proc.threads = threads
        if not proc.pid:
            proc.pid = threads[0].tid
        proc.mappings = mappings if mappings is not None else self._mappings_from_segments(file_note)
        return proc

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
            out += self._map[off: off + n]
            addr, length = addr + n, length - n
        return bytes(out)

    def view(self, offset, length):
        return memoryview(self._map)[offset: offset + length]


def open_core(path):
    return CoreFile(path)
