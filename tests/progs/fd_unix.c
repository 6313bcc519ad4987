/* Unix sockets across a restart: pairs of each type with messages queued in
   both directions (a zero-length datagram too), a message with credentials,
   a pair whose other end is closed (data, then end of file), a listener on a
   path and an abstract one (new clients connect after the restart), a bound
   datagram socket with a message queued, a datagram socket connected to it,
   and (argv[2], if given) a stream socket connected to a listener outside,
   which must come back reset. */
#include "fd_kind_check.h"
#include <signal.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

static socklen_t addr_of(struct sockaddr_un *a, const char *name, int abstract)
{
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    strcpy(a->sun_path + (abstract ? 1 : 0), name);
    return offsetof(struct sockaddr_un, sun_path) + strlen(name) + 1;   /* the NUL, or the abstract name's leading 0 */
}

static void expect(int fd, const char *want, size_t n, const char *what)
{
    char buf[256];
    ssize_t got = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    CHECK(got == (ssize_t)n && !memcmp(buf, want, n), "%s: got %zd bytes", what, got);
}

static int listener(const char *name, int abstract)
{
    struct sockaddr_un a;
    socklen_t len = addr_of(&a, name, abstract);
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    if (bind(s, (struct sockaddr *)&a, len) || listen(s, 5))
        perror("listener");
    return s;
}

static void client_echo(const char *name, int abstract, int server, const char *what)
{
    struct sockaddr_un a;
    socklen_t len = addr_of(&a, name, abstract);
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(connect(c, (struct sockaddr *)&a, len) == 0, "%s: connect", what);
    int s = accept(server, NULL, NULL);
    CHECK(s >= 0, "%s: accept", what);
    write(c, "hi", 2);
    expect(s, "hi", 2, what);
    close(c);
    close(s);
}

int main(int argc, char **argv)
{
    char path[512], dgpath[512];
    snprintf(path, sizeof path, "%s.sock", argv[1]);
    snprintf(dgpath, sizeof dgpath, "%s.dgram", argv[1]);
    signal(SIGPIPE, SIG_IGN);

    int st[2], dg[2], sp[2], cr[2], half[2], shut[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, st);
    socketpair(AF_UNIX, SOCK_DGRAM, 0, dg);
    socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp);
    socketpair(AF_UNIX, SOCK_DGRAM, 0, cr);
    socketpair(AF_UNIX, SOCK_STREAM, 0, half);
    write(st[0], "to one", 6);
    write(st[1], "to zero", 7);
    send(dg[0], "d1", 2, 0);
    send(dg[0], "", 0, 0);
    send(dg[0], "d3", 2, 0);
    send(sp[1], "seq", 3, 0);
    send(sp[1], "packet", 6, 0);
    int on = 1;
    setsockopt(cr[1], SOL_SOCKET, SO_PASSCRED, &on, sizeof on);
    send(cr[0], "cred", 4, 0);
    write(half[1], "last words", 10);
    close(half[1]);
    socketpair(AF_UNIX, SOCK_STREAM, 0, shut);
    write(shut[1], "bye", 3);
    shutdown(shut[1], SHUT_WR);

    int lp = listener(path, 0), la = listener("rcore-test-abstract", 1);
    (void)la;
    struct sockaddr_un a;
    socklen_t alen = addr_of(&a, dgpath, 0);
    int bound = socket(AF_UNIX, SOCK_DGRAM, 0);
    bind(bound, (struct sockaddr *)&a, alen);
    int conn = socket(AF_UNIX, SOCK_DGRAM, 0);
    connect(conn, (struct sockaddr *)&a, alen);
    send(conn, "queued", 6, 0);

    /* More than a socket buffer holds by default: the program grew it. */
    int big[2], bigsize = 4 << 20;
    static char pattern[1 << 20], back[1 << 20];
    for (size_t i = 0; i < sizeof pattern; i++)
        pattern[i] = (char)(i * 7 + i / 251);
    socketpair(AF_UNIX, SOCK_STREAM, 0, big);
    setsockopt(big[0], SOL_SOCKET, SO_SNDBUFFORCE, &bigsize, sizeof bigsize);
    CHECK(send(big[0], pattern, sizeof pattern, MSG_DONTWAIT) == sizeof pattern, "1 MiB queued");

    int outside = -1;
    if (argc > 2) {
        alen = addr_of(&a, argv[2], 0);
        outside = socket(AF_UNIX, SOCK_STREAM, 0);
        CHECK(connect(outside, (struct sockaddr *)&a, alen) == 0, "connect outside");
    }

    ready_then_wait(argv[1]);

    expect(st[1], "to one", 6, "stream 0->1");
    expect(st[0], "to zero", 7, "stream 1->0");
    write(st[0], "again", 5);
    expect(st[1], "again", 5, "stream after restart");
    expect(dg[1], "d1", 2, "dgram 1");
    expect(dg[1], "", 0, "dgram empty");
    expect(dg[1], "d3", 2, "dgram 3");
    expect(sp[0], "seq", 3, "seqpacket 1");
    expect(sp[0], "packet", 6, "seqpacket 2");

    char buf[64], cbuf[CMSG_SPACE(sizeof(struct ucred))];
    struct iovec iov = {buf, sizeof buf};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                       .msg_controllen = sizeof cbuf};
    ssize_t n = recvmsg(cr[1], &m, MSG_DONTWAIT);
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    CHECK(n == 4 && c && c->cmsg_type == SCM_CREDENTIALS, "credentials message");
    if (c && c->cmsg_type == SCM_CREDENTIALS) {
        struct ucred *u = (struct ucred *)CMSG_DATA(c);
        CHECK(u->pid == getpid(), "credentials pid %d", u->pid);
    }

    expect(shut[0], "bye", 3, "pair shut for writing");
    CHECK(read(shut[0], buf, 1) == 0, "end of file after shutdown(SHUT_WR)");
    CHECK(write(shut[1], "x", 1) == -1 && errno == EPIPE, "write after shutdown: EPIPE");
    CHECK(write(shut[0], "up", 2) == 2, "the other direction still open");
    expect(shut[1], "up", 2, "the other direction");

    expect(half[0], "last words", 10, "half-closed pair");
    CHECK(read(half[0], buf, 1) == 0, "end of file after the closed end's data");

    size_t got = 0;
    while (got < sizeof back) {
        ssize_t n2 = recv(big[1], back + got, sizeof back - got, MSG_DONTWAIT);
        if (n2 <= 0)
            break;
        got += n2;
    }
    CHECK(got == sizeof back && !memcmp(back, pattern, sizeof back), "1 MiB back: %zu", got);

    client_echo(path, 0, lp, "listener on a path");
    client_echo("rcore-test-abstract", 1, la, "abstract listener");
    expect(bound, "queued", 6, "bound datagram socket's queue");
    send(conn, "more", 4, 0);
    expect(bound, "more", 4, "connected datagram socket");

    if (outside >= 0) {
        CHECK(read(outside, buf, 1) == -1 && errno == ECONNRESET, "outside peer: reset");
        CHECK(read(outside, buf, 1) == 0, "outside peer: end of file after the reset");
        CHECK(write(outside, "x", 1) == -1 && errno == EPIPE, "outside peer: EPIPE");
    }
    unlink(path);
    unlink(dgpath);
    return verdict();
}
