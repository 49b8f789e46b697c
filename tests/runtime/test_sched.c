/*
 * test_sched.c - the scheduler (sched.c, fiber.c): spawn and join at
 * scale, yield fairness, every fiber runs exactly once under concurrent
 * spawning, join and detach semantics, errno per fiber, pinning of started
 * fibers, stealing between carriers, and frugal carrier wake-ups.
 *
 * Each test runs in its own process and starts the runtime with the
 * carrier count it needs.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "fibershim.h"
#include "util.h"

/* migrate false: FIBERSHIM_MIGRATE=0, the premise of the placement tests
 * below; true: FIBERSHIM_MIGRATE=1. */
static void start(unsigned carriers, bool migrate)
{
    cr_assert_eq(fs_init(&(struct fs_config){
                     .carriers = carriers, .migrate = migrate ? FS_MIGRATE_ON : FS_MIGRATE_OFF}),
                 0);
}

/* ---- spawn and join at scale ------------------------------------------- */

static void *plus_one(void *arg)
{
    return (void *)((uintptr_t)arg + 1);
}

enum { SPAWN_N = 100000, SPAWN_BATCH = 1000 };

/* Spawns and joins SPAWN_N fibers in batches (so at most SPAWN_BATCH are
 * alive at once); returns how many gave the expected result. */
static uint64_t spawn_join_many(bool in_fiber)
{
    static fs_fiber *batch[SPAWN_BATCH];
    uint64_t good = 0;
    for (uintptr_t base = 0; base < SPAWN_N; base += SPAWN_BATCH) {
        for (uintptr_t i = 0; i < SPAWN_BATCH; i++) {
            int rc = fs_spawn(&batch[i], plus_one, (void *)(base + i), NULL);
            if (in_fiber)
                FCHECK(rc == 0, "spawn %d", rc);
            else
                cr_assert_eq(rc, 0);
        }
        for (uintptr_t i = 0; i < SPAWN_BATCH; i++) {
            void *ret = NULL;
            int rc = fs_join(batch[i], &ret, FS_NO_DEADLINE);
            good += rc == 0 && (uintptr_t)ret == base + i + 1;
        }
    }
    return good;
}

Test(sched, spawn_join_100k_from_plain_thread)
{
    start(2, false);
    cr_assert_eq(spawn_join_many(false), SPAWN_N);
    struct fs_stats st;
    fs_stats_get(&st);
    cr_assert_eq(st.fibers_created, SPAWN_N);
    cr_assert_eq(st.fibers_live, 0);
}

static void *spawn_join_many_fiber(void *arg)
{
    (void)arg;
    return (void *)(uintptr_t)spawn_join_many(true);
}

Test(sched, spawn_join_100k_from_fiber)
{
    start(2, false);
    cr_assert_eq((uintptr_t)run_in_fiber(spawn_join_many_fiber, NULL), SPAWN_N);
    struct fs_stats st;
    fs_stats_get(&st);
    cr_assert_eq(st.fibers_created, SPAWN_N + 1);
    cr_assert_eq(st.fibers_live, 0);
}

/* ---- yield fairness ------------------------------------------------------ */

enum { YIELDS = 1000 };
static char yield_log[2 * YIELDS];
static _Atomic int yield_len;

static void *yielder(void *arg)
{
    for (int i = 0; i < YIELDS; i++) {
        yield_log[atomic_fetch_add(&yield_len, 1)] = (char)(uintptr_t)arg;
        fs_yield();
    }
    return NULL;
}

static void *yield_pair(void *arg)
{
    (void)arg;
    fs_fiber *a, *b;
    FCHECK(fs_spawn(&a, yielder, (void *)'A', NULL) == 0);
    FCHECK(fs_spawn(&b, yielder, (void *)'B', NULL) == 0);
    FCHECK(fs_join(a, NULL, FS_NO_DEADLINE) == 0);
    FCHECK(fs_join(b, NULL, FS_NO_DEADLINE) == 0);
    return NULL;
}

