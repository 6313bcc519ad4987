/* A counter whose state lives everywhere rcore restore must put back: globals,
 * heap (a linked list and a brk-grown heap), the stacks and TLS of two threads,
 * private anonymous and file-backed mappings with their protections, open files
 * with their offsets, cwd, umask, signal handlers and the thread set.
 *
 * It advances one step per byte read from stdin, so the test knows the exact
 * step of a checkpoint (taken while the main thread is blocked in read() and
 * the worker sleeps in nanosleep()):
 *   'x'  check that the state is exactly that of step n, then go to step n+1;
 *        prints "count N ok" or "count N fail <what>" ("count N mutated" once
 *        'm' has changed everything, since then the checks cannot hold).
 *   'm'  mutate every piece of state, prints "mutated".
 *   'q'  the worker thread returns; prints "worker gone" once it has exited.
 *   'p'  closes the read end of a pipe it holds; prints "pipe closed".
 * usage: restore_state WORKDIR */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define NODES 200
#define FIXED_NEW ((void *)0x200000000000UL)    /* region created by 'm' */
#define FIXED_MOVED ((void *)0x210000000000UL)  /* where 'm' moves region E */

struct node { struct node *next; long value; char pad[40]; };

static long g_counter;
static long g_bss[8192];                 /* 64 KiB of globals */
static __thread long tls_val;            /* one per thread */
static struct node *g_list;
static char *g_heapbuf;                  /* 256 KiB: mmapped by malloc */
static char *g_regionA, *g_regionB, *g_regionE, *g_filemap;
static int g_fd_log, g_fd_other, g_pipe[2];
static char g_altstack[65536];
static char g_workdir[4096];
static int mutated;

static atomic_long g_tick, g_ack, g_quit;
static long *volatile worker_tls;
static long *volatile worker_stack;

static void fill(char *p, size_t n, long seed) {
    for (size_t i = 0; i < n; i += 512) p[i] = (char)(seed + i / 512);
}

static int filled(const char *p, size_t n, long seed) {
    for (size_t i = 0; i < n; i += 512)
        if (p[i] != (char)(seed + i / 512)) return 0;
    return 1;
}

static void *worker(void *arg) {
    long wlocal[16];
    long seen = -1;
    (void)arg;
    worker_tls = &tls_val;
    worker_stack = wlocal;
    while (!atomic_load(&g_quit)) {
        long t = atomic_load(&g_tick);
        if (t != seen) {
            for (int i = 0; i < 16; i++) wlocal[i] = t * i + 1;
            tls_val = t * 5;
            seen = t;
            atomic_store(&g_ack, t);
        }
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);            /* where a checkpoint usually finds it */
    }
    return NULL;
}

static void *idler(void *arg) {
    (void)arg;
    for (;;) pause();
    return NULL;
}

static void on_usr2(int sig) { (void)sig; }

static int maps_perms(void *addr, char *perms) {
    char line[512];
    FILE *f = fopen("/proc/self/maps", "r");
    unsigned long a = (unsigned long)addr, lo, hi;
    int found = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perms) == 3 && lo <= a && a < hi) {
            found = 1;
            break;
        }
    fclose(f);
    return found;
}

