/*
 * barrier.c - pthread barriers that park fibers.
 *
 * A barrier must be set up by pthread_barrier_init, which marks ours
 * (SHIM_BARRIER_MAGIC mixed with the address); a process-shared one is
 * handed to glibc there and left unmarked, so every later call goes to
 * glibc. glibc has no non-blocking barrier wait, so a fiber waits on one
 * through a helper kernel thread (shim__offload) while it parks.
 *
 * Ours: the threads of a cycle queue up under q.lock; the one that
 * completes the cycle dequeues and wakes them all and is the
 * PTHREAD_BARRIER_SERIAL_THREAD. A woken waiter never touches the barrier
 * again, so the next cycle can start at once.
 */
#include "waitq.h"

#include <string.h>

struct shim__barrier {
    uint32_t count;         /* threads per cycle */
    uint32_t arrived;       /* threads in the current cycle, under q.lock */
    struct shim__waitq q;   /* this cycle's waiters */
    uint32_t magic;         /* SHIM_BARRIER_MAGIC ^ address: ours */
    uint32_t unused;
};
_Static_assert(sizeof(struct shim__barrier) == sizeof(pthread_barrier_t), "barrier size");

#define SHIM_BARRIER_MAGIC 0x66736272u

/* glibc refuses counts from here up (BARRIER_IN_THRESHOLD). */
#define SHIM_BARRIER_MAX_COUNT 0x7fffffffu

static inline uint32_t shim__barrier_magic(const pthread_barrier_t *b)
{
    return SHIM_BARRIER_MAGIC ^ (uint32_t)(uintptr_t)b;
}

static inline bool shim__barrier_is_ours(const pthread_barrier_t *bp)
{
    const struct shim__barrier *b = (const struct shim__barrier *)bp;
    return __atomic_load_n(&b->magic, __ATOMIC_RELAXED) == shim__barrier_magic(bp);
}

int shim__pthread_barrier_init(pthread_barrier_t *bp, const pthread_barrierattr_t *attr,
                               unsigned count)
{
    struct shim__barrier *b = (struct shim__barrier *)bp;
    int pshared = PTHREAD_PROCESS_PRIVATE;
    if (attr)
        pthread_barrierattr_getpshared(attr, &pshared); /* glibc's, not interposed */
    if (pshared != PTHREAD_PROCESS_PRIVATE) {
        int rc = REAL(pthread_barrier_init)(bp, attr, count);
        /* glibc uses the first 20 bytes: drop a marker left by an earlier
         * private init of the same object. */
        __atomic_store_n(&b->magic, 0, __ATOMIC_RELAXED);
        return rc;
    }
    if (count == 0 || count >= SHIM_BARRIER_MAX_COUNT)
        return EINVAL;
    memset(bp, 0, sizeof *bp);
    b->count = count;
    __atomic_store_n(&b->magic, shim__barrier_magic(bp), __ATOMIC_RELAXED);
    return 0;
}
SHIM_ALIAS(pthread_barrier_init)

static int shim__barrier_wait_glibc(void *bp)
{
    return REAL(pthread_barrier_wait)(bp);
}

int shim__pthread_barrier_wait(pthread_barrier_t *bp)
{
    if (!shim__barrier_is_ours(bp))
        return shim__offload(shim__barrier_wait_glibc, bp);
    struct shim__barrier *b = (struct shim__barrier *)bp;
    fs__spin_lock(&b->q.lock);
    if (++b->arrived == b->count) {
        b->arrived = 0;
        shim__waitq_wake_all_locked(&b->q);
        fs__spin_unlock(&b->q.lock);
        return PTHREAD_BARRIER_SERIAL_THREAD;
    }
    struct fs_waiter w;
    fs_waiter_prepare(&w);
    shim__waitq_push_tail_locked(&b->q, &w);
    /* No deadline: only the wake of the thread completing the cycle ends
     * this wait. */
    shim__waitq_wait(&b->q, &w, FS_PARK_BARRIER, b, NULL);
    return 0;
}
SHIM_ALIAS(pthread_barrier_wait)

int shim__pthread_barrier_destroy(pthread_barrier_t *bp)
{
    if (!shim__barrier_is_ours(bp))
        return REAL(pthread_barrier_destroy)(bp);
    struct shim__barrier *b = (struct shim__barrier *)bp;
    /* Also waits out the thread that completed the last cycle, which may
     * still hold the lock after its wakes landed. */
    fs__spin_lock(&b->q.lock);
    int rc = b->arrived ? EBUSY : 0;
    fs__spin_unlock(&b->q.lock);
    return rc;
}
SHIM_ALIAS(pthread_barrier_destroy)
