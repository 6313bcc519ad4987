/* Single-threaded state that `rcore restart` must give back to a new process.
 * Sets everything up, then counts steps (100 ms each, in nanosleep so that a
 * checkpoint usually finds it inside a system call), and at the end checks each
 * piece of state and prints "check NAME ok" or "check NAME fail <why>".  The
 * output of an uninterrupted run and of a run checkpointed, killed and
 * restarted must be byte-identical.
 *   usage: restart_state WORKDIR STEPS */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define RTSIG (SIGRTMIN + 3)
#define RTSIG_THREAD (SIGRTMIN + 4)

struct node { struct node *next; long value; };

static long g_global = 1234567;
static struct node *g_list;
static char g_exe[4096], g_cmdline[8192], g_environ[65536];
static ssize_t g_cmdline_len, g_environ_len;
static char g_workdir[4096];
static char g_altstack[65536];
static volatile sig_atomic_t g_usr1_on_altstack = -1, g_rt_value = -1, g_rt_code = 99;
static volatile sig_atomic_t g_rt_thread_value = -1;
static volatile sig_atomic_t g_ticks;
static int g_append_fd, g_unlinked_fd, g_pipe[2], g_fifo[2], g_dir_fd, g_zero_fd;
static struct stat g_dir_st;
static unsigned *g_big;
static char *g_deleted_map;             /* private mapping of a file deleted since */                 /* 4 MiB of anonymous memory with a pattern */
#define BIG_WORDS (1u << 20)
static pid_t g_pid;

static void on_usr1(int sig, siginfo_t *si, void *uc)
{
    char here;
    (void)sig; (void)si; (void)uc;
    g_usr1_on_altstack = (&here >= g_altstack && &here < g_altstack + sizeof g_altstack);
}

static void on_rt(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    if (sig == RTSIG_THREAD) {
        g_rt_thread_value = si->si_value.sival_int;
        return;
    }
    g_rt_value = si->si_value.sival_int;
    g_rt_code = si->si_code;
}

static void on_alarm(int sig) { (void)sig; g_ticks++; }

static ssize_t slurp(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY);
    ssize_t n, total = 0;
    if (fd < 0)
        return -1;
    while ((n = read(fd, buf + total, size - total)) > 0)
        total += n;
    close(fd);
    return total;
}

static void nap(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 }, rem;
    while (nanosleep(&ts, &rem) < 0 && errno == EINTR)
        ts = rem;
}

static void check(const char *name, int ok, const char *why)
{
    if (ok)
        printf("check %s ok\n", name);
    else
        printf("check %s fail %s\n", name, why);
}

