/*
 * test_runq.c - the run queues of runq.c, driven directly: the stealable
 * ring (owner FIFO, bounded, concurrent thieves, index wrap-around), the
 * owner FIFO, and the multi-producer inbox.
 *
 * The ring only stores pointers, so its tests use distinct fake fiber
 * addresses; the FIFO and the inbox link through fs_fiber.next and need
 * real structs.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Distinct, never dereferenced addresses: i -> 0x10000 + 8 i. */
static struct fs_fiber *fake(uintptr_t i)
{
    return (struct fs_fiber *)(0x10000 + i * 8);
}
static uintptr_t fake_index(struct fs_fiber *f)
{
    return ((uintptr_t)f - 0x10000) / 8;
}

static void ring_at(struct fs_ring *r, uint32_t start)
{
    memset(r, 0, sizeof *r);
    atomic_store(&r->head, start);
    atomic_store(&r->tail, start);
}

/* ---- ring, one owner ------------------------------------------------------ */

Test(runq, ring_is_fifo_for_its_owner)
{
    static struct fs_ring r;
    ring_at(&r, 0);
    cr_assert_null(fs__ring_pop(&r));
    for (uintptr_t i = 0; i < 100; i++)
        cr_assert(fs__ring_push(&r, fake(i)));
    cr_assert_eq(fs__ring_len(&r), 100);
    for (uintptr_t i = 0; i < 100; i++)
        cr_assert_eq(fs__ring_pop(&r), fake(i));
    cr_assert_null(fs__ring_pop(&r));
    cr_assert_eq(fs__ring_len(&r), 0);
}

Test(runq, ring_is_bounded_at_256)
{
    static struct fs_ring r;
    ring_at(&r, 0);
    for (uintptr_t i = 0; i < FS_RING_SIZE; i++)
        cr_assert(fs__ring_push(&r, fake(i)), "push %lu refused", (unsigned long)i);
    cr_assert_eq(fs__ring_len(&r), 256);
    cr_assert_not(fs__ring_push(&r, fake(999)), "push into a full ring");
    cr_assert_eq(fs__ring_pop(&r), fake(0));
    cr_assert(fs__ring_push(&r, fake(256)));
    cr_assert_not(fs__ring_push(&r, fake(999)));
    for (uintptr_t i = 1; i <= FS_RING_SIZE; i++)
        cr_assert_eq(fs__ring_pop(&r), fake(i));
    cr_assert_null(fs__ring_pop(&r));
}

Test(runq, ring_indices_wrap_around)
{
    /* head and tail are free-running 32-bit counters: start just below
     * the wrap and push/pop across it. */
    static struct fs_ring r;
    ring_at(&r, UINT32_MAX - 100);
    uintptr_t next_in = 0, next_out = 0;
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < 37; i++)
            cr_assert(fs__ring_push(&r, fake(next_in++)));
        for (int i = 0; i < 33; i++)
            cr_assert_eq(fs__ring_pop(&r), fake(next_out++));
    }
    cr_assert_eq(fs__ring_len(&r), next_in - next_out);
    while (next_out < next_in)
        cr_assert_eq(fs__ring_pop(&r), fake(next_out++));
    cr_assert_null(fs__ring_pop(&r));
}

Test(runq, steal_takes_half_in_order)
{
    static struct fs_ring victim, into;
    ring_at(&victim, 0);
    ring_at(&into, 1000);
    for (uintptr_t i = 0; i < 10; i++)
        cr_assert(fs__ring_push(&victim, fake(i)));
    uint32_t got = 0;
    struct fs_fiber *run = fs__ring_steal(&victim, &into, &got);
    /* Half of 10, from the head: 0..4; the last one is returned to run. */
    cr_assert_eq(got, 5);
    cr_assert_eq(run, fake(4));
    cr_assert_eq(fs__ring_len(&into), 4);
    for (uintptr_t i = 0; i < 4; i++)
        cr_assert_eq(fs__ring_pop(&into), fake(i));
    cr_assert_eq(fs__ring_len(&victim), 5);
    cr_assert_eq(fs__ring_pop(&victim), fake(5));
    /* One left over: stolen alone (half rounded up), nothing queued. */
    ring_at(&victim, 7);
    cr_assert(fs__ring_push(&victim, fake(42)));
    cr_assert_eq(fs__ring_steal(&victim, &into, &got), fake(42));
    cr_assert_eq(got, 1);
    cr_assert_eq(fs__ring_len(&into), 0);
    cr_assert_null(fs__ring_steal(&victim, &into, &got));
    cr_assert_eq(got, 0);
}

