/*
 * thread.c - pthreads become fibers: create, join, detach, exit, identity,
 * thread-specific data and C cleanup handlers.
 *
 * A fiber's pthread_t is the address of its struct shim_thread, which
 * starts with a magic word; a glibc pthread_t points at glibc's struct
 * pthread, whose first word points to itself. Calls that take a pthread_t
 * tell the two apart that way and pass real threads to glibc. The adopted
 * main thread keeps the pthread_t glibc gave it, so a value saved before
 * the first pthread_create stays valid.
 *
 * Lifetime: a shim_thread has two references, the running thread's and
 * the handle's (dropped by join or detach). Whoever drops the last frees it.
 */
#include "shim.h"
#include "spinlock.h"

#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdio.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SHIM_THREAD_MAGIC 0x7468726673686d21ull /* "!mhsfrht" */
#define SHIM_TSD_BLOCK 32
#define SHIM_TSD_BLOCKS (PTHREAD_KEYS_MAX / SHIM_TSD_BLOCK)

struct shim_tsd_slot {
    uintptr_t seq;  /* key generation the value belongs to */
    void *value;
};

struct shim_tsd {
    struct shim_tsd_slot *block[SHIM_TSD_BLOCKS];
};

struct shim_thread {
    uint64_t magic;             /* SHIM_THREAD_MAGIC while alive */
    fs_fiber *fiber;
    void *(*start)(void *);
    void *arg;
    pthread_t real_id;          /* glibc's id for the adopted thread, else 0 */
    _Atomic int refs;           /* see the header comment */
    _Atomic bool detached;      /* created detached, or pthread_detach'ed */
    __pthread_unwind_buf_t *cleanup; /* innermost pthread_cleanup_push */
    struct shim_tsd tsd;
    int cancel_state, cancel_type;
    _Atomic int cancel_pending;
    int sched_policy;
    struct sched_param sched_param;
    struct shim_sigstate sig;   /* signal.c */
    struct shim_robust_set robust; /* robust mutexes it holds (robust.c) */
};

struct shim_robust_set *shim__robust_set(void)
{
    fs_fiber *f = fs_self();
    struct shim_thread *st = f ? fs_fiber_local(f) : NULL;
    return st ? &st->robust : NULL;
}

/* ---- keys ---------------------------------------------------------------- */

/* A key is in use while its seq is odd; delete bumps it, so values stored
 * under the old key read as NULL afterwards, as POSIX requires. */
static struct {
    _Atomic uintptr_t seq;
    void (*dtor)(void *);
} shim__keys[PTHREAD_KEYS_MAX];
static fs_spinlock shim__keys_lock = FS_SPINLOCK_INIT;

/* glibc's longjmp, declared on an untyped buffer: the cancel buffer of
 * pthread_cleanup_push is a jmp_buf without the saved signal mask, which
 * is never read because __sigsetjmp(buf, 0) did not save one. */
extern void shim__longjmp(void *buf, int val) __asm__("longjmp") __attribute__((noreturn));

static struct shim_thread *shim__main_thread;
static _Atomic long shim__threads_alive; /* for "the last thread exits" */

/* TSD of plain threads (not fibers) lives in their own TLS. A real key's
 * destructor runs our destructors when such a thread exits. */
static __thread struct shim_tsd *shim__tls_tsd;
static pthread_key_t shim__plain_key;
static pthread_once_t shim__plain_once = PTHREAD_ONCE_INIT;

static inline struct shim_thread *shim__cur(void)
{
    fs_fiber *f = fs_self();
    return f ? fs_fiber_local(f) : NULL;
}

struct shim_sigstate *shim__sigstate(fs_fiber *f)
{
    struct shim_thread *st = f ? fs_fiber_local(f) : NULL;
    return st ? &st->sig : NULL;
}

