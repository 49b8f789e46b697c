/*
 * test_mutex.c - shim/mutex.c: fiber-aware pthread mutexes.
 *
 * Conformance cases run twice, once with glibc's functions on plain
 * threads and once with the shim's in fibers, and must give the same
 * results (which are also spelled out). Stress cases check mutual
 * exclusion with many fibers, with plain threads mixed in, and that no
 * waiter starves.
 */
#include "sync_util.h"

#include <limits.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

SHIM_DECL(pthread_mutex_init)
SHIM_DECL(pthread_mutex_lock)
SHIM_DECL(pthread_mutex_trylock)
SHIM_DECL(pthread_mutex_timedlock)
SHIM_DECL(pthread_mutex_clocklock)
SHIM_DECL(pthread_mutex_unlock)
SHIM_DECL(pthread_mutex_destroy)
SHIM_DECL(pthread_cond_wait)
SHIM_DECL(pthread_cond_signal)
SHIM_DECL(pthread_cond_broadcast)

struct mx_ops {
    int (*init)(pthread_mutex_t *, const pthread_mutexattr_t *);
    int (*lock)(pthread_mutex_t *);
    int (*trylock)(pthread_mutex_t *);
    int (*timedlock)(pthread_mutex_t *, const struct timespec *);
    int (*clocklock)(pthread_mutex_t *, clockid_t, const struct timespec *);
    int (*unlock)(pthread_mutex_t *);
    int (*destroy)(pthread_mutex_t *);
    bool fibers; /* "another thread" is a fiber (else a plain thread) */
};

static const struct mx_ops glibc_ops = {
    pthread_mutex_init, pthread_mutex_lock,   pthread_mutex_trylock,  pthread_mutex_timedlock,
    pthread_mutex_clocklock, pthread_mutex_unlock, pthread_mutex_destroy, false};
static const struct mx_ops shim_ops = {
    shim__pthread_mutex_init,      shim__pthread_mutex_lock,   shim__pthread_mutex_trylock,
    shim__pthread_mutex_timedlock, shim__pthread_mutex_clocklock, shim__pthread_mutex_unlock,
    shim__pthread_mutex_destroy,   true};

/* ---- conformance: the same scenario on glibc and on the shim ------------------ */

struct other_call {
    const struct mx_ops *o;
    pthread_mutex_t *m;
    int (*op)(pthread_mutex_t *);
    int rc;
};

static void *other_main(void *p)
{
    struct other_call *c = p;
    c->rc = c->op(c->m);
    return NULL;
}

static int on_other(const struct mx_ops *o, int (*op)(pthread_mutex_t *), pthread_mutex_t *m)
{
    struct other_call c = {o, m, op, -1};
    if (o->fibers) {
        fs_fiber *f;
        FCHECK_EQ(fs_spawn(&f, other_main, &c, NULL), 0);
        FCHECK_EQ(fs_join(f, NULL, FS_NO_DEADLINE), 0);
    } else {
        pthread_t t;
        FCHECK_EQ(pthread_create(&t, NULL, other_main, &c), 0);
        FCHECK_EQ(pthread_join(t, NULL), 0);
    }
    return c.rc;
}

#define MAXR 64
struct results {
    int n;
    int v[MAXR];
};
#define R(expr) (res->v[res->n++] = (expr))

/* The scenario for one mutex m of type `type`, already initialized. It
 * avoids what is undefined for the type: for a normal or adaptive mutex,
 * unlocking one that is not locked, or not by its owner (glibc then even
 * corrupts its user count, and destroy of a locked mutex succeeds). */
static void scenario(const struct mx_ops *o, pthread_mutex_t *m, int type, struct results *res)
{
    struct timespec past = {0, 0}, bad = abs_in(CLOCK_REALTIME, 0);
    bad.tv_nsec = 1000000000;
    bool owned = type == PTHREAD_MUTEX_RECURSIVE || type == PTHREAD_MUTEX_ERRORCHECK;
    if (owned)
        R(o->unlock(m)); /* unlocked: EPERM */
    R(o->lock(m));
    R(o->trylock(m));
    if (owned) {
        R(o->lock(m));                 /* relock: EDEADLK or count */
        R(o->timedlock(m, &past));     /* EDEADLK or count */
        R(o->timedlock(m, &bad));      /* the owner check comes first */
    } else {
        R(o->timedlock(m, &past));     /* ETIMEDOUT (busy) */
        R(o->timedlock(m, &bad));      /* EINVAL (busy) */
    }
    R(o->clocklock(m, CLOCK_PROCESS_CPUTIME_ID, &past));
    R(on_other(o, o->trylock, m));
    R(o->destroy(m));
    if (owned) {
        R(on_other(o, o->unlock, m)); /* EPERM */
        for (int i = 0; i < 6; i++)
            R(o->unlock(m));
    } else {
        R(o->unlock(m));
    }
    R(o->timedlock(m, &bad)); /* free: the timeout is not looked at */
    R(o->unlock(m));
    R(o->clocklock(m, 99, &past));
    R(o->destroy(m));
}

