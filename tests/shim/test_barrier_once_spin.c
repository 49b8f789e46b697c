/*
 * test_barrier_once_spin.c - shim/barrier.c, shim/once.c, shim/spin.c.
 */
#include "sync_util.h"

#include <limits.h>

SHIM_DECL(pthread_barrier_init)
SHIM_DECL(pthread_barrier_wait)
SHIM_DECL(pthread_barrier_destroy)
SHIM_DECL(pthread_once)
SHIM_DECL(pthread_spin_init)
SHIM_DECL(pthread_spin_lock)
SHIM_DECL(pthread_spin_trylock)
SHIM_DECL(pthread_spin_unlock)
SHIM_DECL(pthread_spin_destroy)

/* ---- barrier ----------------------------------------------------------------------------- */

#define B_FIBERS 30
#define B_PLAIN 2
#define B_CYCLES 200

static pthread_barrier_t bar;
static _Atomic int b_serial[B_CYCLES], b_arrived[B_CYCLES];

static void *b_worker(void *arg)
{
    for (int c = 0; c < B_CYCLES; c++) {
        atomic_fetch_add(&b_arrived[c], 1);
        int rc = shim__pthread_barrier_wait(&bar);
        FCHECK(rc == 0 || rc == PTHREAD_BARRIER_SERIAL_THREAD, "rc %d", rc);
        /* Nobody passes before everyone arrived. */
        FCHECK_EQ(atomic_load(&b_arrived[c]), B_FIBERS + B_PLAIN);
        if (rc == PTHREAD_BARRIER_SERIAL_THREAD)
            atomic_fetch_add(&b_serial[c], 1);
    }
    return NULL;
}

Test(barrier, serial_thread_once_per_cycle_mixed)
{
    start_runtime(2);
    cr_assert_eq(shim__pthread_barrier_init(&bar, NULL, B_FIBERS + B_PLAIN), 0);
    pthread_t t[B_PLAIN];
    for (int i = 0; i < B_PLAIN; i++)
        t[i] = plain_thread(b_worker, NULL);
    run_fibers(B_FIBERS, b_worker, NULL);
    for (int i = 0; i < B_PLAIN; i++)
        plain_join(t[i]);
    for (int c = 0; c < B_CYCLES; c++)
        cr_assert_eq(atomic_load(&b_serial[c]), 1, "cycle %d", c);
    cr_assert_eq(shim__pthread_barrier_destroy(&bar), 0);
}

