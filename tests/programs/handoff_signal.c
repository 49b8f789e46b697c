// fibershim-carriers: 1 2
/* A signal handler with SA_RESTART runs in a thread blocked in an untimed
 * FUTEX_WAIT on shared memory: the kernel runs the handler and restarts
 * the wait, which returns only after the FUTEX_WAKE. The signal is sent
 * again and again until the handler has run, then the waiter must still
 * be waiting, and the wake ends its wait with 0.
 *
 * Under the shim such a wait (memory another process may share) is handed
 * to a spare kernel thread while the fiber parks. The signal ended that
 * park: the handler ran, and the call returned at once with 0 while the
 * spare still waited, and later wrote its result into the caller's dead
 * stack frame and woke a park that no longer existed. */
#include "common.h"

#include <linux/futex.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/syscall.h>

static uint32_t *word; /* MAP_SHARED */
static _Atomic int handled, returned, woken;

static void handler(int sig)
{
    (void)sig;
    atomic_fetch_add(&handled, 1);
}

struct result {
    long rc;
    int err;
    int after_wake;
};

static void *waiter(void *arg)
{
    struct result *r = arg;
    errno = 0;
    r->rc = syscall(SYS_futex, word, FUTEX_WAIT, 0, NULL, NULL, 0);
    r->err = errno;
    r->after_wake = atomic_load(&woken);
    atomic_store(&returned, 1);
    return NULL;
}

static void round_once(int n)
{
    *word = 0;
    atomic_store(&handled, 0);
    atomic_store(&returned, 0);
    atomic_store(&woken, 0);
    struct result r = {0};
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, waiter, &r));
    sleep_ms(30);
    /* Until the handler has run in the waiter (a signal sent before the
     * wait began runs its handler before it). */
    int64_t t0 = now_ns();
    while (!atomic_load(&handled) && now_ns() - t0 < 10 * 1000000000LL) {
        CHECK_RC(pthread_kill(t, SIGUSR1));
        sleep_ms(10);
    }
    sleep_ms(50);
    int early = atomic_load(&returned);
    atomic_store(&woken, 1);
    __atomic_store_n(word, 1, __ATOMIC_SEQ_CST);
    CHECK_SYS(syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0));
    CHECK_RC(pthread_join(t, NULL));
    /* The wake may find the waiter between the handler and the restart
     * (then it sees the word changed: EAGAIN); either way not before. */
    printf(
        "round %d: handler ran: %s, returned before the wake: %s, wait: %s, after the wake: %s\n",
        n, yesno(atomic_load(&handled) > 0), yesno(early),
        r.rc == 0 || r.err == EAGAIN ? "0 or EAGAIN" : errname(r.err), yesno(r.after_wake));
}

int main(void)
{
    tp_setup(60);
    struct sigaction sa = {.sa_handler = handler, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    CHECK_SYS(sigaction(SIGUSR1, &sa, NULL));
    word = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(word != MAP_FAILED);
    for (int n = 1; n <= 5; n++)
        round_once(n);
    printf("done\n");
    return 0;
}
