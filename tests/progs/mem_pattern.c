/* Memory with every kind of page a dump must tell apart, for test_dump_memory.py.
 *
 * An anonymous private region of NPAGES pages where page i is, by i % 6:
 *   0 never touched            (a hole in the core)
 *   1 written, non-zero        (stored)
 *   2 written with zeros       (present but zero: a hole)
 *   3 only read                (the shared zero page: a hole)
 *   4 non-zero, first 8 bytes zero (stored)
 *   5 zero but its last byte   (stored)
 * an anonymous region of FULLPAGES pages all written (its every page present, as
 * smaps' Anonymous shows), every fifth with zeros (present but zero: a hole),
 * two regions a fork does not copy faithfully, MADV_DONTFORK and MADV_WIPEONFORK
 * (a dump reads them from the target itself while it is frozen), and a
 * private mapping of 3 pages of a 1-page file (argv[1]) whose first page was
 * written: pages 2 and 3 lie beyond the end of the file and cannot be read.
 * Prints the addresses, then "ready", then waits. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define NPAGES 700          /* more than two 1 MiB chunks */
#define FULLPAGES 600
#define PAGE 4096

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s FILE\n", argv[0]);
        return 2;
    }
    unsigned char *anon = mmap(NULL, NPAGES * PAGE, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    /* and a PROT_NONE page above it, or the kernel merges it with anon */
    unsigned char *full = mmap(NULL, (FULLPAGES + 1) * PAGE, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char *dontfork = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE,
                                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char *wipeonfork = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE,
                                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (anon == MAP_FAILED || full == MAP_FAILED || dontfork == MAP_FAILED
        || wipeonfork == MAP_FAILED || fd < 0
        || mprotect(full + FULLPAGES * PAGE, PAGE, PROT_NONE) < 0
        || ftruncate(fd, PAGE) < 0 || madvise(dontfork, 4 * PAGE, MADV_DONTFORK) < 0
        || madvise(wipeonfork, 4 * PAGE, MADV_WIPEONFORK) < 0) {
        perror("setup");
        return 1;
    }
    unsigned char *file = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (file == MAP_FAILED) {
        perror("mmap file");
        return 1;
    }
    volatile unsigned char sink = 0;
    for (int i = 0; i < NPAGES; i++) {
        unsigned char *p = anon + (size_t)i * PAGE;
        switch (i % 6) {
        case 1: memset(p, 1 + i % 251, PAGE); break;
        case 2: memset(p, 0, PAGE); break;
        case 3: sink += p[100]; break;
        case 4: memset(p + 8, (0xA0 ^ i) | 1, PAGE - 8); break;
        case 5: p[PAGE - 1] = 0x5A; break;
        }
    }
    for (int i = 0; i < FULLPAGES; i++)
        memset(full + (size_t)i * PAGE, i % 5 ? 0x11 * (i % 15) + 1 : 0, PAGE);
    for (int i = 0; i < 4 * PAGE; i++) {
        dontfork[i] = (unsigned char)(i * 7 + 3);
        wipeonfork[i] = (unsigned char)(i * 5 + 1);
    }
    memcpy(file, "written-to private file page", 29);
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("anon %p %d\nfull %p %d\ndontfork %p\nwipeonfork %p\nfile %p\nready\n",
           (void *)anon, NPAGES, (void *)full, FULLPAGES, (void *)dontfork, (void *)wipeonfork,
           (void *)file);
    for (;;)
        pause();
}
