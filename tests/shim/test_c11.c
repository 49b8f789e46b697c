/*
 * test_c11.c - shim/c11.c: C11 <threads.h> on the shim's pthreads. Runs
 * in a fiber, so thrd_create makes fibers (shim/thread.c).
 */
#include "sync_util.h"

#include <threads.h>

SHIM_DECL(thrd_create)
SHIM_DECL(thrd_join)
SHIM_DECL(thrd_detach)
SHIM_DECL(thrd_current)
SHIM_DECL(thrd_equal)
SHIM_DECL(thrd_sleep)
SHIM_DECL(thrd_yield)
SHIM_DECL(mtx_init)
SHIM_DECL(mtx_lock)
SHIM_DECL(mtx_trylock)
SHIM_DECL(mtx_timedlock)
SHIM_DECL(mtx_unlock)
SHIM_DECL(mtx_destroy)
SHIM_DECL(cnd_init)
SHIM_DECL(cnd_signal)
SHIM_DECL(cnd_broadcast)
SHIM_DECL(cnd_wait)
SHIM_DECL(cnd_timedwait)
SHIM_DECL(cnd_destroy)
SHIM_DECL(tss_create)
SHIM_DECL(tss_get)
SHIM_DECL(tss_set)
SHIM_DECL(tss_delete)
SHIM_DECL(call_once)

static mtx_t m;
static cnd_t c;
static long counter;
static int ready;

static int adder(void *arg)
{
    for (int i = 0; i < 1000; i++) {
        FCHECK_EQ(shim__mtx_lock(&m), thrd_success);
        counter++;
        FCHECK_EQ(shim__mtx_unlock(&m), thrd_success);
        if (i % 100 == 0)
            shim__thrd_yield();
    }
    return (int)(intptr_t)arg;
}

static void *threads_main(void *arg)
{
    FCHECK_EQ(shim__mtx_init(&m, mtx_plain), thrd_success);
    thrd_t t[20];
    for (int i = 0; i < 20; i++)
        FCHECK_EQ(shim__thrd_create(&t[i], adder, (void *)(intptr_t)(i - 5)), thrd_success);
    for (int i = 0; i < 20; i++) {
        int res;
        FCHECK_EQ(shim__thrd_join(t[i], &res), thrd_success);
        FCHECK_EQ(res, i - 5);
    }
    FCHECK_EQ(counter, 20 * 1000L);
    FCHECK(shim__thrd_equal(shim__thrd_current(), shim__thrd_current()));
    FCHECK(!shim__thrd_equal(shim__thrd_current(), t[0]));
    struct timespec ts = {0, 20000000};
    int64_t t0 = clock_ns(CLOCK_MONOTONIC);
    FCHECK_EQ(shim__thrd_sleep(&ts, NULL), 0);
    FCHECK(clock_ns(CLOCK_MONOTONIC) - t0 >= 20000000);
    thrd_t d;
    FCHECK_EQ(shim__thrd_create(&d, adder, NULL), thrd_success);
    FCHECK_EQ(shim__thrd_detach(d), thrd_success);
    shim__mtx_destroy(&m);
    return NULL;
}

Test(c11, threads_and_mutex)
{
    start_runtime(2);
    join(spawn(threads_main, NULL));
}

static void *mtx_main(void *arg)
{
    mtx_t r, t;
    FCHECK_EQ(shim__mtx_init(&r, mtx_plain | mtx_recursive), thrd_success);
    FCHECK_EQ(shim__mtx_lock(&r), thrd_success);
    FCHECK_EQ(shim__mtx_lock(&r), thrd_success);
    FCHECK_EQ(shim__mtx_trylock(&r), thrd_success);
    for (int i = 0; i < 3; i++)
        FCHECK_EQ(shim__mtx_unlock(&r), thrd_success);
    FCHECK_EQ(shim__mtx_unlock(&r), thrd_error); /* EPERM */
    shim__mtx_destroy(&r);

    /* As glibc: an unknown type makes a normal mutex. */
    FCHECK_EQ(shim__mtx_init(&t, 7), thrd_success);
    FCHECK_EQ(shim__mtx_init(&t, mtx_timed), thrd_success);
    FCHECK_EQ(shim__mtx_lock(&t), thrd_success);
    FCHECK_EQ(shim__mtx_trylock(&t), thrd_busy);
    struct timespec abs = abs_in(CLOCK_REALTIME, 30000000);
    FCHECK_EQ(shim__mtx_timedlock(&t, &abs), thrd_timedout);
    check_on_time(CLOCK_REALTIME, &abs);
    abs.tv_nsec = -1;
    FCHECK_EQ(shim__mtx_timedlock(&t, &abs), thrd_error); /* EINVAL */
    FCHECK_EQ(shim__mtx_unlock(&t), thrd_success);
    shim__mtx_destroy(&t);
    return NULL;
}

