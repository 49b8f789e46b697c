/*
 * rwlock.c - pthread read-write locks that park fibers.
 *
 * The lock lives in the user's pthread_rwlock_t (56 bytes). All-zero is an
 * unlocked lock; __flags (offset 48) keeps glibc's kind, so
 * PTHREAD_RWLOCK_INITIALIZER and PTHREAD_RWLOCK_WRITER_NONRECURSIVE_
 * INITIALIZER_NP work with no init call, and __shared (offset 28) stays
 * glibc's process-shared mark: a process-shared lock is handed to glibc
 * at init and every later call goes there.
 *
 * State word: WRITER, WAITERS (the queue may be non-empty) and the reader
 * count. Without WAITERS, read lock, write lock and both unlocks are one
 * CAS (or fetch_sub). With WAITERS set nobody acquires without the queue
 * lock, and whoever releases the lock runs a grant pass under it: waiters
 * are granted in queue order, directly (the state is updated on their
 * behalf before the wake), so a newcomer can never overtake a queued
 * waiter, except that, as in glibc:
 *  - PREFER_READER (the default, and PREFER_WRITER, which glibc treats the
 *    same): a reader gets in whenever no writer holds the lock, even past
 *    queued writers, so recursive read locks cannot deadlock. Writers can
 *    starve under a steady stream of readers, as with glibc.
 *  - PREFER_WRITER_NONRECURSIVE: a reader waits while any writer is
 *    queued.
 *
 * Locking: q.lock protects the queue, wwaiting, WAITERS changes and grants.
 */
#include "waitq.h"

#include <string.h>

struct shim__rwlock {
    _Atomic uint32_t state;   /* SHIM_RW_* and the reader count (__readers) */
    uint32_t wwaiting;        /* writers in the queue, under q.lock (__writers) */
    struct shim__waitq q;     /* waiters (__wrphase_futex .. __pad4) */
    int32_t unused;           /* (__cur_writer) */
    int32_t shared;           /* glibc's process-shared mark; ours keep 0 (__shared) */
    _Atomic uint64_t owner;   /* the writer's identity (__rwelision, __pad1) */
    uint64_t unused2;         /* (__pad2) */
    uint32_t flags;           /* PTHREAD_RWLOCK_PREFER_* (__flags) */
    uint32_t unused3;
};
_Static_assert(sizeof(struct shim__rwlock) == sizeof(pthread_rwlock_t), "rwlock size");
_Static_assert(offsetof(struct shim__rwlock, shared) == offsetof(pthread_rwlock_t, __data.__shared),
               "shared must overlay glibc's __shared");
_Static_assert(offsetof(struct shim__rwlock, flags) == offsetof(pthread_rwlock_t, __data.__flags),
               "flags must stay where the static initializers put them");

#define SHIM_RW_WRITER (1u << 31)
#define SHIM_RW_WAITERS (1u << 30)
#define SHIM_RW_READERS (SHIM_RW_WAITERS - 1)

/* fs_waiter.data of a queued writer (readers have 0). */
#define SHIM_RW_W_WRITE 1u

enum shim__rw_mode { SHIM_RW_LOCK, SHIM_RW_TRY, SHIM_RW_TIMED };

static inline bool shim__rwlock_is_glibc(const struct shim__rwlock *rw)
{
    return __atomic_load_n(&rw->shared, __ATOMIC_RELAXED) != 0;
}

static inline bool shim__rwlock_prefers_writers(const struct shim__rwlock *rw)
{
    return rw->flags == PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP;
}

/* ---- glibc's rwlocks ----------------------------------------------------------- */

/* A fiber polls with a zero timeout, so it never blocks its carrier (see
 * mutex.c, also for why EDEADLK means busy here). */
