/* A thread that spins inside an rseq critical section (glibc's registration):
 * whenever the kernel preempts or signals it there, it must resume at the abort
 * handler, which counts the abort and enters the section again.  SIGUSR1 (a
 * handler that does nothing) goes to that thread only: each one is an abort.
 * The main thread prints "aborts N" every 20 ms. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/rseq.h>
#include <unistd.h>

static volatile long aborts;

static void on_usr1(int sig) { (void)sig; }

static void *spin(void *arg)
{
    (void)arg;
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_UNBLOCK, &usr1, NULL);
    struct rseq *rs = (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
    __asm__ volatile(
        ".pushsection .data.rseq_spin, \"aw\"\n\t"
        ".balign 32\n"
        "cs_desc:\n\t"
        ".long 0, 0\n\t"
        ".quad 1f, 2f - 1f, 4f\n\t"
        ".popsection\n"
        "0:\n\t"
        "lea cs_desc(%%rip), %%rax\n\t"
        "mov %%rax, 8(%[rs])\n"
        "1:\n\t"
        "jmp 1b\n"
        "2:\n\t"
        ".long 0x53053053\n"      /* RSEQ_SIG, right before the abort handler */
        "4:\n\t"
        "lock incq %[aborts]\n\t"
        "jmp 0b\n\t"
        : [aborts] "+m"(aborts)
        : [rs] "r"(rs)
        : "rax", "memory", "cc");
    return NULL;
}

int main(void)
{
    if (__rseq_size == 0) {
        printf("no rseq\n");
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_usr1};
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, NULL);
    pthread_t t;
    pthread_create(&t, NULL, spin, NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (;;) {
        printf("aborts %ld\n", aborts);
        usleep(20000);
    }
}
