/*
 * sem.c - unnamed POSIX semaphores that park fibers.
 *
 * An unnamed semaphore must be set up by sem_init before use, so ours
 * carry a marker written there (SHIM_SEM_MAGIC mixed with the object's
 * address, so a stale or copied object does not pass). Anything without
 * it is glibc's and goes to glibc: named semaphores from sem_open (which
 * is not interposed), and process-shared ones, which sem_init hands to
 * glibc. A fiber never blocks its carrier on one of those: it polls
 * sem_trywait, sleeping 50 us .. 1 ms between attempts.
 *
 * Ours: the value is taken by CAS with no lock. A waiter queues itself
 * (which counts it in q.len) and only then re-checks the value; sem_post
 * adds to the value and only then reads q.len. Both orders are seq_cst,
 * so either the waiter sees the new unit or the poster sees the waiter
 * and wakes one. A woken waiter competes for the unit again.
 *
 * Signals: a semaphore park is interruptible (FS_PARK_SEM, unlike lock
 * waits), so a signal sent to a waiting fiber runs its handler at once,
 * and the wait then ends as the kernel ends glibc's futex wait: EINTR
 * from a timed wait, from sem_wait unless every handler that ran had
 * SA_RESTART (then it waits on). The polling of glibc's semaphores
 * sleeps interruptibly and decides the same way.
 */
#include "waitq.h"

#include <limits.h>
#include <semaphore.h>
#include <string.h>

struct shim__sem {
    _Atomic uint32_t value;
    uint32_t unused;
    struct shim__waitq q;   /* waiters; q.len counts them */
    uint64_t magic;         /* SHIM_SEM_MAGIC ^ address: ours */
};
_Static_assert(sizeof(struct shim__sem) == sizeof(sem_t), "sem size");

#define SHIM_SEM_MAGIC 0x66736d6573686d53ull

static inline bool shim__sem_is_ours(const sem_t *sp)
{
    const struct shim__sem *s = (const struct shim__sem *)sp;
    return __atomic_load_n(&s->magic, __ATOMIC_RELAXED) == (SHIM_SEM_MAGIC ^ (uintptr_t)sp);
}

