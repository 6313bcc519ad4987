/* A memfd mapped twice (MAP_SHARED) whose descriptor was closed: after the
   restart both mappings must still be one file. */
#include "fd_kind_check.h"
#include <sys/mman.h>

int main(int argc, char **argv)
{
    int m = memfd_create("rcore-mapped", 0);
    ftruncate(m, 8192);
    char *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
    char *q = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, m, 4096);
    close(m);
    strcpy(p + 4096, "before");
    ready_then_wait(argv[1]);

    CHECK(!strcmp(q, "before"), "second mapping lost the bytes: %s", q);
    strcpy(q + 10, "after");
    CHECK(!strcmp(p + 4106, "after"), "mappings are no longer one file");
    char line[512];
    int named = 0;
    FILE *f = fopen("/proc/self/maps", "r");
    while (fgets(line, sizeof line, f))
        named += strstr(line, "/memfd:rcore-mapped (deleted)") != NULL;
    fclose(f);
    CHECK(named == 2, "%d mappings named /memfd:rcore-mapped", named);
    return verdict();
}