static void run_scenario(const struct mx_ops *o, struct results *res)
{
    static const int types[] = {PTHREAD_MUTEX_NORMAL, PTHREAD_MUTEX_RECURSIVE,
                                PTHREAD_MUTEX_ERRORCHECK, PTHREAD_MUTEX_ADAPTIVE_NP};
    pthread_mutex_t statics[4] = {PTHREAD_MUTEX_INITIALIZER,
                                  PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP,
                                  PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP,
                                  PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP};
    for (int i = 0; i < 4; i++) {
        res[2 * i].n = 0;
        scenario(o, &statics[i], types[i], &res[2 * i]);
        pthread_mutexattr_t a;
        pthread_mutexattr_init(&a);
        pthread_mutexattr_settype(&a, types[i]);
        pthread_mutex_t m;
        memset(&m, 0xa5, sizeof m);
        FCHECK_EQ(o->init(&m, &a), 0);
        res[2 * i + 1].n = 0;
        scenario(o, &m, types[i], &res[2 * i + 1]);
    }
}

static struct results shim_res[8];
static void *shim_scenario_fiber(void *arg)
{
    run_scenario(&shim_ops, shim_res);
    return NULL;
}

Test(mutex, conformance_matches_glibc)
{
    struct results glibc_res[8];
    run_scenario(&glibc_ops, glibc_res);
    start_runtime(2);
    join(spawn(shim_scenario_fiber, NULL));
    for (int i = 0; i < 8; i++) {
        cr_assert_eq(shim_res[i].n, glibc_res[i].n);
        for (int j = 0; j < glibc_res[i].n; j++)
            cr_expect_eq(shim_res[i].v[j], glibc_res[i].v[j], "type case %d, step %d: shim %d glibc %d",
                         i, j, shim_res[i].v[j], glibc_res[i].v[j]);
    }
    /* Spelled out for two of them (static initializers). */
    int want_normal[] = {0, EBUSY, ETIMEDOUT, EINVAL, EINVAL, EBUSY, EBUSY, 0, 0, 0, EINVAL, 0};
    int want_errorcheck[] = {EPERM, 0, EBUSY, EDEADLK, EDEADLK, EDEADLK, EINVAL, EBUSY, EBUSY,
                             EPERM, 0, EPERM, EPERM, EPERM, EPERM, EPERM, 0, 0, EINVAL, 0};
    cr_assert_eq(shim_res[0].n, (int)(sizeof want_normal / sizeof want_normal[0]));
    for (int j = 0; j < shim_res[0].n; j++)
        cr_expect_eq(shim_res[0].v[j], want_normal[j], "normal step %d: %d, want %d", j,
                     shim_res[0].v[j], want_normal[j]);
    cr_assert_eq(shim_res[4].n, (int)(sizeof want_errorcheck / sizeof want_errorcheck[0]));
    for (int j = 0; j < shim_res[4].n; j++)
        cr_expect_eq(shim_res[4].v[j], want_errorcheck[j], "errorcheck step %d: %d, want %d", j,
                     shim_res[4].v[j], want_errorcheck[j]);
}

/* ---- recursive counts ------------------------------------------------------------ */

static pthread_mutex_t rec = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;

static void *rec_other(void *arg)
{
    FCHECK_EQ(shim__pthread_mutex_trylock(&rec), EBUSY);
    FCHECK_EQ(shim__pthread_mutex_unlock(&rec), EPERM);
    return NULL;
}

static void *rec_main(void *arg)
{
    for (int i = 0; i < 5; i++)
        FCHECK_EQ(shim__pthread_mutex_lock(&rec), 0);
    FCHECK_EQ(shim__pthread_mutex_trylock(&rec), 0);
    for (int i = 0; i < 6; i++) {
        join(spawn(rec_other, NULL)); /* held at every depth */
        FCHECK_EQ(shim__pthread_mutex_unlock(&rec), 0);
    }
    FCHECK_EQ(shim__pthread_mutex_unlock(&rec), EPERM);
    return NULL;
}

Test(mutex, recursive_counts)
{
    start_runtime(2);
    join(spawn(rec_main, NULL));
    /* Free now: a plain thread takes it at once. */
    cr_assert_eq(shim__pthread_mutex_trylock(&rec), 0);
    cr_assert_eq(shim__pthread_mutex_unlock(&rec), 0);
}

/* ---- mutual exclusion under stress ----------------------------------------------- */

static pthread_mutex_t stress_m = PTHREAD_MUTEX_INITIALIZER;
static long stress_counter;
static _Atomic int inside;
#define STRESS_ITERS 2000

static void *stress_worker(void *arg)
{
    for (int i = 0; i < STRESS_ITERS; i++) {
        FCHECK_EQ(shim__pthread_mutex_lock(&stress_m), 0);
        FCHECK_EQ(atomic_fetch_add(&inside, 1), 0);
        stress_counter++;
        if (i % 64 == 0)
            fs_yield(); /* park-worthy critical sections too */
        atomic_fetch_sub(&inside, 1);
        FCHECK_EQ(shim__pthread_mutex_unlock(&stress_m), 0);
    }
    return NULL;
}

Test(mutex, stress_fibers_and_plain_threads)
{
    start_runtime(2);
    enum { FIBERS = 200, PLAIN = 3 };
    pthread_t t[PLAIN];
    for (int i = 0; i < PLAIN; i++)
        t[i] = plain_thread(stress_worker, NULL);
    run_fibers(FIBERS, stress_worker, NULL);
    for (int i = 0; i < PLAIN; i++)
        plain_join(t[i]);
    cr_assert_eq(stress_counter, (long)(FIBERS + PLAIN) * STRESS_ITERS);
    cr_assert_eq(shim__pthread_mutex_destroy(&stress_m), 0);
}

