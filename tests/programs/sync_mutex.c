/* pthread mutexes.
 *  - kinds, both from static initializers and from attributes: normal
 *    (trylock EBUSY), recursive (counts; trylock by owner succeeds; unlock
 *    by non-owner EPERM), errorcheck (relock EDEADLK, unlock by non-owner
 *    or unlocked EPERM), adaptive.
 *  - mutual exclusion under contention (counters from 8 threads).
 *  - pthread_mutex_timedlock (CLOCK_REALTIME) and pthread_mutex_clocklock
 *    (CLOCK_MONOTONIC and CLOCK_REALTIME): ETIMEDOUT not early; success
 *    when the holder releases in time; EINVAL for a bad tv_nsec or clock
 *    when the lock is busy; EDEADLK for an errorcheck owner.
 *  - a waiter blocked in pthread_mutex_lock gets the lock when released.
 *  - robust mutex whose owner exits: EOWNERDEAD, consistent, usable again.
 *  - priority-inheritance mutex: lock/trylock/unlock work.
 */
#include "common.h"
#include <semaphore.h>

static pthread_mutex_t s_normal = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t s_recursive = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
static pthread_mutex_t s_errorcheck = PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP;
static pthread_mutex_t s_adaptive = PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP;

/* run fn(arg) on another thread and return its int result */
struct call {
    int (*fn)(pthread_mutex_t *);
    pthread_mutex_t *m;
    int rc;
};
static void *call_thread(void *arg)
{
    struct call *c = arg;
    c->rc = c->fn(c->m);
    return NULL;
}
static int on_other_thread(int (*fn)(pthread_mutex_t *), pthread_mutex_t *m)
{
    struct call c = {fn, m, -1};
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, call_thread, &c));
    CHECK_RC(pthread_join(t, NULL));
    return c.rc;
}
static int trylock_and_unlock(pthread_mutex_t *m)
{
    int rc = pthread_mutex_trylock(m);
    if (rc == 0)
        pthread_mutex_unlock(m);
    return rc;
}

static void kinds(const char *how, pthread_mutex_t *normal, pthread_mutex_t *recursive,
                  pthread_mutex_t *errorcheck)
{
    /* normal */
    CHECK_RC(pthread_mutex_lock(normal));
    printf("%s normal: trylock while held: %s, from another thread: %s\n", how,
           errname(pthread_mutex_trylock(normal)),
           errname(on_other_thread(trylock_and_unlock, normal)));
    CHECK_RC(pthread_mutex_unlock(normal));
    printf("%s normal: trylock when free: %s\n", how, errname(trylock_and_unlock(normal)));

    /* recursive */
    CHECK_RC(pthread_mutex_lock(recursive));
    CHECK_RC(pthread_mutex_lock(recursive));
    CHECK_RC(pthread_mutex_lock(recursive));
    int tl = pthread_mutex_trylock(recursive); /* 4 levels now */
    int other = on_other_thread(trylock_and_unlock, recursive);
    int other_unlock = on_other_thread(pthread_mutex_unlock, recursive);
    int unlocked = 0;
    for (int i = 0; i < 3; i++)
        unlocked += pthread_mutex_unlock(recursive) == 0;
    int other_after3 = on_other_thread(trylock_and_unlock, recursive);
    unlocked += pthread_mutex_unlock(recursive) == 0;
    int other_after4 = on_other_thread(trylock_and_unlock, recursive);
    int extra = pthread_mutex_unlock(recursive);
    printf("%s recursive: lock x3 + trylock: %s; other thread trylock: %s, unlock: %s; "
           "after 3 unlocks other: %s; after 4: %s; 5th unlock: %s\n",
           how, errname(tl), errname(other), errname(other_unlock), errname(other_after3),
           errname(other_after4), errname(extra));
    CHECK(unlocked == 4);

    /* errorcheck */
    CHECK_RC(pthread_mutex_lock(errorcheck));
    int relock = pthread_mutex_lock(errorcheck);
    int retry = pthread_mutex_trylock(errorcheck);
    int other_ul = on_other_thread(pthread_mutex_unlock, errorcheck);
    CHECK_RC(pthread_mutex_unlock(errorcheck));
    int again = pthread_mutex_unlock(errorcheck);
    printf("%s errorcheck: relock: %s, trylock by owner: %s, unlock by other thread: %s, "
           "unlock when unlocked: %s\n",
           how, errname(relock), errname(retry), errname(other_ul), errname(again));
}

/* ---- contention ---- */

