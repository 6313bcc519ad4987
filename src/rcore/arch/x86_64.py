"""Everything that is specific to Linux on x86-64: register layouts, system call
numbers, ELF machine and note details.  Another architecture gets a sibling module
with the same names (see arch/__init__.py)."""

import ctypes
import functools
import operator
import struct

NAME = "x86_64"
ELF_MACHINE = 62            # EM_X86_64
PAGE_SIZE = 4096
SYSCALL_INSN = b"\x0f\x05"  # `syscall`; the kernel leaves rip just past it
RED_ZONE = 128              # bytes below rsp a leaf function may use (SysV ABI)


class UserRegs(ctypes.Structure):
    """struct user_regs_struct (arch/x86/include/asm/user_64.h); identical to
    elf_gregset_t in NT_PRSTATUS."""
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8",
        "rax", "rcx", "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags",
        "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs")]

    def copy(self):
        return UserRegs.from_buffer_copy(self)

    def as_dict(self):
        # one unpack of the whole structure (every field a u64): a dump of many
        # threads makes one of these per thread
        return dict(zip(_REG_NAMES, _REGS_STRUCT.unpack_from(self)))

    @classmethod
    def from_dict(cls, values):
        regs = cls()
        for name, _ in cls._fields_:
            setattr(regs, name, values[name])
        return regs

    # The accessors below let generic code ask for "the pc" without knowing names.
    @property
    def pc(self):
        return self.rip

    @pc.setter
    def pc(self, value):
        self.rip = value

    @property
    def sp(self):
        return self.rsp

    @sp.setter
    def sp(self, value):
        self.rsp = value


_REG_NAMES = tuple(name for name, _ in UserRegs._fields_)
_REGS_STRUCT = struct.Struct(f"<{len(_REG_NAMES)}Q")
_U64 = struct.Struct("<Q")


assert ctypes.sizeof(UserRegs) == 216

# Registers that carry the system call number, arguments and result.
SYSCALL_NR_REG = "rax"
SYSCALL_ARG_REGS = ("rdi", "rsi", "rdx", "r10", "r8", "r9")
SYSCALL_RET_REG = "rax"
SYSCALL_ORIG_NR_REG = "orig_rax"

NT_ARCH_XSTATE = 0x202      # NT_X86_XSTATE, owner "LINUX"
NT_ARCH_XSTATE_NAME = "NT_X86_XSTATE"
FXSAVE_SIZE = 512           # NT_PRFPREG is the legacy FXSAVE image, the start of XSAVE
XSTATE_MIN = FXSAVE_SIZE + 64   # the legacy area and the XSAVE header
XSTATE_MAX = 16384          # buffer for PTRACE_GETREGSET; the kernel says how much it used

# System call numbers (arch/x86/entry/syscalls/syscall_64.tbl)
SYS = dict(
    read=0, write=1, open=2, close=3, lseek=8, mmap=9, mprotect=10, munmap=11,
    brk=12, rt_sigaction=13, rt_sigprocmask=14, ioctl=16, pread64=17, mremap=25,
    madvise=28, dup=32, dup2=33, pause=34, nanosleep=35, getitimer=36,
    setitimer=38, getpid=39, setpgid=109, clone=56, fork=57, exit=60, wait4=61, kill=62,
    fcntl=72, chdir=80, fchdir=81, umask=95, getrlimit=97, ptrace=101,
    setgroups=116, setresuid=117, setresgid=119,
    rt_sigpending=127, rt_sigqueueinfo=129, sigaltstack=131, personality=135,
    prctl=157, arch_prctl=158, setrlimit=160, gettid=186, futex=202,
    set_tid_address=218, restart_syscall=219, exit_group=231, tgkill=234,
    waitid=247, clock_nanosleep=230, poll=7, openat=257, set_robust_list=273, get_robust_list=274,
    rt_tgsigqueueinfo=297, prlimit64=302, process_vm_readv=310,
    process_vm_writev=311, kcmp=312, vmsplice=278, pipe2=293, memfd_create=319, userfaultfd=323,
    rseq=334, pidfd_open=434, clone3=435, close_range=436, pidfd_getfd=438,
    epoll_ctl=233, inotify_add_watch=254, inotify_rm_watch=255, timerfd_create=283,
    timerfd_settime=286, timerfd_gettime=287, signalfd4=289, eventfd2=290, epoll_create1=291,
    inotify_init1=294, open_by_handle_at=304, unshare=272, flock=73,
    timer_create=222, timer_settime=223, timer_gettime=224, timer_getoverrun=225,
    timer_delete=226, mlock=149,
    shmget=29, shmat=30, shmctl=31, shmdt=67, semget=64, semctl=66, msgget=68,
    msgsnd=69, msgrcv=70, msgctl=71,
)

