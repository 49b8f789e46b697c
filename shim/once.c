/*
 * once.c - pthread_once whose waiters park.
 *
 * pthread_once_t is one int, too small for a queue, so callers that find
 * the routine running wait in one of SHIM_ONCE_BUCKETS queues shared by
 * address hash; the finisher wakes the waiters of its own object only.
 * States: INIT (0, PTHREAD_ONCE_INIT) -> RUNNING [| WAITERS] -> DONE (2,
 * glibc's value too). If the routine parks, its fiber's carrier runs
 * other fibers, and callers on any carrier park until DONE.
 *
 * A routine that does not return, because its thread was cancelled in it
 * or called pthread_exit, or because it threw (std::call_once calls
 * pthread_once, and a callable that throws must leave the flag unset),
 * leaves the object as if pthread_once had never been called, as POSIX
 * and glibc do: the state goes back to INIT and the waiters wake, one of
 * them to run the routine. All three unwind the caller's stack (cancel.c,
 * or the C++ runtime), so this file is built with -fexceptions and the
 * reset is a cleanup of the frame that called the routine (glibc's
 * pthread_cleanup_combined_push does the same).
 */
#include "waitq.h"

#define SHIM_ONCE_INIT 0
#define SHIM_ONCE_RUNNING 1
#define SHIM_ONCE_DONE 2
#define SHIM_ONCE_WAITERS 4   /* with RUNNING: someone is queued */

#define SHIM_ONCE_BUCKETS 64

static struct shim__waitq shim__once_queues[SHIM_ONCE_BUCKETS];

static struct shim__waitq *shim__once_queue(const pthread_once_t *o)
{
    uintptr_t h = (uintptr_t)o;
    h ^= h >> 17;
    h *= 0x9e3779b97f4a7c15ull;
    return &shim__once_queues[(h >> 32) % SHIM_ONCE_BUCKETS];
}

/* Wakes every waiter queued for o (in its bucket's queue). */
static void shim__once_wake(pthread_once_t *o)
{
    struct shim__waitq *q = shim__once_queue(o);
    fs__spin_lock(&q->lock);
    struct fs_waiter *w = q->head, *next;
    for (; w; w = next) {
        next = shim__waitq_next_locked(q, w);
        if (w->data == (uintptr_t)o) {
            shim__waitq_remove_locked(q, w);
            fs_waiter_wake(w);
        }
    }
    fs__spin_unlock(&q->lock);
}

struct shim_once_run {
    pthread_once_t *o;
    bool running; /* the routine has not returned */
};

/* The cleanup of the frame that runs the routine: on an unwind through
 * it, back to INIT. A waiter that queued itself saw RUNNING under its
 * queue's lock and set WAITERS; this exchange reads the flag, then takes
 * the lock to wake it, so no waiter sleeps on (the finisher's argument). */
static void shim__once_unwound(struct shim_once_run *r)
{
    if (!r->running)
        return;
    int v = atomic_exchange_explicit((_Atomic int *)r->o, SHIM_ONCE_INIT, memory_order_acq_rel);
    if (v & SHIM_ONCE_WAITERS)
        shim__once_wake(r->o);
}

static int shim__once_slow(pthread_once_t *o, void (*fn)(void))
{
    _Atomic int *st = (_Atomic int *)o;
    struct shim__waitq *q = shim__once_queue(o);
    for (;;) {
        shim__cancel_async_act(); /* it left the queue for one (waitq.h) */
        int v = atomic_load_explicit(st, memory_order_acquire);
        if (v == SHIM_ONCE_DONE)
            return 0;
        if (v == SHIM_ONCE_INIT) {
            if (!atomic_compare_exchange_strong_explicit(st, &v, SHIM_ONCE_RUNNING,
                                                         memory_order_acquire,
                                                         memory_order_acquire))
                continue;
            {
                struct shim_once_run run __attribute__((cleanup(shim__once_unwound))) = {o, true};
                fn();
                run.running = false;
            }
            /* release: what fn wrote is visible to every caller that sees DONE. */
            v = atomic_exchange_explicit(st, SHIM_ONCE_DONE, memory_order_acq_rel);
            if (v & SHIM_ONCE_WAITERS)
                shim__once_wake(o);
            return 0;
        }
        /* Running elsewhere: announce WAITERS while it is still RUNNING,
         * with the queue locked. The finisher reads the flag in its
         * exchange to DONE, so either it sees the flag (and then needs
         * the lock we hold, and finds us queued) or our CAS fails on
         * DONE. */
        struct fs_waiter w;
        fs_waiter_prepare(&w);
        w.data = (uintptr_t)o;
        fs__spin_lock(&q->lock);
        /* Reread under the lock: a v with WAITERS read before it may be
         * stale, the finisher having since made it DONE and woken the
         * queue, and we would then queue ourselves with nobody to wake us
         * (the hang once::many_objects caught, 1 run in 5). */
        v = atomic_load_explicit(st, memory_order_acquire);
        while (v & SHIM_ONCE_RUNNING) {
            if ((v & SHIM_ONCE_WAITERS) ||
                atomic_compare_exchange_weak_explicit(st, &v, v | SHIM_ONCE_WAITERS,
                                                      memory_order_acquire,
                                                      memory_order_acquire))
                break;
        }
        if (!(v & SHIM_ONCE_RUNNING)) {
            fs__spin_unlock(&q->lock);
            continue;
        }
        shim__waitq_push_tail_locked(q, &w);
        shim__waitq_wait(q, &w, FS_PARK_ONCE, o, NULL);
    }
}

int shim__pthread_once(pthread_once_t *o, void (*fn)(void))
{
    if (SHIM_LIKELY(atomic_load_explicit((_Atomic int *)o, memory_order_acquire) ==
                    SHIM_ONCE_DONE))
        return 0;
    return shim__once_slow(o, fn);
}
SHIM_ALIAS(pthread_once)
