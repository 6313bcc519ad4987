/* timerfd: relative and absolute timers, intervals, clocks, unread expirations. */
#include "fd_kind_check.h"
#include <fcntl.h>
#include <stdint.h>
#include <sys/timerfd.h>

static double secs(struct timespec t) { return t.tv_sec + t.tv_nsec / 1e9; }

int main(int argc, char **argv)
{
    int rel = timerfd_create(CLOCK_BOOTTIME, 0);
    struct itimerspec it = {{7, 0}, {100, 0}};              /* interval 7 s, 100 s left */
    timerfd_settime(rel, 0, &it, NULL);

    int fired = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct itimerspec once = {{0, 0}, {0, 1000000}};        /* 1 ms, then disarmed */
    timerfd_settime(fired, 0, &once, NULL);

    int absolute = timerfd_create(CLOCK_REALTIME, 0);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    time_t deadline = now.tv_sec + 1000;
    struct itimerspec at = {{0, 0}, {deadline, 0}};
    timerfd_settime(absolute, TFD_TIMER_ABSTIME, &at, NULL);

    int idle = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct timespec ms = {0, 20000000};
    nanosleep(&ms, NULL);                                    /* `fired` expires once */
    ready_then_wait(argv[1]);

    struct itimerspec cur;
    timerfd_gettime(rel, &cur);
    CHECK(secs(cur.it_value) > 60 && secs(cur.it_value) <= 100, "left %.3f s",
          secs(cur.it_value));
    CHECK(cur.it_interval.tv_sec == 7 && cur.it_interval.tv_nsec == 0, "interval %.3f",
          secs(cur.it_interval));
    CHECK(fdinfo_value(rel, "clockid", 10) == CLOCK_BOOTTIME, "clock %lld",
          fdinfo_value(rel, "clockid", 10));

    uint64_t ticks = 0;
    CHECK(read(fired, &ticks, 8) == 8 && ticks == 1, "unread expirations %llu",
          (unsigned long long)ticks);
    CHECK(read(fired, &ticks, 8) == -1 && errno == EAGAIN, "fired timer still readable");

    timerfd_gettime(absolute, &cur);
    clock_gettime(CLOCK_REALTIME, &now);
    double left = secs(cur.it_value), want = deadline - secs(now);
    CHECK(left > want - 2 && left < want + 2, "absolute timer: %.3f s left, want %.3f",
          left, want);
    CHECK(fdinfo_value(absolute, "settime flags", 8) == TFD_TIMER_ABSTIME, "not absolute");

    timerfd_gettime(idle, &cur);
    CHECK(cur.it_value.tv_sec == 0 && cur.it_value.tv_nsec == 0, "idle timer armed");
    CHECK(read(idle, &ticks, 8) == -1 && errno == EAGAIN, "idle timer readable or blocking");
    return verdict();
}