# SysV IPC: where fields lie in the *id64_ds structures IPC_STAT fills and IPC_SET
# reads (arch/x86/include/uapi/asm/{shm,sem,msg}buf.h; each starts with the
# generic 48-byte ipc64_perm).
SHMID64_SEGSZ = 48          # shmid64_ds.shm_segsz
SEMID64_NSEMS = 80          # semid64_ds.sem_nsems, after otime, pad, ctime, pad
MSQID64_QBYTES = 88         # msqid64_ds.msg_qbytes, after stime, rtime, ctime, cbytes, qnum

# struct epoll_event {u32 events; u64 data}: packed on x86-64 only (EPOLL_PACKED).
EPOLL_EVENT = struct.Struct("<IQ")

# Restart codes a thread interrupted inside a system call shows in rax
# (include/linux/errno.h).  They never reach user space on their own.
ERESTARTSYS = 512
ERESTARTNOINTR = 513
ERESTARTNOHAND = 514
ERESTART_RESTARTBLOCK = 516
U64 = (1 << 64) - 1


def signed(value):
    return value - (1 << 64) if value & (1 << 63) else value


def restart_interrupted_syscall(regs, restart_block_kept):
    """Make registers of a thread that was stopped inside a system call resume the
    way the kernel would after a signal with SA_RESTART: rerun the call.

    ERESTART_RESTARTBLOCK needs the kernel's per-thread restart block.  It is still
    there when the same thread resumes (`restart_block_kept`) and the call is then
    resumed through restart_syscall(); in a new process it is gone.  Calls whose
    rerun with the same arguments is right run again (RERUN_WITHOUT_BLOCK: poll and
    futex waits, whose timeouts are upper bounds the program re-checks, and
    absolute clock_nanosleep); the others (relative sleeps) return -EINTR, as
    CRIU does: sleep() and nanosleep() callers get their remaining time."""
    regs = regs.copy()
    if signed(regs.orig_rax) < 0:
        return regs
    code = -signed(regs.rax)
    if code in (ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND):
        regs.rax = regs.orig_rax
        regs.rip -= len(SYSCALL_INSN)
    elif code == ERESTART_RESTARTBLOCK:
        if restart_block_kept:
            regs.rax = SYS["restart_syscall"]
            regs.rip -= len(SYSCALL_INSN)
        elif _rerun_without_block(regs):
            regs.rax = regs.orig_rax
            regs.rip -= len(SYSCALL_INSN)
        else:
            regs.rax = (-4) & U64     # -EINTR
    regs.orig_rax = U64               # no further restart logic on resume
    return regs


TIMER_ABSTIME = 1


def _rerun_without_block(regs):
    nr = regs.orig_rax
    if nr in (SYS["poll"], SYS["futex"]):
        return True
    return nr == SYS["clock_nanosleep"] and regs.rsi & TIMER_ABSTIME


def set_syscall(regs, pc, nr, args):
    regs.rip = pc
    regs.rax = nr
    regs.orig_rax = U64
    for name, value in zip(SYSCALL_ARG_REGS, args):
        setattr(regs, name, value & U64)


# --- code run inside a target --------------------------------------------------
# Injected code is entered with the arguments in the SysV call registers and ends
# in `int3`, whose SIGTRAP leaves rip just past it.
CALL_ARG_REGS = ("rdi", "rsi", "rdx", "rcx", "r8", "r9")
TRAP_INSN = b"\xcc"


def set_call(regs, pc, args):
    regs.rip = pc
    regs.orig_rax = U64
    for name, value in zip(CALL_ARG_REGS, args):
        setattr(regs, name, value & U64)


