/*
 * test_fairness.c - a carrier that never runs out of runnable fibers must
 * still harvest I/O readiness and fire timers for its parked fibers, and
 * serve its runnable fibers in turn even when they outnumber its ring.
 */
#include <criterion/criterion.h>

#include "fibershim.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

static int sv[2];
static atomic_int done;

static void *spinner(void *arg)
{
    while (!atomic_load(&done))
        fs_yield();
    return NULL;
}

static void *reader(void *arg)
{
    char c;
    for (;;) {
        uint32_t snap = fs_fd_edges(sv[0], FS_POLL_READ);
        if (recv(sv[0], &c, 1, MSG_DONTWAIT) == 1)
            break;
        if (errno != EAGAIN)
            return (void *)1;
        fs_wait_fd(sv[0], FS_POLL_READ, snap, FS_NO_DEADLINE, FS_PARK_READ);
    }
    atomic_store(&done, 1);
    return NULL;
}

static void *late_writer(void *arg)
{
    usleep(20000);
    (void)!write(sv[1], "x", 1);
    return NULL;
}

Test(fairness, io_readiness_reaches_a_busy_carrier, .timeout = 20)
{
    fs_init(&(struct fs_config){.carriers = 1});
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fs_fiber *r, *a, *b;
    fs_spawn(&r, reader, NULL, NULL);
    fs_spawn(&a, spinner, NULL, NULL);
    fs_spawn(&b, spinner, NULL, NULL);
    pthread_t w;
    pthread_create(&w, NULL, late_writer, NULL);
    void *ret;
    cr_assert_eq(fs_join(r, &ret, FS_NO_DEADLINE), 0);
    cr_assert_null(ret);
    fs_join(a, NULL, FS_NO_DEADLINE);
    fs_join(b, NULL, FS_NO_DEADLINE);
    pthread_join(w, NULL);
}

static void *sleeper(void *arg)
{
    fs_sleep_until(fs_now() + 20 * 1000000);
    atomic_store(&done, 1);
    return NULL;
}

Test(fairness, timers_fire_on_a_busy_carrier, .timeout = 20)
{
    fs_init(&(struct fs_config){.carriers = 1});
    fs_fiber *s, *a, *b;
    fs_spawn(&s, sleeper, NULL, NULL);
    fs_spawn(&a, spinner, NULL, NULL);
    fs_spawn(&b, spinner, NULL, NULL);
    cr_assert_eq(fs_join(s, NULL, FS_NO_DEADLINE), 0);
    fs_join(a, NULL, FS_NO_DEADLINE);
    fs_join(b, NULL, FS_NO_DEADLINE);
}

/* ---- more runnable fibers than the ring holds ---------------------------- */

/* 600 fibers (over twice FS_RING_SIZE) yield on one carrier, 100 turns
 * each. Every turn takes the next number of one counter; a fiber notes
 * the largest step between its own turns. One FIFO over the ring and the
 * global queue it spills into gives steps of about 600. Before
 * fs__queue_movable, the 256 fibers in the ring took every slot a pop
 * freed and the other 344 ran once in 61 schedules: steps of ~20,000
 * (Apache at one carrier answered 1% of requests after 1.2-1.7 s). Counts,
 * not times: a slow or loaded machine changes nothing. */
enum { CROWD = 600, CROWD_TURNS = 100 };
static atomic_ulong crowd_clock;
static atomic_int crowd_go;
static unsigned long crowd_gap[CROWD];

static void *crowd_member(void *arg)
{
    unsigned i = (unsigned)(uintptr_t)arg;
    while (!atomic_load(&crowd_go)) /* until all are spawned */
        fs_yield();
    unsigned long last = atomic_fetch_add(&crowd_clock, 1), gap = 0;
    for (int t = 1; t < CROWD_TURNS; t++) {
        fs_yield();
        unsigned long now = atomic_fetch_add(&crowd_clock, 1);
        if (now - last > gap)
            gap = now - last;
        last = now;
    }
    crowd_gap[i] = gap;
    return NULL;
}

/* No handoff, so no monitor (one carrier). A monitor that judges the
 * carrier stuck (its thread blocked in the kernel for 10 ms: a page fault
 * on a loaded machine) moves the fiber in its runnext slot to the global
 * queue's tail, behind the 344 the ring could not hold, and that fiber
 * then waits ~20,000 turns. That is what the monitor does to a stuck
 * carrier, not what this test is about, and the likely cause of the one
 * failure seen (CI, 2026-11-30: 12,515 turns; 0 in 120 runs here, 60 of
 * them 10 at once). */
Test(fairness, more_fibers_than_the_ring_take_turns, .timeout = 60)
{
    fs_init(&(struct fs_config){.carriers = 1, .handoff_off = true});
    static fs_fiber *f[CROWD];
    for (unsigned i = 0; i < CROWD; i++)
        cr_assert_eq(fs_spawn(&f[i], crowd_member, (void *)(uintptr_t)i, NULL), 0);
    atomic_store(&crowd_go, 1);
    unsigned long worst = 0;
    for (unsigned i = 0; i < CROWD; i++) {
        cr_assert_eq(fs_join(f[i], NULL, FS_NO_DEADLINE), 0);
        worst = crowd_gap[i] > worst ? crowd_gap[i] : worst;
    }
    cr_log_info("worst step between a fiber's turns: %lu (%u fibers)", worst, CROWD);
    cr_assert_leq(worst, 2 * CROWD, "a fiber waited %lu turns of others; %u fibers share the carrier",
                  worst, CROWD);
}
