/* Anonymous memory in transparent huge pages (madvise(MADV_HUGEPAGE), which THP's
 * "madvise" and "always" modes both honour), for test_dump_stream.py.
 * usage: huge_pages MIB   Fills MIB MiB (2 MiB-aligned) with a pattern (byte i:
 * (i / 4096 * 7 + i) & 0xff), prints "ready ADDRESS SIZE" and waits. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define HUGE (2u << 20)

int main(int argc, char **argv)
{
    size_t size = (argc > 1 ? strtoull(argv[1], NULL, 0) : 64) << 20;
    unsigned char *raw = mmap(NULL, size + HUGE, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    unsigned char *mem = (unsigned char *)(((uintptr_t)raw + HUGE - 1) & ~(uintptr_t)(HUGE - 1));
    madvise(mem, size, MADV_HUGEPAGE);          /* EINVAL where THP is compiled out */
    for (size_t i = 0; i < size; i++)
        mem[i] = (unsigned char)(i / 4096 * 7 + i);
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready %p %zu\n", (void *)mem, size);
    for (;;)
        pause();
}
