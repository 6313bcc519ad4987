/* A benchmark target for tree dumps: a root and N-1 children (forked, not
 * threads), each with MIB MiB of its own incompressible (pseudo-random) memory,
 * touched after the fork so that nothing is shared copy-on-write.  Each prints
 * "ready PID" once filled, then "PID NS" (its CLOCK_MONOTONIC time in ns) every
 * 10 ms: bench/tree.py measures each process's longest gap between two lines.
 * The lines are written with one write(2) each to an O_APPEND file.
 *
 * usage: treeheap N MIB */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

static void say(const char *fmt, unsigned long long a, unsigned long long b)
{
    char line[64];
    int n = snprintf(line, sizeof line, fmt, a, b);
    if (write(1, line, n) != n)
        _exit(1);
}

static void run(size_t size)
{
    uint64_t *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        perror("mmap");
        _exit(1);
    }
    uint64_t x = 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid();
    for (size_t i = 0; i < size / 8; i++) {     /* xorshift64* */
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        mem[i] = x * 0x2545F4914F6CDD1Dull;
    }
    say("ready %llu %llu\n", (unsigned long long)getpid(), 0);
    for (;;) {
        say("%llu %llu\n", (unsigned long long)getpid(), (unsigned long long)now_ns());
        usleep(10000);
    }
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s N MIB\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[1]);
    size_t size = strtoull(argv[2], NULL, 0) << 20;
    for (int i = 1; i < n; i++) {
        if (fork() == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);   /* the bench kills the root: all go */
            run(size);
        }
    }
    run(size);
}
