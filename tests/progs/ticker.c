/* Prints an increasing counter every 20 ms, with N MiB of touched heap (argv[1]). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 0;
    char *heap = mib ? malloc(mib << 20) : NULL;
    for (size_t i = 0; i < (mib << 20); i += 4096)
        heap[i] = (char)(i >> 12) | 1;
    struct timespec ts = {0, 20 * 1000 * 1000};
    for (long n = 0;; n++) {
        printf("%ld\n", n);
        fflush(stdout);
        nanosleep(&ts, NULL);
    }
}
