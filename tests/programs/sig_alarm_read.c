// fibershim-carriers: 1 2
/* A process-directed signal goes to a thread that does not block it, and
 * interrupts the call that thread is blocked in: main blocks SIGALRM, a
 * worker that does not is blocked in read() on a pipe nobody writes, and
 * alarm() (then setitimer, then kill) ends the read with EINTR; the
 * handler runs in the worker. With SA_RESTART the read is restarted and
 * returns the byte written after the signal. */
#include "common.h"

#include <stdatomic.h>
#include <sys/time.h>

static __thread int in_worker;
static atomic_int handled, handled_in_worker;

static void on_alrm(int sig)
{
    (void)sig;
    atomic_fetch_add(&handled, 1);
    if (in_worker)
        atomic_fetch_add(&handled_in_worker, 1);
}

struct job {
    int fd;
    atomic_int ready, done;
    ssize_t rc;
    int err;
};

static void *worker(void *p)
{
    struct job *j = p;
    in_worker = 1;
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGALRM);
    CHECK_RC(pthread_sigmask(SIG_UNBLOCK, &s, NULL));
    atomic_store(&j->ready, 1);
    char c;
    errno = 0;
    j->rc = read(j->fd, &c, 1);
    j->err = errno;
    atomic_store(&j->done, 1);
    return NULL;
}

static void run(const char *how, int flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alrm;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    CHECK_SYS(sigaction(SIGALRM, &sa, NULL));
    int p[2];
    CHECK_SYS(pipe(p));
    struct job j = {.fd = p[0]};
    int before = atomic_load(&handled_in_worker);
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, worker, &j));
    while (!atomic_load(&j.ready))
        usleep(1000);
    if (!strcmp(how, "alarm")) {
        alarm(1);
    } else if (!strcmp(how, "setitimer")) {
        struct itimerval it = {{0, 0}, {0, 200000}};
        CHECK_SYS(setitimer(ITIMER_REAL, &it, NULL));
    } else {
        /* Again every 100 ms until the read returns: one that came before
         * the worker was in read (a loaded machine) ran its handler only. */
        do {
            usleep(100000);
            if (!atomic_load(&j.done) && atomic_load(&handled_in_worker) == before)
                CHECK_SYS(kill(getpid(), SIGALRM));
        } while (!(flags & SA_RESTART) && !atomic_load(&j.done));
    }
    if (flags & SA_RESTART) {
        while (atomic_load(&handled_in_worker) == before)
            usleep(1000);
        usleep(50000);
        CHECK_SYS(write(p[1], "x", 1));
    }
    CHECK_RC(pthread_join(t, NULL));
    printf("%s, %s: read %zd %s, handler ran in the worker %s\n", how,
           flags & SA_RESTART ? "SA_RESTART" : "no SA_RESTART", j.rc, errname(j.rc < 0 ? j.err : 0),
           yesno(atomic_load(&handled_in_worker) > before));
    close(p[0]);
    close(p[1]);
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGALRM);
    CHECK_RC(pthread_sigmask(SIG_BLOCK, &s, NULL));
    run("alarm", 0);
    run("setitimer", 0);
    run("kill", 0);
    run("kill", SA_RESTART);
    printf("every handler ran in the worker: %s\n",
           yesno(atomic_load(&handled) == atomic_load(&handled_in_worker)));
    return 0;
}
