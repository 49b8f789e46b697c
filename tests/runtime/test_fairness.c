/*
 * test_fairness.c - a carrier that never runs out of runnable fibers must
 * still harvest I/O readiness and fire timers for its parked fibers.
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
