/* SysV shared memory, a semaphore set and a message queue (IPC_PRIVATE, made
   before fork) used by parent and child.  Before the checkpoint: the parent
   queues messages 1, 2, 3; the child takes message 1, lowers semaphore 1 from 5
   to 3, writes into the segment and raises semaphore 0 (the parent waits on it).
   After the go file (argv[1]): the child must find message 2 queued, semaphore 1
   at 3 and the parent's bytes in the segment, writes again and raises semaphore
   0; the parent waits on it, must see the child's new bytes, message 3 as the
   last queued one, and the same ids; it then removes the three objects.  The
   first line printed gives the ids (for the test to remove them if it fails). */
#include "fd_kind_check.h"
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/wait.h>

#define SHM_SIZE (64 * 1024)

struct msg { long type; char text[32]; };
union semun { int val; struct semid_ds *buf; unsigned short *array; };

static int shm_id, sem_id, msg_id;
static char *seg;

static int sem_add(int num, int delta)
{
    struct sembuf op = {num, delta, 0};
    struct timespec limit = {30, 0};    /* a lost semaphore fails, not hangs */
    return semtimedop(sem_id, &op, 1, &limit);
}

static void take_message(long type, const char *want)
{
    struct msg m = {0};
    ssize_t n = msgrcv(msg_id, &m, sizeof m.text, type, IPC_NOWAIT);
    CHECK(n == (ssize_t)strlen(want) + 1 && !strcmp(m.text, want),
          "message %ld: got %zd bytes '%s', expected '%s'", type, n, n > 0 ? m.text : "", want);
}

static void put_message(long type, const char *text)
{
    struct msg m = {type, ""};
    strcpy(m.text, text);
    CHECK(msgsnd(msg_id, &m, strlen(text) + 1, 0) == 0, "msgsnd %ld", type);
}

int main(int argc, char **argv)
{
    const char *go = argv[1];
    shm_id = shmget(IPC_PRIVATE, SHM_SIZE, IPC_CREAT | 0600);
    sem_id = semget(IPC_PRIVATE, 2, IPC_CREAT | 0600);
    msg_id = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
    printf("shm %d sem %d msg %d\n", shm_id, sem_id, msg_id);
    fflush(stdout);
    if (shm_id < 0 || sem_id < 0 || msg_id < 0)
        return 2;
    seg = shmat(shm_id, NULL, 0);
    unsigned short init[2] = {0, 5};
    CHECK(semctl(sem_id, 0, SETALL, (union semun){.array = init}) == 0, "SETALL");
    for (int i = 0; i < SHM_SIZE / 2; i++)
        seg[i] = (char)(i * 13);
    put_message(1, "one");
    put_message(2, "two");
    put_message(3, "three");

    pid_t child = fork();
    if (child == 0) {
        take_message(1, "one");
        CHECK(sem_add(1, -2) == 0, "child: semaphore 1 down by 2");
        strcpy(seg + SHM_SIZE / 2, "child before");
        CHECK(sem_add(0, 1) == 0, "child: semaphore 0 up");
        wait_go(go);
        take_message(2, "two");
        CHECK(semctl(sem_id, 1, GETVAL) == 3, "child: semaphore 1 is %d, expected 3", semctl(sem_id, 1, GETVAL));
        int bad = 0;
        for (int i = 0; i < SHM_SIZE / 2; i++)
            bad += seg[i] != (char)(i * 13);
        CHECK(bad == 0, "child: %d bytes of the parent's half differ", bad);
        strcpy(seg + SHM_SIZE / 2, "child after");
        CHECK(sem_add(0, 1) == 0, "child: semaphore 0 up after the restart");
        exit(failures != 0);
    }
    CHECK(sem_add(0, -1) == 0, "parent: the child's first semaphore 0 up");
    CHECK(!strcmp(seg + SHM_SIZE / 2, "child before"), "parent: segment has '%s'", seg + SHM_SIZE / 2);
    ready_then_wait(go);

    CHECK(sem_add(0, -1) == 0, "parent: no semaphore 0 up from the child after the restart");
    CHECK(!strcmp(seg + SHM_SIZE / 2, "child after"), "parent: segment has '%s', expected 'child after'",
          seg + SHM_SIZE / 2);
    int status = 0;
    CHECK(waitpid(child, &status, 0) == child, "wait for the child");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child's status 0x%x", status);
    take_message(3, "three");
    struct msqid_ds mq;
    CHECK(msgctl(msg_id, IPC_STAT, &mq) == 0 && mq.msg_qnum == 0, "queue not empty after message 3");
    CHECK(semctl(sem_id, 0, GETVAL) == 0 && semctl(sem_id, 1, GETVAL) == 3, "semaphores %d %d, expected 0 3",
          semctl(sem_id, 0, GETVAL), semctl(sem_id, 1, GETVAL));
    struct shmid_ds sd;
    CHECK(shmctl(shm_id, IPC_STAT, &sd) == 0 && sd.shm_segsz == SHM_SIZE, "segment size");
    shmctl(shm_id, IPC_RMID, NULL);
    semctl(sem_id, 0, IPC_RMID);
    msgctl(msg_id, IPC_RMID, NULL);
    return verdict();
}