static int count_tasks(void) {
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

#define CHECK(cond, what) do { if (!(cond)) return what; } while (0)

/* Is everything exactly as step n left it?  Returns NULL or what differs. */
static const char *check(long n, long *stackarr) {
    char perms[8], cwd[4096];
    struct sigaction sa;
    CHECK(g_counter == n, "global");
    for (int i = 0; i < 8192; i += 97) CHECK(g_bss[i] == n + i, "bss");
    for (int i = 0; i < 64; i++) CHECK(stackarr[i] == n * i, "stack");
    CHECK(tls_val == n * 3, "tls");
    CHECK(atomic_load(&g_ack) == n && *worker_tls == n * 5, "worker-tls");
    for (int i = 0; i < 16; i++) CHECK(worker_stack[i] == n * i + 1, "worker-stack");
    int count = 0;
    for (struct node *p = g_list; p; p = p->next, count++)
        CHECK(p->value == n * 1000 + count, "heap-list");
    CHECK(count == NODES, "heap-count");
    CHECK(filled(g_heapbuf, 256 << 10, n), "heap-buffer");
    CHECK((long)sbrk(0) == syscall(SYS_brk, 0), "brk");
    void *probe = malloc(1000);          /* the allocator must still work */
    CHECK(probe != NULL, "malloc");
    free(probe);
    CHECK(filled(g_regionA, 3 * PAGE, n), "munmapped-region");
    CHECK(maps_perms(g_regionB, perms) && strcmp(perms, "rw-p") == 0, "mprotect");
    CHECK(filled(g_regionB, 2 * PAGE, n + 1), "mprotect-data");
    CHECK(filled(g_regionE, 4 * PAGE, n + 2), "moved-region");
    CHECK(msync(FIXED_NEW, PAGE, MS_ASYNC) == -1 && errno == ENOMEM, "new-region-gone");
    CHECK(msync(FIXED_MOVED, PAGE, MS_ASYNC) == -1 && errno == ENOMEM, "moved-region-gone");
    CHECK(maps_perms(g_filemap, perms) && filled(g_filemap, PAGE, n + 3)
          && g_filemap[PAGE] == 'D', "file-mapping");
    CHECK(lseek(g_fd_log, 0, SEEK_CUR) == 8 * (n + 1), "log-offset");
    CHECK(lseek(g_fd_other, 0, SEEK_CUR) == 1, "other-offset");
    CHECK((fcntl(g_fd_other, F_GETFL) & O_ACCMODE) == O_RDONLY, "other-flags");
    CHECK(fcntl(7, F_GETFD) == -1 && errno == EBADF, "fd-opened-since");
    CHECK(getcwd(cwd, sizeof cwd) && strcmp(cwd, g_workdir) == 0, "cwd");
    mode_t m = umask(022);
    CHECK(m == 022, "umask");
    sigaction(SIGUSR2, NULL, &sa);
    CHECK(sa.sa_handler == SIG_DFL, "sigaction");
    CHECK(count_tasks() == 2, "threads");
    sigset_t mask;
    pthread_sigmask(SIG_BLOCK, NULL, &mask);
    CHECK(!sigismember(&mask, SIGUSR1) && sigismember(&mask, SIGWINCH), "sigmask");
    stack_t ss;
    sigaltstack(NULL, &ss);
    CHECK(ss.ss_sp == g_altstack && ss.ss_size == sizeof g_altstack && ss.ss_flags == 0,
          "sigaltstack");
    return NULL;
}

static void step(long n, long *stackarr) {
    g_counter = n;
    for (int i = 0; i < 8192; i++) g_bss[i] = n + i;
    for (int i = 0; i < 64; i++) stackarr[i] = n * i;
    tls_val = n * 3;
    int i = 0;
    for (struct node *p = g_list; p; p = p->next) p->value = n * 1000 + i++;
    fill(g_heapbuf, 256 << 10, n);
    fill(g_regionA, 3 * PAGE, n);
    fill(g_regionB, 2 * PAGE, n + 1);
    fill(g_regionE, 4 * PAGE, n + 2);
    fill(g_filemap, PAGE, n + 3);
    write(g_fd_log, &n, sizeof n);
    atomic_store(&g_tick, n);
    while (atomic_load(&g_ack) != n) {
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static void mutate(void) {
    pthread_t t;
    /* heap: free and allocate, grow the brk heap by megabytes */
    for (struct node *p = g_list, *next; p; p = next) {
        next = p->next;
        if ((long)p & 64) free(p);
    }
    for (int i = 0; i < 100; i++) memset(malloc(100 << 10), 0x5a, 100 << 10);
    free(g_heapbuf);
    memset(malloc(4 << 20), 1, 4 << 20);
    /* mappings */
    munmap(g_regionA, 3 * PAGE);
    mprotect(g_regionB, 2 * PAGE, PROT_READ);
    memset(mmap(FIXED_NEW, 8 * PAGE, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0), 7, 8 * PAGE);
    mremap(g_regionE, 4 * PAGE, 4 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, FIXED_MOVED);
    munmap(g_filemap, 2 * PAGE);
    /* process state */
    chdir("/");
    umask(077);
    lseek(g_fd_log, 12345, SEEK_SET);
    close(g_fd_other);
    int again = open("/etc/hostname", O_RDONLY);   /* lands on g_fd_other's number */
    int extra = open("/etc/passwd", O_RDONLY);
    dup2(extra, 7);
    signal(SIGUSR2, on_usr2);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGUSR1);
    sigaddset(&mask, SIGWINCH);
    pthread_sigmask(SIG_SETMASK, &mask, NULL);     /* SIGUSR1 in, SIGWINCH stays */
    stack_t ss = {.ss_flags = SS_DISABLE};
    sigaltstack(&ss, NULL);
    pthread_create(&t, NULL, idler, NULL);
    (void)again;
    mutated = 1;
}

int main(int argc, char **argv) {
    long stackarr[64];
    long n = 0;
    pthread_t t;
    char path[4200], c;
    if (argc < 2) return 2;
    setvbuf(stdout, NULL, _IONBF, 0);
    realpath(argv[1], g_workdir);
    chdir(g_workdir);
    umask(022);

    struct node **tail = &g_list;
    for (int i = 0; i < NODES; i++) {
        *tail = calloc(1, sizeof(struct node));
        tail = &(*tail)->next;
    }
    g_heapbuf = malloc(256 << 10);
    g_regionA = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    g_regionB = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    g_regionE = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    snprintf(path, sizeof path, "%s/data", g_workdir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    char block[3 * PAGE];
    memset(block, 'D', sizeof block);
    write(fd, block, sizeof block);
    /* a private file mapping at file offset PAGE; its first page gets written */
    g_filemap = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, PAGE);
    close(fd);

    snprintf(path, sizeof path, "%s/log", g_workdir);
    g_fd_log = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    g_fd_other = open("/etc/passwd", O_RDONLY);
    read(g_fd_other, &c, 1);

    pipe(g_pipe);
    stack_t ss = {.ss_sp = g_altstack, .ss_size = sizeof g_altstack};
    sigaltstack(&ss, NULL);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGWINCH);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);

    pthread_create(&t, NULL, worker, NULL);
    while (!worker_stack) usleep(1000);
    step(n, stackarr);
    printf("ready\n");
    while (read(0, &c, 1) == 1) {
        if (c == 'p') {
            close(g_pipe[0]);
            printf("pipe closed\n");
        } else if (c == 'q') {
            atomic_store(&g_quit, 1);
            pthread_join(t, NULL);
            printf("worker gone\n");
        } else if (c == 'm') {
            mutate();
            printf("mutated\n");
        } else if (c == 'x') {
            n++;
            if (mutated) {               /* the old state is gone: just count */
                printf("count %ld mutated\n", n);
                continue;
            }
            const char *bad = check(n - 1, stackarr);
            step(n, stackarr);
            printf("count %ld %s%s\n", n, bad ? "fail " : "ok", bad ? bad : "");
        }
    }
    return 0;
}
