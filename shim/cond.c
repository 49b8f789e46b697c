/*
 * cond.c - pthread condition variables that park fibers.
 *
 * The condvar is a FIFO wait queue in the user's pthread_cond_t (48
 * bytes; all-zero, i.e. PTHREAD_COND_INITIALIZER, is an empty condvar on
 * CLOCK_REALTIME). A waiter queues itself under the queue lock *before*
 * it releases the mutex, and signal/broadcast dequeue under that lock, so:
 *  - no wake-up is lost: a signal that follows the mutex release finds
 *    the waiter queued;
 *  - signal wakes one current waiter and broadcast all of them, and a
 *    thread that starts waiting after a signal is not woken by it (it was
 *    not in the queue yet).
 * The glibc 2.2.5 and 2.3.2 symbol versions both bind to these unversioned
 * definitions and both pass a 48-byte object, so one implementation serves
 * both.
 *
 * __wrefs (offset 36) keeps glibc's meaning of its two low bits: bit 0
 * marks a process-shared condvar, which pthread_cond_init hands to glibc
 * (it routes every later call there), bit 1 CLOCK_MONOTONIC.
 *
 * Lock order: the condvar's queue lock, then the mutex's (the mutex is
 * released with the queue lock held).
 */
#include "waitq.h"

#include <string.h>

struct shim__cond {
    struct shim__waitq q;  /* waiters, in arrival order (__wseq, __g1_start) */
    uint32_t unused[5];    /* (__g_refs, __g_size, __g1_orig_size) */
    uint32_t flags;        /* SHIM_CV_* (__wrefs) */
    uint32_t unused2[2];   /* (__g_signals) */
};
_Static_assert(sizeof(struct shim__cond) == sizeof(pthread_cond_t), "cond size");
_Static_assert(offsetof(struct shim__cond, flags) == offsetof(pthread_cond_t, __data.__wrefs),
               "flags must overlay glibc's __wrefs");

#define SHIM_CV_GLIBC 1u      /* glibc's __PTHREAD_COND_SHARED_MASK */
#define SHIM_CV_MONOTONIC 2u  /* glibc's __PTHREAD_COND_CLOCK_MONOTONIC_MASK */

/* The default versions; the 2.2.5 ones are compatibility wrappers. */
#define SHIM_CV_VERSION "GLIBC_2.3.2"

static inline uint32_t shim__cond_flags(const struct shim__cond *c)
{
    return __atomic_load_n(&c->flags, __ATOMIC_RELAXED);
}

/*
 * A process-shared condvar is glibc's. glibc's wait unlocks and relocks
 * the mutex with internal calls that know neither our mutex layout nor
 * fibers, so it is used only by a plain thread with a glibc mutex.
 * Anyone else releases the mutex (through the wrappers: a glibc mutex is
 * owned per fiber, mutex_glibc.c) and waits in a queue of this process,
 * keyed by the condvar's address: a signal or broadcast made in this
 * process wakes it at once, besides calling glibc's for the waiters glibc
 * knows (plain threads, other processes), so one signal may wake two
 * waiters, which POSIX allows. A signal from another process cannot reach
 * the queue: the wait also ends by itself after one poll interval, a
 * spurious wake-up, which POSIX allows and every correct caller re-checks
 * its predicate after.
 *
 * Lock order: a queue's lock, then the mutex's (as for our condvars).
 */
#define SHIM_CV_GLIBC_QUEUES 64

/* Waiters of every process-shared condvar hashed to a queue
 * (fs_waiter.data: the condvar's address). */
static struct shim__waitq shim__cond_glibc_q[SHIM_CV_GLIBC_QUEUES];

static struct shim__waitq *shim__cond_glibc_queue(const pthread_cond_t *c)
{
    uint64_t h = ((uintptr_t)c >> 3) * 0x9e3779b97f4a7c15ull;
    return &shim__cond_glibc_q[h >> (64 - 6)];
}
_Static_assert(SHIM_CV_GLIBC_QUEUES == 1 << 6, "the hash takes 6 bits");

/* A fork child's only fiber waits for nothing: the queues hold the
 * parent's other waiters, which do not exist there. */
