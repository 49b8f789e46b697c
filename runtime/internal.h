/*
 * internal.h - the runtime's shared data structures.
 *
 * Vocabulary (Go's, since it is the best known):
 *  - fiber   (G): a user-level thread with its own stack.
 *  - sched   (P): a carrier's scheduling state: run queues, epoll
 *                 instance, timer heap, counters. It is everything a
 *                 kernel thread needs to run fibers, so that a monitor can
 *                 hand a sched to another kernel thread when its own is
 *                 stuck in a call the runtime cannot see.
 *  - carrier (M): the kernel thread currently driving a sched
 *                 (struct fs_sched.thread).
 *
 * Pinning rule: a fiber may run on any carrier (stolen by an idle one,
 * resumed by whichever carrier wakes it), except when pinned to the sched
 * it last ran on (fiber.home), where every wake-up sends it back:
 *  - an adopted fiber: it is its kernel thread (main's thread id is the
 *    process id; its TCB is the one glibc, rseq, set_robust_list and
 *    setuid()'s broadcast know for that thread);
 *  - a fiber inside fs_pin() (fiber.pins): it holds a glibc robust, PI or
 *    PP mutex, which glibc and the kernel tie to the kernel thread that
 *    locked it;
 *  - every started fiber when migration is off (fs__g.migrate false:
 *    FIBERSHIM_MIGRATE=0, or by default without per-fiber TLS (tls.c),
 *    where a fiber may hold addresses of its kernel thread's TLS, errno
 *    or __thread data, in registers or on its stack).
 *
 * Locking: each struct says which lock (or which thread) owns each field.
 * Lock order: waitq/user-object locks -> fs_pollfd.lock -> sched.timer_lock
 * -> fiber.lock -> g.global_lock. No lock is held across a context switch:
 * fs_park() releases the caller's lock only after the switch, in commit().
 */
#ifndef FS_INTERNAL_H
#define FS_INTERNAL_H

#include "context.h"
#include "fibershim.h"
#include "runq.h"
#include "spinlock.h"
#include "stack.h"
#include "timer_heap.h"
#include "tls.h"
#include "asan.h"
#include "tsan.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FS_LIKELY(x) __builtin_expect(!!(x), 1)
#define FS_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define FS_CONTAINER_OF(p, type, member) ((type *)((char *)(p) - offsetof(type, member)))

/* An always-on check for programming errors: prints file:line and aborts.
 * Never used for conditions a caller can cause with bad input. */
