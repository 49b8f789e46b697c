/*
 * test_cond.c - shim/cond.c: fiber-aware condition variables.
 */
#include "sync_util.h"

#include <string.h>

SHIM_DECL(pthread_mutex_init)
SHIM_DECL(pthread_mutex_lock)
SHIM_DECL(pthread_mutex_trylock)
SHIM_DECL(pthread_mutex_unlock)
SHIM_DECL(pthread_mutex_destroy)
SHIM_DECL(pthread_cond_init)
SHIM_DECL(pthread_cond_destroy)
SHIM_DECL(pthread_cond_signal)
SHIM_DECL(pthread_cond_broadcast)
SHIM_DECL(pthread_cond_wait)
SHIM_DECL(pthread_cond_timedwait)
SHIM_DECL(pthread_cond_clockwait)

/* ---- a pool of 1,000 worker fibers fed through a condvar ------------------------ */

#define POOL_WORKERS 1000
#define POOL_ITEMS 100000

static pthread_mutex_t pool_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_nonempty = PTHREAD_COND_INITIALIZER;
static pthread_cond_t pool_nonfull = PTHREAD_COND_INITIALIZER;
static int pool_queue[256];
static int pool_head, pool_len;
static bool pool_closed;
static long pool_sum, pool_done;
static _Atomic int pool_workers_seen;

static void *pool_worker(void *arg)
{
    bool counted = false;
    FCHECK_EQ(shim__pthread_mutex_lock(&pool_m), 0);
    for (;;) {
        while (pool_len == 0 && !pool_closed)
            FCHECK_EQ(shim__pthread_cond_wait(&pool_nonempty, &pool_m), 0);
        if (pool_len == 0)
            break;
        int item = pool_queue[pool_head];
        pool_head = (pool_head + 1) % 256;
        pool_len--;
        pool_sum += item;
        pool_done++;
        FCHECK_EQ(shim__pthread_cond_signal(&pool_nonfull), 0);
        if (!counted) {
            counted = true;
            atomic_fetch_add(&pool_workers_seen, 1);
        }
        /* Work outside the lock, parking now and then. */
        FCHECK_EQ(shim__pthread_mutex_unlock(&pool_m), 0);
        if (item % 97 == 0)
            fs_yield();
        FCHECK_EQ(shim__pthread_mutex_lock(&pool_m), 0);
    }
    FCHECK_EQ(shim__pthread_mutex_unlock(&pool_m), 0);
    return NULL;
}

static void *pool_producer(void *arg)
{
    for (int i = 1; i <= POOL_ITEMS; i++) {
        FCHECK_EQ(shim__pthread_mutex_lock(&pool_m), 0);
        while (pool_len == 256)
            FCHECK_EQ(shim__pthread_cond_wait(&pool_nonfull, &pool_m), 0);
        pool_queue[(pool_head + pool_len) % 256] = i;
        pool_len++;
        FCHECK_EQ(shim__pthread_cond_signal(&pool_nonempty), 0);
        FCHECK_EQ(shim__pthread_mutex_unlock(&pool_m), 0);
    }
    return NULL;
}

Test(cond, pool_of_1000_fibers, .timeout = 120)
{
    start_runtime(2);
    fs_fiber **w = calloc(POOL_WORKERS, sizeof *w);
    for (int i = 0; i < POOL_WORKERS; i++)
        w[i] = spawn(pool_worker, NULL);
    /* One producer fiber and one plain thread producer. */
    fs_fiber *p = spawn(pool_producer, NULL);
    pthread_t t = plain_thread(pool_producer, NULL);
    join(p);
    plain_join(t);
    cr_assert_eq(shim__pthread_mutex_lock(&pool_m), 0);
    pool_closed = true;
    cr_assert_eq(shim__pthread_cond_broadcast(&pool_nonempty), 0);
    cr_assert_eq(shim__pthread_mutex_unlock(&pool_m), 0);
    for (int i = 0; i < POOL_WORKERS; i++)
        join(w[i]);
    free(w);
    cr_assert_eq(pool_done, 2L * POOL_ITEMS);
    cr_assert_eq(pool_sum, 2L * POOL_ITEMS * (POOL_ITEMS + 1) / 2);
    cr_assert_gt(atomic_load(&pool_workers_seen), 10, "work was spread over workers");
}

/* ---- ping-pong: no lost wake-ups ------------------------------------------------ */

static pthread_mutex_t pp_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pp_c = PTHREAD_COND_INITIALIZER;
static int pp_turn;
#define PP_ROUNDS 20000