static void setup(const char *workdir)
{
    struct sigaction sa;
    stack_t ss = { .ss_sp = g_altstack, .ss_size = sizeof g_altstack };
    struct rlimit rl = { 321, 654 };
    struct itimerval it = { { 0, 50000 }, { 0, 50000 } };
    sigset_t set;
    union sigval v = { .sival_int = 4242 };
    int fd;

    g_pid = getpid();
    if (chdir(workdir) < 0) { perror("chdir"); exit(2); }
    getcwd(g_workdir, sizeof g_workdir);
    umask(027);
    setrlimit(RLIMIT_NOFILE, &rl);
    readlink("/proc/self/exe", g_exe, sizeof g_exe - 1);
    g_cmdline_len = slurp("/proc/self/cmdline", g_cmdline, sizeof g_cmdline);
    g_environ_len = slurp("/proc/self/environ", g_environ, sizeof g_environ);

    for (long i = 1; i <= 1000; i++) {
        struct node *n = malloc(sizeof *n);
        n->value = i * 7;
        n->next = g_list;
        g_list = n;
    }

    sigaltstack(&ss, NULL);
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_usr1;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_sigaction = on_rt;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(RTSIG, &sa, NULL);
    sigaction(RTSIG_THREAD, &sa, NULL);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);

    sigemptyset(&set);
    sigaddset(&set, RTSIG);
    sigaddset(&set, RTSIG_THREAD);
    sigaddset(&set, SIGUSR2);
    sigprocmask(SIG_BLOCK, &set, NULL);
    sigqueue(getpid(), RTSIG, v);       /* stays pending until the end */
    {
        /* and one pending for this thread only, with its own value */
        siginfo_t si;
        memset(&si, 0, sizeof si);
        si.si_signo = RTSIG_THREAD;
        si.si_code = SI_QUEUE;
        si.si_pid = getpid();
        si.si_uid = getuid();
        si.si_value.sival_int = 777;
        syscall(SYS_rt_tgsigqueueinfo, getpid(), syscall(SYS_gettid), RTSIG_THREAD, &si);
    }
    setitimer(ITIMER_REAL, &it, NULL);

    g_append_fd = open("append.log", O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0666);
    fd = open("unlinked.tmp", O_RDWR | O_CREAT | O_TRUNC, 0600);
    write(fd, "secret data 12345", 17);
    unlink("unlinked.tmp");
    lseek(fd, 7, SEEK_SET);
    g_unlinked_fd = fd;
    pipe(g_pipe);
    write(g_pipe[1], "queued-bytes-in-pipe", 20);
    fcntl(g_pipe[0], F_SETFL, fcntl(g_pipe[0], F_GETFL) | O_NONBLOCK);
    mkfifo("fifo", 0600);
    g_fifo[0] = open("fifo", O_RDONLY | O_NONBLOCK);
    g_fifo[1] = open("fifo", O_WRONLY);
    write(g_fifo[1], "fifo-bytes", 10);
    g_dir_fd = open(".", O_RDONLY | O_DIRECTORY);
    fstat(g_dir_fd, &g_dir_st);
    g_zero_fd = open("/dev/zero", O_RDONLY);
    fd = open("mapped.dat", O_RDWR | O_CREAT | O_TRUNC, 0600);
    write(fd, "file page one", 13);
    ftruncate(fd, 8192);
    g_deleted_map = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    close(fd);
    unlink("mapped.dat");
    memcpy(g_deleted_map + 4096, "written page two", 16);
    g_big = mmap(NULL, BIG_WORDS * 4, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (unsigned i = 0; i < BIG_WORDS; i += 3)   /* some pages stay zero */
        if ((i >> 10) % 4 != 1)
            g_big[i] = i * 2654435761u;
}

