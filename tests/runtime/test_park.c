/*
 * test_park.c - parking (park.c): wakes that land before the parker is
 * switched out, stale tokens, the timeout/unpark race, commit callbacks,
 * waiters on plain threads, and timers that never fire early.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "fibershim.h"
#include "util.h"

/* Pinned fibers: the races below need parker and waker to stay on the
 * carriers they started on (with migration a woken parker would follow
 * its waker onto one carrier, and the race would be gone). */
static void start(unsigned carriers)
{
    cr_assert_eq(fs_init(&(struct fs_config){.carriers = carriers, .migrate = FS_MIGRATE_OFF}), 0);
}

/* Any thread: spins, giving up the CPU now and then (fs_yield: to other
 * fibers, or sched_yield on a plain thread), so a spinner cannot starve
 * whoever it waits for, on a carrier or on a busy 2-core machine. */
static void spin_pause(unsigned *n)
{
    if (++*n % 64 == 0)
        fs_yield();
    else
        __builtin_ia32_pause();
}

/* ---- a parker and an unparker, one park at a time ------------------------
 *
 * The parker publishes each token and parks at once; the unparker, on
 * another thread, unparks as soon as it sees the token, often while the
 * parker is still switching out. The parker waits for the unparker's
 * result before its next park, so results pair up by index. */

struct race {
    int iters;
    int64_t park_timeout; /* ns after fs_now(), or FS_NO_DEADLINE */
    int max_delay_ns;     /* unparker waits 0..this before unparking */
    fs_fiber *_Atomic parker;
    _Atomic int unparker_started;
    pid_t parker_tid, unparker_tid;
    _Atomic fs_park_token pub;
    _Atomic fs_park_token ack;
    struct ev ack_ev; /* the parker sleeps on it until ack is its token */
    int *rc;          /* per iteration: what fs_park returned */
    bool *woke;       /* per iteration: what fs_unpark returned */
    _Atomic bool *ended; /* per iteration: the parker's fs_park returned */
};

/* In a timeout race (a deadline and random unpark delays), every fourth
 * iteration settles the outcome by construction, so that both occur in
 * every run whatever the machine's timer slack or load: i % 4 == 0 parks
 * with a 10 s deadline (the unpark wins), i % 4 == 3 unparks only once the
 * park has returned (the timer won). The other iterations race. */
static bool race_timed(const struct race *r)
{
    return r->max_delay_ns && r->park_timeout > 0 && r->park_timeout != FS_NO_DEADLINE;
}

static void *race_parker(void *arg)
{
    struct race *r = arg;
    r->parker_tid = test_gettid();
    atomic_store(&r->parker, fs_self());
    for (int i = 0; i < r->iters; i++) {
        fs_park_token tok = fs_park_prepare();
        atomic_store(&r->pub, tok);
        int64_t dl = r->park_timeout == FS_NO_DEADLINE || (race_timed(r) && i % 4 == 0)
                         ? fs_now() + 10000 * MS
                         : fs_now() + r->park_timeout;
        r->rc[i] = fs_park(tok, FS_PARK_OTHER, r, dl, NULL, NULL);
        atomic_store(&r->ended[i], true);
        while (atomic_load(&r->ack) != tok)
            ev_wait(&r->ack_ev);
    }
    return NULL;
}

static void *race_unparker(void *arg)
{
    struct race *r = arg;
    r->unparker_tid = test_gettid();
    atomic_store(&r->unparker_started, 1);
    /* Hold this carrier (no yield) until the parker runs: it then starts
     * on the other one, and the race is between two kernel threads. */
    while (!atomic_load(&r->parker))
        __builtin_ia32_pause();
    fs_fiber *f = atomic_load(&r->parker);
    unsigned n = 0;
    uint32_t rng = 12345;
    fs_park_token last = 0;
    for (int i = 0; i < r->iters; i++) {
        fs_park_token tok;
        while ((tok = atomic_load(&r->pub)) == last)
            spin_pause(&n);
        if (race_timed(r) && i % 4 == 3) {
            /* Until the park has timed out (bounded: a timer that never
             * fires shows up as a lost timeout below, not as a hang). */
            int64_t end = fs_now() + 5000 * MS;
            while (!atomic_load(&r->ended[i]) && fs_now() < end)
                spin_pause(&n);
        } else if (r->max_delay_ns) {
            rng = rng * 1664525u + 1013904223u;
            int64_t end = fs_now() + (int64_t)((rng >> 8) % (uint32_t)r->max_delay_ns);
            while (fs_now() < end)
                ;
        }
        r->woke[i] = fs_unpark(f, tok);
        last = tok;
        atomic_store(&r->ack, tok);
        ev_signal(&r->ack_ev);
    }
    return NULL;
}

