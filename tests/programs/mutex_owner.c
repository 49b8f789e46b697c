// fibershim-carriers: 1 2
/* Mutex ownership is per thread, for the kinds glibc implements itself:
 * process-shared, robust and priority-inheritance mutexes.
 *  - a process-shared recursive mutex locked before the first thread
 *    exists is still the main thread's afterwards;
 *  - for process-shared normal, recursive and errorcheck mutexes (and
 *    priority-inheritance ones where the kernel has them): while one
 *    thread holds it another gets EBUSY from trylock, EPERM from unlock
 *    (recursive, errorcheck), ETIMEDOUT from timedlock and clocklock, and
 *    lock returns only after the holder's last unlock; the holder's relock
 *    counts (recursive) or fails with EDEADLK (errorcheck), its trylock
 *    counts or fails with EBUSY (EDEADLK for PI);
 *  - mutual exclusion among threads that hold a process-shared recursive
 *    or robust mutex across a sleep;
 *  - robust mutexes: the owner thread exits holding it, the next locker
 *    (one already waiting, too) gets EOWNERDEAD; pthread_mutex_consistent
 *    makes it usable; unlocking without it makes it ENOTRECOVERABLE; the
 *    same across fork() (a child process dies holding it, or is killed
 *    while one of its threads holds it), and for a priority-inheritance
 *    one;
 *  - a process-shared mutex and condition variables: a producer and two
 *    consumers, between threads and with a child process producing;
 *    timedwait returns with the mutex held; a non-owner's wait is EPERM;
 *  - destroy and init again at the same address with another kind.
 * With one carrier every fiber of the shim shares one kernel thread,
 * which is what glibc knows owners by.
 */
#include "common.h"
#include <semaphore.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define QCAP 4

/* Everything a child process must see lives in one shared mapping. */
struct shared {
    pthread_mutex_t m;  /* the mutex under test, set up again per section */
    pthread_mutex_t qm; /* the queue's */
    pthread_cond_t not_empty, not_full;
    uint32_t q[QCAP];
    int qhead, qlen, qdone;
};
static struct shared *sh;

static const char *type_name(int type)
{
    switch (type) {
    case PTHREAD_MUTEX_NORMAL:
        return "normal";
    case PTHREAD_MUTEX_RECURSIVE:
        return "recursive";
    case PTHREAD_MUTEX_ERRORCHECK:
        return "errorcheck";
    }
    return "?";
}

static int mutex_init(pthread_mutex_t *m, int type, int pshared, int robust, int protocol)
{
    pthread_mutexattr_t a;
    CHECK_RC(pthread_mutexattr_init(&a));
    CHECK_RC(pthread_mutexattr_settype(&a, type));
    CHECK_RC(pthread_mutexattr_setpshared(&a, pshared));
    CHECK_RC(pthread_mutexattr_setrobust(&a, robust));
    CHECK_RC(pthread_mutexattr_setprotocol(&a, protocol));
    int rc = pthread_mutex_init(m, &a);
    CHECK_RC(pthread_mutexattr_destroy(&a));
    return rc;
}

/* ---- calls made on another thread ---- */

struct call {
    int (*fn)(pthread_mutex_t *);
    pthread_mutex_t *m;
    int rc;
};

static void *call_main(void *p)
{
    struct call *c = p;
    c->rc = c->fn(c->m);
    return NULL;
}

static int on_other_thread(int (*fn)(pthread_mutex_t *), pthread_mutex_t *m)
{
    struct call c = {fn, m, -1};
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, call_main, &c));
    CHECK_RC(pthread_join(t, NULL));
    return c.rc;
}

static int trylock_and_unlock(pthread_mutex_t *m)
{
    int rc = pthread_mutex_trylock(m);
    if (rc == 0)
        CHECK_RC(pthread_mutex_unlock(m));
    return rc;
}

/* ---- held before the first thread ---- */

