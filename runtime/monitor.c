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
 * Cost: a sample every 5 ms while some carrier runs fibers (or is not
 * yet judged), a sample reads two counters per carrier. When nothing
 * needs watching, the monitor backs off and then parks (see "Backing
 * off" below): an idle process, even one whose carrier is blocked for
 * good in a call the runtime cannot see (MariaDB's io_uring completion
 * thread in liburing's inline io_uring_enter), makes no wake-ups.
 *
 * Backing off. Quiet means: every carrier sleeps in epoll_wait or is
 * judged stuck, no stuck carrier holds work that may move (its ring, its
 * runnext: fs__mon_rescue took or handed it off), the global queue is
 * empty and no spare is due to retire. While quiet, the period doubles
 * from 5 ms to 50 ms (a light steady load, whose carriers sleep and wake
 * all the time, is watched that way without a poke per request), then
 * the monitor parks. After a park that lasted FS_MON_BURST_NS at least,
 * a stretch of activity shorter than that (an idle server's timer thread
 * ticking, a lone request) ends in a park at its first quiet sample, not
 * in another climb from 5 ms: idle MariaDB's ticks cost the monitor two
 * samples each instead of six. A shorter park (a steady light load) or
 * a longer stretch returns to the doubling. Parked, it blocks in its own
 * epoll instance with no timeout, or until the earliest timer of a stuck
 * carrier. What can need it again, and what wakes it then:
 *  - a stuck carrier's epoll gets readiness for a fiber that may run
 *    elsewhere: the stuck carrier's epoll instance is itself registered
 *    in the monitor's (an epoll fd is pollable; nested, edge-triggered),
 *    from the sample that judged it stuck to the one that sees it switch;
 *  - a stuck carrier's timer falls due: the park's timeout (no timer is
 *    armed on a stuck carrier while it stays stuck: only a fiber that
 *    parks there arms one);
 *  - work queued that a stuck carrier could hold up: what a stuck
 *    carrier's fiber wakes or spawns goes to the global queue
 *    (sched.mon_stuck, see fs__ready), never to its own runnext or ring,
 *    and every global push pokes the monitor (FS_MON_POKE_WORK): with
 *    fewer capable carriers than configured, only the monitor can start
 *    a spare to run it;
 *  - a stuck carrier switches (its call returned; it may get stuck again
 *    later with work behind it, and a spare may be due to retire): it
 *    counts a switch and pokes, once per verdict (sched.mon_watch,
 *    fs__sched_unstuck, at every switch out of a fiber and every start
 *    of one on the idle loop);
 *  - a carrier leaves epoll_wait to run fibers, which may then hold a
 *    carrier (FS_MON_POKE_WAKE, only once parked: during the back-off
 *    the period bounds that delay as before, at 50 ms, and a light load
 *    that sleeps and wakes carriers all the time pays no poke).
 * A poke is one eventfd write, by the first poker only (an exchange of
 * fs__mon_parked to 0), so at most one per park.
 *
 * The race: the monitor decides to park on a sample, and a poker
 * publishes its change (a global push, a switch, sleeping cleared) just
 * after that sample read the state. Both sides are Dekker's: the monitor
 * stores fs__mon_parked, fences, then reads again everything a poker
 * publishes (fs__mon_quiet_recheck: the global queue's length, nstarted,
 * each carrier's sleeping, or a stuck one's switch count); a poker
 * publishes, fences, then
 * reads fs__mon_parked. At least one sees the other: either the poker
 * sees the flag and writes the eventfd (the write queues an edge in the
 * monitor's epoll, which its next epoll_wait reports even if it was
 * written before that wait began), or the recheck sees the change and the
 * monitor does not park. A carrier started meanwhile is covered the same
 * way: its starter publishes nstarted, then pokes; the recheck reads
 * nstarted.
 */
#include "internal.h"
#include "sys.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>

#define FS_STUCK_NS (10 * 1000000)   /* no switch for this long: stuck */
#define FS_STUCK_KEEP_NS (100 * 1000000) /* sched.mon_stuck outlives a verdict */
#define FS_MON_MIN_NS (5 * 1000000)
#define FS_MON_MAX_NS (50 * 1000000)
#define FS_MON_BURST_NS (50 * 1000000) /* longer activity ends after_park */

struct fs_mon_view {
    uint64_t switches;
    int64_t since;   /* when switches last changed */
    int64_t cpu_at;  /* thread CPU time when suspected; -1: not suspected */
    int64_t cpu_now; /* fs_now() at cpu_at */
    bool stuck;
    int nested;      /* the epfd registered in the monitor's epoll, or -1 */
    int64_t stuck_at; /* the last sample that judged it stuck; 0: none */
};

static _Atomic uint64_t fs__mon_harvests, fs__mon_samples;

/* What the parked monitor wants to be poked for (FS_MON_POKE_*), 0 while
 * it samples. Set by the monitor; exchanged to 0 by the first poker. */
_Atomic unsigned fs__mon_parked;
/* The monitor's epoll instance and the eventfd in it that pokes write;
 * -1 until the monitor made them (it then never parks without them).
 * Written by the monitor before it first sets fs__mon_parked, which a
 * poker reads first. */
static int fs__mon_epfd = -1, fs__mon_evfd = -1;

uint64_t fs__monitor_samples(void)
{
    return atomic_load_explicit(&fs__mon_samples, memory_order_relaxed);
}

/* The slow half of fs__monitor_poke: the monitor is parked and wants this
 * poke. The exchange makes one poker per park write the eventfd. */
void fs__monitor_wake(void)
{
    if (atomic_exchange_explicit(&fs__mon_parked, 0, memory_order_acq_rel) == 0)
        return;
    uint64_t one = 1;
    fs__sys3(SYS_write, fs__mon_evfd, &one, sizeof one);
}

uint64_t fs__monitor_harvests(void)
{
    return atomic_load_explicit(&fs__mon_harvests, memory_order_relaxed);
}

static void fs__mon_sleep(int64_t ns)
{
    struct timespec ts = {ns / 1000000000, ns % 1000000000};
    fs__sys2(SYS_nanosleep, &ts, NULL);
}

/* Makes the monitor's epoll instance and poke eventfd, both
 * edge-triggered (neither is ever read: an eventfd counter would take
 * 2^64 pokes to fill). On failure the monitor keeps sampling with a
 * period of at most FS_MON_MAX_NS and never parks. */
static void fs__mon_wait_init(void)
{
    long ep = fs__sys1(SYS_epoll_create1, EPOLL_CLOEXEC);
    if (ep < 0)
        return;
    long ev = fs__sys2(SYS_eventfd2, 0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ev < 0) {
        fs__sys1(SYS_close, ep);
        return;
    }
    ep = fs__fd_hide(ep, 126);
    ev = fs__fd_hide(ev, 127);
    struct epoll_event e = {.events = EPOLLIN | EPOLLET, .data.u64 = 0};
    if (fs__sys4(SYS_epoll_ctl, ep, EPOLL_CTL_ADD, ev, &e) < 0) {
        fs__sys1(SYS_close, ep);
        fs__sys1(SYS_close, ev);
        return;
    }
    fs__mon_epfd = (int)ep;
    fs__mon_evfd = (int)ev;
}

/* Sleeps for ns (< 0: until an event), or until a poke or readiness in
 * the epoll of a stuck carrier registered in the monitor's. */
static void fs__mon_wait(int64_t ns)
{
    if (fs__mon_epfd < 0) {
        fs__mon_sleep(ns < 0 || ns > FS_MON_MAX_NS ? FS_MON_MAX_NS : ns);
        return;
    }
    struct epoll_event evs[8];
    struct timespec ts = {ns / 1000000000, ns % 1000000000};
    long n = fs__sys6(SYS_epoll_pwait2, fs__mon_epfd, evs, 8, ns < 0 ? NULL : &ts, NULL, 8);
    if (n == -ENOSYS) /* before Linux 5.11: millisecond timeouts, rounded up */
        fs__sys6(SYS_epoll_pwait, fs__mon_epfd, evs, 8,
                 ns < 0 ? -1L : (long)((ns + 999999) / 1000000), NULL, 8);
}

/* Keeps the epoll instance of carrier i registered in the monitor's while,
 * and only while, it is judged stuck: readiness there is for the monitor
 * to harvest, and would otherwise wake nobody while the monitor parks. */
static void fs__mon_nest(struct fs_mon_view *v, unsigned i, struct fs_sched *s)
{
    if (fs__mon_epfd < 0)
        return;
    if (v->stuck && v->nested < 0) {
        struct epoll_event e = {.events = EPOLLIN | EPOLLET, .data.u64 = i + 1};
        if (fs__sys4(SYS_epoll_ctl, fs__mon_epfd, EPOLL_CTL_ADD, s->epfd, &e) == 0)
            v->nested = s->epfd;
    } else if (!v->stuck && v->nested >= 0) {
        fs__sys4(SYS_epoll_ctl, fs__mon_epfd, EPOLL_CTL_DEL, v->nested, NULL);
        v->nested = -1;
    }
}

/* The monitor is about to park on a quiet sample (see Backing off at the
 * top): after storing fs__mon_parked, reads again what pokers publish
 * before they poke. False: something changed since the sample, so the
 * monitor must sample again instead of parking. */
static bool fs__mon_quiet_recheck(const struct fs_mon_view *v, unsigned n)
{
    if (atomic_load_explicit(&fs__g.global_len, memory_order_relaxed) != 0 ||
        atomic_load_explicit(&fs__g.nstarted, memory_order_relaxed) != n)
        return false;
    for (unsigned i = 0; i < n; i++) {
        struct fs_sched *s = fs__g.scheds[i];
        if (atomic_load_explicit(&s->defunct, memory_order_relaxed))
            continue;
        if (v[i].stuck ? atomic_load_explicit(&s->st.switches, memory_order_relaxed) != v[i].switches
                       : !atomic_load_explicit(&s->sleeping, memory_order_relaxed))
            return false;
    }
    return true;
}

/* CPU time used by kernel thread tid (Linux's per-thread CPU clock id,
 * as pthread_getcpuclockid makes it), or -1. */
static int64_t fs__thread_cpu_ns(int tid)
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
    for (unsigned i = 0; i < cap; i++) {
        v[i].cpu_at = -1;
        v[i].nested = -1;
    }
    fs__mon_wait_init();
    int64_t delay = FS_MON_MIN_NS, wait = FS_MON_MIN_NS;
    /* Since the last park, activity has come only in short stretches
     * (see Backing off); when the current stretch of samples that found
     * work began, or 0. */
    bool after_park = false, parked = false;
    int64_t active_since = 0, parked_at = 0;
    for (;;) {
        fs__mon_wait(wait);
        /* Whoever woke us, we sample now: no poke is wanted meanwhile. */
        atomic_store_explicit(&fs__mon_parked, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&fs__mon_samples, 1, memory_order_relaxed);
        int64_t now = fs_now();
        if (parked) { /* the first sample after a park */
            parked = false;
            if (now - parked_at < FS_MON_BURST_NS)
                after_park = false; /* a short park: steady activity */
        }
        bool busy = false, waiting = false, anystuck = false;
        int64_t stuck_dl = INT64_MAX;
        unsigned nstuck = 0, capable = 0;
        unsigned n = atomic_load_explicit(&fs__g.nstarted, memory_order_acquire);
        if (n > cap)
            n = cap;
        for (unsigned i = 0; i < n; i++) {
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
                v[i].stuck = now - v[i].since >= FS_STUCK_NS && fs__mon_judge(&v[i], s, now);
                /* Running the same fiber, not judged (yet): watch it. A
                 * carrier judged stuck needs watching only for what it
                 * holds, below. */
                busy |= !v[i].stuck;
            }
            /* The mark that sends what s wakes to the global queue (fs__ready)
             * outlives the verdict by FS_STUCK_KEEP_NS: a fiber that blocked
             * in an unseen call once is likely to again (an io_uring
             * completion thread that parked on a mutex in between), and
             * the fibers it wakes meanwhile would wait in its runnext for
             * the next verdict, 10 to 15 ms. Routing them through the
             * global queue costs a push and a wakep instead. */
            if (v[i].stuck) {
                v[i].stuck_at = now;
                if (!atomic_load_explicit(&s->mon_watch, memory_order_relaxed))
                    atomic_store_explicit(&s->mon_watch, true, memory_order_relaxed);
            }
            bool mark = v[i].stuck || (v[i].stuck_at && now - v[i].stuck_at < FS_STUCK_KEEP_NS);
            if (atomic_load_explicit(&s->mon_stuck, memory_order_relaxed) != mark)
                atomic_store_explicit(&s->mon_stuck, mark, memory_order_relaxed);
            fs__mon_nest(&v[i], i, s);
            if (v[i].stuck) {
                /* An exclusive sched (main's) holds no work others may
                 * take, but its epoll may hold others' readiness. */
                bool more = fs__mon_rescue(s, now);
                anystuck = true;
                int64_t dl = atomic_load_explicit(&s->next_deadline, memory_order_relaxed);
                if (dl < stuck_dl)
                    stuck_dl = dl;
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
        bool acted = true;
        if (nstuck && waiting) {
            if (capable < workers)
                fs__mon_handoff(v, n);
            else
                fs__wakep(); /* a carrier that can take it may be asleep */
        } else if (capable > workers) {
            fs__mon_retire(v, n);
        } else {
            acted = false;
        }

        /* The next wait (see Backing off at the top). */
        if (busy || waiting || acted) {
            if (!active_since)
                active_since = now;
            else if (now - active_since >= FS_MON_BURST_NS)
                after_park = false; /* sustained activity: back to the doubling */
            delay = wait = FS_MON_MIN_NS;
            continue;
        }
        active_since = 0;
        unsigned pokes = anystuck ? FS_MON_POKE_WORK : 0;
        if (delay < FS_MON_MAX_NS && !after_park) {
            delay = delay * 2 < FS_MON_MAX_NS ? delay * 2 : FS_MON_MAX_NS;
            wait = delay;
        } else {
            pokes |= FS_MON_POKE_WAKE;
            wait = -1;
            after_park = parked = true;
            parked_at = now;
        }
        if (stuck_dl != INT64_MAX && (wait < 0 || stuck_dl - now < wait))
            wait = stuck_dl > now ? stuck_dl - now : 0;
        if (pokes && fs__mon_epfd >= 0) {
            atomic_store_explicit(&fs__mon_parked, pokes, memory_order_seq_cst);
            atomic_thread_fence(memory_order_seq_cst); /* store parked, then read (Dekker) */
            if (!fs__mon_quiet_recheck(v, n)) {
                atomic_store_explicit(&fs__mon_parked, 0, memory_order_relaxed);
                delay = wait = FS_MON_MIN_NS;
                parked = false;
            }
        }
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
    /* The parent's epoll instance and eventfd (shared with it: close
     * only our descriptors); the child's monitor makes its own. */
    atomic_store(&fs__mon_parked, 0);
    if (fs__mon_epfd >= 0)
        fs__sys1(SYS_close, fs__mon_epfd);
    if (fs__mon_evfd >= 0)
        fs__sys1(SYS_close, fs__mon_evfd);
    fs__mon_epfd = fs__mon_evfd = -1;
}
