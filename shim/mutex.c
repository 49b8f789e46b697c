/*
 * mutex.c - pthread mutexes that park fibers instead of blocking carriers.
 *
 * The mutex lives in the user's pthread_mutex_t (40 bytes), laid over
 * glibc's struct __pthread_mutex_s so that __kind stays at offset 16: the
 * static initializers (PTHREAD_MUTEX_INITIALIZER and the _NP recursive,
 * errorcheck and adaptive ones) only set __kind, and all-zero is a valid
 * unlocked mutex with an empty queue.
 *
 * Lock word (offset 0):
 *   LOCKED   held. Uncontended lock and unlock are one CAS each: 0 <-> LOCKED.
 *   WAITERS  the queue may be non-empty: unlock must look at it.
 *   WOKEN    an unlock woke a waiter that has not yet run (Go's
 *            mutexWoken): further unlocks just clear LOCKED and wake
 *            nobody, so that a fiber relocking in a loop pays one CAS, not
 *            a queue operation and a wake per unlock. Only the woken
 *            waiter clears it, by a CAS that either takes the free lock or
 *            sees it held: then that holder's unlock sees WOKEN clear and
 *            wakes the next one. A wake is never lost, and at most one
 *            woken waiter is on its way at a time.
 * Unlock with waiters dequeues the oldest one. Normally it clears LOCKED
 * and wakes that waiter, which then competes with newcomers (barging
 * keeps the lock on a running fiber: no switch per acquisition). But once
 * that waiter has waited more than SHIM_MX_STARVE_NS, unlock hands the
 * lock to it directly, without ever clearing LOCKED, so nobody can barge
 * (Go's starvation mode, which ends by itself at the first waiter that
 * waited less, or when the queue is empty). The decision is the
 * unlocker's, from the waiter's queueing time, because fibers are not
 * preempted: a fiber that keeps relocking never lets a woken waiter of its
 * own carrier run. After a hand-off to a fiber, pthread_mutex_unlock
 * yields (Go's semrelease with handoff): the new holder was readied on
 * this carrier (it resumes where it is woken) and would otherwise hold the
 * lock without running until the unlocker blocks, while every other
 * contender queues behind it. A woken waiter that loses the race requeues
 * at the head with its original queueing time, so the queue stays in
 * arrival order.
 *
 * Locking: q.lock protects the queue, WAITERS changes, setting WOKEN and
 * the hand-off decision. LOCKED is taken without the lock by CAS, so every
 * update of the word is a CAS or an atomic and/or.
 *
 * Process-shared, robust and priority-inheritance/protect mutexes stay
 * glibc's: pthread_mutex_init hands them to glibc, whose __kind then
 * carries one of SHIM_MX_GLIBC_KIND_BITS, which routes every later call
 * to mutex_glibc.c with glibc's layout intact. There each fiber owns such
 * a mutex on its own, although glibc knows owners by kernel thread.
 */
#include "mutex_glibc.h"

#include <limits.h>
#include <string.h>

/* Overlays pthread_mutex_t; the glibc field each one reuses is named. */
struct shim__mutex {
    _Atomic uint32_t word;    /* SHIM_MX_* (__lock) */
    uint32_t count;           /* recursive depth, holder only (__count) */
    _Atomic uint64_t owner;   /* holder of a recursive/errorcheck mutex (__owner, __nusers) */
    int kind;                 /* PTHREAD_MUTEX_* type, or glibc's kind (__kind) */
    uint32_t unused;          /* (__spins, __elision) */
    struct shim__waitq q;     /* waiters (__list) */
};
_Static_assert(sizeof(struct shim__mutex) == sizeof(pthread_mutex_t), "mutex size");
_Static_assert(offsetof(struct shim__mutex, kind) == offsetof(pthread_mutex_t, __data.__kind),
               "__kind must stay where the static initializers put it");

#define SHIM_MX_LOCKED 1u
#define SHIM_MX_WAITERS 2u
#define SHIM_MX_WOKEN 4u

/* glibc's __kind bits for robust (0x10), priority inheritance (0x20),
 * priority protect (0x40) and process-shared (0x80) mutexes. */
#define SHIM_MX_GLIBC_KIND_BITS 0xf0

