/* Shared by the descriptor-kind test programs (fd_*.c): set up the state, print
   "ready", wait until the test creates the file argv[1] (after the checkpoint,
   kill and restart), then check the state and print one "verdict:" line. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int failures;

#define CHECK(cond, ...) do { if (!(cond)) { failures++; printf("FAIL %s: ", #cond); \
    printf(__VA_ARGS__); printf(" (errno %s)\n", strerror(errno)); } } while (0)

/* Wait until the test creates the file go (also used by the children of the
   tree_*.c programs, which do not print "ready"). */
static void wait_go(const char *go)
{
    while (access(go, F_OK) != 0) {
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);           /* EINTR after the restart: loop again */
    }
}

static void ready_then_wait(const char *go)
{
    printf("ready\n");
    fflush(stdout);
    wait_go(go);
}

static int verdict(void)
{
    printf("verdict: %s\n", failures ? "FAIL" : "ok");
    fflush(stdout);
    return failures != 0;
}

/* The value of `key` in /proc/self/fdinfo/FD (first number after it), or -1. */
static long long fdinfo_value(int fd, const char *key, int base)
{
    char path[64], line[512];
    long long v = -1;
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, strlen(key)) && line[strlen(key)] == ':')
            v = strtoll(line + strlen(key) + 1, NULL, base);
    fclose(f);
    return v;
}
