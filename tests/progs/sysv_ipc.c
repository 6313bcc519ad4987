/* SysV IPC: a shared memory segment attached with a pattern, another attached
   and removed (IPC_RMID: gone at its last detach), a semaphore set with
   values, a message queue with two messages, and a segment made but never
   attached (the checkpoint describes it, without its bytes).  Prints their ids, then
   "ready"; after the restart checks every one by the ids it kept (they must
   be the same objects or recreated with the same ids), that shmdt() detaches
   the segment (a real attachment), and removes them. */
#include "fd_kind_check.h"
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>

#define SEG (3 * 4096 - 100)

struct msg { long type; char text[32]; };

int main(int argc, char **argv)
{
    key_t key = (key_t)strtol(argv[2], NULL, 0);
    int shmid = shmget(key, SEG, IPC_CREAT | IPC_EXCL | 0640);
    int semid = semget(key + 1, 3, IPC_CREAT | IPC_EXCL | 0600);
    int msqid = msgget(key + 2, IPC_CREAT | IPC_EXCL | 0620);
    unsigned char *p = shmat(shmid, NULL, 0);
    int rmid = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
    char *r = shmat(rmid, NULL, 0);
    shmctl(rmid, IPC_RMID, NULL);
    int lone = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
    strcpy(r, "removed but attached");
    unsigned short values[3] = {1, 5, 9};
    semctl(semid, 0, SETALL, values);
    struct msg first = {1, "first"}, second = {7, "second"};
    msgsnd(msqid, &first, 6, 0);
    msgsnd(msqid, &second, 7, 0);
    for (int i = 0; i < SEG; i++)
        p[i] = (unsigned char)(i * 13 + 1);
    printf("ids %d %d %d %d\n", shmid, semid, msqid, lone);
    ready_then_wait(argv[1]);

    int bad = 0;
    for (int i = 0; i < SEG; i++)
        bad += p[i] != (unsigned char)(i * 13 + 1);
    CHECK(bad == 0, "%d bytes of the segment differ", bad);
    struct shmid_ds ds;
    CHECK(shmctl(shmid, IPC_STAT, &ds) == 0 && ds.shm_nattch == 1 && ds.shm_segsz == SEG
          && ds.shm_perm.__key == key && (ds.shm_perm.mode & 0777) == 0640,
          "segment: nattch %lu size %zu key %#x mode %o", (unsigned long)ds.shm_nattch,
          ds.shm_segsz, ds.shm_perm.__key, ds.shm_perm.mode & 0777);
    CHECK(shmdt(p) == 0, "shmdt of the segment");
    CHECK(!strcmp(r, "removed but attached"), "removed segment: %s", r);
    CHECK(shmctl(rmid, IPC_STAT, &ds) == 0 && (ds.shm_perm.mode & SHM_DEST) && ds.shm_nattch == 1,
          "removed segment: mode %o nattch %lu", ds.shm_perm.mode, (unsigned long)ds.shm_nattch);
    CHECK(shmdt(r) == 0 && shmctl(rmid, IPC_STAT, &ds) == -1 && errno == EINVAL,
          "the removed segment outlived its last detach");
    unsigned short now[3] = {0};
    CHECK(semctl(semid, 0, GETALL, now) == 0 && now[0] == 1 && now[1] == 5 && now[2] == 9,
          "semaphores %u %u %u", now[0], now[1], now[2]);
    struct sembuf down = {1, -5, IPC_NOWAIT};
    CHECK(semop(semid, &down, 1) == 0 && semctl(semid, 1, GETVAL) == 0, "semop");
    struct semid_ds sds;
    union { struct semid_ds *buf; } arg = {&sds};
    CHECK(semctl(semid, 0, IPC_STAT, arg) == 0 && sds.sem_perm.__key == key + 1
          && (sds.sem_perm.mode & 0777) == 0600, "semaphore set: key %#x mode %o",
          sds.sem_perm.__key, sds.sem_perm.mode & 0777);
    struct msg got;
    memset(&got, 0, sizeof got);
    CHECK(msgrcv(msqid, &got, sizeof got.text, 0, IPC_NOWAIT) == 6 && got.type == 1
          && !strcmp(got.text, "first"), "first message: %ld %s", got.type, got.text);
    memset(&got, 0, sizeof got);
    CHECK(msgrcv(msqid, &got, sizeof got.text, 0, IPC_NOWAIT) == 7 && got.type == 7
          && !strcmp(got.text, "second"), "second message: %ld %s", got.type, got.text);
    CHECK(msgrcv(msqid, &got, sizeof got.text, 0, IPC_NOWAIT) == -1 && errno == ENOMSG,
          "a third message");
    struct msqid_ds mds;
    CHECK(msgctl(msqid, IPC_STAT, &mds) == 0 && mds.msg_perm.__key == key + 2
          && (mds.msg_perm.mode & 0777) == 0620, "queue: key %#x mode %o",
          mds.msg_perm.__key, mds.msg_perm.mode & 0777);
    shmctl(shmid, IPC_RMID, NULL);
    shmctl(lone, IPC_RMID, NULL);       /* if still there: the test may have removed it */
    semctl(semid, 0, IPC_RMID);
    msgctl(msqid, IPC_RMID, NULL);
    return verdict();
}
