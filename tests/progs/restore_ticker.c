/* Prints "tick N" every 50 ms, sleeping in nanosleep in between (where a
 * checkpoint finds it).  With an argument, first dlopens that shared library
 * and calls its lib_value(), so that the library is a file-backed mapping.
 * usage: restore_ticker [LIBRARY] */
#include <dlfcn.h>
#include <stdio.h>
#include <time.h>

int main(int argc, char **argv) {
    long n = 0, base = 0;
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc > 1) {
        void *lib = dlopen(argv[1], RTLD_NOW);
        long (*value)(void) = lib ? (long (*)(void))dlsym(lib, "lib_value") : NULL;
        if (!value) {
            printf("dlopen failed: %s\n", dlerror());
            return 1;
        }
        base = value();
    }
    for (;;) {
        printf("tick %ld\n", ++n + base);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
