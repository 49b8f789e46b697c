/*
 * spin.c - pthread spinlocks that cannot livelock a carrier.
 *
 * A fiber spinning on a lock held by a fiber of the same carrier would
 * spin forever: the holder cannot run until the spinner gives the carrier
 * up. So a fiber spins briefly, then yields, then sleeps with backoff
 * (50 us .. 1 ms): fs_yield() alone does not run the carrier's timers, and
 * a holder that sleeps while holding the lock needs them. A plain thread
 * spins and yields its CPU, as glibc's would spin.
 *
 * The lock is the user's int: 0 free, 1 held; pshared needs nothing else.
 */
#include "waitq.h"

#define SHIM_SPIN_PAUSES 100
#define SHIM_SPIN_YIELDS 64

static inline bool shim__spin_try(pthread_spinlock_t *l)
{
    _Atomic int *v = (_Atomic int *)l;
    return atomic_load_explicit(v, memory_order_relaxed) == 0 &&
           atomic_exchange_explicit(v, 1, memory_order_acquire) == 0;
}

static void shim__spin_lock_slow(pthread_spinlock_t *l)
{
    int64_t backoff = SHIM_POLL_MIN_NS;
    for (unsigned i = 0;; i++) {
        if (shim__spin_try(l))
            return;
        if (i < SHIM_SPIN_PAUSES) {
            __builtin_ia32_pause();
        } else if (i < SHIM_SPIN_PAUSES + SHIM_SPIN_YIELDS || !fs_self()) {
            fs_yield();
        } else {
            shim__backoff_sleep(backoff, NULL);
            backoff = backoff * 2 > SHIM_POLL_MAX_NS ? SHIM_POLL_MAX_NS : backoff * 2;
        }
    }
}

int shim__pthread_spin_init(pthread_spinlock_t *l, int pshared)
{
    atomic_store_explicit((_Atomic int *)l, 0, memory_order_relaxed);
    return 0;
}
SHIM_ALIAS(pthread_spin_init)

int shim__pthread_spin_destroy(pthread_spinlock_t *l)
{
    return 0;
}
SHIM_ALIAS(pthread_spin_destroy)

int shim__pthread_spin_lock(pthread_spinlock_t *l)
{
    if (SHIM_UNLIKELY(!shim__spin_try(l)))
        shim__spin_lock_slow(l);
    return 0;
}
SHIM_ALIAS(pthread_spin_lock)

int shim__pthread_spin_trylock(pthread_spinlock_t *l)
{
    return shim__spin_try(l) ? 0 : EBUSY;
}
SHIM_ALIAS(pthread_spin_trylock)

int shim__pthread_spin_unlock(pthread_spinlock_t *l)
{
    atomic_store_explicit((_Atomic int *)l, 0, memory_order_release);
    return 0;
}
SHIM_ALIAS(pthread_spin_unlock)
