/* POSIX shared memory and named semaphores (/dev/shm): a semaphore opened and
   unlinked (as Python's multiprocessing does), a shm_open'ed object mapped then
   unlinked, one still linked, and one unlinked whose descriptor stays open.
   After the restart each must hold its bytes, the deleted ones must show
   deleted under their names, and a descriptor and a mapping of one file must
   still be one file. */
#include "fd_kind_check.h"
#include <fcntl.h>
#include <semaphore.h>
#include <sys/mman.h>
#include <sys/stat.h>

static char *map_new(const char *name, int unlink_it, int *fd_out)
{
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0 || ftruncate(fd, 8192))
        return NULL;
    char *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (unlink_it)
        shm_unlink(name);
    if (fd_out)
        *fd_out = fd;
    else
        close(fd);
    return p;
}

/* Does the mapping at addr name a path that starts with `want` and ends with
   `tail`? */
static int maps_line(void *addr, const char *want, const char *tail)
{
    char line[512];
    FILE *f = fopen("/proc/self/maps", "r");
    int found = 0;
    while (fgets(line, sizeof line, f))
        if (strtoul(line, NULL, 16) == (unsigned long)addr) {
            line[strcspn(line, "\n")] = 0;
            char *path = strchr(line, '/');
            size_t n = path ? strlen(path) : 0, m = strlen(tail);
            found = path && !strncmp(path, want, strlen(want)) && n >= m
                && !strcmp(path + n - m, tail);
            if (!found)
                printf("maps: %s", line);
        }
    fclose(f);
    return found;
}

int main(int argc, char **argv)
{
    char sem_name[64], gone[64], kept[64], held[64], path[128];
    snprintf(sem_name, sizeof sem_name, "/%s-sem", argv[2]);
    snprintf(gone, sizeof gone, "/%s-gone", argv[2]);
    snprintf(kept, sizeof kept, "/%s-kept", argv[2]);
    snprintf(held, sizeof held, "/%s-held", argv[2]);
    sem_t *sem = sem_open(sem_name, O_CREAT | O_EXCL, 0600, 3);
    sem_unlink(sem_name);
    char *g = map_new(gone, 1, NULL), *k = map_new(kept, 0, NULL);
    int hfd;
    char *h = map_new(held, 1, &hfd);
    CHECK(sem != SEM_FAILED && g && k && h, "setup failed");
    strcpy(g + 4096, "gone-bytes");
    strcpy(k + 100, "kept-bytes");
    strcpy(h + 10, "held-bytes");
    ready_then_wait(argv[1]);

    int v = -1;
    sem_getvalue(sem, &v);
    CHECK(v == 3, "semaphore value %d", v);
    CHECK(sem_trywait(sem) == 0 && sem_post(sem) == 0 && sem_post(sem) == 0, "sem ops");
    sem_getvalue(sem, &v);
    CHECK(v == 4, "semaphore value after ops %d", v);
    /* glibc made it under a temporary name (sem.XXXXXX) and linked it */
    CHECK(maps_line((void *)((unsigned long)sem & ~4095UL), "/dev/shm/sem.", " (deleted)"),
          "semaphore not a deleted /dev/shm/sem.*");

    CHECK(!strcmp(g + 4096, "gone-bytes"), "gone: %s", g + 4096);
    snprintf(path, sizeof path, "/dev/shm%s (deleted)", gone);
    CHECK(maps_line(g, path, " (deleted)"), "gone not %s", path);

    CHECK(!strcmp(k + 100, "kept-bytes"), "kept: %s", k + 100);
    snprintf(path, sizeof path, "/dev/shm%s", kept);
    CHECK(maps_line(k, path, kept), "kept not %s", path);
    shm_unlink(kept);

    CHECK(!strcmp(h + 10, "held-bytes"), "held: %s", h + 10);
    CHECK(pwrite(hfd, "via-fd", 6, 2000) == 6 && !memcmp(h + 2000, "via-fd", 6),
          "the descriptor and the mapping are two files");
    struct stat st;
    CHECK(fstat(hfd, &st) == 0 && st.st_nlink == 0 && st.st_size == 8192,
          "held: nlink %lu size %ld", (unsigned long)st.st_nlink, (long)st.st_size);
    return verdict();
}