#define NT 8
#define ITERS 20000
static long counter;
static pthread_mutex_t *cm;

static void *incr(void *arg)
{
    for (int i = 0; i < ITERS; i++) {
        CHECK_RC(pthread_mutex_lock(cm));
        long v = counter;
        if (i % 1000 == 0)
            sched_yield(); /* hold the lock across a yield now and then */
        counter = v + 1;
        CHECK_RC(pthread_mutex_unlock(cm));
    }
    return NULL;
}

static void contention(const char *name, pthread_mutex_t *m)
{
    counter = 0;
    cm = m;
    pthread_t t[NT];
    for (int i = 0; i < NT; i++)
        CHECK_RC(pthread_create(&t[i], NULL, incr, NULL));
    for (int i = 0; i < NT; i++)
        CHECK_RC(pthread_join(t[i], NULL));
    printf("contention %s: %ld (expected %d)\n", name, counter, NT * ITERS);
}

/* ---- timed ---- */

static pthread_mutex_t tm = PTHREAD_MUTEX_INITIALIZER;
static sem_t held, release;
static int hold_ms;

static void *holder(void *unused)
{
    CHECK_RC(pthread_mutex_lock(&tm));
    sem_post(&held);
    if (hold_ms)
        sleep_ms(hold_ms);
    else
        sem_wait(&release);
    CHECK_RC(pthread_mutex_unlock(&tm));
    return NULL;
}

static void timed_fail(const char *what, clockid_t clk, int use_clocklock)
{
    struct timespec dl = deadline_ms(clk, 100);
    int64_t s = now_ns();
    int rc = use_clocklock ? pthread_mutex_clocklock(&tm, clk, &dl) : pthread_mutex_timedlock(&tm, &dl);
    double el = ms_since(s);
    printf("%s 100ms on a held mutex: %s, not early: %s, late < %.0fms: %s\n", what, errname(rc),
           yesno(el >= 100.0), LATE_TOLERANCE_MS, yesno(el < 100.0 + LATE_TOLERANCE_MS));
}

/* ---- robust ---- */

static pthread_mutex_t robust;
static void *die_holding(void *unused)
{
    CHECK_RC(pthread_mutex_lock(&robust));
    return NULL; /* exits with the mutex held */
}

