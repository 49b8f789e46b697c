/*
 * runtime_bench.c - micro-benchmarks of the fiber runtime against pthreads,
 * printed as one Markdown table.
 *
 *   runtime_bench [--quick]
 *
 * Rows (each the median of 5 repetitions unless it says otherwise):
 *  1. context switch: two fibers ping-ponging with fs_yield on one carrier,
 *     and the bare fs__context_switch (internal: context.h), against two
 *     threads pinned to CPU 0 ping-ponging through futexes, and through
 *     sched_yield.
 *  2. spawn+join: fs_spawn + fs_join from inside a fiber (the child starts
 *     local) against pthread_create + pthread_join.
 *  3. cross-carrier wake: a fiber on carrier A unparks one parked on
 *     carrier B and back (round trip / 2), against two threads on CPUs 0
 *     and 1 ping-ponging through futexes.
 *  4. timer lateness of fs_sleep_until(now + d) against clock_nanosleep.
 *  5. resident memory per idle fiber (parked in a long sleep) against
 *     threads with default attributes (with and without 16 KiB of kernel
 *     stack each).
 *  6. 1,000,000 idle fibers: time to create them all and park them, RSS
 *     (one spawner fiber; 6b: one spawner per carrier).
 *
 * 5 and 6 run in child processes (this program re-executed with --child),
 * so each starts from a clean heap and the idle fibers never need waking:
 * the child prints its numbers and exits.
 *
 * --quick skips 6 and uses 10,000 fibers for 5.
 *
 *   runtime_bench --child fibers N   row 6 alone: N idle fibers from one
 *                             spawner; prints RSS and page tables before and
 *                             after (KiB) and the seconds it took
 *   runtime_bench --child floor N    the same pages touched by two plain
 *                             threads, no runtime: the floor under row 6
 *
 *   runtime_bench --xwake N   row 3 alone (fibers only), N runs of 20,000
 *                             round trips: each run's ns one way and eventfd
 *                             kicks per wake, then the median. For the
 *                             idle-policy table (FIBERSHIM_IDLE_SPIN_NS).
 *   runtime_bench --xwake-fds N   the same with a socket registered in
 *                             each carrier's epoll, as a server's are
 *   runtime_bench --idle-cpu  CPU time the process burns, in ms per second:
 *                             truly idle (every fiber asleep for 1 s), and
 *                             with one fiber waking every 1 ms for 1 s.
 *
 * The runtime reads its configuration from the environment
 * (FIBERSHIM_IDLE_SPIN_NS...), with 2 carriers whatever it says.
 */
#include "context.h"
#include "fibershim.h"

#include <errno.h>
#include <inttypes.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define REPS 5

/* ---- helpers ------------------------------------------------------------ */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Nearest-rank percentile of a sorted array. */
static double pct_sorted(const double *v, int n, double p)
{
    int i = (int)(p * n + 0.999999) - 1;
    if (i < 0)
        i = 0;
    if (i >= n)
        i = n - 1;
    return v[i];
}

/* A "Key:   123 kB" line of /proc/self/status or /proc/meminfo, in KiB. */
static long read_kb(const char *file, const char *key)
{
    FILE *fp = fopen(file, "r");
    if (!fp)
        return -1;
    char line[256];
    long kb = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, fp)) {
        if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
            kb = strtol(line + kl + 1, NULL, 10);
            break;
        }
    }
    fclose(fp);
    return kb;
}

static void pin_self(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0)
        perror("sched_setaffinity");
}

static long futex(_Atomic uint32_t *w, int op, uint32_t val)
{
    return syscall(SYS_futex, w, op, val, NULL, NULL, 0);
}

/* A one-shot futex event for plain threads: wait consumes a post. */
static void tev_wait(_Atomic uint32_t *w)
{
    while (!atomic_exchange_explicit(w, 0, memory_order_acquire))
        futex(w, FUTEX_WAIT_PRIVATE, 0);
}

static void tev_post(_Atomic uint32_t *w)
{
    atomic_store_explicit(w, 1, memory_order_release);
    futex(w, FUTEX_WAKE_PRIVATE, 1);
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "runtime_bench: %s: %s\n", what, strerror(rc < 0 ? -rc : rc));
    exit(1);
}

/* Runs fn(arg) in a fiber and waits for it from this plain thread. */
static void *in_fiber(void *(*fn)(void *), void *arg)
{
    fs_fiber *f;
    int rc = fs_spawn(&f, fn, arg, NULL);
    if (rc)
        die("fs_spawn", rc);
    void *ret;
    if ((rc = fs_join(f, &ret, FS_NO_DEADLINE)))
        die("fs_join", rc);
    return ret;
}

/* Runs two threads, a pinned to cpu_a and b to cpu_b (-1: not pinned),
 * released together; returns the wall time of the slower one. */
struct duo {
    void *(*fn)(void *);
    int cpu;
    long iters;
    _Atomic uint32_t *mine, *theirs;
    _Atomic int *ready;
    int64_t t0, t1;
};

