/* One open file description shared by parent and child: argv[2], opened (not
   O_APPEND) before fork.  They take turns (a token passed through two pipes),
   each writing one line per turn through its copy of the descriptor: 50 rounds
   before the checkpoint, 50 after the go file (argv[1]).  With the offset shared
   the file is the exact interleaving P 0, C 0, P 1, C 1, ...; with two offsets
   after the restart, the writes overwrite each other. */
#include "fd_kind_check.h"
#include <fcntl.h>
#include <sys/wait.h>

#define ROUNDS 100
#define BEFORE 50

static int fd;

static void line(char who, int round)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%c %03d\n", who, round);
    CHECK(write(fd, buf, n) == n, "write %c %d", who, round);
}

static void pass(int to) { CHECK(write(to, "t", 1) == 1, "pass the token"); }
static void take(int from) { char t; CHECK(read(from, &t, 1) == 1, "take the token"); }

int main(int argc, char **argv)
{
    const char *go = argv[1];
    fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int to_child[2], to_parent[2];
    if (fd < 0 || pipe(to_child) || pipe(to_parent))
        return 2;
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        for (int r = 0; r < ROUNDS; r++) {
            take(to_child[0]);          /* blocked here at the checkpoint */
            line('C', r);
            pass(to_parent[1]);
        }
        exit(failures != 0);
    }
    for (int r = 0; r < ROUNDS; r++) {
        if (r == BEFORE)
            ready_then_wait(go);
        line('P', r);
        pass(to_child[1]);
        take(to_parent[0]);
    }
    int status = 0;
    CHECK(waitpid(child, &status, 0) == child, "wait for the child");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child's status 0x%x", status);
    off_t end = lseek(fd, 0, SEEK_CUR);
    CHECK(end == 2 * ROUNDS * 6, "offset %lld, expected %d", (long long)end, 2 * ROUNDS * 6);

    char got[2 * ROUNDS * 6 + 1] = {0}, want[7];
    int rd = open(argv[2], O_RDONLY);
    CHECK(read(rd, got, sizeof got) == 2 * ROUNDS * 6, "file size");
    for (int i = 0; i < 2 * ROUNDS; i++) {
        snprintf(want, sizeof want, "%c %03d\n", i % 2 ? 'C' : 'P', i / 2);
        if (memcmp(got + 6 * i, want, 6)) {
            CHECK(0, "line %d of %s is '%.5s', expected '%.5s'", i, argv[2], got + 6 * i, want);
            break;
        }
    }
    return verdict();
}
