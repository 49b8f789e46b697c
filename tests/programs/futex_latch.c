// fibershim-carriers: 1 2
/* 2,000 threads hammer 16 latches made of a raw futex word, as InnoDB's
 * are (a compare-and-swap to take it, syscall(SYS_futex, FUTEX_WAIT) to
 * wait, FUTEX_WAKE to hand it on). Each round takes two latches in index
 * order and holds the first while waiting for the second, so a waiter
 * can hold a latch others wait for: with one kernel thread per waiter
 * from a bounded pool, the pool fills with waiters of the outer latch
 * while its holder waits for a thread to wait for the inner one. Every
 * latch guards a plain counter, checked at the end; the same latches are
 * then used with FUTEX_PRIVATE_FLAG off (the shared operations). */
#include "common.h"

#include <linux/futex.h>
#include <stdatomic.h>
#include <sys/syscall.h>

#define THREADS 2000
#define ROUNDS 40
#define LATCHES 16

/* 0 free, 1 taken, 2 taken and maybe waited for (Drepper's mutex 2). */
struct latch {
    _Atomic uint32_t word;
    long count; /* guarded by word */
};

static struct latch latches[LATCHES];
static int private_flag = FUTEX_PRIVATE_FLAG;
static _Atomic long waits;

static long futex(_Atomic uint32_t *w, int op, uint32_t val)
{
    return syscall(SYS_futex, w, op | private_flag, val, NULL, NULL, 0);
}

static void latch_lock(struct latch *l)
{
    uint32_t c = 0;
    if (atomic_compare_exchange_strong(&l->word, &c, 1))
        return;
    if (c != 2)
        c = atomic_exchange(&l->word, 2);
    while (c != 0) {
        if (futex(&l->word, FUTEX_WAIT, 2) != 0 && errno != EAGAIN)
            FAIL("FUTEX_WAIT: %s", errname(errno));
        atomic_fetch_add_explicit(&waits, 1, memory_order_relaxed);
        c = atomic_exchange(&l->word, 2);
    }
}

static void latch_unlock(struct latch *l)
{
    if (atomic_exchange(&l->word, 0) == 2 && futex(&l->word, FUTEX_WAKE, 1) < 0)
        FAIL("FUTEX_WAKE: %s", errname(errno));
}

static void *worker(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    for (int r = 0; r < ROUNDS; r++) {
        seed = seed * 1103515245u + 12345u;
        int a = (int)(seed >> 16) % LATCHES,
            b = (a + 1 + (int)(seed >> 8) % (LATCHES - 1)) % LATCHES;
        if (a > b) {
            int t = a;
            a = b;
            b = t;
        }
        latch_lock(&latches[a]);
        long before = latches[a].count;
        latch_lock(&latches[b]);
        if (r % 4 == 0)
            sched_yield(); /* holding both: let the others pile up */
        latches[b].count++;
        latch_unlock(&latches[b]);
        latches[a].count = before + 1;
        latch_unlock(&latches[a]);
    }
    return NULL;
}

static void run(const char *what)
{
    static pthread_t t[THREADS];
    pthread_attr_t attr;
    CHECK_RC(pthread_attr_init(&attr));
    CHECK_RC(pthread_attr_setstacksize(&attr, 64 * 1024));
    for (int i = 0; i < LATCHES; i++)
        latches[i].count = 0;
    for (int i = 0; i < THREADS; i++)
        CHECK_RC(pthread_create(&t[i], &attr, worker, (void *)(uintptr_t)(i + 1)));
    for (int i = 0; i < THREADS; i++)
        CHECK_RC(pthread_join(t[i], NULL));
    pthread_attr_destroy(&attr);
    long sum = 0;
    for (int i = 0; i < LATCHES; i++) {
        if (atomic_load(&latches[i].word) != 0)
            FAIL("latch %d left taken", i);
        sum += latches[i].count;
    }
    if (sum != 2L * THREADS * ROUNDS)
        FAIL("%s: counters sum to %ld, expected %ld", what, sum, 2L * THREADS * ROUNDS);
    printf("%s: %d threads, %d rounds, 2 latches a round: counters sum to %ld\n", what, THREADS,
           ROUNDS, sum);
}

int main(void)
{
    run("private");
    private_flag = 0;
    run("shared");
    fprintf(stderr, "futex waits: %ld\n", atomic_load(&waits));
    return 0;
}
