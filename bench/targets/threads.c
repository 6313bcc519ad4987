/* A benchmark target: N threads waiting in pause(), the main thread too, and
 * one more that prints its CLOCK_MONOTONIC time in nanoseconds every 10 ms (a
 * ticker: the longest gap between two lines is the longest the process was
 * stopped, every pause of a dump counted).
 * usage: threads N   (prints "ready" once all are started) */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void *wait_forever(void *arg)
{
    for (;;)
        pause();
    return arg;
}

static void *tick(void *arg)
{
    struct timespec ts, ten_ms = {0, 10 * 1000 * 1000};
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        printf("%llu\n", (unsigned long long)ts.tv_sec * 1000000000ull + ts.tv_nsec);
        nanosleep(&ten_ms, NULL);
    }
    return arg;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 100;
    pthread_t t;
    for (int i = 0; i < n; i++) {
        if (pthread_create(&t, NULL, wait_forever, NULL) != 0) {
            perror("pthread_create");
            return 1;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready\n");
    if (pthread_create(&t, NULL, tick, NULL) != 0) {
        perror("pthread_create");
        return 1;
    }
    for (;;)
        pause();
}