/* Every kind of static initializer, under contention. */
static pthread_mutex_t kinds[4] = {PTHREAD_MUTEX_INITIALIZER,
                                   PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP,
                                   PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP,
                                   PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP};
static long kind_counter[4];

static void *kinds_worker(void *arg)
{
    for (int i = 0; i < 500; i++)
        for (int k = 0; k < 4; k++) {
            FCHECK_EQ(shim__pthread_mutex_lock(&kinds[k]), 0);
            kind_counter[k]++;
            FCHECK_EQ(shim__pthread_mutex_unlock(&kinds[k]), 0);
        }
    return NULL;
}

Test(mutex, static_initializers_every_kind)
{
    start_runtime(2);
    pthread_t t = plain_thread(kinds_worker, NULL);
    run_fibers(50, kinds_worker, NULL);
    plain_join(t);
    for (int k = 0; k < 4; k++)
        cr_assert_eq(kind_counter[k], 51 * 500L, "kind %d", k);
}

/* ---- timed locks ------------------------------------------------------------------ */

static pthread_mutex_t timed_m = PTHREAD_MUTEX_INITIALIZER;

static void *timed_waiter(void *arg)
{
    clockid_t c = (clockid_t)(intptr_t)arg;
    struct timespec abs = abs_in(c, 50000000);
    int rc = c == CLOCK_REALTIME ? shim__pthread_mutex_timedlock(&timed_m, &abs)
                                 : shim__pthread_mutex_clocklock(&timed_m, c, &abs);
    FCHECK_EQ(rc, ETIMEDOUT);
    check_on_time(c, &abs);
    /* Succeeds when the holder lets go in time. */
    abs = abs_in(c, 5000000000LL);
    return (void *)(intptr_t)shim__pthread_mutex_clocklock(&timed_m, c, &abs);
}

Test(mutex, timedlock_both_clocks_fibers_and_plain)
{
    start_runtime(2);
    cr_assert_eq(shim__pthread_mutex_lock(&timed_m), 0);
    fs_fiber *f1 = spawn(timed_waiter, (void *)(intptr_t)CLOCK_REALTIME);
    fs_fiber *f2 = spawn(timed_waiter, (void *)(intptr_t)CLOCK_MONOTONIC);
    pthread_t t1 = plain_thread(timed_waiter, (void *)(intptr_t)CLOCK_REALTIME);
    pthread_t t2 = plain_thread(timed_waiter, (void *)(intptr_t)CLOCK_MONOTONIC);
    sleep_ns(300000000);
    cr_assert_eq(shim__pthread_mutex_unlock(&timed_m), 0);
    void *r[4] = {join(f1), join(f2), plain_join(t1), plain_join(t2)};
    int got = 0;
    for (int i = 0; i < 4; i++) {
        /* Each waiter gets it in turn (and never gives it back): the
         * first one in time gets 0, the others time out later. */
        got += r[i] == 0;
    }
    cr_assert_eq(got, 1);
}

static void *timed_getter(void *arg)
{
    clockid_t c = (clockid_t)(intptr_t)arg;
    struct timespec abs = abs_in(c, 5000000000LL);
    FCHECK_EQ(shim__pthread_mutex_clocklock(&timed_m, c, &abs), 0);
    FCHECK_EQ(shim__pthread_mutex_unlock(&timed_m), 0);
    return NULL;
}

Test(mutex, timedlock_gets_the_lock_in_time)
{
    start_runtime(2);
    cr_assert_eq(shim__pthread_mutex_lock(&timed_m), 0);
    fs_fiber *f[2] = {spawn(timed_getter, (void *)(intptr_t)CLOCK_REALTIME),
                      spawn(timed_getter, (void *)(intptr_t)CLOCK_MONOTONIC)};
    pthread_t t = plain_thread(timed_getter, (void *)(intptr_t)CLOCK_MONOTONIC);
    sleep_ns(50000000);
    cr_assert_eq(shim__pthread_mutex_unlock(&timed_m), 0);
    join(f[0]);
    join(f[1]);
    plain_join(t);
}

/* ---- mixed waiters and hand-off ------------------------------------------------- */

static pthread_mutex_t mixed_m = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int mixed_got;

static void *mixed_waiter(void *arg)
{
    FCHECK_EQ(shim__pthread_mutex_lock(&mixed_m), 0);
    atomic_fetch_add(&mixed_got, 1);
    FCHECK_EQ(shim__pthread_mutex_unlock(&mixed_m), 0);
    return NULL;
}

static void *mixed_holder(void *arg)
{
    FCHECK_EQ(shim__pthread_mutex_lock(&mixed_m), 0);
    fs_sleep_until(fs_now() + 100000000); /* parked while holding */
    FCHECK_EQ(atomic_load(&mixed_got), 0);
    FCHECK_EQ(shim__pthread_mutex_unlock(&mixed_m), 0);
    return NULL;
}