Test(c11, mutex_kinds_and_results_like_glibc)
{
    /* glibc's answers for the same calls. */
    mtx_t g;
    cr_assert_eq(mtx_init(&g, mtx_timed), thrd_success);
    cr_assert_eq(mtx_lock(&g), thrd_success);
    cr_assert_eq(mtx_trylock(&g), thrd_busy);
    struct timespec abs = abs_in(CLOCK_REALTIME, 0);
    cr_assert_eq(mtx_timedlock(&g, &abs), thrd_timedout);
    abs.tv_nsec = -1;
    cr_assert_eq(mtx_timedlock(&g, &abs), thrd_error);
    start_runtime(2);
    join(spawn(mtx_main, NULL));
}

static int cnd_waiter(void *arg)
{
    FCHECK_EQ(shim__mtx_lock(&m), thrd_success);
    while (!ready)
        FCHECK_EQ(shim__cnd_wait(&c, &m), thrd_success);
    FCHECK_EQ(shim__mtx_unlock(&m), thrd_success);
    return 7;
}

static void *cnd_main(void *arg)
{
    FCHECK_EQ(shim__mtx_init(&m, mtx_plain), thrd_success);
    FCHECK_EQ(shim__cnd_init(&c), thrd_success);
    FCHECK_EQ(shim__mtx_lock(&m), thrd_success);
    struct timespec abs = abs_in(CLOCK_REALTIME, 30000000);
    FCHECK_EQ(shim__cnd_timedwait(&c, &m, &abs), thrd_timedout);
    check_on_time(CLOCK_REALTIME, &abs);
    FCHECK_EQ(shim__mtx_unlock(&m), thrd_success);
    thrd_t t[10];
    for (int i = 0; i < 10; i++)
        FCHECK_EQ(shim__thrd_create(&t[i], cnd_waiter, NULL), thrd_success);
    fs_sleep_until(fs_now() + 10000000);
    FCHECK_EQ(shim__mtx_lock(&m), thrd_success);
    ready = 1;
    FCHECK_EQ(shim__cnd_signal(&c), thrd_success);
    FCHECK_EQ(shim__cnd_broadcast(&c), thrd_success);
    FCHECK_EQ(shim__mtx_unlock(&m), thrd_success);
    for (int i = 0; i < 10; i++) {
        int res;
        FCHECK_EQ(shim__thrd_join(t[i], &res), thrd_success);
        FCHECK_EQ(res, 7);
    }
    shim__cnd_destroy(&c);
    shim__mtx_destroy(&m);
    return NULL;
}

Test(c11, condition_variables)
{
    start_runtime(2);
    join(spawn(cnd_main, NULL));
}

static tss_t key;
static _Atomic int dtor_calls;
static void dtor(void *p)
{
    atomic_fetch_add(&dtor_calls, 1);
}

static int tss_user(void *arg)
{
    FCHECK(shim__tss_get(key) == NULL);
    FCHECK_EQ(shim__tss_set(key, arg), thrd_success);
    shim__thrd_yield();
    FCHECK(shim__tss_get(key) == arg);
    return 0;
}

static once_flag flag = ONCE_FLAG_INIT;
static _Atomic int once_runs;
static void once_fn(void)
{
    atomic_fetch_add(&once_runs, 1);
}

static int once_user(void *arg)
{
    shim__call_once(&flag, once_fn);
    return 0;
}

static void *tss_main(void *arg)
{
    FCHECK_EQ(shim__tss_create(&key, dtor), thrd_success);
    thrd_t t[8];
    for (int i = 0; i < 8; i++)
        FCHECK_EQ(shim__thrd_create(&t[i], tss_user, (void *)(intptr_t)(i + 1)), thrd_success);
    for (int i = 0; i < 8; i++)
        FCHECK_EQ(shim__thrd_join(t[i], NULL), thrd_success);
    FCHECK_EQ(atomic_load(&dtor_calls), 8);
    shim__tss_delete(key);
    for (int i = 0; i < 8; i++)
        FCHECK_EQ(shim__thrd_create(&t[i], once_user, NULL), thrd_success);
    for (int i = 0; i < 8; i++)
        FCHECK_EQ(shim__thrd_join(t[i], NULL), thrd_success);
    FCHECK_EQ(atomic_load(&once_runs), 1);
    return NULL;
}

Test(c11, tss_and_call_once)
{
    start_runtime(2);
    join(spawn(tss_main, NULL));
}
