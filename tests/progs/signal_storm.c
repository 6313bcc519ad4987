/* A target for signal storms: counts every SIGUSR1 and every SIGRTMIN it takes
 * (SIGRTMIN is queued, never merged, so a lost or extra one shows; handlers in
 * several threads at once: atomic counts), while its main
 * thread keeps creating and joining short threads.  SIGUSR2 makes it print
 * "usr1=N rt=M"; it also prints "ready" once, then a line every 50 ms. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile long usr1, rt, report;

static void on_usr1(int sig) { (void)sig; __atomic_fetch_add(&usr1, 1, __ATOMIC_RELAXED); }
static void on_rt(int sig) { (void)sig; __atomic_fetch_add(&rt, 1, __ATOMIC_RELAXED); }
static void on_usr2(int sig) { (void)sig; report = 1; }
static void *shortlived(void *a) { return a; }

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_flags = SA_RESTART;
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_rt;
    sigaction(SIGRTMIN, &sa, NULL);
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready\n");
    struct timespec last, now;
    clock_gettime(CLOCK_MONOTONIC, &last);
    for (;;) {
        pthread_t t;
        if (pthread_create(&t, NULL, shortlived, NULL) == 0)
            pthread_join(t, NULL);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (report || (now.tv_sec - last.tv_sec) * 1000000000L + now.tv_nsec - last.tv_nsec > 50000000L) {
            printf("%s usr1=%ld rt=%ld\n", report ? "report" : "tick", usr1, rt);
            report = 0;
            last = now;
        }
    }
}