/* fs_waiter.data of a mutex waiter: when it first queued (fs_now()), and
 * HANDOFF once the unlocker gave it the lock. */
#define SHIM_MX_W_HANDOFF (1ull << 63)

#define SHIM_MX_SPINS 100
#define SHIM_MX_STARVE_NS 1000000

static inline int shim__mutex_kind(const struct shim__mutex *m)
{
    return __atomic_load_n(&m->kind, __ATOMIC_RELAXED);
}

bool shim__mutex_is_real(const pthread_mutex_t *mp)
{
    return shim__mutex_kind((const struct shim__mutex *)mp) & SHIM_MX_GLIBC_KIND_BITS;
}

/* ---- ours ------------------------------------------------------------------------ */

/* Takes LOCKED if it is clear. */
static inline bool shim__mutex_try_acquire(struct shim__mutex *m)
{
    uint32_t v = atomic_load_explicit(&m->word, memory_order_relaxed);
    while (!(v & SHIM_MX_LOCKED))
        if (atomic_compare_exchange_weak_explicit(&m->word, &v, v | SHIM_MX_LOCKED,
                                                  memory_order_acquire, memory_order_relaxed))
            return true;
    return false;
}

/* The woken waiter gives up WOKEN: takes the lock if it is free (true),
 * else clears WOKEN while it is held (false), so that the holder's unlock
 * wakes the next waiter. Never clears WOKEN on a free lock: an unlock that
 * saw WOKEN set left the queue to us. */
static bool shim__mutex_drop_woken(struct shim__mutex *m)
{
    uint32_t v = atomic_load_explicit(&m->word, memory_order_relaxed);
    for (;;) {
        if (!(v & SHIM_MX_LOCKED)) {
            if (atomic_compare_exchange_weak_explicit(&m->word, &v,
                                                      (v | SHIM_MX_LOCKED) & ~SHIM_MX_WOKEN,
                                                      memory_order_acquire, memory_order_relaxed))
                return true;
        } else if (atomic_compare_exchange_weak_explicit(&m->word, &v, v & ~SHIM_MX_WOKEN,
                                                         memory_order_relaxed,
                                                         memory_order_relaxed)) {
            return false;
        }
    }
}

/* Acquires LOCKED, waiting if needed. Returns 0, EBUSY (try), EINVAL (a bad
 * deadline, checked only once the lock turned out busy, as glibc does) or
 * ETIMEDOUT. */
static int shim__mutex_acquire(struct shim__mutex *m, enum shim__lock_mode mode, clockid_t clock,
                               const struct timespec *abs)
{
    /* Spin briefly while the lock may be about to come free: held, but
     * nobody queued. Once fibers queue, the holder may well be one of
     * them, handed the lock and runnable on this very carrier, where it
     * cannot run while we spin (fibers are not preempted): spinning then
     * only delays it, by the whole spin, on every acquisition. That was
     * the collapse of 1,000 threads on one mutex into starvation mode
     * (0.4M ops/s instead of 30-100M). */
    for (int i = 0; i < SHIM_MX_SPINS; i++) {
        if (shim__mutex_try_acquire(m))
            return 0;
        if (mode == SHIM_TRYLOCK)
            return EBUSY;
        if (atomic_load_explicit(&m->word, memory_order_relaxed) & SHIM_MX_WAITERS)
            break;
        __builtin_ia32_pause();
    }
    struct shim__deadline d;
    if (shim__deadline_init(&d, clock, mode == SHIM_TIMEDLOCK ? abs : NULL))
        return EINVAL;
    uintptr_t since = (uintptr_t)fs_now();
    bool requeue = false;
    bool woken = false; /* we hold WOKEN: a wake of ours, not yet acted on */
    for (;;) {
        if (shim__deadline_passed(&d)) {
            /* POSIX: no timeout if the lock can be had now. */
            if (woken && shim__mutex_drop_woken(m))
                return 0;
            return ETIMEDOUT;
        }
        struct fs_waiter w;
        fs_waiter_prepare(&w);
        w.data = since;
        fs__spin_lock(&m->q.lock);
        /* Announce WAITERS before queueing, in the same CAS that sees the
         * lock held: an unlock after it takes the queue lock and finds us;
         * one before it left LOCKED clear and we take the lock here. A
         * woken waiter drops WOKEN in that same CAS. */
        uint32_t drop = woken ? SHIM_MX_WOKEN : 0;
        uint32_t v = atomic_load_explicit(&m->word, memory_order_relaxed);
        for (;;) {
            if (!(v & SHIM_MX_LOCKED)) {
                if (atomic_compare_exchange_weak_explicit(&m->word, &v,
                                                          (v | SHIM_MX_LOCKED) & ~drop,
                                                          memory_order_acquire,
                                                          memory_order_relaxed)) {
                    fs__spin_unlock(&m->q.lock);
                    return 0;
                }
            } else if (((v & SHIM_MX_WAITERS) && !(v & drop)) ||
                       atomic_compare_exchange_weak_explicit(&m->word, &v,
                                                             (v | SHIM_MX_WAITERS) & ~drop,
                                                             memory_order_relaxed,
                                                             memory_order_relaxed)) {
                break;
            }
        }
        woken = false;
        if (requeue)
            shim__waitq_push_head_locked(&m->q, &w);
        else
            shim__waitq_push_tail_locked(&m->q, &w);
        int rc = shim__waitq_wait(&m->q, &w, FS_PARK_MUTEX, m, &d);
        if (rc == -ETIMEDOUT)
            return ETIMEDOUT;
        /* The waker wrote data before its wake, under the queue lock. */
        if (rc == 0 && (w.data & SHIM_MX_W_HANDOFF))
            return 0; /* the unlocker kept LOCKED for us */
        /* rc 0: an unlock woke us and set WOKEN for us (rc 1: nothing was
         * granted, a wake that failed). */
        woken = rc == 0;
        if (shim__mutex_try_acquire(m)) {
            if (woken)
                atomic_fetch_and_explicit(&m->word, ~SHIM_MX_WOKEN, memory_order_relaxed);
            return 0;
        }
        requeue = true;
    }
}

