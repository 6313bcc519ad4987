/* A pipe from parent to child with 40000 bytes queued in it at the checkpoint:
   the parent writes the first 50000 bytes of a known stream, the child reads
   10000, and the parent waits until exactly 40000 are queued (FIONREAD) before
   saying ready.  After the go file (argv[1]) the child reads everything and the
   parent writes the rest of the stream (2 MiB in all) and closes; the child
   checks every byte and the count, and exits 0 only if they are exact.
   With argv[2] "writer-gone" the parent closes the write end at the checkpoint
   (a pipeline whose writer finished first): the child must read the 40000 queued
   bytes, then end of file. */
#include "fd_kind_check.h"
#include <sys/ioctl.h>
#include <sys/wait.h>

#define TOTAL (2 << 20)
#define FIRST 50000
#define READ_BEFORE 10000

static unsigned char stream(long i) { return (unsigned char)(i * 7 + i / 251); }

static void write_stream(int fd, long from, long to)
{
    unsigned char buf[4096];
    while (from < to) {
        int n = to - from < (long)sizeof buf ? (int)(to - from) : (int)sizeof buf;
        for (int i = 0; i < n; i++)
            buf[i] = stream(from + i);
        ssize_t w = write(fd, buf, n);
        if (w <= 0) {
            CHECK(0, "write at %ld", from);
            return;
        }
        from += w;
    }
}

/* Read up to `upto` bytes (or to EOF if upto < 0), checking each; the count read. */
static long read_stream(int fd, long at, long upto)
{
    unsigned char buf[4096];
    long bad = 0, start = at;
    while (upto < 0 || at < start + upto) {
        long want = upto < 0 ? (long)sizeof buf : start + upto - at;
        ssize_t n = read(fd, buf, want < (long)sizeof buf ? want : (long)sizeof buf);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            bad += buf[i] != stream(at + i);
        at += n;
    }
    CHECK(bad == 0, "%ld bytes of the stream differ after offset %ld", bad, start);
    return at - start;
}

int main(int argc, char **argv)
{
    const char *go = argv[1];
    int writer_gone = argc > 2 && !strcmp(argv[2], "writer-gone");
    long total = writer_gone ? FIRST : TOTAL;
    int p[2];
    if (pipe(p))
        return 2;
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        close(p[1]);
        long got = read_stream(p[0], 0, READ_BEFORE);
        wait_go(go);
        got += read_stream(p[0], got, -1);
        CHECK(got == total, "child read %ld bytes, expected %ld", got, total);
        printf("child read %ld bytes\n", got);
        exit(failures != 0);
    }
    close(p[0]);
    write_stream(p[1], 0, FIRST);
    int queued = 0;
    while (ioctl(p[1], FIONREAD, &queued) == 0 && queued != FIRST - READ_BEFORE) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    printf("queued %d\n", queued);
    if (writer_gone)
        close(p[1]);
    ready_then_wait(go);

    if (!writer_gone)
        write_stream(p[1], FIRST, TOTAL);
    close(p[1]);
    int status = 0;
    CHECK(waitpid(child, &status, 0) == child, "wait for the child");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child's status 0x%x", status);
    return verdict();
}
