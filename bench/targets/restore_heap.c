/* Target for bench/restore.py: MIB MiB of heap, every page touched with
 * pseudo-random bytes; then commands on stdin, one per line, each answered by
 * one line on stdout:
 *   c  change 10 MiB (2560 pages spread evenly over the heap)   -> "done"
 *   a  change every page                                        -> "done"
 *   s  checksum of the heap                                     -> "sum N"
 * usage: restore_heap MIB */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int main(int argc, char **argv) {
    size_t size = (size_t)atol(argv[1]) << 20, pages = size / 4096;
    uint64_t *heap = mmap(NULL, size, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint64_t x = 88172645463325252ULL, gen = 1;
    char line[16];
    for (size_t i = 0; i < size / 8; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        heap[i] = x;
    }
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("ready\n");
    while (fgets(line, sizeof line, stdin)) {
        gen++;
        if (line[0] == 'c') {
            for (size_t k = 0; k < 2560; k++)
                heap[(k * (pages / 2560)) * 512] += gen;
            printf("done\n");
        } else if (line[0] == 'a') {
            for (size_t p = 0; p < pages; p++) heap[p * 512 + 7] += gen;
            printf("done\n");
        } else if (line[0] == 's') {
            uint64_t sum = 0;
            for (size_t i = 0; i < size / 8; i++) sum = sum * 31 + heap[i];
            printf("sum %llu\n", (unsigned long long)sum);
        }
    }
    return 0;
}
