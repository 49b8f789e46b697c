/* Reader-writer locks and semaphores.
 * rwlock: readers hold it concurrently; writers are exclusive (checked
 * under contention); try variants EBUSY; timed/clock variants ETIMEDOUT
 * not early; a write-lock owner relocking (read or write) gets EDEADLK.
 * semaphores: sem_init/getvalue/trywait EAGAIN/timedwait ETIMEDOUT/
 * clockwait/post waking a blocked waiter/producer-consumer counts/
 * EOVERFLOW at SEM_VALUE_MAX/EINVAL for a bad tv_nsec; a named semaphore.
 */
#include "common.h"
#include <limits.h>
#include <semaphore.h>
#include <stdatomic.h>

/* ---------------- rwlock ---------------- */

static pthread_rwlock_t rw = PTHREAD_RWLOCK_INITIALIZER;
static atomic_int readers_in, max_readers, writers_in, violations;
static long protected_value;

#define NREADERS 8

static void *concurrent_reader(void *unused)
{
    CHECK_RC(pthread_rwlock_rdlock(&rw));
    int n = atomic_fetch_add(&readers_in, 1) + 1;
    int m = atomic_load(&max_readers);
    while (n > m && !atomic_compare_exchange_weak(&max_readers, &m, n)) {
    }
    /* hold the read lock until every reader holds it (bounded) */
    int64_t s = now_ns();
    while (atomic_load(&max_readers) < NREADERS && ms_since(s) < 5000)
        sleep_ms(1);
    atomic_fetch_sub(&readers_in, 1);
    CHECK_RC(pthread_rwlock_unlock(&rw));
    return NULL;
}

#define ROUNDS 3000
static void *mixed_reader(void *unused)
{
    for (int i = 0; i < ROUNDS; i++) {
        CHECK_RC(pthread_rwlock_rdlock(&rw));
        atomic_fetch_add(&readers_in, 1);
        if (atomic_load(&writers_in) != 0)
            atomic_fetch_add(&violations, 1);
        if (i % 500 == 0)
            sched_yield();
        atomic_fetch_sub(&readers_in, 1);
        CHECK_RC(pthread_rwlock_unlock(&rw));
    }
    return NULL;
}

static void *mixed_writer(void *unused)
{
    for (int i = 0; i < ROUNDS; i++) {
        CHECK_RC(pthread_rwlock_wrlock(&rw));
        if (atomic_fetch_add(&writers_in, 1) != 0 || atomic_load(&readers_in) != 0)
            atomic_fetch_add(&violations, 1);
        long v = protected_value;
        if (i % 500 == 0)
            sched_yield();
        protected_value = v + 1;
        atomic_fetch_sub(&writers_in, 1);
        CHECK_RC(pthread_rwlock_unlock(&rw));
    }
    return NULL;
}

struct tryres {
    int rd, wr;
};
static void *try_both(void *arg)
{
    struct tryres *r = arg;
    r->rd = pthread_rwlock_tryrdlock(&rw);
    if (r->rd == 0)
        pthread_rwlock_unlock(&rw);
    r->wr = pthread_rwlock_trywrlock(&rw);
    if (r->wr == 0)
        pthread_rwlock_unlock(&rw);
    return NULL;
}
static struct tryres try_from_other(void)
{
    struct tryres r = {-1, -1};
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, try_both, &r));
    CHECK_RC(pthread_join(t, NULL));
    return r;
}

struct timedres {
    int rc[4];
    int early;
};
static void *timed_all(void *arg)
{
    struct timedres *r = arg;
    for (int k = 0; k < 4; k++) {
        clockid_t clk = (k % 2) ? CLOCK_MONOTONIC : CLOCK_REALTIME;
        struct timespec dl = deadline_ms(clk, 100);
        int64_t s = now_ns();
        switch (k) {
        case 0: r->rc[k] = pthread_rwlock_timedrdlock(&rw, &dl); break;
        case 1: r->rc[k] = pthread_rwlock_clockrdlock(&rw, CLOCK_MONOTONIC, &dl); break;
        case 2: r->rc[k] = pthread_rwlock_timedwrlock(&rw, &dl); break;
        case 3: r->rc[k] = pthread_rwlock_clockwrlock(&rw, CLOCK_MONOTONIC, &dl); break;
        }
        if (r->rc[k] == 0)
            pthread_rwlock_unlock(&rw);
        if (r->rc[k] == ETIMEDOUT && ms_since(s) < 100.0)
            r->early++;
    }
    return NULL;
}