Test(mutex, plain_threads_wait_for_a_parked_fiber)
{
    start_runtime(1);
    fs_fiber *h = spawn(mixed_holder, NULL);
    sleep_ns(20000000);
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        t[i] = plain_thread(mixed_waiter, NULL);
    run_fibers(20, mixed_waiter, NULL);
    for (int i = 0; i < 3; i++)
        plain_join(t[i]);
    join(h);
    cr_assert_eq(atomic_load(&mixed_got), 23);
}

/* ---- fairness ------------------------------------------------------------------------ */

static pthread_mutex_t fair_m = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int fair_stop;
static _Atomic long fair_count[8];

static void *fair_hog(void *arg)
{
    int id = (int)(intptr_t)arg;
    while (!atomic_load_explicit(&fair_stop, memory_order_relaxed)) {
        shim__pthread_mutex_lock(&fair_m);
        for (volatile int i = 0; i < 200; i++)
            ;
        atomic_fetch_add_explicit(&fair_count[id], 1, memory_order_relaxed);
        shim__pthread_mutex_unlock(&fair_m);
    }
    return NULL;
}

Test(mutex, no_waiter_starves)
{
    start_runtime(2);
    fs_fiber *f[6];
    for (int i = 0; i < 6; i++)
        f[i] = spawn(fair_hog, (void *)(intptr_t)i);
    pthread_t t[2] = {plain_thread(fair_hog, (void *)6), plain_thread(fair_hog, (void *)7)};
    /* Until every contender got it more than 20 times, for 10 s at most
     * (a loaded machine gives this process little CPU: 500 ms was not
     * always enough there). A starved contender stays near 0. */
    for (int waited = 0; waited < 200; waited++) {
        sleep_ns(50000000);
        bool all = true;
        for (int i = 0; i < 8; i++)
            all = all && atomic_load(&fair_count[i]) > 20;
        if (all && waited >= 9)
            break;
    }
    atomic_store(&fair_stop, 1);
    for (int i = 0; i < 6; i++)
        join(f[i]);
    plain_join(t[0]);
    plain_join(t[1]);
    /* Starvation mode hands the lock to anyone who waited > 1 ms, so each
     * contender gets it far more than this. */
    for (int i = 0; i < 8; i++)
        cr_expect_gt(atomic_load(&fair_count[i]), 20, "contender %d got the lock %ld times", i,
                     atomic_load(&fair_count[i]));
}

/* ---- contention: wakes and hand-offs ------------------------------------------------ */

/* Unlocks wake one waiter at a time (WOKEN): the woken one re-arms the
 * wakes when it runs, and on another carrier it may run before its waker
 * has even published WOKEN. A stale WOKEN would silence every later
 * unlock and leave the queue asleep. This load, a work queue whose
 * consumers come back from their condition wait into the mutex
 * (bench/sync_bench's pool, smaller) and whose producer is a plain
 * thread, hung 6 runs in 6 when the woken waiter re-armed outside the
 * queue lock (on 2 CPUs: the kernel preempts the unlocker inside its wake
 * for the carrier it woke, which runs the waiter at once). */
enum { WOKEN_CONSUMERS = 2000, WOKEN_ITEMS = 1000000 };
static pthread_mutex_t woken_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t woken_nonempty = PTHREAD_COND_INITIALIZER;
static long woken_queued, woken_taken, woken_started;
static bool woken_closed;

static void *woken_consumer(void *arg)
{
    (void)arg;
    FCHECK_EQ(shim__pthread_mutex_lock(&woken_m), 0);
    woken_started++;
    for (;;) {
        while (woken_queued == 0 && !woken_closed)
            FCHECK_EQ(shim__pthread_cond_wait(&woken_nonempty, &woken_m), 0);
        if (woken_queued == 0)
            break;
        woken_queued--;
        woken_taken++;
        FCHECK_EQ(shim__pthread_mutex_unlock(&woken_m), 0);
        for (volatile int i = 0; i < 100; i++) /* the work */
            ;
        FCHECK_EQ(shim__pthread_mutex_lock(&woken_m), 0);
    }
    FCHECK_EQ(shim__pthread_mutex_unlock(&woken_m), 0);
    return NULL;
}

static void *woken_producer(void *arg)
{
    (void)arg;
    for (int i = 0; i < WOKEN_ITEMS; i++) {
        FCHECK_EQ(shim__pthread_mutex_lock(&woken_m), 0);
        woken_queued++;
        FCHECK_EQ(shim__pthread_cond_signal(&woken_nonempty), 0);
        FCHECK_EQ(shim__pthread_mutex_unlock(&woken_m), 0);
    }
    return NULL;
}

static long woken_read(long *v)
{
    FCHECK_EQ(shim__pthread_mutex_lock(&woken_m), 0);
    long r = *v;
    FCHECK_EQ(shim__pthread_mutex_unlock(&woken_m), 0);
    return r;
}

