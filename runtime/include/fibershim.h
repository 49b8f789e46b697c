/*
 * fibershim.h - the fibershim runtime's one public header.
 *
 * The runtime runs M:N fibers on a small pool of carrier kernel threads,
 * with an edge-triggered epoll netpoller and min-heap timers. It is usable
 * directly by C programs; libfibershim.so (shim/) builds on it to run
 * unmodified pthread programs as fibers.
 *
 * Conventions:
 *  - Functions return 0 (or a value >= 0) on success and a negative errno on
 *    failure. Nothing here sets errno.
 *  - Times are CLOCK_MONOTONIC nanoseconds (fs_now()). A deadline of
 *    FS_NO_DEADLINE means "wait forever"; a deadline in the past means
 *    "poll once, do not wait".
 *  - "Any thread" means a fiber, a carrier, or a plain kernel thread that is
 *    not a fiber. Calls marked "fiber only" return -EPERM elsewhere.
 */
#ifndef FIBERSHIM_H
#define FIBERSHIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FS_API __attribute__((visibility("default")))

#define FS_NO_DEADLINE INT64_MAX

/* A fiber's stack is, like a thread's, reserved and not committed: only
 * touched pages cost memory. Its default size is glibc's for a new thread
 * (see fs_default_stack_size) unless the configuration names one, within
 * [FS_MIN_STACK_SIZE, FS_MAX_STACK_SIZE]. */
#define FS_MIN_STACK_SIZE (16u * 1024u)
#define FS_MAX_STACK_SIZE (1024u * 1024u * 1024u)
#define FS_MAX_CARRIERS 1024u

typedef struct fs_fiber fs_fiber;

/* ---- configuration ---------------------------------------------------- */

enum fs_migrate { FS_MIGRATE_AUTO = 0, FS_MIGRATE_ON = 1, FS_MIGRATE_OFF = 2 };

struct fs_config {
    unsigned carriers;  /* carrier threads; 0 = from affinity and cgroup quota */
    size_t stack_size;  /* default stack size; 0 = fs_default_stack_size() at each spawn */
    /* Whether fibers that have run may move between carriers (stolen by
     * idle carriers, resumed by whichever carrier wakes them), as fibers
     * that have not run yet always may. enum fs_migrate:
     *  - FS_MIGRATE_AUTO (0, the default): they move when fibers have TLS
     *    of their own (fs_fiber_tls()), else they are pinned to the kernel
     *    thread they first ran on (they may hold addresses of its TLS);
     *  - FS_MIGRATE_ON (FIBERSHIM_MIGRATE=1): they move in both cases;
     *  - FS_MIGRATE_OFF (FIBERSHIM_MIGRATE=0): pinned.
     * Pinned whatever this says: adopted fibers (they are their kernel
     * thread) and fibers inside fs_pin(). */
    int migrate;
    /* One more sched than `carriers`, for the thread that adopts itself
     * first (fs_adopt_thread), which then runs only its own fiber and
     * fibers pinned to it: its kernel thread is never held by another
     * fiber, and never lends itself to one. The shim sets it: main keeps a
     * kernel thread of its own, as with plain pthreads (its thread id is
     * the process id, and glibc, the kernel and signals know main by it),
     * and a fiber stuck in a call the runtime cannot see never holds main
     * up. Without an adoption the extra sched is an ordinary carrier. */
    bool adopt_exclusive;
    /* Handoff: while carriers are stuck (a CPU-bound fiber, a call the
     * runtime cannot see) and work waits that no other carrier takes, the
     * monitor adds a spare carrier thread, at most handoff_max of them
     * (0: 64, or as many as carriers if more). They retire when the stuck
     * ones return. */
    unsigned handoff_max;
    bool handoff_off;   /* no spare carriers at all */
    /* Fibers share their carrier's TLS (__thread variables, errno, glibc's
     * per-thread state) instead of each having its own thread control
     * block and static TLS block, as a thread has (the default; the
     * runtime also falls back to shared TLS where glibc's layout is not
     * one it checked, see fs_fiber_tls). */
    bool fiber_tls_off;
    /* How long an idle carrier watches the run queues before it sleeps,
     * in nanoseconds, at most FS_MAX_IDLE_SPIN_NS: a wake that lands
     * meanwhile costs no eventfd write and no kernel wake-up of the
     * carrier. The spin ends early at the carrier's next timer, and a
     * carrier spins once per stretch of idleness, then sleeps until woken.
     * 0: the default, FS_DEFAULT_IDLE_SPIN_NS; FS_IDLE_SPIN_OFF: sleep at
     * once. On an idle 2-vCPU VM a cross-carrier wake took 22 us asleep
     * and 0.5 us with the default spin; on a shared, oversubscribed
     * machine spinning did not help (README, idle policy). */
    long idle_spin_ns;
};