static void rwlock_tests(void)
{
    pthread_t t[NREADERS];
    for (int i = 0; i < NREADERS; i++)
        CHECK_RC(pthread_create(&t[i], NULL, concurrent_reader, NULL));
    for (int i = 0; i < NREADERS; i++)
        CHECK_RC(pthread_join(t[i], NULL));
    printf("rwlock: %d readers held the lock at the same time: %s\n", NREADERS,
           yesno(max_readers == NREADERS));

    pthread_t m[8];
    for (int i = 0; i < 8; i++)
        CHECK_RC(pthread_create(&m[i], NULL, i % 2 ? mixed_writer : mixed_reader, NULL));
    for (int i = 0; i < 8; i++)
        CHECK_RC(pthread_join(m[i], NULL));
    printf("rwlock: 4 writers + 4 readers x %d: exclusion violations %d, writes %ld\n", ROUNDS,
           (int)violations, protected_value);

    CHECK_RC(pthread_rwlock_rdlock(&rw));
    struct tryres r = try_from_other();
    printf("read-locked: other thread tryrdlock %s, trywrlock %s\n", errname(r.rd), errname(r.wr));
    struct timedres tr = {{-1, -1, -1, -1}, 0};
    pthread_t tt;
    CHECK_RC(pthread_create(&tt, NULL, timed_all, &tr));
    CHECK_RC(pthread_join(tt, NULL));
    printf("read-locked: timedrdlock %s, clockrdlock %s, timedwrlock %s, clockwrlock %s, "
           "timeouts early: %s\n",
           errname(tr.rc[0]), errname(tr.rc[1]), errname(tr.rc[2]), errname(tr.rc[3]),
           yesno(tr.early != 0));
    CHECK_RC(pthread_rwlock_unlock(&rw));

    CHECK_RC(pthread_rwlock_wrlock(&rw));
    r = try_from_other();
    printf("write-locked: other thread tryrdlock %s, trywrlock %s\n", errname(r.rd), errname(r.wr));
    tr = (struct timedres){{-1, -1, -1, -1}, 0};
    CHECK_RC(pthread_create(&tt, NULL, timed_all, &tr));
    CHECK_RC(pthread_join(tt, NULL));
    printf("write-locked: timedrdlock %s, clockrdlock %s, timedwrlock %s, clockwrlock %s, "
           "timeouts early: %s\n",
           errname(tr.rc[0]), errname(tr.rc[1]), errname(tr.rc[2]), errname(tr.rc[3]),
           yesno(tr.early != 0));
    int wr_again = pthread_rwlock_wrlock(&rw);
    int rd_again = pthread_rwlock_rdlock(&rw);
    printf("write-lock owner: wrlock again %s, rdlock %s\n", errname(wr_again), errname(rd_again));
    CHECK_RC(pthread_rwlock_unlock(&rw));
    r = try_from_other();
    printf("unlocked: other thread tryrdlock %s, trywrlock %s\n", errname(r.rd), errname(r.wr));

    /* a blocked writer gets in when the readers leave */
    CHECK_RC(pthread_rwlock_rdlock(&rw));
    CHECK_RC(pthread_create(&tt, NULL, mixed_writer, NULL)); /* blocks on wrlock */
    sleep_ms(50);
    long before = protected_value;
    CHECK_RC(pthread_rwlock_unlock(&rw));
    CHECK_RC(pthread_join(tt, NULL));
    printf("writer blocked by a reader: no progress while read-locked: %s, done after: %s\n",
           yesno(before == 4L * ROUNDS), yesno(protected_value == 5L * ROUNDS));
    CHECK_RC(pthread_rwlock_destroy(&rw));
}

/* ---------------- semaphores ---------------- */

static sem_t sem, items;
static atomic_long consumed;

static void *delayed_post(void *arg)
{
    sleep_ms(50);
    CHECK_SYS(sem_post((sem_t *)arg));
    return NULL;
}

#define NPROD 10
#define PER 1000
static void *producer(void *unused)
{
    for (int i = 0; i < PER; i++)
        CHECK_SYS(sem_post(&items));
    return NULL;
}
static void *consumer(void *unused)
{
    for (int i = 0; i < PER; i++) {
        while (sem_wait(&items) != 0)
            CHECK(errno == EINTR);
        atomic_fetch_add(&consumed, 1);
    }
    return NULL;
}

