/*
 * test_futex.c - the futex wait table (futex.c): fibers park on it and
 * plain threads wait in the kernel, on the same words; results and counts
 * are the kernel's. Most scenarios run twice, once with fibers as the
 * waiters (the table) and once with plain threads (the kernel, since the
 * table is then empty), and must give the same results.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fibershim.h"
#include "util.h"

static void start(unsigned carriers)
{
    cr_assert_eq(fs_init(&(struct fs_config){.carriers = carriers}), 0);
}

static uint64_t futex_parks(void)
{
    struct fs_stats st;
    fs_stats_get(&st);
    return st.parks[FS_PARK_FUTEX];
}

/* Whether plain thread tid is blocked in the futex system call. */
static bool in_kernel_futex(pid_t tid)
{
    char path[64], buf[64] = {0};
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    bool yes = fgets(buf, sizeof buf, f) && atoi(buf) == SYS_futex;
    fclose(f);
    return yes;
}

/* ---- waiters of either kind --------------------------------------------- */

struct waiter {
    uint32_t *word;
    uint32_t val, bitset;
    unsigned flags;
    int64_t deadline;
    _Atomic int rc; /* fs_futex_wait's result; INT_MIN while waiting */
    bool fiber;
    fs_fiber *f;
    pthread_t t;
    _Atomic pid_t tid;
};

static void *waiter_main(void *arg)
{
    struct waiter *w = arg;
    atomic_store(&w->tid, test_gettid());
    atomic_store(&w->rc, fs_futex_wait(w->word, w->val, w->bitset, w->flags, w->deadline));
    return NULL;
}

/* Starts a waiter on word (a fiber, or a plain thread) and returns once
 * it waits: parked in the table, or blocked in the kernel. */
static void waiter_start(struct waiter *w, bool fiber, uint32_t *word, uint32_t bitset,
                         unsigned flags)
{
    *w = (struct waiter){.word = word,
                         .val = *word,
                         .bitset = bitset,
                         .flags = flags,
                         .deadline = FS_NO_DEADLINE,
                         .fiber = fiber};
    atomic_store(&w->rc, INT_MIN);
    if (fiber) {
        uint64_t before = futex_parks();
        cr_assert_eq(fs_spawn(&w->f, waiter_main, w, NULL), 0);
        WAIT_FOR(futex_parks() > before, 5000);
        cr_assert(futex_parks() > before, "the fiber never parked");
    } else {
        cr_assert_eq(pthread_create(&w->t, NULL, waiter_main, w), 0);
        WAIT_FOR(atomic_load(&w->tid) && in_kernel_futex(atomic_load(&w->tid)), 5000);
        cr_assert(in_kernel_futex(atomic_load(&w->tid)), "the thread never waited");
    }
}

static bool waiter_done(struct waiter *w)
{
    return atomic_load(&w->rc) != INT_MIN;
}

static int waiter_join(struct waiter *w)
{
    if (w->fiber)
        cr_assert_eq(fs_join(w->f, NULL, FS_NO_DEADLINE), 0);
    else
        cr_assert_eq(pthread_join(w->t, NULL), 0);
    return atomic_load(&w->rc);
}

