/* A process whose seccomp filter makes one system call fail with EPERM (as a
 * sandbox would), for test_dump_stream.py: a dump's fork copy inherits the
 * filter, so it cannot stream its memory with that call; with userfaultfd, dirty
 * tracking (test_dirty.py) cannot be armed.
 *
 * usage: seccomp_deny vmsplice|pipe2|userfaultfd MIB
 * Fills MIB MiB with a pattern (byte i of page p: (p * 13 + i) & 0xff, every
 * seventh page left zero), prints "ready ADDRESS SIZE" and waits. */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s vmsplice|pipe2|userfaultfd MIB\n", argv[0]);
        return 2;
    }
    int nr = strcmp(argv[1], "vmsplice") == 0 ? SYS_vmsplice
             : strcmp(argv[1], "userfaultfd") == 0 ? SYS_userfaultfd : SYS_pipe2;
    size_t size = strtoull(argv[2], NULL, 0) << 20;
    unsigned char *mem = mmap(NULL, size, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    for (size_t p = 0; p < size / 4096; p++)
        for (size_t i = 0; i < 4096; i++)
            mem[p * 4096 + i] = p % 7 ? (unsigned char)(p * 13 + i) : 0;
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof filter / sizeof filter[0], filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0
        || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0) {
        perror("seccomp");
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready %p %zu\n", (void *)mem, size);
    for (;;)
        pause();
}