static void sem_tests(void)
{
    int v;
    CHECK_SYS(sem_init(&sem, 0, 3));
    CHECK_SYS(sem_getvalue(&sem, &v));
    printf("sem_init 3: getvalue %d\n", v);
    int ok = 0;
    for (int i = 0; i < 3; i++)
        ok += sem_trywait(&sem) == 0;
    errno = 0;
    int r = sem_trywait(&sem);
    int e = errno;
    CHECK_SYS(sem_getvalue(&sem, &v));
    printf("trywait x3: %d ok, 4th: %d %s, value %d\n", ok, r, errname(e), v);

    struct timespec dl = deadline_ms(CLOCK_REALTIME, 100);
    int64_t s = now_ns();
    errno = 0;
    r = sem_timedwait(&sem, &dl);
    e = errno;
    double el = ms_since(s);
    printf("sem_timedwait 100ms: %d %s, not early: %s, late < %.0fms: %s\n", r, errname(e),
           yesno(el >= 100.0), LATE_TOLERANCE_MS, yesno(el < 100.0 + LATE_TOLERANCE_MS));
    dl = deadline_ms(CLOCK_MONOTONIC, 100);
    s = now_ns();
    errno = 0;
    r = sem_clockwait(&sem, CLOCK_MONOTONIC, &dl);
    e = errno;
    el = ms_since(s);
    printf("sem_clockwait MONOTONIC 100ms: %d %s, not early: %s\n", r, errname(e),
           yesno(el >= 100.0));
    struct timespec bad = {0, 1000000000L};
    errno = 0;
    r = sem_timedwait(&sem, &bad);
    e = errno;
    printf("sem_timedwait bad tv_nsec: %d %s\n", r, errname(e));

    /* a post wakes a blocked waiter */
    pthread_t t;
    s = now_ns();
    CHECK_RC(pthread_create(&t, NULL, delayed_post, &sem));
    r = sem_wait(&sem);
    el = ms_since(s);
    CHECK_RC(pthread_join(t, NULL));
    printf("sem_wait woken by a post at 50ms: %d, waited: %s\n", r, yesno(el >= 50.0));
    s = now_ns();
    CHECK_RC(pthread_create(&t, NULL, delayed_post, &sem));
    dl = deadline_ms(CLOCK_REALTIME, 5000);
    r = sem_timedwait(&sem, &dl);
    el = ms_since(s);
    CHECK_RC(pthread_join(t, NULL));
    printf("sem_timedwait 5s woken by a post at 50ms: %d, waited: %s\n", r, yesno(el >= 50.0));

    /* producers/consumers */
    CHECK_SYS(sem_init(&items, 0, 0));
    pthread_t p[NPROD], c[NPROD];
    for (int i = 0; i < NPROD; i++) {
        CHECK_RC(pthread_create(&c[i], NULL, consumer, NULL));
        CHECK_RC(pthread_create(&p[i], NULL, producer, NULL));
    }
    for (int i = 0; i < NPROD; i++) {
        CHECK_RC(pthread_join(p[i], NULL));
        CHECK_RC(pthread_join(c[i], NULL));
    }
    CHECK_SYS(sem_getvalue(&items, &v));
    printf("producers/consumers: %ld consumed, final value %d\n", (long)consumed, v);

    /* limits */
    sem_t big;
    CHECK_SYS(sem_init(&big, 0, SEM_VALUE_MAX));
    errno = 0;
    r = sem_post(&big);
    e = errno;
    printf("sem_post at SEM_VALUE_MAX: %d %s\n", r, errname(e));
    errno = 0;
    r = sem_init(&big, 0, (unsigned)SEM_VALUE_MAX + 1u);
    e = errno;
    printf("sem_init above SEM_VALUE_MAX: %d %s\n", r, errname(e));
    CHECK_SYS(sem_destroy(&sem));
    CHECK_SYS(sem_destroy(&items));

    /* named semaphore */
    char name[64];
    snprintf(name, sizeof name, "/fibershim-prog-%d", (int)getpid());
    sem_unlink(name);
    sem_t *ns = sem_open(name, O_CREAT | O_EXCL, 0600, 0);
    CHECK(ns != SEM_FAILED);
    s = now_ns();
    CHECK_RC(pthread_create(&t, NULL, delayed_post, ns));
    r = sem_wait(ns);
    el = ms_since(s);
    CHECK_RC(pthread_join(t, NULL));
    CHECK_SYS(sem_getvalue(ns, &v));
    printf("named semaphore: wait woken by a post: %d, waited: %s, value %d\n", r,
           yesno(el >= 50.0), v);
    CHECK_SYS(sem_close(ns));
    CHECK_SYS(sem_unlink(name));
}

int main(void)
{
    tp_setup(60);
    rwlock_tests();
    sem_tests();
    printf("sync_rwlock_sem: ok\n");
    return 0;
}
