/*
 * runtime.c - starting the runtime: scheds, carrier threads, adopting a
 * kernel thread (the shim's main()), and the statistics snapshot.
 *
 * Carriers start lazily: the runtime allocates every sched at init, but
 * starts carrier threads only at the first spawn, so a program that never
 * creates a fiber pays for no extra kernel thread.
 */
#include "internal.h"
#include "sys.h"

#include <dlfcn.h>
#include <signal.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

struct fs_runtime fs__g;

void fs__panic(const char *file, int line, const char *what)
{
    char buf[512];
    int n = snprintf(buf, sizeof buf, "fibershim: internal error at %s:%d: %s\n", file, line,
                     what);
    if (n > 0)
        fs__sys3(SYS_write, 2, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
    abort();
}

#define FS_DEFAULT_HANDOFF_MAX 64

static int fs__init_locked(const struct fs_config *cfg)
{
    struct fs_config c;
    if (cfg) {
        c = *cfg;
    } else {
        char err[256];
        int rc = fs_config_from_env(&c, err, sizeof err);
        if (rc) {
            fprintf(stderr, "fibershim: %s\n", err);
            return rc;
        }
    }
    if (c.carriers == 0)
        c.carriers = fs_default_carriers();
    if (c.carriers > FS_MAX_CARRIERS)
        return -EINVAL;
    /* The adopted thread's own sched comes on top (see fs_config). */
    if (c.adopt_exclusive)
        c.carriers++;
    /* A stack size of 0 stays 0: glibc's default, read at each spawn. */
    if (c.stack_size && (c.stack_size < FS_MIN_STACK_SIZE || c.stack_size > FS_MAX_STACK_SIZE))
        return -EINVAL;
    if (c.idle_spin_ns < FS_IDLE_SPIN_OFF || c.idle_spin_ns > FS_MAX_IDLE_SPIN_NS)
        return -EINVAL;
    /* From here on, the spin in effect: 0 is none. */
    c.idle_spin_ns = c.idle_spin_ns == 0                  ? FS_DEFAULT_IDLE_SPIN_NS
                     : c.idle_spin_ns == FS_IDLE_SPIN_OFF ? 0
                                                          : c.idle_spin_ns;
    fs__g.cfg = c;
    fs__tls_init(&c);
    fs__g.migrate = c.migrate == FS_MIGRATE_ON || (c.migrate == FS_MIGRATE_AUTO && fs__tls.on);
    /* Spares: a carrier blocked in a call the runtime cannot see holds one
     * kernel thread until the call returns, so a team whose members wait
     * for each other that way (libgomp's barriers, inline futex waits)
     * needs a kernel thread per waiter plus one. Go bounds its threads at
     * 10,000; the default here is 64 (or the carrier count, if larger),
     * each spare costing a kernel thread and a timer heap. */
    fs__g.nextra_max = c.handoff_off ? 0
                       : c.handoff_max ? c.handoff_max
                       : c.carriers > FS_DEFAULT_HANDOFF_MAX ? c.carriers
                                                             : FS_DEFAULT_HANDOFF_MAX;
    if (fs__g.nextra_max > FS_MAX_CARRIERS)
        fs__g.nextra_max = FS_MAX_CARRIERS;

    fs__g.scheds = calloc(c.carriers + fs__g.nextra_max, sizeof *fs__g.scheds);
    if (!fs__g.scheds)
        return -ENOMEM;
    for (unsigned i = 0; i < c.carriers; i++) {
        struct fs_sched *s = aligned_alloc(64, sizeof *s);
        if (!s)
            return -ENOMEM;
        int rc = fs__sched_init(s, i);
        if (rc)
            return rc;
        fs__g.scheds[i] = s;
    }
    fs__g.nsched = c.carriers;
    fs__fault_init();
    return 0;
}

int fs_init(const struct fs_config *cfg)
{
    int expect = 0;
    if (!atomic_compare_exchange_strong(&fs__g.state, &expect, 1)) {
        while (atomic_load(&fs__g.state) == 1)
            fs__sys0(SYS_sched_yield);
        return atomic_load(&fs__g.state) == 2 ? -EALREADY : -EINVAL;
    }
    int rc = fs__init_locked(cfg);
    /* A failed start leaves the runtime off for good (state 3): its error
     * was reported, and retrying would only report it again. */
    atomic_store(&fs__g.state, rc ? 3 : 2);
    return rc;
}

int fs__ensure_init(void)
{
    int st = atomic_load_explicit(&fs__g.state, memory_order_acquire);
    if (FS_LIKELY(st == 2))
        return 0;
    int rc = fs_init(NULL);
    return rc == -EALREADY ? 0 : rc;
}

/* ---- carrier threads --------------------------------------------------- */

static void *fs__carrier_thread(void *arg)
{
    struct fs_sched *s = arg;
    fs__fault_thread_init(s);
    fs__carrier_main_loop(s);
}

/* The C library's pthread_create, never an interposed one: inside
 * libfibershim.so a direct call would bind to the shim's definition.
 * Under TSan, the sanitizer's interceptor instead: a thread created behind
 * its back has no TSan state and crashes at its first instrumented access.
 * The interceptor is unversioned, so the versioned lookup skips it; the
 * plain one finds it, since the TSan runtime comes before libc in the
 * lookup order. */
fs_pthread_create_fn fs__libc_pthread_create(void)
{
    static fs_pthread_create_fn fn;
    if (!fn) {
#ifndef FS_TSAN
        fn = (fs_pthread_create_fn)dlvsym(RTLD_NEXT, "pthread_create", "GLIBC_2.34");
#endif
        if (!fn)
            fn = (fs_pthread_create_fn)dlsym(RTLD_NEXT, "pthread_create");
    }
    return fn;
}

/* Sets the calling thread's signal mask to *set (NULL: leaves it) and
 * returns the previous one. Raw rt_sigprocmask: inside the shim library
 * pthread_sigmask would be the shim's own. glibc's internal signals (32
 * and 33: cancellation, setxid broadcast) are never blocked, as glibc's
 * pthread_sigmask would not block them. */
uint64_t fs__sigmask_set(const uint64_t *set)
{
    uint64_t old = 0, m;
    if (set)
        m = *set & ~((1ull << 31) | (1ull << 32));
    fs__sys4(SYS_rt_sigprocmask, SIG_SETMASK, set ? &m : NULL, &old, sizeof old);
    return old;
}

/* Starts the carrier threads not started yet (scheds already driven by an
 * adopted thread count as started). Any thread. Returns 0, or a negative
 * errno if no carrier at all could be started. */
int fs__start_carriers(void)
{
    int rc = fs__ensure_init();
    if (rc)
        return rc;
    if (atomic_load_explicit(&fs__g.nstarted, memory_order_acquire) >= fs__g.nsched) {
        fs__monitor_start(); /* every carrier was adopted, or after a fork */
        fs__tls_wrap_setxid();
        return 0;
    }
    fs__spin_lock(&fs__g.start_lock);
    unsigned i = atomic_load(&fs__g.nstarted);
    fs_pthread_create_fn create = fs__libc_pthread_create();
    /* Carriers inherit this thread's mask; handoff carriers get the same. */
    fs__g.carrier_sigmask = fs__sigmask_set(NULL);
    for (; i < fs__g.nsched; i++) {
        struct fs_sched *s = fs__g.scheds[i];
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&a, 256 * 1024);
        s->busy_since = fs_now();
        rc = create ? -create(&s->thread, &a, fs__carrier_thread, s) : -ENOSYS;
        pthread_attr_destroy(&a);
        if (rc) {
            fprintf(stderr, "fibershim: could not start carrier %u: %s\n", i, strerror(-rc));
            break;
        }
        /* release: the sched is fully set up before others index it */
        atomic_store_explicit(&fs__g.nstarted, i + 1, memory_order_release);
    }
    fs__spin_unlock(&fs__g.start_lock);
    fs__monitor_start();
    fs__tls_wrap_setxid(); /* glibc's first pthread_create installed its handler */
    return atomic_load(&fs__g.nstarted) ? 0 : rc;
}