static void *race_unparker_thread(void *arg)
{
    return race_unparker(arg);
}

static void race_run(struct race *r, bool unparker_is_fiber)
{
    r->rc = calloc((size_t)r->iters, sizeof *r->rc);
    r->woke = calloc((size_t)r->iters, sizeof *r->woke);
    r->ended = calloc((size_t)r->iters, sizeof *r->ended);
    cr_assert(r->rc && r->woke && r->ended);
    fs_fiber *p, *u = NULL;
    pthread_t t;
    if (unparker_is_fiber) {
        cr_assert_eq(fs_spawn(&u, race_unparker, r, NULL), 0);
        WAIT_FOR(atomic_load(&r->unparker_started), 5000);
    } else {
        cr_assert_eq(pthread_create(&t, NULL, race_unparker_thread, r), 0);
    }
    cr_assert_eq(fs_spawn(&p, race_parker, r, NULL), 0);
    cr_assert_eq(fs_join(p, NULL, FS_NO_DEADLINE), 0);
    if (unparker_is_fiber) {
        cr_assert_eq(fs_join(u, NULL, FS_NO_DEADLINE), 0);
        cr_assert_neq(r->parker_tid, r->unparker_tid, "parker and unparker shared a carrier");
    } else {
        cr_assert_eq(pthread_join(t, NULL), 0);
    }
    FCHECK_REPORT();
}

static void check_no_lost_wake(struct race *r)
{
    for (int i = 0; i < r->iters; i++) {
        cr_assert_eq(r->rc[i], 0, "park %d returned %d: the wake was lost", i, r->rc[i]);
        cr_assert(r->woke[i], "unpark %d found the park already ended", i);
    }
}

Test(park, unpark_racing_switch_out_from_plain_thread)
{
    start(2);
    struct race r = {.iters = 20000, .park_timeout = FS_NO_DEADLINE};
    race_run(&r, false);
    check_no_lost_wake(&r);
}

Test(park, unpark_racing_switch_out_from_other_carrier)
{
    start(2);
    struct race r = {.iters = 20000, .park_timeout = FS_NO_DEADLINE};
    race_run(&r, true);
    check_no_lost_wake(&r);
}

/* Exactly one of timer and unpark ends each park, and both sides agree on
 * which. */
static void check_timeout_race(struct race *r)
{
    int woken = 0, timed_out = 0;
    for (int i = 0; i < r->iters; i++) {
        cr_assert(r->rc[i] == 0 || r->rc[i] == -ETIMEDOUT, "park %d returned %d", i, r->rc[i]);
        cr_assert_eq(r->rc[i] == 0, r->woke[i], "park %d returned %d but unpark said %d", i,
                     r->rc[i], r->woke[i]);
        woken += r->rc[i] == 0;
        timed_out += r->rc[i] == -ETIMEDOUT;
    }
    cr_log_info("%d woken, %d timed out", woken, timed_out);
    /* Both outcomes occur in every run (race_timed): a quarter of the parks
     * are certain to be woken, a quarter certain to time out; the rest
     * race, unparks landing 0-100 us after a 50 us deadline was set. */
    for (int i = 0; i < r->iters; i += 4) {
        cr_assert_eq(r->rc[i], 0, "park %d (10 s deadline) was not woken", i);
        if (i + 3 < r->iters)
            cr_assert_eq(r->rc[i + 3], -ETIMEDOUT, "park %d did not time out within 5 s", i + 3);
    }
    cr_assert_gt(woken, 0);
    cr_assert_gt(timed_out, 0);
}