Test(sched, yield_alternates_two_fibers)
{
    /* One carrier: both fibers share it, so a yield must hand it over. No
     * handoff carriers: on a loaded machine the monitor may judge the lone
     * carrier stuck and start a spare, which would steal B before it first
     * ran (B may move until then) and leave A yielding to nobody. */
    cr_assert_eq(fs_init(&(struct fs_config){.carriers = 1, .handoff_off = true}), 0);
    run_in_fiber(yield_pair, NULL);
    cr_assert_eq(yield_len, 2 * YIELDS);
    for (int i = 1; i < 2 * YIELDS; i++)
        cr_assert_neq(yield_log[i], yield_log[i - 1], "entry %d: %c ran twice in a row", i,
                      yield_log[i]);
}

static void *spinner(void *arg)
{
    atomic_int *stop = arg;
    uint64_t n = 0;
    while (!atomic_load(stop)) {
        n++;
        fs_yield();
    }
    return (void *)(uintptr_t)n;
}

Test(sched, yield_shares_carrier_among_many)
{
    /* Eight yielding fibers on one carrier each get a fair share. */
    enum { N = 8 };
    start(1, false);
    atomic_int stop = 0;
    fs_fiber *f[N];
    for (int i = 0; i < N; i++)
        cr_assert_eq(fs_spawn(&f[i], spinner, &stop, NULL), 0);
    struct timespec ts = {0, 200 * 1000000};
    nanosleep(&ts, NULL);
    atomic_store(&stop, 1);
    uint64_t lo = UINT64_MAX, hi = 0;
    for (int i = 0; i < N; i++) {
        void *ret;
        cr_assert_eq(fs_join(f[i], &ret, FS_NO_DEADLINE), 0);
        uint64_t n = (uint64_t)(uintptr_t)ret;
        lo = n < lo ? n : lo;
        hi = n > hi ? n : hi;
    }
    /* Round robin: counts differ by at most a round, plus the ones a
     * fiber spent alone before the others started (tolerance: 2x). */
    cr_log_info("yield shares %lu..%lu", (unsigned long)lo, (unsigned long)hi);
    cr_assert_gt(lo, 100);
    cr_assert_leq(hi, 2 * lo + 10, "shares %lu..%lu", (unsigned long)lo, (unsigned long)hi);
}

/* ---- every fiber runs exactly once ------------------------------------- */

enum { FANOUT = 6, DEPTH = 6 };
#define TREE_N 55987 /* (6^7 - 1) / 5 nodes */
static _Atomic uint32_t runs[TREE_N];
static _Atomic uint32_t tree_done;

/* Node i runs, then spawns children FANOUT*i+1 .. FANOUT*i+FANOUT:
 * even-numbered ones joinable (and joined), odd ones detached. */
static void *tree_node(void *arg)
{
    uint32_t i = (uint32_t)(uintptr_t)arg;
    atomic_fetch_add(&runs[i], 1);
    fs_yield();
    fs_fiber *kids[FANOUT];
    int nkids = 0;
    for (uint32_t k = 1; k <= FANOUT; k++) {
        uint64_t c = (uint64_t)FANOUT * i + k;
        if (c >= TREE_N)
            break;
        bool detach = c & 1;
        struct fs_spawn_attr attr = {.detached = detach, .stack_size = 32 * 1024};
        fs_fiber *f;
        int rc = fs_spawn(&f, tree_node, (void *)(uintptr_t)c, &attr);
        FCHECK(rc == 0, "spawn %d", rc);
        if (rc == 0 && !detach)
            kids[nkids++] = f;
    }
    for (int k = 0; k < nkids; k++) {
        void *ret = NULL;
        FCHECK(fs_join(kids[k], &ret, FS_NO_DEADLINE) == 0);
        FCHECK(ret == kids[k], "a join returned another fiber's value");
    }
    atomic_fetch_add(&tree_done, 1);
    return fs_self();
}