int main(void)
{
    tp_setup(60);

    kinds("static", &s_normal, &s_recursive, &s_errorcheck);
    pthread_mutex_t d_normal, d_recursive, d_errorcheck, d_default;
    pthread_mutexattr_t a;
    int type;
    CHECK_RC(pthread_mutexattr_init(&a));
    CHECK_RC(pthread_mutexattr_gettype(&a, &type));
    printf("default mutexattr type is PTHREAD_MUTEX_DEFAULT: %s (== NORMAL: %s)\n",
           yesno(type == PTHREAD_MUTEX_DEFAULT), yesno(type == PTHREAD_MUTEX_NORMAL));
    CHECK_RC(pthread_mutex_init(&d_default, &a));
    CHECK_RC(pthread_mutexattr_settype(&a, PTHREAD_MUTEX_NORMAL));
    CHECK_RC(pthread_mutex_init(&d_normal, &a));
    CHECK_RC(pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE));
    CHECK_RC(pthread_mutexattr_gettype(&a, &type));
    printf("mutexattr type after settype RECURSIVE: %s\n",
           yesno(type == PTHREAD_MUTEX_RECURSIVE));
    CHECK_RC(pthread_mutex_init(&d_recursive, &a));
    CHECK_RC(pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK));
    CHECK_RC(pthread_mutex_init(&d_errorcheck, &a));
    printf("settype bogus: %s\n", errname(pthread_mutexattr_settype(&a, 12345)));
    CHECK_RC(pthread_mutexattr_destroy(&a));
    kinds("attr", &d_normal, &d_recursive, &d_errorcheck);

    contention("static normal", &s_normal);
    contention("static recursive", &s_recursive);
    contention("static errorcheck", &s_errorcheck);
    contention("static adaptive", &s_adaptive);
    contention("default from attr", &d_default);

    /* a waiter blocked in lock() gets it when the holder lets go at 50 ms */
    sem_init(&held, 0, 0);
    sem_init(&release, 0, 0);
    hold_ms = 50;
    pthread_t h;
    int64_t s = now_ns();
    CHECK_RC(pthread_create(&h, NULL, holder, NULL));
    sem_wait(&held);
    CHECK_RC(pthread_mutex_lock(&tm));
    double el = ms_since(s);
    CHECK_RC(pthread_mutex_unlock(&tm));
    CHECK_RC(pthread_join(h, NULL));
    printf("lock() blocked until the holder unlocked at 50ms: %s\n", yesno(el >= 50.0));

    /* timed variants against a held mutex */
    hold_ms = 0;
    CHECK_RC(pthread_create(&h, NULL, holder, NULL));
    sem_wait(&held);
    timed_fail("timedlock REALTIME", CLOCK_REALTIME, 0);
    timed_fail("clocklock MONOTONIC", CLOCK_MONOTONIC, 1);
    timed_fail("clocklock REALTIME", CLOCK_REALTIME, 1);
    struct timespec bad = {0, 1000000000L};
    printf("timedlock bad tv_nsec on a held mutex: %s\n", errname(pthread_mutex_timedlock(&tm, &bad)));
    struct timespec dl = deadline_ms(CLOCK_MONOTONIC, 100);
    printf("clocklock CLOCK_PROCESS_CPUTIME_ID: %s\n",
           errname(pthread_mutex_clocklock(&tm, CLOCK_PROCESS_CPUTIME_ID, &dl)));
    dl = deadline_ms(CLOCK_REALTIME, -1000);
    printf("timedlock past deadline on a held mutex: %s\n", errname(pthread_mutex_timedlock(&tm, &dl)));
    sem_post(&release);
    CHECK_RC(pthread_join(h, NULL));
    dl = deadline_ms(CLOCK_REALTIME, -1000);
    printf("timedlock past deadline on a free mutex: %s\n", errname(pthread_mutex_timedlock(&tm, &dl)));
    CHECK_RC(pthread_mutex_unlock(&tm));

    hold_ms = 50;
    s = now_ns();
    CHECK_RC(pthread_create(&h, NULL, holder, NULL));
    sem_wait(&held);
    dl = deadline_ms(CLOCK_MONOTONIC, 5000);
    int rc = pthread_mutex_clocklock(&tm, CLOCK_MONOTONIC, &dl);
    el = ms_since(s);
    printf("clocklock MONOTONIC 5s, holder releases at 50ms: %s, waited: %s\n", errname(rc),
           yesno(el >= 50.0));
    CHECK_RC(pthread_mutex_unlock(&tm));
    CHECK_RC(pthread_join(h, NULL));

    CHECK_RC(pthread_mutex_lock(&s_errorcheck));
    dl = deadline_ms(CLOCK_REALTIME, 100);
    printf("errorcheck timedlock by owner: %s\n", errname(pthread_mutex_timedlock(&s_errorcheck, &dl)));
    CHECK_RC(pthread_mutex_unlock(&s_errorcheck));

    /* robust */
    CHECK_RC(pthread_mutexattr_init(&a));
    CHECK_RC(pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST));
    CHECK_RC(pthread_mutex_init(&robust, &a));
    CHECK_RC(pthread_mutexattr_destroy(&a));
    CHECK_RC(pthread_create(&h, NULL, die_holding, NULL));
    CHECK_RC(pthread_join(h, NULL));
    rc = pthread_mutex_lock(&robust);
    printf("robust mutex, owner exited: lock: %s\n", errname(rc));
    printf("pthread_mutex_consistent: %s\n", errname(pthread_mutex_consistent(&robust)));
    CHECK_RC(pthread_mutex_unlock(&robust));
    printf("robust mutex relocked: %s\n", errname(trylock_and_unlock(&robust)));

    /* priority inheritance */
    pthread_mutex_t pi;
    CHECK_RC(pthread_mutexattr_init(&a));
    CHECK_RC(pthread_mutexattr_setprotocol(&a, PTHREAD_PRIO_INHERIT));
    CHECK_RC(pthread_mutex_init(&pi, &a));
    CHECK_RC(pthread_mutexattr_destroy(&a));
    CHECK_RC(pthread_mutex_lock(&pi));
    printf("PI mutex: trylock from another thread while held: %s\n",
           errname(on_other_thread(trylock_and_unlock, &pi)));
    CHECK_RC(pthread_mutex_unlock(&pi));
    contention("PI", &pi);

    CHECK_RC(pthread_mutex_destroy(&d_normal));
    CHECK_RC(pthread_mutex_destroy(&d_recursive));
    CHECK_RC(pthread_mutex_destroy(&d_errorcheck));
    CHECK_RC(pthread_mutex_destroy(&d_default));
    CHECK_RC(pthread_mutex_destroy(&pi));
    printf("sync_mutex: ok\n");
    return 0;
}
