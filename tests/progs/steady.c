/* A target that notices any harm: for fault tests (rcore killed mid-dump).
 *
 * usage: steady [MIB] [THREADS]
 * MIB MiB (default 16) filled with a pattern; THREADS workers (default 2) each
 * loop in assembly with rbx, r12-r15, ymm8 and ymm9 holding values derived from a
 * seed, spin, and check them; they also check their signal mask and sigaltstack.
 * The main thread sleeps 5 ms at a time (a call that restarts through the
 * kernel's restart block), checks a sample of the memory each round and all of
 * it every 100 rounds, and prints "ok PID ROUND"; on any damage it prints
 * "BAD PID what" and exits 3.  A line from another PID means a copy of the
 * process ran the program. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static unsigned char *mem;
static size_t size;
static unsigned long sum0;
static volatile int bad;
static volatile const char *bad_what;
static volatile long handled;

static void on_usr1(int sig) { (void)sig; __atomic_fetch_add(&handled, 1, __ATOMIC_RELAXED); }

static unsigned long checksum(size_t step)
{
    unsigned long s = 0;
    for (size_t i = 0; i < size; i += step)
        s = s * 1000003 + mem[i];
    return s;
}

static void fail(const char *what)
{
    if (!bad) {
        bad_what = what;
        bad = 1;
    }
}

/* 0 when every register kept its value through the spin. */
static long regs_kept(unsigned long seed)
{
    long res;
    __asm__ volatile(
        "mov %[s], %%rbx\n\t"
        "lea 1(%[s]), %%r12\n\t"
        "lea 2(%[s]), %%r13\n\t"
        "lea 3(%[s]), %%r14\n\t"
        "lea 4(%[s]), %%r15\n\t"
        "vmovq %[s], %%xmm8\n\t"
        "vpbroadcastq %%xmm8, %%ymm8\n\t"
        "vpaddq %%ymm8, %%ymm8, %%ymm9\n\t"
        "mov $200000, %%ecx\n"
        "1:\n\t"
        "dec %%ecx\n\t"
        "jnz 1b\n\t"
        "mov $1, %%eax\n\t"
        "cmp %[s], %%rbx\n\tjne 2f\n\t"
        "lea 1(%[s]), %%rdx\n\tcmp %%rdx, %%r12\n\tjne 2f\n\t"
        "lea 2(%[s]), %%rdx\n\tcmp %%rdx, %%r13\n\tjne 2f\n\t"
        "lea 3(%[s]), %%rdx\n\tcmp %%rdx, %%r14\n\tjne 2f\n\t"
        "lea 4(%[s]), %%rdx\n\tcmp %%rdx, %%r15\n\tjne 2f\n\t"
        "mov $2, %%eax\n\t"
        "vmovq %[s], %%xmm0\n\t"
        "vpbroadcastq %%xmm0, %%ymm0\n\t"
        "vpcmpeqq %%ymm0, %%ymm8, %%ymm1\n\t"
        "vpmovmskb %%ymm1, %%edx\n\t"
        "cmp $-1, %%edx\n\tjne 2f\n\t"
        "vpaddq %%ymm0, %%ymm0, %%ymm0\n\t"
        "vpcmpeqq %%ymm0, %%ymm9, %%ymm1\n\t"
        "vpmovmskb %%ymm1, %%edx\n\t"
        "cmp $-1, %%edx\n\tjne 2f\n\t"
        "xor %%eax, %%eax\n"
        "2:\n\t"
        "vzeroupper\n\t"
        : "=&a"(res)
        : [s] "r"(seed)
        : "rbx", "rcx", "rdx", "r12", "r13", "r14", "r15", "xmm0", "xmm1", "xmm8",
          "xmm9", "cc", "memory");
    return res;
}

static void *worker(void *arg)
{
    unsigned long seed = (unsigned long)arg * 0x9e3779b97f4a7c15UL;
    sigset_t want, cur;
    sigemptyset(&want);
    sigaddset(&want, SIGUSR2);
    sigaddset(&want, SIGWINCH);
    pthread_sigmask(SIG_SETMASK, &want, NULL);
    stack_t ss = {.ss_sp = malloc(65536), .ss_size = 65536, .ss_flags = 0}, now;
    sigaltstack(&ss, NULL);
    for (;;) {
        seed++;
        long r = regs_kept(seed);
        if (r)
            fail(r == 1 ? "general registers" : "vector registers");
        pthread_sigmask(SIG_BLOCK, NULL, &cur);
        if (memcmp(&cur, &want, sizeof cur) != 0)
            fail("signal mask");
        sigaltstack(NULL, &now);
        if (now.ss_sp != ss.ss_sp || now.ss_size != ss.ss_size || now.ss_flags != 0)
            fail("sigaltstack");
    }
    return NULL;
}

int main(int argc, char **argv)
{
    size = (argc > 1 ? strtoull(argv[1], NULL, 0) : 16) << 20;
    int nthreads = argc > 2 ? atoi(argv[2]) : 2;
    mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (size_t i = 0; i < size; i++)
        mem[i] = (unsigned char)(i * 131 + (i >> 12));
    sum0 = checksum(1);
    struct sigaction sa = {.sa_handler = on_usr1, .sa_flags = SA_RESTART};
    sigaction(SIGUSR1, &sa, NULL);
    for (long i = 0; i < nthreads; i++) {
        pthread_t t;
        pthread_create(&t, NULL, worker, (void *)(i + 1));
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    pid_t pid = getpid();
    unsigned long sample0 = checksum(4096 * 7 + 1);
    for (long round = 0;; round++) {
        struct timespec ts = {0, 5000000};
        while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR)
            ;   /* a signal's handler, or a dump's context put back without rcore */
        if (checksum(4096 * 7 + 1) != sample0 || (round % 100 == 0 && checksum(1) != sum0))
            fail("memory");
        if (getpid() != pid)
            fail("pid");
        if (bad) {
            printf("BAD %d %s\n", pid, bad_what);
            exit(3);
        }
        printf("ok %d %ld\n", pid, round);
    }
}
