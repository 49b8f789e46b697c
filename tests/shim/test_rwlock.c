/*
 * test_rwlock.c - shim/rwlock.c: fiber-aware read-write locks.
 */
#include "sync_util.h"

SHIM_DECL(pthread_rwlock_init)
SHIM_DECL(pthread_rwlock_destroy)
SHIM_DECL(pthread_rwlock_rdlock)
SHIM_DECL(pthread_rwlock_tryrdlock)
SHIM_DECL(pthread_rwlock_timedrdlock)
SHIM_DECL(pthread_rwlock_clockrdlock)
SHIM_DECL(pthread_rwlock_wrlock)
SHIM_DECL(pthread_rwlock_trywrlock)
SHIM_DECL(pthread_rwlock_timedwrlock)
SHIM_DECL(pthread_rwlock_clockwrlock)
SHIM_DECL(pthread_rwlock_unlock)

/* ---- invariants under stress ------------------------------------------------------ */

static pthread_rwlock_t st_rw[2] = {PTHREAD_RWLOCK_INITIALIZER,
                                    PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP};
static _Atomic int st_readers[2], st_writers[2], st_max_readers;
static long st_value[2];

static void *st_worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < 400; i++) {
        int k = i & 1;
        pthread_rwlock_t *rw = &st_rw[k];
        if ((i + id) % 8 == 0) {
            FCHECK_EQ(shim__pthread_rwlock_wrlock(rw), 0);
            FCHECK_EQ(atomic_fetch_add(&st_writers[k], 1), 0);
            FCHECK_EQ(atomic_load(&st_readers[k]), 0);
            st_value[k]++;
            if (i % 3 == 0)
                fs_yield();
            FCHECK_EQ(atomic_load(&st_readers[k]), 0);
            atomic_fetch_sub(&st_writers[k], 1);
        } else {
            FCHECK_EQ(shim__pthread_rwlock_rdlock(rw), 0);
            int r = atomic_fetch_add(&st_readers[k], 1) + 1;
            FCHECK_EQ(atomic_load(&st_writers[k]), 0);
            int m = atomic_load(&st_max_readers);
            while (r > m && !atomic_compare_exchange_weak(&st_max_readers, &m, r))
                ;
            fs_yield(); /* readers overlap while parked */
            FCHECK_EQ(atomic_load(&st_writers[k]), 0);
            atomic_fetch_sub(&st_readers[k], 1);
        }
        FCHECK_EQ(shim__pthread_rwlock_unlock(rw), 0);
    }
    return NULL;
}

Test(rwlock, readers_share_writers_exclude)
{
    start_runtime(2);
    /* Lock 0 prefers readers, lock 1 writers; both must hold the
     * invariants. */
    pthread_t t[2] = {plain_thread(st_worker, (void *)1000), plain_thread(st_worker, (void *)1001)};
    run_fibers(100, st_worker, NULL);
    plain_join(t[0]);
    plain_join(t[1]);
    long writes = 0;
    for (int id = 0; id < 100; id++)
        for (int i = 0; i < 400; i++)
            writes += (i + id) % 8 == 0;
    for (int id = 1000; id < 1002; id++)
        for (int i = 0; i < 400; i++)
            writes += (i + id) % 8 == 0;
    cr_assert_eq(st_value[0] + st_value[1], writes);
    cr_assert_gt(atomic_load(&st_max_readers), 1, "readers ran concurrently");
}

/* ---- conformance ------------------------------------------------------------------- */

struct rw_ops {
    int (*rdlock)(pthread_rwlock_t *);
    int (*tryrdlock)(pthread_rwlock_t *);
    int (*timedrdlock)(pthread_rwlock_t *, const struct timespec *);
    int (*clockrdlock)(pthread_rwlock_t *, clockid_t, const struct timespec *);
    int (*wrlock)(pthread_rwlock_t *);
    int (*trywrlock)(pthread_rwlock_t *);
    int (*timedwrlock)(pthread_rwlock_t *, const struct timespec *);
    int (*unlock)(pthread_rwlock_t *);
    int (*destroy)(pthread_rwlock_t *);
};

static const struct rw_ops glibc_ops = {
    pthread_rwlock_rdlock, pthread_rwlock_tryrdlock, pthread_rwlock_timedrdlock,
    pthread_rwlock_clockrdlock, pthread_rwlock_wrlock, pthread_rwlock_trywrlock,
    pthread_rwlock_timedwrlock, pthread_rwlock_unlock, pthread_rwlock_destroy};