static void *woken_main(void *arg)
{
    (void)arg;
    for (int i = 0; i < WOKEN_CONSUMERS; i++)
        cr_assert_eq(fs_spawn(NULL, woken_consumer, NULL,
                              &(struct fs_spawn_attr){.detached = true}),
                     0);
    while (woken_read(&woken_started) < WOKEN_CONSUMERS)
        sleep_ns(1000000);
    /* The producer is a plain thread: a third kernel thread on the
     * machine's CPUs, which the kernel preempts for a carrier that its
     * wake brought back. */
    pthread_t p = plain_thread(woken_producer, NULL);
    /* Well under a second; 30 s allow for a loaded machine. A lost wake
     * leaves the consumers asleep for ever and the count short. */
    for (int waited = 0; waited < 3000 && woken_read(&woken_taken) < WOKEN_ITEMS; waited++)
        sleep_ns(10000000);
    long taken = woken_read(&woken_taken);
    FCHECK_EQ(taken, (long)WOKEN_ITEMS);
    plain_join(p);
    FCHECK_EQ(shim__pthread_mutex_lock(&woken_m), 0);
    woken_closed = true;
    FCHECK_EQ(shim__pthread_cond_broadcast(&woken_nonempty), 0);
    FCHECK_EQ(shim__pthread_mutex_unlock(&woken_m), 0);
    return (void *)taken;
}

Test(mutex, a_woken_waiter_that_runs_first_keeps_the_wakes_coming)
{
    start_runtime(2);
    long taken = (long)join(spawn(woken_main, NULL));
    cr_assert_eq(taken, (long)WOKEN_ITEMS, "%ld of %d items consumed", taken, WOKEN_ITEMS);
}


static uint64_t mutex_parks(void)
{
    struct fs_stats st;
    fs_stats_get(&st);
    return st.parks[FS_PARK_MUTEX];
}

/* Sleeps (parked) until n more fibers parked on a mutex since base. */
static void await_mutex_parks(uint64_t base, uint64_t n)
{
    while (mutex_parks() - base < n)
        sleep_ns(200000);
}

#define SV_WAITERS 5
static pthread_mutex_t sv_m = PTHREAD_MUTEX_INITIALIZER;
static long sv_seq; /* acquisitions, under sv_m */
static long sv_order[SV_WAITERS];
static _Atomic int sv_stop;
static _Atomic long sv_barges;

static void *sv_waiter(void *arg)
{
    int i = (int)(intptr_t)arg;
    FCHECK_EQ(shim__pthread_mutex_lock(&sv_m), 0);
    sv_order[i] = ++sv_seq;
    FCHECK_EQ(shim__pthread_mutex_unlock(&sv_m), 0);
    return NULL;
}

/* Yields now and then, outside the lock: where fibers are pinned (no
 * per-fiber TLS: the sanitizer builds) the holder may share its carrier,
 * and a loop that never yields would keep it from ever setting sv_stop. */
static void *sv_barger(void *arg)
{
    (void)arg;
    for (unsigned n = 1; !atomic_load_explicit(&sv_stop, memory_order_relaxed); n++) {
        FCHECK_EQ(shim__pthread_mutex_lock(&sv_m), 0);
        ++sv_seq;
        atomic_fetch_add_explicit(&sv_barges, 1, memory_order_relaxed);
        FCHECK_EQ(shim__pthread_mutex_unlock(&sv_m), 0);
        if (n % 64 == 0)
            fs_yield();
    }
    return NULL;
}

static void *sv_holder(void *arg)
{
    (void)arg;
    FCHECK_EQ(shim__pthread_mutex_lock(&sv_m), 0);
    uint64_t p0 = mutex_parks();
    fs_fiber *w[SV_WAITERS], *b;
    for (int i = 0; i < SV_WAITERS; i++) { /* queued in this order */
        FCHECK_EQ(fs_spawn(&w[i], sv_waiter, (void *)(intptr_t)i, NULL), 0);
        await_mutex_parks(p0, (uint64_t)i + 1);
    }
    FCHECK_EQ(fs_spawn(&b, sv_barger, NULL, NULL), 0);
    sleep_ns(3000000); /* every waiter starves (> 1 ms) */
    FCHECK_EQ(shim__pthread_mutex_unlock(&sv_m), 0);
    for (int i = 0; i < SV_WAITERS; i++)
        FCHECK_EQ(fs_join(w[i], NULL, FS_NO_DEADLINE), 0);
    atomic_store(&sv_stop, 1);
    FCHECK_EQ(fs_join(b, NULL, FS_NO_DEADLINE), 0);
    return NULL;
}

/* Fairness counted in acquisitions, not time: once the waiters starve,
 * each gets the lock after exactly as many hand-offs as waiters queued
 * ahead of it, in queue order, and a fiber relocking in a loop on the
 * other carrier takes it not once in between (it queues behind them). */
Test(mutex, starving_waiters_get_it_in_queue_order)
{
    start_runtime(2);
    join(spawn(sv_holder, NULL));
    for (int i = 0; i < SV_WAITERS; i++)
        cr_expect_eq(sv_order[i], sv_order[0] + i,
                     "waiter %d got the lock as acquisition %ld, waiter 0 as %ld", i, sv_order[i],
                     sv_order[0]);
    cr_expect_gt(atomic_load(&sv_barges), 0);
}

/* ---- glibc's mutexes: process-shared and robust --------------------------------- */

static pthread_mutex_t shared_m;
static long shared_counter;

static void *shared_worker(void *arg)
{
    for (int i = 0; i < 300; i++) {
        FCHECK_EQ(shim__pthread_mutex_lock(&shared_m), 0);
        shared_counter++;
        if (i % 50 == 0)
            fs_yield();
        FCHECK_EQ(shim__pthread_mutex_unlock(&shared_m), 0);
    }
    return NULL;
}

