/* Target for bench/lifecycle.py: MIB MiB of anonymous memory, every page written
 * with pseudo-random bytes; then, every 10 ms, it prints its CLOCK_MONOTONIC time
 * in nanoseconds and rewrites 25 pages (100 KiB: 10 MiB a second) spread over the
 * whole region, a different set each time.
 *
 * usage: lifecycle MIB */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    size_t size = strtoull(argv[1], NULL, 0) << 20, pages = size / 4096;
    uint64_t *mem = mmap(NULL, size, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint64_t x = 88172645463325252ULL, k = 0;
    if (mem == MAP_FAILED)
        return 1;
    for (size_t i = 0; i < size / 8; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        mem[i] = x;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready\n");
    for (;;) {
        printf("%llu\n", (unsigned long long)now_ns());
        for (int n = 0; n < 25; n++, k++) {
            uint64_t *page = mem + ((k * 7919) % pages) * 512;
            for (int w = 0; w < 512; w++)
                page[w] += k + w;
        }
        usleep(10000);
    }
}
