/* A Unix socket pair between parent and child (SOCK_STREAM) with bytes queued
   both ways at the checkpoint: the parent sends 5 lines, the child reads the
   first and answers with 5 lines in one write, the parent reads the first; 4
   lines are then queued each way.  After the go file (argv[1]) each
   reads exactly what the other had queued, then they trade 100 numbered lines;
   the child reports through its exit status, the parent in its verdict. */
#include "fd_kind_check.h"
#include <sys/socket.h>
#include <sys/wait.h>

/* Send lines "<who> <n>" for n in [from, to), in one write. */
static void send_lines(int fd, const char *who, int from, int to)
{
    char buf[256];
    int len = 0;
    for (int n = from; n < to; n++)
        len += snprintf(buf + len, sizeof buf - len, "%s %03d\n", who, n);
    CHECK(write(fd, buf, len) == len, "%s sends %d..%d", who, from, to - 1);
}

/* Read one line of 9 bytes and check it is "<who> <n>". */
static void expect_line(int fd, const char *who, int n)
{
    char want[32], got[32] = {0};
    int len = snprintf(want, sizeof want, "%s %03d\n", who, n), have = 0;
    while (have < len) {
        ssize_t r = read(fd, got + have, len - have);
        if (r <= 0)
            break;
        have += r;
    }
    CHECK(have == len && !memcmp(got, want, len), "expected '%.*s', got %d bytes '%.*s'",
          len - 1, want, have, have, got);
}

int main(int argc, char **argv)
{
    const char *go = argv[1];
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
        return 2;
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        close(sv[0]);
        expect_line(sv[1], "dad", 0);       /* the parent's first line, read */
        send_lines(sv[1], "kid", 0, 5);     /* queued for the parent but the first */
        wait_go(go);
        for (int i = 1; i < 5; i++)         /* the parent's queued lines */
            expect_line(sv[1], "dad", i);
        for (int i = 5; i < 105; i++) {
            expect_line(sv[1], "dad", i);
            send_lines(sv[1], "kid", i, i + 1);
        }
        exit(failures != 0);
    }
    close(sv[1]);
    send_lines(sv[0], "dad", 0, 5);         /* queued for the child but the first */
    expect_line(sv[0], "kid", 0);           /* sent after the child read "dad 000" */
    ready_then_wait(go);

    for (int i = 1; i < 5; i++)             /* the child's queued lines */
        expect_line(sv[0], "kid", i);
    for (int i = 5; i < 105; i++) {
        send_lines(sv[0], "dad", i, i + 1);
        expect_line(sv[0], "kid", i);
    }
    int status = 0;
    CHECK(waitpid(child, &status, 0) == child, "wait for the child");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child's status 0x%x", status);
    return verdict();
}
