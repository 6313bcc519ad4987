/* A benchmark target: maps MAPPED MiB of anonymous memory, fills the first
 * TOUCHED MiB with incompressible (pseudo-random) bytes, prints "ready" and then
 * either sleeps, or with TICK=1 prints its CLOCK_MONOTONIC time in nanoseconds
 * every 10 ms (the freeze benchmark measures the gaps between those lines).
 *
 * usage: heap MAPPED_MIB TOUCHED_MIB TICK */
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
    if (argc != 4) {
        fprintf(stderr, "usage: %s MAPPED_MIB TOUCHED_MIB TICK\n", argv[0]);
        return 2;
    }
    size_t mapped = strtoull(argv[1], NULL, 0) << 20;
    size_t touched = strtoull(argv[2], NULL, 0) << 20;
    int tick = atoi(argv[3]);
    uint64_t *mem = mmap(NULL, mapped, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    /* xorshift64*: fast, and its output does not compress */
    uint64_t x = 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid();
    for (size_t i = 0; i < touched / 8; i++) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        mem[i] = x * 0x2545F4914F6CDD1Dull;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready %p\n", (void *)mem);
    for (;;) {
        if (tick)
            printf("%llu\n", (unsigned long long)now_ns());
        usleep(tick ? 10000 : 1000000);
    }
}