/* The longest idle spin accepted (1 ms), the default (10 us), and the
 * fs_config value for none. */
#define FS_MAX_IDLE_SPIN_NS 1000000L
#define FS_DEFAULT_IDLE_SPIN_NS 10000L
#define FS_IDLE_SPIN_OFF (-1L)

/* Fills *cfg from FIBERSHIM_CARRIERS, FIBERSHIM_STACK_SIZE,
 * FIBERSHIM_MIGRATE, FIBERSHIM_HANDOFF_MAX (0 = off),
 * FIBERSHIM_IDLE_SPIN_NS and
 * FIBERSHIM_FIBER_TLS (0 = fiber_tls_off) (read with secure_getenv). On a bad value returns
 * -EINVAL and writes one line naming the variable, the value and what is
 * accepted into err. */
FS_API int fs_config_from_env(struct fs_config *cfg, char *err, size_t errlen);

/* The carrier count used when the configuration says 0: the CPUs in the
 * affinity mask, capped by the cgroup v2 cpu.max quota (rounded up). */
FS_API unsigned fs_default_carriers(void);

/* The stack size used when neither the spawner nor the configuration
 * names one: glibc's for a new thread with default attributes, that is
 * RLIMIT_STACK when the process started (2 MiB if unlimited), or what
 * pthread_setattr_default_np set since. Any thread. */
FS_API size_t fs_default_stack_size(void);

/* Starts the runtime with *cfg (NULL: defaults). Returns -EALREADY if it is
 * already running. Other calls start it on demand with fs_config_from_env()
 * values, so calling this is optional. Any thread. */
FS_API int fs_init(const struct fs_config *cfg);

/* Turns the calling kernel thread into a carrier whose current fiber keeps
 * running on the thread's own stack (the shim does this for main()). The
 * thread's fiber is returned in *out. Plain thread only; once per thread. */
FS_API int fs_adopt_thread(fs_fiber **out);

/* fork() support, for pthread_atfork (the shim registers them). In the
 * child, only the forking fiber survives, as only the forking thread does
 * with pthreads: the runtime is rebuilt around it (new epoll instances,
 * new carriers on demand, its kernel thread as carrier 0). A child forked
 * by a thread that is not a fiber gets a runtime that restarts from
 * scratch at its next use. */
FS_API void fs_atfork_prepare(void);
FS_API void fs_atfork_parent(void);
FS_API void fs_atfork_child(void);

/* ---- fibers ----------------------------------------------------------- */

struct fs_spawn_attr {
    size_t stack_size;   /* 0: the configured default */
    void *stack_addr;    /* lowest address of a caller-owned stack, or NULL */
    /* Inaccessible bytes directly below the stack, as with
     * pthread_attr_setguardsize: rounded up to pages, and the runtime may
     * keep more (at least 64 KiB). 0: glibc's default for a new thread
     * (one page unless pthread_setattr_default_np changed it). Ignored for
     * a caller-owned stack. */
    size_t guard_size;
    bool no_guard;       /* no guard at all (pthread_attr_setguardsize(0)) */
    bool detached;       /* no join; resources freed at exit */
    /* Its fs_fiber_local() word, set before it can run anywhere (an
     * interrupt aimed at it before it first ran finds it there). */
    void *local;
    /* If set, called as ready(f, ready_arg) on the spawning thread once f
     * exists (its stack and thread control block included) and before it
     * can run anywhere: a layer above publishes f's identity there
     * (fs_fiber_tcb), as pthread_create stores the new thread's id before
     * the thread starts. It must not block. Not called when fs_spawn
     * fails. */
    void (*ready)(fs_fiber *f, void *ready_arg);
    void *ready_arg;
};