/* ---- ring, owner against thieves ------------------------------------------ */

enum { STRESS_N = 2000000, THIEVES = 2 };

static struct fs_ring owner_ring;
static _Atomic uint8_t seen[STRESS_N];
static _Atomic int owner_done;
static _Atomic uint64_t taken_by[THIEVES + 1];
static _Atomic uint64_t garbage; /* pointers that were never pushed */

/* Counts f as taken by `who` (0: the owner). Runs on the thieves' threads
 * too, so it records rather than asserts (cr_assert must fail on the test
 * thread). */
static void take(struct fs_fiber *f, int who)
{
    uintptr_t i = fake_index(f);
    if ((uintptr_t)f < 0x10000 || i >= STRESS_N) {
        atomic_fetch_add(&garbage, 1);
        return;
    }
    atomic_fetch_add(&seen[i], 1);
    atomic_fetch_add(&taken_by[who], 1);
}

static void *thief(void *arg)
{
    int who = (int)(intptr_t)arg;
    static struct fs_ring rings[THIEVES];
    struct fs_ring *mine = &rings[who - 1];
    ring_at(mine, (uint32_t)who * 0x7fffff00u); /* wraps during the run */
    for (;;) {
        bool done = atomic_load(&owner_done);
        uint32_t got;
        struct fs_fiber *f = fs__ring_steal(&owner_ring, mine, &got);
        if (f) {
            take(f, who);
            /* The thief owns its ring: drain what came with the steal. */
            for (struct fs_fiber *g; (g = fs__ring_pop(mine));)
                take(g, who);
        } else if (done) {
            return NULL;
        }
    }
}

Test(runq, steal_stress_takes_each_fiber_exactly_once, .timeout = 120)
{
    ring_at(&owner_ring, UINT32_MAX - 1000);
    pthread_t t[THIEVES];
    for (int i = 0; i < THIEVES; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, thief, (void *)(intptr_t)(i + 1)), 0);
    uint32_t rng = 1;
    for (uintptr_t i = 0; i < STRESS_N;) {
        rng = rng * 1664525u + 1013904223u;
        /* Bursts of pushes, then a few pops, like a carrier that spawns
         * and runs. */
        unsigned burst = 1 + (rng >> 8) % 64;
        for (unsigned k = 0; k < burst && i < STRESS_N; k++) {
            if (!fs__ring_push(&owner_ring, fake(i))) {
                struct fs_fiber *f = fs__ring_pop(&owner_ring);
                if (f)
                    take(f, 0);
                continue; /* retry item i */
            }
            i++;
        }
        /* The last burst stays queued (see below). */
        unsigned pops = i < STRESS_N ? (rng >> 16) % 32 : 0;
        for (unsigned k = 0; k < pops; k++) {
            struct fs_fiber *f = fs__ring_pop(&owner_ring);
            if (!f)
                break;
            take(f, 0);
        }
    }
    /* On a loaded machine the thieves may not have run at all yet: give
     * them the last burst (up to 10 s) before the owner drains it, so
     * that steals racing the owner are always tested. */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (atomic_load(&taken_by[1]) + atomic_load(&taken_by[2]) == 0 &&
           fs__ring_len(&owner_ring) > 0) {
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (t1.tv_sec - t0.tv_sec > 10)
            break;
        sched_yield();
    }
    for (struct fs_fiber *f; (f = fs__ring_pop(&owner_ring));)
        take(f, 0);
    atomic_store(&owner_done, 1);
    for (int i = 0; i < THIEVES; i++)
        cr_assert_eq(pthread_join(t[i], NULL), 0);
    cr_assert_eq(atomic_load(&garbage), 0, "took pointers that were never pushed");
    for (uintptr_t i = 0; i < STRESS_N; i++)
        if (atomic_load(&seen[i]) != 1)
            cr_assert_fail("item %lu taken %u times", (unsigned long)i, atomic_load(&seen[i]));
    cr_log_info("owner %lu, thieves %lu + %lu", (unsigned long)taken_by[0],
                (unsigned long)taken_by[1], (unsigned long)taken_by[2]);
    cr_assert_gt(taken_by[1] + taken_by[2], 0, "no steal succeeded: nothing was tested");
}

