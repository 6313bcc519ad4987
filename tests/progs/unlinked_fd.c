/* Keeps a descriptor on a file it has unlinked, then counts. */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    write(fd, "only in the process now\n", 24);
    unlink(argv[1]);
    for (long n = 0;; n++) {
        printf("%ld\n", n);
        fflush(stdout);
        usleep(20000);
    }
}
