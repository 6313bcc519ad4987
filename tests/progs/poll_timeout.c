/* Blocked in poll() with a timeout when checkpointed: poll keeps its restart in
 * the kernel's per-thread restart block, which a new process lacks.  After a
 * restart poll must still time out (return 0), not fail with EINTR (tail -f and
 * event loops then quit).  Prints what poll returned.
 *   usage: poll_timeout MILLISECONDS */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    int ms = argc > 1 ? atoi(argv[1]) : 3000;
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("polling\n");
    int r = poll(NULL, 0, ms);
    printf("poll %d %s\n", r, r < 0 ? strerror(errno) : "timeout");
    return r == 0 ? 0 : 1;
}
