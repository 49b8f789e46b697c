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
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/ucontext.h>

#include "sys.h"

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
    /* Cancellation (shim__offload_cancellable), under shim__pool.lock but
     * `cancel`, which the spare's signal handler reads: */
    int spare_tid;         /* the spare running it; 0 while queued */
    _Atomic bool cancel;   /* its requester was cancelled: interrupt fn */
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

/* The request the calling spare is running (its own signal handler reads
 * it); NULL between requests. */
static __thread struct shim_offload_req *shim__spare_req;

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
            r->spare_tid = (int)fs__sys0(SYS_gettid);
            fs__spin_unlock(&shim__pool.lock);
            /* Published before the call: a cancel's signal may come any
             * time from now on, and finds r here (see below). */
            __atomic_store_n(&shim__spare_req, r, __ATOMIC_RELAXED);
            atomic_signal_fence(memory_order_seq_cst);
            shim__offload_call(r);
            atomic_signal_fence(memory_order_seq_cst);
            __atomic_store_n(&shim__spare_req, NULL, __ATOMIC_RELAXED);
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

/*
 * Cancelling a handed-off call. A thread cancelled in a blocking system
 * call leaves it at once in glibc (SIGCANCEL interrupts the call). The
 * call of a fiber runs on a spare, so pthread_cancel wakes the requester
 * (shim__offload_cancel), which then:
 *  - takes its request back if no spare has taken it yet: the call never
 *    started, and the cancel acts;
 *  - else marks it and sends the spare a poke with SHIM_OFFLOAD_CANCEL_VALUE
 *    (the shim's SIGCANCEL handler, signal.c), whose handler, on the
 *    spare, finds the call inside its system call: the kernel, which
 *    restarts it (the poke's action has SA_RESTART), left the program
 *    counter on the syscall instruction; the handler makes it return
 *    -EINTR instead, as a call interrupted without SA_RESTART does. A
 *    call that completed is not touched. The signal may land just before
 *    the call enters the kernel: the requester sends it again every
 *    SHIM_CANCEL_RESEND_NS until the spare is done.
 * Once the spare is done, a call that failed with EINTR acts on the
 * cancel; one that completed returns (the next cancellation point acts),
 * glibc's rule. Without pokes (sanitizer builds, or glibc's own SIGCANCEL
 * handler installed because the program cancelled a thread of its own)
 * a call a spare runs goes on until it returns.
 */
#define SHIM_CANCEL_RESEND_NS (10 * 1000000LL)

void shim__offload_cancel_signal(void *ucv)
{
    struct shim_offload_req *r = __atomic_load_n(&shim__spare_req, __ATOMIC_RELAXED);
    if (!r || !atomic_load_explicit(&r->cancel, memory_order_relaxed))
        return;
    ucontext_t *uc = ucv;
    greg_t *g = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)g[REG_RIP];
    if (ip[0] == 0x0f && ip[1] == 0x05) { /* syscall: to be restarted */
        g[REG_RAX] = -EINTR;
        g[REG_RIP] += 2;
    }
}

void shim__offload_cancel(fs_fiber *f)
{
    struct shim_cancel *c = shim__cancel_of(f);
    fs__spin_lock(&shim__pool.lock);
    struct shim_offload_req *r = c ? c->offload : NULL;
    if (r && !r->done)
        fs_waiter_wake(&r->w); /* under the lock, as the spare's wake */
    fs__spin_unlock(&shim__pool.lock);
}

static long shim__offload_run(long (*fn)(void *ctx), void *ctx, enum fs_park_reason why,
                              bool cancellable)
{
    if (!fs_self())
        return fn(ctx);
    struct shim_cancel *c = cancellable ? shim__cancel_of(fs_self()) : NULL;
    if (c)
        shim__cancel_point();
    uint32_t h0 = shim__sig_handled();
    int err0 = errno;
again:;
    bool intr = false; /* the call was interrupted for a handler */
    struct shim_offload_req r = {.fn = fn, .ctx = ctx, .err = err0};
    fs_waiter_prepare(&r.w);
    bool start = false;
    fs__spin_lock(&shim__pool.lock);
    shim__pool.offloads++; /* under the lock we take anyway: a free count */
    shim__waitq_push_tail_locked(&shim__pool.pending, &r.w);
    if (c)
        c->offload = &r;
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
     * FS_PARK_OTHER is interruptible, and why is the caller's), and so may
     * a cancel (shim__offload_cancel): the handler has run by then, but
     * the call goes on on its spare, which will write r and wake r.w.
     * Handed-off calls are only cut short by a cancel (above), so wait
     * again, under a new token the spare's wake will carry (it reads it
     * under the lock), until the spare is done with r. */
    int64_t deadline = FS_NO_DEADLINE;
    for (;;) {
        fs_waiter_wait(&r.w, why, (const void *)fn, deadline, NULL, NULL);
        fs__spin_lock(&shim__pool.lock);
        if (r.done)
            break;
        deadline = FS_NO_DEADLINE;
        if (c && shim__cancel_due()) {
            if (!r.spare_tid) {
                /* Not started: take it back (under the lock, where the
                 * spares take requests). */
                shim__waitq_remove_locked(&shim__pool.pending, &r.w);
                r.ret = -1;
                r.err = EINTR;
                break;
            }
            if (shim__sig_pokes()) {
                atomic_store_explicit(&r.cancel, true, memory_order_relaxed);
                shim__sig_poke_thread(r.spare_tid, SHIM_OFFLOAD_CANCEL_VALUE);
                deadline = fs_now() + SHIM_CANCEL_RESEND_NS;
            }
        } else if (c && (intr || shim__sig_handled() != h0)) {
            /* A signal handler ran in this fiber while its call waits (it
             * woke us: signal.c): the call is interrupted as the kernel
             * interrupts a thread's, the same way as for a cancel; a call
             * not started yet fails at once without SA_RESTART. */
            h0 = shim__sig_handled();
            if (!r.spare_tid && !intr) {
                if (!shim__sig_should_restart()) {
                    shim__waitq_remove_locked(&shim__pool.pending, &r.w);
                    r.ret = -1;
                    r.err = EINTR;
                    break;
                }
            } else if (r.spare_tid && shim__sig_pokes()) {
                intr = true;
                atomic_store_explicit(&r.cancel, true, memory_order_relaxed);
                shim__sig_poke_thread(r.spare_tid, SHIM_OFFLOAD_CANCEL_VALUE);
                deadline = fs_now() + SHIM_CANCEL_RESEND_NS;
            }
        }
        r.w.tok = fs_park_prepare();
        fs__spin_unlock(&shim__pool.lock);
    }
    if (c)
        c->offload = NULL;
    fs__spin_unlock(&shim__pool.lock);
    if (c && r.ret == -1 && r.err == EINTR)
        shim__cancel_point();
    /* Interrupted for a handler: restarted if every handler that ran had
     * SA_RESTART (the calls handed off this way are all ones the kernel
     * restarts then: open, waitpid, waitid, fcntl locks), else EINTR. */
    if (intr && r.ret == -1 && r.err == EINTR && shim__sig_should_restart())
        goto again;
    errno = r.err;
    return r.ret;
}

long shim__offload_blocking(long (*fn)(void *ctx), void *ctx, enum fs_park_reason why)
{
    return shim__offload_run(fn, ctx, why, false);
}

long shim__offload_cancellable(long (*fn)(void *ctx), void *ctx, enum fs_park_reason why)
{
    return shim__offload_run(fn, ctx, why, true);
}
