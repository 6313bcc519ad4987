/* Mappings whose flags or pages change without a change of layout, on command:
 * what a dump sees when the change falls between its early smaps read and its
 * freeze (tests/test_frozenmaps.py).  Three regions of 4 pages each, between
 * PROT_NONE guard pages (so no madvise merges them with a neighbour), filled
 * with a pattern: "wipe" and "dontfork" (anonymous), "file" (a private mapping
 * of the file argv[1], read but not written), and "none": 4 PROT_NONE pages
 * never written (a test writes one through /proc/PID/mem, as a debugger
 * would).  Prints each address, then
 * "ready"; then for each line on stdin: "w" madvise(MADV_WIPEONFORK), "d"
 * madvise(MADV_DONTFORK), "c" writes the file mapping's first page (copy on
 * write), each answered by "done"; waits for its end. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096

static unsigned char *guarded(int fd)
{
    unsigned char *p = mmap(NULL, 6 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    int flags = MAP_FIXED | MAP_PRIVATE | (fd < 0 ? MAP_ANONYMOUS : 0);
    if (mmap(p + PAGE, 4 * PAGE, PROT_READ | PROT_WRITE, flags, fd, 0) == MAP_FAILED)
        return NULL;
    return p + PAGE;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s FILE\n", argv[0]);
        return 2;
    }
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    unsigned char page[PAGE];
    memset(page, 0x11, PAGE);
    for (int i = 0; i < 4; i++)
        if (fd < 0 || write(fd, page, PAGE) != PAGE) {
            perror("file");
            return 1;
        }
    unsigned char *wipe = guarded(-1), *dontfork = guarded(-1), *file = guarded(fd);
    /* and 4 never-written PROT_NONE pages between two readable ones */
    unsigned char *none = mmap(NULL, 6 * PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!wipe || !dontfork || !file || none == MAP_FAILED
        || mprotect(none + PAGE, 4 * PAGE, PROT_NONE) < 0) {
        perror("mmap");
        return 1;
    }
    none += PAGE;
    for (int i = 0; i < 4 * PAGE; i++) {
        wipe[i] = (unsigned char)(i * 5 + 1);
        dontfork[i] = (unsigned char)(i * 7 + 3);
    }
    volatile unsigned char sink = file[0];
    (void)sink;
    printf("wipe %p\ndontfork %p\nfile %p\nnone %p\nready\n", (void *)wipe, (void *)dontfork,
           (void *)file, (void *)none);
    fflush(stdout);
    char line[16];
    while (fgets(line, sizeof line, stdin)) {
        int bad = 0;
        if (line[0] == 'w')
            bad = madvise(wipe, 4 * PAGE, MADV_WIPEONFORK);
        else if (line[0] == 'd')
            bad = madvise(dontfork, 4 * PAGE, MADV_DONTFORK);
        else if (line[0] == 'c')
            memset(file, 0x22, PAGE);
        if (bad) {
            perror("madvise");
            return 1;
        }
        printf("done\n");
        fflush(stdout);
    }
    pause();
    return 0;
}
