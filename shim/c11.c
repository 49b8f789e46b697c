/*
 * c11.c - C11 <threads.h> on top of the shim's pthreads.
 *
 * glibc implements thrd_*, mtx_*, cnd_*, tss_* and call_once with direct
 * calls to its internal pthread functions, which interposing the pthread
 * names does not reach, so each is wrapped here onto the shim's own
 * implementation, with glibc's mapping of results:
 *   0 -> thrd_success, ENOMEM -> thrd_nomem, ETIMEDOUT -> thrd_timedout,
 *   EBUSY -> thrd_busy, anything else -> thrd_error.
 * C11 objects have the pthread objects' layout (mtx_t is a
 * pthread_mutex_t, cnd_t a pthread_cond_t, once_flag a pthread_once_t),
 * so the static initializers carry over.
 */
#include "waitq.h"

#include <stdlib.h>
#include <threads.h>

/* The shim's pthread wrappers (thread.c, time.c, mutex.c, cond.c,
 * once.c), called directly so that unit tests built without exports use
 * them too. */
extern __typeof__(pthread_create) shim__pthread_create;
extern __typeof__(pthread_join) shim__pthread_join;
extern __typeof__(pthread_detach) shim__pthread_detach;
extern __typeof__(pthread_exit) shim__pthread_exit;
extern __typeof__(pthread_self) shim__pthread_self;
extern __typeof__(pthread_equal) shim__pthread_equal;
extern __typeof__(pthread_key_create) shim__pthread_key_create;
extern __typeof__(pthread_key_delete) shim__pthread_key_delete;
extern __typeof__(pthread_getspecific) shim__pthread_getspecific;
extern __typeof__(pthread_setspecific) shim__pthread_setspecific;
extern __typeof__(sched_yield) shim__sched_yield;
extern __typeof__(nanosleep) shim__nanosleep;
extern __typeof__(pthread_mutex_init) shim__pthread_mutex_init;
extern __typeof__(pthread_mutex_trylock) shim__pthread_mutex_trylock;
extern __typeof__(pthread_mutex_timedlock) shim__pthread_mutex_timedlock;
extern __typeof__(pthread_mutex_destroy) shim__pthread_mutex_destroy;
extern __typeof__(pthread_cond_init) shim__pthread_cond_init;
extern __typeof__(pthread_cond_destroy) shim__pthread_cond_destroy;
extern __typeof__(pthread_cond_signal) shim__pthread_cond_signal;
extern __typeof__(pthread_cond_broadcast) shim__pthread_cond_broadcast;
extern __typeof__(pthread_cond_wait) shim__pthread_cond_wait;
extern __typeof__(pthread_cond_timedwait) shim__pthread_cond_timedwait;
extern __typeof__(pthread_once) shim__pthread_once;

_Static_assert(sizeof(mtx_t) == sizeof(pthread_mutex_t), "mtx_t is a pthread_mutex_t");
_Static_assert(sizeof(cnd_t) == sizeof(pthread_cond_t), "cnd_t is a pthread_cond_t");
_Static_assert(sizeof(once_flag) == sizeof(pthread_once_t), "once_flag is a pthread_once_t");
_Static_assert(sizeof(tss_t) == sizeof(pthread_key_t), "tss_t is a pthread_key_t");

static int shim__thrd_result(int err)
{
    switch (err) {
    case 0:
        return thrd_success;
    case ENOMEM:
        return thrd_nomem;
    case ETIMEDOUT:
        return thrd_timedout;
    case EBUSY:
        return thrd_busy;
    default:
        return thrd_error;
    }
}

/* ---- threads ------------------------------------------------------------------ */

struct shim__thrd_start {
    thrd_start_t fn;
    void *arg;
};

/* A C11 thread's int result travels as the pthread's void * result, as
 * in glibc (thrd_exit does the same). */
static void *shim__thrd_main(void *p)
{
    struct shim__thrd_start s = *(struct shim__thrd_start *)p;
    free(p);
    return (void *)(intptr_t)s.fn(s.arg);
}

int shim__thrd_create(thrd_t *thr, thrd_start_t fn, void *arg)
{
    struct shim__thrd_start *s = malloc(sizeof *s);
    if (!s)
        return thrd_nomem;
    s->fn = fn;
    s->arg = arg;
    int err = shim__pthread_create((pthread_t *)thr, NULL, shim__thrd_main, s);
    if (err)
        free(s);
    return shim__thrd_result(err);
}
SHIM_ALIAS(thrd_create)

int shim__thrd_join(thrd_t thr, int *res)
{
    void *ret;
    int err = shim__pthread_join((pthread_t)thr, &ret);
    if (!err && res)
        *res = (int)(intptr_t)ret;
    return shim__thrd_result(err);
}
SHIM_ALIAS(thrd_join)

int shim__thrd_detach(thrd_t thr)
{
    return shim__thrd_result(shim__pthread_detach((pthread_t)thr));
}
SHIM_ALIAS(thrd_detach)

void shim__thrd_exit(int res)
{
    shim__pthread_exit((void *)(intptr_t)res);
}
SHIM_ALIAS(thrd_exit)

