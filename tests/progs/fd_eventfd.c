/* eventfd: counters, EFD_SEMAPHORE, non-blocking, a shared description. */
#include "fd_kind_check.h"
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <sys/eventfd.h>

int main(int argc, char **argv)
{
    int counter = eventfd(20, EFD_NONBLOCK);
    int sem = eventfd(3, EFD_SEMAPHORE);
    int shared = eventfd(0, 0);
    int dup_of_shared = dup(shared);
    uint64_t v = 5;
    write(counter, &v, 8);                      /* 25 */
    ready_then_wait(argv[1]);

    CHECK(fcntl(counter, F_GETFL) & O_NONBLOCK, "counter lost O_NONBLOCK");
    CHECK(!(fcntl(sem, F_GETFL) & O_NONBLOCK), "sem became non-blocking");
    CHECK(fdinfo_value(sem, "eventfd-semaphore", 10) == 1, "not a semaphore in fdinfo");
    v = 0;
    CHECK(read(counter, &v, 8) == 8 && v == 25, "counter read %llu", (unsigned long long)v);
    CHECK(read(counter, &v, 8) == -1 && errno == EAGAIN, "counter not empty after a read");
    for (int i = 0; i < 3; i++)
        CHECK(read(sem, &v, 8) == 8 && v == 1, "semaphore read %d gave %llu", i,
              (unsigned long long)v);
    struct pollfd p = {sem, POLLIN, 0};
    CHECK(poll(&p, 1, 0) == 0, "semaphore still readable after 3 reads");
    v = 7;
    write(shared, &v, 8);
    v = 0;
    CHECK(read(dup_of_shared, &v, 8) == 8 && v == 7, "dup does not share: %llu",
          (unsigned long long)v);
    return verdict();
}
