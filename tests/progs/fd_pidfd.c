/* pidfd: of the process itself (one blocking, one PIDFD_NONBLOCK) and of one of
   its threads (PIDFD_THREAD); with argv[2] "child", also of a child process,
   which a restart must refuse. */
#include "fd_kind_check.h"
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL
#endif

static volatile pid_t thread_tid;
static volatile sig_atomic_t got;

static void *idle(void *arg)
{
    thread_tid = syscall(SYS_gettid);
    for (;;)
        pause();
    return arg;
}

static void on_usr1(int sig) { got = sig; }

int main(int argc, char **argv)
{
    pthread_t t;
    pthread_create(&t, NULL, idle, NULL);
    while (!thread_tid)
        usleep(1000);
    signal(SIGUSR1, on_usr1);
    int self = syscall(SYS_pidfd_open, getpid(), 0);
    int nonblock = syscall(SYS_pidfd_open, getpid(), O_NONBLOCK);
    int thread = syscall(SYS_pidfd_open, thread_tid, PIDFD_THREAD);
    int shared = dup(self);
    if (argc > 2 && !strcmp(argv[2], "child")) {
        pid_t child = fork();
        if (child == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            for (;;)
                pause();
        }
        syscall(SYS_pidfd_open, child, 0);
    }
    ready_then_wait(argv[1]);

    CHECK(fdinfo_value(self, "Pid", 10) == getpid(), "Pid %lld", fdinfo_value(self, "Pid", 10));
    CHECK(fdinfo_value(thread, "Pid", 10) == thread_tid, "thread Pid %lld",
          fdinfo_value(thread, "Pid", 10));
    CHECK(fcntl(nonblock, F_GETFL) & O_NONBLOCK, "lost PIDFD_NONBLOCK");
    CHECK(fcntl(thread, F_GETFL) & PIDFD_THREAD, "lost PIDFD_THREAD");
    CHECK(fcntl(self, F_GETFD) == FD_CLOEXEC && fcntl(thread, F_GETFD) == FD_CLOEXEC,
          "pidfd_open's close-on-exec lost");
    CHECK(fcntl(shared, F_GETFD) == 0, "the dup became close-on-exec");
    struct pollfd p = {self, POLLIN, 0};
    CHECK(poll(&p, 1, 0) == 0, "the process looks exited");
    CHECK(syscall(SYS_pidfd_send_signal, shared, SIGUSR1, NULL, 0) == 0, "pidfd_send_signal");
    CHECK(got == SIGUSR1, "signal through the pidfd not received");
    return verdict();
}
