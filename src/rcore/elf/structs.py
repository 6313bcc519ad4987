"""ELF64 and Linux core-dump layouts, declared once for reading and writing.

Sources: include/uapi/linux/elf.h, include/linux/elfcore.h (x86-64 sizes)."""

import ctypes

from .. import arch

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64
i16, i32, i64 = ctypes.c_int16, ctypes.c_int32, ctypes.c_int64

ELFMAG = b"\x7fELF"
ELFCLASS64 = 2
ELFDATA2LSB = 1
EV_CURRENT = 1
ET_CORE = 4
PT_LOAD = 1
PT_NOTE = 4
PF_X, PF_W, PF_R = 1, 2, 4

NT_PRSTATUS = 1
NT_PRFPREG = 2
NT_PRPSINFO = 3
NT_AUXV = 6
NT_SIGINFO = 0x53494749
NT_FILE = 0x46494C45
NT_GNU_BUILD_ID = 3

NOTE_NAMES = {NT_PRSTATUS: "NT_PRSTATUS", NT_PRFPREG: "NT_PRFPREG", NT_PRPSINFO: "NT_PRPSINFO",
              NT_AUXV: "NT_AUXV", NT_SIGINFO: "NT_SIGINFO", NT_FILE: "NT_FILE"}
PN_XNUM = 0xFFFF        # e_phnum of a core with more segments: the count is in sh_info
                        # of section header 0 (include/uapi/linux/elf.h)

NOTE_ALIGN = 4          # the kernel pads core notes to 4 bytes, also in ELF64


class Elf64_Ehdr(ctypes.LittleEndianStructure):
    _fields_ = [("e_ident", u8 * 16), ("e_type", u16), ("e_machine", u16),
                ("e_version", u32), ("e_entry", u64), ("e_phoff", u64),
                ("e_shoff", u64), ("e_flags", u32), ("e_ehsize", u16),
                ("e_phentsize", u16), ("e_phnum", u16), ("e_shentsize", u16),
                ("e_shnum", u16), ("e_shstrndx", u16)]


class Elf64_Phdr(ctypes.LittleEndianStructure):
    _fields_ = [("p_type", u32), ("p_flags", u32), ("p_offset", u64),
                ("p_vaddr", u64), ("p_paddr", u64), ("p_filesz", u64),
                ("p_memsz", u64), ("p_align", u64)]


class Elf64_Shdr(ctypes.LittleEndianStructure):
    _fields_ = [("sh_name", u32), ("sh_type", u32), ("sh_flags", u64),
                ("sh_addr", u64), ("sh_offset", u64), ("sh_size", u64),
                ("sh_link", u32), ("sh_info", u32), ("sh_addralign", u64),
                ("sh_entsize", u64)]


class Elf64_Nhdr(ctypes.LittleEndianStructure):
    _fields_ = [("n_namesz", u32), ("n_descsz", u32), ("n_type", u32)]


class ElfSiginfo(ctypes.LittleEndianStructure):
    _fields_ = [("si_signo", i32), ("si_code", i32), ("si_errno", i32)]


class Timeval(ctypes.LittleEndianStructure):
    _fields_ = [("tv_sec", i64), ("tv_usec", i64)]


def _prstatus_for(arch_mod):
    class ElfPrstatus(ctypes.LittleEndianStructure):
        """struct elf_prstatus (include/linux/elfcore.h)"""
        _fields_ = [("pr_info", ElfSiginfo), ("pr_cursig", i16), ("_pad0", u16),
                    ("pr_sigpend", u64), ("pr_sighold", u64),
                    ("pr_pid", i32), ("pr_ppid", i32), ("pr_pgrp", i32), ("pr_sid", i32),
                    ("pr_utime", Timeval), ("pr_stime", Timeval),
                    ("pr_cutime", Timeval), ("pr_cstime", Timeval),
                    ("pr_reg", arch_mod.UserRegs), ("pr_fpvalid", i32), ("_pad1", u32)]
    return ElfPrstatus


ElfPrstatus = _prstatus_for(arch.x86_64)


class ElfPrpsinfo(ctypes.LittleEndianStructure):
    """struct elf_prpsinfo (include/linux/elfcore.h)"""
    _fields_ = [("pr_state", ctypes.c_char), ("pr_sname", ctypes.c_char),
                ("pr_zomb", ctypes.c_char), ("pr_nice", ctypes.c_char), ("_pad0", u32),
                ("pr_flag", u64), ("pr_uid", u32), ("pr_gid", u32),
                ("pr_pid", i32), ("pr_ppid", i32), ("pr_pgrp", i32), ("pr_sid", i32),
                ("pr_fname", ctypes.c_char * 16), ("pr_psargs", ctypes.c_char * 80)]


assert ctypes.sizeof(Elf64_Ehdr) == 64
assert ctypes.sizeof(Elf64_Phdr) == 56
assert ctypes.sizeof(ElfPrstatus) == 336
assert ctypes.sizeof(ElfPrpsinfo) == 136


def pack(struct):
    return bytes(struct)


def unpack(cls, data, offset=0):
    return cls.from_buffer_copy(data, offset)
