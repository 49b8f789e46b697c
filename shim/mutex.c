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
 *   WOKEN    a waiter was woken and has not yet competed: unlocks leave
 *            the queue alone until it has (Go's mutexWoken).
 * Unlock with waiters and no woken one dequeues the oldest. Normally it
 * clears LOCKED and wakes that waiter, which then competes with newcomers
 * (barging
 * keeps the lock on a running fiber: no switch per acquisition). But once
 * that waiter has waited more than SHIM_MX_STARVE_NS, unlock hands the
 * lock to it directly, without ever clearing LOCKED, so nobody can barge
 * (Go's starvation mode). The decision is the unlocker's, from the
 * waiter's queueing time, because fibers are not preempted: a fiber that
 * keeps relocking never lets a woken waiter of its own carrier run, but
 * after a hand-off its next lock attempt parks it. A woken waiter that
 * loses the race requeues at the head with its original queueing time,
 * so the queue stays in arrival order. Without WOKEN, every unlock of a
 * fiber that relocks in a loop woke one more waiter, which lost to the
 * next relock and queued again: 1,000 threads on one mutex fell from
 * 30-140M ops/s to 4-10M in 2 runs of 10, a convoy of wakes that
 * snowballed into hand-offs once the woken had waited 1 ms.
 *
 * Spinning: a contender spins briefly, and only while the holder runs on
 * another carrier. Normal and adaptive mutexes name their last taker in
 * owner for that (a hint, stored by every lock, fast path included, as
 * glibc stores __owner); the others spin only while nobody queued.
 *
 * Locking: q.lock protects the queue, WAITERS and WOKEN changes and the
 * hand-off decision. LOCKED is taken without the lock by CAS, so every
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
    _Atomic uint64_t owner;   /* holder of a recursive/errorcheck mutex; last taker's
                                 fs_fiber of a normal/adaptive one (__owner, __nusers) */
    int kind;                 /* PTHREAD_MUTEX_* type, or glibc's kind (__kind) */
    uint32_t skips;           /* unlocks that left the queue to a woken waiter; holder
                                 only (__spins, __elision) */
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
#define SHIM_MX_W_WOKEN (1ull << 62)

/* A contender whose holder runs on another carrier spins in rounds of
 * 1, 2 and 4 pauses (7 in all, about 170 ns on this machine's 25 ns
 * PAUSE: near what a park and a wake cost a fiber), each ending in one
 * look at the word. Longer spins bought nothing once unlocks stopped
 * waking a waiter each (SHIM_MX_WOKEN): 1,000 threads on one mutex,
 * worst of 10 runs, 52-56M ops/s with these 3 rounds, 41-57M with 2
 * pauses, 34-53M with 127 pauses in 6 rounds, 44M with the former 100
 * (glibc: 26-31M); the 10,000-consumer pool and the 64-thread barrier
 * did best with the shortest spins (bench/sync_bench contention 10,
 * pool 5, broadcast 5). */
#define SHIM_MX_SPIN_ROUNDS 3

/* Unlocks that pass the queue by for a woken waiter before one looks at
 * it for a starving waiter (a few microseconds of a relocking loop). */
#define SHIM_MX_WOKEN_SKIPS 1024
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

/* The calling fiber (NULL on a plain thread), for the owner hint on every
 * lock. With per-fiber TLS each fiber has its own copy of this variable,
 * so after the first call it costs one load through %fs instead of a call
 * into the runtime; where fibers share their carrier's TLS it is not
 * cached. */
static __thread fs_fiber *shim__mutex_me __attribute__((tls_model("initial-exec")));

static inline fs_fiber *shim__mutex_self(void)
{
    fs_fiber *f = shim__mutex_me;
    if (SHIM_LIKELY(f))
        return f;
    f = fs_self();
    if (f && fs_fiber_tls())
        shim__mutex_me = f;
    return f;
}

/* Normal and adaptive mutexes keep in owner the fiber that took them last
 * (0: a plain thread), a hint for spinners only; recursive and errorcheck
 * ones keep their holder's identity there (shim__self_owner), written by
 * shim__mutex_lock_slow. */
static inline bool shim__mutex_owner_is_hint(const struct shim__mutex *m)
{
    int type = shim__mutex_kind(m) & 3;
    return type == PTHREAD_MUTEX_NORMAL || type == PTHREAD_MUTEX_ADAPTIVE_NP;
}

static inline void shim__mutex_note_owner(struct shim__mutex *m, fs_fiber *f)
{
    if (shim__mutex_owner_is_hint(m))
        atomic_store_explicit(&m->owner, (uint64_t)(uintptr_t)f, memory_order_relaxed);
}

/* Whether a busy lock may come free while we spin: its holder (the hint)
 * runs on another carrier. Without a hint (a plain thread took it, or a
 * recursive or errorcheck mutex), while nobody has queued yet. */
static inline bool shim__mutex_spin_worth(const struct shim__mutex *m, const fs_fiber *self)
{
    if (shim__mutex_owner_is_hint(m)) {
        const fs_fiber *o =
            (const fs_fiber *)(uintptr_t)atomic_load_explicit(&m->owner, memory_order_relaxed);
        if (o)
            return o != self && fs_fiber_running(o);
    }
    return !(atomic_load_explicit(&m->word, memory_order_relaxed) & SHIM_MX_WAITERS);
}

/* Spins briefly while the lock may be about to come free: while its
 * holder runs on another carrier (shim__mutex_spin_worth). A holder that
 * does not run cannot let go while we spin, and may be runnable on this
 * very carrier, where spinning only delays it, by the whole spin, on
 * every acquisition: that was the collapse of 1,000 threads on one mutex
 * into hand-offs (0.4M ops/s instead of 30-100M). Returns 0 (acquired),
 * EBUSY (a trylock) or EAGAIN (go and wait). */
static int shim__mutex_spin(struct shim__mutex *m, enum shim__lock_mode mode, fs_fiber *self)
{
    for (int i = 0; i < SHIM_MX_SPIN_ROUNDS; i++) {
        if (shim__mutex_try_acquire(m)) {
            shim__mutex_note_owner(m, self);
            return 0;
        }
        if (mode == SHIM_TRYLOCK)
            return EBUSY;
        if (!shim__mutex_spin_worth(m, self))
            break;
        for (int k = 1 << i; k > 0; k--)
            __builtin_ia32_pause();
    }
    return EAGAIN;
}

/* Acquires LOCKED, waiting if needed. Returns 0, EBUSY (try), EINVAL (a bad
 * deadline, checked only once the lock turned out busy, as glibc does) or
 * ETIMEDOUT. */
static int shim__mutex_acquire(struct shim__mutex *m, enum shim__lock_mode mode, clockid_t clock,
                               const struct timespec *abs)
{
    fs_fiber *self = shim__mutex_self();
    int rc = shim__mutex_spin(m, mode, self);
    if (rc != EAGAIN)
        return rc;
    struct shim__deadline d;
    if (shim__deadline_init(&d, clock, mode == SHIM_TIMEDLOCK ? abs : NULL))
        return EINVAL;
    uintptr_t since = (uintptr_t)fs_now();
    bool requeue = false;
    for (;;) {
        shim__cancel_async_act(); /* it left the queue for one (waitq.h) */
        if (shim__deadline_passed(&d))
            return ETIMEDOUT;
        struct fs_waiter w;
        fs_waiter_prepare(&w);
        w.data = since;
        fs__spin_lock(&m->q.lock);
        /* Announce WAITERS before queueing, in the same CAS that sees the
         * lock held: an unlock after it takes the queue lock and finds us;
         * one before it left LOCKED clear and we take the lock here. */
        uint32_t v = atomic_load_explicit(&m->word, memory_order_relaxed);
        for (;;) {
            if (!(v & SHIM_MX_LOCKED)) {
                if (atomic_compare_exchange_weak_explicit(&m->word, &v, v | SHIM_MX_LOCKED,
                                                          memory_order_acquire,
                                                          memory_order_relaxed)) {
                    fs__spin_unlock(&m->q.lock);
                    shim__mutex_note_owner(m, self);
                    return 0;
                }
            } else if ((v & SHIM_MX_WAITERS) ||
                       atomic_compare_exchange_weak_explicit(&m->word, &v, v | SHIM_MX_WAITERS,
                                                             memory_order_relaxed,
                                                             memory_order_relaxed)) {
                break;
            }
        }
        if (requeue)
            shim__waitq_push_head_locked(&m->q, &w);
        else
            shim__waitq_push_tail_locked(&m->q, &w);
        rc = shim__waitq_wait(&m->q, &w, FS_PARK_MUTEX, m, &d);
        if (rc == -ETIMEDOUT)
            return ETIMEDOUT;
        /* The waker wrote data before its wake, under the queue lock; a
         * wake that lost the race for our park (rc != 0) gave us nothing. */
        if (rc == 0 && (w.data & SHIM_MX_W_HANDOFF))
            return 0; /* the unlocker kept LOCKED for us, and named us */
        if (rc == 0 && (w.data & SHIM_MX_W_WOKEN)) {
            /* We are the one woken waiter: from now on unlocks wake the
             * next again (before we compete, so an unlock that we lose
             * to wakes someone for the round after). Under the queue
             * lock: our waker sets WOKEN after its wake, still under it,
             * and we may run before that. */
            fs__spin_lock(&m->q.lock);
            atomic_fetch_and_explicit(&m->word, ~SHIM_MX_WOKEN, memory_order_relaxed);
            fs__spin_unlock(&m->q.lock);
        }
        if ((rc = shim__mutex_spin(m, SHIM_LOCK, self)) != EAGAIN)
            return rc;
        requeue = true;
    }
}

/* Lets go of LOCKED, waking or handing off to a waiter if there is one. */
static void shim__mutex_release(struct shim__mutex *m)
{
    uint32_t v = atomic_load_explicit(&m->word, memory_order_relaxed);
    for (;;) {
        if (!(v & SHIM_MX_LOCKED))
            return; /* a normal mutex unlocked twice: glibc shrugs too */
        /* With a woken waiter still to run, it is the one to compete
         * (Go's mutexWoken): waking one per unlock made a convoy of
         * wakes that lose to the next barger and queue again. But every
         * SHIM_MX_WOKEN_SKIPS such unlocks the queue is looked at all the
         * same, for a waiter starving: the woken one may sit behind a
         * fiber that relocks without ever yielding its carrier (fibers
         * pinned, or no carrier free to steal it), and only a hand-off
         * makes that fiber park. skips is ours while we hold LOCKED. */
        if (v & SHIM_MX_WAITERS) {
            if (!(v & SHIM_MX_WOKEN))
                break;
            if (++m->skips >= SHIM_MX_WOKEN_SKIPS) {
                m->skips = 0;
                break;
            }
        }
        if (atomic_compare_exchange_weak_explicit(&m->word, &v, v & ~SHIM_MX_LOCKED,
                                                  memory_order_release, memory_order_relaxed))
            return;
    }
    fs__spin_lock(&m->q.lock);
    bool handoff = false, woke = false;
    /* Under q.lock, where it changes. */
    bool woken_pending = atomic_load_explicit(&m->word, memory_order_relaxed) & SHIM_MX_WOKEN;
    struct fs_waiter *w;
    int64_t now = 0;
    while ((w = m->q.head)) {
        if (!now)
            now = fs_now();
        bool starving = now - (int64_t)w->data > SHIM_MX_STARVE_NS;
        if (woken_pending && !starving)
            break; /* the woken one competes; nobody is owed a hand-off */
        shim__waitq_remove_locked(&m->q, w);
        if (starving) {
            w->data |= SHIM_MX_W_HANDOFF;
            /* Its holder from now on, not running yet: spinners park. */
            shim__mutex_note_owner(m, w->fiber);
        } else {
            w->data |= SHIM_MX_W_WOKEN;
        }
        if (fs_waiter_wake(w)) {
            handoff = starving;
            woke = true;
            break;
        }
    }
    uint32_t clear = (handoff ? 0 : SHIM_MX_LOCKED) | (m->q.head ? 0 : SHIM_MX_WAITERS);
    uint32_t set = woke && !handoff ? SHIM_MX_WOKEN : 0;
    /* release: publishes the critical section to the next holder (a
     * handed-off waiter gets it through the wake instead). WOKEN goes in
     * with LOCKED's clearing: a barger's unlock after it sees it. */
    v = atomic_load_explicit(&m->word, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&m->word, &v, (v | set) & ~clear,
                                                  memory_order_release, memory_order_relaxed))
        ;
    fs__spin_unlock(&m->q.lock);
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
                                                            memory_order_relaxed))) {
        atomic_store_explicit(&m->owner, (uint64_t)(uintptr_t)shim__mutex_self(),
                              memory_order_relaxed);
        return 0;
    }
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
                                                            memory_order_relaxed))) {
        atomic_store_explicit(&m->owner, (uint64_t)(uintptr_t)shim__mutex_self(),
                              memory_order_relaxed);
        return 0;
    }
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
                                                            memory_order_relaxed))) {
        atomic_store_explicit(&m->owner, (uint64_t)(uintptr_t)shim__mutex_self(),
                              memory_order_relaxed);
        return 0;
    }
    return shim__mutex_lock_slow(m, SHIM_TIMEDLOCK, clock, abs);
}
SHIM_ALIAS(pthread_mutex_clocklock)

int shim__pthread_mutex_timedlock(pthread_mutex_t *mp, const struct timespec *abs)
{
    return shim__pthread_mutex_clocklock(mp, CLOCK_REALTIME, abs);
}
SHIM_ALIAS(pthread_mutex_timedlock)

/* Out of line, so that the fast path below needs no stack frame. */
static __attribute__((noinline)) int shim__mutex_unlock_slow(struct shim__mutex *m, int kind)
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
    shim__mutex_release(m);
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
    return shim__mutex_unlock_slow(m, kind);
}
SHIM_ALIAS(pthread_mutex_unlock)

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