# --- injected calls that need no tracer to end ----------------------------------
# If rcore dies, the kernel detaches its tracees and they run on from wherever
# they stand, with the registers rcore gave them.  A dump therefore injects each
# call so that, left alone, the thread gets its own context back by itself: the
# call runs at a `syscall` in the vDSO that is followed only by register clears
# and `ret`; the stack pointer given to the call points at the address of a
# `mov $15, %rax; syscall` (rt_sigreturn, from the program's own C library) and
# above it at a signal frame holding the thread's own registers, XSAVE state and
# mask.  rcore stops the thread at the call's syscall-exit stop (a syscall stop
# left by a dead tracer resumes with no signal: PTRACE_O_TRACESYSGOOD makes its
# code 0x85, not a signal) and never lets it reach the `ret`.
SIGRETURN_GADGETS = (bytes.fromhex("48c7c00f000000" "0f05"),   # mov $15, %rax; syscall
                     bytes.fromhex("b80f000000" "0f05"))        # mov $15, %eax; syscall
_XOR_PREFIXES = (b"", b"\x45", b"\x48", b"\x4d")


def find_syscall_then_ret(code):
    """Offset in code of a `syscall` followed by nothing but `xor reg, reg` and
    `ret`, or None.  The vDSO's fallback paths have one (clock_getres)."""
    at = code.find(SYSCALL_INSN)
    while at >= 0:
        i = at + len(SYSCALL_INSN)
        while True:
            if code[i:i + 1] == b"\xc3":
                return at
            for prefix in _XOR_PREFIXES:
                n = len(prefix)
                if code.startswith(prefix + b"\x31", i) and i + n + 1 < len(code):
                    modrm = code[i + n + 1]
                    if modrm >> 6 == 3 and (modrm >> 3) & 7 == modrm & 7:
                        i += n + 2
                        break
            else:
                break
        at = code.find(SYSCALL_INSN, at + 1)
    return None


# struct rt_sigframe (arch/x86/include/asm/sigframe.h): pretcode, then struct
# ucontext {uc_flags, uc_link, uc_stack, uc_mcontext (struct sigcontext), uc_sigmask},
# then a siginfo rt_sigreturn does not read; the XSAVE image after it, 64-byte
# aligned, with FP_XSTATE_MAGIC2 after its xstate_size bytes.
UC_FP_XSTATE, UC_SIGCONTEXT_SS, UC_STRICT_RESTORE_SS = 0x1, 0x2, 0x4
FP_XSTATE_MAGIC1, FP_XSTATE_MAGIC2 = 0x46505853, 0x46505845
FX_SW_BYTES = 464                 # struct _fpx_sw_bytes in the FXSAVE area's spare bytes
UCONTEXT_SIZE = 304
SIGINFO_SIZE = 128
# uc_stack's flags: an invalid mode makes rt_sigreturn's restore_altstack() fail
# with EINVAL, which it ignores, so the thread's sigaltstack stays as it is.
SS_FLAGS_KEEP = 3
_SIGCONTEXT_REGS = ("r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rdi", "rsi",
                    "rbp", "rbx", "rdx", "rax", "rcx", "rsp", "rip", "eflags")


def sigframe_size(xstate):
    return _fpstate_offset() + _frame_xstate(xstate)[1] + 4


def _fpstate_offset():
    return (UCONTEXT_SIZE + SIGINFO_SIZE + 63) & ~63


XFEATURE_TILEDATA = 18            # AMX tile data: in a thread's signal frame only once used


def _frame_xstate(xstate):
    """(xfeatures, xstate_size) of a signal frame for this ptrace XSAVE image.
    ptrace gives the image at the CPU's largest size, with XCR0 in the spare
    bytes; a signal frame may be no larger than the thread's own size, which
    leaves out AMX tile data unless the thread has used it."""
    (xcr0,) = _U64.unpack_from(xstate, XSAVE_SW_XFEATURES)
    (xstate_bv,) = _U64.unpack_from(xstate, FXSAVE_SIZE)
    return _frame_layout(xcr0, xstate_bv >> XFEATURE_TILEDATA & 1, len(xstate))


@functools.cache
def _frame_layout(xcr0, tiles_used, image_size):
    # cached: a dump encodes a frame for every thread, all alike
    features = xcr0 if tiles_used else xcr0 & ~(1 << XFEATURE_TILEDATA)
    return features, min(image_size, _xsave_end(features))