static struct shim_thread *shim__from_id(pthread_t t)
{
    if (!t)
        return NULL;
    if (shim__main_thread && t == shim__main_thread->real_id)
        return shim__main_thread;
    struct shim_thread *st = (struct shim_thread *)t;
    return st->magic == SHIM_THREAD_MAGIC ? st : NULL;
}

static pthread_t shim__id_of(struct shim_thread *st)
{
    return st->real_id ? st->real_id : (pthread_t)st;
}

static void shim__thread_unref(struct shim_thread *st)
{
    if (atomic_fetch_sub(&st->refs, 1) == 1) {
        for (int i = 0; i < SHIM_TSD_BLOCKS; i++)
            free(st->tsd.block[i]);
        st->magic = 0;
        free(st);
    }
}

/* ---- activation: the calling thread becomes carrier 0 ------------------- */

static void shim__thread_start_hook(struct shim_thread *st)
{
    st->fiber = fs_self();
    fs_fiber_set_local(st->fiber, st);
}

int shim__adopt_current(void)
{
    struct shim_thread *st = calloc(1, sizeof *st);
    if (!st)
        return ENOMEM;
    fs_fiber *f;
    int rc = fs_adopt_thread(&f);
    if (rc) {
        free(st);
        return rc == -EBUSY || rc == -EALREADY ? 0 : -rc;
    }
    st->magic = SHIM_THREAD_MAGIC;
    st->real_id = REAL(pthread_self)();
    st->refs = 2;
    shim__sigstate_init(&st->sig, true);
    st->fiber = f;
    fs_fiber_set_local(f, st);
    /* The thread's TSD so far was kept as a plain thread's: carry it. */
    if (shim__tls_tsd) {
        st->tsd = *shim__tls_tsd;
        memset(shim__tls_tsd, 0, sizeof *shim__tls_tsd);
    }
    shim__main_thread = st;
    atomic_fetch_add(&shim__threads_alive, 1);
    return 0;
}

/* ---- create / exit / join ------------------------------------------------ */

static void *shim__thread_start(void *p)
{
    struct shim_thread *st = p;
    shim__thread_start_hook(st);
    shim__thread_exit(st->start(st->arg));
}

int shim__pthread_create(pthread_t *thread, const pthread_attr_t *attr,
                         void *(*start)(void *), void *arg)
{
    if (!fs_self()) {
        int rc = shim__activate();
        if (rc)
            return rc;
    }
    struct fs_spawn_attr sa = {0};
    if (attr) {
        int ds;
        size_t sz, defsz = 0;
        pthread_attr_t def;
        if (pthread_attr_getdetachstate(attr, &ds) == 0)
            sa.detached = ds == PTHREAD_CREATE_DETACHED;
        /* glibc reports its default size for an attr whose size was never
         * set; only a size that differs is the caller's choice. */
        if (pthread_getattr_default_np(&def) == 0) {
            pthread_attr_getstacksize(&def, &defsz);
            pthread_attr_destroy(&def);
        }
        if (pthread_attr_getstacksize(attr, &sz) == 0 && sz != defsz)
            sa.stack_size = sz;
        /* An attr's guard is always its own: pthread_attr_init gives one
         * page whatever the default attributes say, as glibc uses it. */
        size_t guard;
        if (pthread_attr_getguardsize(attr, &guard) == 0) {
            sa.guard_size = guard;
            sa.no_guard = guard == 0;
        }
        void *lo;
        /* glibc stores the top of a caller-provided stack and returns
         * top - size; with none set, top is NULL and lo + size wraps to 0. */
        if (pthread_attr_getstack(attr, &lo, &sz) == 0 && (uintptr_t)lo + sz != 0) {
            sa.stack_addr = lo;
            sa.stack_size = sz;
        }
    }
    struct shim_thread *st = calloc(1, sizeof *st);
    if (!st)
        return EAGAIN;
    st->magic = SHIM_THREAD_MAGIC;
    st->start = start;
    st->arg = arg;
    st->refs = sa.detached ? 1 : 2;
    st->detached = sa.detached;
    shim__sigstate_init(&st->sig, true); /* a new thread inherits the creator's mask */
    /* The id is visible before the thread can run, as with glibc. */
    *thread = (pthread_t)st;
    atomic_fetch_add(&shim__threads_alive, 1);
    /* fs_spawn stores the fiber before it can run anywhere. */
    int rc = fs_spawn(&st->fiber, shim__thread_start, st, &sa);
    if (rc) {
        atomic_fetch_sub(&shim__threads_alive, 1);
        st->magic = 0;
        free(st);
        return rc == -ENOMEM ? EAGAIN : -rc;
    }
    return 0;
}
SHIM_ALIAS(pthread_create)

