/* inotify: watches of a directory and a file (argv[2], a scratch directory) with
   their masks and watch numbers (one removed, so numbers have a gap); an event
   queued at the checkpoint is lost, events after the restart arrive. */
#include "fd_kind_check.h"
#include <fcntl.h>
#include <stdlib.h>
#include <sys/inotify.h>
#include <sys/stat.h>

int main(int argc, char **argv)
{
    char file[4096], other[4096], made[4096];
    snprintf(file, sizeof file, "%s/watched", argv[2]);
    snprintf(other, sizeof other, "%s/other", argv[2]);
    snprintf(made, sizeof made, "%s/made-after", argv[2]);
    close(open(file, O_CREAT | O_WRONLY, 0600));
    mkdir(other, 0700);
    int in = inotify_init1(IN_NONBLOCK);
    int dir_wd = inotify_add_watch(in, argv[2], IN_CREATE | IN_DELETE);
    int gone = inotify_add_watch(in, other, IN_CREATE);
    inotify_rm_watch(in, gone);
    int file_wd = inotify_add_watch(in, file, IN_MODIFY | IN_ONESHOT);
    char buf[4096];
    while (read(in, buf, sizeof buf) > 0)
        ;                                   /* the IN_IGNORED of `gone` */
    close(open(other, O_RDONLY));           /* no event: not watched */
    char queued[4096];
    snprintf(queued, sizeof queued, "%s/queued", argv[2]);
    close(open(queued, O_CREAT | O_WRONLY, 0600));  /* an event left queued: lost */
    ready_then_wait(argv[1]);

    CHECK(dir_wd == 1 && gone == 2 && file_wd == 3, "numbers %d %d %d", dir_wd, gone, file_wd);
    CHECK(fcntl(in, F_GETFL) & O_NONBLOCK, "lost IN_NONBLOCK");
    close(open(made, O_CREAT | O_WRONLY, 0600));
    int fd = open(file, O_WRONLY);
    write(fd, "x", 1);
    write(fd, "y", 1);                      /* oneshot: no second event */
    close(fd);
    ssize_t n = read(in, buf, sizeof buf);
    int created = 0, modified = 0, other_events = 0;
    for (char *p = buf; n > 0 && p < buf + n;) {
        struct inotify_event *e = (struct inotify_event *)p;
        if (e->wd == dir_wd && (e->mask & IN_CREATE) && !strcmp(e->name, "made-after"))
            created++;
        else if (e->wd == file_wd && (e->mask & IN_MODIFY))
            modified++;
        else if (!(e->wd == file_wd && (e->mask & IN_IGNORED)))
            other_events++, printf("event wd %d mask %#x %s\n", e->wd, e->mask,
                                   e->len ? e->name : "");
        p += sizeof *e + e->len;
    }
    CHECK(created == 1 && modified == 1 && other_events == 0, "events: %d created, %d modified, "
          "%d others", created, modified, other_events);
    return verdict();
}