static void before_threads(void)
{
    pthread_mutex_t *m = &sh->m;
    CHECK_RC(mutex_init(m, PTHREAD_MUTEX_RECURSIVE, PTHREAD_PROCESS_SHARED, PTHREAD_MUTEX_STALLED,
                        PTHREAD_PRIO_NONE));
    CHECK_RC(pthread_mutex_lock(m));
    int other_try = on_other_thread(trylock_and_unlock, m);
    int other_unlock = on_other_thread(pthread_mutex_unlock, m);
    int relock = pthread_mutex_lock(m);
    int unlock1 = pthread_mutex_unlock(m);
    int other_try_held = on_other_thread(trylock_and_unlock, m);
    int unlock2 = pthread_mutex_unlock(m);
    int other_try_free = on_other_thread(trylock_and_unlock, m);
    printf("pshared recursive locked before the first thread: other trylock %s, other unlock %s; "
           "relock %s, unlock %s, other trylock %s; last unlock %s, other trylock %s\n",
           errname(other_try), errname(other_unlock), errname(relock), errname(unlock1),
           errname(other_try_held), errname(unlock2), errname(other_try_free));
    CHECK_RC(pthread_mutex_destroy(m));
}

/* ---- one holder, one other thread ---- */

struct holder {
    pthread_mutex_t *m;
    int type;
    sem_t held, go;
    atomic_int released; /* set just before the holder's last unlock */
    int relock, trylock; /* the holder's own relock and trylock */
};

static void *holder_main(void *p)
{
    struct holder *h = p;
    CHECK_RC(pthread_mutex_lock(h->m));
    /* A normal mutex's relock would deadlock: the holder only tries it. */
    h->relock = h->type == PTHREAD_MUTEX_NORMAL ? -1 : pthread_mutex_lock(h->m);
    h->trylock = pthread_mutex_trylock(h->m);
    int depth = 1 + (h->relock == 0) + (h->trylock == 0);
    sem_post(&h->held);
    sem_wait(&h->go);
    /* Give the other thread time to block in lock, and let go one level
     * at a time. */
    for (int i = 0; i < depth; i++) {
        sleep_ms(20);
        if (i == depth - 1)
            atomic_store(&h->released, 1);
        CHECK_RC(pthread_mutex_unlock(h->m));
    }
    return NULL;
}

static void timed_busy(const char *what, pthread_mutex_t *m, clockid_t clk, int clocklock)
{
    struct timespec dl = deadline_ms(clk, 50);
    int64_t s = now_ns();
    int rc = clocklock ? pthread_mutex_clocklock(m, clk, &dl) : pthread_mutex_timedlock(m, &dl);
    double el = ms_since(s);
    printf("  other %s 50ms: %s, not early: %s, late < %.0fms: %s\n", what, errname(rc),
           yesno(el >= 50.0), LATE_TOLERANCE_MS, yesno(el < 50.0 + LATE_TOLERANCE_MS));
}

/* The calling thread is "the other thread" throughout. */
static void ownership(const char *how, int type, int pshared, int protocol)
{
    pthread_mutex_t *m = &sh->m;
    int rc = mutex_init(m, type, pshared, PTHREAD_MUTEX_STALLED, protocol);
    if (rc)
        FAIL("%s %s: init: %s", how, type_name(type), errname(rc));
    struct holder h = {.m = m, .type = type};
    sem_init(&h.held, 0, 0);
    sem_init(&h.go, 0, 0);
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, holder_main, &h));
    sem_wait(&h.held);
    printf("%s %s:\n", how, type_name(type));
    printf("  holder relock %s, trylock %s\n",
           h.relock == -1 ? "(deadlock, not tried)" : errname(h.relock), errname(h.trylock));
    printf("  other trylock %s\n", errname(pthread_mutex_trylock(m)));
    if (type != PTHREAD_MUTEX_NORMAL)
        printf("  other unlock %s\n", errname(pthread_mutex_unlock(m)));
    timed_busy("timedlock", m, CLOCK_REALTIME, 0);
    timed_busy("clocklock MONOTONIC", m, CLOCK_MONOTONIC, 1);
    sem_post(&h.go);
    rc = pthread_mutex_lock(m);
    int after = atomic_load(&h.released);
    printf("  other lock %s, only after the holder's last unlock: %s\n", errname(rc), yesno(after));
    CHECK_RC(pthread_join(t, NULL));
    if (type == PTHREAD_MUTEX_RECURSIVE)
        printf("  other relock %s, unlock %s\n", errname(pthread_mutex_lock(m)),
               errname(pthread_mutex_unlock(m)));
    printf("  other unlock %s\n", errname(pthread_mutex_unlock(m)));
    if (type != PTHREAD_MUTEX_NORMAL)
        printf("  other unlock again %s\n", errname(pthread_mutex_unlock(m)));
    sem_destroy(&h.held);
    sem_destroy(&h.go);
    CHECK_RC(pthread_mutex_destroy(m));
}