/* Creates a fiber running fn(arg). It starts on the spawner's carrier
 * (runnext) and may be stolen by an idle carrier until it first runs.
 * Returns -EAGAIN when no stack or fiber memory can be had (as for a
 * stack size too large to map), -EINVAL for a caller-owned stack under 4
 * KiB. Any thread. */
FS_API int fs_spawn(fs_fiber **out, void *(*fn)(void *), void *arg,
                    const struct fs_spawn_attr *attr);

/* Waits until f has exited and frees it; *ret gets fn's return value.
 * deadline: FS_NO_DEADLINE to wait forever, 0 to try once (-EBUSY if not
 * exited), else an absolute fs_now() time (-ETIMEDOUT). -EINTR when
 * fs_interrupt ended the wait (f is still joinable: call again to wait
 * on). -EINVAL if f is detached or already joined, -EDEADLK if f is the
 * caller. Any thread. */
FS_API int fs_join(fs_fiber *f, void **ret, int64_t deadline);

/* Marks f detached: it is freed when it exits. -EINVAL if already. */
FS_API int fs_detach(fs_fiber *f);

/* Ends the calling fiber with value ret, as if its function returned. */
FS_API __attribute__((noreturn)) void fs_exit(void *ret);

/* The calling fiber, or NULL on a thread that is not running one. */
FS_API fs_fiber *fs_self(void);

/* A stable, unique id (never reused within a process). */
FS_API uint64_t fs_fiber_id(const fs_fiber *f);

/* Whether f is running on a carrier at this instant: a hint for spinning
 * (it may stop the next instant). f may be a fiber that has ended: fiber
 * records stay mapped, so the answer is then only stale, never a fault. */
FS_API bool fs_fiber_running(const fs_fiber *f);

/* The fiber's usable stack: [*lo, *lo + *size), every byte of it
 * writable (the fiber's own record and first frames live at its top, as a
 * thread's descriptor and TLS do in glibc's). A runtime-allocated stack
 * has its guard directly below lo. */
FS_API void fs_fiber_stack(const fs_fiber *f, void **lo, size_t *size);

/* The guard size the fiber's spawner asked for, rounded up to pages, as
 * pthread_getattr_np reports it: 0 for none and for a caller-owned stack.
 * The inaccessible range below the stack may be larger (see
 * fs_spawn_attr.guard_size). */
FS_API size_t fs_fiber_stack_guard(const fs_fiber *f);

/* Whether f was made by fs_adopt_thread: it runs on its kernel thread's
 * own stack and keeps the thread's own thread control block. */
FS_API bool fs_fiber_adopted(const fs_fiber *f);

/* f's thread control block: with per-fiber TLS (fs_fiber_tls()) the
 * address of its glibc struct pthread, its thread pointer (fs base) while
 * it runs, which is what glibc's own pthread_self() returns on it (an
 * adopted fiber's is its kernel thread's); NULL without per-fiber TLS.
 * Fixed from the ready hook of its spawn (fs_spawn_attr.ready) until f is
 * freed; a later fiber on the same stack gets the same address, as a
 * glibc thread on a cached stack does. Any thread. */
FS_API void *fs_fiber_tcb(const fs_fiber *f);

/* The thread id of the carrier running f at this moment, or 0 when f is
 * not running: a snapshot, f may switch out at once. Any thread. */
FS_API int fs_fiber_running_tid(const fs_fiber *f);

/* Keeps f on the kernel thread it runs on until as many fs_unpin(f): for
 * a fiber that holds something the kernel ties to a thread id (a robust
 * or priority-inheritance mutex of glibc's, a PI futex), as Go's
 * LockOSThread. f must be the calling fiber for fs_pin; fs_unpin may be
 * called by any thread (the holder's mutex released by another). Counted,
 * never below zero. No effect on adopted fibers, which never move. */
FS_API void fs_pin(fs_fiber *f);
FS_API void fs_unpin(fs_fiber *f);

/* Per-fiber name for dumps (copied, truncated to 15 bytes). */
FS_API void fs_fiber_set_name(fs_fiber *f, const char *name);
FS_API void fs_fiber_get_name(const fs_fiber *f, char *buf, size_t len);