static void shim__cond_glibc_atfork_child(void)
{
    memset(shim__cond_glibc_q, 0, sizeof shim__cond_glibc_q);
}

__attribute__((constructor(102))) static void shim__cond_glibc_init(void)
{
    pthread_atfork(NULL, NULL, shim__cond_glibc_atfork_child);
}

/* Wakes one (or every) waiter of c in this process's queue. Any thread. */
static void shim__cond_glibc_wake(const pthread_cond_t *c, bool all)
{
    struct shim__waitq *q = shim__cond_glibc_queue(c);
    /* As in shim__pthread_cond_signal: a waiter queued before it released
     * the mutex. */
    if (atomic_load_explicit(&q->len, memory_order_acquire) == 0)
        return;
    fs__spin_lock(&q->lock);
    struct fs_waiter *w = q->head, *next;
    for (; w; w = next) {
        next = shim__waitq_next_locked(q, w);
        if (w->data != (uintptr_t)c)
            continue;
        shim__waitq_remove_locked(q, w);
        if (fs_waiter_wake(w) && !all)
            break;
    }
    fs__spin_unlock(&q->lock);
}

static int shim__cond_wait_glibc(pthread_cond_t *c, pthread_mutex_t *m, struct shim__deadline *d)
{
    if (!fs_self() && shim__mutex_is_real(m))
        return d->mono == FS_NO_DEADLINE
                   ? REAL_V(pthread_cond_wait, SHIM_CV_VERSION)(c, m)
                   : REAL(pthread_cond_clockwait)(c, m, d->clock, &d->abs);
    /* One poll interval, or less if the caller's deadline comes first. */
    struct shim__deadline poll, *until = d;
    int64_t poll_at = fs_now() + SHIM_POLL_MAX_NS;
    if (d->mono > poll_at) {
        struct timespec abs = {poll_at / 1000000000, poll_at % 1000000000};
        shim__deadline_init(&poll, CLOCK_MONOTONIC, &abs);
        until = &poll;
    }
    struct shim__waitq *q = shim__cond_glibc_queue(c);
    struct fs_waiter w;
    fs_waiter_prepare(&w);
    w.data = (uintptr_t)c;
    fs__spin_lock(&q->lock);
    shim__waitq_push_tail_locked(q, &w);
    int err = shim__pthread_mutex_unlock(m);
    if (err) {
        shim__waitq_remove_locked(q, &w);
        fs__spin_unlock(&q->lock);
        return err;
    }
    int rc = shim__waitq_wait(q, &w, FS_PARK_COND, c, until);
    err = shim__pthread_mutex_lock(m);
    if (err)
        return err;
    if (rc == -EINTR)
        shim__cancel_point(); /* with the mutex held, as POSIX requires */
    return rc != 0 && shim__deadline_passed(d) ? ETIMEDOUT : 0;
}

/* Waits on c with m held; abs NULL: no timeout. */
static int shim__cond_wait(pthread_cond_t *cp, pthread_mutex_t *m, clockid_t clock,
                           const struct timespec *abs)
{
    struct shim__cond *c = (struct shim__cond *)cp;
    struct shim__deadline d;
    /* glibc checks the timeout before anything else. */
    if (shim__deadline_init(&d, clock, abs))
        return EINVAL;
    /* A cancellation point: a pending cancel acts with the mutex held. */
    shim__cancel_point();
    if (shim__cond_flags(c) & SHIM_CV_GLIBC)
        return shim__cond_wait_glibc(cp, m, &d);

    struct fs_waiter w;
    fs_waiter_prepare(&w);
    fs__spin_lock(&c->q.lock);
    shim__waitq_push_tail_locked(&c->q, &w);
    int err = shim__pthread_mutex_unlock(m);
    if (err) {
        /* Still queued: a signal needs the lock we hold. */
        shim__waitq_remove_locked(&c->q, &w);
        fs__spin_unlock(&c->q.lock);
        return err;
    }
    int rc = shim__waitq_wait(&c->q, &w, FS_PARK_COND, c, abs ? &d : NULL);
    /* Relock also after a timeout, as POSIX requires. rc == 1 (an early
     * timer raced a failed wake) is a spurious wake-up. */
    err = shim__pthread_mutex_lock(m);
    if (err)
        return err;
    if (rc == -EINTR)
        shim__cancel_point(); /* with the mutex held, as POSIX requires */
    return rc == -ETIMEDOUT ? ETIMEDOUT : 0;
}