/* Gives a woken waiter time to finish, and checks exactly `n` of ws did. */
static void expect_done(struct waiter *ws, int count, int n)
{
    int done = 0;
    for (int tries = 0; tries < 2000; tries++) {
        done = 0;
        for (int i = 0; i < count; i++)
            done += waiter_done(&ws[i]);
        if (done >= n)
            break;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    /* A few more milliseconds: nobody beyond n may follow. */
    nanosleep(&(struct timespec){0, 20000000}, NULL);
    done = 0;
    for (int i = 0; i < count; i++)
        done += waiter_done(&ws[i]);
    cr_assert_eq(done, n, "%d waiters returned, expected %d", done, n);
}

/* ---- results without waiting ----------------------------------------------- */

static void *bad_args(void *arg)
{
    (void)arg;
    static uint32_t w[2] __attribute__((aligned(8)));
    uint32_t *odd = (uint32_t *)((char *)w + 1);
    FCHECK(fs_futex_wait(odd, 0, FUTEX_BITSET_MATCH_ANY, 0, FS_NO_DEADLINE) == -EINVAL);
    FCHECK(fs_futex_wait(w, 0, 0, 0, FS_NO_DEADLINE) == -EINVAL);
    FCHECK(fs_futex_wait(w, 1, 0, 0, FS_NO_DEADLINE) == -EINVAL, "EINVAL before EAGAIN");
    FCHECK(fs_futex_wait(w, 1, FUTEX_BITSET_MATCH_ANY, 0, FS_NO_DEADLINE) == -EAGAIN);
    FCHECK(fs_futex_wait(w, 1, FUTEX_BITSET_MATCH_ANY, 0, 0) == -EAGAIN, "EAGAIN before ETIMEDOUT");
    FCHECK(fs_futex_wait(w, 0, FUTEX_BITSET_MATCH_ANY, 0, 0) == -ETIMEDOUT);
    FCHECK(fs_futex_wait(w, 0, FUTEX_BITSET_MATCH_ANY, FS_FUTEX_SHARED, 0) == -ETIMEDOUT);
    FCHECK(fs_futex_wake(odd, 1, FUTEX_BITSET_MATCH_ANY, 0) == -EINVAL);
    FCHECK(fs_futex_wake(w, 1, 0, 0) == -EINVAL);
    FCHECK(fs_futex_wake(w, 1, FUTEX_BITSET_MATCH_ANY, 0) == 0);
    FCHECK(fs_futex_requeue(w, -1, 1, w + 1, NULL, 0) == -EINVAL);
    FCHECK(fs_futex_requeue(w, 1, -1, w + 1, NULL, 0) == -EINVAL);
    FCHECK(fs_futex_requeue(w, 1, 1, odd, NULL, 0) == -EINVAL);
    uint32_t other = 7;
    FCHECK(fs_futex_requeue(w, 1, 1, w + 1, &other, 0) == -EAGAIN);
    FCHECK(fs_futex_requeue(w, 1, 1, w + 1, &w[0], 0) == 0);
    /* Unknown operation: ENOSYS, word unchanged. Unknown comparison:
     * ENOSYS after the operation, as the kernel does. */
    w[1] = 5;
    FCHECK(fs_futex_wake_op(w, 1, w + 1, 1, (6u << 28) | (1 << 12), 0) == -ENOSYS);
    FCHECK(w[1] == 5);
    FCHECK(fs_futex_wake_op(w, 1, w + 1, 1, (FUTEX_OP_ADD << 28) | (9u << 24) | (1 << 12), 0) ==
           -ENOSYS);
    FCHECK(w[1] == 6);
    FCHECK(fs_futex_wake_op(odd, 1, w + 1, 1, 0, 0) == -EINVAL);
    /* The operations and the shift flag (the kernel masks a bad shift). */
    FCHECK(fs_futex_wake_op(w, 1, w + 1, 1, FUTEX_OP(FUTEX_OP_SET, 3, FUTEX_OP_CMP_EQ, 0), 0) == 0);
    FCHECK(w[1] == 3);
    FCHECK(fs_futex_wake_op(w, 1, w + 1, 1, FUTEX_OP(FUTEX_OP_OR, 4, 0, 0), 0) == 0 && w[1] == 7);
    FCHECK(fs_futex_wake_op(w, 1, w + 1, 1, FUTEX_OP(FUTEX_OP_ANDN, 2, 0, 0), 0) == 0 && w[1] == 5);
    FCHECK(fs_futex_wake_op(w, 1, w + 1, 1, FUTEX_OP(FUTEX_OP_XOR, 1, 0, 0), 0) == 0 && w[1] == 4);
    FCHECK(fs_futex_wake_op(w, 1, w + 1, 1, FUTEX_OP(FUTEX_OP_ADD, (-6 & 0xfff), 0, 0), 0) == 0 &&
           w[1] == (uint32_t)-2);
    FCHECK(fs_futex_wake_op(
               w, 1, w + 1, 1,
               ((uint32_t)FUTEX_OP_OPARG_SHIFT << 28) | FUTEX_OP(FUTEX_OP_SET, 40, 0, 0), 0) == 0 &&
           w[1] == 256);
    return NULL;
}

Test(futex, results_without_waiting_on_a_fiber)
{
    start(1);
    run_in_fiber(bad_args, NULL);
}

Test(futex, results_without_waiting_on_a_plain_thread)
{
    start(1);
    bad_args(NULL);
    FCHECK_REPORT();
}

/* ---- deadlines ----------------------------------------------------------- */

static void *timeouts(void *arg)
{
    (void)arg;
    uint32_t w = 0;
    int64_t t0 = fs_now();
    FCHECK(fs_futex_wait(&w, 0, FUTEX_BITSET_MATCH_ANY, 0, t0 + 20 * MS) == -ETIMEDOUT);
    FCHECK(fs_now() >= t0 + 20 * MS, "monotonic deadline: returned early");
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    int64_t rdl = (int64_t)rt.tv_sec * 1000000000 + rt.tv_nsec + 20 * MS;
    FCHECK(fs_futex_wait(&w, 0, FUTEX_BITSET_MATCH_ANY, FS_FUTEX_REALTIME, rdl) == -ETIMEDOUT);
    clock_gettime(CLOCK_REALTIME, &rt);
    FCHECK((int64_t)rt.tv_sec * 1000000000 + rt.tv_nsec >= rdl, "realtime deadline: early");
    /* A deadline long past: compared first, then ETIMEDOUT. */
    FCHECK(fs_futex_wait(&w, 0, FUTEX_BITSET_MATCH_ANY, FS_FUTEX_REALTIME, 1) == -ETIMEDOUT);
    return NULL;
}

Test(futex, deadlines_on_both_clocks_fiber)
{
    start(1);
    run_in_fiber(timeouts, NULL);
}

Test(futex, deadlines_on_both_clocks_plain_thread)
{
    start(1);
    timeouts(NULL);
    FCHECK_REPORT();
}

/* ---- wake counts, bitsets, keys -------------------------------------------- */

static void wake_counts(bool fiber)
{
    static uint32_t w;
    struct waiter ws[5];
    for (int i = 0; i < 5; i++)
        waiter_start(&ws[i], fiber, &w, FUTEX_BITSET_MATCH_ANY, 0);
    cr_assert_eq(fs_futex_wake(&w, 0, FUTEX_BITSET_MATCH_ANY, 0), 1, "n = 0 wakes one");
    expect_done(ws, 5, 1);
    cr_assert_eq(fs_futex_wake(&w, -3, FUTEX_BITSET_MATCH_ANY, 0), 1, "n < 0 wakes one");
    cr_assert_eq(fs_futex_wake(&w, 2, FUTEX_BITSET_MATCH_ANY, 0), 2);
    expect_done(ws, 5, 4);
    cr_assert_eq(fs_futex_wake(&w, INT_MAX, FUTEX_BITSET_MATCH_ANY, 0), 1);
    cr_assert_eq(fs_futex_wake(&w, INT_MAX, FUTEX_BITSET_MATCH_ANY, 0), 0);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(waiter_join(&ws[i]), 0);
}

Test(futex, wake_counts_fibers)
{
    start(2);
    wake_counts(true);
}

Test(futex, wake_counts_plain_threads)
{
    start(2);
    wake_counts(false);
}

static void bitsets_and_keys(bool fiber)
{
    static uint32_t w;
    struct waiter ws[4];
    waiter_start(&ws[0], fiber, &w, 1, 0);
    waiter_start(&ws[1], fiber, &w, 2, 0);
    waiter_start(&ws[2], fiber, &w, 3, 0);
    waiter_start(&ws[3], fiber, &w, FUTEX_BITSET_MATCH_ANY, FS_FUTEX_SHARED);
    /* A private wake never reaches a waiter keyed as shared. */
    cr_assert_eq(fs_futex_wake(&w, INT_MAX, 4, 0), 0);
    cr_assert_eq(fs_futex_wake(&w, INT_MAX, 2, 0), 2);
    expect_done(ws, 4, 2);
    cr_assert(waiter_done(&ws[1]) && waiter_done(&ws[2]));
    cr_assert_eq(fs_futex_wake(&w, INT_MAX, FUTEX_BITSET_MATCH_ANY, 0), 1);
    cr_assert_eq(fs_futex_wake(&w, INT_MAX, FUTEX_BITSET_MATCH_ANY, FS_FUTEX_SHARED), 1);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(waiter_join(&ws[i]), 0);
}

Test(futex, bitsets_and_private_shared_keys_fibers)
{
    start(2);
    bitsets_and_keys(true);
}

Test(futex, bitsets_and_private_shared_keys_plain_threads)
{
    start(2);
    bitsets_and_keys(false);
}

/* A fiber in the table and a thread in the kernel on one word: a wake
 * takes the table's first and hands what is left of its count on. */
Test(futex, table_and_kernel_waiters_share_a_word)
{
    start(2);
    static uint32_t w;
    struct waiter ws[4];
    waiter_start(&ws[0], false, &w, FUTEX_BITSET_MATCH_ANY, 0);
    waiter_start(&ws[1], true, &w, FUTEX_BITSET_MATCH_ANY, 0);
    cr_assert_eq(fs_futex_wake(&w, 1, FUTEX_BITSET_MATCH_ANY, 0), 1);
    expect_done(ws, 2, 1);
    cr_assert(waiter_done(&ws[1]), "the table's waiter goes first");
    cr_assert_eq(fs_futex_wake(&w, 1, FUTEX_BITSET_MATCH_ANY, 0), 1);
    expect_done(ws, 2, 2);
    waiter_start(&ws[2], true, &w, FUTEX_BITSET_MATCH_ANY, 0);
    waiter_start(&ws[3], false, &w, FUTEX_BITSET_MATCH_ANY, 0);
    cr_assert_eq(fs_futex_wake(&w, 5, FUTEX_BITSET_MATCH_ANY, 0), 2);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(waiter_join(&ws[i]), 0);
}

/* ---- requeue and wake-op ------------------------------------------------- */

static void requeue(bool fiber)
{
    static uint32_t a, b;
    struct waiter ws[5];
    for (int i = 0; i < 5; i++)
        waiter_start(&ws[i], fiber, &a, FUTEX_BITSET_MATCH_ANY, 0);
    uint32_t wrong = 9;
    cr_assert_eq(fs_futex_requeue(&a, 1, 2, &b, &wrong, 0), -EAGAIN);
    cr_assert_eq(fs_futex_requeue(&a, 1, 2, &b, &a, 0), 3, "one woken + two moved");
    expect_done(ws, 5, 1);
    cr_assert_eq(fs_futex_requeue(&a, 0, 1, &b, NULL, 0), 1, "one moved");
    cr_assert_eq(fs_futex_wake(&a, INT_MAX, FUTEX_BITSET_MATCH_ANY, 0), 1);
    expect_done(ws, 5, 2);
    cr_assert_eq(fs_futex_wake(&b, INT_MAX, FUTEX_BITSET_MATCH_ANY, 0), 3);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(waiter_join(&ws[i]), 0);
}

Test(futex, requeue_fibers)
{
    start(2);
    requeue(true);
}

Test(futex, requeue_plain_threads)
{
    start(2);
    requeue(false);
}

static void wake_op(bool fiber)
{
    static uint32_t a, b;
    struct waiter ws[6];
    for (int i = 0; i < 3; i++)
        waiter_start(&ws[i], fiber, &a, FUTEX_BITSET_MATCH_ANY, 0);
    for (int i = 3; i < 6; i++)
        waiter_start(&ws[i], fiber, &b, FUTEX_BITSET_MATCH_ANY, 0);
    /* b was 0: the comparison holds, one woken on each (n = 0 wakes one). */
    cr_assert_eq(fs_futex_wake_op(&a, 0, &b, 0, FUTEX_OP(FUTEX_OP_ADD, 1, FUTEX_OP_CMP_EQ, 0), 0),
                 2);
    cr_assert_eq(b, 1);
    expect_done(ws, 6, 2);
    /* b was 1: it fails, only a's waiter. */
    cr_assert_eq(fs_futex_wake_op(&a, 1, &b, 5, FUTEX_OP(FUTEX_OP_ADD, 1, FUTEX_OP_CMP_EQ, 0), 0),
                 1);
    expect_done(ws, 6, 3);
    cr_assert_eq(fs_futex_wake_op(&a, INT_MAX, &b, INT_MAX,
                                  FUTEX_OP(FUTEX_OP_SET, 0, FUTEX_OP_CMP_GT, 1), 0),
                 3, "b was 2: 1 of a's left, 2 of b's");
    for (int i = 0; i < 6; i++)
        cr_assert_eq(waiter_join(&ws[i]), 0);
}

Test(futex, wake_op_fibers)
{
    start(2);
    wake_op(true);
}

Test(futex, wake_op_plain_threads)
{
    start(2);
    wake_op(false);
}

/* ---- interrupts, timeouts against wakes -------------------------------------- */

Test(futex, interrupt_ends_the_wait)
{
    start(1);
    static uint32_t w;
    struct waiter ws;
    waiter_start(&ws, true, &w, FUTEX_BITSET_MATCH_ANY, 0);
    fs_interrupt(ws.f);
    cr_assert_eq(waiter_join(&ws), -EINTR);
    cr_assert_eq(fs_futex_wake(&w, 1, FUTEX_BITSET_MATCH_ANY, 0), 0, "it left the table");
}

/* Short timeouts racing wakes from another carrier: every wait ends once,
 * either woken (counted by exactly one wake) or timed out (counted by
 * none), and no wake is lost: the wake counts add up to the waits that
 * returned 0. */
struct race {
    _Atomic uint32_t word;
    _Atomic int stop;
    _Atomic long woken_by_waker, zero_returns;
};

static void *race_waiter(void *arg)
{
    struct race *r = arg;
    for (int i = 0; i < 20000; i++) {
        int rc = fs_futex_wait((uint32_t *)&r->word, 0, FUTEX_BITSET_MATCH_ANY, 0,
                               fs_now() + (i % 7) * 1000);
        FCHECK(rc == 0 || rc == -ETIMEDOUT || rc == -EAGAIN, "rc %d", rc);
        if (rc == 0)
            atomic_fetch_add(&r->zero_returns, 1);
    }
    return NULL;
}

static void *race_waker(void *arg)
{
    struct race *r = arg;
    while (!atomic_load(&r->stop)) {
        int n = fs_futex_wake((uint32_t *)&r->word, 1, FUTEX_BITSET_MATCH_ANY, 0);
        FCHECK(n == 0 || n == 1, "woke %d", n);
        atomic_fetch_add(&r->woken_by_waker, n);
        if (!n)
            fs_yield();
    }
    return NULL;
}

Test(futex, timeouts_race_wakes)
{
    start(2);
    static struct race r;
    fs_fiber *w[3], *k;
    cr_assert_eq(fs_spawn(&k, race_waker, &r, NULL), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(fs_spawn(&w[i], race_waiter, &r, NULL), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(fs_join(w[i], NULL, FS_NO_DEADLINE), 0);
    atomic_store(&r.stop, 1);
    cr_assert_eq(fs_join(k, NULL, FS_NO_DEADLINE), 0);
    FCHECK_REPORT();
    cr_assert_eq(atomic_load(&r.woken_by_waker), atomic_load(&r.zero_returns));
}

/* ---- many ------------------------------------------------------------------ */

#define MANY 10000

static uint32_t many_words[MANY];
static _Atomic int many_waiting;

static void *many_waiter(void *arg)
{
    uint32_t *w = arg;
    atomic_fetch_add(&many_waiting, 1);
    while (__atomic_load_n(w, __ATOMIC_ACQUIRE) == 0) {
        int rc = fs_futex_wait(w, 0, FUTEX_BITSET_MATCH_ANY, 0, FS_NO_DEADLINE);
        FCHECK(rc == 0 || rc == -EAGAIN, "rc %d", rc);
    }
    return NULL;
}

/* 10,000 fibers wait on 10,000 words at once, on two carriers, and a
 * plain thread wakes them one by one. */
Test(futex, ten_thousand_fibers_on_ten_thousand_words)
{
    start(2);
    static fs_fiber *f[MANY];
    struct fs_spawn_attr attr = {.stack_size = 64 * 1024};
    uint64_t before = futex_parks();
    for (int i = 0; i < MANY; i++)
        cr_assert_eq(fs_spawn(&f[i], many_waiter, &many_words[i], &attr), 0);
    WAIT_FOR(futex_parks() - before >= MANY, 30000);
    cr_assert_geq(futex_parks() - before, MANY, "only %llu parked",
                  (unsigned long long)(futex_parks() - before));
    long woken = 0;
    for (int i = 0; i < MANY; i++) {
        __atomic_store_n(&many_words[i], 1, __ATOMIC_RELEASE);
        woken += fs_futex_wake(&many_words[i], 1, FUTEX_BITSET_MATCH_ANY, 0);
    }
    for (int i = 0; i < MANY; i++)
        cr_assert_eq(fs_join(f[i], NULL, FS_NO_DEADLINE), 0);
    FCHECK_REPORT();
    cr_assert_eq(woken, MANY);
}
