/*
 * offload.c - a bounded pool of spare kernel threads for calls known to
 * block in the kernel.
 *
 * Some calls cannot be made non-blocking, so the netpoller cannot wait
 * for them: regular-file I/O that misses the page cache, fsync, opening a
 * FIFO, waitpid, system, glibc's resolver (its sockets are internal and
 * bypass every wrapper), file locks, a raw FUTEX_WAIT. Made on a carrier,
 * each would hold the carrier hostage and starve every fiber queued on it.
 * So the calling fiber hands the call off at once, as libuv does for file
 * system work and getaddrinfo: it packages the call (function + context)
 * into a request on its own stack, queues it, and parks on the request's
 * fs_waiter. A spare thread runs the real call, stores its result and its
 * errno, and wakes the waiter; the fiber resumes on its own carrier (a
 * started fiber stays on its carrier while the call runs elsewhere) and
 * gets errno back. Handing off costs two switches and a cross-thread
 * wake, which is why the wrappers try a non-blocking form first where one
 * exists (RWF_NOWAIT, LOCK_NB, F_SETLK) and offload only when it fails.
 *
 * The call runs on a different kernel thread: thread-local state the call
 * itself uses (glibc's resolver state _res, h_errno, the thread's signal
 * mask) is the spare's, not the fiber's. That is fine for these calls;
 * errno, the one piece of thread state they report through, is carried in
 * both directions. Spares inherit the signal mask of the carrier that
 * started them, as a thread the program created would.
 *
 * Spares are plain threads (REAL(pthread_create)), created lazily up to
 * FIBERSHIM_MAX_SPARES (default 64); when all are busy further requests
 * wait in FIFO order, still without blocking any carrier. A spare idle for
 * SHIM_SPARE_IDLE_NS retires. The bound means that more than
 * FIBERSHIM_MAX_SPARES calls waiting on each other (say, raw futex waits
 * whose waker is itself queued) can deadlock, as in any bounded pool.
 *
 * Locking: shim__pool.lock protects everything in shim__pool. The two
 * queues are shim__waitq lists whose own locks are unused. A requester
 * wakes an idle spare while it holds the lock: a spare that timed out
 * meanwhile cannot return (and free the waiter on its stack) before it
 * has taken the lock to take itself out of the idle queue.
 */
#include "offload.h"

#include <string.h>
#include "waitq.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>

#define SHIM_SPARE_IDLE_NS (10 * 1000000000LL)

int fs__parse_uint(const char *s, uint64_t lo, uint64_t hi, uint64_t *out);

/* One handed-off call; lives on the requesting fiber's stack. */
struct shim_offload_req {
    long (*fn)(void *ctx); /* the call, run on a spare */
    void *ctx;             /* its arguments and outputs */
    long ret;              /* fn's result, stored by the spare */
    int err;               /* errno: the caller's going in, fn's coming out */
    bool done;             /* the spare is finished with it (shim__pool.lock) */
    struct fs_waiter w;    /* the parked requester; links in shim__pool.pending */
};

static struct {
    fs_spinlock lock;
    struct shim__waitq pending; /* requests not yet taken by a spare, FIFO */
    struct shim__waitq idle;    /* waiters of idle spares; newest first */
    unsigned spares;            /* live spares, counting ones being started */
    unsigned max;               /* FIBERSHIM_MAX_SPARES */
    uint64_t offloads;          /* calls handed off so far (FIBERSHIM_STATS) */
} shim__pool = {.max = SHIM_SPARES_DEFAULT};

int shim__offload_init(char *err, size_t errlen)
{
    const char *v = secure_getenv("FIBERSHIM_MAX_SPARES");
    uint64_t n = SHIM_SPARES_DEFAULT;
    if (v && *v && fs__parse_uint(v, 1, SHIM_SPARES_MAX, &n)) {
        snprintf(err, errlen,
                 "FIBERSHIM_MAX_SPARES=\"%s\" is invalid: expected an integer from 1 to %u", v,
                 SHIM_SPARES_MAX);
        return -1;
    }
    shim__pool.max = (unsigned)n;
    return 0;
}

uint64_t shim__offload_count(void)
{
    fs__spin_lock(&shim__pool.lock);
    uint64_t n = shim__pool.offloads;
    fs__spin_unlock(&shim__pool.lock);
    return n;
}

/* fork child: no spare survived, and the requests queued belonged to
 * fibers that did not either. The lock may have been held by one of them. */
void shim__offload_atfork_child(void)
{
    memset(&shim__pool.lock, 0, sizeof shim__pool.lock);
    memset(&shim__pool.pending, 0, sizeof shim__pool.pending);
    memset(&shim__pool.idle, 0, sizeof shim__pool.idle);
    shim__pool.spares = 0;
}

/* Runs r's call. Any thread. */
static void shim__offload_call(struct shim_offload_req *r)
{
    errno = r->err;
    r->ret = r->fn(r->ctx);
    r->err = errno;
}