static int shim__rwlock_lock_glibc(pthread_rwlock_t *rw, bool write, enum shim__rw_mode mode,
                                   struct shim__deadline *d)
{
    if (mode == SHIM_RW_TRY)
        return write ? REAL(pthread_rwlock_trywrlock)(rw) : REAL(pthread_rwlock_tryrdlock)(rw);
    if (!fs_self()) {
        if (mode == SHIM_RW_TIMED)
            return write ? REAL(pthread_rwlock_clockwrlock)(rw, d->clock, &d->abs)
                         : REAL(pthread_rwlock_clockrdlock)(rw, d->clock, &d->abs);
        return write ? REAL(pthread_rwlock_wrlock)(rw) : REAL(pthread_rwlock_rdlock)(rw);
    }
    for (int64_t backoff = SHIM_POLL_MIN_NS;;) {
        static const struct timespec past = {0, 0};
        int rc = write ? REAL(pthread_rwlock_clockwrlock)(rw, CLOCK_MONOTONIC, &past)
                       : REAL(pthread_rwlock_clockrdlock)(rw, CLOCK_MONOTONIC, &past);
        /* EDEADLK may only mean another fiber of this carrier holds it:
         * glibc knows owners by kernel thread. */
        if (rc != ETIMEDOUT && rc != EDEADLK)
            return rc;
        if (shim__deadline_passed(d))
            return ETIMEDOUT;
        shim__backoff_sleep(backoff, d);
        backoff = backoff * 2 > SHIM_POLL_MAX_NS ? SHIM_POLL_MAX_NS : backoff * 2;
    }
}

/* ---- ours ------------------------------------------------------------------------ */

/* Grants the lock to queued waiters in order, as far as the state and the
 * preference allow, then clears WAITERS if the queue emptied. A grant
 * whose wake fails (that waiter timed out) is undone. */
static void shim__rwlock_grant_locked(struct shim__rwlock *rw)
{
    bool writer_ahead = false;
    struct fs_waiter *w, *next;
    for (w = rw->q.head; w; w = next) {
        next = shim__waitq_next_locked(&rw->q, w);
        /* With WAITERS set and the queue lock held, the state can only
         * lose readers concurrently: plain atomic and/or/add suffice. */
        uint32_t s = atomic_load_explicit(&rw->state, memory_order_relaxed);
        if (w->data & SHIM_RW_W_WRITE) {
            if (!writer_ahead && !(s & (SHIM_RW_WRITER | SHIM_RW_READERS))) {
                shim__waitq_remove_locked(&rw->q, w);
                atomic_fetch_or_explicit(&rw->state, SHIM_RW_WRITER, memory_order_relaxed);
                if (fs_waiter_wake(w)) {
                    rw->wwaiting--;
                    break;
                }
                atomic_fetch_and_explicit(&rw->state, ~SHIM_RW_WRITER, memory_order_relaxed);
                continue;
            }
            writer_ahead = true;
            if (shim__rwlock_prefers_writers(rw))
                break;
            continue;
        }
        if (s & SHIM_RW_WRITER)
            break;
        shim__waitq_remove_locked(&rw->q, w);
        atomic_fetch_add_explicit(&rw->state, 1, memory_order_relaxed);
        if (!fs_waiter_wake(w))
            atomic_fetch_sub_explicit(&rw->state, 1, memory_order_relaxed);
    }
    if (!rw->q.head)
        atomic_fetch_and_explicit(&rw->state, ~SHIM_RW_WAITERS, memory_order_relaxed);
}

/* Sets WAITERS unless the state changes first; false: re-evaluate s. */
static inline bool shim__rwlock_announce(struct shim__rwlock *rw, uint32_t *s)
{
    return (*s & SHIM_RW_WAITERS) ||
           atomic_compare_exchange_weak_explicit(&rw->state, s, *s | SHIM_RW_WAITERS,
                                                 memory_order_relaxed, memory_order_relaxed);
}

