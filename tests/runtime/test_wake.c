/*
 * test_wake.c - a kick that wakes a sleeping carrier is never lost, even
 * when another thread polls that carrier's epoll instance at the same
 * moment (the monitor harvests the epoll of a carrier it judges stuck, and
 * can judge one stuck just as it goes to sleep).
 *
 * The race, as it hung a condition-variable ping-pong about once in 30
 * million hand-overs: carrier C sleeps in epoll_wait; a waker pushes a
 * fiber into C's inbox and writes C's eventfd (notified = 1); the monitor's
 * zero-timeout epoll_wait on C's instance takes the eventfd's edge before
 * C's thread is scheduled; C finds the ready list empty and sleeps on,
 * and every later kick skips the write because notified is still 1.
 * This test makes the monitor's move on purpose, 200 times in a row.
 *
 * Also: the idle spin (fs_config.idle_spin_ns) loses no wake: a carrier
 * that is spinning, not sleeping, gets no eventfd write, so it must see
 * the work itself, and its timers must still fire.
 */
#include "util.h"

#include "internal.h"

#include <errno.h>

#define ROUNDS 200

static _Atomic(struct fs_fiber *) parked_fiber;
static _Atomic uint64_t parked_tok;
static _Atomic int resumed;

static void *sleeper(void *arg)
{
    for (int i = 0; i < ROUNDS; i++) {
        fs_park_token tok = fs_park_prepare();
        atomic_store(&parked_tok, tok);
        atomic_store(&parked_fiber, fs_self());
        fs_park(tok, FS_PARK_OTHER, NULL, FS_NO_DEADLINE, NULL, NULL);
        atomic_fetch_add(&resumed, 1);
    }
    return NULL;
}

/* Waits (from the plain test thread) until f is parked for good and its
 * carrier sleeps in epoll_wait. */
static struct fs_sched *wait_parked_and_asleep(struct fs_fiber *f, uint64_t tok)
{
    for (int i = 0; i < 20000; i++) {
        uint64_t w = atomic_load(&f->park);
        struct fs_sched *home = f->home;
        if (w == ((tok << 2) | FS_PW_PARKED) && home && atomic_load(&home->sleeping)) {
            usleep(200); /* past the final checks, into the system call */
            if (atomic_load(&home->sleeping))
                return home;
        }
        usleep(50);
    }
    return NULL;
}

Test(wake, kick_survives_foreign_poll, .timeout = 60)
{
    cr_assert_eq(fs_init(&(struct fs_config){.carriers = 2}), 0);
    fs_fiber *f;
    cr_assert_eq(fs_spawn(&f, sleeper, NULL, NULL), 0);
    for (int i = 0; i < ROUNDS; i++) {
        struct fs_fiber *pf;
        while (!(pf = atomic_exchange(&parked_fiber, NULL)))
            usleep(50);
        uint64_t tok = atomic_load(&parked_tok);
        struct fs_sched *home = wait_parked_and_asleep(pf, tok);
        cr_assert_not_null(home, "round %d: the fiber never parked on a sleeping carrier", i);
        /* The waker: a plain thread, so the fiber goes to its home inbox
         * and the home carrier gets a kick. */
        cr_assert(fs_unpark(pf, tok));
        /* The monitor, at the worst moment. */
        fs__netpoll_foreign(home);
        int64_t until = fs_now() + 2000 * MS;
        while (atomic_load(&resumed) != i + 1 && fs_now() < until)
            usleep(100);
        cr_assert_eq(atomic_load(&resumed), i + 1,
                     "round %d: the woken fiber did not run within 2 s (lost kick)", i);
    }
    fs_join(f, NULL, FS_NO_DEADLINE);
}

/* ---- the idle spin ------------------------------------------------------- */

/* A one-waiter binary semaphore: 0 empty, 1 posted, else the parked
 * waiter's record. */
struct bsem {
    _Atomic uintptr_t st;
};

struct bwait {
    fs_fiber *f;
    fs_park_token tok;
    struct bsem *s;
};