static void *duo_main(void *arg)
{
    struct duo *d = arg;
    if (d->cpu >= 0)
        pin_self(d->cpu);
    atomic_fetch_add(d->ready, 1);
    while (atomic_load(d->ready) < 2)
        ;
    d->t0 = now_ns();
    d->fn(d);
    d->t1 = now_ns();
    return NULL;
}

static double run_duo(void *(*fa)(void *), void *(*fb)(void *), int cpu_a, int cpu_b, long iters)
{
    _Atomic uint32_t wa = 0, wb = 0;
    _Atomic int ready = 0;
    struct duo a = {fa, cpu_a, iters, &wa, &wb, &ready, 0, 0};
    struct duo b = {fb, cpu_b, iters, &wb, &wa, &ready, 0, 0};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, duo_main, &a);
    pthread_create(&tb, NULL, duo_main, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    int64_t t0 = a.t0 < b.t0 ? a.t0 : b.t0;
    int64_t t1 = a.t1 > b.t1 ? a.t1 : b.t1;
    return (double)(t1 - t0);
}

/* Futex ping-pong: a serves first. */
static void *pp_thread_a(void *arg)
{
    struct duo *d = arg;
    for (long i = 0; i < d->iters; i++) {
        tev_post(d->theirs);
        tev_wait(d->mine);
    }
    return NULL;
}

static void *pp_thread_b(void *arg)
{
    struct duo *d = arg;
    for (long i = 0; i < d->iters; i++) {
        tev_wait(d->mine);
        tev_post(d->theirs);
    }
    return NULL;
}

static void *yield_thread(void *arg)
{
    struct duo *d = arg;
    for (long i = 0; i < d->iters; i++)
        sched_yield();
    return NULL;
}

/* ---- 1. context switch -------------------------------------------------- */

static void *yield_partner(void *arg)
{
    long n = *(long *)arg;
    for (long i = 0; i < n; i++)
        fs_yield();
    return NULL;
}

/* Returns ns per switch. The partner starts in runnext, which idle
 * carriers never steal from, so both fibers run on this carrier. */
static void *yield_driver(void *arg)
{
    long n = *(long *)arg;
    static double ns;
    fs_fiber *p;
    int rc = fs_spawn(&p, yield_partner, arg, NULL);
    if (rc)
        die("fs_spawn", rc);
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++)
        fs_yield();
    int64_t t1 = now_ns();
    fs_join(p, NULL, FS_NO_DEADLINE);
    ns = (double)(t1 - t0) / (2.0 * n);
    return &ns;
}

static struct fs_context raw_main, raw_co;

static void raw_entry(void *arg)
{
    (void)arg;
    for (;;)
        fs__context_switch(&raw_co, &raw_main);
}

static double bench_raw_switch(long n)
{
    static char stack[64 * 1024] __attribute__((aligned(64)));
    fs__context_make(&raw_co, stack, sizeof stack, raw_entry, NULL);
    fs__context_switch(&raw_main, &raw_co); /* first entry */
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++)
        fs__context_switch(&raw_main, &raw_co);
    int64_t t1 = now_ns();
    return (double)(t1 - t0) / (2.0 * n);
}

/* ---- 2. spawn + join ---------------------------------------------------- */

static void *nop_fn(void *arg)
{
    return arg;
}

static void *spawn_driver(void *arg)
{
    long n = *(long *)arg;
    static double ns;
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        fs_fiber *f;
        int rc = fs_spawn(&f, nop_fn, NULL, NULL);
        if (rc)
            die("fs_spawn", rc);
        fs_join(f, NULL, FS_NO_DEADLINE);
    }
    ns = (double)(now_ns() - t0) / n;
    return &ns;
}

static double bench_pthread_spawn(long n)
{
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        pthread_t t;
        int rc = pthread_create(&t, NULL, nop_fn, NULL);
        if (rc)
            die("pthread_create", rc);
        pthread_join(t, NULL);
    }
    return (double)(now_ns() - t0) / n;
}

/* ---- 3. cross-carrier wake ---------------------------------------------- */

/* A binary semaphore for one waiting fiber. st: 0 empty, 1 posted, else a
 * struct bwait * of the parked waiter. */
struct bsem {
    _Atomic uintptr_t st;
};

struct bwait {
    fs_fiber *f;
    fs_park_token tok;
    struct bsem *s;
};

/* Runs after the waiter is switched out: publish it, unless a post came
 * first, in which case consume the post and undo the park. */
static bool bsem_commit(void *arg)
{
    struct bwait *w = arg;
    uintptr_t zero = 0;
    if (atomic_compare_exchange_strong(&w->s->st, &zero, (uintptr_t)w))
        return true;
    atomic_store(&w->s->st, 0); /* it was 1 */
    return false;
}

static void bsem_wait(struct bsem *s)
{
    uintptr_t one = 1;
    if (atomic_compare_exchange_strong(&s->st, &one, 0))
        return;
    struct bwait w = {fs_self(), 0, s};
    w.tok = fs_park_prepare();
    fs_park(w.tok, FS_PARK_OTHER, s, FS_NO_DEADLINE, bsem_commit, &w);
}

