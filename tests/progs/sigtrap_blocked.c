/* A program that blocks SIGTRAP and has a handler for it.  rcore's injected
 * calls end in int3, a forced SIGTRAP: delivered while blocked, the kernel resets
 * the handler to SIG_DFL.  A dump must leave the handler in place.  After `ready`
 * it waits for SIGUSR1, then unblocks SIGTRAP, raises it and reports.
 *   usage: sigtrap_blocked */
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

static volatile sig_atomic_t traps, go;

static void on_trap(int sig) { (void)sig; traps++; }
static void on_usr1(int sig) { (void)sig; go = 1; }

int main(void)
{
    struct sigaction trap = { .sa_handler = on_trap }, usr1 = { .sa_handler = on_usr1 };
    sigset_t set;
    sigaction(SIGTRAP, &trap, NULL);
    sigaction(SIGUSR1, &usr1, NULL);
    sigemptyset(&set);
    sigaddset(&set, SIGTRAP);
    sigprocmask(SIG_BLOCK, &set, NULL);
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("ready\n");
    while (!go)
        usleep(10000);     /* not pause(): see KERNEL-NOTES on signals after a dump */
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    raise(SIGTRAP);
    printf("traps %d\n", (int)traps);
    return traps == 1 ? 0 : 1;
}