static bool bsem_commit(void *arg)
{
    struct bwait *w = arg;
    uintptr_t zero = 0;
    if (atomic_compare_exchange_strong(&w->s->st, &zero, (uintptr_t)w))
        return true;
    atomic_store(&w->s->st, 0); /* it was posted: take it, do not park */
    return false;
}

static void bsem_wait(struct bsem *s)
{
    uintptr_t one = 1;
    if (atomic_compare_exchange_strong(&s->st, &one, 0))
        return;
    struct bwait w = {fs_self(), 0, s};
    w.tok = fs_park_prepare();
    fs_park(w.tok, FS_PARK_OTHER, s, FS_NO_DEADLINE, bsem_commit, &w);
}

static void bsem_post(struct bsem *s)
{
    uintptr_t v = atomic_load(&s->st);
    for (;;) {
        if (atomic_compare_exchange_weak(&s->st, &v, v == 0 ? 1 : 0)) {
            if (v > 1) {
                struct bwait *w = (struct bwait *)v;
                fs_unpark(w->f, w->tok);
            }
            return;
        }
    }
}

#define SPIN_ROUNDS 20000

static struct bsem spin_a, spin_b;
static _Atomic int spin_a_up, spin_b_up;
static _Atomic pid_t spin_carrier[2];

/* Pinned where it first runs; the first one busy-waits for the second, so
 * the two start on different carriers. */
static void *spin_player(void *arg)
{
    int me = (int)(intptr_t)arg;
    fs_pin(fs_self());
    atomic_store(&spin_carrier[me], test_gettid()); /* its carrier's thread */
    if (me == 0) {
        atomic_store(&spin_a_up, 1);
        while (!atomic_load(&spin_b_up))
            ;
    } else {
        atomic_store(&spin_b_up, 1);
    }
    for (int i = 0; i < SPIN_ROUNDS; i++) {
        if (me == 0) {
            bsem_post(&spin_b);
            bsem_wait(&spin_a);
        } else {
            bsem_wait(&spin_b);
            bsem_post(&spin_a);
        }
    }
    return NULL;
}

static _Atomic int spin_ticks;

static void *spin_ticker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 50; i++) {
        fs_sleep_until(fs_now() + 200 * US);
        atomic_fetch_add(&spin_ticks, 1);
    }
    return NULL;
}

/* Cross-carrier ping-pong with the longest idle spin: every wake reaches
 * a carrier that may be spinning (no eventfd write), and a fiber sleeping
 * meanwhile still wakes (the spin ends at the carrier's next timer). */
Test(wake, idle_spin_loses_no_wake, .timeout = 120)
{
    cr_assert_eq(fs_init(&(struct fs_config){.carriers = 2, .idle_spin_ns = FS_MAX_IDLE_SPIN_NS}),
                 0);
    fs_fiber *a, *b, *t;
    cr_assert_eq(fs_spawn(&a, spin_player, (void *)0, NULL), 0);
    while (!atomic_load(&spin_a_up))
        usleep(50);
    cr_assert_eq(fs_spawn(&b, spin_player, (void *)1, NULL), 0);
    cr_assert_eq(fs_spawn(&t, spin_ticker, NULL, NULL), 0);
    cr_assert_eq(fs_join(a, NULL, FS_NO_DEADLINE), 0);
    cr_assert_eq(fs_join(b, NULL, FS_NO_DEADLINE), 0);
    cr_assert_eq(fs_join(t, NULL, FS_NO_DEADLINE), 0);
    cr_assert_eq(atomic_load(&spin_ticks), 50);
    cr_expect_neq(atomic_load(&spin_carrier[0]), atomic_load(&spin_carrier[1]),
                  "both players ran on one carrier: no wake crossed carriers");
}

Test(wake, idle_spin_out_of_range_is_refused)
{
    cr_assert_eq(fs_init(&(struct fs_config){.carriers = 2,
                                             .idle_spin_ns = FS_MAX_IDLE_SPIN_NS + 1}),
                 -EINVAL);
    cr_assert_eq(fs_init(&(struct fs_config){.carriers = 2, .idle_spin_ns = FS_IDLE_SPIN_OFF - 1}),
                 -EINVAL);
}