static void bsem_post(struct bsem *s)
{
    uintptr_t v = atomic_load(&s->st);
    for (;;) {
        if (v == 1)
            return;
        if (atomic_compare_exchange_weak(&s->st, &v, v == 0 ? 1 : 0)) {
            if (v > 1) {
                /* The waiter stays parked (and w valid) until this. */
                struct bwait *w = (struct bwait *)v;
                fs_unpark(w->f, w->tok);
            }
            return;
        }
    }
}

struct xwake {
    long iters;
    struct bsem sa, sb;
    _Atomic int a_up, b_up;
    pthread_t ta, tb;
    int64_t t0, t1;
};

/* --xwake-fds: each side first registers a socket in its carrier's epoll
 * (kept open for the life of this short process),
 * as a server's carriers all have (a carrier with none skips the
 * non-blocking poll on its way to idle). */
static bool xwake_fds;

static void xwake_register_fd(void)
{
    int sv[2];
    if (!xwake_fds)
        return;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        die("socketpair", errno);
    if (fs_fd_probe(sv[0]) < 0)
        die("fs_fd_probe", EINVAL);
}

/* Fiber A spins (without yielding) until fiber B runs, so B cannot be
 * placed on A's carrier; both pin themselves there (fs_pin), else
 * migration would pull B onto A's carrier at its first wake (it resumes
 * where it is woken) and the wakes would no longer cross carriers. */
static void *xwake_a(void *arg)
{
    struct xwake *x = arg;
    fs_pin(fs_self());
    xwake_register_fd();
    x->ta = pthread_self(); /* the carrier thread */
    atomic_store(&x->a_up, 1);
    while (!atomic_load(&x->b_up))
        __builtin_ia32_pause();
    x->t0 = now_ns();
    for (long i = 0; i < x->iters; i++) {
        bsem_post(&x->sb);
        bsem_wait(&x->sa);
    }
    x->t1 = now_ns();
    return NULL;
}

static void *xwake_b(void *arg)
{
    struct xwake *x = arg;
    fs_pin(fs_self());
    xwake_register_fd();
    x->tb = pthread_self();
    atomic_store(&x->b_up, 1);
    for (long i = 0; i < x->iters; i++) {
        bsem_wait(&x->sb);
        bsem_post(&x->sa);
    }
    return NULL;
}

/* Returns one-way ns; *kicks gets eventfd kicks per one-way wake. */
static double bench_xwake(long iters, double *kicks, int *same)
{
    struct xwake x;
    memset(&x, 0, sizeof x);
    x.iters = iters;
    fs_fiber *fa, *fb;
    struct fs_stats s0, s1;
    fs_stats_get(&s0);
    int rc = fs_spawn(&fa, xwake_a, &x, NULL);
    if (rc)
        die("fs_spawn", rc);
    while (!atomic_load(&x.a_up))
        sched_yield();
    if ((rc = fs_spawn(&fb, xwake_b, &x, NULL)))
        die("fs_spawn", rc);
    fs_join(fa, NULL, FS_NO_DEADLINE);
    fs_join(fb, NULL, FS_NO_DEADLINE);
    fs_stats_get(&s1);
    *kicks = (double)(s1.carrier_wakes - s0.carrier_wakes) / (2.0 * iters);
    *same = pthread_equal(x.ta, x.tb);
    return (double)(x.t1 - x.t0) / (2.0 * iters);
}

/* ---- idle CPU ------------------------------------------------------------ */

static double cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

static void *ticker(void *arg)
{
    int64_t period = *(int64_t *)arg, end = fs_now() + 1000000000;
    for (int64_t t = fs_now() + period; t < end; t += period)
        fs_sleep_until(t);
    return NULL;
}

static void idle_cpu(void)
{
    int64_t forever = 1000000000;
    double c0 = cpu_ms();
    in_fiber(ticker, &forever); /* one sleep of 1 s */
    double c1 = cpu_ms();
    int64_t ms = 1000000;
    in_fiber(ticker, &ms);
    double c2 = cpu_ms();
    printf("idle-cpu: truly idle %.2f ms/s, 1 ms ticker %.2f ms/s\n", c1 - c0, c2 - c1);
}

/* ---- 7. a stuck carrier ------------------------------------------------- */

/* Fiber S wakes the started fibers F (which ran before on S's carrier, and
 * parked), then blocks its carrier in a call the runtime cannot see: a
 * nanosleep made with an inline syscall instruction. One F lands in S's
 * runnext slot, which only the monitor takes from a stuck carrier (after
 * it judged it stuck); the others go to S's ring, which an idle carrier
 * steals at once. Each F records when it ran; the delay is from the
 * moment S blocked. */
enum { STUCK_F = 3, STUCK_MS = 100 };

struct stuck {
    struct bsem go[STUCK_F];
    _Atomic int parked;
    int64_t t_block;
    int64_t ran[STUCK_F];
};

struct stuck_arg {
    struct stuck *st;
    int i;
};

