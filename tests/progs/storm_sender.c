/* storm_sender PID: sends PID SIGUSR1 (kill) and SIGRTMIN (sigqueue) in turn, as
 * fast as a `kill -USR1` loop would, until SIGTERM; then prints "sent_rt=N": the
 * SIGRTMIN signals the kernel accepted (each is queued and must arrive once). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    pid_t pid = atoi(argv[1]);
    signal(SIGTERM, on_term);
    long sent_rt = 0;
    union sigval v = {0};
    while (!stop) {
        if (kill(pid, SIGUSR1) < 0 && errno == ESRCH)
            break;
        if (sigqueue(pid, SIGRTMIN, v) == 0)
            sent_rt++;
        usleep(100);
    }
    printf("sent_rt=%ld\n", sent_rt);
    return 0;
}