Test(mutex, process_shared_stays_glibc_and_fibers_poll)
{
    start_runtime(2);
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    cr_assert_eq(shim__pthread_mutex_init(&shared_m, &a), 0);
    cr_assert(shared_m.__data.__kind & 0x80, "glibc's layout, pshared bit set");
    pthread_t t = plain_thread(shared_worker, NULL);
    run_fibers(20, shared_worker, NULL);
    plain_join(t);
    cr_assert_eq(shared_counter, 21 * 300L);
    cr_assert_eq(shim__pthread_mutex_destroy(&shared_m), 0);
}

static pthread_mutex_t robust_m;

static void *robust_dier(void *arg)
{
    FCHECK_EQ(shim__pthread_mutex_lock(&robust_m), 0);
    return NULL; /* exits holding it */
}

static void *robust_taker(void *arg)
{
    FCHECK_EQ(shim__pthread_mutex_lock(&robust_m), EOWNERDEAD);
    FCHECK_EQ(pthread_mutex_consistent(&robust_m), 0);
    FCHECK_EQ(shim__pthread_mutex_unlock(&robust_m), 0);
    FCHECK_EQ(shim__pthread_mutex_lock(&robust_m), 0);
    FCHECK_EQ(shim__pthread_mutex_unlock(&robust_m), 0);
    return NULL;
}

Test(mutex, robust_owner_death_reaches_a_fiber)
{
    start_runtime(2);
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    cr_assert_eq(shim__pthread_mutex_init(&robust_m, &a), 0);
    plain_join(plain_thread(robust_dier, NULL));
    join(spawn(robust_taker, NULL));
}

/* ---- glibc's mutexes are owned per fiber ------------------------------------------- */

/* The conformance scenario on the kinds glibc keeps, each type, with the
 * shim's fibers on one carrier: every "other" fiber shares the owner's
 * kernel thread, which is what glibc knows owners by. */
static const struct {
    int pshared, robust, protocol;
} glibc_kinds[] = {
    {PTHREAD_PROCESS_SHARED, PTHREAD_MUTEX_STALLED, PTHREAD_PRIO_NONE},
    {PTHREAD_PROCESS_PRIVATE, PTHREAD_MUTEX_ROBUST, PTHREAD_PRIO_NONE},
    {PTHREAD_PROCESS_SHARED, PTHREAD_MUTEX_ROBUST, PTHREAD_PRIO_NONE},
    {PTHREAD_PROCESS_PRIVATE, PTHREAD_MUTEX_STALLED, PTHREAD_PRIO_INHERIT},
    {PTHREAD_PROCESS_SHARED, PTHREAD_MUTEX_ROBUST, PTHREAD_PRIO_INHERIT},
};
#define NGK (int)(sizeof glibc_kinds / sizeof glibc_kinds[0])

static int glibc_kind_init(const struct mx_ops *o, pthread_mutex_t *m, int k, int type)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, type);
    pthread_mutexattr_setpshared(&a, glibc_kinds[k].pshared);
    pthread_mutexattr_setrobust(&a, glibc_kinds[k].robust);
    pthread_mutexattr_setprotocol(&a, glibc_kinds[k].protocol);
    int rc = o->init(m, &a);
    pthread_mutexattr_destroy(&a);
    return rc;
}

static void run_glibc_kinds(const struct mx_ops *o, struct results *res)
{
    static const int types[] = {PTHREAD_MUTEX_NORMAL, PTHREAD_MUTEX_RECURSIVE,
                                PTHREAD_MUTEX_ERRORCHECK, PTHREAD_MUTEX_ADAPTIVE_NP};
    for (int k = 0; k < NGK; k++)
        for (int i = 0; i < 4; i++) {
            struct results *r = &res[4 * k + i];
            pthread_mutex_t m;
            r->n = 0;
            /* No PI futexes here: the same for both runs. */
            if ((r->v[0] = glibc_kind_init(o, &m, k, types[i])) != 0) {
                r->n = 1;
                continue;
            }
            scenario(o, &m, types[i], r);
        }
}

static struct results shim_gk_res[NGK * 4];
static void *shim_glibc_kinds_fiber(void *arg)
{
    run_glibc_kinds(&shim_ops, shim_gk_res);
    return NULL;
}

Test(mutex, glibc_kinds_match_glibc_on_one_carrier)
{
    struct results glibc_res[NGK * 4];
    run_glibc_kinds(&glibc_ops, glibc_res);
    start_runtime(1);
    join(spawn(shim_glibc_kinds_fiber, NULL));
    for (int i = 0; i < NGK * 4; i++) {
        cr_assert_eq(shim_gk_res[i].n, glibc_res[i].n, "kind %d type %d", i / 4, i % 4);
        for (int j = 0; j < glibc_res[i].n; j++)
            cr_expect_eq(shim_gk_res[i].v[j], glibc_res[i].v[j],
                         "kind %d type %d, step %d: shim %d glibc %d", i / 4, i % 4, j,
                         shim_gk_res[i].v[j], glibc_res[i].v[j]);
    }
    /* Spelled out for the process-shared recursive one: the other fiber's
     * trylock (step 7, from 0) is EBUSY, its unlock (step 9) EPERM. */
    int want[] = {EPERM, 0, 0, 0, 0, 0,     EINVAL, EBUSY, EBUSY,  EPERM,
                  0,     0, 0, 0, 0, EPERM, 0,      0,     EINVAL, 0};
    cr_assert_eq(shim_gk_res[1].n, (int)(sizeof want / sizeof want[0]));
    for (int j = 0; j < shim_gk_res[1].n; j++)
        cr_expect_eq(shim_gk_res[1].v[j], want[j], "step %d: %d, want %d", j, shim_gk_res[1].v[j],
                     want[j]);
}