static const struct rw_ops shim_ops = {
    shim__pthread_rwlock_rdlock, shim__pthread_rwlock_tryrdlock, shim__pthread_rwlock_timedrdlock,
    shim__pthread_rwlock_clockrdlock, shim__pthread_rwlock_wrlock, shim__pthread_rwlock_trywrlock,
    shim__pthread_rwlock_timedwrlock, shim__pthread_rwlock_unlock, shim__pthread_rwlock_destroy};

static int scenario(const struct rw_ops *o, int *v)
{
    int n = 0;
    pthread_rwlock_t rw = PTHREAD_RWLOCK_INITIALIZER;
    struct timespec past = {0, 0}, bad = abs_in(CLOCK_REALTIME, 0), good = bad;
    bad.tv_nsec = -5;
    v[n++] = o->wrlock(&rw);
    v[n++] = o->wrlock(&rw);          /* EDEADLK */
    v[n++] = o->rdlock(&rw);          /* EDEADLK */
    v[n++] = o->trywrlock(&rw);       /* EBUSY */
    v[n++] = o->tryrdlock(&rw);       /* EBUSY */
    v[n++] = o->timedwrlock(&rw, &past); /* EDEADLK */
    v[n++] = o->timedrdlock(&rw, &past); /* EDEADLK */
    v[n++] = o->timedwrlock(&rw, &bad);  /* EINVAL first */
    v[n++] = o->unlock(&rw);
    v[n++] = o->timedwrlock(&rw, &bad);  /* EINVAL even when free */
    v[n++] = o->timedrdlock(&rw, &bad);
    v[n++] = o->clockrdlock(&rw, 99, &good);
    v[n++] = o->clockrdlock(&rw, CLOCK_PROCESS_CPUTIME_ID, &good);
    v[n++] = o->rdlock(&rw);
    v[n++] = o->rdlock(&rw);          /* recursive read */
    v[n++] = o->tryrdlock(&rw);
    v[n++] = o->trywrlock(&rw);       /* EBUSY */
    v[n++] = o->timedwrlock(&rw, &past); /* ETIMEDOUT */
    v[n++] = o->unlock(&rw);
    v[n++] = o->unlock(&rw);
    v[n++] = o->unlock(&rw);
    v[n++] = o->trywrlock(&rw);
    v[n++] = o->unlock(&rw);
    v[n++] = o->destroy(&rw);
    return n;
}

static int shim_v[32], shim_n;
static void *shim_scenario(void *arg)
{
    shim_n = scenario(&shim_ops, shim_v);
    return NULL;
}

Test(rwlock, conformance_matches_glibc)
{
    int glibc_v[32];
    int n = scenario(&glibc_ops, glibc_v);
    int want[] = {0, EDEADLK, EDEADLK, EBUSY, EBUSY, EDEADLK, EDEADLK, EINVAL, 0, EINVAL,
                  EINVAL, EINVAL, EINVAL, 0, 0, 0, EBUSY, ETIMEDOUT, 0, 0, 0, 0, 0, 0};
    cr_assert_eq(n, (int)(sizeof want / sizeof want[0]));
    for (int i = 0; i < n; i++)
        cr_expect_eq(glibc_v[i], want[i], "glibc step %d: %d", i, glibc_v[i]);
    start_runtime(2);
    join(spawn(shim_scenario, NULL));
    cr_assert_eq(shim_n, n);
    for (int i = 0; i < n; i++)
        cr_expect_eq(shim_v[i], glibc_v[i], "step %d: shim %d glibc %d", i, shim_v[i], glibc_v[i]);
}

/* ---- preference ---------------------------------------------------------------------- */

static pthread_rwlock_t pref_rw;
static _Atomic int pref_stage;

static void *pref_writer(void *arg)
{
    atomic_store(&pref_stage, 1);
    FCHECK_EQ(shim__pthread_rwlock_wrlock(&pref_rw), 0);
    atomic_store(&pref_stage, 2);
    FCHECK_EQ(shim__pthread_rwlock_unlock(&pref_rw), 0);
    return NULL;
}

