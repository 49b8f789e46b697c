/*
 * robust.c - robust mutexes held by a fiber that ends.
 *
 * Robust mutexes stay glibc's (mutex.c), each owned by one fiber
 * (mutex_glibc.c). glibc links each one its thread holds into that kernel
 * thread's robust list, and the kernel, when the thread exits, marks every
 * mutex still on it FUTEX_OWNER_DIED, so the next locker gets EOWNERDEAD.
 * A fiber's kernel thread is its carrier, which does not exit when the
 * fiber does. So the shim does the kernel's part at fiber exit, for the
 * robust mutexes the fiber still holds: take the mutex off the carrier's
 * list (glibc's DEQUEUE_MUTEX: the list is doubly linked through __list,
 * each link pointing at the next entry's __next field, with bit 0 marking
 * a PI mutex), then set FUTEX_OWNER_DIED in the lock word, keeping
 * FUTEX_WAITERS, and wake one waiter, exactly as the kernel's
 * handle_futex_death() does; then the next fiber of this process waiting
 * for it gets it (shim__mutex_glibc_abandon) and, from glibc, EOWNERDEAD.
 *
 * A priority-inheritance robust mutex gets the same treatment while no
 * thread waits for it in the kernel (FUTEX_WAITERS clear: there is no PI
 * state, and the word is all there is; fibers of this process never wait
 * in the kernel). Once one does, the kernel's PI state names the carrier
 * as the owner, which only the carrier's own exit would undo: the mutex
 * then stays held, as the README says.
 *
 * The set of robust mutexes a fiber holds lives in its shim_thread;
 * mutex_glibc.c reports its first acquisition and last release of each.
 * At the first acquisition the mutex also goes on the robust list the
 * kernel knows for the carrier, should glibc have linked it elsewhere
 * (a fiber's own thread control block), so that the death of the whole
 * process marks it too.
 */
#include "mutex_glibc.h"

#include <linux/futex.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SHIM_ROBUST_NP 0x10 /* glibc's PTHREAD_MUTEX_ROBUST_NORMAL_NP bit in __kind */
#define SHIM_PI_NP 0x20     /* PTHREAD_MUTEX_PRIO_INHERIT_NP */

static bool shim__is_robust(const pthread_mutex_t *m)
{
    return __atomic_load_n(&m->__data.__kind, __ATOMIC_RELAXED) & SHIM_ROBUST_NP;
}

/* glibc's DEQUEUE_MUTEX for the doubly linked robust list (x86-64 has
 * __PTHREAD_MUTEX_HAVE_PREV): links point at the neighbour's __next. */
static void shim__robust_dequeue(pthread_mutex_t *m)
{
    const uintptr_t adjust = offsetof(__pthread_list_t, __next);
    __pthread_list_t *l = &m->__data.__list;
    if (!l->__next || !l->__prev)
        return;
    __pthread_list_t *next = (__pthread_list_t *)(((uintptr_t)l->__next & ~1ul) - adjust);
    next->__prev = l->__prev;
    __pthread_list_t *prev = (__pthread_list_t *)(((uintptr_t)l->__prev & ~1ul) - adjust);
    prev->__next = l->__next;
    l->__prev = l->__next = NULL;
}

/* The robust list the kernel walks when the calling kernel thread, or the
 * process, dies: the one it registered with set_robust_list. Asked each
 * time (robust locks are rare): a fiber may have moved to another carrier
 * since it last asked, though never while it holds a robust mutex
 * (mutex_glibc.c pins it). NULL if unknown. */
static struct robust_list_head *shim__robust_kernel_head(void)
{
    struct robust_list_head *head;
    size_t len;
    if (syscall(SYS_get_robust_list, 0, &head, &len) != 0)
        return NULL;
    return head;
}

/* glibc's ENQUEUE_MUTEX_BOTH onto the list kh: m at the front (forward
 * links are what the kernel reads, each complete before it is published,
 * and bit 0 of a forward link marks a PI mutex). m's own links are
 * overwritten, never read. */
static void shim__robust_enqueue(struct robust_list_head *kh, pthread_mutex_t *m)
{
    __pthread_list_t *l = &m->__data.__list;
    const uintptr_t adjust = offsetof(__pthread_list_t, __next);
    uintptr_t pi = (__atomic_load_n(&m->__data.__kind, __ATOMIC_RELAXED) & SHIM_PI_NP) != 0;
    struct robust_list *first = kh->list.next;
    __pthread_list_t *next = (__pthread_list_t *)(((uintptr_t)first & ~1ul) - adjust);
    next->__prev = (void *)&l->__next;
    l->__next = (void *)first;
    l->__prev = (void *)kh;
    /* The kernel may read the list at any instant (a signal may kill the
     * process): m is whole before the head points at it. */
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    kh->list.next = (struct robust_list *)((uintptr_t)&l->__next | pi);
}