@functools.cache
def _xsave_end(features):
    end = FXSAVE_SIZE + 64                          # legacy area and XSAVE header
    for i in range(2, 64):
        if features >> i & 1:
            size, offset, _, _ = cpuid(0xD, i)
            end = max(end, offset + size)
    return end


def encode_sigframe(regs, xstate, sigmask, at, pretcode):
    """A signal frame whose ucontext starts at `at` (64-byte aligned): rt_sigreturn
    run with the stack pointer at `at` gives the thread regs, xstate (the image
    PTRACE_GETREGSET returns) and sigmask.  The bytes start 8 before `at`, with
    pretcode, the return address of the handler (the rt_sigreturn trampoline)."""
    # Built in place, in one buffer: a dump makes one frame per thread.
    features, size = _frame_xstate(xstate)
    fp_off = 8 + _fpstate_offset()
    frame = bytearray(fp_off + size + 4)
    _UCONTEXT.pack_into(frame, 0, pretcode,
                        UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS,
                        0, 0, SS_FLAGS_KEEP, 0, *_sigcontext_regs(_REGS_STRUCT.unpack_from(regs)),
                        regs.cs, 0, 0, regs.ss, 0, 0, sigmask, 0, at - 8 + fp_off, sigmask)
    frame[fp_off:fp_off + size] = memoryview(xstate)[:size]
    # struct _fpx_sw_bytes, where a signal frame keeps it (the kernel checks it)
    _FPX_SW_BYTES.pack_into(frame, fp_off + FX_SW_BYTES, FP_XSTATE_MAGIC1, size + 4,
                            features, size)
    _MAGIC2.pack_into(frame, fp_off + size, FP_XSTATE_MAGIC2)
    return frame


_sigcontext_regs = operator.itemgetter(*(_REG_NAMES.index(n) for n in _SIGCONTEXT_REGS))
# pretcode, then struct ucontext up to uc_sigmask: uc_flags, uc_link, uc_stack
# {ss_sp, ss_flags, ss_size}, uc_mcontext (struct sigcontext: the registers, cs,
# gs, fs, ss, err, trapno, oldmask, cr2, fpstate, reserved), uc_sigmask
_UCONTEXT = struct.Struct("<Q" "QQQi4xQ" "18Q4H5Q64x" "Q")
_FPX_SW_BYTES = struct.Struct("<IIQI28x")
_MAGIC2 = struct.Struct("<I")
assert _UCONTEXT.size == 8 + UCONTEXT_SIZE


# Code the dump runs in a thread, ended without a trap: by tgkill(r13 = tgid,
# r14 = tid, r15d = a signal the program ignores, by default or SIG_IGN), then
# `ret` (into the rt_sigreturn trampoline, as after a guarded call).  With rcore
# tracing, the signal's delivery stops the thread there: one ptrace stop for the
# whole run.  Left alone, the thread takes the signal (the kernel discards an
# ignored signal) and goes back to its own context.
_STOP_THEN_RET = bytes.fromhex(
    "b8ea000000"    # mov eax, 234         tgkill
    "4c89ef"        # mov rdi, r13
    "4c89f6"        # mov rsi, r14
    "4489fa"        # mov edx, r15d
    "0f05"          # syscall
    "c3")           # ret
STOP_INSN_END = len(_STOP_THEN_RET) - 1       # where the stop leaves rip, from the end


def set_run_stop(regs, tgid, tid, sig):
    regs.r13, regs.r14, regs.r15 = tgid, tid, sig


# call_list(table, count): for each 64-byte entry {u64 number, six u64
# arguments, i64 result} of the table, the system call, its return value stored
# in the entry (linux/calllist.py).  Uses no stack; rbx, rbp and the argument
# registers are the run's own (the thread's are in its signal frame).
SIGACTION_SIZE = 32
ROBUST_LIST_HEAD_SIZE = 24  # struct robust_list_head: set_robust_list takes no other length
CALL_LIST_CODE = bytes.fromhex(
    "4889fb"        # mov rbx, rdi         the entry
    "89f5"          # mov ebp, esi         calls left
    # loop:
    "85ed"          # test ebp, ebp
    "7429"          # jz done              (+41)
    "488b03"        # mov rax, [rbx]       number
    "488b7b08"      # mov rdi, [rbx+8]
    "488b7310"      # mov rsi, [rbx+16]
    "488b5318"      # mov rdx, [rbx+24]
    "4c8b5320"      # mov r10, [rbx+32]
    "4c8b4328"      # mov r8, [rbx+40]
    "4c8b4b30"      # mov r9, [rbx+48]
    "0f05"          # syscall
    "48894338"      # mov [rbx+56], rax    its result
    "4883c340"      # add rbx, 64
    "ffcd"          # dec ebp
    "ebd3"          # jmp loop             (-45)
    # done:
) + _STOP_THEN_RET