Test(park, timeout_races_unpark_from_plain_thread)
{
    start(2);
    struct race r = {.iters = 2000, .park_timeout = 50 * US, .max_delay_ns = 100 * US};
    race_run(&r, false);
    check_timeout_race(&r);
}

Test(park, timeout_races_unpark_from_other_carrier)
{
    start(2);
    struct race r = {.iters = 2000, .park_timeout = 50 * US, .max_delay_ns = 100 * US};
    race_run(&r, true);
    check_timeout_race(&r);
}

Test(park, past_deadline_races_unpark)
{
    /* A deadline already due never switches: the park ends at once, as a
     * timeout unless an unpark won first. */
    start(2);
    struct race r = {.iters = 3000, .park_timeout = -1, .max_delay_ns = 2 * US};
    race_run(&r, false);
    for (int i = 0; i < r.iters; i++)
        cr_assert_eq(r.rc[i] == 0, r.woke[i], "park %d returned %d but unpark said %d", i,
                     r.rc[i], r.woke[i]);
}

/* ---- stale tokens ----------------------------------------------------- */

struct stale {
    fs_fiber *_Atomic f;
    _Atomic fs_park_token tok1, tok2, tok3;
    _Atomic int stage;
    int rc1, rc2, rc3;
    int64_t dl2, woke2;
};

static void *stale_parker(void *arg)
{
    struct stale *s = arg;
    atomic_store(&s->f, fs_self());
    /* Park 1: nobody wakes it. */
    fs_park_token t1 = fs_park_prepare();
    atomic_store(&s->tok1, t1);
    s->rc1 = fs_park(t1, FS_PARK_OTHER, s, fs_now() + 5 * MS, NULL, NULL);
    /* Park 2: the test thread hammers it with park 1's token. */
    fs_park_token t2 = fs_park_prepare();
    FCHECK(t2 != t1);
    atomic_store(&s->tok2, t2);
    atomic_store(&s->stage, 2);
    s->dl2 = fs_now() + 100 * MS;
    s->rc2 = fs_park(t2, FS_PARK_OTHER, s, s->dl2, NULL, NULL);
    s->woke2 = fs_now();
    atomic_store(&s->stage, 3);
    /* Park 3: woken once, for real. */
    fs_park_token t3 = fs_park_prepare();
    atomic_store(&s->tok3, t3);
    atomic_store(&s->stage, 4);
    s->rc3 = fs_park(t3, FS_PARK_OTHER, s, FS_NO_DEADLINE, NULL, NULL);
    return NULL;
}

Test(park, stale_token_never_wakes_a_later_park)
{
    start(2);
    struct stale s = {0};
    fs_fiber *f;
    cr_assert_eq(fs_spawn(&f, stale_parker, &s, NULL), 0);
    WAIT_FOR(atomic_load(&s.stage) == 2, 5000);
    cr_assert_eq(atomic_load(&s.stage), 2);
    cr_assert_eq(s.rc1, -ETIMEDOUT);
    int tries = 0;
    while (atomic_load(&s.stage) == 2) {
        cr_assert_not(fs_unpark(f, atomic_load(&s.tok1)), "a stale token woke a later park");
        tries++;
    }
    WAIT_FOR(atomic_load(&s.stage) == 4, 5000);
    cr_assert_eq(s.rc2, -ETIMEDOUT, "park 2 was ended by a stale unpark");
    cr_assert_geq(s.woke2, s.dl2, "park 2 returned early");
    cr_assert_gt(tries, 0);
    /* An ended park cannot be woken either. */
    cr_assert_not(fs_unpark(f, atomic_load(&s.tok2)));
    /* One wake per park: the second unpark of the same park fails. */
    fs_park_token t3 = atomic_load(&s.tok3);
    cr_assert(fs_unpark(f, t3));
    cr_assert_not(fs_unpark(f, t3));
    cr_assert_eq(fs_join(f, NULL, FS_NO_DEADLINE), 0);
    cr_assert_eq(s.rc3, 0);
    FCHECK_REPORT();
}

/* ---- commit callbacks --------------------------------------------------- */

struct commit_ctx {
    fs_fiber *parker;
    _Atomic int calls;
    _Atomic int ran_on_parker; /* commit saw the parker still current */
    bool result;
    _Atomic fs_park_token pub;
};

