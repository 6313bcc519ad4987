/* Watches for children it never made: counts SIGCHLD and polls wait(-1).  A dump's
 * fork copy must stay invisible to both.  argv[1]: MiB of touched heap, so that the
 * copy lives long enough to be looked for many times. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

static volatile sig_atomic_t sigchld;
static void on_chld(int sig) { (void)sig; sigchld++; }

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 0;
    char *heap = malloc((mib << 20) + 1);
    for (size_t i = 0; i < (mib << 20); i += 4096)
        heap[i] = 1;
    struct sigaction sa = {0};
    sa.sa_handler = on_chld;
    sigaction(SIGCHLD, &sa, NULL);
    struct timespec ts = {0, 5 * 1000 * 1000};
    for (long n = 0;; n++) {
        int status;
        pid_t got = waitpid(-1, &status, WNOHANG);
        printf("%ld sigchld=%d wait=%d errno=%d\n", n, (int)sigchld, (int)got,
               got < 0 ? errno : 0);
        fflush(stdout);
        nanosleep(&ts, NULL);
    }
}
