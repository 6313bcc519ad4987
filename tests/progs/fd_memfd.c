/* memfd: name, contents, offset, seals, a second description of the same file;
   with argv[2] "map" also a shared mapping that must stay one with the file. */
#include "fd_kind_check.h"
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

int main(int argc, char **argv)
{
    int mapped = argc > 2 && !strcmp(argv[2], "map");
    int m = memfd_create("rcore-test", MFD_ALLOW_SEALING);
    char path[64], link[128] = "";
    write(m, "hello memfd", 11);
    ftruncate(m, 8192);
    char *p = mapped ? mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0) : NULL;
    if (p)
        memcpy(p + 4096, "through the mapping", 19);
    fcntl(m, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
    lseek(m, 3, SEEK_SET);
    snprintf(path, sizeof path, "/proc/self/fd/%d", m);
    int ro = open(path, O_RDONLY);
    ready_then_wait(argv[1]);

    readlink(path, link, sizeof link - 1);
    CHECK(!strcmp(link, "/memfd:rcore-test (deleted)"), "name %s", link);
    CHECK(lseek(m, 0, SEEK_CUR) == 3, "offset %ld", (long)lseek(m, 0, SEEK_CUR));
    CHECK(fcntl(m, F_GET_SEALS) == (F_SEAL_SHRINK | F_SEAL_GROW), "seals %#x",
          fcntl(m, F_GET_SEALS));
    CHECK(ftruncate(m, 100) == -1 && errno == EPERM, "shrink allowed");
    struct stat a, b;
    fstat(m, &a);
    fstat(ro, &b);
    CHECK(a.st_ino == b.st_ino && a.st_size == 8192, "not one file of 8192 bytes");
    CHECK((fcntl(ro, F_GETFL) & O_ACCMODE) == O_RDONLY, "second description not read-only");
    char buf[32] = "";
    pread(ro, buf, 11, 0);
    CHECK(!memcmp(buf, "hello memfd", 11), "contents %.11s", buf);
    pwrite(m, "HELLO", 5, 0);
    pread(ro, buf, 5, 0);
    CHECK(!memcmp(buf, "HELLO", 5), "descriptions do not share the file: %.5s", buf);
    if (mapped) {
        CHECK(!memcmp(p, "HELLO", 5), "mapping does not see writes to the fd: %.5s", p);
        memcpy(buf, "", 1);
        pread(m, buf, 19, 4096);
        CHECK(!memcmp(buf, "through the mapping", 19), "file lacks the mapping's bytes");
        memcpy(p + 100, "mapped", 6);
        pread(ro, buf, 6, 100);
        CHECK(!memcmp(buf, "mapped", 6), "fd does not see writes to the mapping");
    }
    return verdict();
}