/* Lets go of LOCKED, waking or handing off to a waiter if there is one.
 * Returns true when it handed the lock to a fiber (see the yield in
 * shim__pthread_mutex_unlock). */
static bool shim__mutex_release(struct shim__mutex *m)
{
    uint32_t v = atomic_load_explicit(&m->word, memory_order_relaxed);
    for (;;) {
        if (!(v & SHIM_MX_LOCKED))
            return false; /* a normal mutex unlocked twice: glibc shrugs too */
        if ((v & (SHIM_MX_WAITERS | SHIM_MX_WOKEN)) == SHIM_MX_WAITERS)
            break;
        /* Nobody queued, or a woken waiter on its way, which takes over
         * the queue (see WOKEN). */
        if (atomic_compare_exchange_weak_explicit(&m->word, &v, v & ~SHIM_MX_LOCKED,
                                                  memory_order_release, memory_order_relaxed))
            return false;
    }
    /* Only the holder sets WOKEN (here, under the queue lock), and we hold
     * the lock: it stays clear until we set it. */
    fs__spin_lock(&m->q.lock);
    bool handoff = false, to_fiber = false;
    struct fs_waiter *w;
    int64_t now = 0;
    while ((w = shim__waitq_pop_locked(&m->q))) {
        if (!now)
            now = fs_now();
        bool starving = now - (int64_t)w->data > SHIM_MX_STARVE_NS;
        if (starving)
            w->data |= SHIM_MX_W_HANDOFF;
        else /* before the wake: the waiter may run (and drop it) at once */
            atomic_fetch_or_explicit(&m->word, SHIM_MX_WOKEN, memory_order_relaxed);
        /* Read before the wake: a handed-off waiter returns at once,
         * without our queue lock, and its record dies with its frame. */
        bool fiber = w->fiber != NULL;
        if (fs_waiter_wake(w)) {
            handoff = starving;
            to_fiber = fiber;
            break;
        }
        if (!starving) /* it timed out: nobody is on the way */
            atomic_fetch_and_explicit(&m->word, ~SHIM_MX_WOKEN, memory_order_relaxed);
    }
    uint32_t clear = (handoff ? 0 : SHIM_MX_LOCKED) | (m->q.head ? 0 : SHIM_MX_WAITERS);
    /* release: publishes the critical section to the next holder (a
     * handed-off waiter gets it through the wake instead). */
    atomic_fetch_and_explicit(&m->word, ~clear, memory_order_release);
    fs__spin_unlock(&m->q.lock);
    return handoff && to_fiber && fs_self();
}

