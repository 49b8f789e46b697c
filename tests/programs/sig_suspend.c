// fibershim-carriers: 1 2
/* sigsuspend and pause wait in the thread, not in a kernel thread that
 * others need: a thread blocks SIGUSR1 and waits in sigsuspend with a
 * mask that lets it in; meanwhile main keeps running (with one carrier
 * too), sends the signal, and the thread's sigsuspend returns -1 EINTR
 * after the handler ran there, with its mask restored. pause() likewise.
 * A SIGUSR1 sent before the sigsuspend stays pending and ends it at once.
 * The masks given to ppoll, pselect and epoll_pwait are applied for the
 * wait the same way (on a pipe that never becomes readable). */
#include "common.h"

#include <poll.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <sys/select.h>

static __thread int in_target;
static atomic_int handled_in_target;

static void handler(int sig)
{
    (void)sig;
    if (in_target)
        atomic_fetch_add(&handled_in_target, 1);
}

enum how { SUSPEND, PAUSE, PPOLL, PSELECT, EPOLL_PWAIT };

struct job {
    int use_pause, early;
    atomic_int ready, done;
    atomic_int go;
    int rc, err, blocked_after;
};

static void *target(void *p)
{
    struct job *j = p;
    in_target = 1;
    sigset_t s, wait;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    CHECK_RC(pthread_sigmask(SIG_BLOCK, &s, NULL));
    atomic_store(&j->ready, 1);
    if (j->early)
        while (!atomic_load(&j->go))
            usleep(1000);
    errno = 0;
    CHECK_RC(pthread_sigmask(SIG_BLOCK, NULL, &wait));
    sigdelset(&wait, SIGUSR1);
    int pp[2];
    CHECK_SYS(pipe(pp));
    switch (j->use_pause) {
    case PAUSE:
        CHECK_RC(pthread_sigmask(SIG_UNBLOCK, &s, NULL));
        j->rc = pause();
        break;
    case SUSPEND:
        j->rc = sigsuspend(&wait);
        break;
    case PPOLL: {
        struct pollfd pf = {.fd = pp[0], .events = POLLIN};
        j->rc = ppoll(&pf, 1, NULL, &wait);
        break;
    }
    case PSELECT: {
        fd_set r;
        FD_ZERO(&r);
        FD_SET(pp[0], &r);
        j->rc = pselect(pp[0] + 1, &r, NULL, NULL, NULL, &wait);
        break;
    }
    case EPOLL_PWAIT: {
        int ep = CHECK_SYS(epoll_create1(0));
        struct epoll_event e = {.events = EPOLLIN};
        CHECK_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, pp[0], &e));
        j->rc = epoll_pwait(ep, &e, 1, -1, &wait);
        int err = errno;
        close(ep);
        errno = err;
        break;
    }
    }
    j->err = errno;
    close(pp[0]);
    close(pp[1]);
    errno = j->err;
    j->err = errno;
    sigset_t now;
    CHECK_RC(pthread_sigmask(SIG_BLOCK, NULL, &now));
    j->blocked_after = sigismember(&now, SIGUSR1);
    atomic_store(&j->done, 1);
    return NULL;
}

static void run(const char *name, int use_pause, int early)
{
    struct job j = {.use_pause = use_pause, .early = early};
    int before = atomic_load(&handled_in_target);
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, target, &j));
    while (!atomic_load(&j.ready))
        usleep(1000);
    if (early) {
        CHECK_RC(pthread_kill(t, SIGUSR1));
        usleep(50000);
        atomic_store(&j.go, 1);
    } else {
        /* main runs meanwhile: the wait does not hold its kernel thread.
         * pause: again every 100 ms until it returns, in case the first
         * came before the thread was in pause (a loaded machine). */
        usleep(200000);
        CHECK_RC(pthread_kill(t, SIGUSR1));
        while (use_pause == PAUSE && !atomic_load(&j.done)) {
            usleep(100000);
            if (!atomic_load(&j.done))
                CHECK_RC(pthread_kill(t, SIGUSR1));
        }
    }
    CHECK_RC(pthread_join(t, NULL));
    printf("%s: rc %d %s, handler ran in it %s, SIGUSR1 blocked after %s\n", name, j.rc,
           errname(j.rc ? j.err : 0), yesno(atomic_load(&handled_in_target) > before),
           yesno(j.blocked_after));
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    CHECK_SYS(sigaction(SIGUSR1, &sa, NULL));
    run("sigsuspend", SUSPEND, 0);
    run("sigsuspend, signal sent before", SUSPEND, 1);
    run("pause", PAUSE, 0);
    run("ppoll", PPOLL, 0);
    run("ppoll, signal sent before", PPOLL, 1);
    run("pselect", PSELECT, 0);
    run("epoll_pwait", EPOLL_PWAIT, 0);
    return 0;
}