static bool commit_cb(void *arg)
{
    struct commit_ctx *c = arg;
    atomic_fetch_add(&c->calls, 1);
    if (fs_self() == c->parker)
        atomic_store(&c->ran_on_parker, 1);
    return c->result;
}

static void *commit_false_parker(void *arg)
{
    struct commit_ctx *c = arg;
    c->parker = fs_self();
    c->result = false;
    fs_park_token tok = fs_park_prepare();
    int64_t t0 = fs_now();
    int rc = fs_park(tok, FS_PARK_OTHER, c, FS_NO_DEADLINE, commit_cb, c);
    FCHECK(rc == 0, "park with a refusing commit returned %d", rc);
    FCHECK(fs_now() - t0 < 1000 * MS, "took %ld ns", (long)(fs_now() - t0));
    /* Also with a deadline: refused, not timed out. */
    tok = fs_park_prepare();
    rc = fs_park(tok, FS_PARK_OTHER, c, fs_now() + 10000 * MS, commit_cb, c);
    FCHECK(rc == 0, "park with a refusing commit and deadline returned %d", rc);
    /* A due deadline still runs commit (it releases the caller's lock). */
    tok = fs_park_prepare();
    rc = fs_park(tok, FS_PARK_OTHER, c, fs_now() - 1, commit_cb, c);
    FCHECK(rc == -ETIMEDOUT, "past deadline returned %d", rc);
    return NULL;
}

Test(park, commit_returning_false_undoes_the_park)
{
    start(2);
    struct commit_ctx c = {0};
    run_in_fiber(commit_false_parker, &c);
    cr_assert_eq(atomic_load(&c.calls), 3);
    /* The two real parks ran commit after switching out; the due-deadline
     * one never switched, so the parker was still current there. */
    cr_assert_eq(atomic_load(&c.ran_on_parker), 1);
}

/* commit publishes the token, as a wait queue would publish the waiter:
 * the waker can only find the parker once it is off its stack. */
struct publish_ctx {
    fs_fiber *parker;
    fs_park_token pending;
    _Atomic fs_park_token pub;
    _Atomic int ran_on_parker;
    _Atomic int woke_ok;
};

enum { PUBLISH_ITERS = 2000 };

static bool commit_publish(void *arg)
{
    struct publish_ctx *c = arg;
    if (fs_self() == c->parker)
        atomic_store(&c->ran_on_parker, 1);
    atomic_store(&c->pub, c->pending);
    return true;
}

static void *publish_parker(void *arg)
{
    struct publish_ctx *c = arg;
    c->parker = fs_self();
    for (int i = 0; i < PUBLISH_ITERS; i++) {
        c->pending = fs_park_prepare();
        int rc = fs_park(c->pending, FS_PARK_OTHER, c, fs_now() + 10000 * MS, commit_publish, c);
        FCHECK(rc == 0, "iteration %d: %d", i, rc);
    }
    return NULL;
}

static void *publish_waker(void *arg)
{
    struct publish_ctx *c = arg;
    for (int i = 0; i < PUBLISH_ITERS; i++) {
        fs_park_token tok;
        while (!(tok = atomic_exchange(&c->pub, 0)))
            __builtin_ia32_pause();
        atomic_fetch_add(&c->woke_ok, fs_unpark(c->parker, tok));
    }
    return NULL;
}

Test(park, commit_runs_after_switch_out_and_publishes)
{
    start(2);
    struct publish_ctx c = {0};
    fs_fiber *f;
    pthread_t t;
    cr_assert_eq(fs_spawn(&f, publish_parker, &c, NULL), 0);
    cr_assert_eq(pthread_create(&t, NULL, publish_waker, &c), 0);
    cr_assert_eq(fs_join(f, NULL, FS_NO_DEADLINE), 0);
    cr_assert_eq(pthread_join(t, NULL), 0);
    FCHECK_REPORT();
    cr_assert_eq(atomic_load(&c.woke_ok), PUBLISH_ITERS);
    cr_assert_eq(atomic_load(&c.ran_on_parker), 0, "commit ran before the parker switched out");
}