static void *stuck_f(void *arg)
{
    struct stuck_arg *a = arg;
    atomic_fetch_add(&a->st->parked, 1);
    bsem_wait(&a->st->go[a->i]);
    a->st->ran[a->i] = now_ns();
    return NULL;
}

static void *stuck_s(void *arg)
{
    struct stuck *st = arg;
    fs_fiber *f[STUCK_F];
    struct stuck_arg args[STUCK_F];
    for (int i = 0; i < STUCK_F; i++) {
        args[i] = (struct stuck_arg){st, i};
        if (fs_spawn(&f[i], stuck_f, &args[i], NULL))
            die("fs_spawn", EAGAIN);
    }
    /* They start here (runnext) and park; S runs again once they have. */
    while (atomic_load(&st->parked) < STUCK_F)
        fs_yield();
    for (int i = STUCK_F; i-- > 0;)
        bsem_post(&st->go[i]); /* go[0] posted last: it ends in runnext */
    struct timespec ts = {0, STUCK_MS * 1000000L};
    st->t_block = now_ns();
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "0"((long)SYS_nanosleep), "D"(&ts), "S"(NULL)
                     : "rcx", "r11", "memory");
    (void)ret;
    for (int i = 0; i < STUCK_F; i++)
        fs_join(f[i], NULL, FS_NO_DEADLINE);
    return NULL;
}

/* 7b: a fiber that loops between an unseen blocking call (an inline
 * nanosleep of 1 ms) and waking a worker, as InnoDB's io_uring completion
 * thread does: how long each woken worker waits to run. */
enum { LOOP_N = 300 };

struct stuck_loop {
    struct fs_waiter *_Atomic slot;
    _Atomic int done;
    int64_t t_wake;
    double lat[LOOP_N];
};

static void *loop_worker(void *arg)
{
    struct stuck_loop *l = arg;
    for (int i = 0; i < LOOP_N; i++) {
        struct fs_waiter w;
        fs_waiter_prepare(&w);
        atomic_store(&l->slot, &w);
        fs_waiter_wait(&w, FS_PARK_OTHER, NULL, FS_NO_DEADLINE, NULL, NULL);
        l->lat[i] = (double)(fs_now() - l->t_wake) / 1e6;
    }
    atomic_store(&l->done, 1);
    return NULL;
}

static void *loop_blocker(void *arg)
{
    struct stuck_loop *l = arg;
    struct timespec ts = {0, 1000000};
    while (!atomic_load(&l->done)) {
        long ret;
        __asm__ volatile("syscall"
                         : "=a"(ret)
                         : "0"((long)SYS_nanosleep), "D"(&ts), "S"(NULL)
                         : "rcx", "r11", "memory");
        (void)ret;
        struct fs_waiter *w = atomic_exchange(&l->slot, NULL);
        if (w) {
            l->t_wake = fs_now();
            fs_waiter_wake(w);
        }
    }
    return NULL;
}

/* Median ms from the wake to the worker running. */
static double bench_stuck_loop(void)
{
    static struct stuck_loop l;
    memset(&l, 0, sizeof l);
    fs_fiber *w, *b;
    if (fs_spawn(&w, loop_worker, &l, NULL) || fs_spawn(&b, loop_blocker, &l, NULL))
        die("fs_spawn", EAGAIN);
    fs_join(w, NULL, FS_NO_DEADLINE);
    fs_join(b, NULL, FS_NO_DEADLINE);
    return median(l.lat, LOOP_N);
}

/* ms from the block to the run of the runnext fiber (*runnext) and of
 * the slowest ring fiber (*ring). */
static void bench_stuck(double *runnext, double *ring)
{
    struct stuck st;
    memset(&st, 0, sizeof st);
    in_fiber(stuck_s, &st);
    *runnext = (double)(st.ran[0] - st.t_block) / 1e6;
    int64_t worst = 0;
    for (int i = 1; i < STUCK_F; i++)
        if (st.ran[i] - st.t_block > worst)
            worst = st.ran[i] - st.t_block;
    *ring = (double)worst / 1e6; /* 0: they all ran before S blocked */
}

/* ---- 4. timers ---------------------------------------------------------- */

struct lateness {
    int64_t d;
    int n;
    double *late; /* ns, n samples */
};

static void *timer_fiber(void *arg)
{
    struct lateness *l = arg;
    for (int i = 0; i < l->n; i++) {
        int64_t dl = fs_now() + l->d;
        fs_sleep_until(dl);
        l->late[i] = (double)(fs_now() - dl);
    }
    return NULL;
}

static void *timer_thread(void *arg)
{
    struct lateness *l = arg;
    for (int i = 0; i < l->n; i++) {
        int64_t dl = now_ns() + l->d;
        struct timespec ts = {dl / 1000000000, dl % 1000000000};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
        l->late[i] = (double)(now_ns() - dl);
    }
    return NULL;
}

/* ---- 5 and 6: children that hold idle fibers or threads ------------------ */

static _Atomic long idle_parked;
static int64_t idle_until;

