/* signalfd: its mask, and a signal pending at the checkpoint read through it. */
#include "fd_kind_check.h"
#include <fcntl.h>
#include <signal.h>
#include <sys/signalfd.h>

int main(int argc, char **argv)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_NONBLOCK);
    raise(SIGUSR2);                                  /* pending at the checkpoint */
    ready_then_wait(argv[1]);

    CHECK(fdinfo_value(sfd, "sigmask", 16) == ((1 << (SIGUSR1 - 1)) | (1 << (SIGUSR2 - 1))),
          "sigmask %llx", fdinfo_value(sfd, "sigmask", 16));
    CHECK(fcntl(sfd, F_GETFL) & O_NONBLOCK, "lost SFD_NONBLOCK");
    struct signalfd_siginfo si;
    CHECK(read(sfd, &si, sizeof si) == sizeof si && si.ssi_signo == SIGUSR2,
          "pending signal: %u", si.ssi_signo);
    kill(getpid(), SIGUSR1);
    CHECK(read(sfd, &si, sizeof si) == sizeof si && si.ssi_signo == SIGUSR1,
          "new signal: %u", si.ssi_signo);
    CHECK(read(sfd, &si, sizeof si) == -1 && errno == EAGAIN, "more signals than sent");
    return verdict();
}
