/* MAP_SHARED|MAP_ANONYMOUS memory made before fork, used by parent and child.
   Before the checkpoint each fills its own half with a pattern and they play 100
   rounds of ping-pong through a turn word in it; after the go file (argv[1]) each
   checks the other's half, they play 500 rounds (so both have checked), each
   rewrites its own half, 500 more rounds, and the parent checks the child's.  If
   the memory came back unshared, a turn never arrives: the waiting side gives up
   (bounded wait) and the verdict says so. */
#include "fd_kind_check.h"
#include <sched.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define SIZE (1 << 20)
#define HALF (SIZE / 2)

struct shared { uint32_t turn, rounds; };
static struct shared *sh;
static unsigned char *mem;

static unsigned char pattern(int side, size_t i, int gen) { return (unsigned char)(i * 31 + side * 101 + gen * 7); }

static void fill(int side, int gen)
{
    for (size_t i = sizeof *sh; i < HALF; i++)
        mem[side * HALF + i] = pattern(side, i, gen);
}

static size_t mismatches(int side, int gen)
{
    size_t bad = 0;
    for (size_t i = sizeof *sh; i < HALF; i++)
        bad += mem[side * HALF + i] != pattern(side, i, gen);
    return bad;
}

/* Play n rounds as `me` (0 parent, 1 child): wait for our turn, count, pass it.
   0 if done, -1 if the other side never answered. */
static int ping_pong(uint32_t me, int n)
{
    for (int r = 0; r < n; r++) {
        struct timespec start, now;
        clock_gettime(CLOCK_MONOTONIC, &start);
        while (__atomic_load_n(&sh->turn, __ATOMIC_ACQUIRE) != me) {
            sched_yield();
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec - start.tv_sec > 30)
                return -1;
        }
        __atomic_add_fetch(&sh->rounds, 1, __ATOMIC_RELAXED);
        __atomic_store_n(&sh->turn, 1 - me, __ATOMIC_RELEASE);
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *go = argv[1];
    mem = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return 2;
    sh = (struct shared *)mem;
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        fill(1, 0);
        CHECK(ping_pong(1, 100) == 0, "child: no turn before the checkpoint");
        wait_go(go);
        CHECK(mismatches(0, 0) == 0, "child: %zu bytes of the parent's half differ", mismatches(0, 0));
        CHECK(ping_pong(1, 500) == 0, "child: the parent's turns stopped arriving (not shared?)");
        fill(1, 1);                     /* the parent has checked generation 0 */
        CHECK(ping_pong(1, 500) == 0, "child: the parent's turns stopped arriving");
        exit(failures != 0);
    }
    fill(0, 0);
    CHECK(ping_pong(0, 100) == 0, "parent: no turn before the checkpoint");
    /* The child's last turn of the first 100 hands the turn back: wait for it. */
    while (__atomic_load_n(&sh->rounds, __ATOMIC_ACQUIRE) < 200)
        sched_yield();
    ready_then_wait(go);

    CHECK(mismatches(1, 0) == 0, "parent: %zu bytes of the child's half differ", mismatches(1, 0));
    CHECK(ping_pong(0, 500) == 0, "parent: the child's turns stopped arriving (not shared?)");
    fill(0, 1);
    CHECK(ping_pong(0, 500) == 0, "parent: the child's turns stopped arriving");
    int status = 0;
    CHECK(waitpid(child, &status, 0) == child, "wait for the child");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child's status 0x%x", status);
    CHECK(mismatches(1, 1) == 0, "parent: the child's new half is not seen (%zu bytes differ)", mismatches(1, 1));
    printf("rounds %u\n", __atomic_load_n(&sh->rounds, __ATOMIC_ACQUIRE));
    CHECK(sh->rounds == 2200, "rounds %u, expected 2200", sh->rounds);
    return verdict();
}