static int shim__rwlock_rdlock_slow(struct shim__rwlock *rw, enum shim__rw_mode mode,
                                    struct shim__deadline *d)
{
    uint32_t s = atomic_load_explicit(&rw->state, memory_order_relaxed);
    if (mode != SHIM_RW_TRY && (s & SHIM_RW_WRITER) &&
        shim__owner_is_self(atomic_load_explicit(&rw->owner, memory_order_relaxed),
                            shim__self_owner()))
        return EDEADLK;
    for (;;) {
        shim__cancel_async_act(); /* it left the queue for one (waitq.h) */
        struct fs_waiter w;
        fs_waiter_prepare(&w);
        w.data = 0;
        fs__spin_lock(&rw->q.lock);
        s = atomic_load_explicit(&rw->state, memory_order_relaxed);
        for (;;) {
            if (!(s & SHIM_RW_WRITER) &&
                (!shim__rwlock_prefers_writers(rw) || rw->wwaiting == 0)) {
                if ((s & SHIM_RW_READERS) == SHIM_RW_READERS) {
                    fs__spin_unlock(&rw->q.lock);
                    return EAGAIN;
                }
                if (atomic_compare_exchange_weak_explicit(&rw->state, &s, s + 1,
                                                          memory_order_acquire,
                                                          memory_order_relaxed)) {
                    fs__spin_unlock(&rw->q.lock);
                    return 0;
                }
            } else if (mode == SHIM_RW_TRY || shim__deadline_passed(d)) {
                fs__spin_unlock(&rw->q.lock);
                return mode == SHIM_RW_TRY ? EBUSY : ETIMEDOUT;
            } else if (shim__rwlock_announce(rw, &s)) {
                break;
            }
        }
        shim__waitq_push_tail_locked(&rw->q, &w);
        int rc = shim__waitq_wait(&rw->q, &w, FS_PARK_RWLOCK, rw, d);
        if (rc == 0)
            return 0; /* granted: the grant pass counted us in */
        if (rc == -ETIMEDOUT)
            return ETIMEDOUT;
    }
}

static int shim__rwlock_wrlock_slow(struct shim__rwlock *rw, enum shim__rw_mode mode,
                                    struct shim__deadline *d)
{
    uint64_t self = shim__self_owner();
    uint32_t s = atomic_load_explicit(&rw->state, memory_order_relaxed);
    if (mode != SHIM_RW_TRY && (s & SHIM_RW_WRITER) &&
        shim__owner_is_self(atomic_load_explicit(&rw->owner, memory_order_relaxed), self))
        return EDEADLK;
    for (;;) {
        shim__cancel_async_act(); /* it left the queue for one (waitq.h) */
        struct fs_waiter w;
        fs_waiter_prepare(&w);
        w.data = SHIM_RW_W_WRITE;
        fs__spin_lock(&rw->q.lock);
        s = atomic_load_explicit(&rw->state, memory_order_relaxed);
        for (;;) {
            /* Free and nobody queued (else the queue goes first). */
            if (!(s & (SHIM_RW_WRITER | SHIM_RW_READERS)) && !rw->q.head) {
                if (atomic_compare_exchange_weak_explicit(
                        &rw->state, &s, (s | SHIM_RW_WRITER) & ~SHIM_RW_WAITERS,
                        memory_order_acquire, memory_order_relaxed)) {
                    fs__spin_unlock(&rw->q.lock);
                    atomic_store_explicit(&rw->owner, self, memory_order_relaxed);
                    return 0;
                }
            } else if (mode == SHIM_RW_TRY || shim__deadline_passed(d)) {
                fs__spin_unlock(&rw->q.lock);
                return mode == SHIM_RW_TRY ? EBUSY : ETIMEDOUT;
            } else if (shim__rwlock_announce(rw, &s)) {
                break;
            }
        }
        rw->wwaiting++;
        shim__waitq_push_tail_locked(&rw->q, &w);
        int rc = shim__waitq_wait(&rw->q, &w, FS_PARK_RWLOCK, rw, d);
        if (rc == 0) {
            atomic_store_explicit(&rw->owner, self, memory_order_relaxed);
            return 0; /* granted: the grant pass set WRITER for us */
        }
        /* Not granted: leave the writer count, which may let readers in
         * (writer preference). */
        fs__spin_lock(&rw->q.lock);
        rw->wwaiting--;
        shim__rwlock_grant_locked(rw);
        fs__spin_unlock(&rw->q.lock);
        if (rc == -ETIMEDOUT)
            return ETIMEDOUT;
    }
}