Test(sched, concurrent_spawning_runs_every_fiber_exactly_once)
{
    start(2, false);
    fs_fiber *root;
    cr_assert_eq(fs_spawn(&root, tree_node, (void *)0, NULL), 0);
    WAIT_FOR(atomic_load(&tree_done) == TREE_N, 60000);
    cr_assert_eq(atomic_load(&tree_done), TREE_N);
    cr_assert_eq(fs_join(root, NULL, FS_NO_DEADLINE), 0);
    FCHECK_REPORT();
    for (uint32_t i = 0; i < TREE_N; i++)
        cr_assert_eq(atomic_load(&runs[i]), 1, "fiber %u ran %u times", i, runs[i]);
    /* Detached fibers free themselves right after they exit. */
    struct fs_stats st;
    WAIT_FOR((fs_stats_get(&st), st.fibers_live == 0), 10000);
    cr_assert_eq(st.fibers_live, 0);
    cr_assert_eq(st.fibers_created, TREE_N);
}

/* ---- join and detach ----------------------------------------------------- */

static _Atomic int detached_ran;

static void *count_and_exit(void *arg)
{
    (void)arg;
    atomic_fetch_add(&detached_ran, 1);
    return NULL;
}

Test(sched, detached_fibers_run_and_are_freed)
{
    enum { N = 1000 };
    start(2, false);
    for (int i = 0; i < N; i++)
        cr_assert_eq(fs_spawn(NULL, count_and_exit, NULL, &(struct fs_spawn_attr){.detached = true}),
                     0);
    WAIT_FOR(atomic_load(&detached_ran) == N, 10000);
    cr_assert_eq(atomic_load(&detached_ran), N);
    struct fs_stats st;
    WAIT_FOR((fs_stats_get(&st), st.fibers_live == 0), 10000);
    cr_assert_eq(st.fibers_live, 0);
}

/* A fiber that blocks until its event is signalled, then returns arg. */
struct blocker {
    struct ev go;
    _Atomic int started;
};

static void *block_until_go(void *arg)
{
    struct blocker *b = arg;
    atomic_store(&b->started, 1);
    ev_wait(&b->go);
    return b;
}

Test(sched, join_errors_and_deadlines_from_plain_thread)
{
    start(2, false);
    struct blocker b = {0};
    fs_fiber *f;
    cr_assert_eq(fs_spawn(&f, block_until_go, &b, NULL), 0);
    WAIT_FOR(atomic_load(&b.started), 5000);

    cr_assert_eq(fs_join(f, NULL, 0), -EBUSY);
    int64_t t0 = fs_now();
    cr_assert_eq(fs_join(f, NULL, t0 + 20 * MS), -ETIMEDOUT);
    cr_assert_geq(fs_now(), t0 + 20 * MS, "join timed out early");
    /* A past deadline only tries. */
    cr_assert_eq(fs_join(f, NULL, 1), -ETIMEDOUT);

    ev_signal(&b.go);
    void *ret = NULL;
    cr_assert_eq(fs_join(f, &ret, FS_NO_DEADLINE), 0);
    cr_assert_eq(ret, &b);
}

struct join_case {
    fs_fiber *target;
    int self_rc, busy_rc, timed_rc;
    int64_t timed_elapsed;
};

static void *join_from_fiber(void *arg)
{
    struct join_case *c = arg;
    c->self_rc = fs_join(fs_self(), NULL, FS_NO_DEADLINE);
    c->busy_rc = fs_join(c->target, NULL, 0);
    int64_t t0 = fs_now();
    c->timed_rc = fs_join(c->target, NULL, t0 + 20 * MS);
    c->timed_elapsed = fs_now() - t0;
    return NULL;
}