int shim__pthread_cond_init(pthread_cond_t *cp, const pthread_condattr_t *attr)
{
    int pshared = PTHREAD_PROCESS_PRIVATE;
    clockid_t clock = CLOCK_REALTIME;
    if (attr) {
        /* The attribute calls are glibc's (not interposed). */
        pthread_condattr_getpshared(attr, &pshared);
        pthread_condattr_getclock(attr, &clock);
        if (pshared != PTHREAD_PROCESS_PRIVATE)
            return REAL_V(pthread_cond_init, SHIM_CV_VERSION)(cp, attr);
    }
    memset(cp, 0, sizeof *cp);
    ((struct shim__cond *)cp)->flags = clock == CLOCK_MONOTONIC ? SHIM_CV_MONOTONIC : 0;
    return 0;
}
SHIM_ALIAS(pthread_cond_init)

int shim__pthread_cond_destroy(pthread_cond_t *cp)
{
    struct shim__cond *c = (struct shim__cond *)cp;
    if (shim__cond_flags(c) & SHIM_CV_GLIBC)
        return REAL_V(pthread_cond_destroy, SHIM_CV_VERSION)(cp);
    /* A signaller may still hold the queue lock after its wake landed. */
    fs__spin_lock(&c->q.lock);
    fs__spin_unlock(&c->q.lock);
    return 0;
}
SHIM_ALIAS(pthread_cond_destroy)

int shim__pthread_cond_signal(pthread_cond_t *cp)
{
    struct shim__cond *c = (struct shim__cond *)cp;
    if (shim__cond_flags(c) & SHIM_CV_GLIBC) {
        shim__cond_glibc_wake(cp, false);
        return REAL_V(pthread_cond_signal, SHIM_CV_VERSION)(cp);
    }
    /* A waiter queued before it released the mutex; a signaller that took
     * the mutex after that sees the queue length through it. */
    if (atomic_load_explicit(&c->q.len, memory_order_acquire) == 0)
        return 0;
    fs__spin_lock(&c->q.lock);
    shim__waitq_wake_one_locked(&c->q);
    fs__spin_unlock(&c->q.lock);
    return 0;
}
SHIM_ALIAS(pthread_cond_signal)

int shim__pthread_cond_broadcast(pthread_cond_t *cp)
{
    struct shim__cond *c = (struct shim__cond *)cp;
    if (shim__cond_flags(c) & SHIM_CV_GLIBC) {
        shim__cond_glibc_wake(cp, true);
        return REAL_V(pthread_cond_broadcast, SHIM_CV_VERSION)(cp);
    }
    if (atomic_load_explicit(&c->q.len, memory_order_acquire) == 0)
        return 0;
    fs__spin_lock(&c->q.lock);
    shim__waitq_wake_all_locked(&c->q);
    fs__spin_unlock(&c->q.lock);
    return 0;
}
SHIM_ALIAS(pthread_cond_broadcast)

int shim__pthread_cond_wait(pthread_cond_t *cp, pthread_mutex_t *m)
{
    return shim__cond_wait(cp, m, CLOCK_REALTIME, NULL);
}
SHIM_ALIAS(pthread_cond_wait)

int shim__pthread_cond_timedwait(pthread_cond_t *cp, pthread_mutex_t *m,
                                 const struct timespec *abs)
{
    struct shim__cond *c = (struct shim__cond *)cp;
    clockid_t clock = shim__cond_flags(c) & SHIM_CV_MONOTONIC ? CLOCK_MONOTONIC : CLOCK_REALTIME;
    return shim__cond_wait(cp, m, clock, abs);
}
SHIM_ALIAS(pthread_cond_timedwait)

int shim__pthread_cond_clockwait(pthread_cond_t *cp, pthread_mutex_t *m, clockid_t clock,
                                 const struct timespec *abs)
{
    return shim__cond_wait(cp, m, clock, abs);
}
SHIM_ALIAS(pthread_cond_clockwait)
