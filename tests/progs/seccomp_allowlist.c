/* A sandboxed service in the allow-list style: its seccomp filter kills the
 * process (SECCOMP_RET_KILL_PROCESS) on any system call not listed.  It prints
 * "filtering", "ready", then a line every 20 ms: "tick N SUM", SUM a checksum of a buffer it
 * filled before the filter, so a damaged memory shows. */
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define ALLOW(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), \
                  BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)

static unsigned char buf[1 << 20];

int main(void)
{
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (unsigned char)(i * 7 + 3);
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        ALLOW(SYS_write), ALLOW(SYS_clock_nanosleep), ALLOW(SYS_nanosleep),
        ALLOW(SYS_restart_syscall), ALLOW(SYS_rt_sigreturn), ALLOW(SYS_exit_group),
        ALLOW(SYS_exit),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
    };
    struct sock_fprog prog = {sizeof filter / sizeof filter[0], filter};
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("filtering\n");      /* stdio and malloc set up before the filter */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0
        || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0) {
        perror("seccomp");
        return 1;
    }
    printf("ready\n");
    for (long n = 0;; n++) {
        unsigned long sum = 0;
        for (size_t i = 0; i < sizeof buf; i += 64)
            sum = sum * 31 + buf[i];
        printf("tick %ld %lu\n", n, sum);
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
    }
}
