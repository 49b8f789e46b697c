/*
 * monitor.c - the system monitor (Go's sysmon): watches the carriers for
 * one that is stuck, running the same fiber or blocked in a call the
 * runtime cannot see, and hands that carrier's work to others.
 *
 * A stuck carrier holds three kinds of work hostage:
 *  - readiness in its epoll instance (an fd is harvested by the carrier
 *    whose epoll holds it): the monitor harvests it. Waking is thread-safe
 *    (fs_unpark from any thread); a woken fiber goes to its own carrier's
 *    inbox if it is pinned, else to the global queue;
 *  - its timers: the monitor fires the due ones, with the same result;
 *  - fibers that may move (never run yet, or migration on), in its ring
 *    and in the global queue: other carriers steal them, if they have
 *    time. When fewer than the configured number of carriers can take
 *    work (the rest are stuck) and such work waits, the monitor starts a
 *    spare carrier (a handoff carrier: its own sched, driven by a new
 *    kernel thread), which steals it. This is Go's handoffp, for the part
 *    of a sched that may change threads. When the stuck carrier returns,
 *    there is one carrier too many, and the monitor retires a spare: it
 *    takes no new work, runs only the fibers that started on it (pinned
 *    there, like any started fiber) and sleeps once they are gone, until
 *    the monitor needs it again. Spares are bounded by
 *    FIBERSHIM_HANDOFF_MAX (default: as many as carriers).
 *
 *  - the fiber in its runnext slot, if that one may move (the peer a
 *    handler answered just before it got stuck, typically): the monitor
 *    takes it out of the slot with a compare-and-swap (sched.c).
 *
 * What stays with the stuck carrier: fibers that already ran there are
 * pinned to its kernel thread (internal.h) and wait for it, unless
 * migration is on. The README says what this means for a
 * handler stuck in DNS (nothing: getaddrinfo waits on an offload thread).
 *
 * Stuck means: no switch for 10 ms, and the thread either computed most
 * of the time or is blocked in the kernel; a thread that was merely
 * preempted gets no spare (fs__mon_judge).
 *
 * Cost: a sample every 5 ms while some carrier is busy, backing off to
 * 50 ms when all sleep; a sample reads two counters per carrier.
 */
#include "internal.h"
#include "sys.h"

#include <fcntl.h>
#include <string.h>
#include <time.h>

#define FS_STUCK_NS (10 * 1000000)   /* no switch for this long: stuck */
#define FS_MON_MIN_NS (5 * 1000000)
#define FS_MON_MAX_NS (50 * 1000000)

struct fs_mon_view {
    uint64_t switches;
    int64_t since;   /* when switches last changed */
    int64_t cpu_at;  /* thread CPU time when suspected; -1: not suspected */
    int64_t cpu_now; /* fs_now() at cpu_at */
    bool stuck;
};

static _Atomic uint64_t fs__mon_harvests;

uint64_t fs__monitor_harvests(void)
{
    return atomic_load_explicit(&fs__mon_harvests, memory_order_relaxed);
}

static void fs__mon_sleep(int64_t ns)
{
    struct timespec ts = {ns / 1000000000, ns % 1000000000};
    fs__sys2(SYS_nanosleep, &ts, NULL);
}

/* CPU time used by kernel thread tid (Linux's per-thread CPU clock id,
 * MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED), as pthread_getcpuclockid
 * makes it), or -1. A raw system call: inside libfibershim.so
 * clock_gettime is the shim's. Any thread. */
