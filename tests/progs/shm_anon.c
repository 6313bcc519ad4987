/* Shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS, "/dev/zero (deleted)"):
   a pattern written before the checkpoint must be there after the restart,
   and a second mapping of the same object (mremap with old size 0, as a
   fork would share it) must still be the same memory.  argv[2] "memfd": the
   restart ran without CAP_CHECKPOINT_RESTORE and made it a memfd. */
#include "fd_kind_check.h"
#include <sys/mman.h>

#define SIZE (3 * 4096)

/* The inode of the mapping at addr in /proc/self/maps, or 0. */
static unsigned long inode_at(void *addr, char *name, size_t len)
{
    char line[512];
    unsigned long start, end, inode = 0, off;
    FILE *f = fopen("/proc/self/maps", "r");
    while (fgets(line, sizeof line, f)) {
        char perms[8], dev[16];
        int pos = 0;
        if (sscanf(line, "%lx-%lx %7s %lx %15s %lu %n", &start, &end, perms, &off, dev,
                   &inode, &pos) >= 6 && start == (unsigned long)addr) {
            snprintf(name, len, "%s", line + pos);
            name[strcspn(name, "\n")] = 0;
            break;
        }
        inode = 0;
    }
    fclose(f);
    return inode;
}

int main(int argc, char **argv)
{
    unsigned char *p = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                            -1, 0);
    unsigned char *q = mremap(p, 0, SIZE, MREMAP_MAYMOVE);
    for (int i = 0; i < SIZE; i++)
        p[i] = (unsigned char)(i * 7 + 3);
    char name[256];
    unsigned long before = inode_at(p, name, sizeof name);
    ready_then_wait(argv[1]);

    int bad = 0;
    for (int i = 0; i < SIZE; i++)
        bad += p[i] != (unsigned char)(i * 7 + 3) || q[i] != p[i];
    CHECK(bad == 0, "%d bytes differ", bad);
    p[5000] = 0xee;
    CHECK(q[5000] == 0xee, "the two mappings are no longer one object");
    char name_q[256];
    unsigned long now = inode_at(p, name, sizeof name), now_q = inode_at(q, name_q, sizeof name_q);
    CHECK(now != 0 && now == now_q, "inodes %lu and %lu", now, now_q);
    const char *want = argc > 2 && !strcmp(argv[2], "memfd")
        ? "/memfd:rcore-shared-anonymous (deleted)" : "/dev/zero (deleted)";
    CHECK(!strcmp(name, want), "named %s", name);
    printf("inode before %lu after %lu\n", before, now);
    return verdict();
}