static struct shim_offload_req *shim__offload_pop_locked(void)
{
    struct fs_waiter *w = shim__waitq_pop_locked(&shim__pool.pending);
    return w ? (struct shim_offload_req *)((char *)w - offsetof(struct shim_offload_req, w))
             : NULL;
}

static void *shim__spare_main(void *unused)
{
    (void)unused;
    prctl(PR_SET_NAME, "fibershim-spare");
    struct fs_waiter idle;
    fs__spin_lock(&shim__pool.lock);
    for (;;) {
        struct shim_offload_req *r = shim__offload_pop_locked();
        if (r) {
            fs__spin_unlock(&shim__pool.lock);
            shim__offload_call(r);
            fs__spin_lock(&shim__pool.lock);
            /* Woken under the lock, so this spare is back in the pool
             * (idle, or on the next request) before the requester can
             * call again: a fiber making call after call uses one spare,
             * not a new one each time. The requester may return (and r
             * die) as soon as the wake lands, or once it sees done:
             * nothing touches r after. */
            r->done = true;
            fs_waiter_wake(&r->w);
            continue;
        }
        fs_waiter_prepare(&idle);
        shim__waitq_push_head_locked(&shim__pool.idle, &idle);
        fs__spin_unlock(&shim__pool.lock);
        int rc = fs_waiter_wait(&idle, FS_PARK_OTHER, NULL, fs_now() + SHIM_SPARE_IDLE_NS,
                                NULL, NULL);
        fs__spin_lock(&shim__pool.lock);
        if (shim__waiter_queued(&idle))
            shim__waitq_remove_locked(&shim__pool.idle, &idle);
        /* A requester may have claimed us just as we timed out (its wake
         * then failed): retire only if no request is left for us. */
        if (rc == -ETIMEDOUT && !shim__pool.pending.head)
            break;
    }
    shim__pool.spares--;
    fs__spin_unlock(&shim__pool.lock);
    return NULL;
}

/* Starts one spare. On failure with no spare left to drain the queue,
 * runs every queued call right here, blocking this carrier: worse than
 * the pool, better than leaving the callers parked forever. */
static void shim__spare_start(void)
{
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    int rc = REAL(pthread_create)(&t, &a, shim__spare_main, NULL);
    pthread_attr_destroy(&a);
    if (rc == 0)
        return;
    struct shim__waitq orphans = {0};
    fs__spin_lock(&shim__pool.lock);
    if (--shim__pool.spares == 0) {
        struct shim_offload_req *r;
        while ((r = shim__offload_pop_locked()))
            shim__waitq_push_tail_locked(&orphans, &r->w);
    }
    fs__spin_unlock(&shim__pool.lock);
    struct fs_waiter *w;
    while ((w = shim__waitq_pop_locked(&orphans))) {
        struct shim_offload_req *r =
            (struct shim_offload_req *)((char *)w - offsetof(struct shim_offload_req, w));
        shim__offload_call(r);
        fs__spin_lock(&shim__pool.lock); /* as in shim__spare_main */
        r->done = true;
        fs_waiter_wake(w);
        fs__spin_unlock(&shim__pool.lock);
    }
}

long shim__offload_blocking(long (*fn)(void *ctx), void *ctx, enum fs_park_reason why)
{
    if (!fs_self())
        return fn(ctx);
    struct shim_offload_req r = {.fn = fn, .ctx = ctx, .err = errno};
    fs_waiter_prepare(&r.w);
    bool start = false;
    fs__spin_lock(&shim__pool.lock);
    shim__pool.offloads++; /* under the lock we take anyway: a free count */
    shim__waitq_push_tail_locked(&shim__pool.pending, &r.w);
    struct fs_waiter *idle = shim__waitq_pop_locked(&shim__pool.idle);
    if (idle) {
        /* false: it timed out; it will find our request when it takes
         * the lock to retire */
        fs_waiter_wake(idle);
    } else if (shim__pool.spares < shim__pool.max) {
        shim__pool.spares++;
        start = true;
    }
    fs__spin_unlock(&shim__pool.lock);
    if (start)
        shim__spare_start();
    /* A spare may finish before we park: fs_park then returns at once.
     * A signal handler may end the park (every park reason but
     * FS_PARK_OTHER is interruptible, and why is the caller's): the
     * handler has run by then, but the call goes on on its spare, which
     * will write r and wake r.w. Handed-off calls are not cut short, so
     * wait again, under a new token the spare's wake will carry (it reads
     * it under the lock), until the spare is done with r. */
    while (fs_waiter_wait(&r.w, why, (const void *)fn, FS_NO_DEADLINE, NULL, NULL) != 0) {
        fs__spin_lock(&shim__pool.lock);
        bool done = r.done;
        if (!done)
            r.w.tok = fs_park_prepare();
        fs__spin_unlock(&shim__pool.lock);
        if (done)
            break;
    }
    errno = r.err;
    return r.ret;
}
