/* Joining from the main thread.
 *  - 200 threads, some exit at once, some later: join them all in creation
 *    order (some have long exited, some are still running) and check every
 *    return value.
 *  - pthread_tryjoin_np: EBUSY while the thread runs, 0 after it exits.
 *  - pthread_timedjoin_np (CLOCK_REALTIME deadline) and
 *    pthread_clockjoin_np (CLOCK_MONOTONIC): ETIMEDOUT, not early, then
 *    success with the return value.
 *  - pthread_join(pthread_self()): EDEADLK. Joining a detached (still
 *    running) thread: EINVAL; detaching it again: EINVAL.
 *  - a thread joined by another (non-main) thread.
 */
#include "common.h"
#include <semaphore.h>

#define N 200

static void *worker(void *arg)
{
    long i = (long)arg;
    if (i % 4 == 0)
        return (void *)(i * 3);
    sleep_ms((i % 5) * 10);
    pthread_exit((void *)(i * 3));
}

static sem_t go;

static void *waits_for_go(void *arg)
{
    while (sem_wait(&go) != 0) {
    }
    return arg;
}

static pthread_t join_target;

static void *joiner(void *unused)
{
    void *r;
    CHECK_RC(pthread_join(join_target, &r));
    return r;
}

int main(void)
{
    tp_setup(60);
    pthread_t t[N];
    for (long i = 0; i < N; i++)
        CHECK_RC(pthread_create(&t[i], NULL, worker, (void *)i));
    sleep_ms(20);
    long sum = 0, want = 0;
    int right = 0;
    for (long i = 0; i < N; i++) {
        void *r;
        CHECK_RC(pthread_join(t[i], &r));
        right += (long)r == i * 3;
        sum += (long)r;
        want += i * 3;
    }
    printf("joined %d threads, return values right: %d, sum %ld (expected %ld)\n", N, right,
           sum, want);

    sem_init(&go, 0, 0);
    pthread_t a;
    void *r;

    /* tryjoin */
    CHECK_RC(pthread_create(&a, NULL, waits_for_go, (void *)7L));
    int rc = pthread_tryjoin_np(a, &r);
    printf("tryjoin_np on a running thread: %s\n", errname(rc));
    sem_post(&go);
    int64_t start = now_ns();
    while ((rc = pthread_tryjoin_np(a, &r)) == EBUSY && ms_since(start) < 10000)
        sleep_ms(1);
    printf("tryjoin_np after it exited: %s, value %ld\n", errname(rc), (long)r);

    /* timedjoin (CLOCK_REALTIME) */
    CHECK_RC(pthread_create(&a, NULL, waits_for_go, (void *)8L));
    struct timespec dl = deadline_ms(CLOCK_REALTIME, 100);
    start = now_ns();
    rc = pthread_timedjoin_np(a, &r, &dl);
    double el = ms_since(start);
    printf("timedjoin_np 100ms on a blocked thread: %s, not early: %s, late < %.0fms: %s\n",
           errname(rc), yesno(el >= 100.0), LATE_TOLERANCE_MS,
           yesno(el < 100.0 + LATE_TOLERANCE_MS));
    sem_post(&go);
    dl = deadline_ms(CLOCK_REALTIME, 10000);
    rc = pthread_timedjoin_np(a, &r, &dl);
    printf("timedjoin_np after release: %s, value %ld\n", errname(rc), (long)r);

    /* clockjoin (CLOCK_MONOTONIC) */
    CHECK_RC(pthread_create(&a, NULL, waits_for_go, (void *)9L));
    dl = deadline_ms(CLOCK_MONOTONIC, 100);
    start = now_ns();
    rc = pthread_clockjoin_np(a, &r, CLOCK_MONOTONIC, &dl);
    el = ms_since(start);
    printf("clockjoin_np MONOTONIC 100ms on a blocked thread: %s, not early: %s\n",
           errname(rc), yesno(el >= 100.0));
    sem_post(&go);
    dl = deadline_ms(CLOCK_MONOTONIC, 10000);
    rc = pthread_clockjoin_np(a, &r, CLOCK_MONOTONIC, &dl);
    printf("clockjoin_np after release: %s, value %ld\n", errname(rc), (long)r);

    /* a deadline already in the past on an exited thread still joins */
    CHECK_RC(pthread_create(&a, NULL, worker, (void *)4L));
    sleep_ms(20);
    dl = deadline_ms(CLOCK_REALTIME, -1000);
    rc = pthread_timedjoin_np(a, &r, &dl);
    printf("timedjoin_np with a past deadline on an exited thread: %s, value %ld\n",
           errname(rc), (long)r);

    /* self and detached */
    printf("join self: %s\n", errname(pthread_join(pthread_self(), NULL)));
    pthread_attr_t attr;
    CHECK_RC(pthread_attr_init(&attr));
    CHECK_RC(pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED));
    CHECK_RC(pthread_create(&a, &attr, waits_for_go, NULL));
    pthread_attr_destroy(&attr);
    printf("join a detached running thread: %s\n", errname(pthread_join(a, NULL)));
    printf("detach it again: %s\n", errname(pthread_detach(a)));
    CHECK_RC(pthread_create(&a, NULL, waits_for_go, (void *)11L));
    CHECK_RC(pthread_detach(a));
    printf("join a thread detached after creation: %s\n", errname(pthread_join(a, NULL)));
    sem_post(&go);
    sem_post(&go);

    /* joined by another thread */
    CHECK_RC(pthread_create(&join_target, NULL, waits_for_go, (void *)12L));
    pthread_t j;
    CHECK_RC(pthread_create(&j, NULL, joiner, NULL));
    sleep_ms(20);
    sem_post(&go);
    CHECK_RC(pthread_join(j, &r));
    printf("thread joined by another thread: value %ld\n", (long)r);

    printf("join_main: ok\n");
    return 0;
}
