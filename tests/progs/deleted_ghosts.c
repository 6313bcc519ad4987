/* Deleted files across a checkpoint, kill and restart (argv[2]: a directory):
   an unlinked sparse file with its mode, holes and two descriptions; a deleted
   directory, a deleted FIFO with queued bytes, a deleted working directory. */
#include "fd_kind_check.h"
#include <fcntl.h>
#include <sys/stat.h>

#define FAR (1 << 20)

static int deleted_link(int fd)
{
    char path[64], target[4096];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, target, sizeof target - 1);
    target[n > 0 ? n : 0] = 0;
    return n > 10 && !strcmp(target + n - 10, " (deleted)");
}

int main(int argc, char **argv)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/sparse", argv[2]);
    int f = open(p, O_RDWR | O_CREAT, 0600), f2 = open(p, O_RDWR);
    pwrite(f, "head", 4, 0);
    pwrite(f, "tail", 4, FAR);
    fchmod(f, 0645);
    unlink(p);
    snprintf(p, sizeof p, "%s/dir", argv[2]);
    mkdir(p, 0751);
    int d = open(p, O_RDONLY | O_DIRECTORY);
    rmdir(p);
    snprintf(p, sizeof p, "%s/fifo", argv[2]);
    mkfifo(p, 0640);
    int r = open(p, O_RDONLY | O_NONBLOCK), w = open(p, O_WRONLY);
    unlink(p);
    write(w, "queued", 6);
    snprintf(p, sizeof p, "%s/cwd", argv[2]);
    mkdir(p, 0700);
    chdir(p);
    rmdir(p);
    ready_then_wait(argv[1]);

    struct stat st;
    char buf[16] = {0};
    fstat(f, &st);
    CHECK((st.st_mode & 07777) == 0645, "mode %o", st.st_mode & 07777);
    CHECK(st.st_size == FAR + 4 && st.st_nlink == 0, "size %lld links %ld",
          (long long)st.st_size, (long)st.st_nlink);
    CHECK(st.st_blocks * 512 < FAR / 2, "holes filled: %lld blocks", (long long)st.st_blocks);
    CHECK(lseek(f, 0, SEEK_HOLE) < FAR, "no hole");
    CHECK(pread(f, buf, 4, 0) == 4 && !memcmp(buf, "head", 4), "head");
    CHECK(pread(f, buf, 4, FAR) == 4 && !memcmp(buf, "tail", 4), "tail");
    pwrite(f, "both", 4, 8);
    CHECK(pread(f2, buf, 4, 8) == 4 && !memcmp(buf, "both", 4), "two files, not one");
    CHECK(deleted_link(f), "the file is not deleted");

    CHECK(fstat(d, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0751,
          "directory mode %o", st.st_mode & 07777);
    CHECK(deleted_link(d), "the directory is not deleted");

    memset(buf, 0, sizeof buf);
    CHECK(read(r, buf, sizeof buf) == 6 && !strcmp(buf, "queued"), "FIFO bytes: %s", buf);
    write(w, "again", 5);
    memset(buf, 0, sizeof buf);
    CHECK(read(r, buf, sizeof buf) == 5 && !strcmp(buf, "again"), "FIFO ends apart: %s", buf);
    CHECK(fstat(r, &st) == 0 && S_ISFIFO(st.st_mode) && (st.st_mode & 07777) == 0640,
          "FIFO mode %o", st.st_mode & 07777);
    CHECK(deleted_link(r), "the FIFO is not deleted");

    CHECK(stat(".", &st) == 0 && S_ISDIR(st.st_mode) && st.st_nlink == 0, "cwd not deleted");
    return verdict();
}
