/* Four long-lived threads plus a main thread that keeps creating and joining short
 * threads: a dump must catch a consistent thread set while threads come and go. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static volatile long spins;
static void *shortlived(void *a) { spins++; return a; }
static void *longlived(void *a) { for (;;) { spins++; usleep(1000); } return a; }

int main(void)
{
    pthread_t t;
    for (int i = 0; i < 4; i++)
        pthread_create(&t, NULL, longlived, NULL);
    printf("ready\n");
    fflush(stdout);
    for (long n = 0;; n++) {
        pthread_create(&t, NULL, shortlived, NULL);
        pthread_join(t, NULL);
        if (n % 1000 == 0) {
            printf("%ld\n", n);
            fflush(stdout);
        }
    }
}
