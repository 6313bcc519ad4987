/* Blocks in one system call and reports how it returned, so tests can check that a
 * dump (which interrupts the call to inject its own) lets it resume as the kernel
 * would after a signal without handler.  argv[1]: nanosleep, read, pause_with_handler. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t got;
static void on_usr1(int sig) { got = sig; }

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "nanosleep";
    printf("waiting\n");
    fflush(stdout);
    if (!strcmp(mode, "nanosleep")) {
        struct timespec ts = {1, 500 * 1000 * 1000}, rem = {0, 0};
        int r = nanosleep(&ts, &rem);
        printf("nanosleep ret=%d errno=%d\n", r, r ? errno : 0);  /* rem: unspecified on success */
    } else if (!strcmp(mode, "read")) {
        char buf[64] = {0};
        ssize_t n = read(0, buf, sizeof buf - 1);
        printf("read n=%zd errno=%d data=%s\n", n, n < 0 ? errno : 0, buf);
    } else {
        signal(SIGUSR1, on_usr1);
        int r = pause();
        printf("pause ret=%d errno=%d got=%d\n", r, errno, (int)got);
    }
    fflush(stdout);
    return 0;
}