/* CPU time f has used, in nanoseconds: the time it was the running fiber
 * of a carrier, measured with the TSC at every switch (so it includes any
 * time its carrier's kernel thread was preempted, or blocked in a call the
 * runtime does not see, while f ran). Counts on while f runs. f must not
 * have been freed (joined, or exited detached). Any thread. */
FS_API int64_t fs_fiber_cpu_ns(const fs_fiber *f);

/* One word of per-fiber storage for the layer above (the shim keeps its
 * thread-specific data there). */
FS_API void *fs_fiber_local(const fs_fiber *f);
FS_API void fs_fiber_set_local(fs_fiber *f, void *p);

/* Whether fibers have TLS of their own: a glibc thread control block and
 * static TLS block each, switched with the fs base at every fiber switch.
 * False when the configuration turned it off, in a sanitizer build, or
 * when the running glibc's layout is not one the runtime checked (it then
 * said why on stderr at fs_init): fibers then share their carrier's TLS.
 * Any thread, once the runtime runs. */
FS_API bool fs_fiber_tls(void);

/* Runs the calling fiber's C++ thread_local destructors (registered with
 * __cxa_thread_atexit_impl) now. glibc runs them when a thread ends,
 * before its thread-specific-data destructors: a layer that runs TSD
 * destructors itself calls this first; fs_exit runs any registered since.
 * No-op off a fiber, on an adopted fiber and without per-fiber TLS. */
FS_API void fs_tls_run_dtors(void);

/* FS_CARRIER_LOCAL_WORDS words of per-carrier storage for the layer
 * above, or NULL on a thread that is not a carrier. A carrier keeps its kernel thread for
 * life, so this is per kernel thread, as a __thread variable is only
 * without per-fiber TLS (the shim caches the carrier's real signal mask
 * here). Only the carrier itself (its fibers, its idle loop) may use it. */
#define FS_CARRIER_LOCAL_WORDS 5
FS_API uint64_t *fs_carrier_local(void);

/* The runtime's own alternate signal stack of the calling carrier (the
 * one its stack-overflow report runs on): *sp and *size, or NULL and 0
 * where it has none. What a carrier's kernel thread has as its
 * alternate stack is the layer above's business once fibers run (the
 * shim gives each fiber its own); it must leave this one installed while
 * a fiber without one of its own runs, or guard faults go unreported.
 * Carriers only. */
FS_API void fs_carrier_altstack(void **sp, size_t *size);

/* Gives up the carrier to other runnable fibers. Fiber: yields; plain
 * thread: sched_yield(). */
FS_API void fs_yield(void);

/* ---- time ------------------------------------------------------------- */

FS_API int64_t fs_now(void);

/* Sleeps until fs_now() >= deadline. Never returns early. 0, or -EPERM off
 * a fiber (callers on plain threads use clock_nanosleep). Fiber only. */
FS_API int fs_sleep_until(int64_t deadline);

/* ---- parking: the one mechanism everything blocks with ---------------- */

enum fs_park_reason {
    FS_PARK_READ,
    FS_PARK_WRITE,
    FS_PARK_ACCEPT,
    FS_PARK_CONNECT,
    FS_PARK_POLL,
    FS_PARK_SLEEP,
    FS_PARK_MUTEX,
    FS_PARK_COND,
    FS_PARK_RWLOCK,
    FS_PARK_SEM,
    FS_PARK_BARRIER,
    FS_PARK_ONCE,
    FS_PARK_JOIN,
    FS_PARK_YIELD,
    FS_PARK_OTHER,
    FS_PARK_FUTEX,
    FS_PARK_NREASONS
};

/* A fiber's park token: identifies one park, so a late unpark aimed at an
 * earlier park can never wake a later one. */
typedef uint64_t fs_park_token;

/* Starts a park of the calling fiber and returns its token. The caller then
 * publishes (fiber, token) where a waker will find it, and calls fs_park().
 * Fiber only. */
FS_API fs_park_token fs_park_prepare(void);

/* Parks the calling fiber. After the fiber is switched out and its stack is
 * no longer in use, commit(arg) runs on the carrier (release a lock, publish
 * to a slot); if commit returns false the park is undone at once and
 * fs_park() returns 0. Returns 0 when woken by fs_unpark() and -ETIMEDOUT
 * when the deadline passed first. A park never returns early: a wake aimed
 * at it is its only cause besides the deadline. errno is preserved.
 * Fiber only. */
