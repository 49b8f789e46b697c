/*
 * waitq.c - wait queues, deadlines, identity and the helper-thread
 * offload shared by the synchronization wrappers. See waitq.h.
 */
#include "waitq.h"

#include <pthread.h>
#include <string.h>

/* ---- the queue ------------------------------------------------------------ */

/* Makes a queued waiter (under the queue lock) wait again for a new park,
 * keeping its place in the queue: wakers see it only under the lock. */
static void shim__waiter_rearm_locked(struct fs_waiter *w)
{
    void *next = w->next, *prev = w->prev;
    fs_waiter_prepare(w);
    w->next = next;
    w->prev = prev;
}

/* Stores to head use release and the lock-free emptiness checks of the
 * wrappers (cond signal, sem post) read len; both only ever change under
 * q->lock. */
static void shim__waitq_link_locked(struct shim__waitq *q, struct fs_waiter *w)
{
    struct fs_waiter *h = q->head;
    if (!h) {
        w->next = w->prev = w;
        __atomic_store_n(&q->head, w, __ATOMIC_RELEASE);
    } else {
        struct fs_waiter *t = h->prev;
        w->next = h;
        w->prev = t;
        t->next = w;
        h->prev = w;
    }
    atomic_fetch_add_explicit(&q->len, 1, memory_order_seq_cst);
}

void shim__waitq_push_tail_locked(struct shim__waitq *q, struct fs_waiter *w)
{
    shim__waitq_link_locked(q, w);
}

void shim__waitq_push_head_locked(struct shim__waitq *q, struct fs_waiter *w)
{
    shim__waitq_link_locked(q, w);
    __atomic_store_n(&q->head, w, __ATOMIC_RELEASE);
}

void shim__waitq_remove_locked(struct shim__waitq *q, struct fs_waiter *w)
{
    struct fs_waiter *n = w->next, *p = w->prev;
    if (n == w) {
        __atomic_store_n(&q->head, NULL, __ATOMIC_RELEASE);
    } else {
        p->next = n;
        n->prev = p;
        if (q->head == w)
            __atomic_store_n(&q->head, n, __ATOMIC_RELEASE);
    }
    w->next = w->prev = NULL;
    atomic_fetch_sub_explicit(&q->len, 1, memory_order_relaxed);
}

struct fs_waiter *shim__waitq_pop_locked(struct shim__waitq *q)
{
    struct fs_waiter *w = q->head;
    if (w)
        shim__waitq_remove_locked(q, w);
    return w;
}

bool shim__waitq_wake_one_locked(struct shim__waitq *q)
{
    struct fs_waiter *w;
    while ((w = shim__waitq_pop_locked(q)))
        if (fs_waiter_wake(w))
            return true;
    return false;
}

void shim__waitq_wake_all_locked(struct shim__waitq *q)
{
    struct fs_waiter *w;
    while ((w = shim__waitq_pop_locked(q)))
        fs_waiter_wake(w);
}

static bool shim__waitq_commit_unlock(void *lock)
{
    fs__spin_unlock(lock);
    return true;
}

int shim__waitq_wait(struct shim__waitq *q, struct fs_waiter *w, enum fs_park_reason why,
                     const void *obj, struct shim__deadline *d)
{
    for (;;) {
        int rc = fs_waiter_wait(w, why, obj, d ? d->mono : FS_NO_DEADLINE,
                                shim__waitq_commit_unlock, &q->lock);
        if (rc == 0)
            return 0;
        if (rc == -EINTR) {
            /* A signal ended the park, and its handler has run (at the
             * end of fs_park). A waker that dequeued us meanwhile lost the
             * race for our park and woke the next waiter instead: nothing
             * is owed to us. */
            fs__spin_lock(&q->lock);
            if (why == FS_PARK_SEM || (why == FS_PARK_COND && shim__cancel_due())) {
                /* POSIX ends sem_wait with EINTR: sem.c decides. A
                 * condition wait, a cancellation point, ends for a
                 * cancel: cond.c reacquires the mutex, then acts. */
                if (shim__waiter_queued(w))
                    shim__waitq_remove_locked(q, w);
                fs__spin_unlock(&q->lock);
                return -EINTR;
            }
            /* An asynchronous cancel acts anywhere, as glibc's SIGCANCEL
             * does inside a futex wait: out of the queue, and the caller
             * goes back to the top of its loop (return 1), where it holds
             * nothing and acts (shim__cancel_async_act); a lock waiter
             * leaves as a timed-out one would. Not a barrier's: it would
             * stay counted in the cycle (glibc's is no better). */
            if ((why == FS_PARK_MUTEX || why == FS_PARK_RWLOCK || why == FS_PARK_ONCE) &&
                fs_self() && shim__cancel_async_due(fs_self())) {
                if (shim__waiter_queued(w))
                    shim__waitq_remove_locked(q, w);
                fs__spin_unlock(&q->lock);
                return 1;
            }
            /* A lock wait goes on after the handler, as a thread's futex
             * wait is restarted: in place if still queued (re-armed under
             * the lock, where wakers look), else from the top. */
            if (shim__waiter_queued(w)) {
                shim__waiter_rearm_locked(w);
                continue;
            }
            fs__spin_unlock(&q->lock);
            return 1;
        }
        /* Timed out: no wake can reach this wait any more. Taking the
         * lock also waits out a waker that dequeued us and is still
         * looking at our record. */
        fs__spin_lock(&q->lock);
        if (!shim__deadline_passed(d)) {
            /* Early on the caller's clock (CLOCK_REALTIME was stepped
             * back, or slewed): wait again for the remainder. */
            shim__deadline_refresh(d);
            if (shim__waiter_queued(w)) {
                /* Re-arm in place; wakers see it only under the lock. */
                shim__waiter_rearm_locked(w);
                continue;
            }
            fs__spin_unlock(&q->lock);
            return 1;
        }
        if (shim__waiter_queued(w))
            shim__waitq_remove_locked(q, w);
        fs__spin_unlock(&q->lock);
        return -ETIMEDOUT;
    }
}

