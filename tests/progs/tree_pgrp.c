/* A session leader with children in two process groups: the leader's own (with
   child c) and one whose leader is child a (with child b and a's child a1).  Each
   process records its pid, ppid, pgid and sid once the layout is built; after the
   go file (argv[1]) each checks them again (the leader all but its parent) and
   reports through its exit status (a through its own and a1's), so the leader's
   verdict covers the whole tree. */
#include "fd_kind_check.h"
#include <sys/wait.h>

struct ids { pid_t pid, ppid, pgid, sid; };

static struct ids ids_now(void)
{
    return (struct ids){getpid(), getppid(), getpgid(0), getsid(0)};
}

/* 0 if the ids are unchanged, else which one changed (1 pid, 2 ppid, 3 pgid, 4 sid).
   The root's parent is outside the tree (rcore restart after a restart): not checked. */
static int changed(struct ids was, int is_root)
{
    struct ids now = ids_now();
    if (now.pid != was.pid) return 1;
    if (now.ppid != was.ppid && !is_root) return 2;
    if (now.pgid != was.pgid) return 3;
    if (now.sid != was.sid) return 4;
    return 0;
}

static int ready_fd[2];

/* In a child: say it is set up, wait for go, exit with the check of its ids
   (plus 8 x the exit of its own child, if any). */
static void child_checks(const char *go, pid_t own_child)
{
    struct ids was = ids_now();
    close(ready_fd[0]);                 /* only the parent reads it */
    CHECK(write(ready_fd[1], "r", 1) == 1, "ready byte");
    close(ready_fd[1]);
    wait_go(go);
    int code = changed(was, 0), status = 0;
    if (own_child > 0) {
        CHECK(waitpid(own_child, &status, 0) == own_child, "wait for %d", (int)own_child);
        code += 8 * (WIFEXITED(status) ? WEXITSTATUS(status) : 7);
    }
    exit(code);
}

int main(int argc, char **argv)
{
    const char *go = argv[1];
    if (getsid(0) != getpid())          /* started as a session leader, or become one */
        CHECK(setsid() == getpid(), "setsid");
    CHECK(pipe(ready_fd) == 0, "pipe");
    fflush(stdout);

    pid_t a = fork();
    if (a == 0) {
        setpgid(0, 0);                  /* also done by the parent: no race */
        pid_t a1 = fork();              /* stays in a's group */
        if (a1 == 0)
            child_checks(go, 0);
        child_checks(go, a1);
    }
    CHECK(setpgid(a, a) == 0 || errno == EACCES, "setpgid(a)");
    pid_t b = fork();
    if (b == 0) {
        setpgid(0, a);
        child_checks(go, 0);
    }
    CHECK(setpgid(b, a) == 0 || errno == EACCES, "setpgid(b)");
    pid_t c = fork();                   /* stays in the leader's group */
    if (c == 0)
        child_checks(go, 0);
    close(ready_fd[1]);
    char byte;
    for (int n = 0; n < 4; n++)         /* a, a1, b, c set up */
        CHECK(read(ready_fd[0], &byte, 1) == 1, "ready byte %d of 4", n);
    close(ready_fd[0]);
    struct ids was = ids_now();
    printf("leader %d groups %d:%d,%d %d:%d,%d\n", (int)getpid(), (int)getpid(), (int)getpid(),
           (int)c, (int)a, (int)a, (int)b);
    ready_then_wait(go);

    int code = changed(was, 1);
    CHECK(code == 0, "leader's ids changed (%d)", code);
    pid_t kids[] = {a, b, c};
    const char *names[] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++) {
        int status = 0;
        CHECK(waitpid(kids[i], &status, 0) == kids[i], "wait for %s", names[i]);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "child %s: status 0x%x (exit = own change + 8 x its child's)", names[i], status);
    }
    return verdict();
}