static void shim__plain_tsd_dtor(void *p);

/* Runs the TSD destructors of tsd, as glibc does: up to
 * PTHREAD_DESTRUCTOR_ITERATIONS rounds while values remain. */
static void shim__tsd_run_dtors(struct shim_tsd *tsd)
{
    for (int round = 0; round < PTHREAD_DESTRUCTOR_ITERATIONS; round++) {
        bool any = false;
        for (int b = 0; b < SHIM_TSD_BLOCKS; b++) {
            struct shim_tsd_slot *blk = tsd->block[b];
            if (!blk)
                continue;
            for (int i = 0; i < SHIM_TSD_BLOCK; i++) {
                int k = b * SHIM_TSD_BLOCK + i;
                void *v = blk[i].value;
                uintptr_t seq = atomic_load(&shim__keys[k].seq);
                if (!v || blk[i].seq != seq || !(seq & 1))
                    continue;
                blk[i].value = NULL;
                void (*dtor)(void *) = shim__keys[k].dtor;
                if (dtor) {
                    dtor(v);
                    any = true;
                }
            }
        }
        if (!any)
            break;
    }
}

__attribute__((noreturn)) void shim__thread_exit(void *ret)
{
    struct shim_thread *st = shim__cur();
    /* Run the innermost cleanup handler at its push site; it comes back
     * through __pthread_unwind_next, which lands here again. */
    if (st->cleanup) {
        __pthread_unwind_buf_t *b = st->cleanup;
        st->cleanup = b->__pad[0];
        b->__pad[3] = ret; /* carried through the handler chain */
        shim__longjmp(b->__cancel_jmp_buf, 1);
    }
    shim__tsd_run_dtors(&st->tsd);
    /* What the kernel does for a thread that exits holding robust mutexes. */
    shim__robust_owner_died(&st->robust);
    if (atomic_fetch_sub(&shim__threads_alive, 1) == 1)
        exit(0); /* the last thread is gone: the process ends, as with glibc */
    shim__thread_unref(st);
    fs_exit(ret);
}

/* glibc's C cleanup handlers (pthread_cleanup_push without exceptions)
 * keep their chain in the kernel thread's struct pthread, which fibers
 * sharing a carrier would corrupt; for fibers the chain lives in the
 * shim_thread. __pad[0] links a buffer to the outer one. */
void shim____pthread_register_cancel(__pthread_unwind_buf_t *buf)
{
    struct shim_thread *st = shim__cur();
    if (!st) {
        REAL(__pthread_register_cancel)(buf);
        return;
    }
    buf->__pad[0] = st->cleanup;
    st->cleanup = buf;
}
SHIM_ALIAS(__pthread_register_cancel)

void shim____pthread_unregister_cancel(__pthread_unwind_buf_t *buf)
{
    struct shim_thread *st = shim__cur();
    if (!st) {
        REAL(__pthread_unregister_cancel)(buf);
        return;
    }
    st->cleanup = buf->__pad[0];
}
SHIM_ALIAS(__pthread_unregister_cancel)

