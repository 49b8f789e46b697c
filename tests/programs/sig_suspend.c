// fibershim-carriers: 1 2
/* sigsuspend and pause wait in the thread, not in a kernel thread that
 * others need: a thread blocks SIGUSR1 and waits in sigsuspend with a
 * mask that lets it in; meanwhile main keeps running (with one carrier
 * too), sends the signal, and the thread's sigsuspend returns -1 EINTR
 * after the handler ran there, with its mask restored. pause() likewise.
 * A SIGUSR1 sent before the sigsuspend stays pending and ends it at once. */
#include "common.h"

#include <stdatomic.h>

static __thread int in_target;
static atomic_int handled_in_target;

static void handler(int sig)
{
    (void)sig;
    if (in_target)
        atomic_fetch_add(&handled_in_target, 1);
}

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
    if (j->use_pause) {
        CHECK_RC(pthread_sigmask(SIG_UNBLOCK, &s, NULL));
        j->rc = pause();
    } else {
        CHECK_RC(pthread_sigmask(SIG_BLOCK, NULL, &wait));
        sigdelset(&wait, SIGUSR1);
        j->rc = sigsuspend(&wait);
    }
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
        while (use_pause && !atomic_load(&j.done)) {
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
    run("sigsuspend", 0, 0);
    run("sigsuspend, signal sent before", 0, 1);
    run("pause", 1, 0);
    return 0;
}
