// fibershim-carriers: 1 2
/* A signal interrupts a thread blocked in a call the kernel interrupts:
 * open() of a FIFO without a writer and waitpid() for a child that has
 * not ended. The handler runs at once, during the call; without
 * SA_RESTART the call fails with EINTR, with SA_RESTART it goes on and
 * completes (the FIFO gets a writer, the child ends). */
#include "common.h"

#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>

static atomic_int handled;
static char fifo[64];

static void handler(int sig)
{
    (void)sig;
    atomic_fetch_add(&handled, 1);
}

static void set_handler(int flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    CHECK_SYS(sigaction(SIGUSR1, &sa, NULL));
}

struct job {
    int what; /* 0 open, 1 waitpid */
    pid_t child;
    atomic_int started, finished;
    int rc, err;
};

static void *blocker(void *arg)
{
    struct job *j = arg;
    atomic_store(&j->started, 1);
    errno = 0;
    if (j->what == 0) {
        j->rc = open(fifo, O_RDONLY);
        j->err = errno;
        if (j->rc >= 0)
            close(j->rc);
    } else {
        int st;
        j->rc = (int)waitpid(j->child, &st, 0);
        j->err = errno;
    }
    atomic_store(&j->finished, 1);
    return NULL;
}

static void run(int what, int restart)
{
    set_handler(restart ? SA_RESTART : 0);
    struct job j = {.what = what};
    if (what == 1) {
        int p[2];
        CHECK_SYS(pipe(p));
        j.child = fork();
        CHECK(j.child >= 0);
        if (j.child == 0) {
            char c;
            close(p[1]);
            (void)!read(p[0], &c, 1); /* until the parent closes its end */
            _exit(0);
        }
        close(p[0]);
        j.rc = p[1]; /* kept open until the child may end */
    }
    int keep = j.rc;
    int before = atomic_load(&handled);
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, blocker, &j));
    while (!atomic_load(&j.started))
        usleep(1000);
    usleep(100000); /* in the call by now */
    CHECK_RC(pthread_kill(t, SIGUSR1));
    /* The handler runs during the call, not when it returns. */
    for (int i = 0; i < 10000 && atomic_load(&handled) == before; i++)
        usleep(1000);
    int ran = atomic_load(&handled) == before + 1;
    /* An interrupted call returns by itself; one that goes on is let
     * complete after a while. */
    for (int i = 0; i < 2000 && !atomic_load(&j.finished); i++)
        usleep(1000);
    if (what == 0) {
        int w = open(fifo, O_WRONLY | O_NONBLOCK);
        CHECK_RC(pthread_join(t, NULL));
        if (w >= 0)
            close(w);
    } else {
        close(keep);
        CHECK_RC(pthread_join(t, NULL));
        if (j.rc < 0)
            CHECK_SYS(waitpid(j.child, NULL, 0));
    }
    printf("%s, %s: handler ran during the call %s, call %s\n", what ? "waitpid" : "open FIFO",
           restart ? "SA_RESTART" : "no SA_RESTART", yesno(ran),
           j.rc >= 0 ? "completed" : errname(j.err));
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    snprintf(fifo, sizeof fifo, "/tmp/fibershim-sig-handoff-%d", (int)getpid());
    unlink(fifo);
    CHECK_SYS(mkfifo(fifo, 0600));
    for (int what = 0; what < 2; what++)
        for (int restart = 0; restart < 2; restart++)
            run(what, restart);
    unlink(fifo);
    return 0;
}