Test(sched, join_errors_and_deadlines_from_fiber)
{
    start(2, false);
    struct blocker b = {0};
    struct join_case c = {0};
    cr_assert_eq(fs_spawn(&c.target, block_until_go, &b, NULL), 0);
    WAIT_FOR(atomic_load(&b.started), 5000);
    run_in_fiber(join_from_fiber, &c);
    cr_assert_eq(c.self_rc, -EDEADLK);
    cr_assert_eq(c.busy_rc, -EBUSY);
    cr_assert_eq(c.timed_rc, -ETIMEDOUT);
    cr_assert_geq(c.timed_elapsed, 20 * MS, "join timed out early");

    /* The timed-out joiner left no trace: a later join succeeds. */
    ev_signal(&b.go);
    void *ret = NULL;
    cr_assert_eq(fs_join(c.target, &ret, FS_NO_DEADLINE), 0);
    cr_assert_eq(ret, &b);
}

Test(sched, detach_semantics)
{
    start(2, false);
    struct fs_stats st;

    /* Spawned detached: cannot be joined or detached again. */
    struct blocker b1 = {0};
    fs_fiber *d1;
    cr_assert_eq(fs_spawn(&d1, block_until_go, &b1, &(struct fs_spawn_attr){.detached = true}), 0);
    WAIT_FOR(atomic_load(&b1.started), 5000);
    cr_assert_eq(fs_join(d1, NULL, FS_NO_DEADLINE), -EINVAL);
    cr_assert_eq(fs_join(d1, NULL, 0), -EINVAL);
    cr_assert_eq(fs_detach(d1), -EINVAL);

    /* Detached after spawn, while running. */
    struct blocker b2 = {0};
    fs_fiber *d2;
    cr_assert_eq(fs_spawn(&d2, block_until_go, &b2, NULL), 0);
    WAIT_FOR(atomic_load(&b2.started), 5000);
    cr_assert_eq(fs_detach(d2), 0);
    cr_assert_eq(fs_detach(d2), -EINVAL);
    cr_assert_eq(fs_join(d2, NULL, FS_NO_DEADLINE), -EINVAL);

    fs_stats_get(&st);
    cr_assert_eq(st.fibers_live, 2);
    ev_signal(&b1.go);
    ev_signal(&b2.go);
    WAIT_FOR((fs_stats_get(&st), st.fibers_live == 0), 5000);
    cr_assert_eq(st.fibers_live, 0, "detached fibers were not freed");

    /* Detached after it exited: freed by fs_detach itself. */
    fs_fiber *d3;
    detached_ran = 0;
    cr_assert_eq(fs_spawn(&d3, count_and_exit, NULL, NULL), 0);
    WAIT_FOR(atomic_load(&detached_ran) == 1, 5000);
    nanosleep(&(struct timespec){0, 50 * 1000000}, NULL); /* let its exit complete */
    cr_assert_eq(fs_detach(d3), 0);
    WAIT_FOR((fs_stats_get(&st), st.fibers_live == 0), 5000);
    cr_assert_eq(st.fibers_live, 0);
}

/* ---- errno is per fiber ------------------------------------------------- */

struct errno_arg {
    int value;
    int iters;
};

static void *errno_keeper(void *arg)
{
    struct errno_arg *a = arg;
    errno = a->value;
    for (int i = 0; i < a->iters; i++) {
        if (i % 50 == 49)
            fs_sleep_until(fs_now() + 20 * US); /* a timed park */
        else
            fs_yield();
        FCHECK(errno == a->value, "iteration %d: errno %d, want %d", i, errno, a->value);
        errno = a->value;
    }
    return NULL;
}

static void errno_run(int nfibers)
{
    struct errno_arg args[16];
    fs_fiber *f[16];
    for (int i = 0; i < nfibers; i++) {
        args[i] = (struct errno_arg){.value = 11 * (i + 1), .iters = 2000};
        cr_assert_eq(fs_spawn(&f[i], errno_keeper, &args[i], NULL), 0);
    }
    for (int i = 0; i < nfibers; i++)
        cr_assert_eq(fs_join(f[i], NULL, FS_NO_DEADLINE), 0);
    FCHECK_REPORT();
}

Test(sched, errno_is_per_fiber_on_one_carrier)
{
    start(1, false); /* both fibers share one thread's errno */
    errno_run(2);
}