/* A fiber that waits for a mutex another fiber of the process holds parks
 * until the unlock: it does not poll. */
static pthread_mutex_t gk_m;
static _Atomic int gk_released, gk_saw_release;

static void *gk_waiter(void *arg)
{
    FCHECK_EQ(shim__pthread_mutex_lock(&gk_m), 0);
    atomic_store(&gk_saw_release, atomic_load(&gk_released));
    FCHECK_EQ(shim__pthread_mutex_unlock(&gk_m), 0);
    return NULL;
}

static void *gk_holder(void *arg)
{
    FCHECK_EQ(shim__pthread_mutex_lock(&gk_m), 0);
    fs_fiber *w = spawn(gk_waiter, NULL);
    fs_yield(); /* the waiter runs and parks */
    struct fs_stats before, after;
    fs_stats_get(&before);
    fs_sleep_until(fs_now() + 50000000);
    fs_stats_get(&after);
    /* One sleep, ours: a polling waiter would have slept ~20 times. */
    FCHECK(after.parks[FS_PARK_SLEEP] - before.parks[FS_PARK_SLEEP] <= 2, "%llu sleeps",
           (unsigned long long)(after.parks[FS_PARK_SLEEP] - before.parks[FS_PARK_SLEEP]));
    atomic_store(&gk_released, 1);
    FCHECK_EQ(shim__pthread_mutex_unlock(&gk_m), 0);
    join(w);
    return NULL;
}

Test(mutex, glibc_kind_waiter_parks_until_the_unlock)
{
    start_runtime(1);
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    cr_assert_eq(shim__pthread_mutex_init(&gk_m, &a), 0);
    join(spawn(gk_holder, NULL));
    cr_assert_eq(atomic_load(&gk_saw_release), 1);
    cr_assert_eq(shim__pthread_mutex_destroy(&gk_m), 0);
}

/* A robust mutex destroyed while held (glibc allows it) and initialized
 * again is free, also for another fiber of the holder's carrier. */
static int glibc_trylock_unlock(pthread_mutex_t *m)
{
    int rc = pthread_mutex_trylock(m);
    if (rc == 0)
        pthread_mutex_unlock(m);
    return rc;
}

static int shim_trylock_unlock(pthread_mutex_t *m)
{
    int rc = shim__pthread_mutex_trylock(m);
    if (rc == 0)
        shim__pthread_mutex_unlock(m);
    return rc;
}

struct reinit_call {
    const struct mx_ops *o;
    int type;
    int rc[5];
};

static void reinit_scenario(struct reinit_call *c)
{
    pthread_mutex_t m;
    const struct mx_ops *o = c->o;
    FCHECK_EQ(glibc_kind_init(o, &m, 2, c->type), 0);
    c->rc[0] = o->lock(&m);
    c->rc[1] = o->destroy(&m);
    c->rc[2] = glibc_kind_init(o, &m, 2, c->type);
    c->rc[3] = on_other(o, o->fibers ? shim_trylock_unlock : glibc_trylock_unlock, &m);
    c->rc[4] = o->destroy(&m);
}

static void *reinit_fiber(void *p)
{
    reinit_scenario(p);
    return NULL;
}

Test(mutex, glibc_kind_destroy_and_init_drop_the_holder)
{
    start_runtime(1);
    for (int type = PTHREAD_MUTEX_NORMAL; type <= PTHREAD_MUTEX_ERRORCHECK; type++) {
        struct reinit_call g = {.o = &glibc_ops, .type = type}, f = {.o = &shim_ops, .type = type};
        reinit_scenario(&g);
        join(spawn(reinit_fiber, &f));
        for (int i = 0; i < 5; i++)
            cr_expect_eq(f.rc[i], g.rc[i], "type %d step %d: shim %d glibc %d", type, i, f.rc[i],
                         g.rc[i]);
        cr_expect_eq(f.rc[3], 0, "the new mutex is free");
    }
}

/* The owner's relock of a normal process-shared mutex waits for itself,
 * as a thread would, but parks: the carrier runs the other fibers. */
static pthread_mutex_t self_m;
static _Atomic int self_other_ran;

static void *self_other(void *arg)
{
    atomic_store(&self_other_ran, 1);
    return NULL;
}

static void *self_relocker(void *arg)
{
    FCHECK_EQ(shim__pthread_mutex_lock(&self_m), 0);
    fs_fiber *o = spawn(self_other, NULL);
    struct timespec dl = abs_in(CLOCK_MONOTONIC, 50000000);
    FCHECK_EQ(shim__pthread_mutex_clocklock(&self_m, CLOCK_MONOTONIC, &dl), ETIMEDOUT);
    check_on_time(CLOCK_MONOTONIC, &dl);
    FCHECK_EQ(atomic_load(&self_other_ran), 1);
    FCHECK_EQ(shim__pthread_mutex_unlock(&self_m), 0);
    join(o);
    return NULL;
}