/* ---- mutual exclusion across sleeps ---- */

#define NT 4
#define ITERS 200
static atomic_int inside, violations;
static long counter;

static void *contender(void *p)
{
    pthread_mutex_t *m = p;
    for (int i = 0; i < ITERS; i++) {
        int rc = pthread_mutex_lock(m);
        if (rc == EOWNERDEAD)
            FAIL("unexpected EOWNERDEAD");
        CHECK_RC(rc);
        CHECK_RC(pthread_mutex_lock(m)); /* recursive */
        if (atomic_exchange(&inside, 1))
            atomic_fetch_add(&violations, 1);
        long v = counter;
        if (i % 10 == 0)
            usleep(200); /* hold it across a blocking call */
        counter = v + 1;
        atomic_store(&inside, 0);
        CHECK_RC(pthread_mutex_unlock(m));
        CHECK_RC(pthread_mutex_unlock(m));
    }
    return NULL;
}

static void exclusion(const char *how, int robust)
{
    pthread_mutex_t *m = &sh->m;
    CHECK_RC(
        mutex_init(m, PTHREAD_MUTEX_RECURSIVE, PTHREAD_PROCESS_SHARED, robust, PTHREAD_PRIO_NONE));
    counter = 0;
    atomic_store(&violations, 0);
    pthread_t t[NT];
    for (int i = 0; i < NT; i++)
        CHECK_RC(pthread_create(&t[i], NULL, contender, m));
    for (int i = 0; i < NT; i++)
        CHECK_RC(pthread_join(t[i], NULL));
    printf("%s recursive, %d threads holding it across sleeps: count %ld (expected %d), "
           "two inside at once: %d\n",
           how, NT, counter, NT * ITERS, atomic_load(&violations));
    CHECK_RC(pthread_mutex_destroy(m));
}

/* ---- robust ---- */

struct dier {
    pthread_mutex_t *m;
    int depth;
    sem_t held, go;
};

static void *dier_main(void *p)
{
    struct dier *d = p;
    for (int i = 0; i < d->depth; i++)
        CHECK_RC(pthread_mutex_lock(d->m));
    sem_post(&d->held);
    sem_wait(&d->go);
    return NULL; /* exits holding it */
}

struct waiter {
    pthread_mutex_t *m;
    sem_t ready;
    int lock, consistent, unlock, unlock_again;
};

static void *waiter_main(void *p)
{
    struct waiter *w = p;
    sem_post(&w->ready);
    w->lock = pthread_mutex_lock(w->m);
    w->consistent = pthread_mutex_consistent(w->m);
    w->unlock = pthread_mutex_unlock(w->m);
    w->unlock_again = pthread_mutex_unlock(w->m);
    return NULL;
}

static void robust_private(void)
{
    pthread_mutex_t m;
    CHECK_RC(mutex_init(&m, PTHREAD_MUTEX_NORMAL, PTHREAD_PROCESS_PRIVATE, PTHREAD_MUTEX_ROBUST,
                        PTHREAD_PRIO_NONE));
    struct dier d = {.m = &m, .depth = 1};
    sem_init(&d.held, 0, 0);
    sem_init(&d.go, 0, 1);
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, dier_main, &d));
    CHECK_RC(pthread_join(t, NULL));
    int lock = pthread_mutex_lock(&m);
    int consistent = pthread_mutex_consistent(&m);
    int unlock = pthread_mutex_unlock(&m);
    int other = on_other_thread(trylock_and_unlock, &m);
    printf("robust normal, owner exited holding it: lock %s, consistent %s, unlock %s, "
           "other trylock %s\n",
           errname(lock), errname(consistent), errname(unlock), errname(other));
    CHECK_RC(pthread_mutex_destroy(&m));
}

/* The owner holds a pshared robust recursive mutex twice while others try
 * it, then exits while another thread waits in lock. */