static inline bool shim__sem_try_take(struct shim__sem *s)
{
    uint32_t v = atomic_load_explicit(&s->value, memory_order_relaxed);
    while (v > 0)
        if (atomic_compare_exchange_weak_explicit(&s->value, &v, v - 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return true;
    return false;
}

/* Whether a wait ends now because a handler ran in the waiting fiber
 * since *h was read (then *h takes the new count): as the kernel ends
 * glibc's futex wait, a timed wait always fails with EINTR, sem_wait
 * unless every handler that ran had SA_RESTART (then it is restarted). */
static bool shim__sem_interrupted(uint32_t *h, bool timed)
{
    uint32_t now = shim__sig_handled();
    if (now == *h)
        return false;
    *h = now;
    bool restart = shim__sig_should_restart(); /* and re-arms the flag */
    return timed || !restart;
}

/* glibc's semaphores: errno-style result. */
static int shim__sem_wait_glibc(sem_t *sp, struct shim__deadline *d, bool timed)
{
    uint32_t h = shim__sig_handled();
    if (!fs_self())
        return timed ? REAL(sem_clockwait)(sp, d->clock, &d->abs) : REAL(sem_wait)(sp);
    for (int64_t backoff = SHIM_POLL_MIN_NS;;) {
        if (REAL(sem_trywait)(sp) == 0)
            return 0;
        if (errno != EAGAIN)
            return -1;
        if (shim__deadline_passed(d)) {
            errno = ETIMEDOUT;
            return -1;
        }
        shim__backoff_sleep(backoff, d); /* interruptible: a handler runs in it */
        if (shim__sem_interrupted(&h, timed) || shim__cancel_due()) {
            errno = EINTR;
            return -1;
        }
        backoff = backoff * 2 > SHIM_POLL_MAX_NS ? SHIM_POLL_MAX_NS : backoff * 2;
    }
}

/* Returns 0 or -1 with errno (ETIMEDOUT, EINTR). */
static int shim__sem_wait_slow(struct shim__sem *s, struct shim__deadline *d, bool timed)
{
    uint32_t h = shim__sig_handled();
    for (;;) {
        struct fs_waiter w;
        fs_waiter_prepare(&w);
        fs__spin_lock(&s->q.lock);
        shim__waitq_push_tail_locked(&s->q, &w);
        /* Queued (counted in q.len) before the value is read again. */
        atomic_thread_fence(memory_order_seq_cst);
        if (shim__sem_try_take(s)) {
            shim__waitq_remove_locked(&s->q, &w);
            fs__spin_unlock(&s->q.lock);
            return 0;
        }
        if (shim__deadline_passed(d)) {
            shim__waitq_remove_locked(&s->q, &w);
            fs__spin_unlock(&s->q.lock);
            errno = ETIMEDOUT;
            return -1;
        }
        /* FS_PARK_SEM is interruptible: a signal sent to this fiber ends
         * the park (-EINTR) and its handler runs as we resume. */
        int rc = shim__waitq_wait(&s->q, &w, FS_PARK_SEM, s, d);
        if (rc == -ETIMEDOUT) {
            errno = ETIMEDOUT;
            return -1;
        }
        /* Off a fiber, -EINTR is already the kernel's verdict (park.c). */
        if (rc == -EINTR && !fs_self()) {
            /* A wake that landed anyway (a post, perhaps the handler's
             * own) is passed on with the unit it announced, which stays. */
            if (fs_waiter_woken(&w) && atomic_load(&s->value) > 0) {
                fs__spin_lock(&s->q.lock);
                shim__waitq_wake_one_locked(&s->q);
                fs__spin_unlock(&s->q.lock);
            }
            errno = EINTR;
            return -1;
        }
        if (rc == -EINTR && (shim__sem_interrupted(&h, timed) || shim__cancel_due())) {
            errno = EINTR; /* the unit, if one was posted, stays for others */
            return -1;
        }
        if (shim__sem_try_take(s))
            return 0;
    }
}

/* A cancellation point, as glibc's: a pending cancel acts at entry, even
 * with a unit available, and when it ended the wait (EINTR, the unit
 * left to others). */
static int shim__sem_take(sem_t *sp, clockid_t clock, const struct timespec *abs, bool timed)
{
    struct shim__deadline d;
    /* glibc rejects a bad timeout even when a unit is available. */
    if (shim__deadline_init(&d, clock, timed ? abs : NULL)) {
        errno = EINVAL;
        return -1;
    }
    shim__cancel_point();
    int rc;
    if (!shim__sem_is_ours(sp)) {
        rc = shim__sem_wait_glibc(sp, &d, timed);
    } else {
        struct shim__sem *s = (struct shim__sem *)sp;
        if (SHIM_LIKELY(shim__sem_try_take(s)))
            return 0;
        rc = shim__sem_wait_slow(s, &d, timed);
    }
    if (rc < 0 && errno == EINTR)
        shim__cancel_point();
    return rc;
}

int shim__sem_init(sem_t *sp, int pshared, unsigned value)
{
    if (value > SEM_VALUE_MAX) {
        errno = EINVAL;
        return -1;
    }
    struct shim__sem *s = (struct shim__sem *)sp;
    if (pshared) {
        int rc = REAL(sem_init)(sp, pshared, value);
        /* glibc writes only its first 16 bytes: drop a marker left by an
         * earlier private sem_init of the same object. */
        __atomic_store_n(&s->magic, 0, __ATOMIC_RELAXED);
        return rc;
    }
    memset(sp, 0, sizeof *sp);
    atomic_store_explicit(&s->value, value, memory_order_relaxed);
    __atomic_store_n(&s->magic, SHIM_SEM_MAGIC ^ (uintptr_t)sp, __ATOMIC_RELAXED);
    return 0;
}
SHIM_ALIAS(sem_init)

int shim__sem_destroy(sem_t *sp)
{
    if (!shim__sem_is_ours(sp))
        return REAL(sem_destroy)(sp);
    struct shim__sem *s = (struct shim__sem *)sp;
    /* A poster may still hold the queue lock after its wake landed. */
    fs__spin_lock(&s->q.lock);
    fs__spin_unlock(&s->q.lock);
    return 0;
}
SHIM_ALIAS(sem_destroy)

int shim__sem_wait(sem_t *sp)
{
    return shim__sem_take(sp, CLOCK_REALTIME, NULL, false);
}
SHIM_ALIAS(sem_wait)

int shim__sem_timedwait(sem_t *sp, const struct timespec *abs)
{
    return shim__sem_take(sp, CLOCK_REALTIME, abs, true);
}
SHIM_ALIAS(sem_timedwait)

int shim__sem_clockwait(sem_t *sp, clockid_t clock, const struct timespec *abs)
{
    return shim__sem_take(sp, clock, abs, true);
}
SHIM_ALIAS(sem_clockwait)

int shim__sem_trywait(sem_t *sp)
{
    if (!shim__sem_is_ours(sp))
        return REAL(sem_trywait)(sp);
    if (shim__sem_try_take((struct shim__sem *)sp))
        return 0;
    errno = EAGAIN;
    return -1;
}
SHIM_ALIAS(sem_trywait)

int shim__sem_post(sem_t *sp)
{
    if (!shim__sem_is_ours(sp))
        return REAL(sem_post)(sp);
    struct shim__sem *s = (struct shim__sem *)sp;
    uint32_t v = atomic_load_explicit(&s->value, memory_order_relaxed);
    do {
        if (v >= SEM_VALUE_MAX) {
            errno = EOVERFLOW;
            return -1;
        }
    } while (!atomic_compare_exchange_weak_explicit(&s->value, &v, v + 1, memory_order_seq_cst,
                                                    memory_order_relaxed));
    /* seq_cst with the CAS above, against the waiter's queueing then
     * re-checking: see the header comment. */
    if (atomic_load_explicit(&s->q.len, memory_order_seq_cst) > 0) {
        fs__spin_lock(&s->q.lock);
        shim__waitq_wake_one_locked(&s->q);
        fs__spin_unlock(&s->q.lock);
    }
    return 0;
}
SHIM_ALIAS(sem_post)

int shim__sem_getvalue(sem_t *sp, int *sval)
{
    if (!shim__sem_is_ours(sp))
        return REAL(sem_getvalue)(sp, sval);
    *sval = (int)atomic_load_explicit(&((struct shim__sem *)sp)->value, memory_order_relaxed);
    return 0;
}
SHIM_ALIAS(sem_getvalue)