#define FS_CHECK(cond)                                                                     \
    do {                                                                                   \
        if (FS_UNLIKELY(!(cond)))                                                          \
            fs__panic(__FILE__, __LINE__, #cond);                                          \
    } while (0)
__attribute__((noreturn, cold)) void fs__panic(const char *file, int line, const char *what);

/* ---- fibers ------------------------------------------------------------ */

/* Park word: token << 2 | state. The token counts parks, so an unpark
 * aimed at an earlier park fails its compare-and-swap. */
enum {
    FS_PW_PREPARED = 0, /* park announced, fiber still running */
    FS_PW_PARKED = 1,   /* switched out and committed; a waker must ready it */
    FS_PW_WOKEN = 2,    /* woken by fs_unpark */
    FS_PW_TIMEDOUT = 3, /* woken by its deadline */
};

enum fs_fiber_state {
    FS_F_RUNNABLE, /* in some run queue, or about to be */
    FS_F_RUNNING,
    FS_F_PARKED,
    FS_F_DEAD,
};

/* Join state (fiber.join), protected by fiber.lock. */
enum { FS_J_JOINABLE, FS_J_DETACHED, FS_J_JOINED };

struct fs_fiber {
    struct fs_context ctx;       /* saved stack pointer while switched out */
    /* The frame of its first switch (fs__context_make_at): dead once it
     * has run. */
    struct fs_switch_frame first_frame;
    struct fs_fiber *next;       /* run-queue link; owner of the queue */
    struct fs_sched *home;       /* sched it is pinned to; NULL until first run */
    _Atomic uint64_t park;       /* park word, see FS_PW_* */
    _Atomic int state;           /* enum fs_fiber_state, for dumps and asserts */
    int saved_errno;             /* errno of the fiber while switched out */
    _Atomic int interrupt;       /* fs_interrupt pending: run the hook on resume */
    _Atomic int interrupted;     /* the current park was cut short by fs_interrupt */
    /* enum fs_park_reason of the current park. Atomic (relaxed):
     * fs_interrupt reads it from any thread (park.c). */
    _Atomic uint8_t why;
    bool is_adopted;             /* runs on a kernel thread's own stack */
    /* fs_pin() count: written by the fiber itself (pin) or by anyone
     * (unpin); read by whoever queues it, after the park word's acquire. */
    _Atomic uint32_t pins;
    bool own_stack;              /* stack came from fs__stack_alloc */
    bool guard_pending;          /* its first run installs stack_map's guard */
    /* CPU time (cputime.c): written only by the carrier running the fiber,
     * at its switches; read by any thread under cpu_seq. */
    _Atomic uint32_t cpu_seq;    /* odd while a switch-out updates the two below */
    _Atomic uint64_t cpu_ticks;  /* TSC ticks it ran, up to its last switch-out */
    _Atomic uint64_t cpu_since;  /* TSC at its last switch-in; 0 while switched out */
    const void *wait_obj;        /* what it waits on, for dumps */
    int64_t park_since;          /* fs_now() when it parked, for dumps */
    struct fs_timer timer;       /* deadline of the current park */
    struct fs_sched *timer_sched;/* heap the timer is queued on */
    fs_park_token timer_tok;     /* park the timer belongs to */
    void *(*fn)(void *);
    void *arg;
    void *ret;                   /* fn's return value once dead */

    fs_spinlock lock;            /* protects join, joiner */
    int join;                    /* FS_J_*, under lock */
    struct fs_waiter *joiner;    /* under lock */

    struct fs_stack stack;       /* usable stack and guard asked for, as reported to the program */
    struct fs_stack stack_map;   /* the whole allocation, when own_stack */
    /* Per-fiber TLS (tls.c): the thread pointer (fs base) it runs with:
     * its own TCB, or for an adopted fiber its thread's; NULL when
     * per-fiber TLS is off. Written before it first runs. */
    void *tp;
    void *tls_mem;               /* the TCB's own block (caller-owned stack), or NULL */
    bool tls_live;               /* tp is ours and its dtv is allocated */
    uint64_t id;
    char name[16];
    void *local;                 /* fs_fiber_local() word */
    struct fs_fiber *all_prev, *all_next; /* g.all_fibers, under g.all_lock */
#ifdef FS_TSAN
    void *tsan;                  /* its TSan fiber; an adopted one's is its thread's (tsan.h) */
#endif
#ifdef FS_ASAN
    void *asan_fake;             /* its fake stack while switched out (asan.h) */
    bool asan_exiting;           /* its next switch is its last (fs_exit) */
#endif
};

/* ---- scheds (carriers) ------------------------------------------------- */

struct fs_sched_stats {
    /* Written only by the sched's current thread, read racily by others
     * (relaxed atomics, so readers see torn-free values). */
    _Atomic uint64_t switches, steals, spins, sleeps, wakes_sent;
    _Atomic uint64_t parks[FS_PARK_NREASONS];
    _Atomic uint64_t epoll_waits, epoll_ctls, timers_armed, timers_fired;
    _Atomic uint64_t timers_stolen, strands_taken; /* counted by the taker */
    _Atomic uint64_t syscalls_made, syscalls_avoided, fibers_run, busy_ns;
};

struct fs_sched {
    unsigned id;
    pthread_t thread;            /* carrier currently driving this sched */
    _Atomic int tid;             /* its kernel thread id, for the monitor */
    struct fs_fiber *cur;        /* fiber running now; NULL on the idle loop */
    struct fs_context idle_ctx;  /* the idle loop's context (g0) */
    struct fs_stack idle_stack;
    /* Thread pointer of the idle loop: the carrier thread's own TCB, or
     * one of its own when the thread's belongs to an adopted fiber
     * (tls.c). Written before the loop first runs; NULL when per-fiber
     * TLS is off. */
    void *idle_tp;
    /* The TCB of the fiber that adopted this sched's kernel thread (main),
     * which glibc lists as that thread's; NULL for a started carrier. For
     * the SIGSETXID handler (tls.c). Written before the sched starts. */
    void *adopted_tp;
    uint64_t user_local[FS_CARRIER_LOCAL_WORDS]; /* fs_carrier_local(); owner only */
    /* The runtime's own alternate signal stack for this carrier (fault.c),
     * FS_ALTSTACK_SIZE bytes, or NULL; set before the carrier runs fibers. */
    void *altstack;

    /* Run queues. local and tick: owner only. runnext: set and taken by
     * the owner with atomic exchanges, so that the monitor can take a
     * movable fiber out of a stuck carrier's slot (fs__runnext_steal). */
    _Atomic(struct fs_fiber *) runnext; /* woken by this carrier; runs next */
    uint32_t runnext_streak;     /* runnext picks in a row (fairness cap) */
    struct fs_fifo local;        /* pinned fibers readied on this carrier */
    struct fs_ring ring;         /* stealable fibers */
    struct fs_inbox inbox;       /* pinned fibers readied elsewhere */
    uint32_t tick;
    bool want_poll;              /* a poll is due; the idle loop does it */

    /* Post-switch action, run by whatever context runs next on this sched
     * (fs__sched_after_switch). Owner only. */
    void (*after_fn)(struct fs_sched *s, struct fs_fiber *prev);
    struct fs_fiber *after_prev;
    bool (*commit_fn)(void *);
    void *commit_arg;
    fs_park_token commit_tok;

    /* Netpoller: this sched's epoll instance (see netpoll.c). */
    int epfd;
    int wakefd;                  /* eventfd in epfd, written by kicks */
    /* fs_now() of the last epoll_wait. Atomic (relaxed): the monitor
     * polls a stuck carrier's epoll too (fs__netpoll_foreign). */
    _Atomic int64_t last_poll;
    /* Fds registered in epfd besides wakefd: incremented by this sched's
     * own thread as it registers one (netpoll.c registers an fd in the
     * epoll of the carrier it is first waited on from), decremented by
     * whoever closes one. While it is 0 no event but a kick can come, so
     * the idle search makes no non-blocking poll (fs__find_runnable). */
    _Atomic unsigned nfds;

    /* Sleeping protocol (see fs__sched_kick). */
    _Atomic int sleeping;        /* 1 while in, or about to enter, epoll_wait */
    _Atomic int notified;        /* a kick is in flight; suppresses duplicates */
    _Atomic int spinning;        /* looking for work to steal */

    /* Timers: heap of parked fibers' deadlines, under timer_lock; the
     * owner reads next_deadline without it. */
    fs_spinlock timer_lock;
    struct fs_timer_heap timers;
    _Atomic int64_t next_deadline;

    /* Handoff carriers (monitor.c). An extra sched is driven by a spare
     * kernel thread the monitor started while some carrier was stuck.
     * retired: it takes no new work (no stealing, no global queue, not a
     * wakep target) but still runs the fibers pinned to it. */
    bool extra;
    /* Runs only the fibers pinned to it (the adopted fiber): takes no new
     * work, steals nothing, gets no wakep token (cfg.adopt_exclusive).
     * Set before the sched is published (fs_adopt_thread, fork child). */
    bool exclusive;
    /* The monitor judged this carrier stuck at its last sample (no switch
     * for 10 ms, computing or blocked in the kernel); cleared at the next
     * sample that sees a switch. While set, what its fiber wakes goes to
     * the global queue, not to this carrier's runnext (monitor.c). */
    _Atomic bool mon_stuck;
    _Atomic int retired;
    _Atomic int defunct;         /* its thread could not be started */

    /* fs_now() when the carrier last came out of epoll_wait (or started):
     * the start of the busy stretch that st.busy_ns does not hold yet (it
     * is added at the next sleep). Written by the owner; atomic because
     * fs_carrier_stats adds the stretch in progress from any thread. */
    _Atomic int64_t busy_since;
    uint32_t rng;                /* victim selection */
    struct fs_sched_stats st;
    /* Owner: the other carrier's runnext occupant it saw last, with that
     * carrier's switch count and when (sched.c, fs__runnext_strand). */
    struct fs_strand_seen {
        struct fs_sched *v;
        struct fs_fiber *f;
        uint64_t switches;
        int64_t since;
    } strand;
#ifdef FS_TSAN
    void *tsan;                  /* TSan fiber of the idle loop (tsan.h) */
#endif
#ifdef FS_ASAN
    void *asan_fake;             /* the idle loop's fake stack while a fiber runs (asan.h) */
    const void *asan_idle_lo;    /* the stack the idle loop runs on */
    size_t asan_idle_size;
#endif
} __attribute__((aligned(64)));

/* The TSan fiber of a fiber, or of a sched's idle loop (tsan.h). Without
 * TSan the field does not exist: reads give NULL, writes vanish (and do
 * not evaluate v). */
#ifdef FS_TSAN
#define FS_TSAN_FIBER(p) ((p)->tsan)
#define FS_TSAN_SET_FIBER(p, v) ((p)->tsan = (v))
#else
#define FS_TSAN_FIBER(p) ((void *)0)
#define FS_TSAN_SET_FIBER(p, v) ((void)0)
#endif

/* ---- the runtime --------------------------------------------------------- */

struct fs_runtime {
    _Atomic int state;           /* 0 off, 1 starting, 2 running */
    struct fs_config cfg;
    unsigned nsched;             /* configured carriers (+1 with cfg.adopt_exclusive) */
    _Atomic unsigned nexclusive; /* scheds that are exclusive (0 or 1) */
    bool migrate;                /* started fibers may move (cfg.migrate resolved at init) */
    unsigned nextra_max;         /* handoff carriers the monitor may add */
    struct fs_sched **scheds;    /* nsched + nextra_max slots */
    /* Scheds driven so far: the configured ones start first, in order;
     * handoff carriers are appended after them (never before all
     * configured ones run) and never removed, so scheds[i] for i below
     * nstarted stays valid. */
    _Atomic unsigned nstarted;
    _Atomic uint64_t handoffs;   /* handoff carriers activated */
    uint64_t carrier_sigmask;    /* mask the configured carriers started with */
    fs_spinlock start_lock;

    _Atomic int nsleeping;       /* scheds in (or entering) epoll_wait */
    _Atomic int nspinning;       /* scheds looking for work to steal */

    fs_spinlock global_lock;    /* protects global */
    struct fs_fifo global;       /* unstarted fibers from non-carriers, overflow */
    _Atomic uint32_t global_len; /* racy hint, read without the lock */

    _Atomic uint64_t next_id;
    _Atomic uint64_t created, live, peak;

    fs_spinlock all_lock;       /* protects the all-fibers list */
    struct fs_fiber *all_fibers;
};

extern struct fs_runtime fs__g;

/* The sched driven by the calling kernel thread, or NULL. Read through the
 * thread pointer on every access; never cache its address across a switch. */
extern __thread struct fs_sched *fs__tls_sched __attribute__((tls_model("initial-exec")));

static inline struct fs_sched *fs__cur_sched(void)
{
    return fs__tls_sched;
}

static inline void fs__stat_inc(_Atomic uint64_t *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}
static inline void fs__stat_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* runtime.c */
int fs__ensure_init(void);
int fs__start_carriers(void);
typedef int (*fs_pthread_create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
/* The pthread_create the runtime starts its own threads with (never the
 * shim's; TSan's interceptor under TSan). Any thread. */
fs_pthread_create_fn fs__libc_pthread_create(void);

/* sched.c */
void fs__ready(struct fs_fiber *f);
void fs__sched_kick(struct fs_sched *s);
void fs__wakep(void);
void fs__switch_out(struct fs_sched *s, struct fs_fiber *self, bool may_poll);
/* A dying fiber's last switch: to the idle loop, which completes its exit
 * (s->after_fn) on the carrier's own TLS, never on another fiber's. */
void fs__switch_out_idle(struct fs_sched *s, struct fs_fiber *self) __attribute__((noreturn));
void fs__carrier_main_loop(struct fs_sched *s) __attribute__((noreturn));
int fs__sched_init(struct fs_sched *s, unsigned id);
int fs__sched_make_idle_stack(struct fs_sched *s);
void fs__fiber_start_hook(void);
void fs__run_interrupt_hook(struct fs_fiber *f);
void fs__global_push(struct fs_fiber *f);

struct fs_fiber *fs__runnext_steal(struct fs_sched *s);

/* park.c */
extern void (*fs__interrupt_hook)(struct fs_fiber *f);
extern _Atomic bool fs__hook_always;

static inline bool fs__hook_due(struct fs_fiber *f)
{
    return atomic_load_explicit(&f->interrupt, memory_order_relaxed) ||
           atomic_load_explicit(&fs__hook_always, memory_order_relaxed);
}
int fs__timers_reserve(uint64_t live);
void fs__timers_reserve_sched(struct fs_sched *s);
void fs__timers_reserve_reset(void);
int64_t fs__now_coarse(void);
bool fs__unpark_as(struct fs_fiber *f, fs_park_token tok, int how);
unsigned fs__timers_run(struct fs_sched *s, int64_t now);

/* timer_watch.c: idle carriers fire the due timers of busy ones. */
bool fs__timers_steal(struct fs_sched *s);
int64_t fs__timers_watch_begin(struct fs_sched *s);
void fs__timers_watch_end(struct fs_sched *s);
void fs__timers_watch_note(struct fs_sched *s, int64_t dl);
void fs__timers_watch_reset(void);

/* ---- CPU time of fibers (cputime.c) -------------------------------------
 *
 * A fiber's CPU time is the time it was the running fiber of a carrier,
 * read with the TSC at the switches the scheduler makes anyway: one rdtsc
 * per switch, charged to the fiber going out and started for the one
 * coming in. rdtsc, not clock_gettime: the switch costs about 20 ns and a
 * vDSO clock read would add as much; an invariant TSC (every x86-64 CPU
 * Linux runs a TSC clocksource on) ticks at a constant rate on every CPU.
 * Owner (the carrier switching) only. */

static inline uint64_t fs__cputicks(void)
{
    return __builtin_ia32_rdtsc();
}

/* f was switched in at now. */
static inline void fs__cpu_start(struct fs_fiber *f, uint64_t now)
{
    atomic_store_explicit(&f->cpu_since, now, memory_order_relaxed);
}

/* f stops running at now: add the run to its total. The sequence count
 * lets a reader on another thread see ticks and since from the same side
 * of the update (fs_fiber_cpu_ns); a TSC read before `since` on another
 * CPU (not synchronised, should never happen) adds nothing. */
static inline void fs__cpu_stop(struct fs_fiber *f, uint64_t now)
{
    uint64_t since = atomic_load_explicit(&f->cpu_since, memory_order_relaxed);
    uint64_t ran = now - since;
    if (FS_UNLIKELY((int64_t)ran < 0))
        ran = 0;
    uint32_t seq = atomic_load_explicit(&f->cpu_seq, memory_order_relaxed);
    atomic_store_explicit(&f->cpu_seq, seq + 1, memory_order_relaxed);
    /* release fence: a reader that sees the new ticks or since sees the odd
     * count (x86: a compiler barrier only) */
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&f->cpu_ticks,
                          atomic_load_explicit(&f->cpu_ticks, memory_order_relaxed) + ran,
                          memory_order_relaxed);
    atomic_store_explicit(&f->cpu_since, 0, memory_order_relaxed);
    /* release: the even count is seen only after both stores */
    atomic_store_explicit(&f->cpu_seq, seq + 2, memory_order_release);
}

/* fiber.c */
void fs__fiber_entry(void *arg) __attribute__((noreturn));
void fs__fiber_free(struct fs_fiber *f);
struct fs_fiber *fs__fiber_alloc_adopted(void);

/* netpoll.c */
int fs__netpoll_init(struct fs_sched *s);
/* Polls s's epoll instance; timeout_ns < 0 blocks, 0 polls. Readies the
 * fibers the events wake; returns how many were readied. */
int fs__netpoll(struct fs_sched *s, int64_t timeout_ns);

int fs__netpoll_foreign(struct fs_sched *s);

/* runtime.c: the calling thread's signal mask (raw, signals 1..64). */
uint64_t fs__sigmask_set(const uint64_t *set);

/* runtime.c: starts a handoff carrier; monitor thread only. */
struct fs_sched *fs__start_extra(void);

/* monitor.c */
extern _Atomic int fs__monitor_tried;
void fs__monitor_start(void);
uint64_t fs__monitor_harvests(void);
int64_t fs__thread_cpu_ns(int tid);
void fs__monitor_atfork_child(void);

/* futex.c */
void fs__futex_atfork_child(void);

/* fault.c */
void fs__fault_init(void);
int fs__fault_thread_init(struct fs_sched *s);

#endif
