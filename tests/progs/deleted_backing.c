/* Memory whose only copy is in the process: shared anonymous memory, and a private
 * mapping of a file that is then unlinked.  Prints both addresses. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    char *shared = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    strcpy(shared + 8192, "shared anonymous bytes");
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    char page[4096] = "bytes of an unlinked file";
    write(fd, page, sizeof page);
    char *priv = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    unlink(argv[1]);
    printf("%p %p\n", (void *)shared, (void *)priv);
    fflush(stdout);
    for (;;)
        pause();
}