/* ---- fifo ------------------------------------------------------------------- */

Test(runq, fifo_push_pop_append)
{
    static struct fs_fiber f[10];
    struct fs_fifo q = {0};
    cr_assert_null(fs__fifo_pop(&q));
    for (int i = 0; i < 5; i++)
        fs__fifo_push(&q, &f[i]);
    cr_assert_eq(q.len, 5);
    /* Append the list f[5] -> ... -> f[9]. */
    for (int i = 5; i < 9; i++)
        f[i].next = &f[i + 1];
    fs__fifo_append(&q, &f[5], &f[9], 5);
    cr_assert_eq(q.len, 10);
    for (int i = 0; i < 10; i++) {
        struct fs_fiber *g = fs__fifo_pop(&q);
        cr_assert_eq(g, &f[i]);
        cr_assert_null(g->next);
    }
    cr_assert_null(fs__fifo_pop(&q));
    cr_assert_eq(q.len, 0);
    cr_assert_null(q.tail);
    fs__fifo_append(&q, &f[3], &f[3], 1); /* into an empty queue */
    cr_assert_eq(fs__fifo_pop(&q), &f[3]);
}

/* ---- inbox ------------------------------------------------------------------ */

enum { PRODUCERS = 4, PER_PRODUCER = 100000 };

static struct fs_inbox inbox;
static struct fs_fiber *inbox_fibers;

static void *producer(void *arg)
{
    int p = (int)(intptr_t)arg;
    for (int i = 0; i < PER_PRODUCER; i++)
        fs__inbox_push(&inbox, &inbox_fibers[p * PER_PRODUCER + i]);
    return NULL;
}

Test(runq, inbox_keeps_each_producers_order_and_loses_nothing, .timeout = 120)
{
    inbox_fibers = calloc(PRODUCERS * PER_PRODUCER, sizeof *inbox_fibers);
    cr_assert_not_null(inbox_fibers);
    cr_assert(fs__inbox_empty(&inbox));
    cr_assert(fs__inbox_push(&inbox, &inbox_fibers[0]), "push into empty said not empty");
    cr_assert_not(fs__inbox_push(&inbox, &inbox_fibers[1]));
    struct fs_fifo q = {0};
    cr_assert_eq(fs__inbox_drain(&inbox, &q), 2);
    cr_assert_eq(fs__fifo_pop(&q), &inbox_fibers[0]);
    cr_assert_eq(fs__fifo_pop(&q), &inbox_fibers[1]);
    cr_assert(fs__inbox_empty(&inbox));
    cr_assert_eq(fs__inbox_drain(&inbox, &q), 0);

    pthread_t t[PRODUCERS];
    for (int p = 0; p < PRODUCERS; p++)
        cr_assert_eq(pthread_create(&t[p], NULL, producer, (void *)(intptr_t)p), 0);
    int next[PRODUCERS] = {0};
    long total = 0;
    while (total < PRODUCERS * PER_PRODUCER) {
        if (!fs__inbox_drain(&inbox, &q))
            continue;
        for (struct fs_fiber *f; (f = fs__fifo_pop(&q));) {
            long idx = f - inbox_fibers;
            cr_assert(idx >= 0 && idx < PRODUCERS * PER_PRODUCER, "garbage %p", (void *)f);
            int p = (int)(idx / PER_PRODUCER), seq = (int)(idx % PER_PRODUCER);
            if (seq != next[p])
                cr_assert_fail("producer %d: got %d, expected %d", p, seq, next[p]);
            next[p]++;
            total++;
        }
    }
    for (int p = 0; p < PRODUCERS; p++)
        cr_assert_eq(pthread_join(t[p], NULL), 0);
    cr_assert(fs__inbox_empty(&inbox));
    for (int p = 0; p < PRODUCERS; p++)
        cr_assert_eq(next[p], PER_PRODUCER);
    free(inbox_fibers);
}
