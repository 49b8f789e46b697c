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
 */
#include "util.h"

#include "internal.h"

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