void shim____pthread_unwind_next(__pthread_unwind_buf_t *buf)
{
    struct shim_thread *st = shim__cur();
    if (!st)
        REAL(__pthread_unwind_next)(buf);
    void *ret = buf->__pad[3];
    if (st->cleanup) {
        __pthread_unwind_buf_t *b = st->cleanup;
        st->cleanup = b->__pad[0];
        b->__pad[3] = ret;
        shim__longjmp(b->__cancel_jmp_buf, 1);
    }
    shim__thread_exit(ret);
}
SHIM_ALIAS(__pthread_unwind_next)

void shim__pthread_exit(void *ret)
{
    if (shim__cur())
        shim__thread_exit(ret);
    REAL(pthread_exit)(ret);
    __builtin_unreachable();
}
SHIM_ALIAS(pthread_exit)

/* Converts an absolute time on `clock` into a runtime deadline. */
static int64_t shim__abs_to_deadline(clockid_t clock, const struct timespec *abs)
{
    struct timespec now;
    clock_gettime(clock, &now);
    int64_t d = (int64_t)(abs->tv_sec - now.tv_sec) * 1000000000 + (abs->tv_nsec - now.tv_nsec);
    return d <= 0 ? 0 : shim__deadline_after(d);
}

static int shim__join(pthread_t t, void **ret, clockid_t clock, const struct timespec *abs,
                      bool try)
{
    struct shim_thread *st = shim__from_id(t);
    if (!st) {
        if (try)
            return REAL(pthread_tryjoin_np)(t, ret);
        if (abs)
            return REAL(pthread_clockjoin_np)(t, ret, clock, abs);
        return REAL(pthread_join)(t, ret);
    }
    if (st == shim__cur())
        return EDEADLK;
    if (abs && (abs->tv_nsec < 0 || abs->tv_nsec >= 1000000000))
        return EINVAL;
    for (;;) {
        int64_t dl = try ? 0 : abs ? shim__abs_to_deadline(clock, abs) : FS_NO_DEADLINE;
        int rc = fs_join(st->fiber, ret, dl);
        if (rc == -ETIMEDOUT && abs) {
            /* Never report a timeout before the absolute time has come on
             * the caller's clock (REALTIME may have been stepped back). */
            struct timespec now;
            clock_gettime(clock, &now);
            if (now.tv_sec < abs->tv_sec ||
                (now.tv_sec == abs->tv_sec && now.tv_nsec < abs->tv_nsec))
                continue;
        }
        if (rc)
            return -rc;
        shim__thread_unref(st);
        return 0;
    }
}

int shim__pthread_join(pthread_t t, void **ret)
{
    return shim__join(t, ret, CLOCK_REALTIME, NULL, false);
}
SHIM_ALIAS(pthread_join)

int shim__pthread_tryjoin_np(pthread_t t, void **ret)
{
    return shim__join(t, ret, CLOCK_REALTIME, NULL, true);
}
SHIM_ALIAS(pthread_tryjoin_np)

int shim__pthread_timedjoin_np(pthread_t t, void **ret, const struct timespec *abs)
{
    return shim__join(t, ret, CLOCK_REALTIME, abs, false);
}
SHIM_ALIAS(pthread_timedjoin_np)

int shim__pthread_clockjoin_np(pthread_t t, void **ret, clockid_t clock,
                               const struct timespec *abs)
{
    if (clock != CLOCK_REALTIME && clock != CLOCK_MONOTONIC)
        return EINVAL;
    return shim__join(t, ret, clock, abs, false);
}
SHIM_ALIAS(pthread_clockjoin_np)

int shim__pthread_detach(pthread_t t)
{
    struct shim_thread *st = shim__from_id(t);
    if (!st)
        return REAL(pthread_detach)(t);
    int rc = fs_detach(st->fiber);
    if (rc)
        return -rc;
    atomic_store(&st->detached, true);
    shim__thread_unref(st);
    return 0;
}
SHIM_ALIAS(pthread_detach)