Test(park, fiber_only_calls_refuse_plain_threads)
{
    start(1);
    cr_assert_null(fs_self());
    cr_assert_eq(fs_park_prepare(), 0);
    cr_assert_eq(fs_park(0, FS_PARK_OTHER, NULL, FS_NO_DEADLINE, NULL, NULL), -EPERM);
    cr_assert_eq(fs_sleep_until(fs_now() + MS), -EPERM);
}

/* ---- waiters ------------------------------------------------------------- */

struct waker_arg {
    struct fs_waiter *_Atomic w;
    int64_t delay;
    _Atomic int result; /* fs_waiter_wake's answer + 1; 0 while pending */
};

static void *waiter_waker(void *arg)
{
    struct waker_arg *a = arg;
    unsigned n = 0;
    while (!atomic_load(&a->w))
        spin_pause(&n);
    if (a->delay)
        fs_self() ? fs_sleep_until(fs_now() + a->delay)
                  : nanosleep(&(struct timespec){0, a->delay}, NULL);
    atomic_store(&a->result, 1 + fs_waiter_wake(atomic_load(&a->w)));
    return NULL;
}

Test(park, waiter_on_plain_thread_woken_by_fiber)
{
    start(2);
    for (int i = 0; i < 200; i++) {
        struct fs_waiter w;
        fs_waiter_prepare(&w);
        cr_assert_null(w.fiber);
        /* Alternately wake before and after the thread blocks. */
        struct waker_arg a = {.delay = i % 2 ? 0 : 200 * US};
        fs_fiber *f;
        cr_assert_eq(fs_spawn(&f, waiter_waker, &a, NULL), 0);
        atomic_store(&a.w, &w);
        int rc = fs_waiter_wait(&w, FS_PARK_OTHER, NULL, FS_NO_DEADLINE, NULL, NULL);
        cr_assert_eq(rc, 0);
        cr_assert(fs_waiter_woken(&w));
        cr_assert_eq(fs_join(f, NULL, FS_NO_DEADLINE), 0);
        cr_assert_eq(atomic_load(&a.result), 2, "wake returned false");
    }
}

Test(park, waiter_on_plain_thread_times_out)
{
    start(2);
    struct fs_waiter w;
    fs_waiter_prepare(&w);
    int64_t dl = fs_now() + 30 * MS;
    cr_assert_eq(fs_waiter_wait(&w, FS_PARK_OTHER, NULL, dl, NULL, NULL), -ETIMEDOUT);
    cr_assert_geq(fs_now(), dl, "waiter timed out early");
    cr_assert_not(fs_waiter_woken(&w));
    cr_assert_not(fs_waiter_wake(&w), "a timed-out waiter was woken");
}

static bool refuse(void *arg)
{
    ++*(int *)arg;
    return false;
}

Test(park, waiter_on_plain_thread_commit_refuses)
{
    start(1);
    struct fs_waiter w;
    int calls = 0;
    fs_waiter_prepare(&w);
    cr_assert_eq(fs_waiter_wait(&w, FS_PARK_OTHER, NULL, FS_NO_DEADLINE, refuse, &calls), 0);
    cr_assert_eq(calls, 1);
}

/* A plain-thread waiter with a short deadline against a concurrent wake:
 * exactly one of them ends the wait, and both know which. */
Test(park, waiter_timeout_races_wake)
{
    start(2);
    int woken = 0, timed_out = 0;
    for (int i = 0; i < 1000; i++) {
        struct fs_waiter w;
        fs_waiter_prepare(&w);
        struct waker_arg a = {.delay = (i % 7) * 15 * US};
        fs_fiber *f;
        cr_assert_eq(fs_spawn(&f, waiter_waker, &a, NULL), 0);
        atomic_store(&a.w, &w);
        int rc = fs_waiter_wait(&w, FS_PARK_OTHER, NULL, fs_now() + 50 * US, NULL, NULL);
        /* w must outlive the waker's use of it. */
        cr_assert_eq(fs_join(f, NULL, FS_NO_DEADLINE), 0);
        cr_assert(rc == 0 || rc == -ETIMEDOUT);
        cr_assert_eq(rc == 0, atomic_load(&a.result) == 2, "iteration %d: wait %d, wake %d", i,
                     rc, atomic_load(&a.result) - 1);
        cr_assert_eq(fs_waiter_woken(&w), rc == 0);
        woken += rc == 0;
        timed_out += rc != 0;
    }
    cr_log_info("%d woken, %d timed out", woken, timed_out);
}