/* A reader holds the lock, a writer queues; can a second reader enter? */
static void *pref_main(void *arg)
{
    FCHECK_EQ(shim__pthread_rwlock_rdlock(&pref_rw), 0);
    fs_fiber *w = spawn(pref_writer, NULL);
    while (atomic_load(&pref_stage) < 1)
        fs_sleep_until(fs_now() + 1000000);
    fs_sleep_until(fs_now() + 20000000); /* let it queue */
    int rc = shim__pthread_rwlock_tryrdlock(&pref_rw);
    if (rc == 0)
        FCHECK_EQ(shim__pthread_rwlock_unlock(&pref_rw), 0);
    FCHECK_EQ(atomic_load(&pref_stage), 1);
    FCHECK_EQ(shim__pthread_rwlock_unlock(&pref_rw), 0);
    join(w);
    return (void *)(intptr_t)rc;
}

Test(rwlock, reader_preference_by_default_writer_preference_on_request)
{
    start_runtime(2);
    cr_assert_eq(shim__pthread_rwlock_init(&pref_rw, NULL), 0);
    cr_assert_eq((int)(intptr_t)join(spawn(pref_main, NULL)), 0);
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    cr_assert_eq(shim__pthread_rwlock_init(&pref_rw, &a), 0);
    atomic_store(&pref_stage, 0);
    cr_assert_eq((int)(intptr_t)join(spawn(pref_main, NULL)), EBUSY);
}

/* ---- timed, mixed ------------------------------------------------------------------- */

static pthread_rwlock_t tm_rw = PTHREAD_RWLOCK_INITIALIZER;

static void *tm_main(void *arg)
{
    clockid_t c = (clockid_t)(intptr_t)arg;
    struct timespec abs = abs_in(c, 50000000);
    int rc = c == CLOCK_REALTIME ? shim__pthread_rwlock_timedrdlock(&tm_rw, &abs)
                                 : shim__pthread_rwlock_clockrdlock(&tm_rw, c, &abs);
    FCHECK_EQ(rc, ETIMEDOUT);
    check_on_time(c, &abs);
    abs = abs_in(c, 50000000);
    rc = c == CLOCK_REALTIME ? shim__pthread_rwlock_timedwrlock(&tm_rw, &abs)
                             : shim__pthread_rwlock_clockwrlock(&tm_rw, c, &abs);
    FCHECK_EQ(rc, ETIMEDOUT);
    check_on_time(c, &abs);
    /* Now wait long enough: the writer lets go. */
    abs = abs_in(c, 10000000000LL);
    FCHECK_EQ(shim__pthread_rwlock_clockrdlock(&tm_rw, c, &abs), 0);
    FCHECK_EQ(shim__pthread_rwlock_unlock(&tm_rw), 0);
    return NULL;
}

Test(rwlock, timed_both_clocks_fibers_and_plain_threads)
{
    start_runtime(2);
    cr_assert_eq(shim__pthread_rwlock_wrlock(&tm_rw), 0);
    fs_fiber *f[2] = {spawn(tm_main, (void *)(intptr_t)CLOCK_REALTIME),
                      spawn(tm_main, (void *)(intptr_t)CLOCK_MONOTONIC)};
    pthread_t t[2] = {plain_thread(tm_main, (void *)(intptr_t)CLOCK_REALTIME),
                      plain_thread(tm_main, (void *)(intptr_t)CLOCK_MONOTONIC)};
    sleep_ns(300000000);
    cr_assert_eq(shim__pthread_rwlock_unlock(&tm_rw), 0);
    join(f[0]);
    join(f[1]);
    plain_join(t[0]);
    plain_join(t[1]);
}

/* ---- process-shared ------------------------------------------------------------------ */

static pthread_rwlock_t ps_rw;
static long ps_value;

static void *ps_worker(void *arg)
{
    for (int i = 0; i < 200; i++) {
        if (i % 4 == 0) {
            FCHECK_EQ(shim__pthread_rwlock_wrlock(&ps_rw), 0);
            ps_value++;
        } else {
            FCHECK_EQ(shim__pthread_rwlock_rdlock(&ps_rw), 0);
        }
        if (i % 16 == 0)
            fs_yield();
        FCHECK_EQ(shim__pthread_rwlock_unlock(&ps_rw), 0);
    }
    return NULL;
}

Test(rwlock, process_shared_stays_glibc)
{
    start_runtime(2);
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    cr_assert_eq(shim__pthread_rwlock_init(&ps_rw, &a), 0);
    cr_assert_neq(ps_rw.__data.__shared, 0);
    pthread_t t = plain_thread(ps_worker, NULL);
    run_fibers(10, ps_worker, NULL);
    plain_join(t);
    cr_assert_eq(ps_value, 11 * 50L);
    cr_assert_eq(shim__pthread_rwlock_destroy(&ps_rw), 0);
}
