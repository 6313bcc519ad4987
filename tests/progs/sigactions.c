/* Installs a few distinct signal handlers, prints their addresses, then waits for
 * SIGUSR1 (prints "usr1" each time).  With argument "mdwe" it first forbids itself
 * to make memory executable that was not (prctl PR_SET_MDWE): rcore's injected
 * code page is then refused and it must fall back to one call per signal.  It also
 * has an alternate signal stack, for the per-thread state read the same two ways. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#define PR_MDWE_REFUSE_EXEC_GAIN 1
#endif

static volatile sig_atomic_t usr1;

static void on_usr1(int sig, siginfo_t *si, void *ctx) { (void)sig; (void)si; (void)ctx; usr1++; }
static void on_rt(int sig) { (void)sig; }

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "mdwe") == 0 &&
        prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0) {
        perror("prctl(PR_SET_MDWE)");
        return 1;
    }
    static char altstack[64 * 1024];
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack};
    if (sigaltstack(&ss, NULL) != 0) {
        perror("sigaltstack");
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_usr1;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaddset(&sa.sa_mask, SIGUSR2);
    sigaction(SIGUSR1, &sa, NULL);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_rt;
    sa.sa_flags = SA_NODEFER;
    sigaddset(&sa.sa_mask, SIGRTMIN + 5);
    sigaction(SIGRTMIN + 3, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGTERM, &sa, NULL);
    /* SIGUSR1 only comes in inside sigsuspend: one sent right after the line
     * below is not lost between a check and the wait. */
    sigset_t block, during;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, &during);
    sigdelset(&during, SIGUSR1);
    printf("%d %lu %lu\n", SIGRTMIN + 3, (unsigned long)on_usr1, (unsigned long)on_rt);
    fflush(stdout);
    int seen = 0;
    for (;;) {
        sigsuspend(&during);
        while (seen < usr1) {
            printf("usr1\n");
            fflush(stdout);
            seen++;
        }
    }
}
