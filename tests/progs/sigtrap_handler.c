/* A SIGTRAP handler (debuggers' and JITs' breakpoints use one) must survive a
 * checkpoint: after `ready` the program waits, then raises SIGTRAP and runs an
 * int3, and checks that its handler saw both.
 *   usage: sigtrap_handler SECONDS */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static volatile sig_atomic_t traps;

static void on_trap(int sig)
{
    (void)sig;
    traps++;
}

int main(int argc, char **argv)
{
    int seconds = argc > 1 ? atoi(argv[1]) : 2;
    struct sigaction sa = { .sa_handler = on_trap };
    sigaction(SIGTRAP, &sa, NULL);
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("ready\n");
    for (int i = 0; i < seconds * 10; i++)
        usleep(100000);
    raise(SIGTRAP);
    __asm__ volatile("int3");
    printf("traps %d\n", (int)traps);
    return traps == 2 ? 0 : 1;
}
