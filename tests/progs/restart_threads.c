/* Four worker threads, each counting in thread-local storage and in a shared
 * counter under a mutex (error-checking, so that a wrong cached TID in the
 * restarted process would show), with small sleeps so a checkpoint finds them
 * in nanosleep, in the mutex or running.  At the end main joins them and checks
 * that the shared count equals the sum of the thread-local ones, and that
 * pthread_kill (which uses glibc's cached TIDs) still reaches the threads.
 *   usage: restart_threads ITERATIONS */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define NTHREADS 4

static pthread_mutex_t g_lock;
static long g_shared;
static __thread long t_count;
static __thread long t_id;
static long g_results[NTHREADS];
static long g_tids_ok[NTHREADS];
static int g_iters;
static volatile int g_release;

static void *worker(void *arg)
{
    long id = (long)arg;
    struct timespec ts = { 0, 2000000 };
    t_id = id * 1000;
    for (int i = 0; i < g_iters; i++) {
        if (pthread_mutex_lock(&g_lock) != 0)
            abort();
        g_shared++;
        t_count++;
        if (pthread_mutex_unlock(&g_lock) != 0)
            abort();
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
        ts.tv_sec = 0;
        ts.tv_nsec = 2000000;
    }
    g_tids_ok[id] = syscall(SYS_gettid) > 0 && t_id == id * 1000;
    g_results[id] = t_count;
    while (!g_release)          /* wait for main's pthread_kill check */
        usleep(1000);
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t th[NTHREADS];
    pthread_mutexattr_t attr;
    long sum = 0;
    int kill_ok = 1;

    g_iters = argc > 1 ? atoi(argv[1]) : 500;
    setvbuf(stdout, NULL, _IONBF, 0);
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_init(&g_lock, &attr);
    for (long i = 0; i < NTHREADS; i++)
        pthread_create(&th[i], NULL, worker, (void *)i);
    printf("started\n");
    for (;;) {
        long done = 0;
        for (int i = 0; i < NTHREADS; i++)
            done += g_results[i] != 0;
        if (done == NTHREADS)
            break;
        usleep(5000);
    }
    for (int i = 0; i < NTHREADS; i++)
        kill_ok &= pthread_kill(th[i], 0) == 0;
    g_release = 1;
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
        sum += g_results[i];
        printf("thread %d count %ld tls %s\n", i, g_results[i], g_tids_ok[i] ? "ok" : "fail");
    }
    printf("shared %ld sum %ld %s\n", g_shared, sum,
           g_shared == sum && sum == (long)NTHREADS * g_iters ? "ok" : "fail");
    printf("pthread_kill %s\n", kill_ok ? "ok" : "fail");
    return 0;
}