Test(mutex, glibc_kind_owner_relock_parks)
{
    start_runtime(1);
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    cr_assert_eq(shim__pthread_mutex_init(&self_m, &a), 0);
    join(spawn(self_relocker, NULL));
}

/* With FIBERSHIM_MIGRATE=1 a fiber may resume on another carrier while it
 * holds a process-shared recursive mutex: its relock and unlocks still
 * work there (glibc knows the owner by __owner, which moves with it). */
static pthread_mutex_t mig_m;

/* The carrier's kernel thread. */
static pthread_t mig_carrier(void)
{
    return (pthread_t)syscall(SYS_gettid);
}
static struct fs_waiter *_Atomic mig_parked;
static _Atomic(pthread_t) mig_parked_on;
static _Atomic int mig_moved = -1;

/* Four of these keep yielding, so an idle carrier steals some: whichever
 * runs on another carrier than the parked owner wakes it, and the owner
 * then resumes there (in the waker's runnext). After many turns any of
 * them wakes it. */
static void *mig_waker(void *arg)
{
    for (int i = 0; i < 200000; i++) {
        pthread_t on = atomic_load(&mig_parked_on);
        if (on && (mig_carrier() != on || i > 100000)) {
            struct fs_waiter *w = atomic_exchange(&mig_parked, NULL);
            if (w)
                fs_waiter_wake(w);
        }
        if (atomic_load(&mig_moved) >= 0 && !atomic_load(&mig_parked) && on)
            break;
        fs_yield();
    }
    return NULL;
}

static void *mig_owner(void *arg)
{
    FCHECK_EQ(shim__pthread_mutex_lock(&mig_m), 0);
    pthread_t first = mig_carrier();
    struct fs_waiter w;
    fs_waiter_prepare(&w);
    atomic_store(&mig_parked_on, first);
    atomic_store(&mig_parked, &w);
    fs_waiter_wait(&w, FS_PARK_OTHER, NULL, FS_NO_DEADLINE, NULL, NULL);
    atomic_store(&mig_moved, mig_carrier() != first);
    FCHECK_EQ(shim__pthread_mutex_lock(&mig_m), 0);
    FCHECK_EQ(shim__pthread_mutex_trylock(&mig_m), 0);
    for (int i = 0; i < 3; i++)
        FCHECK_EQ(shim__pthread_mutex_unlock(&mig_m), 0);
    FCHECK_EQ(shim__pthread_mutex_unlock(&mig_m), EPERM);
    return NULL;
}

static void mig_run(int robust)
{
    int rc = fs_init(&(struct fs_config){.carriers = 2, .migrate = true});
    cr_assert_eq(rc, 0);
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutexattr_setrobust(&a, robust);
    cr_assert_eq(shim__pthread_mutex_init(&mig_m, &a), 0);
    fs_fiber *w[4];
    for (int i = 0; i < 4; i++)
        w[i] = spawn(mig_waker, NULL);
    join(spawn(mig_owner, NULL));
    for (int i = 0; i < 4; i++)
        join(w[i]);
}

Test(mutex, glibc_kind_owner_moved_by_migration)
{
    mig_run(PTHREAD_MUTEX_STALLED);
    if (atomic_load(&mig_moved) != 1)
        cr_skip_test("the owner never changed carriers");
    /* Released in glibc too: a plain thread takes it at once. */
    cr_assert_eq(pthread_mutex_trylock(&mig_m), 0);
    cr_assert_eq(pthread_mutex_unlock(&mig_m), 0);
}

/* A robust one is on the locking kernel thread's robust list, which only
 * that thread may change: its holder is pinned to its carrier while it
 * holds it (fs_pin), so a wake from the other carrier sends it home, and
 * its relock, trylock and unlocks there all work (mig_owner checks them).
 * Before pinning, the move stopped the program (shim__mutex_glibc_moved). */
Test(mutex, glibc_kind_robust_owner_is_pinned)
{
    mig_run(PTHREAD_MUTEX_ROBUST);
    cr_assert_eq(atomic_load(&mig_moved), 0, "the holder of a robust mutex changed carriers");
    cr_assert_eq(pthread_mutex_trylock(&mig_m), 0);
    cr_assert_eq(pthread_mutex_unlock(&mig_m), 0);
}

/* ---- the adopted thread keeps what it locked before ---------------------------------- */

Test(mutex, lock_held_across_adoption)
{
    pthread_mutex_t m = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
    pthread_mutex_t e = PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP;
    cr_assert_eq(shim__pthread_mutex_lock(&m), 0);
    cr_assert_eq(shim__pthread_mutex_lock(&e), 0);
    start_runtime(2);
    fs_fiber *self;
    cr_assert_eq(fs_adopt_thread(&self), 0);
    cr_assert_eq(fs_self(), self);
    cr_assert_eq(shim__pthread_mutex_lock(&m), 0); /* depth 2 */
    cr_assert_eq(shim__pthread_mutex_lock(&e), EDEADLK);
    cr_assert_eq(shim__pthread_mutex_unlock(&m), 0);
    cr_assert_eq(shim__pthread_mutex_unlock(&m), 0);
    cr_assert_eq(shim__pthread_mutex_unlock(&m), EPERM);
    cr_assert_eq(shim__pthread_mutex_unlock(&e), 0);
}
