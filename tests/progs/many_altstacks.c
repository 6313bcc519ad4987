/* N threads (argv[1]), each with a signal stack of its own size (16 KiB + i
 * pages), a signal mask of its own (SIGRTMIN + i % 16 blocked) and a name of
 * its own ("alt-I", I its number; a robust list of its own comes from glibc), printing
 * "tid size" once set up; then every thread waits in pause().  A dump reads each
 * thread's sigaltstack, clear_child_tid, name and robust list by code run in
 * all threads at once. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static pthread_mutex_t out = PTHREAD_MUTEX_INITIALIZER;

static void *worker(void *arg)
{
    long i = (long)arg;
    stack_t ss = {.ss_size = 16384 + i * 4096, .ss_flags = 0};
    sigset_t set;
    char name[16];
    snprintf(name, sizeof(name), "alt-%ld", i);
    pthread_setname_np(pthread_self(), name);
    ss.ss_sp = malloc(ss.ss_size);
    if (sigaltstack(&ss, NULL) != 0) {
        perror("sigaltstack");
        exit(1);
    }
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN + (int)(i % 16));
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    pthread_mutex_lock(&out);
    printf("%d %zu\n", gettid(), ss.ss_size);
    fflush(stdout);
    pthread_mutex_unlock(&out);
    for (;;)
        pause();
    return NULL;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 300;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    for (long i = 0; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, &attr, worker, (void *)i) != 0) {
            perror("pthread_create");
            return 1;
        }
    }
    for (;;)
        pause();
}
