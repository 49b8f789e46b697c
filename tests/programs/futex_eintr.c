// fibershim-carriers: 1 2
/* A signal handler that runs in a thread waiting on a raw futex ends the
 * wait as the kernel ends it: an untimed FUTEX_WAIT fails with EINTR,
 * unless the handler has SA_RESTART (then the wait goes on until a
 * FUTEX_WAKE); a timed FUTEX_WAIT or FUTEX_WAIT_BITSET always fails with
 * EINTR. The signal is sent again and again until the waiter returns, so
 * one that lands before the wait began does not matter. */
#include "common.h"

#include <linux/futex.h>
#include <stdatomic.h>
#include <sys/syscall.h>

static _Atomic uint32_t word;
static _Atomic int handled, returned;

static void handler(int sig)
{
    (void)sig;
    atomic_fetch_add(&handled, 1);
}

struct wait {
    int op;
    int timed; /* 0 none, 1 relative (FUTEX_WAIT), 2 absolute (FUTEX_WAIT_BITSET) */
    long rc;
    int err;
};

static void *waiter(void *arg)
{
    struct wait *w = arg;
    struct timespec ts = {30, 0};
    if (w->timed == 2) {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += 30;
    }
    errno = 0;
    w->rc =
        syscall(SYS_futex, &word, w->op, 0, w->timed ? &ts : NULL, NULL, FUTEX_BITSET_MATCH_ANY);
    w->err = errno;
    atomic_store(&returned, 1);
    return NULL;
}

static void run(const char *what, int op, int timed, int sa_flags)
{
    struct sigaction sa = {.sa_handler = handler, .sa_flags = sa_flags};
    sigemptyset(&sa.sa_mask);
    CHECK_SYS(sigaction(SIGUSR1, &sa, NULL));
    atomic_store(&word, 0);
    atomic_store(&handled, 0);
    atomic_store(&returned, 0);
    struct wait w = {.op = op, .timed = timed};
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, waiter, &w));
    /* Signals until it returns; with SA_RESTART it never does by itself:
     * after five handled signals, wake it. */
    int woke = 0;
    for (int i = 0; i < 3000 && !atomic_load(&returned); i++) {
        CHECK_RC(pthread_kill(t, SIGUSR1));
        usleep(10000);
        if ((sa_flags & SA_RESTART) && !timed && atomic_load(&handled) >= 5 && !woke) {
            usleep(20000);
            woke = 1;
            CHECK(!atomic_load(&returned));
            atomic_store(&word, 1);
            syscall(SYS_futex, &word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
        }
    }
    CHECK_RC(pthread_join(t, NULL));
    printf("%s: %s%s\n", what, w.rc == 0 ? "0" : errname(w.err),
           woke ? " (after the handlers, at the wake)" : "");
}

int main(void)
{
    run("untimed FUTEX_WAIT, handler without SA_RESTART", FUTEX_WAIT_PRIVATE, 0, 0);
    run("untimed FUTEX_WAIT, handler with SA_RESTART", FUTEX_WAIT_PRIVATE, 0, SA_RESTART);
    run("timed FUTEX_WAIT, handler with SA_RESTART", FUTEX_WAIT_PRIVATE, 1, SA_RESTART);
    run("absolute FUTEX_WAIT_BITSET, handler with SA_RESTART", FUTEX_WAIT_BITSET_PRIVATE, 2,
        SA_RESTART);
    run("untimed FUTEX_WAIT_BITSET, handler without SA_RESTART", FUTEX_WAIT_BITSET_PRIVATE, 0, 0);
    return 0;
}
