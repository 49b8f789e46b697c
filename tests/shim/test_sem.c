/*
 * test_sem.c - shim/sem.c: fiber-aware unnamed semaphores; named and
 * process-shared ones stay glibc's.
 */
#include "sync_util.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <unistd.h>

SHIM_DECL(sem_init)
SHIM_DECL(sem_destroy)
SHIM_DECL(sem_wait)
SHIM_DECL(sem_trywait)
SHIM_DECL(sem_timedwait)
SHIM_DECL(sem_clockwait)
SHIM_DECL(sem_post)
SHIM_DECL(sem_getvalue)

struct sem_ops {
    int (*init)(sem_t *, int, unsigned);
    int (*wait)(sem_t *);
    int (*trywait)(sem_t *);
    int (*timedwait)(sem_t *, const struct timespec *);
    int (*clockwait)(sem_t *, clockid_t, const struct timespec *);
    int (*post)(sem_t *);
    int (*getvalue)(sem_t *, int *);
    int (*destroy)(sem_t *);
};
static const struct sem_ops glibc_ops = {sem_init,      sem_wait, sem_trywait,  sem_timedwait,
                                         sem_clockwait, sem_post, sem_getvalue, sem_destroy};
static const struct sem_ops shim_ops = {
    shim__sem_init,      shim__sem_wait, shim__sem_trywait,  shim__sem_timedwait,
    shim__sem_clockwait, shim__sem_post, shim__sem_getvalue, shim__sem_destroy};

/* Each step records the result and errno (result * 1000 + errno). */
#define S(expr) (errno = 0, v[n] = (expr), v[n] = v[n] * 1000 + (v[n] ? errno : 0), n++)

static int scenario(const struct sem_ops *o, int *v)
{
    int n = 0, val;
    sem_t s;
    struct timespec bad = abs_in(CLOCK_REALTIME, 0), good = bad, mono = abs_in(CLOCK_MONOTONIC, 0);
    bad.tv_nsec = 1000000000;
    S(o->init(&s, 0, (unsigned)SEM_VALUE_MAX + 1u)); /* EINVAL */
    S(o->init(&s, 0, 1));
    S(o->timedwait(&s, &bad));            /* EINVAL even with a unit */
    S(o->clockwait(&s, 99, &good));       /* EINVAL */
    S(o->clockwait(&s, CLOCK_PROCESS_CPUTIME_ID, &good));
    S(o->getvalue(&s, &val));
    v[n++] = val;                         /* still 1 */
    S(o->trywait(&s));
    S(o->trywait(&s));                    /* EAGAIN */
    S(o->timedwait(&s, &bad));            /* EINVAL */
    S(o->timedwait(&s, &good));           /* ETIMEDOUT */
    S(o->clockwait(&s, CLOCK_MONOTONIC, &mono));
    bad.tv_sec = -1;
    bad.tv_nsec = 0;
    S(o->timedwait(&s, &bad));            /* ETIMEDOUT */
    S(o->post(&s));
    S(o->post(&s));
    S(o->getvalue(&s, &val));
    v[n++] = val;
    S(o->wait(&s));
    S(o->wait(&s));
    S(o->destroy(&s));
    S(o->init(&s, 0, SEM_VALUE_MAX));
    S(o->post(&s));                       /* EOVERFLOW */
    S(o->getvalue(&s, &val));
    v[n++] = val == SEM_VALUE_MAX;
    S(o->trywait(&s));
    S(o->post(&s));
    S(o->destroy(&s));
    return n;
}

static int shim_v[64], shim_n;
static void *shim_scenario(void *arg)
{
    shim_n = scenario(&shim_ops, shim_v);
    return NULL;
}

Test(sem, conformance_matches_glibc)
{
    int glibc_v[64];
    int n = scenario(&glibc_ops, glibc_v);
    cr_expect_eq(glibc_v[0], -1000 + EINVAL);
    cr_expect_eq(glibc_v[2], -1000 + EINVAL);
    cr_expect_eq(glibc_v[9], -1000 + EINVAL);
    cr_expect_eq(glibc_v[10], -1000 + ETIMEDOUT);
    cr_expect_eq(glibc_v[21], -1000 + EOVERFLOW);
    start_runtime(2);
    join(spawn(shim_scenario, NULL));
    shim_scenario(NULL); /* and on a plain thread */
    cr_assert_eq(shim_n, n);
    for (int i = 0; i < n; i++)
        cr_expect_eq(shim_v[i], glibc_v[i], "step %d: shim %d glibc %d", i, shim_v[i], glibc_v[i]);
}

/* ---- producer/consumer stress, fibers and plain threads ------------------------------- */

static sem_t items, slots;
static _Atomic long consumed, produced_sum;
#define PER_PRODUCER 5000

