/* A descriptor inherited from whatever started the program (fd 251, a pipe from
   a CI runner, say): after the restart it must still take writes. */
#include "fd_kind_check.h"

int main(int argc, char **argv)
{
    CHECK(write(251, "before\n", 7) == 7, "write to fd 251 before");
    ready_then_wait(argv[1]);
    CHECK(write(251, "after\n", 6) == 6, "write to fd 251 after the restart");
    return verdict();
}