int64_t fs__thread_cpu_ns(int tid)
{
    clockid_t id = (clockid_t)((~(unsigned)tid) << 3) | 6; /* CPUCLOCK_SCHED, per thread */
    struct timespec ts;
    if (fs__sys2(SYS_clock_gettime, id, &ts) != 0)
        return -1;
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Whether kernel thread tid is blocked in the kernel: state S or D in
 * /proc/self/task/<tid>/stat (the field after the parenthesised name). */
static bool fs__thread_blocked(int tid)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    int fd = (int)fs__sys4(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return false;
    ssize_t n = fs__sys3(SYS_read, fd, buf, sizeof buf - 1);
    fs__sys1(SYS_close, fd);
    if (n <= 0)
        return false;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' && (p[2] == 'S' || p[2] == 'D');
}

/* A carrier that has not switched for FS_STUCK_NS is stuck if its thread
 * either ran on the CPU most of the time since (a fiber that computes) or
 * is blocked in the kernel (a call the runtime cannot see). A thread
 * that is runnable but got little CPU was only preempted (more runnable
 * threads than CPUs): another thread would compete for the same CPUs, so
 * that is not a reason for a spare. Judged over one more sample. */
static bool fs__mon_judge(struct fs_mon_view *v, struct fs_sched *s, int64_t now)
{
    int tid = atomic_load_explicit(&s->tid, memory_order_relaxed);
    if (tid <= 0)
        return true;
    int64_t cpu = fs__thread_cpu_ns(tid);
    if (cpu < 0)
        return true;
    if (v->cpu_at < 0 || now - v->cpu_now <= 0) {
        v->cpu_at = cpu;
        v->cpu_now = now;
        return false;
    }
    bool computing = 2 * (cpu - v->cpu_at) >= now - v->cpu_now;
    if (computing || fs__thread_blocked(tid))
        return true;
    v->cpu_at = cpu; /* preempted: look again from here */
    v->cpu_now = now;
    return false;
}

/* Takes what a stuck carrier holds that others may run (see the top).
 * Returns true if it holds fibers that may move. */
static bool fs__mon_rescue(struct fs_sched *s, int64_t now)
{
    /* A carrier that went to sleep since it was judged is not stuck: it
     * waits in epoll_wait and takes its own events. (A harvest that races
     * such a sleep anyway leaves its kicks intact: fs__netpoll posts a
     * kick it took from another carrier's instance again.) */
    if (atomic_load_explicit(&s->sleeping, memory_order_relaxed))
        return false;
    /* Harvesting is thread-safe (pollfd locks); the counters it bumps
     * are the stuck carrier's, which is not touching them meanwhile. */
    if (fs__netpoll_foreign(s) > 0)
        atomic_fetch_add_explicit(&fs__mon_harvests, 1, memory_order_relaxed);
    if (atomic_load_explicit(&s->next_deadline, memory_order_relaxed) <= now)
        fs__timers_run(s, now); /* under the timer lock; wakes go home or global */
    /* The fiber its last wake put in runnext (typically the peer a stuck
     * handler answered just before it started spinning). */
    struct fs_fiber *f = fs__runnext_steal(s);
    if (f) {
        atomic_fetch_add_explicit(&s->st.strands_taken, 1, memory_order_relaxed);
        fs__global_push(f);
        return true;
    }
    return fs__ring_len(&s->ring) != 0;
}

/* One more carrier able to take work: a retired spare that is not stuck
 * itself, else a new one. */
static void fs__mon_handoff(struct fs_mon_view *v, unsigned n)
{
    for (unsigned i = fs__g.nsched; i < n; i++) {
        struct fs_sched *s = fs__g.scheds[i];
        if (atomic_load(&s->defunct) || !atomic_load(&s->retired) || v[i].stuck)
            continue;
        atomic_store(&s->retired, 0);
        atomic_fetch_add(&fs__g.handoffs, 1);
        fs__sched_kick(s);
        return;
    }
    if (fs__start_extra())
        atomic_fetch_add(&fs__g.handoffs, 1);
}

/* One carrier too many: retire the last active spare that is not stuck. */
static void fs__mon_retire(struct fs_mon_view *v, unsigned n)
{
    for (unsigned i = n; i-- > fs__g.nsched;) {
        struct fs_sched *s = fs__g.scheds[i];
        if (atomic_load(&s->retired) || v[i].stuck)
            continue;
        atomic_store(&s->retired, 1);
        return;
    }
}

static void *fs__monitor(void *arg)
{
    unsigned cap = fs__g.nsched + fs__g.nextra_max;
    struct fs_mon_view *v = calloc(cap, sizeof *v);
    if (!v)
        return NULL;
    for (unsigned i = 0; i < cap; i++)
        v[i].cpu_at = -1;
    int64_t delay = FS_MON_MIN_NS;
    for (;;) {
        fs__mon_sleep(delay);
        int64_t now = fs_now();
        bool busy = false, waiting = false;
        unsigned nstuck = 0, capable = 0;
        unsigned n = atomic_load_explicit(&fs__g.nstarted, memory_order_acquire);
        for (unsigned i = 0; i < n && i < cap; i++) {
            struct fs_sched *s = fs__g.scheds[i];
            if (atomic_load_explicit(&s->defunct, memory_order_relaxed))
                continue;
            bool retired = atomic_load_explicit(&s->retired, memory_order_relaxed);
            uint64_t sw = atomic_load_explicit(&s->st.switches, memory_order_relaxed);
            bool sleeping = atomic_load_explicit(&s->sleeping, memory_order_relaxed);
            v[i].stuck = false;
            if (sw != v[i].switches || sleeping) {
                v[i].switches = sw;
                v[i].since = now;
                v[i].cpu_at = -1;
                busy |= !sleeping;
            } else {
                busy = true;
                v[i].stuck = now - v[i].since >= FS_STUCK_NS && fs__mon_judge(&v[i], s, now);
                /* No switch for a whole sample, so the fiber its runnext
                 * holds has waited that long behind a fiber that readied
                 * it and went on running (a signal-and-go-on: CPython's
                 * GIL hand-over). An idle carrier takes such a fiber when
                 * it is awake to see it (fs__runnext_strand); a sleeping
                 * one is woken for it here, before the stuck verdict. Not
                 * while the global queue holds fibers: at its tail the
                 * fiber that was to run next would wait for all of them
                 * (tests/runtime/test_fairness.c). */
                if (!v[i].stuck && !s->exclusive &&
                    atomic_load_explicit(&s->runnext, memory_order_relaxed) &&
                    atomic_load_explicit(&fs__g.nsleeping, memory_order_relaxed) &&
                    !atomic_load_explicit(&fs__g.global_len, memory_order_relaxed)) {
                    struct fs_fiber *f = fs__runnext_steal(s);
                    if (f) {
                        atomic_fetch_add_explicit(&s->st.strands_taken, 1, memory_order_relaxed);
                        fs__global_push(f);
                        fs__wakep();
                    }
                }
            }
            if (atomic_load_explicit(&s->mon_stuck, memory_order_relaxed) != v[i].stuck)
                atomic_store_explicit(&s->mon_stuck, v[i].stuck, memory_order_relaxed);
            if (v[i].stuck) {
                /* An exclusive sched (main's) holds no work others may
                 * take, but its epoll may hold others' readiness. */
                bool more = fs__mon_rescue(s, now);
                if (!s->exclusive) {
                    nstuck++;
                    waiting |= more;
                }
            } else if (!retired && !s->exclusive) {
                capable++;
            }
        }
        unsigned workers = fs__g.nsched - atomic_load_explicit(&fs__g.nexclusive, memory_order_relaxed);
        waiting |= atomic_load_explicit(&fs__g.global_len, memory_order_relaxed) != 0;
        if (nstuck && waiting) {
            if (capable < workers)
                fs__mon_handoff(v, n);
            else
                fs__wakep(); /* a carrier that can take it may be asleep */
        } else if (capable > workers) {
            fs__mon_retire(v, n);
        }
        if (nstuck || busy)
            delay = FS_MON_MIN_NS;
        else if (delay < FS_MON_MAX_NS)
            delay *= 2;
    }
    return NULL;
}

static _Atomic int started;
_Atomic int fs__monitor_tried;

/* Starts the monitor, once. Needed with two carriers or more (harvesting)
 * or with handoff on (a lone carrier may get stuck too). Called when the
 * carriers start and, through fs__monitor_tried, at the next spawn after
 * an adopted thread became the only carrier or a fork. */
void fs__monitor_start(void)
{
    atomic_store_explicit(&fs__monitor_tried, 1, memory_order_relaxed);
    if ((fs__g.nsched < 2 && fs__g.nextra_max == 0) || atomic_exchange(&started, 1))
        return;
    fs_pthread_create_fn create = fs__libc_pthread_create();
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 64 * 1024);
    pthread_t t;
    /* Signals are for the program's threads (carriers running fibers),
     * never for the monitor: it starts with every signal blocked. */
    uint64_t all = ~0ull, old = fs__sigmask_set(&all);
    if (!create || create(&t, &a, fs__monitor, NULL) != 0)
        atomic_store(&started, 0); /* retried at the next carrier start or fork */
    fs__sigmask_set(&old);
    pthread_attr_destroy(&a);
}

/* fork child: the monitor thread did not survive; the next carrier start
 * makes a new one. */
void fs__monitor_atfork_child(void)
{
    atomic_store(&started, 0);
    atomic_store(&fs__monitor_tried, 0);
}