static int shim__rwlock_rdlock(pthread_rwlock_t *p, enum shim__rw_mode mode, clockid_t clock,
                               const struct timespec *abs)
{
    struct shim__rwlock *rw = (struct shim__rwlock *)p;
    struct shim__deadline d;
    /* glibc checks the timeout first, even when the lock is free. */
    if (shim__deadline_init(&d, clock, mode == SHIM_RW_TIMED ? abs : NULL))
        return EINVAL;
    if (shim__rwlock_is_glibc(rw))
        return shim__rwlock_lock_glibc(p, false, mode, &d);
    uint32_t s = atomic_load_explicit(&rw->state, memory_order_relaxed);
    if (SHIM_LIKELY(!(s & (SHIM_RW_WRITER | SHIM_RW_WAITERS)) &&
                    (s & SHIM_RW_READERS) != SHIM_RW_READERS) &&
        atomic_compare_exchange_strong_explicit(&rw->state, &s, s + 1, memory_order_acquire,
                                                memory_order_relaxed))
        return 0;
    return shim__rwlock_rdlock_slow(rw, mode, &d);
}

static int shim__rwlock_wrlock(pthread_rwlock_t *p, enum shim__rw_mode mode, clockid_t clock,
                               const struct timespec *abs)
{
    struct shim__rwlock *rw = (struct shim__rwlock *)p;
    struct shim__deadline d;
    if (shim__deadline_init(&d, clock, mode == SHIM_RW_TIMED ? abs : NULL))
        return EINVAL;
    if (shim__rwlock_is_glibc(rw))
        return shim__rwlock_lock_glibc(p, true, mode, &d);
    uint32_t s = 0;
    if (SHIM_LIKELY(atomic_compare_exchange_strong_explicit(
            &rw->state, &s, SHIM_RW_WRITER, memory_order_acquire, memory_order_relaxed))) {
        atomic_store_explicit(&rw->owner, shim__self_owner(), memory_order_relaxed);
        return 0;
    }
    return shim__rwlock_wrlock_slow(rw, mode, &d);
}

/* ---- the API ------------------------------------------------------------------------- */

int shim__pthread_rwlock_init(pthread_rwlock_t *p, const pthread_rwlockattr_t *attr)
{
    int kind = PTHREAD_RWLOCK_DEFAULT_NP;
    if (attr) {
        /* The attribute calls are glibc's (not interposed). */
        int pshared = PTHREAD_PROCESS_PRIVATE;
        pthread_rwlockattr_getpshared(attr, &pshared);
        pthread_rwlockattr_getkind_np(attr, &kind);
        if (pshared != PTHREAD_PROCESS_PRIVATE)
            return REAL(pthread_rwlock_init)(p, attr);
    }
    memset(p, 0, sizeof *p);
    ((struct shim__rwlock *)p)->flags = (uint32_t)kind;
    return 0;
}
SHIM_ALIAS(pthread_rwlock_init)

int shim__pthread_rwlock_destroy(pthread_rwlock_t *p)
{
    struct shim__rwlock *rw = (struct shim__rwlock *)p;
    if (shim__rwlock_is_glibc(rw))
        return REAL(pthread_rwlock_destroy)(p);
    /* A releaser may still be in its grant pass after its wake landed. */
    fs__spin_lock(&rw->q.lock);
    fs__spin_unlock(&rw->q.lock);
    return 0;
}
SHIM_ALIAS(pthread_rwlock_destroy)

