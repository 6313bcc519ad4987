/* A parent-death signal and an exit signal other than SIGCHLD, across a restart.
   The root (a child subreaper) has child m, whose child g set
   prctl(PR_SET_PDEATHSIG, SIGUSR1), and child c made by clone() with exit signal
   SIGUSR2.  After the go file (argv[1]): c exits 4, and the root prints which
   signal it got for it ("c exit signal N": the test wants SIGUSR2, or a restart
   that says it could not keep it); then the root tells m to exit (SIGUSR1), so g
   must get its SIGUSR1 (it exits 0 only then) and is reparented to the root. */
#include "fd_kind_check.h"
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

static const char *go;
static int ready_fd[2];

static void say_ready(void)
{
    close(ready_fd[0]);                 /* only the root reads it */
    CHECK(write(ready_fd[1], "r", 1) == 1, "ready byte");
    close(ready_fd[1]);
}

/* Wait (bounded) for one of the blocked signals sig1, sig2 from process `from`
   (any process if 0), letting others go; the signal, or -1. */
static int await_signal(int sig1, int sig2, pid_t from)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig1);
    sigaddset(&set, sig2);
    siginfo_t si;
    struct timespec limit = {30, 0};
    int got;
    while ((got = sigtimedwait(&set, &si, &limit)) > 0 || errno == EINTR)
        if (got > 0 && (!from || si.si_pid == from))
            return got;
    return -1;
}

static int clone_child(void *arg)
{
    (void)arg;
    say_ready();
    wait_go(go);
    return 4;
}

int main(int argc, char **argv)
{
    go = argv[1];
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigaddset(&block, SIGUSR2);
    sigaddset(&block, SIGCHLD);
    sigprocmask(SIG_BLOCK, &block, NULL);   /* inherited: each waits with sigtimedwait */
    CHECK(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0, "subreaper");
    CHECK(pipe(ready_fd) == 0, "pipe");
    fflush(stdout);

    pid_t m = fork();
    if (m == 0) {
        pid_t g = fork();
        if (g == 0) {
            CHECK(prctl(PR_SET_PDEATHSIG, SIGUSR1) == 0, "PR_SET_PDEATHSIG");
            pid_t m_pid = getppid();
            say_ready();
            wait_go(go);
            int sig = 0;
            CHECK(prctl(PR_GET_PDEATHSIG, &sig) == 0 && sig == SIGUSR1, "g: pdeath signal %d", sig);
            CHECK(await_signal(SIGUSR1, SIGUSR1, 0) == SIGUSR1, "g: no SIGUSR1 when its parent %d exited",
                  (int)m_pid);
            exit(failures != 0);
        }
        close(ready_fd[0]);
        close(ready_fd[1]);
        wait_go(go);
        CHECK(await_signal(SIGUSR1, SIGUSR1, getppid()) == SIGUSR1, "m: no SIGUSR1 from the root");
        exit(failures != 0);            /* g gets SIGUSR1 now */
    }
    static char stack[64 * 1024];
    pid_t c = clone(clone_child, stack + sizeof stack, SIGUSR2, NULL);
    CHECK(c > 0, "clone");
    close(ready_fd[1]);
    char byte;
    for (int n = 0; n < 2; n++)         /* g and c set up */
        CHECK(read(ready_fd[0], &byte, 1) == 1, "ready byte %d of 2", n);
    close(ready_fd[0]);
    printf("m %d c %d\n", (int)m, (int)c);
    ready_then_wait(go);

    int sig = await_signal(SIGUSR2, SIGCHLD, c);
    printf("c exit signal %d\n", sig);
    CHECK(sig > 0, "no signal when the clone child %d exited", (int)c);
    int status = 0;
    CHECK(waitpid(c, &status, __WALL) == c, "wait for c");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 4, "c's status 0x%x, expected exit 4", status);
    CHECK(kill(m, SIGUSR1) == 0, "tell m to exit");
    CHECK(waitpid(m, &status, 0) == m, "wait for m");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "m's status 0x%x", status);
    pid_t g = waitpid(-1, &status, 0);  /* reparented to us, the subreaper */
    CHECK(g > 0, "wait for g (reparented to the subreaper)");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "g's status 0x%x (1: no SIGUSR1)", status);
    errno = 0;
    CHECK(waitpid(-1, &status, __WALL | WNOHANG) < 0 && errno == ECHILD, "a child left");
    return verdict();
}
