/* CLOCK_MONOTONIC and CLOCK_BOOTTIME across a checkpoint, 5 s dead, and a restart.
   argv[2] "continue": no step over 1 s between two readings 20 ms apart, an
   absolute timerfd on CLOCK_MONOTONIC keeps its deadline on the clock the
   program reads, and a thread in an absolute clock_nanosleep 4 s after the start
   still sleeps; "jump": both clocks stepped by more than 4 s and the sleeper woke
   (--host-clocks). */
#include "fd_kind_check.h"
#include <pthread.h>
#include <sys/timerfd.h>

static volatile int woke;
static struct timespec wake_at;

static void *sleeper(void *arg)
{
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &wake_at, NULL) != 0)
        ;
    woke = 1;
    return NULL;
}

static long long ns(clockid_t c)
{
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv)
{
    int keep = !strcmp(argv[2], "continue");
    long long start = ns(CLOCK_MONOTONIC);
    long long deadline = start + 30 * 1000000000LL;
    int tfd = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec at = {{0, 0}, {deadline / 1000000000LL, deadline % 1000000000LL}};
    timerfd_settime(tfd, TFD_TIMER_ABSTIME, &at, NULL);
    long long wake = start + 4 * 1000000000LL;
    wake_at.tv_sec = wake / 1000000000LL;
    wake_at.tv_nsec = wake % 1000000000LL;
    pthread_t th;
    pthread_create(&th, NULL, sleeper, NULL);

    printf("ready\n");
    fflush(stdout);
    long long mono = ns(CLOCK_MONOTONIC), boot = ns(CLOCK_BOOTTIME);
    long long max_mono = 0, max_boot = 0, next = mono;
    while (access(argv[1], F_OK) != 0) {
        next += 20000000;
        struct timespec t = {next / 1000000000LL, next % 1000000000LL};
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL);
        long long m = ns(CLOCK_MONOTONIC), b = ns(CLOCK_BOOTTIME);
        if (m - mono > max_mono) max_mono = m - mono;
        if (b - boot > max_boot) max_boot = b - boot;
        CHECK(m >= mono && b >= boot, "a clock went back");
        mono = m;
        boot = b;
        if (next < m)
            next = m;
    }
    printf("largest step: monotonic %.3f s, boottime %.3f s\n", max_mono / 1e9, max_boot / 1e9);
    if (keep) {
        CHECK(max_mono < 1000000000LL, "monotonic jumped %.3f s", max_mono / 1e9);
        CHECK(max_boot < 1000000000LL, "boottime jumped %.3f s", max_boot / 1e9);
        struct itimerspec cur;
        timerfd_gettime(tfd, &cur);
        double left = cur.it_value.tv_sec + cur.it_value.tv_nsec / 1e9;
        double want = (deadline - ns(CLOCK_MONOTONIC)) / 1e9;
        /* within the 1 s the clocks may step here (a loaded machine), far
           from the 5 s the process was dead */
        CHECK(left > want - 1.0 && left < want + 1.0,
              "absolute timerfd: %.3f s left, its deadline is %.3f s away", left, want);
        CHECK(!woke, "the absolute sleep to %.3f s ended at %.3f s", (wake - start) / 1e9,
              (ns(CLOCK_MONOTONIC) - start) / 1e9);
    } else {
        CHECK(max_mono > 4000000000LL, "monotonic stepped only %.3f s", max_mono / 1e9);
        CHECK(max_boot > 4000000000LL, "boottime stepped only %.3f s", max_boot / 1e9);
        CHECK(woke, "the absolute sleep past its deadline on the host's clock goes on");
    }
    return verdict();
}
