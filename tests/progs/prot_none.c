/* Memory made PROT_NONE after it was written keeps its contents: the kernel's
 * own core dumps store it, and a restart must bring it back.  Two written pages
 * and one never touched page are made PROT_NONE; after `ready` the program waits
 * (checkpoint it then), makes them readable again and checks every byte.
 *   usage: prot_none SECONDS */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    int seconds = argc > 1 ? atoi(argv[1]) : 2;
    long page = sysconf(_SC_PAGESIZE);
    unsigned char *p = mmap(NULL, 3 * page, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return 2;
    for (long i = 0; i < 2 * page; i++)
        p[i] = (unsigned char)(i * 7 + 3);
    if (mprotect(p, 3 * page, PROT_NONE))
        return 2;
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("ready\n");
    for (int i = 0; i < seconds * 10; i++)
        usleep(100000);
    mprotect(p, 3 * page, PROT_READ);
    for (long i = 0; i < 3 * page; i++) {
        unsigned char want = i < 2 * page ? (unsigned char)(i * 7 + 3) : 0;
        if (p[i] != want) {
            printf("byte %ld is %d, not %d\n", i, p[i], want);
            return 1;
        }
    }
    printf("prot_none ok\n");
    return 0;
}
