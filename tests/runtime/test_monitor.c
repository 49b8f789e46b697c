/*
 * test_monitor.c - the monitor harvests the epoll of a stuck carrier, so a
 * fiber that may run elsewhere (migration on) is not held up by it.
 */
#include <criterion/criterion.h>

#include "fibershim.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

static int sv[2];
static _Atomic int64_t woke_at, spin_end;

static void *waiter(void *arg)
{
    char c;
    for (;;) {
        uint32_t snap = fs_fd_edges(sv[0], FS_POLL_READ);
        if (recv(sv[0], &c, 1, MSG_DONTWAIT) == 1)
            break;
        fs_wait_fd(sv[0], FS_POLL_READ, snap, FS_NO_DEADLINE, FS_PARK_READ);
    }
    atomic_store(&woke_at, fs_now());
    return NULL;
}

static void *spinner(void *arg)
{
    int64_t end = fs_now() + 800 * 1000000LL;
    while (fs_now() < end)
        ; /* a CPU-bound handler: never parks, never yields */
    atomic_store(&spin_end, fs_now());
    return NULL;
}

static void *boss(void *arg)
{
    fs_fiber *w, *s;
    fs_spawn(&w, waiter, NULL, NULL);          /* runnext: runs here next */
    fs_sleep_until(fs_now() + 20 * 1000000);   /* waiter registers and parks */
    fs_spawn(&s, spinner, NULL, NULL);         /* runnext again: this carrier */
    fs_sleep_until(fs_now() + 1000000);        /* the spinner takes the carrier */
    fs_join(w, NULL, FS_NO_DEADLINE);
    fs_join(s, NULL, FS_NO_DEADLINE);
    return NULL;
}

static void *late_writer(void *arg)
{
    usleep(150000);
    (void)!write(sv[1], "x", 1);
    return NULL;
}

Test(monitor, stuck_carrier_events_are_harvested, .timeout = 30)
{
    fs_init(&(struct fs_config){.carriers = 2, .migrate = true});
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fs_fiber *b;
    fs_spawn(&b, boss, NULL, NULL);
    pthread_t t;
    pthread_create(&t, NULL, late_writer, NULL);
    fs_join(b, NULL, FS_NO_DEADLINE);
    pthread_join(t, NULL);
    struct fs_stats st;
    fs_stats_get(&st);
    cr_assert_lt(atomic_load(&woke_at), atomic_load(&spin_end),
                 "the waiter woke only after the stuck carrier was free");
    cr_assert_gt(st.monitor_harvests, 0);
}