static void robust_waiter_gets_ownerdead(void)
{
    pthread_mutex_t *m = &sh->m;
    CHECK_RC(mutex_init(m, PTHREAD_MUTEX_RECURSIVE, PTHREAD_PROCESS_SHARED, PTHREAD_MUTEX_ROBUST,
                        PTHREAD_PRIO_NONE));
    struct dier d = {.m = m, .depth = 2};
    sem_init(&d.held, 0, 0);
    sem_init(&d.go, 0, 0);
    pthread_t t, wt;
    CHECK_RC(pthread_create(&t, NULL, dier_main, &d));
    sem_wait(&d.held);
    int try = pthread_mutex_trylock(m);
    int unlock = pthread_mutex_unlock(m);
    struct waiter w = {.m = m};
    sem_init(&w.ready, 0, 0);
    CHECK_RC(pthread_create(&wt, NULL, waiter_main, &w));
    sem_wait(&w.ready);
    sleep_ms(20); /* let it block */
    sem_post(&d.go);
    CHECK_RC(pthread_join(t, NULL));
    CHECK_RC(pthread_join(wt, NULL));
    printf("robust pshared recursive held twice: other trylock %s, other unlock %s; owner exits: "
           "waiter lock %s, consistent %s, unlock %s, unlock again %s\n",
           errname(try), errname(unlock), errname(w.lock), errname(w.consistent), errname(w.unlock),
           errname(w.unlock_again));
    printf("  then other trylock %s\n", errname(on_other_thread(trylock_and_unlock, m)));
    CHECK_RC(pthread_mutex_destroy(m));
}

/* Locking only: glibc's trylock on an unrecoverable robust mutex leaves
 * it locked. */
static void robust_notrecoverable(void)
{
    pthread_mutex_t *m = &sh->m;
    CHECK_RC(mutex_init(m, PTHREAD_MUTEX_ERRORCHECK, PTHREAD_PROCESS_SHARED, PTHREAD_MUTEX_ROBUST,
                        PTHREAD_PRIO_NONE));
    struct dier d = {.m = m, .depth = 1};
    sem_init(&d.held, 0, 0);
    sem_init(&d.go, 0, 1);
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, dier_main, &d));
    CHECK_RC(pthread_join(t, NULL));
    int lock = pthread_mutex_lock(m);
    int unlock = pthread_mutex_unlock(m);
    int relock = pthread_mutex_lock(m);
    int other = on_other_thread(pthread_mutex_lock, m);
    struct timespec dl = deadline_ms(CLOCK_MONOTONIC, 50);
    int timed = pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &dl);
    printf("robust pshared errorcheck, owner exited, unlocked without consistent: lock %s, "
           "unlock %s; lock %s, other lock %s, clocklock %s\n",
           errname(lock), errname(unlock), errname(relock), errname(other), errname(timed));
    CHECK_RC(pthread_mutex_destroy(m));
}

/* A child process locks the shared robust mutex and dies holding it. */
static void robust_across_fork(void)
{
    pthread_mutex_t *m = &sh->m;
    CHECK_RC(mutex_init(m, PTHREAD_MUTEX_NORMAL, PTHREAD_PROCESS_SHARED, PTHREAD_MUTEX_ROBUST,
                        PTHREAD_PRIO_NONE));
    int locked[2], die[2];
    CHECK_SYS(pipe(locked));
    CHECK_SYS(pipe(die));
    fflush(stdout);
    pid_t pid = CHECK_SYS(fork());
    if (pid == 0) {
        char c = 0;
        if (pthread_mutex_lock(m) != 0)
            _exit(3);
        if (write(locked[1], &c, 1) != 1 || read(die[0], &c, 1) < 0)
            _exit(4);
        _exit(0); /* holding it */
    }
    char c;
    CHECK(read(locked[0], &c, 1) == 1);
    int try = pthread_mutex_trylock(m);
    int other_try = on_other_thread(pthread_mutex_trylock, m);
    struct waiter w = {.m = m};
    sem_init(&w.ready, 0, 0);
    pthread_t wt;
    CHECK_RC(pthread_create(&wt, NULL, waiter_main, &w));
    sem_wait(&w.ready);
    sleep_ms(20);
    CHECK(write(die[1], &c, 1) == 1);
    int status;
    CHECK_SYS(waitpid(pid, &status, 0));
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK_RC(pthread_join(wt, NULL));
    printf("robust pshared, a child process holds it: trylock %s, other thread trylock %s; "
           "child exits: waiting thread lock %s, consistent %s, unlock %s, unlock again %s\n",
           errname(try), errname(other_try), errname(w.lock), errname(w.consistent),
           errname(w.unlock), errname(w.unlock_again));
    printf("  then trylock %s\n", errname(trylock_and_unlock(m)));
    close(locked[0]);
    close(locked[1]);
    close(die[0]);
    close(die[1]);
    CHECK_RC(pthread_mutex_destroy(m));
}

