/* A process whose main thread has exited (a zombie leader) while another thread
 * runs on, with a child process.  Prints "PID CHILD" and lives on in its thread. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static void *run(void *arg)
{
    for (;;)
        pause();
    return arg;
}

int main(void)
{
    pid_t kid = fork();
    if (kid == 0)
        for (;;)
            pause();
    pthread_t t;
    pthread_create(&t, NULL, run, NULL);
    printf("%d %d\n", getpid(), kid);
    fflush(stdout);
    pthread_exit(NULL);
}