Test(sched, errno_is_per_fiber_on_two_carriers)
{
    start(2, false);
    errno_run(16);
}

/* ---- pinning ------------------------------------------------------------- */

enum { PIN_PAIRS = 4, PIN_ROUNDS = 600 };

struct pin_fiber {
    struct ev ev;
    struct pin_fiber *peer;
    bool leader;
    _Atomic int moved; /* times it found itself on another kernel thread */
};

/* Each pair ping-pongs through events (parks woken from whichever carrier
 * the peer runs on), mixed with yields and timed sleeps. */
static void *pin_body(void *arg)
{
    struct pin_fiber *p = arg;
    pid_t tid = test_gettid();
    for (int i = 0; i < PIN_ROUNDS; i++) {
        if (p->leader) {
            ev_signal(&p->peer->ev);
            ev_wait(&p->ev);
        } else {
            ev_wait(&p->ev);
            ev_signal(&p->peer->ev);
        }
        if (i % 3 == 0)
            fs_yield();
        else if (i % 3 == 1)
            fs_sleep_until(fs_now() + 30 * US);
        pid_t now = test_gettid();
        if (now != tid) {
            atomic_fetch_add(&p->moved, 1);
            tid = now;
        }
    }
    return NULL;
}

/* Keeps both carriers busy, so an idle carrier that steals has plenty of
 * chances to take a pinned fiber if the queues let it. */
static void *busy_yielder(void *arg)
{
    atomic_int *stop = arg;
    while (!atomic_load(stop)) {
        int64_t end = fs_now() + 20 * US;
        while (fs_now() < end)
            ;
        fs_yield();
    }
    return NULL;
}