static void *idle_fiber(void *arg)
{
    (void)arg;
    atomic_fetch_add_explicit(&idle_parked, 1, memory_order_relaxed);
    fs_sleep_until(idle_until);
    return NULL;
}

struct idle_spawn {
    long n;        /* fibers in all */
    int spawners;  /* 1, or 2: one spawner fiber per carrier */
    _Atomic int up;
    pthread_t helper_thread;
    long rss0, rss1, pte0, pte1;
    double secs;
};

/* Spawns its share of the idle fibers. */
static void spawn_share(long n)
{
    struct fs_spawn_attr attr = {.detached = true};
    for (long i = 0; i < n; i++) {
        int rc = fs_spawn(NULL, idle_fiber, NULL, &attr);
        if (rc)
            die("fs_spawn (idle)", rc);
        /* Let the queued ones run and park now and then, as a real
         * spawner would (a plain yield would come straight back). */
        if (i % 256 == 255)
            fs_sleep_until(fs_now() + 1000);
    }
}

static void *idle_helper(void *arg)
{
    struct idle_spawn *is = arg;
    is->helper_thread = pthread_self(); /* its carrier */
    atomic_store(&is->up, 1);
    spawn_share(is->n / 2);
    return NULL;
}

static void *idle_spawner(void *arg)
{
    struct idle_spawn *is = arg;
    idle_until = fs_now() + 3600LL * 1000000000;
    is->rss0 = read_kb("/proc/self/status", "VmRSS");
    is->pte0 = read_kb("/proc/self/status", "VmPTE");
    int64_t t0 = now_ns();
    long mine = is->n;
    if (is->spawners == 2) {
        /* The helper lands on the other carrier: this one is busy
         * spinning until it runs, and after that both stay put. */
        fs_fiber *h;
        int rc = fs_spawn(&h, idle_helper, is, &(struct fs_spawn_attr){.detached = true});
        if (rc)
            die("fs_spawn", rc);
        /* A second spawn pushes it out of runnext (owner-only) into the
         * ring, where the idle carrier steals it. */
        if ((rc = fs_spawn(NULL, nop_fn, NULL, &(struct fs_spawn_attr){.detached = true})))
            die("fs_spawn", rc);
        while (!atomic_load(&is->up))
            __builtin_ia32_pause();
        if (pthread_equal(is->helper_thread, pthread_self()))
            fprintf(stderr, "runtime_bench: both spawners on one carrier\n");
        mine -= is->n / 2;
    }
    spawn_share(mine);
    while (atomic_load(&idle_parked) < is->n)
        fs_sleep_until(fs_now() + 100000);
    /* The last ones counted themselves before their park completed. */
    fs_sleep_until(fs_now() + 1000000);
    is->secs = (double)(now_ns() - t0 - 1000000) / 1e9;
    is->rss1 = read_kb("/proc/self/status", "VmRSS");
    is->pte1 = read_kb("/proc/self/status", "VmPTE");
    return NULL;
}

static int child_fibers(long n, int spawners)
{
    struct fs_config cfg;
    char err[256];
    if (fs_config_from_env(&cfg, err, sizeof err) != 0) { /* FIBERSHIM_IDLE_SPIN_NS... */
        fprintf(stderr, "runtime_bench: %s\n", err);
        return 2;
    }
    cfg.carriers = 2;
    int rc = fs_init(&cfg);
    if (rc)
        die("fs_init", rc);
    struct idle_spawn is = {.n = n, .spawners = spawners};
    in_fiber(nop_fn, NULL); /* start the carriers before the baseline */
    in_fiber(idle_spawner, &is);
    printf("%ld %ld %ld %ld %.6f\n", is.rss0, is.rss1, is.pte0, is.pte1, is.secs);
    fflush(stdout);
    _exit(0); /* the idle fibers never wake */
}

static _Atomic uint32_t thr_gate;
static _Atomic long thr_parked;

static void *idle_thread(void *arg)
{
    (void)arg;
    atomic_fetch_add(&thr_parked, 1);
    while (atomic_load(&thr_gate) == 0)
        futex(&thr_gate, FUTEX_WAIT_PRIVATE, 0);
    return NULL;
}

static int child_threads(long n)
{
    long rss0 = read_kb("/proc/self/status", "VmRSS");
    long ks0 = read_kb("/proc/meminfo", "KernelStack");
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        pthread_t t;
        int rc = pthread_create(&t, NULL, idle_thread, NULL);
        if (rc)
            die("pthread_create (idle)", rc);
    }
    while (atomic_load(&thr_parked) < n)
        usleep(1000);
    usleep(10000);
    double secs = (double)(now_ns() - t0) / 1e9;
    long rss1 = read_kb("/proc/self/status", "VmRSS");
    long ks1 = read_kb("/proc/meminfo", "KernelStack");
    printf("%ld %ld %ld %ld %.6f\n", rss0, rss1, ks0, ks1, secs);
    fflush(stdout);
    _exit(0);
}

