// fibershim-carriers: 1 2
/* Condition variables.
 *  - a pool of 1,000 worker threads fed through a bounded queue (two
 *    condition variables: not-empty, not-full); the order-independent
 *    checksum of the results and the count must be exact.
 *  - pthread_cond_broadcast wakes every waiter; pthread_cond_signal wakes
 *    one at a time.
 *  - pthread_cond_timedwait: ETIMEDOUT, not early, with the mutex held
 *    again on return (checked with an errorcheck mutex); 0 when signalled
 *    in time. condattr_setclock(CLOCK_MONOTONIC) and getclock;
 *    pthread_cond_clockwait with both clocks; EINVAL for unusable clocks
 *    and a bad tv_nsec.
 */
#include "common.h"
#include <stdatomic.h>

/* ---- worker pool ---- */

#define NWORKERS 1000
#define NTASKS 50000
#define QCAP 64

static pthread_mutex_t qmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t not_empty = PTHREAD_COND_INITIALIZER;
static pthread_cond_t not_full = PTHREAD_COND_INITIALIZER;
static uint32_t queue[QCAP];
static int qhead, qlen, done;
static uint64_t result_sum;
static long processed;

static uint64_t work(uint32_t x)
{
    uint64_t h = FNV_INIT;
    for (int i = 0; i < 8; i++)
        h = fnv1a(h, &x, sizeof x), x = x * 2654435761u + (uint32_t)i;
    return h;
}

static void *worker(void *unused)
{
    uint64_t local = 0;
    long n = 0;
    for (;;) {
        CHECK_RC(pthread_mutex_lock(&qmu));
        while (qlen == 0 && !done)
            CHECK_RC(pthread_cond_wait(&not_empty, &qmu));
        if (qlen == 0 && done) {
            CHECK_RC(pthread_mutex_unlock(&qmu));
            break;
        }
        uint32_t task = queue[qhead];
        qhead = (qhead + 1) % QCAP;
        qlen--;
        CHECK_RC(pthread_cond_signal(&not_full));
        CHECK_RC(pthread_mutex_unlock(&qmu));
        local += work(task);
        n++;
    }
    CHECK_RC(pthread_mutex_lock(&qmu));
    result_sum += local;
    processed += n;
    CHECK_RC(pthread_mutex_unlock(&qmu));
    return NULL;
}

static void pool(void)
{
    static pthread_t t[NWORKERS];
    for (int i = 0; i < NWORKERS; i++)
        CHECK_RC(create_thread(&t[i], 64 * 1024, worker, NULL));
    uint64_t expect = 0;
    for (uint32_t i = 0; i < NTASKS; i++) {
        CHECK_RC(pthread_mutex_lock(&qmu));
        while (qlen == QCAP)
            CHECK_RC(pthread_cond_wait(&not_full, &qmu));
        queue[(qhead + qlen) % QCAP] = i;
        qlen++;
        CHECK_RC(pthread_cond_signal(&not_empty));
        CHECK_RC(pthread_mutex_unlock(&qmu));
        expect += work(i);
    }
    CHECK_RC(pthread_mutex_lock(&qmu));
    done = 1;
    CHECK_RC(pthread_cond_broadcast(&not_empty));
    CHECK_RC(pthread_mutex_unlock(&qmu));
    for (int i = 0; i < NWORKERS; i++)
        CHECK_RC(pthread_join(t[i], NULL));
    printf("worker pool: %d workers, %ld tasks processed, checksum %016llx, matches: %s\n",
           NWORKERS, processed, (unsigned long long)result_sum, yesno(result_sum == expect));
}

/* ---- broadcast / signal ---- */

#define NWAIT 50
static pthread_mutex_t bmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t bcv = PTHREAD_COND_INITIALIZER;
static int generation, waiting, tokens;
static atomic_int woken;

static void *gen_waiter(void *unused)
{
    CHECK_RC(pthread_mutex_lock(&bmu));
    int g = generation;
    waiting++;
    while (generation == g)
        CHECK_RC(pthread_cond_wait(&bcv, &bmu));
    waiting--;
    CHECK_RC(pthread_mutex_unlock(&bmu));
    atomic_fetch_add(&woken, 1);
    return NULL;
}