pthread_t shim__pthread_self(void)
{
    struct shim_thread *st = shim__cur();
    return st ? shim__id_of(st) : REAL(pthread_self)();
}
SHIM_ALIAS(pthread_self)

int shim__pthread_equal(pthread_t a, pthread_t b)
{
    return a == b;
}
SHIM_ALIAS(pthread_equal)

int shim__sched_yield(void)
{
    if (!fs_self())
        return REAL(sched_yield)();
    fs_yield();
    return 0;
}
SHIM_ALIAS(sched_yield)

/* ---- attributes, names, scheduling ---------------------------------------- */

int shim__pthread_getattr_np(pthread_t t, pthread_attr_t *attr)
{
    struct shim_thread *st = shim__from_id(t);
    if (!st || st->real_id)
        return REAL(pthread_getattr_np)(t, attr);
    int rc = pthread_attr_init(attr);
    if (rc)
        return rc;
    void *lo;
    size_t size;
    fs_fiber_stack(st->fiber, &lo, &size);
    pthread_attr_setstack(attr, lo, size);
    pthread_attr_setguardsize(attr, fs_fiber_stack_guard(st->fiber));
    pthread_attr_setdetachstate(attr, atomic_load(&st->detached) ? PTHREAD_CREATE_DETACHED
                                                                 : PTHREAD_CREATE_JOINABLE);
    return 0;
}
SHIM_ALIAS(pthread_getattr_np)

int shim__pthread_setname_np(pthread_t t, const char *name)
{
    struct shim_thread *st = shim__from_id(t);
    if (!st || st->real_id)
        return REAL(pthread_setname_np)(t, name);
    if (strlen(name) > 15)
        return ERANGE;
    fs_fiber_set_name(st->fiber, name);
    return 0;
}
SHIM_ALIAS(pthread_setname_np)

int shim__pthread_getname_np(pthread_t t, char *buf, size_t len)
{
    struct shim_thread *st = shim__from_id(t);
    if (!st || st->real_id)
        return REAL(pthread_getname_np)(t, buf, len);
    char name[16];
    fs_fiber_get_name(st->fiber, name, sizeof name);
    if (!name[0]) {
        /* An unnamed thread is named after the program, as on Linux. */
        extern char *program_invocation_short_name;
        snprintf(name, sizeof name, "%s", program_invocation_short_name);
    }
    if (strlen(name) + 1 > len)
        return ERANGE;
    memcpy(buf, name, strlen(name) + 1);
    return 0;
}
SHIM_ALIAS(pthread_getname_np)

int shim__pthread_setschedparam(pthread_t t, int policy, const struct sched_param *p)
{
    struct shim_thread *st = shim__from_id(t);
    if (!st || st->real_id)
        return REAL(pthread_setschedparam)(t, policy, p);
    /* Fibers share their carrier's kernel priority: the request is kept
     * for pthread_getschedparam and does no harm. */
    if (policy != SCHED_OTHER && policy != SCHED_FIFO && policy != SCHED_RR &&
        policy != SCHED_BATCH && policy != SCHED_IDLE)
        return EINVAL;
    st->sched_policy = policy;
    st->sched_param = *p;
    return 0;
}
SHIM_ALIAS(pthread_setschedparam)

int shim__pthread_getschedparam(pthread_t t, int *policy, struct sched_param *p)
{
    struct shim_thread *st = shim__from_id(t);
    if (!st || st->real_id)
        return REAL(pthread_getschedparam)(t, policy, p);
    *policy = st->sched_policy;
    *p = st->sched_param;
    return 0;
}
SHIM_ALIAS(pthread_getschedparam)

int shim__pthread_setschedprio(pthread_t t, int prio)
{
    struct shim_thread *st = shim__from_id(t);
    if (!st || st->real_id)
        return REAL(pthread_setschedprio)(t, prio);
    st->sched_param.sched_priority = prio;
    return 0;
}
SHIM_ALIAS(pthread_setschedprio)