/*
 * glibc has just linked m at the front of the robust list of its running
 * thread control block. With per-fiber thread control blocks
 * (runtime/tls.c) that is the fiber's own list, which the kernel does not
 * walk: a process killed while a fiber holds m would leave it locked for
 * good in the other processes. So m moves to the front of the list the
 * kernel knows. Only fibers running on this carrier
 * touch that list, never in the middle of one of glibc's operations,
 * which do not yield. Without per-fiber thread control blocks m is
 * already there.
 */
static void shim__robust_onto_kernel_list(pthread_mutex_t *m)
{
    struct robust_list_head *kh = shim__robust_kernel_head();
    __pthread_list_t *l = &m->__data.__list;
    if (!kh || ((uintptr_t)l->__prev & ~1ul) == (uintptr_t)kh)
        return;
    shim__robust_dequeue(m);
    shim__robust_enqueue(kh, m);
}

void shim__robust_enqueue_kernel(pthread_mutex_t *m)
{
    struct robust_list_head *kh = shim__robust_kernel_head();
    if (kh)
        shim__robust_enqueue(kh, m);
}

void shim__robust_pending(pthread_mutex_t *m)
{
    struct robust_list_head *kh = shim__robust_kernel_head();
    if (!kh)
        return;
    /* Ordered against the lock word's compare-and-swap by the caller's
     * atomics; against the kernel, which reads it only when this thread
     * dies, by program order: a signal fence suffices. */
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    kh->list_op_pending = m ? (struct robust_list *)&m->__data.__list.__next : NULL;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
}

/* The calling fiber has just acquired m (glibc said rc: 0 or EOWNERDEAD),
 * on the carrier it holds it on, without a switch since. */
void shim__robust_locked(pthread_mutex_t *m, int rc)
{
    if ((rc != 0 && rc != EOWNERDEAD) || !shim__is_robust(m))
        return;
    shim__robust_onto_kernel_list(m);
    struct shim_robust_set *s = shim__robust_set();
    if (!s)
        return;
    for (unsigned i = 0; i < s->n; i++)
        if (s->v[i] == m)
            return; /* held before and destroyed meanwhile: one entry is enough */
    if (s->n == s->cap) {
        unsigned cap = s->cap ? s->cap * 2 : 4;
        pthread_mutex_t **v = realloc(s->v, cap * sizeof *v);
        if (!v)
            return; /* then only its owner death goes unreported */
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = m;
}

/* The calling fiber has just released m for good. */
void shim__robust_unlocked(pthread_mutex_t *m, int rc)
{
    if (rc != 0 || !shim__is_robust(m))
        return;
    struct shim_robust_set *s = shim__robust_set();
    if (!s)
        return;
    for (unsigned i = 0; i < s->n; i++) {
        if (s->v[i] == m) {
            s->v[i] = s->v[--s->n];
            return;
        }
    }
}

/* At the exit of the fiber whose set s is, on that fiber. */
void shim__robust_owner_died(struct shim_robust_set *s)
{
    if (!s)
        return;
    int tid = (int)syscall(SYS_gettid);
    for (unsigned i = 0; i < s->n; i++) {
        pthread_mutex_t *m = s->v[i];
        /* Unlocked by someone else (a normal one), destroyed or initialized
         * again since: not ours any more. */
        if (!shim__mutex_glibc_held(m))
            continue;
        unsigned *word = (unsigned *)&m->__data.__lock;
        unsigned v = __atomic_load_n(word, __ATOMIC_RELAXED);
        /* Locked on another carrier: we moved while holding it, which
         * the pin (mutex_glibc.c) forbids. */
        if ((v & FUTEX_TID_MASK) != (unsigned)tid)
            shim__mutex_glibc_moved(m);
        bool pi = __atomic_load_n(&m->__data.__kind, __ATOMIC_RELAXED) & SHIM_PI_NP;
        if (pi && (v & FUTEX_WAITERS))
            continue; /* the kernel's PI state: see the top of the file */
        /* Off the list before the word changes: a new owner relinks it. */
        shim__robust_dequeue(m);
        unsigned nv;
        do {
            /* A PI waiter entering the kernel meanwhile: as above (the
             * mutex, off the list, then stays held). */
            if (pi && (v & FUTEX_WAITERS))
                break;
            nv = (v & FUTEX_WAITERS) | FUTEX_OWNER_DIED;
        } while (
            !__atomic_compare_exchange_n(word, &v, nv, false, __ATOMIC_RELEASE, __ATOMIC_RELAXED));
        if (pi && (v & FUTEX_WAITERS))
            continue;
        if (!pi && (v & FUTEX_WAITERS))
            syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0);
        shim__mutex_glibc_abandon(m);
    }
    free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}