# thread_info(results): prctl(PR_GET_TID_ADDRESS, &results[0]),
# sigaltstack(NULL, &results[8]) (a 24-byte stack_t), prctl(PR_GET_NAME,
# &results[48]) (16 bytes), get_robust_list(0, &results[72], &results[80]) and
# rt_sigpending(&results[96], 8), their return values at results[32], [40],
# [64], [88] and [104]: THREAD_INFO's fields, in that order.  The name and the
# robust list would be one /proc read and one system call each from rcore, for
# every thread of the freeze.
STACK_T = struct.Struct("<Qi4xQ")           # stack_t {ss_sp, ss_flags, ss_size}
THREAD_INFO = struct.Struct("<Q" + STACK_T.format[1:] + "qq" "16sq" "QQq" "Qq")
THREAD_INFO_SIZE = THREAD_INFO.size
THREAD_INFO_CODE = bytes.fromhex(
    "4989f9"        # mov r9, rdi          results
    "b89d000000"    # mov eax, 157         prctl
    "bf28000000"    # mov edi, 40          PR_GET_TID_ADDRESS
    "4c89ce"        # mov rsi, r9
    "31d2"          # xor edx, edx
    "4531d2"        # xor r10d, r10d
    "4531c0"        # xor r8d, r8d
    "0f05"          # syscall
    "49894120"      # mov [r9+32], rax
    "b883000000"    # mov eax, 131         sigaltstack
    "31ff"          # xor edi, edi         ss = NULL: only read
    "498d7108"      # lea rsi, [r9+8]      old_ss
    "0f05"          # syscall
    "49894128"      # mov [r9+40], rax
    "b89d000000"    # mov eax, 157         prctl (rdx, r10, r8 still 0)
    "bf10000000"    # mov edi, 16          PR_GET_NAME
    "498d7130"      # lea rsi, [r9+48]
    "0f05"          # syscall
    "49894140"      # mov [r9+64], rax
    "b812010000"    # mov eax, 274         get_robust_list
    "31ff"          # xor edi, edi         the calling thread
    "498d7148"      # lea rsi, [r9+72]     head
    "498d5150"      # lea rdx, [r9+80]     its length
    "0f05"          # syscall
    "49894158"      # mov [r9+88], rax
    "b87f000000"    # mov eax, 127         rt_sigpending: its pending signals, so
    "498d7960"      # lea rdi, [r9+96]     that the dump asks for their siginfo
    "be08000000"    # mov esi, 8           only when there are some
    "0f05"          # syscall
    "49894168"      # mov [r9+104], rax
) + _STOP_THEN_RET


# The dump's fork: clone from a page of rcore's code whose paths end without a
# tracer.  The parent (rax > 0, or an error) takes `ret`, as after any injected
# call.  The copy (rax = 0) names itself COPY_NAME, so that a copy left by a dead
# rcore is recognised and reaped at the next dump, and exits: it never runs the
# program.  EXIT_SITE is where rcore runs the copy's own injected calls: a
# `syscall` followed by exit_group(0).
COPY_NAME = b"rcore-dump-copy"
_EXIT = bytes.fromhex("31ff"             # xor edi, edi
                      "b8e7000000"       # mov eax, 231     exit_group
                      "0f05")            # syscall


