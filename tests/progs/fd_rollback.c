/* rcore restore (same process) puts back the state of descriptors it keeps:
   an eventfd's count, a signalfd's mask, a timerfd's setting; rcore says
   that an epoll's watches changed.  Run: wait for
   argv[1]; the first time (no file argv[2]) change all three, create argv[2]
   and wait; restored to the checkpoint, it passes argv[1] again and checks. */
#include "fd_kind_check.h"
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>

int main(int argc, char **argv)
{
    sigset_t usr1, usr2;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    int e = eventfd(5, EFD_NONBLOCK);
    int s = signalfd(-1, &usr1, 0);
    int t = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec it = {{7, 0}, {100, 0}}, off = {{0, 0}, {0, 0}};
    timerfd_settime(t, 0, &it, NULL);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    epoll_ctl(ep, EPOLL_CTL_ADD, e, &ev);
    ready_then_wait(argv[1]);

    if (access(argv[2], F_OK) != 0) {
        uint64_t v;
        read(e, &v, 8);
        v = 2;
        write(e, &v, 8);
        signalfd(s, &usr2, 0);
        timerfd_settime(t, 0, &off, NULL);
        epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
        close(open(argv[2], O_CREAT | O_WRONLY, 0600));
        printf("changed\n");
        fflush(stdout);
        for (;;)
            pause();
    }
    uint64_t v = 0;
    CHECK(read(e, &v, 8) == 8 && v == 5, "eventfd count %llu", (unsigned long long)v);
    CHECK(fdinfo_value(s, "sigmask", 16) == 1 << (SIGUSR1 - 1), "sigmask %llx",
          fdinfo_value(s, "sigmask", 16));
    struct itimerspec cur;
    timerfd_gettime(t, &cur);
    CHECK(cur.it_value.tv_sec > 60 && cur.it_interval.tv_sec == 7, "timer %ld s left, every %ld",
          (long)cur.it_value.tv_sec, (long)cur.it_interval.tv_sec);
    return verdict();
}