FS_API int fs_park(fs_park_token tok, enum fs_park_reason why, const void *wait_obj,
                   int64_t deadline, bool (*commit)(void *arg), void *arg);

/* Wakes fiber f if it is still in the park named by tok. Returns true if
 * this call woke it, false if that park already ended (timed out, or woken
 * by someone else). Any thread; never blocks; no syscall unless f's carrier
 * is asleep. */
FS_API bool fs_unpark(fs_fiber *f, fs_park_token tok);

/* Interrupts f, as a signal interrupts a thread: if f is parked (I/O,
 * poll, sleep, a lock, condition, semaphore, barrier, once, futex or join
 * wait), that park ends at once and fs_park() returns -EINTR (lock waits
 * then wait again: shim/waitq.c; fs_join returns -EINTR); a park for a
 * handed-off call (FS_PARK_OTHER) is not cut short. Either way f's hook
 * runs when f next runs, once the park is over. Any thread. */
FS_API void fs_interrupt(fs_fiber *f);

/* Installs a hook the runtime calls on the fiber's own stack each time a
 * fiber resumes (or first starts) with an interrupt pending; a fiber that
 * resumes inside fs_park() runs it as fs_park() returns, once the park is
 * over, so the hook may park in turn. The shim uses it to deliver signals
 * sent to a fiber. Set once, before fibers exist. */
FS_API void fs_set_interrupt_hook(void (*hook)(fs_fiber *f));

/* From now on, run the hook at every resume, not only with an interrupt
 * pending (the shim turns this on once a fiber sets its own signal mask,
 * which the carrier's mask must follow). One-way. */
FS_API void fs_hook_every_switch(void);

/* A waiter that works on any thread: a fiber parks, a plain thread sleeps
 * on a futex. Wait queues in the shim are lists of these. */
struct fs_waiter {
    fs_fiber *fiber;          /* NULL for a plain thread */
    fs_park_token tok;        /* the fiber's park token */
    uint32_t futex;           /* plain threads: 0 waiting, 1 woken */
    void *next, *prev;        /* list links for the owner of the queue */
    uintptr_t data;           /* owner's use (e.g. requested mode) */
};

/* Prepares w for the calling thread. Any thread. */
FS_API void fs_waiter_prepare(struct fs_waiter *w);

/* Blocks until fs_waiter_wake(w) or the deadline. For fibers commit runs as
 * for fs_park(); for plain threads it runs before the futex wait. Returns 0
 * or -ETIMEDOUT (the caller must then take w out of its queue itself, and
 * a concurrent wake may still have fired: check fs_waiter_woken()); a
 * fiber's also -EINTR as fs_park() does, a plain thread's only for
 * FS_PARK_SEM, when a signal handler interrupted its futex wait and the
 * kernel did not restart it (then as for -ETIMEDOUT, even if a wake
 * fired meanwhile: fs_waiter_woken() says so, and the caller passes that
 * wake on). */
FS_API int fs_waiter_wait(struct fs_waiter *w, enum fs_park_reason why, const void *wait_obj,
                          int64_t deadline, bool (*commit)(void *arg), void *arg);

/* Wakes w. Returns false if w had already timed out (wake someone else). */
FS_API bool fs_waiter_wake(struct fs_waiter *w);
FS_API bool fs_waiter_woken(const struct fs_waiter *w);

/* ---- futexes ------------------------------------------------------------ */

/*
 * A futex wait table in the process, keyed by address as the kernel keys
 * futexes, so that fibers can wait on 32-bit words without a kernel thread
 * each. A fiber's wait parks it here; a plain thread's goes to the kernel.
 * Every wake (any thread) wakes the table's waiters first, then passes
 * what is left of its count to the kernel, so kernel waiters on the same
 * word (plain threads, calls the runtime does not see) are woken too, and
 * the result is the count the kernel would give. Counts follow the kernel:
 * a wake for n <= 0 wakes one.
 *
 * Only wakes made through these functions reach the table: a word that is
 * waited on here must not be woken only by another process or by a
 * FUTEX_WAKE the runtime cannot see (an inline syscall instruction).
 * Memory shared with another process is therefore waited on in the kernel.
 *
 * flags: FS_FUTEX_SHARED keys the word as an operation without
 * FUTEX_PRIVATE_FLAG (the kernel keeps the two apart on private memory);
 * FS_FUTEX_REALTIME says a deadline is CLOCK_REALTIME nanoseconds (else
 * fs_now()'s clock). A misaligned address or a bitset of 0 is -EINVAL.
 */