static void final_checks(void)
{
    char buf[65536], why[256];
    struct rlimit rl;
    struct itimerval it;
    struct timespec a, b;
    sigset_t set;
    ssize_t n;
    long sum = 0;
    mode_t m;
    int flags;

    check("pid", getpid() == g_pid && syscall(SYS_getpid) == g_pid, "getpid differs");
    check("global", g_global == 1234567, "global changed");
    for (struct node *p = g_list; p; p = p->next)
        sum += p->value;
    check("heap", sum == 7L * 1000 * 1001 / 2, "list sum differs");
    {
        int ok = 1;
        for (unsigned i = 0; ok && i < BIG_WORDS; i++)
            ok = g_big[i] == (i % 3 == 0 && (i >> 10) % 4 != 1 ? i * 2654435761u : 0);
        check("anon-region", ok, "4 MiB region differs");
    }
    check("deleted-file-map", memcmp(g_deleted_map, "file page one", 13) == 0
          && memcmp(g_deleted_map + 4096, "written page two", 16) == 0,
          "mapping of the deleted file differs");

    getcwd(buf, sizeof buf);
    check("cwd", strcmp(buf, g_workdir) == 0, buf);
    m = umask(0);
    umask(m);
    check("umask", m == 027, "umask differs");
    getrlimit(RLIMIT_NOFILE, &rl);
    check("rlimit", rl.rlim_cur == 321 && rl.rlim_max == 654, "RLIMIT_NOFILE differs");

    n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    check("exe", strcmp(buf, g_exe) == 0, buf);
    n = slurp("/proc/self/cmdline", buf, sizeof buf);
    check("cmdline", n == g_cmdline_len && memcmp(buf, g_cmdline, n) == 0, "cmdline differs");
    n = slurp("/proc/self/environ", buf, sizeof buf);
    check("environ", n == g_environ_len && memcmp(buf, g_environ, n) == 0, "environ differs");

    clock_gettime(CLOCK_REALTIME, &a);          /* through the vDSO */
    syscall(SYS_clock_gettime, CLOCK_REALTIME, &b);
    check("vdso", llabs((long long)(b.tv_sec - a.tv_sec)) <= 1, "vDSO time is off");

    {
        void *before = sbrk(0);
        char *more = sbrk(8 << 20);
        int ok = more != (void *)-1 && more == before;
        if (ok) {
            memset(more, 0x5a, 8 << 20);
            ok = sbrk(0) == (char *)before + (8 << 20);
        }
        for (int i = 0; ok && i < 100; i++)
            ok = malloc(100000) != NULL;
        check("brk", ok, "heap did not grow");
    }

    getitimer(ITIMER_REAL, &it);
    check("itimer", it.it_interval.tv_usec == 50000 && it.it_interval.tv_sec == 0,
          "ITIMER_REAL interval differs");
    {
        int t0 = g_ticks;
        nap(300);
        check("itimer-ticks", g_ticks > t0, "SIGALRM stopped");
    }

    sigprocmask(SIG_BLOCK, NULL, &set);
    check("sigmask", sigismember(&set, SIGUSR2) && sigismember(&set, RTSIG), "mask differs");
    kill(getpid(), SIGUSR1);
    check("sigaltstack", g_usr1_on_altstack == 1, "handler not on the alternate stack");
    sigemptyset(&set);
    sigaddset(&set, RTSIG);
    sigaddset(&set, RTSIG_THREAD);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    snprintf(why, sizeof why, "value %d code %d", (int)g_rt_value, (int)g_rt_code);
    check("pending-rt", g_rt_value == 4242 && g_rt_code == SI_QUEUE, why);
    check("pending-thread-rt", g_rt_thread_value == 777, "thread's pending signal lost");

    n = read(g_unlinked_fd, buf, sizeof buf);
    check("unlinked", n == 10 && memcmp(buf, "data 12345", 10) == 0, "contents differ");
    n = read(g_pipe[0], buf, sizeof buf);
    check("pipe", n == 20 && memcmp(buf, "queued-bytes-in-pipe", 20) == 0
          && (fcntl(g_pipe[0], F_GETFL) & O_NONBLOCK)
          && !(fcntl(g_pipe[1], F_GETFL) & O_NONBLOCK), "queued bytes or flags differ");

    n = read(g_fifo[0], buf, sizeof buf);
    check("fifo", n == 10 && memcmp(buf, "fifo-bytes", 10) == 0
          && (fcntl(g_fifo[0], F_GETFL) & O_NONBLOCK)
          && !(fcntl(g_fifo[1], F_GETFL) & O_NONBLOCK), "FIFO bytes or flags differ");
    {
        struct stat st;
        fstat(g_dir_fd, &st);
        check("dirfd", st.st_ino == g_dir_st.st_ino && S_ISDIR(st.st_mode), "directory fd differs");
        memset(buf, 1, 16);
        n = read(g_zero_fd, buf, 16);
        check("devzero", n == 16 && buf[0] == 0 && buf[15] == 0, "/dev/zero fd differs");
    }

    flags = fcntl(g_append_fd, F_GETFL);
    n = slurp("append.log", buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    {
        char want[65536] = "";
        for (int i = 1; strlen(want) < (size_t)n + 1 && i < 10000; i++) {
            char line[32];
            snprintf(line, sizeof line, "append %d\n", i);
            if (strlen(want) + strlen(line) > (size_t)n)
                break;
            strcat(want, line);
        }
        check("append", (flags & O_APPEND) && strcmp(buf, want) == 0, "append.log differs");
    }
}

int main(int argc, char **argv)
{
    int steps = argc > 2 ? atoi(argv[2]) : 20;
    char line[32];

    setvbuf(stdout, NULL, _IONBF, 0);
    setup(argc > 1 ? argv[1] : ".");
    for (int i = 1; i <= steps; i++) {
        snprintf(line, sizeof line, "append %d\n", i);
        write(g_append_fd, line, strlen(line));
        printf("step %d\n", i);
        nap(100);
    }
    final_checks();
    printf("done\n");
    return 0;
}
