/* A two-thread target for dump tests: known values in globals, on the heap, on each
 * thread's stack and in TLS; both threads then block in pause() so that memory stays
 * still while several tools look at it. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

long g_counter = 4242;
char *g_heap_str;
__thread long t_value;
static pthread_barrier_t ready;

static void *worker(void *arg)
{
    volatile long worker_local = 777;
    t_value = 2;
    pthread_barrier_wait(&ready);
    for (;;)
        pause();
    return (void *)worker_local;
}

int main(void)
{
    volatile long main_local = 31337;
    pthread_t th;
    g_heap_str = malloc(64);
    strcpy(g_heap_str, "heap string for gdb");
    t_value = 1;
    pthread_barrier_init(&ready, NULL, 2);
    pthread_create(&th, NULL, worker, NULL);
    pthread_barrier_wait(&ready);
    printf("ready %d\n", getpid());
    fflush(stdout);
    for (;;)
        pause();
    return (int)main_local;
}