#define FS_FUTEX_SHARED 1u
#define FS_FUTEX_REALTIME 2u

/* FUTEX_WAIT_BITSET: if *uaddr == val, waits until woken by a wake whose
 * bitset shares a bit with bitset, or the absolute deadline passes. The
 * compare and the enqueue are atomic with respect to every wake below.
 * Returns 0 (woken; spurious wakes are possible, as with the kernel's),
 * -EAGAIN (*uaddr != val), -ETIMEDOUT, -EINTR (fs_interrupt), -EINVAL.
 * A deadline already past still compares first (-EAGAIN wins). Fiber:
 * parks (FS_PARK_FUTEX); plain thread: the kernel's FUTEX_WAIT_BITSET.
 * Any thread. */
FS_API int fs_futex_wait(uint32_t *uaddr, uint32_t val, uint32_t bitset, unsigned flags,
                         int64_t deadline);

/* FUTEX_WAKE_BITSET: wakes up to n waiters (one if n <= 0) whose bitset
 * shares a bit with bitset. Returns how many, or a negative errno from
 * the kernel when it woke none here. Any thread; never blocks. */
FS_API int fs_futex_wake(uint32_t *uaddr, int n, uint32_t bitset, unsigned flags);

/* FUTEX_REQUEUE, or FUTEX_CMP_REQUEUE when cmpval is not NULL (-EAGAIN if
 * *uaddr != *cmpval): wakes up to nr_wake waiters of uaddr and moves up to
 * nr_requeue more to uaddr2. Returns woken + moved, -EINVAL for a negative
 * count. Table waiters are moved in the table, kernel waiters in the
 * kernel; if the word changes between the two compares, the kernel's
 * share is woken instead of moved (a spurious wake, which every futex
 * user tolerates). Any thread. */
FS_API int fs_futex_requeue(uint32_t *uaddr, int nr_wake, int nr_requeue, uint32_t *uaddr2,
                            const uint32_t *cmpval, unsigned flags);

/* FUTEX_WAKE_OP: atomically applies op (FUTEX_OP() encoding) to *uaddr2,
 * wakes up to nr_wake waiters of uaddr and, if the op's comparison held for
 * the old value, up to nr_wake2 of uaddr2 (n <= 0 wakes one, as in the
 * kernel). Returns the number woken; -ENOSYS for an unknown operation
 * (*uaddr2 unchanged) or comparison (changed, as in the kernel). Any
 * thread. */
FS_API int fs_futex_wake_op(uint32_t *uaddr, int nr_wake, uint32_t *uaddr2, int nr_wake2,
                            uint32_t op, unsigned flags);

/* ---- the netpoller ---------------------------------------------------- */

/*
 * Readiness is edge-triggered and latched per fd and direction. Each edge
 * bumps a counter; an I/O wrapper snapshots the counter (fs_fd_edges)
 * before trying the call, and after EAGAIN waits for an edge newer than
 * the snapshot (fs_wait_fd). An edge that lands between the failed call
 * and the park is therefore never lost, and parking again costs no
 * epoll_ctl: an fd is added to epoll once, at its first wait, with
 * EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLPRI|EPOLLET, and leaves it when the
 * kernel closes the file.
 */
#define FS_POLL_READ 1u
#define FS_POLL_WRITE 2u

/* Or'ed into fs_wait_fd's dir by a caller whose own attempt, made after
 * the snapshot, failed with EAGAIN (or who found no HUP, ERR or RDHUP bit
 * latched after taking the snapshot). The kernel reports a hang-up or a
 * pending error to a read or write rather than EAGAIN, so such a bit,
 * latched before, is old news for this wait (an error reported and
 * cleared since, a socket error queue that reads do not empty): only a
 * newer edge ends it. Without the flag, a latched bit ends the wait at
 * once, and a caller that retried into EAGAIN again would spin. */