/* The page faults a million idle fibers cannot avoid, with no runtime:
 * two threads (the two carriers) touch, for every 8 MiB slot, the two
 * pages a fiber's spawner and its first run touch (its record at the
 * top, its first frames below) and so the slot's page-table page. The
 * floor under row 6 on this machine. */
struct floor_part {
    char *base;
    long n, first;
};

static void *floor_touch(void *arg)
{
    struct floor_part *p = arg;
    const size_t slot = (size_t)8 << 20, pg = 4096;
    for (long i = p->first; i < p->n; i += 2) {
        char *top = p->base + (size_t)i * slot + slot;
        top[-1] = 1;
        top[-(long)pg - 1] = 1;
    }
    return NULL;
}

static int child_floor(long n)
{
    long rss0 = read_kb("/proc/self/status", "VmRSS");
    long pte0 = read_kb("/proc/self/status", "VmPTE");
    char *m = mmap(NULL, (size_t)n << 23, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        die("mmap", errno);
    struct floor_part parts[2] = {{m, n, 0}, {m, n, 1}};
    pthread_t t[2];
    int64_t t0 = now_ns();
    for (int i = 0; i < 2; i++) {
        int rc = pthread_create(&t[i], NULL, floor_touch, &parts[i]);
        if (rc)
            die("pthread_create", rc);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    double secs = (double)(now_ns() - t0) / 1e9;
    printf("%ld %ld %ld %ld %.6f\n", rss0, read_kb("/proc/self/status", "VmRSS"), pte0,
           read_kb("/proc/self/status", "VmPTE"), secs);
    fflush(stdout);
    _exit(0);
}

static char self_exe[4096];

/* Runs this program with --child kind n; parses its 5 numbers. */
static int run_child(const char *kind, long n, long v[4], double *secs)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "'%s' --child %s %ld", self_exe, kind, n);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    int got = fscanf(p, "%ld %ld %ld %ld %lf", &v[0], &v[1], &v[2], &v[3], secs);
    int st = pclose(p);
    return got == 5 && st == 0 ? 0 : -1;
}

/* ---- the table ---------------------------------------------------------- */

static void row(const char *n, const char *what, const char *fib, const char *thr,
                const char *ratio, const char *target, const char *res)
{
    printf("| %s | %s | %s | %s | %s | %s | %s |\n", n, what, fib, thr, ratio, target, res);
    fflush(stdout);
}

#define FMT(buf, ...) (snprintf(buf, sizeof buf, __VA_ARGS__), buf)