int shim__pthread_rwlock_rdlock(pthread_rwlock_t *p)
{
    return shim__rwlock_rdlock(p, SHIM_RW_LOCK, CLOCK_REALTIME, NULL);
}
SHIM_ALIAS(pthread_rwlock_rdlock)

int shim__pthread_rwlock_tryrdlock(pthread_rwlock_t *p)
{
    return shim__rwlock_rdlock(p, SHIM_RW_TRY, CLOCK_REALTIME, NULL);
}
SHIM_ALIAS(pthread_rwlock_tryrdlock)

int shim__pthread_rwlock_timedrdlock(pthread_rwlock_t *p, const struct timespec *abs)
{
    return shim__rwlock_rdlock(p, SHIM_RW_TIMED, CLOCK_REALTIME, abs);
}
SHIM_ALIAS(pthread_rwlock_timedrdlock)

int shim__pthread_rwlock_clockrdlock(pthread_rwlock_t *p, clockid_t clock,
                                     const struct timespec *abs)
{
    return shim__rwlock_rdlock(p, SHIM_RW_TIMED, clock, abs);
}
SHIM_ALIAS(pthread_rwlock_clockrdlock)

int shim__pthread_rwlock_wrlock(pthread_rwlock_t *p)
{
    return shim__rwlock_wrlock(p, SHIM_RW_LOCK, CLOCK_REALTIME, NULL);
}
SHIM_ALIAS(pthread_rwlock_wrlock)

int shim__pthread_rwlock_trywrlock(pthread_rwlock_t *p)
{
    return shim__rwlock_wrlock(p, SHIM_RW_TRY, CLOCK_REALTIME, NULL);
}
SHIM_ALIAS(pthread_rwlock_trywrlock)

int shim__pthread_rwlock_timedwrlock(pthread_rwlock_t *p, const struct timespec *abs)
{
    return shim__rwlock_wrlock(p, SHIM_RW_TIMED, CLOCK_REALTIME, abs);
}
SHIM_ALIAS(pthread_rwlock_timedwrlock)

int shim__pthread_rwlock_clockwrlock(pthread_rwlock_t *p, clockid_t clock,
                                     const struct timespec *abs)
{
    return shim__rwlock_wrlock(p, SHIM_RW_TIMED, clock, abs);
}
SHIM_ALIAS(pthread_rwlock_clockwrlock)

int shim__pthread_rwlock_unlock(pthread_rwlock_t *p)
{
    struct shim__rwlock *rw = (struct shim__rwlock *)p;
    if (shim__rwlock_is_glibc(rw))
        return REAL(pthread_rwlock_unlock)(p);
    uint32_t s = atomic_load_explicit(&rw->state, memory_order_relaxed);
    if (s & SHIM_RW_WRITER) {
        atomic_store_explicit(&rw->owner, 0, memory_order_relaxed);
        while (!(s & SHIM_RW_WAITERS))
            if (atomic_compare_exchange_weak_explicit(&rw->state, &s, s & ~SHIM_RW_WRITER,
                                                      memory_order_release,
                                                      memory_order_relaxed))
                return 0;
        fs__spin_lock(&rw->q.lock);
        atomic_fetch_and_explicit(&rw->state, ~SHIM_RW_WRITER, memory_order_release);
        shim__rwlock_grant_locked(rw);
        fs__spin_unlock(&rw->q.lock);
        return 0;
    }
    if (!(s & SHIM_RW_READERS))
        return 0; /* not locked: undefined; do no harm */
    s = atomic_fetch_sub_explicit(&rw->state, 1, memory_order_release);
    if ((s & SHIM_RW_READERS) == 1 && (s & SHIM_RW_WAITERS)) {
        fs__spin_lock(&rw->q.lock);
        shim__rwlock_grant_locked(rw);
        fs__spin_unlock(&rw->q.lock);
    }
    return 0;
}
SHIM_ALIAS(pthread_rwlock_unlock)
