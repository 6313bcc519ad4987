/* Known changes between two checkpoints, for test_diff.py (and the tracking tests).
 *
 * At fixed addresses: REGION (64 pages, page i filled with i*7+byte), RO (4 pages,
 * written), GONE (2 pages).  fd DATA is argv[1], read-only at offset 0; the soft
 * RLIMIT_NOFILE is 512.  Prints "ready PID handler", then for each line on stdin:
 *   c  change: 100 bytes of REGION page 3 and 1 byte of page 10, lseek DATA to
 *      123, open /dev/null, a SIGUSR1 handler (SA_RESTART), SIGUSR2 blocked,
 *      FRESH mapped (2 pages, written), RO made read-only, GONE unmapped,
 *      chdir(argv[2]), soft RLIMIT_NOFILE 256; prints "changed FD"
 *   w N P...  write one byte into each page P of REGION (xor 0x5a); "written"
 *   z P    MADV_DONTNEED page P of REGION; "zapped"
 *   s      print the sum of REGION's bytes */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#define PAGE 4096
#define NPAGES 64
#define REGION ((unsigned char *)0x110000000000UL)
#define RO ((unsigned char *)0x120000000000UL)
#define GONE ((unsigned char *)0x130000000000UL)
#define FRESH ((unsigned char *)0x140000000000UL)

static void on_usr1(int sig) { (void)sig; }

static void *map_at(void *addr, size_t len)
{
    void *p = mmap(addr, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p != addr) {
        perror("mmap");
        exit(1);
    }
    memset(p, 0x11, len);
    return p;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s DATAFILE DIR\n", argv[0]);
        return 2;
    }
    map_at(REGION, NPAGES * PAGE);
    for (int i = 0; i < NPAGES; i++)
        for (int j = 0; j < PAGE; j++)
            REGION[i * PAGE + j] = (unsigned char)(i * 7 + j) | 1;
    map_at(RO, 4 * PAGE);
    map_at(GONE, 2 * PAGE);
    int data = open(argv[1], O_RDONLY);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = 512;
    if (data < 0 || setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        perror("setup");
        return 1;
    }
    printf("ready %d %#lx\n", getpid(), (unsigned long)on_usr1);
    fflush(stdout);
    char line[4096];
    while (fgets(line, sizeof line, stdin)) {
        if (line[0] == 'c') {
            REGION[3 * PAGE + 99] ^= 0xff;
            for (int j = 0; j < 99; j++)
                REGION[3 * PAGE + j] ^= 0xff;
            REGION[10 * PAGE + 5] ^= 1;
            lseek(data, 123, SEEK_SET);
            int nfd = open("/dev/null", O_RDONLY);
            struct sigaction sa = {.sa_handler = on_usr1, .sa_flags = SA_RESTART};
            sigaction(SIGUSR1, &sa, NULL);
            sigset_t set;
            sigemptyset(&set);
            sigaddset(&set, SIGUSR2);
            sigprocmask(SIG_BLOCK, &set, NULL);
            map_at(FRESH, 2 * PAGE);
            mprotect(RO, 4 * PAGE, PROT_READ);
            munmap(GONE, 2 * PAGE);
            if (chdir(argv[2]) < 0)
                perror("chdir");
            rl.rlim_cur = 256;
            setrlimit(RLIMIT_NOFILE, &rl);
            printf("changed %d\n", nfd);
        } else if (line[0] == 'w') {
            char *p = line + 1;
            long n = strtol(p, &p, 10);
            for (long k = 0; k < n; k++)
                REGION[strtol(p, &p, 10) * PAGE + k % PAGE] ^= 0x5a;
            printf("written\n");
        } else if (line[0] == 'z') {
            madvise(REGION + atol(line + 1) * PAGE, PAGE, MADV_DONTNEED);
            printf("zapped\n");
        } else if (line[0] == 's') {
            unsigned long sum = 0;
            for (long i = 0; i < NPAGES * PAGE; i++)
                sum = sum * 31 + REGION[i];
            printf("%lu\n", sum);
        }
        fflush(stdout);
    }
    return 0;
}