static int shim__mutex_lock_slow(struct shim__mutex *m, enum shim__lock_mode mode, clockid_t clock,
                                 const struct timespec *abs)
{
    int kind = shim__mutex_kind(m);
    if (kind & SHIM_MX_GLIBC_KIND_BITS)
        return shim__mutex_glibc_lock((pthread_mutex_t *)m, mode, clock, abs);
    int type = kind & 3;
    if (type != PTHREAD_MUTEX_RECURSIVE && type != PTHREAD_MUTEX_ERRORCHECK)
        return shim__mutex_acquire(m, mode, clock, abs);
    uint64_t self = shim__self_owner();
    if (shim__owner_is_self(atomic_load_explicit(&m->owner, memory_order_relaxed), self)) {
        if (type == PTHREAD_MUTEX_ERRORCHECK)
            return mode == SHIM_TRYLOCK ? EBUSY : EDEADLK;
        if (m->count == UINT_MAX)
            return EAGAIN;
        m->count++;
        return 0;
    }
    int rc = shim__mutex_acquire(m, mode, clock, abs);
    if (rc == 0) {
        atomic_store_explicit(&m->owner, self, memory_order_relaxed);
        m->count = 1;
    }
    return rc;
}

/* ---- the API ------------------------------------------------------------------------- */

int shim__pthread_mutex_init(pthread_mutex_t *mp, const pthread_mutexattr_t *attr)
{
    int type = PTHREAD_MUTEX_NORMAL;
    if (attr) {
        /* The attribute calls are glibc's (not interposed). */
        int pshared = PTHREAD_PROCESS_PRIVATE, robust = PTHREAD_MUTEX_STALLED;
        int protocol = PTHREAD_PRIO_NONE;
        pthread_mutexattr_gettype(attr, &type);
        pthread_mutexattr_getpshared(attr, &pshared);
        pthread_mutexattr_getrobust(attr, &robust);
        pthread_mutexattr_getprotocol(attr, &protocol);
        if (pshared != PTHREAD_PROCESS_PRIVATE || robust != PTHREAD_MUTEX_STALLED ||
            protocol != PTHREAD_PRIO_NONE) {
            /* A new mutex at this address is free for every fiber. */
            shim__mutex_glibc_forget(mp);
            return REAL(pthread_mutex_init)(mp, attr);
        }
    }
    memset(mp, 0, sizeof *mp);
    ((struct shim__mutex *)mp)->kind = type;
    return 0;
}
SHIM_ALIAS(pthread_mutex_init)

int shim__pthread_mutex_lock(pthread_mutex_t *mp)
{
    struct shim__mutex *m = (struct shim__mutex *)mp;
    uint32_t v = 0;
    if (SHIM_LIKELY(shim__mutex_kind(m) == PTHREAD_MUTEX_NORMAL) &&
        SHIM_LIKELY(atomic_compare_exchange_strong_explicit(&m->word, &v, SHIM_MX_LOCKED,
                                                            memory_order_acquire,
                                                            memory_order_relaxed)))
        return 0;
    return shim__mutex_lock_slow(m, SHIM_LOCK, CLOCK_REALTIME, NULL);
}
SHIM_ALIAS(pthread_mutex_lock)

int shim__pthread_mutex_trylock(pthread_mutex_t *mp)
{
    struct shim__mutex *m = (struct shim__mutex *)mp;
    uint32_t v = 0;
    if (SHIM_LIKELY(shim__mutex_kind(m) == PTHREAD_MUTEX_NORMAL) &&
        SHIM_LIKELY(atomic_compare_exchange_strong_explicit(&m->word, &v, SHIM_MX_LOCKED,
                                                            memory_order_acquire,
                                                            memory_order_relaxed)))
        return 0;
    return shim__mutex_lock_slow(m, SHIM_TRYLOCK, CLOCK_REALTIME, NULL);
}
SHIM_ALIAS(pthread_mutex_trylock)

