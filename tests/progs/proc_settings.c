/* Process settings across a checkpoint, kill and restart: MAP_LOCKED and
   mlock'ed memory, MADV_GUARD_INSTALL guard pages, the THP-disable and
   child-subreaper prctls, oom_score_adj. */
#include "fd_kind_check.h"
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#define PAGE 4096
#define MADV_GUARD_INSTALL 102

static sigjmp_buf env;
static void on_segv(int sig) { siglongjmp(env, 1); }

/* Whether the mapping containing addr shows `flag` in its VmFlags. */
static int vmflag(void *addr, const char *flag)
{
    char line[1024];
    int in = 0, found = 0;
    FILE *f = fopen("/proc/self/smaps", "r");
    while (fgets(line, sizeof line, f)) {
        unsigned long s, e;
        if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' '))
            in = (uintptr_t)addr >= s && (uintptr_t)addr < e;
        else if (in && !strncmp(line, "VmFlags:", 8)) {
            char want[8];
            snprintf(want, sizeof want, " %s ", flag);
            found = strstr(line, want) != NULL;
        }
    }
    fclose(f);
    return found;
}

static int faults(volatile char *p)
{
    if (sigsetjmp(env, 1))
        return 1;
    (void)*p;
    return 0;
}

static int read_adj(void)
{
    int v = 0;
    FILE *f = fopen("/proc/self/oom_score_adj", "r");
    fscanf(f, "%d", &v);
    fclose(f);
    return v;
}

int main(int argc, char **argv)
{
    char *locked = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED, -1, 0);
    char *partly = mmap(NULL, 8 * PAGE, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(mlock(partly + 2 * PAGE, 2 * PAGE) == 0, "mlock");
    char *guarded = mmap(NULL, 8 * PAGE, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    strcpy(guarded, "first page");
    strcpy(guarded + 7 * PAGE, "last page");
    int guards = madvise(guarded + 2 * PAGE, 2 * PAGE, MADV_GUARD_INSTALL) == 0;
    CHECK(prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0, "THP disable");
    CHECK(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0, "subreaper");
    FILE *adj = fopen("/proc/self/oom_score_adj", "w");
    fprintf(adj, "123\n");
    fclose(adj);
    strcpy(locked, "locked");
    ready_then_wait(argv[1]);

    printf("guards %s\n", guards ? "installed" : "not supported here");
    signal(SIGSEGV, on_segv);
    CHECK(vmflag(locked, "lo"), "MAP_LOCKED mapping not locked");
    CHECK(vmflag(partly + 2 * PAGE, "lo"), "mlock'ed range not locked");
    CHECK(!vmflag(partly, "lo"), "the rest of the mapping locked");
    CHECK(!strcmp(locked, "locked"), "locked memory lost");
    if (guards) {
        CHECK(faults(guarded + 2 * PAGE) && faults(guarded + 3 * PAGE), "no guard pages");
        CHECK(!faults(guarded + PAGE) && !faults(guarded + 4 * PAGE), "guards too wide");
        CHECK(!strcmp(guarded, "first page") && !strcmp(guarded + 7 * PAGE, "last page"),
              "memory around the guards lost");
    }
    CHECK(prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1, "THP enabled again");
    int sub = 0;
    prctl(PR_GET_CHILD_SUBREAPER, &sub, 0, 0, 0);
    CHECK(sub == 1, "not a subreaper");
    CHECK(read_adj() == 123, "oom_score_adj %d", read_adj());
    return verdict();
}
