/* POSIX timers across a checkpoint, kill and restart: the same IDs, clocks,
   signals, sigev_value, target thread, time left and interval. */
#include "fd_kind_check.h"
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/syscall.h>

static volatile int usr1_ticks, usr1_bad_value, usr2_ticks, usr2_wrong_thread, thread_ticks;
static volatile pid_t worker_tid;

static void on_usr1(int sig, siginfo_t *si, void *ctx)
{
    usr1_ticks++;
    if (si->si_value.sival_ptr != (void *)0x1234 || si->si_code != SI_TIMER)
        usr1_bad_value++;
}

static void on_usr2(int sig, siginfo_t *si, void *ctx)
{
    usr2_ticks++;
    if (syscall(SYS_gettid) != worker_tid)
        usr2_wrong_thread++;
}

static void on_thread(union sigval v)
{
    if (v.sival_int == 77)
        thread_ticks++;
}

static void *worker(void *arg)
{
    worker_tid = syscall(SYS_gettid);
    for (;;)
        pause();
}

static double left(timer_t t)
{
    struct itimerspec cur;
    if (timer_gettime(t, &cur) != 0)
        return -1;
    return cur.it_value.tv_sec + cur.it_value.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    struct sigaction sa = {.sa_sigaction = on_usr1, .sa_flags = SA_SIGINFO | SA_RESTART};
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_sigaction = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    pthread_t th;
    pthread_create(&th, NULL, worker, NULL);
    pthread_sigmask(SIG_BLOCK, &usr2, NULL);      /* only the worker takes SIGUSR2 */
    while (!worker_tid)
        usleep(1000);

    timer_t periodic, idle, longer, to_thread, threaded;
    struct sigevent ev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR1,
                          .sigev_value.sival_ptr = (void *)0x1234};
    timer_create(CLOCK_MONOTONIC, &ev, &periodic);
    ev.sigev_notify = SIGEV_NONE;
    timer_create(CLOCK_REALTIME, &ev, &idle);
    timer_create(CLOCK_BOOTTIME, &ev, &longer);
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = SIGUSR2;
    ev._sigev_un._tid = worker_tid;
    timer_create(CLOCK_MONOTONIC, &ev, &to_thread);
    ev.sigev_notify = SIGEV_THREAD;
    ev.sigev_value.sival_int = 77;
    ev.sigev_notify_function = on_thread;
    ev.sigev_notify_attributes = NULL;
    timer_create(CLOCK_MONOTONIC, &ev, &threaded);

    struct itimerspec every = {{0, 20000000}, {0, 20000000}};
    timer_settime(periodic, 0, &every, NULL);
    timer_settime(to_thread, 0, &every, NULL);
    timer_settime(threaded, 0, &every, NULL);
    struct itimerspec hundred = {{0, 0}, {100, 0}};
    timer_settime(longer, 0, &hundred, NULL);

    ready_then_wait(argv[1]);

    CHECK(left(idle) == 0, "disarmed timer: %f", left(idle));
    double l = left(longer);
    CHECK(l > 50 && l <= 100, "one-shot timer: %.3f s left", l);
    usr1_ticks = usr2_ticks = thread_ticks = 0;
    for (int i = 0; i < 50 && !(usr1_ticks > 2 && usr2_ticks > 2 && thread_ticks > 2); i++) {
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
    }
    CHECK(usr1_ticks > 2, "signal timer ticked %d times", usr1_ticks);
    CHECK(usr2_ticks > 2, "thread-targeted timer ticked %d times", usr2_ticks);
    CHECK(thread_ticks > 2, "SIGEV_THREAD timer ran %d times", thread_ticks);
    CHECK(!usr1_bad_value, "%d signals with the wrong sigev_value", usr1_bad_value);
    CHECK(!usr2_wrong_thread, "%d signals to the wrong thread", usr2_wrong_thread);
    timer_t fresh;
    ev.sigev_notify = SIGEV_NONE;
    CHECK(timer_create(CLOCK_MONOTONIC, &ev, &fresh) == 0, "a new timer cannot be made");
    CHECK(fresh != periodic && fresh != idle && fresh != longer && fresh != to_thread,
          "a new timer took a restored one's ID");
    return verdict();
}