def fork_code(page_addr):
    """(code, fork_site, exit_site): the code to place at page_addr and the
    addresses of its two `syscall`s."""
    import struct
    child = bytes.fromhex("b89d000000"            # mov eax, 157    prctl
                          "bf0f000000")           # mov edi, 15     PR_SET_NAME
    lea_at = len(child)
    child += bytes.fromhex("488d35") + b"\0\0\0\0"  # lea rsi, [rip + name]
    child += SYSCALL_INSN + _EXIT
    fork = SYSCALL_INSN + bytes.fromhex("4885c0"       # test rax, rax
                                        "7401"         # jz child
                                        "c3")          # ret
    exit_site = len(fork) + len(child)
    code = bytearray(fork + child + SYSCALL_INSN + _EXIT)
    name_at = len(code)
    lea_end = len(fork) + lea_at + 7
    struct.pack_into("<i", code, len(fork) + lea_at + 3, name_at - lea_end)
    code += COPY_NAME + b"\0"
    return bytes(code), page_addr, page_addr + exit_site


# vmsplice_loop (entered with r12 = a control pipe's read end, r13 = a 24-byte
# entry buffer): read one entry {u64 pipe, u64 address, u64 length} from the
# control pipe; vmsplice the range into that pipe (a blocking call may move only
# part: repeat); madvise(MADV_DONTNEED) the range; next entry.  At the control
# pipe's end (EOF) or on any error it calls exit_group(-rax): 0 after EOF, the
# errno otherwise.  It never traps, so that if rcore dies it ends on its own
# (its pipes' other ends close) instead of taking a signal.  Uses no stack.
STREAM_ENTRY_SIZE = 24
VMSPLICE_LOOP_CODE = bytes.fromhex(
    # next:
    "31c0"          # xor eax, eax         read
    "4489e7"        # mov edi, r12d        control pipe
    "4c89ee"        # mov rsi, r13         entry
    "ba18000000"    # mov edx, 24
    "0f05"          # syscall
    "4883f818"      # cmp rax, 24
    "7542"          # jne end              EOF or error
    "4d8b7508"      # mov r14, [r13+8]     start of the range
    "4d8b7d10"      # mov r15, [r13+16]    its length
    # more:
    "418b7d00"      # mov edi, [r13]       pipe
    "498d7508"      # lea rsi, [r13+8]     the entry's iovec
    "ba01000000"    # mov edx, 1
    "4531d2"        # xor r10d, r10d       flags
    "b816010000"    # mov eax, 278         vmsplice
    "0f05"          # syscall
    "4885c0"        # test rax, rax
    "7e1e"          # jle end
    "49014508"      # add [r13+8], rax
    "49294510"      # sub [r13+16], rax
    "75da"          # jnz more
    "4c89f7"        # mov rdi, r14
    "4c89fe"        # mov rsi, r15
    "ba04000000"    # mov edx, 4           MADV_DONTNEED
    "b81c000000"    # mov eax, 28          madvise (result ignored)
    "0f05"          # syscall
    "eba9"          # jmp next
    # end:
    "89c7"          # mov edi, eax
    "f7df"          # neg edi
    "b8e7000000"    # mov eax, 231         exit_group
    "0f05")         # syscall


def set_stream_loop(regs, pc, control_fd, entry):
    regs.rip = pc
    regs.orig_rax = U64
    regs.r12 = control_fd
    regs.r13 = entry


# --- XSAVE layout --------------------------------------------------------------
# Since Linux 6.11 the kernel writes NT_X86_XSAVE_LAYOUT after NT_X86_XSTATE: where
# each extended feature lives in the XSAVE image, which differs between CPU vendors
# (AMD places AVX-512 state at other offsets than Intel).  It comes from CPUID leaf
# 0xD, which Python cannot execute; a 30-byte function in an executable page can.
NT_X86_XSAVE_LAYOUT = 0x205
XSAVE_SW_XFEATURES = 464          # XCR0 as ptrace reports it (gdb: I386_LINUX_XSAVE_XCR0_OFFSET)
_CPUID_CODE = bytes.fromhex(
    "53"          # push rbx             (callee-saved, cpuid clobbers it)
    "4989d0"      # mov r8, rdx          (out pointer; cpuid clobbers rdx)
    "89f8"        # mov eax, edi         (leaf)
    "89f1"        # mov ecx, esi         (subleaf)
    "0fa2"        # cpuid
    "418900"      # mov [r8], eax
    "41895804"    # mov [r8+4], ebx
    "41894808"    # mov [r8+8], ecx
    "4189500c"    # mov [r8+12], edx
    "5b"          # pop rbx
    "c3")         # ret


