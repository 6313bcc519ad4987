/* Thousands of mappings (programs with many libraries or arenas have them), for
 * test_dump.py.  usage: many_maps FILE N
 * Maps N pages of FILE privately (every other one written: byte 0 = i & 0xff | 1)
 * and N two-page anonymous regions (first page written, second made read-only,
 * so that no two merge), prints "ready" and waits. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s FILE N\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[2]);
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, (off_t)n * 8192) < 0) {
        perror(argv[1]);
        return 1;
    }
    for (int i = 0; i < n; i++) {
        unsigned char *p = mmap(NULL, 4096, PROT_READ | (i % 2 ? PROT_WRITE : 0),
                                MAP_PRIVATE, fd, (off_t)i * 8192);
        unsigned char *a = mmap(NULL, 8192, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED || a == MAP_FAILED || mprotect(a + 4096, 4096, PROT_READ) < 0) {
            perror("mmap");
            return 1;
        }
        if (i % 2)
            p[0] = (unsigned char)(i | 1);
        a[0] = (unsigned char)(i | 1);
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready\n");
    for (;;)
        pause();
}
