/*
 * waitq.h - what the synchronization wrappers (mutex.c, cond.c, rwlock.c,
 * sem.c, barrier.c, once.c, spin.c, c11.c) share: a 16-byte wait queue
 * that lives inside the user's pthread object, absolute deadlines on a
 * given clock, caller identity, and the fallbacks for objects that stay
 * glibc's (process-shared, robust, priority-inheritance).
 *
 * Waiting protocol (runtime/park.c gives the guarantees it rests on):
 *  - A waiter prepares a struct fs_waiter on its own stack, takes q->lock,
 *    re-checks its condition, queues itself and calls shim__waitq_wait(),
 *    which releases q->lock only once the waiter can no longer miss a wake
 *    (after the fiber's switch, or before a plain thread's futex wait).
 *  - A waker dequeues a waiter and calls fs_waiter_wake() while it still
 *    holds q->lock: the record lives on the waiter's stack, and a waiter
 *    that timed out cannot return before it has taken q->lock to take
 *    itself out of the queue.
 *  - Exactly one of "woken" and "timed out" happens to a wait. A wake that
 *    returns false hit a waiter that timed out: the waker must act as if
 *    that waiter had not been there (wake another one, undo a grant).
 *
 * Lock order: a cond's queue lock -> a mutex's queue lock (cond.c releases
 * the mutex while holding its own queue lock). No other nesting.
 */
#ifndef SHIM_WAITQ_H
#define SHIM_WAITQ_H

#include "shim.h"
#include "spinlock.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

/* All-zero is an empty, unlocked queue, so static initializers work. */
struct shim__waitq {
    fs_spinlock lock;         /* protects the list and len's updates */
    _Atomic uint32_t len;     /* queued waiters; read without the lock */
    struct fs_waiter *head;   /* circular list through next/prev; NULL: empty */
};
_Static_assert(sizeof(struct shim__waitq) == 16, "waitq must fit the pthread objects");

/* A waiter is queued exactly while its next pointer is non-NULL:
 * fs_waiter_prepare() clears it and every dequeue does. */
static inline bool shim__waiter_queued(const struct fs_waiter *w)
{
    return w->next != NULL;
}

void shim__waitq_push_tail_locked(struct shim__waitq *q, struct fs_waiter *w);
void shim__waitq_push_head_locked(struct shim__waitq *q, struct fs_waiter *w);
void shim__waitq_remove_locked(struct shim__waitq *q, struct fs_waiter *w);
struct fs_waiter *shim__waitq_pop_locked(struct shim__waitq *q);

/* The waiter after w in queue order, or NULL if w is the last one. */
static inline struct fs_waiter *shim__waitq_next_locked(const struct shim__waitq *q,
                                                         const struct fs_waiter *w)
{
    struct fs_waiter *n = w->next;
    return n == q->head ? NULL : n;
}

/* Dequeues waiters until one is woken. Returns false if none could be. */
bool shim__waitq_wake_one_locked(struct shim__waitq *q);

/* Dequeues and wakes every waiter. */
void shim__waitq_wake_all_locked(struct shim__waitq *q);

/* ---- deadlines ----------------------------------------------------------- */

/* An absolute timeout on a clock (CLOCK_REALTIME or CLOCK_MONOTONIC),
 * with its translation to the runtime's monotonic clock made at call time.
 * The translation is re-made when a wait ends early on the caller's clock
 * (a CLOCK_REALTIME step), so ETIMEDOUT is never returned before `abs`. */
struct shim__deadline {
    int64_t mono;         /* fs_now() deadline; FS_NO_DEADLINE: none */
    clockid_t clock;      /* clock `abs` is measured on */
    struct timespec abs;  /* the caller's absolute time */
};

/* Fills *d for an absolute time on clock; abs NULL means no deadline.
 * Returns 0, or EINVAL for an unsupported clock or tv_nsec outside
 * [0, 1e9), which is what glibc's futex-based waits accept. */
int shim__deadline_init(struct shim__deadline *d, clockid_t clock, const struct timespec *abs);

/* True when d is a real deadline and its clock has reached it. */
bool shim__deadline_passed(const struct shim__deadline *d);

/* Recomputes d->mono from the clock's current reading. */
void shim__deadline_refresh(struct shim__deadline *d);

/* Waits on q with w queued (q->lock held on entry, released inside).
 * Returns 0 when woken, -ETIMEDOUT once the deadline has really passed (w
 * is then out of the queue), or 1 when the deadline fired early on the
 * caller's clock, or a signal handler ran in the waiter (fs_interrupt),
 * while a waker was handing w a wake that failed: nothing was granted,
 * the caller retries from the top. A handler that runs while w is still
 * queued leaves it queued and the wait goes on, except for FS_PARK_SEM:
 * then -EINTR (w out of the queue), for sem.c to decide. An asynchronous
 * cancel of the waiting fiber takes w out of the queue and returns 1:
 * the caller, back at the top of its loop where it holds nothing, calls
 * shim__cancel_async_act before anything else. Any thread. */
int shim__waitq_wait(struct shim__waitq *q, struct fs_waiter *w, enum fs_park_reason why,
                     const void *obj, struct shim__deadline *d);

/* Sleeps about ns (fiber: parks; plain thread: futex timeout), never past
 * the deadline d (may be NULL). For the polling fallbacks. */
void shim__backoff_sleep(int64_t ns, const struct shim__deadline *d);

/* Backoff bounds of the polling fallbacks for objects that stay glibc's. */
#define SHIM_POLL_MIN_NS 50000
#define SHIM_POLL_MAX_NS 1000000

/* ---- identity ------------------------------------------------------------ */

/* Who holds a lock: a fiber is its id with the top bit set, a plain thread
 * is its glibc pthread_t (an address, never that high). 0 is nobody. */
#define SHIM_OWNER_FIBER (1ull << 63)

static inline uint64_t shim__self_owner(void)
{
    fs_fiber *f = fs_self();
    return f ? fs_fiber_id(f) | SHIM_OWNER_FIBER : (uint64_t)REAL(pthread_self)();
}

/* Whether owner (as stored by a lock) is the caller, whose identity is
 * self. Also true for the fiber that adopted a kernel thread (main(), at
 * the first pthread_create) and a lock that thread took before. */
bool shim__owner_is_adopted_self(uint64_t owner, uint64_t self);

static inline bool shim__owner_is_self(uint64_t owner, uint64_t self)
{
    return owner == self || (SHIM_UNLIKELY(owner && !(owner & SHIM_OWNER_FIBER) &&
                                           (self & SHIM_OWNER_FIBER)) &&
                             shim__owner_is_adopted_self(owner, self));
}

/* ---- glibc's own objects -------------------------------------------------- */

/* Runs fn(arg) on a helper kernel thread while the calling fiber parks,
 * and returns its result; on a plain thread just calls it. For the one
 * blocking call with no non-blocking variant (pthread_barrier_wait on a
 * process-shared barrier). Returns fn's result, or EAGAIN if no helper
 * thread could be started. */
int shim__offload(int (*fn)(void *), void *arg);

/* True for a mutex that stays glibc's (see mutex.c). */
bool shim__mutex_is_real(const pthread_mutex_t *m);

/* mutex.c's wrappers, which cond.c waits with. */
int shim__pthread_mutex_lock(pthread_mutex_t *m);
int shim__pthread_mutex_unlock(pthread_mutex_t *m);

#endif