#define FS_POLL_TRIED 0x100u

/* State bits of an fd, as far as the netpoller knows (no syscall). HUP,
 * ERR, RDHUP and PRI are set by edges and cleared only by what proves
 * them gone (fs_fd_not_ready) or by close. */
#define FS_FD_READABLE 0x01u   /* a read edge came after the last drain */
#define FS_FD_WRITABLE 0x02u   /* a write edge came after the last drain */
#define FS_FD_RDHUP 0x04u      /* peer shut down its sending side */
#define FS_FD_HUP 0x08u        /* hung up */
#define FS_FD_ERR 0x10u        /* error pending */
#define FS_FD_PRI 0x20u        /* urgent data */
#define FS_FD_REGISTERED 0x40u /* in an epoll set: the bits above are live */
#define FS_FD_PRI_SEEN 0x80u   /* urgent data came at least once: kept until close */

/* The edge counter of fd in direction dir. Any thread; no syscall. */
FS_API uint32_t fs_fd_edges(int fd, unsigned dir);

/* Waits until an edge newer than `since` (a value of fs_fd_edges taken
 * before the failed I/O) arrives in direction dir, or the fd hangs up or
 * errs (unless dir has FS_POLL_TRIED: then only the edge). Returns 0 when
 * the I/O should be retried, -ETIMEDOUT at the deadline, -EBADF if
 * fs_fd_close() ran while waiting, -EPERM if epoll refuses the fd
 * (regular files), or another negative errno from epoll_ctl. why names
 * the wait in stats and dumps (FS_PARK_READ, _WRITE, _ACCEPT, _CONNECT).
 * Fiber only. */
FS_API int fs_wait_fd(int fd, unsigned dir, uint32_t since, int64_t deadline,
                      enum fs_park_reason why);

/* Records that an I/O attempt made after snapshot `since` proved fd not
 * ready in direction dir (EAGAIN, or a short read on a stream). Clears the
 * READABLE/WRITABLE bit unless a newer edge came meanwhile. */
FS_API void fs_fd_drained(int fd, unsigned dir, uint32_t since);

/* Records that the kernel, asked after snapshots rsince and wsince (values
 * of fs_fd_edges for FS_POLL_READ and FS_POLL_WRITE), reported none of
 * `bits` (FS_FD_READABLE, _WRITABLE, _RDHUP, _HUP, _ERR, _PRI) for fd: a
 * poll() that returned 0 proves it for the events it was asked, and for
 * hang-up and error always. Clears them, except those an edge that came
 * since could have set. Any thread. */
FS_API void fs_fd_not_ready(int fd, unsigned bits, uint32_t rsince, uint32_t wsince);

/* The fd's state bits (FS_FD_*), without a syscall; 0 if never seen. */
FS_API unsigned fs_fd_state(int fd);

/* Registers fd with the calling carrier's epoll if it is not yet, and
 * harvests its initial readiness; returns its state bits, or -EPERM /
 * -EBADF from epoll_ctl. Fiber only. */
FS_API int fs_fd_probe(int fd);

/* Harvests the calling carrier's pending epoll events without blocking,
 * so fs_fd_state() is current (a carrier busy running fibers harvests
 * only between them). Costs one epoll_wait. Fiber only; no-op elsewhere. */
FS_API void fs_netpoll_now(void);

/* Waits until any fds[i] has a bit of masks[i] (FS_FD_*) set, or the
 * deadline. HUP and ERR always count. Returns 0 or -ETIMEDOUT; the caller
 * then reads fs_fd_state(). Every fd must have been probed. Fiber only. */
FS_API int fs_wait_fds(const int *fds, const unsigned *masks, int n, int64_t deadline);

/* Must be called before fd is closed (or replaced by dup2/dup3): wakes
 * every fiber waiting on fd with -EBADF and forgets its state, so events
 * still in flight for the old file are recognised as stale and dropped.
 * Any thread. */
FS_API void fs_fd_close(int fd);

/* True for the runtime's own fds (epoll instances, eventfds), which sit at
 * the top of the fd range; the shim keeps the program from closing them. */