Test(barrier, counts_like_glibc)
{
    pthread_barrier_t b;
    cr_assert_eq(pthread_barrier_init(&b, NULL, 0), EINVAL);
    cr_assert_eq(shim__pthread_barrier_init(&b, NULL, 0), EINVAL);
    cr_assert_eq(pthread_barrier_init(&b, NULL, INT_MAX), EINVAL);
    cr_assert_eq(shim__pthread_barrier_init(&b, NULL, INT_MAX), EINVAL);
    cr_assert_eq(shim__pthread_barrier_init(&b, NULL, INT_MAX - 1), 0);
    cr_assert_eq(shim__pthread_barrier_init(&b, NULL, 1), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(shim__pthread_barrier_wait(&b), PTHREAD_BARRIER_SERIAL_THREAD);
    cr_assert_eq(shim__pthread_barrier_destroy(&b), 0);
}

static pthread_barrier_t ps_bar;
static _Atomic int ps_serial;

static void *ps_worker(void *arg)
{
    for (int c = 0; c < 5; c++)
        if (shim__pthread_barrier_wait(&ps_bar) == PTHREAD_BARRIER_SERIAL_THREAD)
            atomic_fetch_add(&ps_serial, 1);
    return NULL;
}

Test(barrier, process_shared_stays_glibc)
{
    start_runtime(1); /* one carrier: waiting fibers must not block it */
    pthread_barrierattr_t a;
    pthread_barrierattr_init(&a);
    pthread_barrierattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    cr_assert_eq(shim__pthread_barrier_init(&ps_bar, &a, 5), 0);
    pthread_t t = plain_thread(ps_worker, NULL);
    run_fibers(4, ps_worker, NULL);
    plain_join(t);
    cr_assert_eq(atomic_load(&ps_serial), 5);
    cr_assert_eq(shim__pthread_barrier_destroy(&ps_bar), 0);
}

/* ---- once ------------------------------------------------------------------------------------ */

static pthread_once_t once = PTHREAD_ONCE_INIT;
static _Atomic int once_runs;
static int once_value;

static void once_init(void)
{
    atomic_fetch_add(&once_runs, 1);
    /* Block: park (fiber) or sleep (plain thread) while others arrive. */
    sleep_ns(50000000);
    once_value = 42;
}

static void *once_caller(void *arg)
{
    FCHECK_EQ(shim__pthread_once(&once, once_init), 0);
    FCHECK_EQ(once_value, 42);
    return NULL;
}

Test(once, blocking_routine_runs_once_fibers_first)
{
    start_runtime(2);
    pthread_t t[2] = {plain_thread(once_caller, NULL), plain_thread(once_caller, NULL)};
    run_fibers(200, once_caller, NULL);
    plain_join(t[0]);
    plain_join(t[1]);
    cr_assert_eq(atomic_load(&once_runs), 1);
    cr_assert_eq(once, 2, "done has glibc's value");
}

Test(once, blocking_routine_on_a_plain_thread)
{
    start_runtime(1);
    pthread_t t = plain_thread(once_caller, NULL);
    sleep_ns(10000000);
    run_fibers(100, once_caller, NULL);
    plain_join(t);
    cr_assert_eq(atomic_load(&once_runs), 1);
}

/* Many objects share the waiter buckets: each wakes only its own. */
static pthread_once_t many[200];
static _Atomic int many_runs;

static void many_init(void)
{
    atomic_fetch_add(&many_runs, 1);
    fs_yield();
}

static void *many_caller(void *arg)
{
    for (int i = 0; i < 200; i++)
        FCHECK_EQ(shim__pthread_once(&many[(i + (intptr_t)arg) % 200], many_init), 0);
    return NULL;
}

Test(once, many_objects)
{
    start_runtime(2);
    run_fibers(50, many_caller, NULL);
    cr_assert_eq(atomic_load(&many_runs), 200);
}

/* ---- spinlocks -------------------------------------------------------------------------------- */

static pthread_spinlock_t spin;
static long spin_counter;
static _Atomic int spin_holding;

static void *spin_holder(void *arg)
{
    FCHECK_EQ(shim__pthread_spin_lock(&spin), 0);
    atomic_store(&spin_holding, 1);
    fs_sleep_until(fs_now() + 20000000); /* parked while holding it */
    spin_counter++;
    FCHECK_EQ(shim__pthread_spin_unlock(&spin), 0);
    return NULL;
}

static void *spin_worker(void *arg)
{
    for (int i = 0; i < 1000; i++) {
        FCHECK_EQ(shim__pthread_spin_lock(&spin), 0);
        spin_counter++;
        FCHECK_EQ(shim__pthread_spin_unlock(&spin), 0);
    }
    return NULL;
}

Test(spin, holder_parked_on_the_same_carrier)
{
    start_runtime(1);
    cr_assert_eq(shim__pthread_spin_init(&spin, PTHREAD_PROCESS_PRIVATE), 0);
    fs_fiber *h = spawn(spin_holder, NULL);
    while (!atomic_load(&spin_holding))
        sleep_ns(1000000);
    cr_assert_eq(shim__pthread_spin_trylock(&spin), EBUSY);
    run_fibers(10, spin_worker, NULL);
    join(h);
    cr_assert_eq(spin_counter, 10 * 1000L + 1);
    cr_assert_eq(shim__pthread_spin_destroy(&spin), 0);
}

Test(spin, stress_fibers_and_plain_threads)
{
    start_runtime(2);
    cr_assert_eq(shim__pthread_spin_init(&spin, PTHREAD_PROCESS_SHARED), 0);
    pthread_t t = plain_thread(spin_worker, NULL);
    run_fibers(50, spin_worker, NULL);
    plain_join(t);
    cr_assert_eq(spin_counter, 51 * 1000L);
    cr_assert_eq(shim__pthread_spin_trylock(&spin), 0);
    cr_assert_eq(shim__pthread_spin_trylock(&spin), EBUSY);
    cr_assert_eq(shim__pthread_spin_unlock(&spin), 0);
}