/* ---- deadlines ------------------------------------------------------------ */

#define SHIM_NS 1000000000LL

int shim__deadline_init(struct shim__deadline *d, clockid_t clock, const struct timespec *abs)
{
    d->mono = FS_NO_DEADLINE;
    d->clock = clock;
    if (!abs)
        return 0;
    if ((clock != CLOCK_REALTIME && clock != CLOCK_MONOTONIC) || abs->tv_nsec < 0 ||
        abs->tv_nsec >= SHIM_NS)
        return EINVAL;
    d->abs = *abs;
    shim__deadline_refresh(d);
    return 0;
}

void shim__deadline_refresh(struct shim__deadline *d)
{
    struct timespec now;
    clock_gettime(d->clock, &now);
    int64_t mono = fs_now();
    /* Saturate: a deadline centuries away is no deadline, one in the past
     * is 0 (a futex wait rejects negative absolute times). */
    int64_t ds;
    if (__builtin_sub_overflow((int64_t)d->abs.tv_sec, (int64_t)now.tv_sec, &ds))
        ds = d->abs.tv_sec > 0 ? INT64_MAX : INT64_MIN;
    if (ds > (INT64_MAX - mono) / SHIM_NS - 1) {
        d->mono = FS_NO_DEADLINE;
        return;
    }
    if (ds < -(mono / SHIM_NS) - 1) {
        d->mono = 0;
        return;
    }
    int64_t rel = ds * SHIM_NS + (d->abs.tv_nsec - now.tv_nsec);
    d->mono = mono + rel < 0 ? 0 : mono + rel;
}

bool shim__deadline_passed(const struct shim__deadline *d)
{
    if (!d || d->mono == FS_NO_DEADLINE)
        return false;
    struct timespec now;
    clock_gettime(d->clock, &now);
    return now.tv_sec > d->abs.tv_sec ||
           (now.tv_sec == d->abs.tv_sec && now.tv_nsec >= d->abs.tv_nsec);
}

void shim__backoff_sleep(int64_t ns, const struct shim__deadline *d)
{
    int64_t until = fs_now() + ns;
    if (d && d->mono < until)
        until = d->mono;
    struct fs_waiter w;
    fs_waiter_prepare(&w);
    /* Nobody knows this waiter: only the deadline ends the wait. */
    fs_waiter_wait(&w, FS_PARK_SLEEP, NULL, until, NULL, NULL);
}

/* ---- identity ------------------------------------------------------------- */

/* The id of the fiber that adopted its kernel thread, once seen; 0 before. */
static _Atomic uint64_t shim__adopted_id;

/*
 * owner is a plain thread's pthread_t and the caller is a fiber. They are
 * the same thread when the lock was taken by this kernel thread before the
 * shim turned it into a carrier whose current fiber is the code already
 * running on it (main() at the first pthread_create). That fiber runs on
 * the kernel thread's own stack, which no other fiber does. Rare (a lock
 * held across that moment), so the stack lookup's cost does not matter;
 * the answer is cached once found. With per-fiber TLS, glibc's
 * pthread_self() is the calling fiber's own TCB, which is the kernel
 * thread's only for the adopted fiber (it kept it): no lookup needed, and
 * the stack lookup would find every fiber on a stack of its own.
 */
bool shim__owner_is_adopted_self(uint64_t owner, uint64_t self)
{
    pthread_t kt = REAL(pthread_self)();
    if (owner != (uint64_t)kt)
        return false;
    if (fs_fiber_tls()) {
        fs_fiber *f = fs_self();
        return f && fs_fiber_adopted(f);
    }
    uint64_t adopted = atomic_load_explicit(&shim__adopted_id, memory_order_relaxed);
    if (adopted)
        return adopted == self;
    pthread_attr_t a;
    if (REAL(pthread_getattr_np)(kt, &a) != 0)
        return false;
    void *lo;
    size_t size;
    pthread_attr_getstack(&a, &lo, &size);
    pthread_attr_destroy(&a);
    char here;
    if ((uintptr_t)&here - (uintptr_t)lo >= size)
        return false;
    atomic_store_explicit(&shim__adopted_id, self, memory_order_relaxed);
    return true;
}

/* ---- offload ---------------------------------------------------------------- */

struct shim__offload_call {
    int (*fn)(void *);
    void *arg;
    int rc;
    struct fs_waiter w;   /* the parked fiber */
};

static void *shim__offload_main(void *p)
{
    struct shim__offload_call *c = p;
    c->rc = c->fn(c->arg);
    /* The fiber may return (and its stack record die) as soon as this
     * wake lands; nothing here touches c after it. */
    fs_waiter_wake(&c->w);
    return NULL;
}

int shim__offload(int (*fn)(void *), void *arg)
{
    if (!fs_self())
        return fn(arg);
    struct shim__offload_call c = {.fn = fn, .arg = arg};
    fs_waiter_prepare(&c.w);
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 64 * 1024);
    pthread_t t;
    int rc = REAL(pthread_create)(&t, &a, shim__offload_main, &c);
    pthread_attr_destroy(&a);
    if (rc != 0)
        return EAGAIN;
    fs_waiter_wait(&c.w, FS_PARK_OTHER, NULL, FS_NO_DEADLINE, NULL, NULL);
    return c.rc;
}