static void *token_waiter(void *unused)
{
    CHECK_RC(pthread_mutex_lock(&bmu));
    waiting++;
    while (tokens == 0)
        CHECK_RC(pthread_cond_wait(&bcv, &bmu));
    tokens--;
    waiting--;
    CHECK_RC(pthread_mutex_unlock(&bmu));
    atomic_fetch_add(&woken, 1);
    return NULL;
}

static void wait_for_waiters(int n)
{
    for (;;) {
        CHECK_RC(pthread_mutex_lock(&bmu));
        int w = waiting;
        CHECK_RC(pthread_mutex_unlock(&bmu));
        if (w == n)
            return;
        sleep_ms(2);
    }
}

static void broadcast_signal(void)
{
    pthread_t t[NWAIT];
    for (int i = 0; i < NWAIT; i++)
        CHECK_RC(pthread_create(&t[i], NULL, gen_waiter, NULL));
    wait_for_waiters(NWAIT);
    CHECK_RC(pthread_mutex_lock(&bmu));
    generation++;
    CHECK_RC(pthread_cond_broadcast(&bcv));
    CHECK_RC(pthread_mutex_unlock(&bmu));
    for (int i = 0; i < NWAIT; i++)
        CHECK_RC(pthread_join(t[i], NULL));
    printf("broadcast woke %d of %d waiters\n", atomic_load(&woken), NWAIT);

    atomic_store(&woken, 0);
    for (int i = 0; i < NWAIT; i++)
        CHECK_RC(pthread_create(&t[i], NULL, token_waiter, NULL));
    wait_for_waiters(NWAIT);
    int ok_steps = 0;
    for (int i = 1; i <= NWAIT; i++) {
        CHECK_RC(pthread_mutex_lock(&bmu));
        tokens++;
        CHECK_RC(pthread_cond_signal(&bcv));
        CHECK_RC(pthread_mutex_unlock(&bmu));
        /* exactly one more waiter gets through per token */
        int64_t s = now_ns();
        while (atomic_load(&woken) < i && ms_since(s) < 10000)
            sleep_ms(1);
        ok_steps += atomic_load(&woken) == i;
    }
    for (int i = 0; i < NWAIT; i++)
        CHECK_RC(pthread_join(t[i], NULL));
    printf("signal x%d released one waiter each time: %d/%d\n", NWAIT, ok_steps, NWAIT);
}

/* ---- timed waits ---- */

static pthread_mutex_t emu = PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP;
static pthread_cond_t rt_cv = PTHREAD_COND_INITIALIZER;
static pthread_cond_t mono_cv;

static int trylock_other_rc;
static void *trylock_other(void *unused)
{
    trylock_other_rc = pthread_mutex_trylock(&emu);
    if (trylock_other_rc == 0)
        pthread_mutex_unlock(&emu);
    return NULL;
}

/* after a timed wait returned: do we hold emu? */
static const char *held_after(void)
{
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, trylock_other, NULL));
    CHECK_RC(pthread_join(t, NULL));
    int relock = pthread_mutex_lock(&emu); /* errorcheck: EDEADLK if held */
    if (relock == 0)
        pthread_mutex_unlock(&emu);
    return (trylock_other_rc == EBUSY && relock == EDEADLK) ? "yes" : "no";
}

static void timed(const char *what, pthread_cond_t *cv, clockid_t clk, int clockwait)
{
    CHECK_RC(pthread_mutex_lock(&emu));
    struct timespec dl = deadline_ms(clk, 100);
    int64_t s = now_ns();
    int rc = clockwait ? pthread_cond_clockwait(cv, &emu, clk, &dl)
                       : pthread_cond_timedwait(cv, &emu, &dl);
    double el = ms_since(s);
    printf("%s 100ms: %s, not early: %s, late < %.0fms: %s, mutex held again: %s\n", what,
           errname(rc), yesno(el >= 100.0), LATE_TOLERANCE_MS,
           yesno(el < 100.0 + LATE_TOLERANCE_MS), held_after());
    CHECK_RC(pthread_mutex_unlock(&emu));
}

