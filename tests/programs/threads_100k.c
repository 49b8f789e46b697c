/* 100,000 concurrent threads, all blocked at once: even-numbered ones in
 * nanosleep(200 ms) loops, odd-numbered ones in pthread_cond_wait. Once all
 * have started, main releases them (flag + broadcast) and joins them all.
 *
 * Under the shim (fibers) this must succeed and print
 *   created 100000 threads / sleepers: 50000 / waiters: 50000 / all joined.
 * With plain kernel threads it cannot: pthread_create fails somewhere
 * (pid_max is 32768 here; stack mmaps or RLIMIT_AS may run out first). The
 * program then reports "pthread_create failed at N: <ERRNO>", releases and
 * joins every thread it did create, prints "woke and joined all created
 * threads" and exits 3. The ctest for that case runs it under a 640 MiB
 * address-space limit so that it fails fast without exhausting the
 * machine-wide pid space. Thread stacks: 32 KiB (each thread only sleeps or
 * waits). */
#include "common.h"
#include <stdatomic.h>

#define N 100000
#define STACK (32 * 1024)

static pthread_t t[N];
static atomic_int started;
static atomic_int released;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int released_locked; /* protected by mu */
static atomic_int sleepers_done, waiters_done;

static void *sleeper(void *arg)
{
    atomic_fetch_add(&started, 1);
    while (!atomic_load(&released)) {
        struct timespec ts = {0, 200 * 1000 * 1000};
        if (nanosleep(&ts, NULL) != 0 && errno != EINTR)
            FAIL("nanosleep: %s", errname(errno));
    }
    atomic_fetch_add(&sleepers_done, 1);
    return NULL;
}

static void *waiter(void *arg)
{
    pthread_mutex_lock(&mu);
    atomic_fetch_add(&started, 1);
    while (!released_locked)
        CHECK_RC(pthread_cond_wait(&cv, &mu));
    pthread_mutex_unlock(&mu);
    atomic_fetch_add(&waiters_done, 1);
    return NULL;
}

static void release_all(void)
{
    atomic_store(&released, 1);
    pthread_mutex_lock(&mu);
    released_locked = 1;
    CHECK_RC(pthread_cond_broadcast(&cv));
    pthread_mutex_unlock(&mu);
}

int main(void)
{
    tp_setup(100);
    pthread_attr_t attr;
    CHECK_RC(pthread_attr_init(&attr));
    CHECK_RC(pthread_attr_setstacksize(&attr, STACK));

    int created = 0, err = 0;
    for (int i = 0; i < N; i++) {
        int rc = pthread_create(&t[i], &attr, (i % 2) ? waiter : sleeper, NULL);
        if (rc) {
            err = rc;
            break;
        }
        created++;
    }
    pthread_attr_destroy(&attr);

    if (err) {
        printf("pthread_create failed at %d: %s\n", created, errname(err));
        fflush(stdout);
        release_all();
        for (int i = 0; i < created; i++)
            CHECK_RC(pthread_join(t[i], NULL));
        printf("woke and joined all created threads\n");
        return 3;
    }
    printf("created %d threads\n", created);

    /* wait until every thread is running (sleeping or waiting) */
    while (atomic_load(&started) < N)
        sleep_ms(10);
    /* every waiter has been counted while holding mu, and releases it only
     * inside pthread_cond_wait: once we get mu, all of them are waiting */
    pthread_mutex_lock(&mu);
    pthread_mutex_unlock(&mu);
    printf("all started: yes\n");

    release_all();
    for (int i = 0; i < N; i++)
        CHECK_RC(pthread_join(t[i], NULL));
    printf("sleepers: %d\n", atomic_load(&sleepers_done));
    printf("waiters: %d\n", atomic_load(&waiters_done));
    printf("all joined\n");
    return 0;
}