static void *fiber_waits(void *arg)
{
    struct waker_arg *a = arg;
    struct fs_waiter w;
    fs_waiter_prepare(&w);
    FCHECK(w.fiber == fs_self());
    atomic_store(&a->w, &w);
    int rc = fs_waiter_wait(&w, FS_PARK_OTHER, NULL, FS_NO_DEADLINE, NULL, NULL);
    FCHECK(rc == 0, "fiber waiter returned %d", rc);
    FCHECK(fs_waiter_woken(&w));
    /* Stay until the waker is done with w. */
    unsigned n = 0;
    while (!atomic_load(&a->result))
        spin_pause(&n);
    return NULL;
}

Test(park, waiter_in_fiber_woken_by_plain_thread)
{
    start(2);
    for (int i = 0; i < 200; i++) {
        struct waker_arg a = {.delay = i % 2 ? 0 : 100 * US};
        fs_fiber *f;
        cr_assert_eq(fs_spawn(&f, fiber_waits, &a, NULL), 0);
        waiter_waker(&a);
        cr_assert_eq(fs_join(f, NULL, FS_NO_DEADLINE), 0);
        cr_assert_eq(atomic_load(&a.result), 2);
    }
    FCHECK_REPORT();
}

/* ---- timers never fire early -------------------------------------------- */

