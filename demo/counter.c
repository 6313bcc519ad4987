/* The demo's sample program: counts, keeping its state in a heap-allocated struct and
 * appending each step to a log file, so that a restart visibly goes on from where the
 * checkpoint was taken. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

struct state { long count; double sum; };

int main(int argc, char **argv)
{
    FILE *log = fopen(argc > 1 ? argv[1] : "counter.log", "a");
    struct state *s = calloc(1, sizeof *s);
    struct timespec ts = {0, 250 * 1000 * 1000};
    for (;;) {
        s->count++;
        s->sum += s->count * 0.5;
        printf("count %ld sum %.1f (pid %d)\n", s->count, s->sum, getpid());
        fprintf(log, "%ld\n", s->count);
        fflush(stdout);
        fflush(log);
        nanosleep(&ts, NULL);
    }
}
