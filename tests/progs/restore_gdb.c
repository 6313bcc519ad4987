/* For the gdb test: a recursion with locals at each level, a global that
 * changes at every breakpoint hit, and a loop counter in main. */
#include <unistd.h>

long g_value;

void checkpoint_here(long local) {
    g_value += local;
}

void descend(int depth, long acc) {
    long local = acc * 10 + depth;
    if (depth < 3)
        descend(depth + 1, local);
    else
        checkpoint_here(local);
}

int main(void) {
    for (long i = 1; i < 100000; i++) {
        descend(1, i);
        usleep(1000);
    }
    return 0;
}