/* Starts one handoff carrier: a fresh sched, appended after the others,
 * driven by a new kernel thread. Monitor thread only (it is the only
 * caller, so two extras never race for one slot; start_lock keeps out
 * fs_adopt_thread and fork). Returns the sched, or NULL if every slot is
 * used, not every configured carrier runs yet, or resources ran out.
 *
 * Timer room: every heap must hold every live fiber's timer (park.c).
 * We publish the sched (nstarted), then read the reservation; a spawner
 * raises the reservation, then rereads nstarted (fs__timers_reserve).
 * Both are seq_cst, so one of us sees the other and the heap gets room. */
struct fs_sched *fs__start_extra(void)
{
    fs__spin_lock(&fs__g.start_lock);
    unsigned i = atomic_load(&fs__g.nstarted);
    struct fs_sched *s = NULL;
    if (i < fs__g.nsched || i >= fs__g.nsched + fs__g.nextra_max)
        goto out;
    s = aligned_alloc(64, sizeof *s);
    if (!s)
        goto out;
    if (fs__sched_init(s, i) != 0) {
        free(s);
        s = NULL;
        goto out;
    }
    s->extra = true;
    s->busy_since = fs_now();
    fs__g.scheds[i] = s;
    atomic_store(&fs__g.nstarted, i + 1);
    fs__timers_reserve_sched(s);
    if (atomic_load(&s->defunct)) {
        s = NULL;
        goto out;
    }