@functools.cache
def _native(code, restype, *argtypes):
    """A function of rcore's own process made of machine code (CPUID, XGETBV,
    FXSAVE are instructions Python cannot execute), in a page of its own.
    Raises OSError where executable memory is refused."""
    import mmap
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    fn = ctypes.CFUNCTYPE(restype, *argtypes)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    fn.page = page          # the code lives as long as the function
    return fn


def cpuid(leaf, subleaf=0):
    out = (ctypes.c_uint32 * 4)()
    _native(_CPUID_CODE, None, ctypes.c_uint32, ctypes.c_uint32,
            ctypes.c_void_p)(leaf, subleaf, ctypes.addressof(out))
    return tuple(out)


def extra_thread_notes(xstate):
    """Notes the kernel writes after a thread's NT_X86_XSTATE: the XSAVE layout
    (struct x86_xfeat_component {u32 type, size, offset, flags} per extended feature
    enabled in the image's xfeatures)."""
    import struct
    if len(xstate) < XSAVE_SW_XFEATURES + 8:
        return []
    (xfeatures,) = struct.unpack_from("<Q", xstate, XSAVE_SW_XFEATURES)
    layout = _xsave_layout(xfeatures)
    return [("LINUX", NT_X86_XSAVE_LAYOUT, layout)] if layout else []


@functools.cache
def _xsave_layout(xfeatures):
    # The same for every thread of a dump (CPUID describes the CPU): asked once.
    import struct
    try:
        entries = []
        for i in range(2, 64):
            if xfeatures >> i & 1:
                size, offset, _, _ = cpuid(0xD, i)
                entries.append(struct.pack("<IIII", i, size, offset, 0))
    except (OSError, ValueError):      # no executable memory allowed here
        return b""
    return b"".join(entries)


# --- what the kernel takes back: checks before a restore or restart -------------
# A core is untrusted input.  These say whether checkpointed registers and XSAVE
# images are ones PTRACE_SETREGS and PTRACE_SETREGSET accept and a 64-bit user
# thread can run with (arch/x86/kernel/ptrace.c putreg, set_segment_reg;
# fpu/regset.c xstateregs_set; fpu/xstate.c copy_uabi_to_xstate,
# validate_user_xstate_header), so that a bad one is refused before anything
# changes.  Each raises ValueError saying what is wrong.
USER_CS, USER32_CS, USER_DS = 0x33, 0x23, 0x2B    # __USER_CS, __USER32_CS, __USER_DS
USER_RPL = 3                                      # selectors user space may load
# EFLAGS bits a user thread may hold: CF, bit 1, PF, AF, ZF, SF, TF, IF, DF, OF,
# NT, RF, AC, ID.  Not IOPL, VM, VIF, VIP, nor reserved bits.
EFLAGS_USER = 0x1 | 0x2 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800 \
    | 0x4000 | 0x10000 | 0x40000 | 0x200000
VSYSCALL = (0xFFFFFFFFFF600000, 0xFFFFFFFFFF601000)   # [vsyscall], above user space
XSAVE_HEADER = 512        # struct xstate_header: xfeatures, xcomp_bv, reserved[6]
XSAVE_MIN = XSAVE_HEADER + 64
MXCSR_OFFSET = 24         # in the legacy FXSAVE region: mxcsr, then mxcsr_mask
XFEATURES_MXCSR = 0x7     # FP | SSE | YMM: MXCSR is checked when any is present
_XGETBV_CODE = bytes.fromhex(
    "89f9"        # mov ecx, edi
    "0f01d0"      # xgetbv                edx:eax = XCR[ecx]
    "48c1e220"    # shl rdx, 32
    "4809d0"      # or rax, rdx
    "c3")         # ret
_FXSAVE_CODE = bytes.fromhex(
    "0fae07"      # fxsave [rdi]
    "c3")         # ret


@functools.cache
def task_size_max():
    """End of user space (TASK_SIZE_MAX): 47-bit addresses with 4-level page
    tables, 56-bit with 5-level (the kernel shows `la57` only when it uses it)."""
    try:
        with open("/proc/cpuinfo") as f:
            la57 = any(line.startswith("flags") and " la57" in line for line in f)
    except OSError:
        la57 = False
    return (1 << (56 if la57 else 47)) - PAGE_SIZE