static void *pp_player(void *arg)
{
    int me = (int)(intptr_t)arg;
    for (int i = 0; i < PP_ROUNDS; i++) {
        FCHECK_EQ(shim__pthread_mutex_lock(&pp_m), 0);
        while (pp_turn != me)
            FCHECK_EQ(shim__pthread_cond_wait(&pp_c, &pp_m), 0);
        pp_turn = 1 - me;
        FCHECK_EQ(shim__pthread_cond_signal(&pp_c), 0);
        FCHECK_EQ(shim__pthread_mutex_unlock(&pp_m), 0);
    }
    return NULL;
}

Test(cond, ping_pong_fibers)
{
    start_runtime(2);
    fs_fiber *a = spawn(pp_player, (void *)0), *b = spawn(pp_player, (void *)1);
    join(a);
    join(b);
}

Test(cond, ping_pong_fiber_and_plain_thread)
{
    start_runtime(2);
    fs_fiber *a = spawn(pp_player, (void *)0);
    pthread_t b = plain_thread(pp_player, (void *)1);
    join(a);
    plain_join(b);
}

/* ---- signal wakes one current waiter, broadcast all; late arrivals are not woken -- */

static pthread_mutex_t sig_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sig_c = PTHREAD_COND_INITIALIZER;
static _Atomic int sig_woken, sig_waiting;

static void *sig_waiter(void *arg)
{
    int64_t ms = (int64_t)(intptr_t)arg;
    FCHECK_EQ(shim__pthread_mutex_lock(&sig_m), 0);
    atomic_fetch_add(&sig_waiting, 1);
    struct timespec abs = abs_in(CLOCK_REALTIME, ms * 1000000);
    int rc = shim__pthread_cond_timedwait(&sig_c, &sig_m, &abs);
    if (rc == 0)
        atomic_fetch_add(&sig_woken, 1);
    else
        FCHECK_EQ(rc, ETIMEDOUT);
    FCHECK_EQ(shim__pthread_mutex_unlock(&sig_m), 0);
    return (void *)(intptr_t)rc;
}

static void wait_for_waiters(int n)
{
    while (atomic_load(&sig_waiting) < n)
        sleep_ns(1000000);
    /* They queue before they release the mutex: taking it proves it. */
    cr_assert_eq(shim__pthread_mutex_lock(&sig_m), 0);
    cr_assert_eq(shim__pthread_mutex_unlock(&sig_m), 0);
}

Test(cond, signal_one_broadcast_all_mixed_waiters)
{
    start_runtime(2);
    fs_fiber *f[4];
    pthread_t t[2];
    for (int i = 0; i < 4; i++)
        f[i] = spawn(sig_waiter, (void *)5000);
    for (int i = 0; i < 2; i++)
        t[i] = plain_thread(sig_waiter, (void *)5000);
    wait_for_waiters(6);
    cr_assert_eq(shim__pthread_cond_signal(&sig_c), 0);
    sleep_ns(100000000);
    cr_assert_eq(atomic_load(&sig_woken), 1);
    cr_assert_eq(shim__pthread_cond_signal(&sig_c), 0);
    sleep_ns(100000000);
    cr_assert_eq(atomic_load(&sig_woken), 2);
    cr_assert_eq(shim__pthread_cond_broadcast(&sig_c), 0);
    for (int i = 0; i < 4; i++)
        cr_assert_null(join(f[i]));
    for (int i = 0; i < 2; i++)
        cr_assert_null(plain_join(t[i]));
    cr_assert_eq(atomic_load(&sig_woken), 6);
}

Test(cond, a_later_waiter_misses_an_earlier_signal)
{
    start_runtime(2);
    fs_fiber *a = spawn(sig_waiter, (void *)5000);
    wait_for_waiters(1);
    cr_assert_eq(shim__pthread_cond_signal(&sig_c), 0);
    cr_assert_null(join(a));
    /* No waiter now: these signals are lost on purpose. */
    cr_assert_eq(shim__pthread_cond_signal(&sig_c), 0);
    cr_assert_eq(shim__pthread_cond_broadcast(&sig_c), 0);
    fs_fiber *b = spawn(sig_waiter, (void *)100);
    cr_assert_eq((int)(intptr_t)join(b), ETIMEDOUT);
    cr_assert_eq(atomic_load(&sig_woken), 1);
}

/* ---- timed waits: both clocks, never early, relock on timeout ------------------- */

static pthread_mutex_t tw_m = PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP;

struct tw_case {
    pthread_cond_t *c;
    clockid_t clock;  /* of abs */
    bool clockwait;   /* clockwait with `clock` (else timedwait on c's clock) */
};

static void *tw_main(void *p)
{
    struct tw_case *k = p;
    FCHECK_EQ(shim__pthread_mutex_lock(&tw_m), 0);
    struct timespec abs = abs_in(k->clock, 60000000);
    int rc = k->clockwait ? shim__pthread_cond_clockwait(k->c, &tw_m, k->clock, &abs)
                          : shim__pthread_cond_timedwait(k->c, &tw_m, &abs);
    FCHECK_EQ(rc, ETIMEDOUT);
    check_on_time(k->clock, &abs);
    /* Relocked: errorcheck says we own it. */
    FCHECK_EQ(shim__pthread_mutex_lock(&tw_m), EDEADLK);
    FCHECK_EQ(shim__pthread_mutex_unlock(&tw_m), 0);
    return NULL;
}

