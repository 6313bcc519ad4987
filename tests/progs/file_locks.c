/* flock, POSIX record locks, OFD locks and a lease across a checkpoint, kill and
   restart: after it, another process finds them held (argv[2]: a directory). */
#include "fd_kind_check.h"
#include <fcntl.h>
#include <sys/file.h>
#include <sys/wait.h>

static int open_in(const char *dir, const char *name, int flags)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return open(path, flags | O_CREAT, 0644);
}

static int range_lock(int fd, int cmd, short type, off_t start, off_t len)
{
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
    return fcntl(fd, cmd, &fl);
}

/* In a child: what a lock attempt on `name` finds. */
static short blocked_by(const char *dir, const char *name, int cmd, off_t start, off_t len,
                        pid_t *pid)
{
    int fd = open_in(dir, name, O_RDWR);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
    fcntl(fd, cmd, &fl);
    close(fd);
    *pid = fl.l_pid;
    return fl.l_type;
}

int main(int argc, char **argv)
{
    const char *dir = argv[2];
    int a = open_in(dir, "flocked", O_RDWR);
    int b = open_in(dir, "posix", O_RDWR);
    int c = open_in(dir, "ofd", O_RDWR);
    int d = open_in(dir, "leased", O_RDONLY);
    CHECK(flock(a, LOCK_EX) == 0, "flock");
    CHECK(range_lock(b, F_SETLK, F_WRLCK, 0, 100) == 0, "POSIX write lock");
    CHECK(range_lock(b, F_SETLK, F_RDLCK, 200, 0) == 0, "POSIX read lock to EOF");
    CHECK(range_lock(c, F_OFD_SETLK, F_WRLCK, 10, 10) == 0, "OFD lock");
    CHECK(fcntl(d, F_SETLEASE, F_RDLCK) == 0, "read lease");
    ready_then_wait(argv[1]);

    CHECK(fcntl(d, F_GETLEASE) == F_RDLCK, "lease: %d", fcntl(d, F_GETLEASE));
    pid_t me = getpid(), child = fork();
    if (child == 0) {
        int bad = 0;
        pid_t holder;
        int other = open_in(dir, "flocked", O_RDWR);
        if (flock(other, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK)
            bad |= 1;
        if (blocked_by(dir, "posix", F_GETLK, 50, 1, &holder) != F_WRLCK || holder != me)
            bad |= 2;
        if (blocked_by(dir, "posix", F_GETLK, 150, 1, &holder) != F_UNLCK)
            bad |= 4;
        if (blocked_by(dir, "posix", F_GETLK, 5000, 1, &holder) != F_RDLCK)
            bad |= 8;
        if (blocked_by(dir, "ofd", F_OFD_GETLK, 15, 1, &holder) != F_WRLCK)
            bad |= 16;
        if (blocked_by(dir, "ofd", F_OFD_GETLK, 25, 1, &holder) != F_UNLCK)
            bad |= 32;
        _exit(bad);
    }
    int status;
    waitpid(child, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "locks not held (mask %d)",
          WEXITSTATUS(status));
    return verdict();
}
