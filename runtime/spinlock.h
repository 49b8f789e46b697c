/*
 * spinlock.h - a test-and-test-and-set lock for short critical sections
 * (a few dozen instructions, never across a switch or a syscall).
 *
 * Holders never block, so a waiter spins briefly with `pause`, then yields
 * the kernel thread so that a preempted holder can finish.
 */
#ifndef FS_SPINLOCK_H
#define FS_SPINLOCK_H

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>

typedef struct {
    atomic_int v;
} fs_spinlock;

#define FS_SPINLOCK_INIT {0}

static inline bool fs__spin_trylock(fs_spinlock *l)
{
    return atomic_load_explicit(&l->v, memory_order_relaxed) == 0 &&
           atomic_exchange_explicit(&l->v, 1, memory_order_acquire) == 0;
}

void fs__spin_lock_slow(fs_spinlock *l);

static inline void fs__spin_lock(fs_spinlock *l)
{
    if (__builtin_expect(!fs__spin_trylock(l), 0))
        fs__spin_lock_slow(l);
}

static inline void fs__spin_unlock(fs_spinlock *l)
{
    atomic_store_explicit(&l->v, 0, memory_order_release);
}

#endif
