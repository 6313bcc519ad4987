/* epoll: watches with their events and data (EPOLLET, EPOLLONESHOT already
   fired, EPOLLEXCLUSIVE), an epoll inside an epoll, a pipe, and a watch whose
   fd was closed after a dup (the watch follows the description); fdinfo must
   show the same tfd/events/data after the restart. */
#include "fd_kind_check.h"
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

static void add(int ep, int fd, uint32_t events, uint64_t data)
{
    struct epoll_event ev = {.events = events, .data.u64 = data};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev))
        perror("epoll_ctl"), exit(2);
}

/* tfd, events and data of every watch in fd's fdinfo.  A oneshot watch that
   fired keeps only its flags; re-added, it also has EPOLLERR|EPOLLHUP, which
   epoll_ctl always adds (see docs/KERNEL-NOTES.md): those two bits are left
   out of such a watch's events. */
static int by_text(const void *a, const void *b) { return strcmp(a, b); }

static void watches(int fd, char *out, size_t size)
{
    char path[64], line[512], found[32][64];
    unsigned tfd, events, n = 0;
    unsigned long long data;
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    FILE *f = fopen(path, "r");
    while (n < 32 && fgets(line, sizeof line, f))
        if (sscanf(line, "tfd: %u events: %x data: %llx", &tfd, &events, &data) == 3) {
            if ((events & EPOLLONESHOT) && !(events & (EPOLLIN | EPOLLOUT | EPOLLPRI | EPOLLRDHUP)))
                events &= ~(EPOLLERR | EPOLLHUP);
            snprintf(found[n++], sizeof found[0], "%u %x %llx\n", tfd, events, data);
        }
    fclose(f);
    qsort(found, n, sizeof found[0], by_text);      /* the kernel's order is its own */
    out[0] = 0;
    for (unsigned i = 0; i < n; i++)
        strncat(out, found[i], size - strlen(out) - 1);
}

/* Bit set of the data values (0x1..0x7) epoll_wait reports now. */
static int ready(int ep)
{
    struct epoll_event evs[16];
    int n = epoll_wait(ep, evs, 16, 0), got = 0;
    for (int i = 0; i < n; i++)
        got |= 1 << evs[i].data.u64;
    return got;
}

static void kick(int efd)
{
    uint64_t one = 1;
    write(efd, &one, 8);
}

int main(int argc, char **argv)
{
    int et = eventfd(0, EFD_NONBLOCK), oneshot = eventfd(1, 0), excl = eventfd(0, 0);
    int pipefd[2];
    pipe(pipefd);
    int ep = epoll_create1(0), inner = epoll_create1(0), nested = eventfd(0, 0);
    fcntl(inner, F_SETFL, O_NONBLOCK);
    add(ep, et, EPOLLIN | EPOLLET, 1);
    add(ep, pipefd[0], EPOLLIN, 2);
    add(ep, oneshot, EPOLLIN | EPOLLONESHOT, 3);
    add(inner, nested, EPOLLIN, 7);
    add(ep, inner, EPOLLIN, 4);
    add(ep, excl, EPOLLIN | EPOLLEXCLUSIVE, 5);
    int gone = eventfd(0, 0);
    add(ep, gone, EPOLLIN, 6);
    int moved = dup(gone);
    close(gone);                       /* the watch stays: the description is open */
    int taken = open("/dev/null", O_RDONLY);   /* takes gone's number */
    int before = ready(ep);            /* fires (and disables) the oneshot */
    char had[2048], has[2048];
    watches(ep, had, sizeof had);
    ready_then_wait(argv[1]);

    watches(ep, has, sizeof has);
    CHECK(!strcmp(had, has), "watches differ:\n%s---\n%s", had, has);
    CHECK(before == 1 << 3 && taken == gone, "before the checkpoint: %#x", before);
    CHECK(ready(ep) == 0, "ready without an event");
    CHECK(fcntl(inner, F_GETFL) & O_NONBLOCK, "epoll lost O_NONBLOCK");
    CHECK(!(fcntl(ep, F_GETFL) & O_NONBLOCK), "epoll became non-blocking");
    kick(et);
    CHECK(ready(ep) == 1 << 1, "edge-triggered eventfd");
    CHECK(ready(ep) == 0, "edge-triggered eventfd reported twice");
    write(pipefd[1], "x", 1);
    CHECK(ready(ep) == 1 << 2 && ready(ep) == 1 << 2, "level-triggered pipe");
    char c;
    read(pipefd[0], &c, 1);
    kick(nested);
    CHECK(ready(ep) == 1 << 4, "epoll inside epoll");
    CHECK(ready(inner) == 1 << 7, "inner epoll");
    uint64_t v;
    read(nested, &v, 8);
    kick(excl);
    CHECK(ready(ep) == 1 << 5, "EPOLLEXCLUSIVE watch");
    read(excl, &v, 8);
    kick(moved);
    CHECK(ready(ep) == 1 << 6, "watch of a description moved to another fd");
    read(moved, &v, 8);
    CHECK(ready(ep) == 0, "oneshot fired again or other events");
    return verdict();
}