static int pin_run(void)
{
    static struct pin_fiber pf[2 * PIN_PAIRS];
    fs_fiber *f[2 * PIN_PAIRS], *busy[4];
    atomic_int stop = 0;
    for (int i = 0; i < 4; i++)
        cr_assert_eq(fs_spawn(&busy[i], busy_yielder, &stop, NULL), 0);
    for (int i = 0; i < PIN_PAIRS; i++) {
        pf[2 * i] = (struct pin_fiber){.peer = &pf[2 * i + 1], .leader = true};
        pf[2 * i + 1] = (struct pin_fiber){.peer = &pf[2 * i]};
    }
    for (int i = 0; i < 2 * PIN_PAIRS; i++)
        cr_assert_eq(fs_spawn(&f[i], pin_body, &pf[i], NULL), 0);
    int moved = 0;
    for (int i = 0; i < 2 * PIN_PAIRS; i++) {
        cr_assert_eq(fs_join(f[i], NULL, FS_NO_DEADLINE), 0);
        moved += atomic_load(&pf[i].moved);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(fs_join(busy[i], NULL, FS_NO_DEADLINE), 0);
    FCHECK_REPORT();
    return moved;
}

Test(sched, started_fibers_stay_on_their_kernel_thread)
{
    start(2, false);
    cr_assert_eq(pin_run(), 0, "a started fiber moved to another kernel thread");
}

Test(sched, migration_on_works)
{
    start(2, true);
    int moved = pin_run(); /* may move; must still complete */
    cr_log_info("fibers moved %d times", moved);
}

/* ---- stealing: both carriers get work ----------------------------------- */

static _Atomic int busy_ran;

static void *busy_200us(void *arg)
{
    (void)arg;
    int64_t end = fs_now() + 200 * US;
    while (fs_now() < end)
        ;
    atomic_fetch_add(&busy_ran, 1);
    return NULL;
}

static void *spawn_busy_batch(void *arg)
{
    (void)arg;
    /* Batches that fit the carrier's ring (256): an idle carrier can then
     * only get them by stealing, not from the global overflow queue. */
    enum { BATCH = 200, BATCHES = 5 };
    fs_fiber *f[BATCH];
    for (int b = 0; b < BATCHES; b++) {
        /* All spawned before any is joined: they queue on this carrier. */
        for (int i = 0; i < BATCH; i++)
            FCHECK(fs_spawn(&f[i], busy_200us, NULL, NULL) == 0);
        for (int i = 0; i < BATCH; i++)
            FCHECK(fs_join(f[i], NULL, FS_NO_DEADLINE) == 0);
    }
    return NULL;
}

Test(sched, idle_carrier_steals_unstarted_fibers)
{
    start(2, false);
    run_in_fiber(spawn_busy_batch, NULL);
    cr_assert_eq(atomic_load(&busy_ran), 1000);
    struct fs_stats st;
    fs_stats_get(&st);
    cr_assert_gt(st.steals, 0);
    struct fs_carrier_stats c0, c1, cx;
    cr_assert_eq(fs_carrier_stats(0, &c0), 0);
    cr_assert_eq(fs_carrier_stats(1, &c1), 0);
    /* A spare carrier may have joined in if the monitor saw one stuck
     * (an overloaded machine): it comes after the two, and counts. */
    uint64_t extra_run = 0;
    for (unsigned i = 2; i < 2 + st.extra_carriers; i++) {
        cr_assert_eq(fs_carrier_stats(i, &cx), 0);
        extra_run += cx.fibers_run;
    }
    cr_assert_eq(fs_carrier_stats(2 + st.extra_carriers, &cx), -EINVAL);
    cr_log_info("steals %lu, fibers run %lu / %lu (+%lu on spares)", (unsigned long)st.steals,
                (unsigned long)c0.fibers_run, (unsigned long)c1.fibers_run,
                (unsigned long)extra_run);
    cr_assert_gt(c0.fibers_run, 0, "carrier 0 ran nothing");
    cr_assert_gt(c1.fibers_run, 0, "carrier 1 ran nothing");
    cr_assert_eq(c0.fibers_run + c1.fibers_run + extra_run, 1001);
    /* Balanced, loosely: the thief got a real share (tolerance: 10%). */
    uint64_t lo = c0.fibers_run < c1.fibers_run ? c0.fibers_run : c1.fibers_run;
    cr_assert_gt(lo, 100, "unbalanced: %lu / %lu", (unsigned long)c0.fibers_run,
                 (unsigned long)c1.fibers_run);
}

static atomic_bool spin_started, spin_stop;

static void *spin_until_stopped(void *arg)
{
    (void)arg;
    atomic_store(&spin_started, true);
    while (!atomic_load(&spin_stop))
        ;
    return NULL;
}

/* A carrier that never goes to sleep (a loaded server's, for a whole run)
 * still shows the time it has been busy: fs_carrier_stats counts the
 * stretch in progress, not only the stretches that ended in a sleep. The
 * carrier has been busy at least since the fiber started, which this
 * plain thread saw before it took t0. Its CPU time (cpu_ns) grows too. */
Test(sched, carrier_busy_time_counts_the_stretch_in_progress)
{
    start(1, false);
    fs_fiber *f;
    cr_assert_eq(fs_spawn(&f, spin_until_stopped, NULL, NULL), 0);
    while (!atomic_load(&spin_started))
        sched_yield();
    struct fs_carrier_stats c0, cs;
    cr_assert_eq(fs_carrier_stats(0, &c0), 0);
    int64_t t0 = fs_now();
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
    int64_t t1 = fs_now();
    cr_assert_eq(fs_carrier_stats(0, &cs), 0);
    atomic_store(&spin_stop, true);
    cr_assert_eq(fs_join(f, NULL, FS_NO_DEADLINE), 0);
    cr_log_info("busy %.1f ms over %.1f ms watched; CPU %.1f ms, %.1f ms of it meanwhile",
                cs.busy_ns / 1e6, (t1 - t0) / 1e6, cs.cpu_ns / 1e6, (cs.cpu_ns - c0.cpu_ns) / 1e6);
    cr_assert_geq(cs.busy_ns, (uint64_t)(t1 - t0), "busy %lu ns, but it ran a fiber for %ld ns",
                  (unsigned long)cs.busy_ns, (long)(t1 - t0));
    /* The carrier's kernel thread computed meanwhile (cpu_ns), and its CPU
     * time is a part of the process's. */
    cr_assert_gt(cs.cpu_ns, c0.cpu_ns, "the spinning carrier's CPU time did not grow");
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    cr_assert_leq(cs.cpu_ns, (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
}

/* ---- frugal wake-ups ---------------------------------------------------- */

enum { PINGS = 20000 };

struct pingpong {
    struct ev a, b;
    pid_t tid_a, tid_b;
    uint64_t wakes_before, wakes_after;
};

static void *pong(void *arg)
{
    struct pingpong *p = arg;
    p->tid_b = test_gettid();
    ev_signal(&p->a);
    for (int i = 0; i < PINGS; i++) {
        ev_wait(&p->b);
        ev_signal(&p->a);
    }
    return NULL;
}

static void *ping(void *arg)
{
    struct pingpong *p = arg;
    p->tid_a = test_gettid();
    fs_fiber *b;
    FCHECK(fs_spawn(&b, pong, p, NULL) == 0);
    ev_wait(&p->a); /* pong started (in our runnext, so on our carrier) */
    struct fs_stats st;
    fs_stats_get(&st);
    p->wakes_before = st.carrier_wakes;
    for (int i = 0; i < PINGS; i++) {
        ev_signal(&p->b);
        ev_wait(&p->a);
    }
    fs_stats_get(&st);
    p->wakes_after = st.carrier_wakes;
    FCHECK(fs_join(b, NULL, FS_NO_DEADLINE) == 0);
    return NULL;
}

Test(sched, ping_pong_on_one_carrier_wakes_no_carrier)
{
    start(2, false);
    struct pingpong p = {0};
    run_in_fiber(ping, &p);
    cr_assert_eq(p.tid_a, p.tid_b, "ping and pong ran on different carriers");
    uint64_t wakes = p.wakes_after - p.wakes_before;
    cr_log_info("%d ping-pongs, %lu carrier wakes", PINGS, (unsigned long)wakes);
    /* Tolerance: a few stray wakes (start-up, timers), never one per ping. */
    cr_assert_lt(wakes, PINGS / 100, "%lu carrier wakes for %d ping-pongs", (unsigned long)wakes,
                 PINGS);
}

/* ---- the local word ------------------------------------------------------ */

static int local_target;

/* The hook sees a fiber's local word on its first start, before fn. */
static _Atomic(void *) hook_saw;

static void local_hook(fs_fiber *f)
{
    atomic_store(&hook_saw, fs_fiber_local(f));
}

/* Stays until the hook has run (at its first start, or at the end of a
 * sleep the interrupt cuts short), so the interrupt never finds it gone. */
static void *local_of_self(void *unused)
{
    (void)unused;
    int64_t give_up = fs_now() + 5 * 1000 * US;
    while (!atomic_load(&hook_saw) && fs_now() < give_up)
        fs_sleep_until(fs_now() + 1000 * US);
    return fs_fiber_local(fs_self());
}

Test(sched, spawn_attr_local_is_set_before_the_fiber_runs)
{
    fs_set_interrupt_hook(local_hook);
    start(1, false);
    fs_fiber *f;
    cr_assert_eq(fs_spawn(&f, local_of_self, NULL, &(struct fs_spawn_attr){.local = &local_target}),
                 0);
    /* From a plain thread the new fiber may already run: its word is set. */
    cr_assert_eq(fs_fiber_local(f), &local_target);
    fs_interrupt(f);
    void *ret;
    cr_assert_eq(fs_join(f, &ret, FS_NO_DEADLINE), 0);
    cr_assert_eq(ret, &local_target);
    /* An interrupt sent before the first run was taken at the start, where
     * the word was already there; if the fiber had already run, the hook
     * ran later, with the same word. */
    cr_assert_eq(atomic_load(&hook_saw), &local_target);
}