static int flag;
static void *set_flag_later(void *arg)
{
    pthread_cond_t *cv = arg;
    sleep_ms(50);
    CHECK_RC(pthread_mutex_lock(&emu));
    flag = 1;
    CHECK_RC(pthread_cond_signal(cv));
    CHECK_RC(pthread_mutex_unlock(&emu));
    return NULL;
}

int main(void)
{
    tp_setup(60);
    pool();
    broadcast_signal();

    pthread_condattr_t ca;
    clockid_t clk;
    CHECK_RC(pthread_condattr_init(&ca));
    CHECK_RC(pthread_condattr_getclock(&ca, &clk));
    printf("condattr default clock REALTIME: %s\n", yesno(clk == CLOCK_REALTIME));
    CHECK_RC(pthread_condattr_setclock(&ca, CLOCK_MONOTONIC));
    CHECK_RC(pthread_condattr_getclock(&ca, &clk));
    printf("condattr clock after setclock MONOTONIC: %s\n", yesno(clk == CLOCK_MONOTONIC));
    printf("condattr setclock PROCESS_CPUTIME: %s\n",
           errname(pthread_condattr_setclock(&ca, CLOCK_PROCESS_CPUTIME_ID)));
    CHECK_RC(pthread_cond_init(&mono_cv, &ca));
    CHECK_RC(pthread_condattr_destroy(&ca));

    timed("timedwait REALTIME cond", &rt_cv, CLOCK_REALTIME, 0);
    timed("timedwait MONOTONIC cond", &mono_cv, CLOCK_MONOTONIC, 0);
    timed("clockwait MONOTONIC", &rt_cv, CLOCK_MONOTONIC, 1);
    timed("clockwait REALTIME", &rt_cv, CLOCK_REALTIME, 1);

    CHECK_RC(pthread_mutex_lock(&emu));
    struct timespec dl = deadline_ms(CLOCK_MONOTONIC, 100);
    printf("clockwait PROCESS_CPUTIME: %s\n",
           errname(pthread_cond_clockwait(&rt_cv, &emu, CLOCK_PROCESS_CPUTIME_ID, &dl)));
    struct timespec bad = {0, 1000000000L};
    printf("timedwait bad tv_nsec: %s\n", errname(pthread_cond_timedwait(&rt_cv, &emu, &bad)));
    dl = deadline_ms(CLOCK_REALTIME, -1000);
    int prc = pthread_cond_timedwait(&rt_cv, &emu, &dl);
    printf("timedwait past deadline: %s, mutex held: %s\n", errname(prc), held_after());
    CHECK_RC(pthread_mutex_unlock(&emu));

    /* signalled before the deadline */
    pthread_cond_t *cvs[2] = {&rt_cv, &mono_cv};
    clockid_t clks[2] = {CLOCK_REALTIME, CLOCK_MONOTONIC};
    for (int i = 0; i < 2; i++) {
        flag = 0;
        pthread_t t;
        int64_t s = now_ns();
        CHECK_RC(pthread_mutex_lock(&emu));
        CHECK_RC(pthread_create(&t, NULL, set_flag_later, cvs[i]));
        dl = deadline_ms(clks[i], 5000);
        int rc = 0;
        while (!flag && rc == 0)
            rc = pthread_cond_timedwait(cvs[i], &emu, &dl);
        double el = ms_since(s);
        printf("timedwait %s 5s, signalled at 50ms: %s, flag %d, waited: %s, before deadline: %s\n",
               i ? "MONOTONIC" : "REALTIME", errname(rc), flag, yesno(el >= 50.0),
               yesno(el < 5000.0));
        CHECK_RC(pthread_mutex_unlock(&emu));
        CHECK_RC(pthread_join(t, NULL));
    }
    CHECK_RC(pthread_cond_destroy(&mono_cv));
    printf("sync_cond: ok\n");
    return 0;
}