FS_API bool fs_fd_is_internal(int fd);

/* Makes fd one of those: moves it (F_DUPFD_CLOEXEC, closing fd) near the
 * top of the RLIMIT_NOFILE range, so the program's own fds keep the
 * numbers they would have without the runtime (a program that dup2s onto
 * fd 3 or calls closefrom(3) must not hit one of ours), and marks it
 * internal. Returns the new fd (fd itself if it could not move). */
FS_API int fs_fd_hide(int fd);

/* The lowest internal fd, INT_MAX if none: every fd below it is the
 * program's. */
FS_API int fs_fd_internal_lowest(void);

/* ---- statistics ------------------------------------------------------- */

struct fs_stats {
    uint64_t fibers_created;
    uint64_t fibers_live;
    uint64_t fibers_peak;
    uint64_t switches;
    uint64_t steals;           /* fibers taken from other carriers */
    uint64_t spins;            /* carrier searches for work before sleeping */
    uint64_t carrier_sleeps;
    uint64_t carrier_wakes;    /* wake-ups sent to sleeping carriers */
    uint64_t parks[FS_PARK_NREASONS];
    uint64_t epoll_wait_calls;
    uint64_t epoll_ctl_calls;
    uint64_t timers_armed;
    uint64_t timers_fired;
    uint64_t timers_stolen;    /* due timers of a busy carrier fired by an idle one */
    uint64_t strands_taken;    /* fibers taken from the runnext slot of a carrier whose
                                * fiber readied them and went on running */
    uint64_t syscalls_made;    /* I/O syscalls issued on behalf of fibers */
    uint64_t syscalls_avoided; /* I/O attempts skipped because fd known not ready */
    uint64_t monitor_harvests; /* epoll harvests the monitor made for a stuck carrier */
    uint64_t handoffs;         /* spare carriers activated for stuck ones */
    unsigned carriers;         /* configured carriers */
    unsigned extra_carriers;   /* spare (handoff) carriers started so far */
    bool fiber_tls;            /* fs_fiber_tls() */
};

/* Counts, on the calling carrier, an I/O syscall made for a fiber, or
 * one avoided because the netpoller knew the fd was not ready. Cheap (no
 * atomic read-modify-write); no-ops off a carrier. */
FS_API void fs_count_syscall(void);
FS_API void fs_count_avoided(void);

/* Sums the counters of every carrier. Values are a snapshot, not atomic as
 * a whole. Any thread. */
FS_API void fs_stats_get(struct fs_stats *st);

/* Per-carrier view, for balance: fibers run and nanoseconds busy. i <
 * carriers + extra_carriers (spare carriers come after the configured
 * ones). Returns -EINVAL past the last one. */
struct fs_carrier_stats {
    uint64_t fibers_run;     /* fibers started on this carrier */
    uint64_t busy_ns;        /* wall time not asleep in epoll_wait (running fibers,
                              * looking for them, or preempted meanwhile) */
    uint64_t cpu_ns;         /* CPU time of the kernel thread driving it now */
    uint64_t switches;
    uint32_t runq_len;
    bool sleeping;
    bool extra;              /* a spare carrier started for handoff */
    bool retired;            /* spare, taking no new work */
};
FS_API int fs_carrier_stats(unsigned i, struct fs_carrier_stats *cs);

FS_API const char *fs_park_reason_name(enum fs_park_reason why);

/* Writes every fiber to fd: id, name, state, what it waits on and for how
 * long, and a symbolized backtrace of each parked fiber's stack (libunwind).
 * Meant for a monitor thread, never a signal handler: it takes the
 * runtime's fiber-list lock. Fibers keep running meanwhile; a fiber woken
 * during the dump is shown as it was when its backtrace was taken. */
FS_API void fs_dump(int fd);

/* Loads what fs_dump needs for backtraces (libunwind, with dlopen), if
 * not yet done; true if backtraces are available. fs_dump does it itself
 * at its first call, but dlopen allocates, and a dump is wanted most when
 * the program is stuck, perhaps holding its malloc's lock in a parked
 * fiber: a monitor thread calls this when it starts. */
FS_API bool fs_dump_prepare(void);

#ifdef __cplusplus
}
#endif
#endif /* FIBERSHIM_H */
