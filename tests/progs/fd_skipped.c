/* --skip-unsupported: netlink sockets (not rebuilt) must come back as
   disconnected descriptors, never as /dev/null: reads see end of file, writes
   fail with EPIPE. */
#include "fd_kind_check.h"
#include <signal.h>
#include <sys/socket.h>
#include <linux/netlink.h>

int main(int argc, char **argv)
{
    int sv[2] = {socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE),
                 socket(AF_NETLINK, SOCK_DGRAM, NETLINK_ROUTE)};
    signal(SIGPIPE, SIG_IGN);
    ready_then_wait(argv[1]);

    char c;
    CHECK(read(sv[0], &c, 1) == 0, "read did not see end of file");
    CHECK(write(sv[1], "x", 1) == -1 && errno == EPIPE, "write did not fail with EPIPE");
    return verdict();
}
