/* Signals pending for one thread that is not the leader: thread 1 blocks
 * SIGUSR1 and SIGRTMIN+3 and queues both to itself (the RT one with a value);
 * thread 2 has nothing pending.  On SIGUSR2 (caught by whichever thread), each
 * thread reports what it finds pending and takes it: the same before a dump
 * and after a restart. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t g_go;
static pthread_barrier_t g_ready;

static void on_usr2(int sig) { (void)sig; g_go = 1; }

static void wait_go(void)
{
    struct timespec ts = {0, 5 * 1000 * 1000};
    while (!g_go)
        nanosleep(&ts, NULL);
}

static void *first(void *arg)
{
    sigset_t set;
    siginfo_t si;
    struct timespec zero = {0, 0};
    (void)arg;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGRTMIN + 3);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    memset(&si, 0, sizeof si);
    si.si_signo = SIGRTMIN + 3;
    si.si_code = SI_QUEUE;
    si.si_pid = getpid();
    si.si_uid = getuid();
    si.si_value.sival_int = 555;
    syscall(SYS_rt_tgsigqueueinfo, getpid(), syscall(SYS_gettid), SIGRTMIN + 3, &si);
    syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), SIGUSR1);
    pthread_barrier_wait(&g_ready);
    wait_go();
    for (int i = 0; i < 2; i++) {
        int sig = sigtimedwait(&set, &si, &zero);
        printf("first %s %d\n", sig == SIGUSR1 ? "SIGUSR1" : sig == SIGRTMIN + 3 ? "RTMIN+3" : "none",
               sig == SIGRTMIN + 3 ? si.si_value.sival_int : 0);
    }
    return NULL;
}

static void *second(void *arg)
{
    sigset_t set;
    (void)arg;
    pthread_barrier_wait(&g_ready);
    wait_go();
    sigpending(&set);
    printf("second pending %s\n", sigisemptyset(&set) ? "none" : "some");
    return NULL;
}

int main(void)
{
    pthread_t a, b;
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGUSR2, on_usr2);
    pthread_barrier_init(&g_ready, NULL, 3);
    pthread_create(&a, NULL, first, NULL);
    pthread_create(&b, NULL, second, NULL);
    pthread_barrier_wait(&g_ready);
    printf("ready\n");
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    printf("done\n");
    return 0;
}