    fs_pthread_create_fn create = fs__libc_pthread_create();
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 256 * 1024);
    /* The monitor blocks every signal; a carrier takes the carriers' mask
     * (it then follows its fibers' masks, see shim/signal.c). */
    uint64_t mon_mask = fs__sigmask_set(&fs__g.carrier_sigmask);
    int rc = create ? create(&s->thread, &a, fs__carrier_thread, s) : ENOSYS;
    fs__sigmask_set(&mon_mask);
    pthread_attr_destroy(&a);
    if (rc) {
        /* Published but driven by nobody: no fiber can be pinned to it
         * (none ran there), wakep and the monitor skip it. */
        atomic_store(&s->retired, 1);
        atomic_store(&s->defunct, 1);
        fprintf(stderr, "fibershim: could not start a handoff carrier: %s\n", strerror(rc));
        s = NULL;
    }
out:
    fs__spin_unlock(&fs__g.start_lock);
    return s;
}

int fs_adopt_thread(fs_fiber **out)
{
    int rc = fs__ensure_init();
    if (rc)
        return rc;
    if (fs__cur_sched())
        return -EALREADY;
    fs__spin_lock(&fs__g.start_lock);
    unsigned i = atomic_load(&fs__g.nstarted);
    if (i >= fs__g.nsched) {
        fs__spin_unlock(&fs__g.start_lock);
        return -EBUSY; /* every sched already has a carrier */
    }
    struct fs_sched *s = fs__g.scheds[i];
    struct fs_fiber *f = fs__fiber_alloc_adopted();
    if (!f || (rc = fs__sched_make_idle_stack(s)) != 0) {
        fs__spin_unlock(&fs__g.start_lock);
        return f ? rc : -ENOMEM;
    }
    fs__g.carrier_sigmask = fs__sigmask_set(NULL);
    s->thread = pthread_self();
    atomic_store(&s->tid, (int)fs__sys0(SYS_gettid));
    s->busy_since = fs_now();
    fs__timers_reserve(atomic_load(&fs__g.live));
    if (fs__g.cfg.adopt_exclusive && atomic_load(&fs__g.nexclusive) == 0) {
        s->exclusive = true;
        atomic_store(&fs__g.nexclusive, 1);
    }
    f->home = s;
    /* The adopted thread's own stack: let the fiber report it. */
    pthread_attr_t a;
    if (pthread_getattr_np(pthread_self(), &a) == 0) {
        pthread_attr_getstack(&a, &f->stack.lo, &f->stack.size);
        pthread_attr_destroy(&a);
    }
    if (fs__tls.on)
        f->tp = s->adopted_tp = fs__tls_tp(); /* it keeps the thread's own TCB */
    fs__tls_sched = s;
    s->cur = f;
    atomic_store_explicit(&fs__g.nstarted, i + 1, memory_order_release);
    fs__spin_unlock(&fs__g.start_lock);
    fs__fault_thread_init(s);
    *out = f;
    return 0;
}

/* ---- statistics -------------------------------------------------------- */

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)