int main(int argc, char **argv)
{
    bool quick = false;
    if (argc >= 4 && strcmp(argv[1], "--child") == 0) {
        long n = strtol(argv[3], NULL, 10);
        if (strcmp(argv[2], "fibers") == 0)
            return child_fibers(n, 1);
        if (strcmp(argv[2], "fibers2") == 0)
            return child_fibers(n, 2);
        if (strcmp(argv[2], "floor") == 0)
            return child_floor(n);
        return child_threads(n);
    }
    xwake_fds = argc == 3 && strcmp(argv[1], "--xwake-fds") == 0;
    bool xwake_only = argc == 3 && (strcmp(argv[1], "--xwake") == 0 || xwake_fds);
    bool idle_only = argc == 2 && strcmp(argv[1], "--idle-cpu") == 0;
    for (int i = 1; i < argc && !xwake_only && !idle_only; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            quick = true;
        } else {
            fprintf(stderr, "usage: %s [--quick | --xwake RUNS | --xwake-fds RUNS | --idle-cpu]\n",
                    argv[0]);
            return 2;
        }
    }
    ssize_t len = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    if (len <= 0)
        die("readlink /proc/self/exe", errno);
    self_exe[len] = 0;

    char date[64];
    time_t tnow = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S %Z", localtime(&tnow));
    struct utsname un;
    uname(&un);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    printf("# fibershim runtime micro-benchmarks\n\n");
    printf("- date: %s\n- kernel: %s %s %s\n- nproc: %ld\n- carriers: 2, default stack %zu KiB"
           "%s\n- each number: median of %d repetitions unless stated\n\n",
           date, un.sysname, un.release, un.machine, ncpu, fs_default_stack_size() / 1024,
           quick ? "\n- mode: --quick (no 1M-fiber row; 10,000 fibers in row 5)" : "", REPS);
    fflush(stdout);

    /* Start the runtime (and its carriers) before any thread is pinned:
     * carriers inherit the affinity of the thread that starts them. */
    struct fs_config cfg;
    char err[256];
    if (fs_config_from_env(&cfg, err, sizeof err) != 0) { /* FIBERSHIM_IDLE_SPIN_NS... */
        fprintf(stderr, "runtime_bench: %s\n", err);
        return 2;
    }
    cfg.carriers = 2;
    int rc = fs_init(&cfg);
    if (rc)
        die("fs_init", rc);
    in_fiber(nop_fn, NULL);
    if (idle_only) {
        idle_cpu();
        return 0;
    }
    if (xwake_only) {
        int runs = atoi(argv[2]);
        if (runs < 1 || runs > 1000)
            runs = 5;
        double *ns = calloc((size_t)runs, sizeof *ns), k, dummy;
        int same, s1;
        bench_xwake(2000, &dummy, &s1);
        for (int i = 0; i < runs; i++) {
            ns[i] = bench_xwake(20000, &k, &same);
            printf("xwake run %d: %.0f ns one way, %.2f eventfd kicks per wake%s\n", i + 1, ns[i], k,
                   same ? " (WARNING: one carrier)" : "");
        }
        printf("xwake: median %.0f ns (%d runs)\n", median(ns, runs), runs);
        return 0;
    }

    int cpu_b = ncpu > 1 ? 1 : 0;
    double v[REPS], w[REPS];
    char a[64], b[64], r[64], t[600];
    int misses = 0;

    printf("| # | measurement | fibershim | pthreads | ratio (threads/fibers) | target | result |\n");
    printf("|---|---|---:|---:|---:|---|---|\n");

    /* 1. context switch */
    long nsw = 2000000;
    in_fiber(yield_driver, &(long){nsw / 10});
    for (int i = 0; i < REPS; i++)
        v[i] = *(double *)in_fiber(yield_driver, &nsw);
    long nft = 100000;
    for (int i = 0; i < REPS; i++)
        w[i] = run_duo(pp_thread_a, pp_thread_b, 0, 0, nft) / (2.0 * nft);
    double sw_f = median(v, REPS), sw_t = median(w, REPS);
    bool ok = sw_f <= 30;
    misses += !ok;
    row("1", "context switch, ns/switch: 2 fibers fs_yield ping-pong on 1 carrier vs. "
             "2 threads futex ping-pong, both pinned to CPU 0",
        FMT(a, "%.1f", sw_f), FMT(b, "%.0f", sw_t), FMT(r, "%.0fx", sw_t / sw_f), "<= 30 ns",
        ok ? "PASS" : "MISS");

    long nraw = 20000000;
    bench_raw_switch(nraw / 10);
    for (int i = 0; i < REPS; i++)
        v[i] = bench_raw_switch(nraw);
    for (int i = 0; i < REPS; i++)
        w[i] = run_duo(yield_thread, yield_thread, 0, 0, nft) / (2.0 * nft);
    double raw = median(v, REPS), yl = median(w, REPS);
    row("1b", "raw switch, ns/switch: fs__context_switch alone vs. "
              "2 threads sched_yield loop, both pinned to CPU 0",
        FMT(a, "%.1f", raw), FMT(b, "%.0f", yl), FMT(r, "%.0fx", yl / raw), "-", "info");

    /* 2. spawn + join */
    long nsp = 200000, ntp = 5000;
    in_fiber(spawn_driver, &(long){nsp / 10});
    bench_pthread_spawn(ntp / 10);
    for (int i = 0; i < REPS; i++) {
        v[i] = *(double *)in_fiber(spawn_driver, &nsp);
        w[i] = bench_pthread_spawn(ntp);
    }
    double sp_f = median(v, REPS), sp_t = median(w, REPS);
    ok = sp_t / sp_f >= 20;
    misses += !ok;
    row("2", "spawn+join, ns/pair: fs_spawn+fs_join from a fiber vs. pthread_create+pthread_join",
        FMT(a, "%.0f", sp_f), FMT(b, "%.0f", sp_t), FMT(r, "%.1fx", sp_t / sp_f),
        ">= 20x faster", ok ? "PASS" : "MISS");

    /* 3. cross-carrier wake */
    long nx = 20000, nxt = 5000; /* threads: ~30 us per wake on a VM */
    double kicks[REPS], dummy;
    int same = 0, s1;
    bench_xwake(nx / 10, &dummy, &s1);
    for (int i = 0; i < REPS; i++) {
        v[i] = bench_xwake(nx, &kicks[i], &s1);
        same |= s1;
        w[i] = run_duo(pp_thread_a, pp_thread_b, 0, cpu_b, nxt) / (2.0 * nxt);
    }
    double xw_f = median(v, REPS), xw_t = median(w, REPS), kk = median(kicks, REPS);
    row("3", FMT(t, "cross-carrier wake, ns one-way (round trip / 2): fiber unparks fiber "
                    "parked on the other carrier (%.2f eventfd kicks per wake%s) vs. "
                    "2 threads futex ping-pong, CPUs 0 and %d",
                 kk, same ? "; WARNING: both fibers ran on one carrier" : "", cpu_b),
        FMT(a, "%.0f", xw_f), FMT(b, "%.0f", xw_t), FMT(r, "%.2fx", xw_t / xw_f), "-", "info");

    /* 4. timer lateness */
    static const struct {
        int64_t d;
        int n;
        const char *name;
    } tl[] = {{100000, 500, "100 us"}, {1000000, 200, "1 ms"}, {10000000, 100, "10 ms"}};
    for (unsigned k = 0; k < sizeof tl / sizeof tl[0]; k++) {
        struct lateness lf = {tl[k].d, tl[k].n, calloc(tl[k].n, sizeof(double))};
        struct lateness lt = {tl[k].d, tl[k].n, calloc(tl[k].n, sizeof(double))};
        in_fiber(timer_fiber, &lf);
        pthread_t th;
        pthread_create(&th, NULL, timer_thread, &lt);
        pthread_join(th, NULL);
        qsort(lf.late, lf.n, sizeof(double), cmp_double);
        qsort(lt.late, lt.n, sizeof(double), cmp_double);
        char wt[200];
        row("4", FMT(wt, "timer lateness, us median / p99 (%d samples): fs_sleep_until(now + %s) vs. "
                         "clock_nanosleep(TIMER_ABSTIME) on a thread",
                     tl[k].n, tl[k].name),
            FMT(a, "%.1f / %.1f", pct_sorted(lf.late, lf.n, .5) / 1e3,
                pct_sorted(lf.late, lf.n, .99) / 1e3),
            FMT(b, "%.1f / %.1f", pct_sorted(lt.late, lt.n, .5) / 1e3,
                pct_sorted(lt.late, lt.n, .99) / 1e3),
            "-", "-", "info");
        free(lf.late);
        free(lt.late);
    }

    /* 5. memory per idle fiber / thread (one child each: RSS is noisy
     * enough without repetitions of 100,000 stacks) */
    long nfib = quick ? 10000 : 100000, nthr = 10000;
    long cf[4], ct[4];
    double fsecs, tsecs;
    if (run_child("fibers", nfib, cf, &fsecs) != 0) {
        row("5", "resident memory per idle fiber", "child failed", "-", "-", "<= 8 KiB", "MISS");
        misses++;
    } else if (run_child("threads", nthr, ct, &tsecs) != 0) {
        row("5", "resident memory per idle thread", "-", "child failed", "-", "-", "MISS");
        misses++;
    } else {
        double kf = (double)(cf[1] - cf[0]) / nfib;
        double pf = (double)(cf[3] - cf[2]) / nfib;
        double kt = (double)(ct[1] - ct[0]) / nthr;
        double ks = (double)(ct[3] - ct[2]) / nthr;
        ok = kf <= 8;
        misses += !ok;
        char wt[400];
        row("5", FMT(wt, "resident KiB per idle entity: %ld fibers in fs_sleep_until (+%.2f KiB "
                         "page tables each) vs. %ld threads, default attributes, RSS / RSS + 16 KiB "
                         "kernel stack (KernelStack delta measured: %.1f KiB each)",
                     nfib, pf, nthr, ks),
            FMT(a, "%.2f", kf), FMT(b, "%.1f / %.1f", kt, kt + 16),
            FMT(r, "%.1fx / %.1fx", kt / kf, (kt + 16) / kf), "<= 8 KiB",
            ok ? "PASS" : "MISS");
    }

    /* 6. a million idle fibers */
    if (!quick) {
        long n = 1000000;
        if (run_child("fibers", n, cf, &fsecs) != 0) {
            row("6", "1,000,000 idle fibers", "child failed", "-", "-", "< 10 s", "MISS");
            misses++;
        } else {
            ok = fsecs < 10;
            misses += !ok;
            char wt[300];
            row("6", FMT(wt, "1,000,000 idle fibers: seconds to spawn all and park them in "
                             "fs_sleep_until (RSS %.0f MiB, %.2f KiB each; page tables %.0f MiB)",
                         cf[1] / 1024.0, (double)(cf[1] - cf[0]) / n, (cf[3] - cf[2]) / 1024.0),
                FMT(a, "%.2f s", fsecs), "-", "-", "< 10 s", ok ? "PASS" : "MISS");
        }
        if (run_child("fibers2", n, cf, &fsecs) == 0)
            row("6b", "1,000,000 idle fibers, two spawner fibers (one per carrier), seconds",
                FMT(a, "%.2f s", fsecs), "-", "-", "-", "info");
    }
    /* 7. a stuck carrier */
    for (int i = 0; i < REPS; i++)
        bench_stuck(&v[i], &w[i]);
    {
        char wt[400];
        row("7", FMT(wt, "stuck carrier, ms until a runnable started fiber runs elsewhere, while "
                         "its carrier sleeps %d ms in an inline syscall: the fiber in the stuck "
                         "carrier's runnext slot (monitor) / the slowest of %d in its ring (idle "
                         "carrier steals)",
                     STUCK_MS, STUCK_F - 1),
            FMT(a, "%.2f / %.2f", median(v, REPS), median(w, REPS)), "-", "-", "-", "info");
    }
    {
        char wt[400];
        row("7b", FMT(wt, "stuck carrier, ms median from a wake to the woken fiber running, when "
                          "the waker loops between an inline-syscall nanosleep of 1 ms and "
                          "the wake (InnoDB's io_uring completion thread), %d wakes",
                      LOOP_N),
            FMT(a, "%.3f", bench_stuck_loop()), "-", "-", "-", "info");
    }
    printf("\n%d target(s) missed\n", misses);
    return 0;
}