@functools.cache
def user_xfeatures():
    """XCR0: the XSAVE features the kernel enabled for user space."""
    try:
        return _native(_XGETBV_CODE, ctypes.c_uint64, ctypes.c_uint32)(0)
    except OSError:
        eax, _, _, edx = cpuid(0xD, 0)      # what the CPU supports: an upper bound
        return eax | edx << 32


@functools.cache
def xsave_size():
    """The size of the XSAVE image ptrace takes (fpu_user_cfg.max_size): CPUID
    0xD.0 EBX, the standard-format size of every feature enabled in XCR0."""
    return cpuid(0xD, 0)[1]


@functools.cache
def mxcsr_mask():
    """MXCSR bits this CPU has (FXSAVE's mxcsr_mask; 0 means the default 0xffbf),
    as the kernel's mxcsr_feature_mask."""
    try:
        buf = ctypes.create_string_buffer(FXSAVE_SIZE + 16)
        addr = (ctypes.addressof(buf) + 15) & ~15          # FXSAVE wants 16-byte alignment
        _native(_FXSAVE_CODE, None, ctypes.c_void_p)(addr)
        mask = int.from_bytes(ctypes.string_at(addr + MXCSR_OFFSET + 4, 4), "little")
    except OSError:
        mask = 0xFFFF
    return mask or 0xFFBF


def check_user_regs(regs, executable=None):
    """regs: a dict of user_regs_struct fields.  executable(addr): whether addr
    is in executable memory of the checkpoint (None: not checked)."""
    for name, _ in UserRegs._fields_:
        value = regs.get(name)
        if type(value) is not int or not 0 <= value <= U64:
            raise ValueError(f"register {name} is not a 64-bit value")
    if regs["cs"] not in (USER_CS, USER32_CS):
        raise ValueError(f"cs {regs['cs']:#x} is not a user code segment "
                         f"({USER_CS:#x} or {USER32_CS:#x})")
    if regs["ss"] != USER_DS:
        raise ValueError(f"ss {regs['ss']:#x} is not the user stack segment ({USER_DS:#x})")
    for name in ("ds", "es", "fs", "gs"):
        value = regs[name]
        if value > 0xFFFF or (value and value & 3 != USER_RPL):
            raise ValueError(f"{name} {value:#x} is not a selector user space can load")
    for name in ("fs_base", "gs_base"):
        if regs[name] >= task_size_max():
            raise ValueError(f"{name} {regs[name]:#x} is outside user space")
    if regs["eflags"] & ~EFLAGS_USER:
        raise ValueError(f"eflags {regs['eflags']:#x} has bits user space cannot set "
                         f"({regs['eflags'] & ~EFLAGS_USER:#x})")
    if executable is not None and not executable(regs["rip"]):
        raise ValueError(f"rip {regs['rip']:#x} is not in executable memory of the checkpoint")


def check_xstate(data):
    """An NT_X86_XSTATE image PTRACE_SETREGSET takes: this CPU's size, the
    standard (uncompacted) format, only features enabled in XCR0, reserved
    header bytes zero, no reserved MXCSR bit.  (A dynamic feature such as AMX
    tile data also needs the process's permission: only the kernel knows.)"""
    size = xsave_size()
    if len(data) != size:
        raise ValueError(f"XSAVE image of {len(data)} bytes, this CPU's is {size}")
    if size < XSAVE_MIN:
        raise ValueError(f"this CPU's XSAVE size {size} is too small")
    xfeatures, xcomp_bv = struct.unpack_from("<QQ", data, XSAVE_HEADER)
    if xfeatures & ~user_xfeatures():
        raise ValueError(f"XSAVE features {xfeatures:#x} beyond the enabled "
                         f"{user_xfeatures():#x}")
    if xcomp_bv:
        raise ValueError(f"XSAVE image in the compacted format (xcomp_bv {xcomp_bv:#x})")
    if any(data[XSAVE_HEADER + 16: XSAVE_HEADER + 64]):
        raise ValueError("XSAVE header has reserved bytes set")
    (mxcsr,) = struct.unpack_from("<I", data, MXCSR_OFFSET)
    if xfeatures & XFEATURES_MXCSR and mxcsr & ~mxcsr_mask():
        raise ValueError(f"MXCSR {mxcsr:#x} has reserved bits set")