Test(cond, timedwait_both_clocks_relocks_on_timeout)
{
    start_runtime(2);
    pthread_cond_t real = PTHREAD_COND_INITIALIZER, mono;
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    cr_assert_eq(shim__pthread_cond_init(&mono, &a), 0);
    struct tw_case cases[] = {
        {&real, CLOCK_REALTIME, false}, {&mono, CLOCK_MONOTONIC, false},
        {&real, CLOCK_MONOTONIC, true}, {&mono, CLOCK_REALTIME, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        join(spawn(tw_main, &cases[i]));
        plain_join(plain_thread(tw_main, &cases[i]));
    }
    cr_assert_eq(shim__pthread_cond_destroy(&mono), 0);
}

static void *einval_main(void *arg)
{
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    pthread_mutex_t m = PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP;
    struct timespec bad = abs_in(CLOCK_REALTIME, 0), good = bad;
    bad.tv_nsec = -1;
    /* As glibc: the timeout first, even with the mutex not held. */
    FCHECK_EQ(shim__pthread_cond_timedwait(&c, &m, &bad), EINVAL);
    FCHECK_EQ(shim__pthread_cond_wait(&c, &m), EPERM); /* errorcheck, not owned */
    FCHECK_EQ(shim__pthread_mutex_lock(&m), 0);
    FCHECK_EQ(shim__pthread_cond_timedwait(&c, &m, &bad), EINVAL);
    FCHECK_EQ(shim__pthread_cond_clockwait(&c, &m, CLOCK_PROCESS_CPUTIME_ID, &good), EINVAL);
    FCHECK_EQ(shim__pthread_cond_clockwait(&c, &m, 99, &good), EINVAL);
    FCHECK_EQ(shim__pthread_cond_timedwait(&c, &m, &good), ETIMEDOUT); /* in the past */
    FCHECK_EQ(shim__pthread_mutex_trylock(&m), EBUSY);                 /* relocked */
    FCHECK_EQ(shim__pthread_mutex_unlock(&m), 0);
    FCHECK_EQ(shim__pthread_cond_destroy(&c), 0);
    return NULL;
}

Test(cond, errors_match_glibc)
{
    start_runtime(2);
    einval_main(NULL); /* glibc's answers were checked against these by hand */
    join(spawn(einval_main, NULL));
}

/* ---- process-shared: glibc's condvar, fibers see spurious wake-ups -------------- */

static pthread_mutex_t ps_m;
static pthread_cond_t ps_c;
static int ps_flag;

static void *ps_waiter(void *arg)
{
    FCHECK_EQ(shim__pthread_mutex_lock(&ps_m), 0);
    while (!ps_flag)
        FCHECK_EQ(shim__pthread_cond_wait(&ps_c, &ps_m), 0);
    FCHECK_EQ(shim__pthread_mutex_unlock(&ps_m), 0);
    return NULL;
}

Test(cond, process_shared_stays_glibc)
{
    start_runtime(2);
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    cr_assert_eq(shim__pthread_mutex_init(&ps_m, &ma), 0);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
    cr_assert_eq(shim__pthread_cond_init(&ps_c, &ca), 0);
    cr_assert(ps_c.__data.__wrefs & 1, "glibc's pshared mark");
    fs_fiber *f[4];
    for (int i = 0; i < 4; i++)
        f[i] = spawn(ps_waiter, NULL);
    pthread_t t = plain_thread(ps_waiter, NULL);
    sleep_ns(30000000);
    cr_assert_eq(shim__pthread_mutex_lock(&ps_m), 0);
    ps_flag = 1;
    cr_assert_eq(shim__pthread_cond_broadcast(&ps_c), 0);
    cr_assert_eq(shim__pthread_mutex_unlock(&ps_m), 0);
    for (int i = 0; i < 4; i++)
        join(f[i]);
    plain_join(t);
    cr_assert_eq(shim__pthread_cond_destroy(&ps_c), 0);
}

/* Fibers of one process ping-pong through a process-shared condvar and
 * mutex: a signal made in the process wakes the waiter at once, not at its
 * next poll (1 ms). 2,000 round trips take milliseconds; waiting for the
 * poll took 2.2 s. Bound: 1 s, for a loaded CI machine. */
#define PS_ROUNDS 2000
static pthread_mutex_t psp_m;
static pthread_cond_t psp_c;
static int psp_turn;

static void *psp_player(void *arg)
{
    int me = (int)(intptr_t)arg;
    FCHECK_EQ(shim__pthread_mutex_lock(&psp_m), 0);
    for (int i = 0; i < PS_ROUNDS; i++) {
        while (psp_turn != me)
            FCHECK_EQ(shim__pthread_cond_wait(&psp_c, &psp_m), 0);
        psp_turn = !me;
        FCHECK_EQ(shim__pthread_cond_signal(&psp_c), 0);
    }
    FCHECK_EQ(shim__pthread_mutex_unlock(&psp_m), 0);
    return NULL;
}

Test(cond, process_shared_wakes_fibers_of_this_process_at_once)
{
    start_runtime(1);
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    cr_assert_eq(shim__pthread_mutex_init(&psp_m, &ma), 0);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
    cr_assert_eq(shim__pthread_cond_init(&psp_c, &ca), 0);
    int64_t start = clock_ns(CLOCK_MONOTONIC);
    fs_fiber *a = spawn(psp_player, (void *)0), *b = spawn(psp_player, (void *)1);
    join(a);
    join(b);
    int64_t took = clock_ns(CLOCK_MONOTONIC) - start;
    cr_expect_lt(took, 1000000000, "%d round trips took %lld ns", PS_ROUNDS, (long long)took);
    cr_assert_eq(shim__pthread_cond_destroy(&psp_c), 0);
    cr_assert_eq(shim__pthread_mutex_destroy(&psp_m), 0);
}

/* ---- signal or broadcast with the mutex held throughout ------------------------- */

/* One carrier, so the order is fixed: N waiters wait; S takes the mutex,
 * signals (N == 1) or broadcasts, yields a few times with the mutex still
 * held, then unlocks. Nobody may get past the mutex while S holds it, and
 * every waiter must get through once S lets go: woken waiters that found
 * the mutex held parked on it (FS_PARK_MUTEX, logged: N here) and the
 * unlocks must wake them one after another. */
#define HELD_WAITERS 8
static pthread_mutex_t held_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t held_c = PTHREAD_COND_INITIALIZER;
static int held_go;            /* under held_m */
static _Atomic int held_waiting, held_done;

static void *held_waiter(void *arg)
{
    FCHECK_EQ(shim__pthread_mutex_lock(&held_m), 0);
    atomic_fetch_add(&held_waiting, 1);
    while (!held_go)
        FCHECK_EQ(shim__pthread_cond_wait(&held_c, &held_m), 0);
    held_go--; /* each wake lets exactly one through */
    FCHECK_EQ(shim__pthread_mutex_unlock(&held_m), 0);
    atomic_fetch_add(&held_done, 1);
    return NULL;
}

static void *held_signaller(void *arg)
{
    int n = (int)(intptr_t)arg;
    FCHECK_EQ(shim__pthread_mutex_lock(&held_m), 0);
    held_go = n;
    if (n == 1)
        FCHECK_EQ(shim__pthread_cond_signal(&held_c), 0);
    else
        FCHECK_EQ(shim__pthread_cond_broadcast(&held_c), 0);
    for (int i = 0; i < 4; i++)
        fs_yield();
    FCHECK_EQ(atomic_load(&held_done), 0); /* nobody got past the held mutex */
    FCHECK_EQ(shim__pthread_mutex_unlock(&held_m), 0);
    return NULL;
}

static void held_case(int waiters)
{
    start_runtime(1);
    held_go = 0;
    atomic_store(&held_waiting, 0);
    atomic_store(&held_done, 0);
    fs_fiber *w[HELD_WAITERS];
    for (int i = 0; i < waiters; i++)
        w[i] = spawn(held_waiter, NULL);
    while (atomic_load(&held_waiting) < waiters)
        sleep_ns(1000000);
    /* They queue before they release the mutex: taking it proves it. */
    cr_assert_eq(shim__pthread_mutex_lock(&held_m), 0);
    cr_assert_eq(shim__pthread_mutex_unlock(&held_m), 0);
    struct fs_stats st;
    fs_stats_get(&st);
    uint64_t before = st.parks[FS_PARK_MUTEX];
    cr_assert_null(join(spawn(held_signaller, (void *)(intptr_t)waiters)));
    for (int i = 0; i < waiters; i++)
        cr_assert_null(join(w[i]));
    cr_assert_eq(atomic_load(&held_done), waiters);
    cr_assert_eq(held_go, 0);
    fs_stats_get(&st);
    cr_log_info("%d waiter(s): %lu mutex parks", waiters,
                (unsigned long)(st.parks[FS_PARK_MUTEX] - before));
}

Test(cond, signal_with_the_mutex_held_throughout)
{
    held_case(1);
}

Test(cond, broadcast_with_the_mutex_held_throughout)
{
    held_case(HELD_WAITERS);
}