void fs_stats_get(struct fs_stats *st)
{
    memset(st, 0, sizeof *st);
    st->fibers_created = LD(fs__g.created);
    st->fibers_live = LD(fs__g.live);
    st->fibers_peak = LD(fs__g.peak);
    st->carriers = fs__g.nsched;
    unsigned n = atomic_load_explicit(&fs__g.nstarted, memory_order_acquire);
    st->extra_carriers = n > fs__g.nsched ? n - fs__g.nsched : 0;
    st->handoffs = LD(fs__g.handoffs);
    st->monitor_harvests = fs__monitor_harvests();
    st->fiber_tls = fs__tls.on;
    for (unsigned i = 0; i < fs__g.nsched + st->extra_carriers; i++) {
        struct fs_sched_stats *c = &fs__g.scheds[i]->st;
        st->switches += LD(c->switches);
        st->steals += LD(c->steals);
        st->spins += LD(c->spins);
        st->carrier_sleeps += LD(c->sleeps);
        st->carrier_wakes += LD(c->wakes_sent);
        for (int r = 0; r < FS_PARK_NREASONS; r++)
            st->parks[r] += LD(c->parks[r]);
        st->epoll_wait_calls += LD(c->epoll_waits);
        st->epoll_ctl_calls += LD(c->epoll_ctls);
        st->timers_armed += LD(c->timers_armed);
        st->timers_fired += LD(c->timers_fired);
        st->timers_stolen += LD(c->timers_stolen);
        st->strands_taken += LD(c->strands_taken);
        st->syscalls_avoided += LD(c->syscalls_avoided);
        st->syscalls_made += LD(c->syscalls_made);
    }
}

/* s's busy time up to now. st.busy_ns grows only when the carrier goes to
 * sleep, so a carrier that has run fibers without sleeping since time T
 * (a loaded server's, for the whole run) adds now - busy_since. The owner
 * sets sleeping, adds the stretch to busy_ns, sleeps, stores a new
 * busy_since, then clears sleeping: a reader that sees sleeping clear
 * and the same busy_since on both sides of its reads read a busy_ns that
 * does not hold the stretch from that busy_since (had the owner added it,
 * a new busy_since would have been stored before sleeping was cleared);
 * otherwise it reads again (sched.c clears sleeping with a release).
 * While sleeping is set, busy_ns holds everything, but for the instant a
 * carrier that set it finds work before it sleeps. Any thread. */
static uint64_t fs__busy_ns(struct fs_sched *s)
{
    for (;;) {
        int64_t since = atomic_load_explicit(&s->busy_since, memory_order_acquire);
        uint64_t ns = atomic_load_explicit(&s->st.busy_ns, memory_order_acquire);
        bool sleeping = atomic_load_explicit(&s->sleeping, memory_order_acquire);
        if (atomic_load_explicit(&s->busy_since, memory_order_acquire) != since)
            continue;
        int64_t now = fs_now();
        if (!sleeping && since && now > since)
            ns += (uint64_t)(now - since);
        return ns;
    }
}

int fs_carrier_stats(unsigned i, struct fs_carrier_stats *cs)
{
    unsigned n = atomic_load_explicit(&fs__g.nstarted, memory_order_acquire);
    if (i >= (n > fs__g.nsched ? n : fs__g.nsched))
        return -EINVAL;
    struct fs_sched *s = fs__g.scheds[i];
    cs->fibers_run = LD(s->st.fibers_run);
    cs->busy_ns = fs__busy_ns(s);
    /* On a machine shared with other work a carrier's busy time
     * (fs__busy_ns) also counts the time it was preempted, and a carrier
     * that rarely sleeps collects more of it; the CPU time is what it ran. */
    int tid = atomic_load_explicit(&s->tid, memory_order_relaxed);
    int64_t cpu = tid > 0 ? fs__thread_cpu_ns(tid) : -1;
    cs->cpu_ns = cpu < 0 ? 0 : (uint64_t)cpu;
    cs->switches = LD(s->st.switches);
    cs->runq_len = fs__ring_len(&s->ring) + fs__fifo_len(&s->local);
    cs->sleeping = atomic_load(&s->sleeping) != 0;
    cs->extra = s->extra;
    cs->retired = atomic_load(&s->retired) != 0;
    return 0;
}

uint64_t *fs_carrier_local(void)
{
    struct fs_sched *s = fs__cur_sched();
    return s ? s->user_local : NULL;
}

void fs_count_syscall(void)
{
    struct fs_sched *s = fs__cur_sched();
    if (s)
        fs__stat_inc(&s->st.syscalls_made);
}

void fs_count_avoided(void)
{
    struct fs_sched *s = fs__cur_sched();
    if (s)
        fs__stat_inc(&s->st.syscalls_avoided);
}
