/* A parent with a zombie child (exited with status 7, not reaped) and a live
   child, checkpointed in that state.  After the go file (argv[1]): the parent
   reaps the zombie and must get its PID and status 7; the live child checks it is
   still the parent's child (getppid) and exits 0, and the parent waits for it. */
#include "fd_kind_check.h"
#include <sys/wait.h>

int main(int argc, char **argv)
{
    const char *go = argv[1];
    pid_t parent = getpid();
    fflush(stdout);
    pid_t zombie = fork();
    if (zombie == 0)
        _exit(7);
    pid_t live = fork();
    if (live == 0) {
        wait_go(go);
        CHECK(getppid() == parent, "live child's parent %d, expected %d", (int)getppid(), (int)parent);
        exit(failures != 0);
    }
    siginfo_t si;                       /* wait until it is a zombie, leaving it one */
    CHECK(waitid(P_PID, zombie, &si, WEXITED | WNOWAIT) == 0, "waitid(WNOWAIT)");
    printf("zombie %d live %d\n", (int)zombie, (int)live);
    ready_then_wait(go);

    int status = 0, zstatus = 0;
    CHECK(getpid() == parent, "pid %d, expected %d", (int)getpid(), (int)parent);
    pid_t got = waitpid(zombie, &zstatus, WNOHANG); /* a zombie: no waiting needed */
    CHECK(got == zombie, "reaped %d, expected the zombie %d", (int)got, (int)zombie);
    CHECK(WIFEXITED(zstatus) && WEXITSTATUS(zstatus) == 7, "zombie's status 0x%x, expected exit 7", zstatus);
    printf("reaped zombie %d: status 0x%x\n", (int)got, zstatus);
    got = waitpid(live, &status, 0);
    CHECK(got == live, "waited %d, expected the live child %d", (int)got, (int)live);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "live child's status 0x%x", status);
    errno = 0;
    CHECK(waitpid(-1, &status, WNOHANG) < 0 && errno == ECHILD, "a child left");
    return verdict();
}