int shim__pthread_mutex_clocklock(pthread_mutex_t *mp, clockid_t clock, const struct timespec *abs)
{
    /* glibc rejects the clock before anything else, the timeout only
     * once it has to wait. */
    if (clock != CLOCK_REALTIME && clock != CLOCK_MONOTONIC)
        return EINVAL;
    struct shim__mutex *m = (struct shim__mutex *)mp;
    uint32_t v = 0;
    if (SHIM_LIKELY(shim__mutex_kind(m) == PTHREAD_MUTEX_NORMAL) &&
        SHIM_LIKELY(atomic_compare_exchange_strong_explicit(&m->word, &v, SHIM_MX_LOCKED,
                                                            memory_order_acquire,
                                                            memory_order_relaxed)))
        return 0;
    return shim__mutex_lock_slow(m, SHIM_TIMEDLOCK, clock, abs);
}
SHIM_ALIAS(pthread_mutex_clocklock)

int shim__pthread_mutex_timedlock(pthread_mutex_t *mp, const struct timespec *abs)
{
    return shim__pthread_mutex_clocklock(mp, CLOCK_REALTIME, abs);
}
SHIM_ALIAS(pthread_mutex_timedlock)

/* Out of line, so that the fast path below needs no stack frame. may_yield:
 * the caller holds no spinlock (see shim__mutex_unlock_holding). */
static __attribute__((noinline)) int shim__mutex_unlock_slow(struct shim__mutex *m, int kind,
                                                             bool may_yield)
{
    if (kind & SHIM_MX_GLIBC_KIND_BITS)
        return shim__mutex_glibc_unlock((pthread_mutex_t *)m);
    int type = kind & 3;
    if (type == PTHREAD_MUTEX_RECURSIVE || type == PTHREAD_MUTEX_ERRORCHECK) {
        if (!shim__owner_is_self(atomic_load_explicit(&m->owner, memory_order_relaxed),
                                 shim__self_owner()))
            return EPERM;
        if (type == PTHREAD_MUTEX_RECURSIVE && --m->count)
            return 0;
        atomic_store_explicit(&m->owner, 0, memory_order_relaxed);
    }
    if (shim__mutex_release(m) && may_yield)
        fs_yield(); /* let the fiber we handed the lock to run now */
    return 0;
}

int shim__pthread_mutex_unlock(pthread_mutex_t *mp)
{
    struct shim__mutex *m = (struct shim__mutex *)mp;
    int kind = shim__mutex_kind(m);
    uint32_t v = SHIM_MX_LOCKED;
    if (SHIM_LIKELY(kind == PTHREAD_MUTEX_NORMAL) &&
        SHIM_LIKELY(atomic_compare_exchange_strong_explicit(&m->word, &v, 0, memory_order_release,
                                                            memory_order_relaxed)))
        return 0;
    return shim__mutex_unlock_slow(m, kind, true);
}
SHIM_ALIAS(pthread_mutex_unlock)

int shim__mutex_unlock_holding(pthread_mutex_t *mp)
{
    struct shim__mutex *m = (struct shim__mutex *)mp;
    int kind = shim__mutex_kind(m);
    uint32_t v = SHIM_MX_LOCKED;
    if (SHIM_LIKELY(kind == PTHREAD_MUTEX_NORMAL) &&
        SHIM_LIKELY(atomic_compare_exchange_strong_explicit(&m->word, &v, 0, memory_order_release,
                                                            memory_order_relaxed)))
        return 0;
    return shim__mutex_unlock_slow(m, kind, false);
}

int shim__pthread_mutex_destroy(pthread_mutex_t *mp)
{
    struct shim__mutex *m = (struct shim__mutex *)mp;
    if (shim__mutex_kind(m) & SHIM_MX_GLIBC_KIND_BITS) {
        /* glibc lets a held robust mutex be destroyed: whoever held it in
         * this process holds nothing any more. */
        int rc = REAL(pthread_mutex_destroy)(mp);
        if (rc == 0)
            shim__mutex_glibc_forget(mp);
        return rc;
    }
    if (atomic_load_explicit(&m->word, memory_order_relaxed) & SHIM_MX_LOCKED)
        return EBUSY;
    /* The last unlocker may still hold the queue lock after letting go of
     * the word; the memory must outlive it (POSIX lets the new holder
     * unlock and destroy at once). */
    fs__spin_lock(&m->q.lock);
    fs__spin_unlock(&m->q.lock);
    return 0;
}
SHIM_ALIAS(pthread_mutex_destroy)