/* A thread of a child process holds the shared robust mutex when the
 * child is killed: the kernel marks it for the next locker. */
static int killed_pipe;

static void *lock_and_report(void *p)
{
    char c = 0;
    if (pthread_mutex_lock(p) != 0 || write(killed_pipe, &c, 1) != 1)
        _exit(3);
    for (;;)
        pause();
}

static void robust_holder_killed(void)
{
    pthread_mutex_t *m = &sh->m;
    CHECK_RC(mutex_init(m, PTHREAD_MUTEX_RECURSIVE, PTHREAD_PROCESS_SHARED, PTHREAD_MUTEX_ROBUST,
                        PTHREAD_PRIO_NONE));
    int locked[2];
    CHECK_SYS(pipe(locked));
    fflush(stdout);
    pid_t pid = CHECK_SYS(fork());
    if (pid == 0) {
        killed_pipe = locked[1];
        pthread_t t;
        if (pthread_create(&t, NULL, lock_and_report, m) != 0)
            _exit(4);
        for (;;)
            pause();
    }
    char c;
    CHECK(read(locked[0], &c, 1) == 1);
    int try = pthread_mutex_trylock(m);
    CHECK_SYS(kill(pid, SIGKILL));
    int status;
    CHECK_SYS(waitpid(pid, &status, 0));
    CHECK(WIFSIGNALED(status));
    struct timespec dl = deadline_ms(CLOCK_REALTIME, 2000);
    int lock = pthread_mutex_timedlock(m, &dl);
    int consistent = pthread_mutex_consistent(m);
    int unlock = pthread_mutex_unlock(m);
    printf("robust pshared held by a thread of a child process: trylock %s; child killed: "
           "lock %s, consistent %s, unlock %s\n",
           errname(try), errname(lock), errname(consistent), errname(unlock));
    close(locked[0]);
    close(locked[1]);
    CHECK_RC(pthread_mutex_destroy(m));
}

/* ---- priority inheritance and protection ---- */

/* Whether a mutex with this protocol can be set up, locked and unlocked
 * here (the kernel may lack PI futexes; a priority ceiling may need
 * privileges). Tried in a child process, which may die trying. */