int shim__pthread_setaffinity_np(pthread_t t, size_t size, const cpu_set_t *set)
{
    struct shim_thread *st = shim__from_id(t);
    if (!st || st->real_id)
        return REAL(pthread_setaffinity_np)(t, size, set);
    /* Carriers serve all fibers; pinning one fiber to a CPU is accepted
     * and has no effect. An empty set is refused as glibc would. */
    return CPU_COUNT_S(size, set) ? 0 : EINVAL;
}
SHIM_ALIAS(pthread_setaffinity_np)

int shim__pthread_getaffinity_np(pthread_t t, size_t size, cpu_set_t *set)
{
    struct shim_thread *st = shim__from_id(t);
    if (!st || st->real_id)
        return REAL(pthread_getaffinity_np)(t, size, set);
    return sched_getaffinity(0, size, set) ? errno : 0;
}
SHIM_ALIAS(pthread_getaffinity_np)

int shim__pthread_getcpuclockid(pthread_t t, clockid_t *clock)
{
    struct shim_thread *st = shim__from_id(t);
    if (!st || st->real_id)
        return REAL(pthread_getcpuclockid)(t, clock);
    return ENOENT; /* a fiber has no CPU-time clock of its own */
}
SHIM_ALIAS(pthread_getcpuclockid)


/* ---- cancellation (deferred, at pthread_testcancel) ----------------------- */

int shim__pthread_cancel(pthread_t t)
{
    struct shim_thread *st = shim__from_id(t);
    if (!st || st->real_id)
        return REAL(pthread_cancel)(t);
    atomic_store(&st->cancel_pending, 1);
    return 0;
}
SHIM_ALIAS(pthread_cancel)

void shim__pthread_testcancel(void)
{
    struct shim_thread *st = shim__cur();
    if (!st) {
        REAL(pthread_testcancel)();
        return;
    }
    if (atomic_load(&st->cancel_pending) && st->cancel_state == PTHREAD_CANCEL_ENABLE)
        shim__thread_exit(PTHREAD_CANCELED);
}
SHIM_ALIAS(pthread_testcancel)

int shim__pthread_setcancelstate(int state, int *old)
{
    struct shim_thread *st = shim__cur();
    if (!st)
        return REAL(pthread_setcancelstate)(state, old);
    if (state != PTHREAD_CANCEL_ENABLE && state != PTHREAD_CANCEL_DISABLE)
        return EINVAL;
    if (old)
        *old = st->cancel_state;
    st->cancel_state = state;
    return 0;
}
SHIM_ALIAS(pthread_setcancelstate)

int shim__pthread_setcanceltype(int type, int *old)
{
    struct shim_thread *st = shim__cur();
    if (!st)
        return REAL(pthread_setcanceltype)(type, old);
    if (type != PTHREAD_CANCEL_DEFERRED && type != PTHREAD_CANCEL_ASYNCHRONOUS)
        return EINVAL;
    if (old)
        *old = st->cancel_type;
    st->cancel_type = type;
    return 0;
}
SHIM_ALIAS(pthread_setcanceltype)

/* ---- thread-specific data ------------------------------------------------- */

int shim__pthread_key_create(pthread_key_t *key, void (*dtor)(void *))
{
    fs__spin_lock(&shim__keys_lock);
    for (unsigned k = 0; k < PTHREAD_KEYS_MAX; k++) {
        uintptr_t seq = atomic_load(&shim__keys[k].seq);
        if (seq & 1)
            continue;
        if (seq + 1 < seq)
            continue; /* generation space used up: never reuse this key */
        shim__keys[k].dtor = dtor;
        atomic_store(&shim__keys[k].seq, seq + 1);
        fs__spin_unlock(&shim__keys_lock);
        *key = k;
        return 0;
    }
    fs__spin_unlock(&shim__keys_lock);
    return EAGAIN;
}
SHIM_ALIAS(pthread_key_create)

