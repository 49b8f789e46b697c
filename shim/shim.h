/*
 * shim.h - what every file of the interposition layer shares.
 *
 * Each shim/<family>.c interposes one family of libc calls. A wrapper:
 *  - is exported (SHIM_EXPORT) and listed in libfibershim.map;
 *  - behaves exactly like the real call when the caller is not a fiber
 *    (fs_self() == NULL): before the first pthread_create, and on threads
 *    the shim did not create;
 *  - reaches the real function through REAL(name), resolved once with
 *    dlsym(RTLD_NEXT) (dlvsym where glibc keeps several versions).
 * Errors: syscall-style wrappers set errno and return -1; pthread-style
 * wrappers return a positive errno. The runtime's negative errnos are
 * converted here and nowhere else.
 */
#ifndef SHIM_H
#define SHIM_H

#include "fibershim.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <unwind.h>

#define SHIM_EXPORT __attribute__((visibility("default")))

/*
 * Every wrapper is written as shim__<name> and exported under the libc
 * name with SHIM_ALIAS(name). The unit tests compile the shim with
 * SHIM_NO_EXPORTS, so they can call shim__<name> from fibers without
 * interposing the test runner's own pthread and I/O calls.
 */
#ifdef SHIM_NO_EXPORTS
#define SHIM_ALIAS(name)
#else
#define SHIM_ALIAS(name)                                                                   \
    extern __typeof__(name) name __attribute__((alias("shim__" #name), visibility("default")));
#endif
#define SHIM_LIKELY(x) __builtin_expect(!!(x), 1)
#define SHIM_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Resolves the next definition of `name` after libfibershim.so (the C
 * library's). `version`, if not NULL, picks that symbol version. Aborts
 * with a clear message if the symbol does not exist: a wrapper without its
 * real function cannot keep any contract. */
void *shim__resolve(const char *name, const char *version);

/* REAL(read)(fd, buf, n): the C library's read. The pointer is cached
 * after the first call; racing first calls resolve the same value. */
#define REAL(name) REAL_V(name, NULL)
#define REAL_V(name, ver)                                                                  \
    (__extension__({                                                                       \
        static __typeof__(name) *shim__real_p;                                             \
        __typeof__(name) *shim__p = __atomic_load_n(&shim__real_p, __ATOMIC_RELAXED);      \
        if (SHIM_UNLIKELY(!shim__p)) {                                                     \
            shim__p = (__typeof__(name) *)shim__resolve(#name, ver);                       \
            __atomic_store_n(&shim__real_p, shim__p, __ATOMIC_RELAXED);                    \
        }                                                                                  \
        shim__p;                                                                           \
    }))

/* Converts a runtime result (>= 0 or -errno) to the syscall convention. */
static inline long shim__ret(long rc)
{
    if (rc < 0) {
        errno = (int)-rc;
        return -1;
    }
    return rc;
}

/* Deadline for a relative timeout in nanoseconds (< 0: none). */
static inline int64_t shim__deadline_after(int64_t ns)
{
    if (ns < 0)
        return FS_NO_DEADLINE;
    int64_t now = fs_now();
    return ns > INT64_MAX - now ? FS_NO_DEADLINE : now + ns;
}

/* ---- init.c ------------------------------------------------------------- */

/* Makes the calling kernel thread a carrier whose current fiber is the
 * code already running on it (main()), if that has not happened yet.
 * Called by the first pthread_create. Returns 0 or a positive errno. */
int shim__activate(void);

/* ---- signal.c ----------------------------------------------------------- */

/* A fiber's alternate signal stack (sigaltstack.c): as the kernel keeps a
 * thread's (size 0 and no sp when disabled; flags as set, SS_AUTODISARM
 * included). The fiber's own; other threads never read it. */
struct shim_altstack {
    void *sp;
    size_t size;
    int flags;
};

/* Signal state of a fiber (inside its struct shim_thread). */
struct shim_sigstate {
    _Atomic uint64_t pending;  /* signals sent to this fiber, bit sig-1 */
    /* The instances sent, in order, each with its siginfo (signal.c):
     * one per pending standard signal, each one sent of a real-time
     * signal. Under qlock. */
    struct shim_siginst *qhead, *qtail;
    _Atomic int qlock;
    uint64_t mask;             /* its blocked signals, bit sig-1 (signals 1..64) */
    _Atomic int restart;       /* the handlers last run had SA_RESTART */
    _Atomic uint64_t waiting;  /* the set it waits for in sigwait & co., or 0 */
    uint32_t handled;          /* handlers raised by its hook so far; its own */
    /* Signals pending for the process that the dispatcher chose this
     * fiber to take (signal.c): it unblocks each on its carrier, and the
     * kernel delivers it there with its own siginfo. */
    _Atomic uint64_t ppending;
    _Atomic int repoke;        /* a poke found it inside the runtime: again later */
    /* Between shim__deliver_one and the handler trampoline (signal.c),
     * both on the fiber: the mask the handler interrupted, and the one the
     * handler left in its ucontext (uc_sigmask) for after it. */
    uint64_t h_outer, h_after;
    bool h_outer_set, h_after_set;
    /* The poke's frame (the interrupted code's context) while the poke
     * delivers: the trampoline hands it to the handler (signal.c). */
    struct ucontext_t *h_poke;
    struct shim_altstack alt; /* its sigaltstack (sigaltstack.c) */
};

/* Runtime interrupt hook and signal setup for a new fiber / the adopted one. */
void shim__signal_activate(void);
/* mask: the new fiber's (pthread_attr_setsigmask_np), NULL for the
 * caller's. */
void shim__sigstate_init(struct shim_sigstate *ss, const sigset_t *mask);
/* For the adopted thread: its kernel thread's own pending signals and
 * alternate signal stack become its fiber's. */
void shim__adopt_pending(struct shim_sigstate *ss);

/* A point where the calling fiber holds nothing of the shim's and may
 * run handlers: delivers its due signals now, as the kernel delivers a
 * thread's at its next system call. Used where a thread leaves the
 * program's code for good (its exit), so that a signal routed to it while
 * it ran inside the shim, where pokes wait (signal.c), is not lost with it. */
void shim__sig_safe_point(void);

/* After a wait returned -EINTR: true if the call should be restarted
 * (every handler that ran had SA_RESTART). */
bool shim__sig_should_restart(void);

/* How many signal handlers the shim has run in the calling fiber so far
 * (0 off a fiber): a wait that saw -EINTR compares it with its value from
 * before, to tell a handler from an interrupt that ran none (an ignored
 * signal). */
uint32_t shim__sig_handled(void);

/* sigaction for a signal whose handler the shim wraps (shim__sig_wraps):
 * the program's handler runs behind a trampoline that gives it its
 * fiber's masks (signal.c). */
bool shim__sig_wraps(int sig);
int shim__sigaction_wrapped(int sig, const struct sigaction *act, struct sigaction *old);

/* The calling fiber's mask (pthread_sigmask's contract). */
int shim__pthread_sigmask(int how, const sigset_t *set, sigset_t *old);

/* ppoll, pselect and epoll_pwait from a fiber: the fiber's mask is mask
 * for the wait (*saved gets the old one, for shim__sig_mask_pop). Signals
 * it lets in that are pending run their handlers at once: then it returns
 * 1, and the call fails with EINTR without waiting (after the pop). */
int shim__sig_mask_push(const sigset_t *mask, uint64_t *saved);
void shim__sig_mask_pop(uint64_t saved);

/* Pokes f if it runs now, so that a due signal or asynchronous cancel
 * reaches it at once (signal.c). Any thread. */
void shim__sig_poke(fs_fiber *f);

/* Whether pokes work (the shim's SIGCANCEL handler is installed), and a
 * poke with value `value` to kernel thread tid of this process (a spare:
 * offload.c). */
bool shim__sig_pokes(void);
void shim__sig_poke_thread(int tid, void *value);

/* The calling fiber ends: its carrier gets the mask it has between
 * fibers (a handler that called pthread_exit left the kernel's). */
void shim__sig_fiber_exit(void);

/* A fork child: the dispatcher thread is gone, start another. */
void shim__signal_atfork_child(void);

/* Around an exec or a spawn from a fiber: the calling kernel thread's
 * mask becomes the fiber's, which the new image inherits (a carrier
 * blocks the signals the dispatcher routes); then the carrier's again.
 * Off a fiber, nothing. */
void shim__sig_exec_begin(void);
void shim__sig_exec_end(void);

/* ---- sigaltstack.c ------------------------------------------------------ */

/* A new fiber's setting (none), or the adopted thread's (its kernel
 * thread's, unless that is the runtime's own). */
void shim__alt_init(struct shim_altstack *a, bool adopted);
/* The calling carrier gets the kernel alternate stack the running fiber
 * with setting a needs where it runs now: its own while it runs on it,
 * else the runtime's (a NULL: between fibers). At every switch once some
 * fiber has one, and after a delivery. */
void shim__alt_follow(const struct shim_altstack *a);
void shim__alt_carrier_reset(void);
/* Before the shim lets the kernel deliver a signal with an SA_ONSTACK
 * handler to the calling fiber with setting a: the carrier gets the
 * fiber's, or none for a fiber without one, not the runtime's
 * (shim__alt_follow puts that back after). */
void shim__alt_for_delivery(const struct shim_altstack *a);
/* In the poke handler before it delivers: a self-disarming setting the
 * poke's delivery disarmed is armed again (the poke is not the
 * program's). */
void shim__alt_rearm(const struct shim_altstack *a);
/* Around a program handler, in the trampoline (signal.c): the frame shows
 * the fiber's setting, SS_AUTODISARM acts on it; after the handler,
 * sigreturn's restore of uc_stack is mirrored on the fiber's setting and
 * the frame gets the carrier setting that needs. */
struct ucontext_t;
void shim__alt_handler_enter(struct shim_altstack *a, struct ucontext_t *uc);
void shim__alt_handler_leave(struct shim_altstack *a, struct ucontext_t *uc);
/* A frame of the shim's own (a poke) gets the carrier setting a needs. */
void shim__alt_frame_set(const struct shim_altstack *a, struct ucontext_t *uc);

/* ---- cancel.c ------------------------------------------------------------ */

struct shim_offload_req;

/* Cancellation state of a fiber (inside its struct shim_thread), zero for
 * a new thread: enabled, deferred, nothing pending. */
struct shim_cancel {
    int state;                       /* PTHREAD_CANCEL_ENABLE/DISABLE; its own */
    int type;                        /* PTHREAD_CANCEL_DEFERRED/ASYNCHRONOUS; its own */
    _Atomic int pending;             /* pthread_cancel was called on it */
    bool exiting;                    /* pthread_exit or a cancel is unwinding it */
    bool entry_set;                  /* entry holds shim__thread_start's frame */
    __pthread_unwind_buf_t *cleanup; /* innermost C pthread_cleanup_push */
    void *result;                    /* the thread's value, while unwinding */
    jmp_buf entry;                   /* where the unwind ends (thread.c) */
    struct _Unwind_Exception exc;    /* the forced unwind's exception object */
    /* Its cancellable handed-off call in progress (offload.c), under the
     * spare pool's lock. */
    struct shim_offload_req *offload;
};

/* A cancellation point of the calling fiber: acts on a pending, enabled
 * cancel (the call does not return). Off a fiber, nothing: the caller
 * then makes the C library's call, which is glibc's cancellation point. */
void shim__cancel_point(void);
/* Whether shim__cancel_point would act now (for a wait that must first
 * undo its own state: dequeue, reacquire a mutex). */
bool shim__cancel_due(void);
/* Whether f has an asynchronous cancel to act on (the poke, signal.c),
 * and acting on it in the calling fiber. */
bool shim__cancel_async_due(fs_fiber *f);
void shim__cancel_async_act(void);
/* pthread_cancel of fiber f (held by the caller). */
void shim__cancel_post(fs_fiber *f);
/* pthread_exit from the fiber whose state c is: unwinds it (see cancel.c). */
__attribute__((noreturn)) void shim__cancel_exit(struct shim_cancel *c, void *ret);

/* ---- robust.c ----------------------------------------------------------- */

/* The robust glibc mutexes a fiber holds (inside its struct shim_thread). */
struct shim_robust_set {
    pthread_mutex_t **v;
    unsigned n, cap;
};

/* Bookkeeping around glibc's lock/unlock of a robust mutex by a fiber. */
void shim__robust_locked(pthread_mutex_t *m, int rc);
void shim__robust_unlocked(pthread_mutex_t *m, int rc);
/* For a fiber that takes a robust mutex itself (mutex_glibc.c, after a
 * wait in the kernel), glibc's steps on the list the kernel walks for the
 * calling kernel thread: list_op_pending names m (NULL: nothing) while
 * the lock word changes hands; m, just acquired, goes at the front of the
 * list. Neither yields. */
void shim__robust_pending(pthread_mutex_t *m);
void shim__robust_enqueue_kernel(pthread_mutex_t *m);
/* At fiber exit: mark the ones still held owner-dead, as the kernel would. */
void shim__robust_owner_died(struct shim_robust_set *s);

/* ---- thread.c ----------------------------------------------------------- */

/* The calling fiber's robust set, or NULL off a fiber of the shim. */
struct shim_robust_set *shim__robust_set(void);

/* The signal state of a fiber of the shim, or NULL. */
struct shim_sigstate *shim__sigstate(fs_fiber *f);

/* pthread_exit from a fiber: unwinds it (cancel.c), then ends it with
 * value ret. */
__attribute__((noreturn)) void shim__thread_exit(void *ret);
/* The end of a fiber's thread once its stack is unwound: thread_local and
 * TSD destructors, then the fiber ends with value ret. */
__attribute__((noreturn)) void shim__thread_finish(void *ret);
/* The cancellation state of a fiber of the shim, or NULL. */
struct shim_cancel *shim__cancel_of(fs_fiber *f);

/* The fiber of a running thread of the shim: 0 with *f, ESRCH for an
 * ended one, -1 for a glibc thread (see thread.c). */
int shim__fiber_running(pthread_t t, fs_fiber **f);

/* pthread_kill on a handle of an ended thread of the shim (see thread.c);
 * -1 for any other handle. */
int shim__kill_ended(pthread_t t, int sig);

/* Calls fn(fiber, signal state, arg) for every running thread of the
 * shim, with a reference held, until fn returns true (see thread.c). */
bool shim__threads_each(bool (*fn)(fs_fiber *f, struct shim_sigstate *ss, void *arg), void *arg);

/* CPU-time clocks of fibers, for clock_gettime (time.c). Each returns 0
 * with *ts set, a positive errno, or -1 when the clock is not a fiber's
 * (the C library answers): the caller's own (CLOCK_THREAD_CPUTIME_ID), and
 * one from pthread_getcpuclockid. */
int shim__cpuclock_self(struct timespec *ts);
int shim__cpuclock_gettime(clockid_t clock, struct timespec *ts);

#endif