static int protocol_works(int protocol)
{
    fflush(stdout);
    pid_t pid = CHECK_SYS(fork());
    if (pid == 0) {
        pthread_mutex_t m;
        if (mutex_init(&m, PTHREAD_MUTEX_RECURSIVE, PTHREAD_PROCESS_PRIVATE, PTHREAD_MUTEX_STALLED,
                       protocol) != 0 ||
            pthread_mutex_lock(&m) != 0 || pthread_mutex_lock(&m) != 0 ||
            pthread_mutex_unlock(&m) != 0 || pthread_mutex_unlock(&m) != 0 ||
            pthread_mutex_trylock(&m) != 0 || pthread_mutex_unlock(&m) != 0)
            _exit(1);
        _exit(0);
    }
    int status;
    CHECK_SYS(waitpid(pid, &status, 0));
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* Same output whether or not the system has the protocol: the results are
 * checked here and only a summary line is printed. */
static void protocol_ownership(const char *name, int protocol)
{
    if (!protocol_works(protocol)) {
        fprintf(stderr, "%s mutexes do not work here: skipped\n", name);
        printf("%s: per-thread ownership checked (or the protocol is unavailable)\n", name);
        return;
    }
    static const int types[] = {PTHREAD_MUTEX_RECURSIVE, PTHREAD_MUTEX_ERRORCHECK,
                                PTHREAD_MUTEX_NORMAL};
    for (int i = 0; i < 3; i++) {
        pthread_mutex_t *m = &sh->m;
        int type = types[i];
        CHECK_RC(mutex_init(m, type, PTHREAD_PROCESS_PRIVATE, PTHREAD_MUTEX_STALLED, protocol));
        struct holder h = {.m = m, .type = type};
        sem_init(&h.held, 0, 0);
        sem_init(&h.go, 0, 0);
        pthread_t t;
        CHECK_RC(pthread_create(&t, NULL, holder_main, &h));
        sem_wait(&h.held);
        if (type != PTHREAD_MUTEX_NORMAL)
            EXPECT_RC(h.relock, type == PTHREAD_MUTEX_RECURSIVE ? 0 : EDEADLK);
        /* glibc: a PI mutex's owner gets EDEADLK from trylock too. */
        EXPECT_RC(h.trylock, type == PTHREAD_MUTEX_RECURSIVE    ? 0
                             : type == PTHREAD_MUTEX_ERRORCHECK ? EDEADLK
                                                                : EBUSY);
        EXPECT_RC(pthread_mutex_trylock(m), EBUSY);
        if (type != PTHREAD_MUTEX_NORMAL)
            EXPECT_RC(pthread_mutex_unlock(m), EPERM);
        struct timespec dl = deadline_ms(CLOCK_REALTIME, 20);
        EXPECT_RC(pthread_mutex_timedlock(m, &dl), ETIMEDOUT);
        sem_post(&h.go);
        CHECK_RC(pthread_mutex_lock(m));
        CHECK(atomic_load(&h.released));
        CHECK_RC(pthread_join(t, NULL));
        CHECK_RC(pthread_mutex_unlock(m));
        if (type != PTHREAD_MUTEX_NORMAL)
            EXPECT_RC(pthread_mutex_unlock(m), EPERM);
        sem_destroy(&h.held);
        sem_destroy(&h.go);
        CHECK_RC(pthread_mutex_destroy(m));
    }
    /* A robust one whose owner exits holding it. */
    pthread_mutex_t *m = &sh->m;
    CHECK_RC(mutex_init(m, PTHREAD_MUTEX_NORMAL, PTHREAD_PROCESS_SHARED, PTHREAD_MUTEX_ROBUST,
                        protocol));
    struct dier d = {.m = m, .depth = 1};
    sem_init(&d.held, 0, 0);
    sem_init(&d.go, 0, 1);
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, dier_main, &d));
    CHECK_RC(pthread_join(t, NULL));
    EXPECT_RC(pthread_mutex_lock(m), EOWNERDEAD);
    CHECK_RC(pthread_mutex_consistent(m));
    CHECK_RC(pthread_mutex_unlock(m));
    EXPECT_RC(on_other_thread(trylock_and_unlock, m), 0);
    CHECK_RC(pthread_mutex_destroy(m));
    printf("%s: per-thread ownership checked (or the protocol is unavailable)\n", name);
}

/* ---- condition variables ---- */

#define ITEMS 200

static void put(uint32_t v)
{
    CHECK_RC(pthread_mutex_lock(&sh->qm));
    while (sh->qlen == QCAP)
        CHECK_RC(pthread_cond_wait(&sh->not_full, &sh->qm));
    sh->q[(sh->qhead + sh->qlen++) % QCAP] = v;
    CHECK_RC(pthread_cond_signal(&sh->not_empty));
    CHECK_RC(pthread_mutex_unlock(&sh->qm));
}

static void finish(void)
{
    CHECK_RC(pthread_mutex_lock(&sh->qm));
    sh->qdone = 1;
    CHECK_RC(pthread_cond_broadcast(&sh->not_empty));
    CHECK_RC(pthread_mutex_unlock(&sh->qm));
}

static void *producer(void *unused)
{
    for (uint32_t i = 1; i <= ITEMS; i++)
        put(i);
    finish();
    return NULL;
}

struct consumed {
    long n;
    uint64_t sum;
};

static void *consumer(void *p)
{
    struct consumed *c = p;
    for (;;) {
        CHECK_RC(pthread_mutex_lock(&sh->qm));
        while (sh->qlen == 0 && !sh->qdone)
            CHECK_RC(pthread_cond_wait(&sh->not_empty, &sh->qm));
        if (sh->qlen == 0) {
            CHECK_RC(pthread_mutex_unlock(&sh->qm));
            return NULL;
        }
        uint32_t v = sh->q[sh->qhead];
        sh->qhead = (sh->qhead + 1) % QCAP;
        sh->qlen--;
        CHECK_RC(pthread_cond_signal(&sh->not_full));
        CHECK_RC(pthread_mutex_unlock(&sh->qm));
        c->n++;
        c->sum += v;
    }
}

static int cond_wait_unowned(pthread_mutex_t *m)
{
    return pthread_cond_wait(&sh->not_empty, m);
}

