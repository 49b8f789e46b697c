/*
 * robust.c - robust mutexes held by a fiber that ends.
 *
 * Robust mutexes stay glibc's (mutex.c). glibc links each one its thread
 * holds into that kernel thread's robust list, and the kernel, when the
 * thread exits, marks every mutex still on it FUTEX_OWNER_DIED, so the next
 * locker gets EOWNERDEAD. A fiber's kernel thread is its carrier, which
 * does not exit when the fiber does. So the shim does the kernel's part at
 * fiber exit, for the robust mutexes the fiber still holds: take the mutex
 * off the carrier's list (glibc's DEQUEUE_MUTEX: the list is doubly linked
 * through __list, each link pointing at the next entry's __next field),
 * then set FUTEX_OWNER_DIED in the lock word, keeping FUTEX_WAITERS, and
 * wake one waiter, exactly as the kernel's handle_futex_death() does.
 * Priority-inheritance robust mutexes are left to the kernel (their state
 * lives in the kernel too): the README lists this.
 */
#include "shim.h"

#include <linux/futex.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SHIM_ROBUST_NP 0x10 /* glibc's PTHREAD_MUTEX_ROBUST_NORMAL_NP bit in __kind */
#define SHIM_PI_NP 0x20     /* PTHREAD_MUTEX_PRIO_INHERIT_NP */


static bool shim__is_robust(const pthread_mutex_t *m)
{
    int kind = __atomic_load_n(&m->__data.__kind, __ATOMIC_RELAXED);
    return (kind & SHIM_ROBUST_NP) && !(kind & SHIM_PI_NP);
}

void shim__robust_locked(pthread_mutex_t *m, int rc)
{
    if ((rc != 0 && rc != EOWNERDEAD) || !shim__is_robust(m))
        return;
    struct shim_robust_set *s = shim__robust_set();
    if (!s)
        return;
    for (unsigned i = 0; i < s->n; i++)
        if (s->v[i] == m)
            return; /* recursive relock: one entry is enough */
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

void shim__robust_unlocked(pthread_mutex_t *m, int rc)
{
    if (rc != 0 || !shim__is_robust(m))
        return;
    struct shim_robust_set *s = shim__robust_set();
    if (!s)
        return;
    /* A recursive mutex is still ours until its count drops to zero. */
    if (__atomic_load_n(&m->__data.__owner, __ATOMIC_RELAXED) == (int)syscall(SYS_gettid) &&
        m->__data.__count > 0)
        return;
    for (unsigned i = 0; i < s->n; i++) {
        if (s->v[i] == m) {
            s->v[i] = s->v[--s->n];
            return;
        }
    }
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

void shim__robust_owner_died(struct shim_robust_set *s)
{
    if (!s)
        return;
    int tid = (int)syscall(SYS_gettid);
    for (unsigned i = 0; i < s->n; i++) {
        pthread_mutex_t *m = s->v[i];
        unsigned *word = (unsigned *)&m->__data.__lock;
        unsigned v = __atomic_load_n(word, __ATOMIC_RELAXED);
        if ((v & FUTEX_TID_MASK) != (unsigned)tid)
            continue; /* no longer held through this carrier */
        shim__robust_dequeue(m);
        unsigned nv;
        do
            nv = (v & FUTEX_WAITERS) | FUTEX_OWNER_DIED;
        while (!__atomic_compare_exchange_n(word, &v, nv, false, __ATOMIC_RELEASE,
                                            __ATOMIC_RELAXED));
        if (v & FUTEX_WAITERS)
            syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0);
    }
    free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}