enum { SLEEPERS = 20, SLEEPS_EACH = 10 };
static int64_t lateness[SLEEPERS * SLEEPS_EACH];

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *sleeper(void *arg)
{
    int id = (int)(intptr_t)arg;
    uint32_t rng = 2654435761u * (uint32_t)(id + 1);
    for (int i = 0; i < SLEEPS_EACH; i++) {
        rng = rng * 1664525u + 1013904223u;
        int64_t dl = mono_ns() + (1 + (int64_t)((rng >> 8) % 20)) * MS; /* 1-20 ms */
        if (i % 2) {
            FCHECK(fs_sleep_until(dl) == 0);
        } else {
            /* A bare timed park: the timer alone must not end it early. */
            fs_park_token tok = fs_park_prepare();
            int rc = fs_park(tok, FS_PARK_SLEEP, NULL, dl, NULL, NULL);
            FCHECK(rc == -ETIMEDOUT, "park returned %d", rc);
        }
        lateness[id * SLEEPS_EACH + i] = mono_ns() - dl;
    }
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

Test(park, timers_never_fire_early)
{
    start(2);
    fs_fiber *f[SLEEPERS];
    for (int i = 0; i < SLEEPERS; i++)
        cr_assert_eq(fs_spawn(&f[i], sleeper, (void *)(intptr_t)i, NULL), 0);
    for (int i = 0; i < SLEEPERS; i++)
        cr_assert_eq(fs_join(f[i], NULL, FS_NO_DEADLINE), 0);
    FCHECK_REPORT();
    enum { N = SLEEPERS * SLEEPS_EACH };
    for (int i = 0; i < N; i++)
        cr_assert_geq(lateness[i], 0, "sleep %d woke %ld ns early", i, (long)-lateness[i]);
    qsort(lateness, N, sizeof lateness[0], cmp_i64);
    cr_log_info("lateness: median %ld us, max %ld us", (long)(lateness[N / 2] / US),
                (long)(lateness[N - 1] / US));
    /* Tolerance for late wakes: 250 ms (a noisy 2-core VM can stall a
     * carrier that long). */
    cr_assert_lt(lateness[N - 1], 250 * MS, "a sleep ran %ld ms late",
                 (long)(lateness[N - 1] / MS));
}

/* ---- interrupts ------------------------------------------------------------ */

struct intr {
    enum fs_park_reason why;
    _Atomic fs_park_token tok; /* published once parked (or about to) */
    fs_fiber *_Atomic self;
    _Atomic int rc;
};

static void *intr_parker(void *arg)
{
    struct intr *p = arg;
    atomic_store(&p->self, fs_self());
    fs_park_token tok = fs_park_prepare();
    atomic_store(&p->tok, tok);
    atomic_store(&p->rc, fs_park(tok, p->why, NULL, FS_NO_DEADLINE, NULL, NULL));
    return NULL;
}

/* Semaphore, lock and join parks end with -EINTR at an interrupt, as I/O
 * and sleeps do (a signal handler runs during a lock wait, which the shim
 * then resumes); a handed-off call's (FS_PARK_OTHER) does not, and ends
 * only at its unpark. */
Test(park, interrupt_ends_sem_lock_and_join_parks_not_others)
{
    start(2);
    enum fs_park_reason whys[] = {FS_PARK_SEM, FS_PARK_MUTEX, FS_PARK_COND, FS_PARK_JOIN,
                                  FS_PARK_OTHER};
    for (int i = 0; i < 5; i++) {
        bool ends = whys[i] != FS_PARK_OTHER;
        struct intr p = {.why = whys[i], .rc = 1};
        fs_fiber *f;
        cr_assert_eq(fs_spawn(&f, intr_parker, &p, NULL), 0);
        unsigned n = 0;
        while (!atomic_load(&p.tok))
            spin_pause(&n);
        nanosleep(&(struct timespec){0, 20 * MS}, NULL); /* parked, most likely */
        fs_interrupt(atomic_load(&p.self));
        if (ends) {
            /* Up to 5 s for a loaded machine to run it: never hang in join. */
            for (int ms = 0; ms < 5000 && atomic_load(&p.rc) == 1; ms++)
                nanosleep(&(struct timespec){0, MS}, NULL);
            cr_assert_eq(atomic_load(&p.rc), -EINTR, "a %s park was not interrupted",
                         fs_park_reason_name(whys[i]));
        } else {
            nanosleep(&(struct timespec){0, 20 * MS}, NULL);
            cr_assert_eq(atomic_load(&p.rc), 1, "a %s park was interrupted",
                         fs_park_reason_name(whys[i]));
            cr_assert(fs_unpark(f, atomic_load(&p.tok)));
        }
        cr_assert_eq(fs_join(f, NULL, FS_NO_DEADLINE), 0);
        cr_assert_eq(atomic_load(&p.rc), ends ? -EINTR : 0);
    }
}

/* A hook run while a fiber is inside fs_park is held back until the park
 * is over, so a hook that parks (a signal handler calling sleep()) leaves
 * the interrupted park's outcome and timer alone. */
static _Atomic int hook_parks;
static void parking_hook(fs_fiber *f)
{
    (void)f;
    atomic_fetch_add(&hook_parks, 1);
    fs_sleep_until(fs_now() + 2 * MS);
}

static void *timed_parker(void *arg)
{
    struct intr *p = arg;
    atomic_store(&p->self, fs_self());
    fs_park_token tok = fs_park_prepare();
    atomic_store(&p->tok, tok);
    atomic_store(&p->rc, fs_park(tok, p->why, NULL, fs_now() + 60000 * MS, NULL, NULL));
    /* The outer park's timer is gone: a later park is not cut short. */
    int64_t t0 = fs_now();
    fs_sleep_until(t0 + 30 * MS);
    if (fs_now() - t0 < 30 * MS)
        atomic_store(&p->rc, 99);
    return NULL;
}

Test(park, hook_that_parks_runs_after_the_park)
{
    start(1);
    fs_set_interrupt_hook(parking_hook);
    struct intr p = {.why = FS_PARK_RWLOCK, .rc = 1};
    fs_fiber *f;
    cr_assert_eq(fs_spawn(&f, timed_parker, &p, NULL), 0);
    unsigned n = 0;
    while (!atomic_load(&p.tok))
        spin_pause(&n);
    nanosleep(&(struct timespec){0, 20 * MS}, NULL);
    fs_interrupt(atomic_load(&p.self));
    cr_assert_eq(fs_join(f, NULL, FS_NO_DEADLINE), 0);
    cr_assert_eq(atomic_load(&p.rc), -EINTR);
    cr_assert_geq(atomic_load(&hook_parks), 1);
}