static void *producer(void *arg)
{
    for (int i = 1; i <= PER_PRODUCER; i++) {
        FCHECK_EQ(shim__sem_wait(&slots), 0);
        atomic_fetch_add(&produced_sum, i);
        FCHECK_EQ(shim__sem_post(&items), 0);
    }
    return NULL;
}

static void *consumer(void *arg)
{
    for (;;) {
        struct timespec abs = abs_in(CLOCK_MONOTONIC, 200000000);
        int rc = shim__sem_clockwait(&items, CLOCK_MONOTONIC, &abs);
        if (rc != 0) {
            FCHECK_EQ(errno, ETIMEDOUT);
            return NULL; /* drained */
        }
        atomic_fetch_add(&consumed, 1);
        FCHECK_EQ(shim__sem_post(&slots), 0);
    }
}

Test(sem, producers_and_consumers_mixed)
{
    start_runtime(2);
    cr_assert_eq(shim__sem_init(&items, 0, 0), 0);
    cr_assert_eq(shim__sem_init(&slots, 0, 16), 0);
    enum { P = 8, C = 40 };
    fs_fiber *f[P + C];
    for (int i = 0; i < C; i++)
        f[i] = spawn(consumer, NULL);
    for (int i = 0; i < P; i++)
        f[C + i] = spawn(producer, NULL);
    pthread_t t[2] = {plain_thread(producer, NULL), plain_thread(consumer, NULL)};
    for (int i = 0; i < P + C; i++)
        join(f[i]);
    plain_join(t[0]);
    plain_join(t[1]);
    cr_assert_eq(atomic_load(&consumed), (P + 1) * (long)PER_PRODUCER);
    int v;
    cr_assert_eq(shim__sem_getvalue(&items, &v), 0);
    cr_assert_eq(v, 0);
    cr_assert_eq(shim__sem_getvalue(&slots, &v), 0);
    cr_assert_eq(v, 16);
}

/* ---- timed waits never early --------------------------------------------------------- */

static sem_t empty;

static void *timed_main(void *arg)
{
    clockid_t c = (clockid_t)(intptr_t)arg;
    struct timespec abs = abs_in(c, 40000000);
    int rc = c == CLOCK_REALTIME ? shim__sem_timedwait(&empty, &abs)
                                 : shim__sem_clockwait(&empty, c, &abs);
    FCHECK_EQ(rc, -1);
    FCHECK_EQ(errno, ETIMEDOUT);
    check_on_time(c, &abs);
    return NULL;
}

Test(sem, timedwait_both_clocks_not_early)
{
    start_runtime(2);
    cr_assert_eq(shim__sem_init(&empty, 0, 0), 0);
    for (int i = 0; i < 3; i++) {
        fs_fiber *f[2] = {spawn(timed_main, (void *)(intptr_t)CLOCK_REALTIME),
                          spawn(timed_main, (void *)(intptr_t)CLOCK_MONOTONIC)};
        pthread_t t = plain_thread(timed_main, (void *)(intptr_t)CLOCK_REALTIME);
        join(f[0]);
        join(f[1]);
        plain_join(t);
    }
}

/* ---- glibc's: process-shared and named ------------------------------------------------- */

static sem_t *ext;

static void *ext_waiter(void *arg)
{
    FCHECK_EQ(shim__sem_wait(ext), 0);
    return NULL;
}

static void run_external(void)
{
    fs_fiber *f[5];
    for (int i = 0; i < 5; i++)
        f[i] = spawn(ext_waiter, NULL);
    pthread_t t = plain_thread(ext_waiter, NULL);
    sleep_ns(20000000);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(shim__sem_post(ext), 0);
    for (int i = 0; i < 5; i++)
        join(f[i]);
    plain_join(t);
    int v;
    cr_assert_eq(shim__sem_getvalue(ext, &v), 0);
    cr_assert_eq(v, 0);
    cr_assert_eq(shim__sem_trywait(ext), -1);
    cr_assert_eq(errno, EAGAIN);
}

Test(sem, process_shared_stays_glibc)
{
    start_runtime(2);
    static sem_t s;
    cr_assert_eq(shim__sem_init(&s, 0, 0), 0); /* ours first, then re-made shared */
    cr_assert_eq(shim__sem_init(&s, 1, 0), 0);
    ext = &s;
    run_external();
    cr_assert_eq(shim__sem_destroy(&s), 0);
}

Test(sem, named_semaphore_goes_to_glibc)
{
    start_runtime(2);
    char name[64];
    snprintf(name, sizeof name, "/fibershim-test-%d", (int)getpid());
    ext = sem_open(name, O_CREAT | O_EXCL, 0600, 0);
    cr_assert_neq(ext, SEM_FAILED);
    sem_unlink(name);
    run_external();
    sem_close(ext);
}