int shim__pthread_key_delete(pthread_key_t key)
{
    if (key >= PTHREAD_KEYS_MAX)
        return EINVAL;
    fs__spin_lock(&shim__keys_lock);
    uintptr_t seq = atomic_load(&shim__keys[key].seq);
    if (!(seq & 1)) {
        fs__spin_unlock(&shim__keys_lock);
        return EINVAL;
    }
    atomic_store(&shim__keys[key].seq, seq + 1);
    fs__spin_unlock(&shim__keys_lock);
    return 0;
}
SHIM_ALIAS(pthread_key_delete)

static void shim__plain_key_init(void)
{
    REAL(pthread_key_create)(&shim__plain_key, shim__plain_tsd_dtor);
}

static void shim__plain_tsd_dtor(void *p)
{
    struct shim_tsd *tsd = p;
    shim__tsd_run_dtors(tsd);
    for (int i = 0; i < SHIM_TSD_BLOCKS; i++)
        free(tsd->block[i]);
    free(tsd);
    shim__tls_tsd = NULL;
}

/* The TSD of the caller; with create, allocates what is missing. */
static struct shim_tsd *shim__tsd(bool create)
{
    struct shim_thread *st = shim__cur();
    if (st)
        return &st->tsd;
    if (!shim__tls_tsd && create) {
        REAL(pthread_once)(&shim__plain_once, shim__plain_key_init);
        shim__tls_tsd = calloc(1, sizeof *shim__tls_tsd);
        if (shim__tls_tsd)
            REAL(pthread_setspecific)(shim__plain_key, shim__tls_tsd);
    }
    return shim__tls_tsd;
}

void *shim__pthread_getspecific(pthread_key_t key)
{
    if (key >= PTHREAD_KEYS_MAX)
        return NULL;
    struct shim_tsd *tsd = shim__tsd(false);
    if (!tsd)
        return NULL;
    struct shim_tsd_slot *blk = tsd->block[key / SHIM_TSD_BLOCK];
    if (!blk)
        return NULL;
    struct shim_tsd_slot *s = &blk[key % SHIM_TSD_BLOCK];
    return s->seq == atomic_load_explicit(&shim__keys[key].seq, memory_order_relaxed) ? s->value
                                                                                    : NULL;
}
SHIM_ALIAS(pthread_getspecific)

int shim__pthread_setspecific(pthread_key_t key, const void *value)
{
    if (key >= PTHREAD_KEYS_MAX)
        return EINVAL;
    uintptr_t seq = atomic_load_explicit(&shim__keys[key].seq, memory_order_relaxed);
    if (!(seq & 1))
        return EINVAL;
    struct shim_tsd *tsd = shim__tsd(true);
    if (!tsd)
        return ENOMEM;
    struct shim_tsd_slot **blk = &tsd->block[key / SHIM_TSD_BLOCK];
    if (!*blk && !(*blk = calloc(SHIM_TSD_BLOCK, sizeof **blk)))
        return ENOMEM;
    (*blk)[key % SHIM_TSD_BLOCK].seq = seq;
    (*blk)[key % SHIM_TSD_BLOCK].value = (void *)value;
    return 0;
}
SHIM_ALIAS(pthread_setspecific)

/* fork child: the forking fiber (or plain thread) is the only thread. */
void shim__thread_atfork_child(void)
{
    atomic_store(&shim__threads_alive, shim__cur() ? 1 : 0);
}

/* For signal.c: the fiber behind a pthread_t of the shim, or NULL (a
 * real thread). The adopted thread counts as real: it has a kernel thread
 * of its own to signal... except that other fibers may be running on it,
 * so it is treated as a fiber too. */
fs_fiber *shim__fiber_of(pthread_t t)
{
    struct shim_thread *st = shim__from_id(t);
    return st ? st->fiber : NULL;
}