static void pshared_cond(void)
{
    CHECK_RC(mutex_init(&sh->qm, PTHREAD_MUTEX_ERRORCHECK, PTHREAD_PROCESS_SHARED,
                        PTHREAD_MUTEX_STALLED, PTHREAD_PRIO_NONE));
    pthread_condattr_t ca;
    CHECK_RC(pthread_condattr_init(&ca));
    CHECK_RC(pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED));
    CHECK_RC(pthread_cond_init(&sh->not_empty, &ca));
    CHECK_RC(pthread_cond_init(&sh->not_full, &ca));
    CHECK_RC(pthread_condattr_destroy(&ca));

    /* timedwait returns with the mutex held; a waiter that does not hold
     * the mutex is refused. */
    CHECK_RC(pthread_mutex_lock(&sh->qm));
    sh->qdone = 0;
    struct timespec dl = deadline_ms(CLOCK_REALTIME, 50);
    int64_t s = now_ns();
    int rc;
    /* Nobody signals, but a wait may end spuriously (POSIX): wait as a
     * correct caller does, for a predicate that stays false. */
    do
        rc = pthread_cond_timedwait(&sh->not_empty, &sh->qm, &dl);
    while (rc == 0 && !sh->qdone);
    double el = ms_since(s);
    int other_unlock = on_other_thread(pthread_mutex_unlock, &sh->qm);
    int other_wait = on_other_thread(cond_wait_unowned, &sh->qm);
    printf("pshared cond timedwait 50ms: %s, not early: %s; held after it: other unlock %s, "
           "other wait %s, unlock %s\n",
           errname(rc), yesno(el >= 50.0), errname(other_unlock), errname(other_wait),
           errname(pthread_mutex_unlock(&sh->qm)));

    /* Between threads. */
    sh->qhead = sh->qlen = sh->qdone = 0;
    struct consumed c[2] = {{0, 0}, {0, 0}};
    pthread_t p, t[2];
    for (int i = 0; i < 2; i++)
        CHECK_RC(pthread_create(&t[i], NULL, consumer, &c[i]));
    CHECK_RC(pthread_create(&p, NULL, producer, NULL));
    CHECK_RC(pthread_join(p, NULL));
    for (int i = 0; i < 2; i++)
        CHECK_RC(pthread_join(t[i], NULL));
    printf("pshared mutex+cond, 1 producer and 2 consumer threads: %ld items, sum %llu "
           "(expected %d, %d)\n",
           c[0].n + c[1].n, (unsigned long long)(c[0].sum + c[1].sum), ITEMS,
           ITEMS * (ITEMS + 1) / 2);

    /* A child process produces. */
    sh->qhead = sh->qlen = sh->qdone = 0;
    c[0] = c[1] = (struct consumed){0, 0};
    for (int i = 0; i < 2; i++)
        CHECK_RC(pthread_create(&t[i], NULL, consumer, &c[i]));
    fflush(stdout);
    pid_t pid = CHECK_SYS(fork());
    if (pid == 0) {
        producer(NULL);
        _exit(0);
    }
    int status;
    CHECK_SYS(waitpid(pid, &status, 0));
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    for (int i = 0; i < 2; i++)
        CHECK_RC(pthread_join(t[i], NULL));
    printf("pshared mutex+cond, a child process producing for 2 threads: %ld items, sum %llu\n",
           c[0].n + c[1].n, (unsigned long long)(c[0].sum + c[1].sum));

    CHECK_RC(pthread_cond_destroy(&sh->not_empty));
    CHECK_RC(pthread_cond_destroy(&sh->not_full));
    CHECK_RC(pthread_mutex_destroy(&sh->qm));
}

int main(void)
{
    tp_setup(120);
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(sh != MAP_FAILED);

    before_threads();

    static const int types[] = {PTHREAD_MUTEX_NORMAL, PTHREAD_MUTEX_RECURSIVE,
                                PTHREAD_MUTEX_ERRORCHECK};
    for (int i = 0; i < 3; i++)
        ownership("pshared", types[i], PTHREAD_PROCESS_SHARED, PTHREAD_PRIO_NONE);

    exclusion("pshared", PTHREAD_MUTEX_STALLED);
    exclusion("pshared robust", PTHREAD_MUTEX_ROBUST);

    robust_private();
    robust_waiter_gets_ownerdead();
    robust_notrecoverable();
    robust_across_fork();
    robust_holder_killed();

    protocol_ownership("PRIO_INHERIT", PTHREAD_PRIO_INHERIT);

    pshared_cond();

    printf("mutex_owner: ok\n");
    return 0;
}