thrd_t shim__thrd_current(void)
{
    return (thrd_t)shim__pthread_self();
}
SHIM_ALIAS(thrd_current)

int shim__thrd_equal(thrd_t a, thrd_t b)
{
    return shim__pthread_equal((pthread_t)a, (pthread_t)b);
}
SHIM_ALIAS(thrd_equal)

void shim__thrd_yield(void)
{
    shim__sched_yield();
}
SHIM_ALIAS(thrd_yield)

/* 0, -1 if interrupted by a signal, another negative value on error. */
int shim__thrd_sleep(const struct timespec *req, struct timespec *rem)
{
    if (shim__nanosleep(req, rem) == 0)
        return 0;
    return errno == EINTR ? -1 : -2;
}
SHIM_ALIAS(thrd_sleep)

/* ---- mutexes and condition variables ------------------------------------------ */

int shim__mtx_init(mtx_t *m, int type)
{
    /* As glibc: recursive for mtx_plain|mtx_recursive and
     * mtx_timed|mtx_recursive, a normal mutex for anything else. */
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, type == (mtx_plain | mtx_recursive) ||
                                          type == (mtx_timed | mtx_recursive)
                                      ? PTHREAD_MUTEX_RECURSIVE
                                      : PTHREAD_MUTEX_NORMAL);
    int err = shim__pthread_mutex_init((pthread_mutex_t *)m, &a);
    pthread_mutexattr_destroy(&a);
    return shim__thrd_result(err);
}
SHIM_ALIAS(mtx_init)

int shim__mtx_lock(mtx_t *m)
{
    return shim__thrd_result(shim__pthread_mutex_lock((pthread_mutex_t *)m));
}
SHIM_ALIAS(mtx_lock)

int shim__mtx_timedlock(mtx_t *restrict m, const struct timespec *restrict abs)
{
    return shim__thrd_result(shim__pthread_mutex_timedlock((pthread_mutex_t *)m, abs));
}
SHIM_ALIAS(mtx_timedlock)

int shim__mtx_trylock(mtx_t *m)
{
    return shim__thrd_result(shim__pthread_mutex_trylock((pthread_mutex_t *)m));
}
SHIM_ALIAS(mtx_trylock)

int shim__mtx_unlock(mtx_t *m)
{
    return shim__thrd_result(shim__pthread_mutex_unlock((pthread_mutex_t *)m));
}
SHIM_ALIAS(mtx_unlock)

void shim__mtx_destroy(mtx_t *m)
{
    shim__pthread_mutex_destroy((pthread_mutex_t *)m);
}
SHIM_ALIAS(mtx_destroy)

int shim__cnd_init(cnd_t *c)
{
    return shim__thrd_result(shim__pthread_cond_init((pthread_cond_t *)c, NULL));
}
SHIM_ALIAS(cnd_init)

int shim__cnd_signal(cnd_t *c)
{
    return shim__thrd_result(shim__pthread_cond_signal((pthread_cond_t *)c));
}
SHIM_ALIAS(cnd_signal)

int shim__cnd_broadcast(cnd_t *c)
{
    return shim__thrd_result(shim__pthread_cond_broadcast((pthread_cond_t *)c));
}
SHIM_ALIAS(cnd_broadcast)

int shim__cnd_wait(cnd_t *c, mtx_t *m)
{
    return shim__thrd_result(shim__pthread_cond_wait((pthread_cond_t *)c, (pthread_mutex_t *)m));
}
SHIM_ALIAS(cnd_wait)

int shim__cnd_timedwait(cnd_t *restrict c, mtx_t *restrict m,
                        const struct timespec *restrict abs)
{
    return shim__thrd_result(
        shim__pthread_cond_timedwait((pthread_cond_t *)c, (pthread_mutex_t *)m, abs));
}
SHIM_ALIAS(cnd_timedwait)

void shim__cnd_destroy(cnd_t *c)
{
    shim__pthread_cond_destroy((pthread_cond_t *)c);
}
SHIM_ALIAS(cnd_destroy)

/* ---- thread-specific storage and call_once ---------------------------------------- */

int shim__tss_create(tss_t *key, tss_dtor_t dtor)
{
    return shim__thrd_result(shim__pthread_key_create((pthread_key_t *)key, dtor));
}
SHIM_ALIAS(tss_create)

void *shim__tss_get(tss_t key)
{
    return shim__pthread_getspecific((pthread_key_t)key);
}
SHIM_ALIAS(tss_get)

int shim__tss_set(tss_t key, void *value)
{
    return shim__thrd_result(shim__pthread_setspecific((pthread_key_t)key, value));
}
SHIM_ALIAS(tss_set)

void shim__tss_delete(tss_t key)
{
    shim__pthread_key_delete((pthread_key_t)key);
}
SHIM_ALIAS(tss_delete)

void shim__call_once(once_flag *flag, void (*fn)(void))
{
    shim__pthread_once((pthread_once_t *)flag, fn);
}
SHIM_ALIAS(call_once)
