// fibershim-carriers: 1 2
// fibershim-no-fiber-tls: 1 2
/* Handles of threads that have ended, given back to pthread calls.
 *
 * POSIX leaves these undefined; glibc (2.36) answers them from the
 * descriptor it keeps cached until a new thread reuses it. Only cases whose
 * answer cannot depend on such reuse are checked: no thread is created
 * between a thread's end and the calls on its handle.
 *  - a joined thread: pthread_join, pthread_timedjoin_np, pthread_detach
 *    ESRCH; pthread_tryjoin_np EBUSY (glibc looks at the kernel tid
 *    first); pthread_kill(t, 0) 0 (glibc sends nothing to an exited
 *    thread); pthread_getschedparam and pthread_getcpuclockid ESRCH.
 *  - a thread detached at creation that has ended, and a joinable one
 *    detached after it ended: join, tryjoin, timedjoin and detach EINVAL.
 *  - a thread detached while it runs: EINVAL, before and after it ends.
 * Then the program must still work: 500 threads created and joined, with
 * their return values right. A shim that hands such a handle to glibc, or
 * reads the freed record behind it, crashes, hangs or corrupts the heap.
 */
#include "common.h"

#include <semaphore.h>

static sem_t go, done;

static void *ret_arg(void *arg)
{
    return arg;
}

/* Posts done, then returns: the caller waits for done and a little more,
 * so the thread has ended by the time its handle is used. */
static void *post_and_end(void *arg)
{
    CHECK(sem_post(&done) == 0);
    return arg;
}

static void *wait_go(void *arg)
{
    while (sem_wait(&go) != 0) {
    }
    CHECK(sem_post(&done) == 0);
    return arg;
}

static void wait_done(void)
{
    while (sem_wait(&done) != 0) {
    }
    sleep_ms(50);
}

static void joined(void)
{
    pthread_t t;
    void *r = NULL;
    CHECK_RC(pthread_create(&t, NULL, ret_arg, (void *)5L));
    CHECK_RC(pthread_join(t, &r));
    printf("joined thread returned %ld\n", (long)r);
    struct timespec dl = deadline_ms(CLOCK_REALTIME, 1000);
    int pol;
    struct sched_param sp;
    clockid_t c;
    printf("joined: join %s\n", errname(pthread_join(t, &r)));
    printf("joined: timedjoin_np %s\n", errname(pthread_timedjoin_np(t, &r, &dl)));
    printf("joined: tryjoin_np %s\n", errname(pthread_tryjoin_np(t, &r)));
    printf("joined: detach %s\n", errname(pthread_detach(t)));
    printf("joined: kill 0 %s\n", errname(pthread_kill(t, 0)));
    printf("joined: getschedparam %s\n", errname(pthread_getschedparam(t, &pol, &sp)));
    printf("joined: getcpuclockid %s\n", errname(pthread_getcpuclockid(t, &c)));
    printf("joined: join again %s\n", errname(pthread_join(t, &r)));
}

static void detached_ended(void)
{
    pthread_attr_t a;
    CHECK_RC(pthread_attr_init(&a));
    CHECK_RC(pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED));
    pthread_t t;
    void *r;
    CHECK_RC(pthread_create(&t, &a, post_and_end, NULL));
    pthread_attr_destroy(&a);
    wait_done();
    struct timespec dl = deadline_ms(CLOCK_REALTIME, 1000);
    printf("ended detached: join %s\n", errname(pthread_join(t, &r)));
    printf("ended detached: tryjoin_np %s\n", errname(pthread_tryjoin_np(t, &r)));
    printf("ended detached: timedjoin_np %s\n", errname(pthread_timedjoin_np(t, &r, &dl)));
    printf("ended detached: detach %s\n", errname(pthread_detach(t)));
    printf("ended detached: join again %s\n", errname(pthread_join(t, &r)));
}

static void detached_after_end(void)
{
    pthread_t t;
    void *r;
    CHECK_RC(pthread_create(&t, NULL, post_and_end, NULL));
    wait_done();
    printf("detach after its end: %s\n", errname(pthread_detach(t)));
    printf("then: join %s\n", errname(pthread_join(t, &r)));
    printf("then: detach %s\n", errname(pthread_detach(t)));
}

static void detached_running(void)
{
    pthread_t t;
    void *r;
    CHECK_RC(pthread_create(&t, NULL, wait_go, NULL));
    printf("detach a running thread: %s\n", errname(pthread_detach(t)));
    printf("running detached: join %s\n", errname(pthread_join(t, &r)));
    printf("running detached: detach %s\n", errname(pthread_detach(t)));
    CHECK(sem_post(&go) == 0);
    wait_done();
    printf("after its end: join %s\n", errname(pthread_join(t, &r)));
    printf("after its end: detach %s\n", errname(pthread_detach(t)));
}

int main(void)
{
    tp_setup(60);
    CHECK(sem_init(&go, 0, 0) == 0);
    CHECK(sem_init(&done, 0, 0) == 0);
    joined();
    detached_ended();
    detached_after_end();
    detached_running();

    enum { N = 500 };
    static pthread_t t[N];
    long right = 0;
    for (long i = 0; i < N; i++)
        CHECK_RC(pthread_create(&t[i], NULL, ret_arg, (void *)(i * 3)));
    for (long i = 0; i < N; i++) {
        void *r;
        CHECK_RC(pthread_join(t[i], &r));
        right += (long)r == i * 3;
    }
    printf("then %d threads created and joined, return values right: %ld\n", N, right);
    printf("stale_handles: ok\n");
    return 0;
}
