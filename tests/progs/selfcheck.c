/* A target that checks its own state, for the core fuzzer (tests/test_fuzz.py).
 * Sets up memory with a pattern, a signal handler, a blocked signal, a umask,
 * a working directory, two descriptors and a second thread, prints "ready",
 * then every 10 ms checks all of it and prints "ok N" (or "FAIL what" and exits 1).
 * Print to a file opened with O_APPEND: a restore rolls file positions back.
 * Once the file GO exists in its working directory (created after the
 * checkpoint, so that only a restarted copy sees it) it runs STEPS more checks,
 * prints "done" and exits 0.
 *   usage: selfcheck WORKDIR STEPS */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define HEAP_SIZE (256 * 1024)
#define POS 5

static unsigned char *g_heap;
static unsigned char g_data[8192];
static volatile long g_thread_ticks;
static char g_workdir[4096];

static void on_usr1(int sig, siginfo_t *si, void *uc) { (void)sig; (void)si; (void)uc; }

static void *ticker(void *arg)
{
    struct timespec ts = {0, 2 * 1000 * 1000};
    (void)arg;
    for (;;) {
        g_thread_ticks++;
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void fail(const char *what)
{
    printf("FAIL %s\n", what);
    exit(1);
}

static void check(void)
{
    struct sigaction sa;
    sigset_t mask;
    char cwd[4096];
    mode_t um;

    for (size_t i = 0; i < HEAP_SIZE; i++)
        if (g_heap[i] != (unsigned char)(i * 7 + 3))
            fail("heap");
    for (size_t i = 0; i < sizeof g_data; i++)
        if (g_data[i] != (unsigned char)(i * 13 + 1))
            fail("data");
    if (sigaction(SIGUSR1, NULL, &sa) || sa.sa_sigaction != on_usr1
        || !(sa.sa_flags & SA_SIGINFO) || !(sa.sa_flags & SA_RESTART))
        fail("handler");
    if (sigprocmask(SIG_BLOCK, NULL, &mask) || !sigismember(&mask, SIGUSR2)
        || sigismember(&mask, SIGUSR1))
        fail("sigmask");
    um = umask(027);
    if (um != 027)
        fail("umask");
    if (!getcwd(cwd, sizeof cwd) || strcmp(cwd, g_workdir))
        fail("cwd");
    if (lseek(7, 0, SEEK_CUR) != POS)
        fail("fd 7 position");
    if (!(fcntl(8, F_GETFL) & O_APPEND) || !(fcntl(8, F_GETFD) & FD_CLOEXEC))
        fail("fd 8 flags");
    if (getpid() != syscall(SYS_gettid))
        fail("tid");
}

int main(int argc, char **argv)
{
    struct sigaction sa = {0};
    sigset_t mask;
    pthread_t th;
    struct timespec ts = {0, 10 * 1000 * 1000};
    long steps = argc > 2 ? atol(argv[2]) : 5, left = -1, n = 0, last_ticks = 0, go_ticks = 0;
    int fd;

    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 2 || chdir(argv[1]) || !getcwd(g_workdir, sizeof g_workdir))
        fail("usage: selfcheck WORKDIR STEPS");
    g_heap = malloc(HEAP_SIZE);
    for (size_t i = 0; i < HEAP_SIZE; i++)
        g_heap[i] = (unsigned char)(i * 7 + 3);
    for (size_t i = 0; i < sizeof g_data; i++)
        g_data[i] = (unsigned char)(i * 13 + 1);
    sa.sa_sigaction = on_usr1;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    sigemptyset(&mask);
    sigaddset(&mask, SIGUSR2);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    umask(027);
    fd = open("data", O_RDWR | O_CREAT, 0600);
    if (fd < 0 || write(fd, "0123456789", 10) != 10 || lseek(fd, POS, SEEK_SET) != POS
        || dup2(fd, 7) != 7)
        fail("setup fd 7");
    close(fd);
    fd = open("log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0 || dup3(fd, 8, O_CLOEXEC) != 8)
        fail("setup fd 8");
    close(fd);
    pthread_create(&th, NULL, ticker, NULL);
    check();
    printf("ready\n");
    for (;;) {
        nanosleep(&ts, NULL);
        check();
        if (++n % 50 == 0) {            /* the second thread runs too */
            if (g_thread_ticks == last_ticks)
                fail("thread");
            last_ticks = g_thread_ticks;
        }
        printf("ok %ld\n", n);
        if (left < 0 && access("GO", F_OK) == 0) {
            left = steps;
            go_ticks = g_thread_ticks;
        }
        if (left == 0) {
            if (g_thread_ticks == go_ticks)
                fail("thread");
            printf("done\n");
            return 0;
        }
        if (left > 0)
            left--;
    }
}
