/*
 * stress.c - the runtime's concurrent paths under ThreadSanitizer.
 *
 * A plain program (Criterion does not start under TSan), linked with the
 * runtime built with -fsanitize=thread. It runs, for a bounded few seconds,
 * every path where threads meet, and checks the results: TSan reports
 * the races, this program reports lost wake-ups, lost bytes and wrong
 * values. Usage: stress [2..4 carriers] [--migrate] [--idle-spin]. Exit status: 0 when
 * every check passed, 1 when one failed, 3 when a phase hung, and TSan's
 * 66 when it reported anything.
 *
 * The main thread is adopted (carrier 0, as the shim does with main()),
 * so adopted-thread switches are covered too; the other carriers are
 * started threads, and plain threads act as "any thread" callers.
 *
 * Phases, one after the other (a watchdog names the phase that hangs):
 *  1. spawn/join: from fibers and from plain threads, joinable, detached,
 *     timed joins;
 *  2. park/unpark: ping-pong through fs_waiter gates between fibers, and
 *     between fibers and plain threads; raw fs_park/fs_unpark races, with
 *     and without deadlines that race the unpark;
 *  3. work stealing: one fiber spawns many short ones;
 *  4. timers: many short fs_sleep_until, none may return early;
 *  5. netpoll: socketpair streams read by fibers (fs_fd_edges,
 *     fs_fd_drained, fs_wait_fd with deadlines that race the data),
 *     written by fibers and plain threads; fs_fd_close from fibers and
 *     plain threads, racing a waiter's park, its deadline, fs_fd_probe;
 *     fs_wait_fds;
 *  6. fs_interrupt from fibers and plain threads, on sleeps and I/O waits;
 *  7. handoff: a fiber spins 50 ms while work queues, until the monitor
 *     has started a spare carrier (fs_stats.handoffs > 0); meanwhile the
 *     monitor fires the stuck carrier's timers, takes its runnext fiber
 *     and harvests its epoll;
 *  8. thread-local state: fibers (moving between carriers with
 *     --migrate) check after every park that errno's value is still
 *     theirs, and, where fibers have TLS of their own (fs_fiber_tls(): not
 *     in a sanitizer build, runtime/tls.c), errno's address and a __thread
 *     variable too (with shared TLS, a fiber that moved has another
 *     errno: the runtime carries only the value).
 *  9. the futex table: fibers (parked in the table) and plain threads (in
 *     the kernel) share raw-futex latches guarding plain counters, with
 *     timed waits racing the wakes, and unlocks that wake with FUTEX_WAKE,
 *     FUTEX_WAKE_OP or a requeue onto the same word.
 * Meanwhile a plain thread reads fs_stats_get and fs_carrier_stats.
 *
 * Values handed between threads are plain (not atomic) on purpose: the
 * runtime's spawn, join, park and wake paths must order them, and TSan
 * reports it if they do not.
 */
#include "fibershim.h"

#include <errno.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MS 1000000LL
#define US 1000LL

/* ---- checks ---------------------------------------------------------------- */

static _Atomic int failures;
static const char *_Atomic phase = "start";

static void fail(int line, const char *fmt, ...)
{
    char buf[512];
    int n = snprintf(buf, sizeof buf, "stress.c:%d [%s]: ", line, atomic_load(&phase));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "FAIL %s\n", buf);
    atomic_fetch_add(&failures, 1);
}

/* Any thread, fibers included (nothing here longjmps). */
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fail(__LINE__, "check failed: " #cond " " __VA_ARGS__);                                \
    } while (0)

/* Aborts the run if a phase hangs (a lost wake-up shows up as a hang). */
static _Atomic int64_t watchdog_deadline;

static void *watchdog_main(void *arg)
{
    (void)arg;
    for (;;) {
        nanosleep(&(struct timespec){0, 100 * MS}, NULL);
        int64_t dl = atomic_load(&watchdog_deadline);
        if (dl && fs_now() > dl) {
            fprintf(stderr, "FAIL: phase '%s' hangs (lost wake-up?)\n", atomic_load(&phase));
            _exit(3);
        }
    }
    return NULL;
}

static void phase_begin(const char *name)
{
    atomic_store(&phase, name);
    atomic_store(&watchdog_deadline, fs_now() + 60000 * MS);
    fprintf(stderr, "stress: %s\n", name);
}

static uint32_t rng_next(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

/* ---- a gate: a counting event any thread may wait on ----------------------
 *
 * One waiter at a time. The waiter publishes its fs_waiter, then rechecks
 * the count; a poster bumps the count, then takes the waiter. Both sides
 * are sequentially consistent, so one of them sees the other: a post is
 * never lost. A waiter that finds a post after publishing takes itself
 * back; if a poster took it first, that poster's wake ends the wait. */

struct gate {
    _Atomic int posts;
    struct fs_waiter *_Atomic waiter;
};

static void gate_post(struct gate *g)
{
    atomic_fetch_add(&g->posts, 1);
    struct fs_waiter *w = atomic_exchange(&g->waiter, NULL);
    if (w)
        fs_waiter_wake(w);
}

static void gate_wait(struct gate *g)
{
    for (;;) {
        int n = atomic_load(&g->posts);
        while (n > 0)
            if (atomic_compare_exchange_weak(&g->posts, &n, n - 1))
                return;
        struct fs_waiter w;
        fs_waiter_prepare(&w);
        atomic_store(&g->waiter, &w);
        if (atomic_load(&g->posts) > 0 && atomic_exchange(&g->waiter, NULL) == &w) {
            /* Took ourselves back: nobody wakes w; end its prepared park. */
            fs_waiter_wait(&w, FS_PARK_OTHER, g, 0, NULL, NULL);
            continue;
        }
        int rc = fs_waiter_wait(&w, FS_PARK_OTHER, g, FS_NO_DEADLINE, NULL, NULL);
        CHECK(rc == 0, "(rc %d)", rc);
    }
}

/* ---- plain threads ---------------------------------------------------------
 *
 * The main thread is a fiber (adopted): blocking it in pthread_join would
 * hold carrier 0, and with it every fiber pinned there, which the thread
 * being joined may be waiting for. So it first waits on a gate the thread
 * posts as its last act, then joins a thread that is merely exiting. */

struct thread {
    pthread_t t;
    void *(*fn)(void *);
    void *arg;
    struct gate done;
};

static void *thread_trampoline(void *arg)
{
    struct thread *th = arg;
    th->fn(th->arg);
    gate_post(&th->done);
    return NULL;
}

static struct thread *thread_start(void *(*fn)(void *), void *arg)
{
    struct thread *th = calloc(1, sizeof *th);
    if (th) {
        th->fn = fn;
        th->arg = arg;
    }
    if (!th || pthread_create(&th->t, NULL, thread_trampoline, th) != 0) {
        fprintf(stderr, "cannot start a thread\n");
        exit(2);
    }
    return th;
}

static void thread_join(struct thread *th)
{
    gate_wait(&th->done);
    pthread_join(th->t, NULL);
    free(th);
}

/* Waits about ns nanoseconds: parked on a fiber, asleep on a thread. */
static void pause_ns(int64_t ns)
{
    if (fs_self())
        fs_sleep_until(fs_now() + ns);
    else
        nanosleep(&(struct timespec){0, ns}, NULL);
}

/* ---- 1. spawn and join ----------------------------------------------------- */

enum { SPAWN_ITERS = 300, SPAWN_FIBERS = 4, SPAWN_THREADS = 2 };

struct job {
    int in, out; /* plain: ordered by spawn and join */
};

static _Atomic int detached_spawned, detached_done;

static void *job_double(void *arg)
{
    struct job *j = arg;
    j->out = 2 * j->in;
    if (j->in % 8 == 0)
        fs_yield();
    return (void *)(intptr_t)(j->in + 1);
}

static void *job_detached(void *arg)
{
    int *slot = arg;
    *slot += 1; /* the spawner reads it once every detached fiber is done */
    atomic_fetch_add(&detached_done, 1);
    return NULL;
}

static int detached_slots[SPAWN_FIBERS * SPAWN_ITERS];

/* Any thread: spawns and joins SPAWN_ITERS children, some detached. */
static void spawn_join_loop(int id)
{
    for (int i = 0; i < SPAWN_ITERS; i++) {
        struct job j = {.in = id * 100000 + i};
        fs_fiber *f;
        int rc = fs_spawn(&f, job_double, &j, NULL);
        CHECK(rc == 0, "(spawn %d)", rc);
        if (rc)
            return;
        void *ret = NULL;
        if (i % 5 == 4) {
            /* Timed joins that may time out, then a final one. */
            while ((rc = fs_join(f, &ret, fs_now() + 20 * US)) == -ETIMEDOUT)
                ;
        } else {
            rc = fs_join(f, &ret, FS_NO_DEADLINE);
        }
        CHECK(rc == 0, "(join %d)", rc);
        CHECK(j.out == 2 * j.in, "(in %d out %d)", j.in, j.out);
        CHECK((intptr_t)ret == j.in + 1);
        if (id < SPAWN_FIBERS && i % 3 != 2) {
            /* Detached at spawn, or by fs_detach racing the exit. */
            atomic_fetch_add(&detached_spawned, 1);
            int *slot = &detached_slots[id * SPAWN_ITERS + i];
            if (i % 3 == 0) {
                rc = fs_spawn(NULL, job_detached, slot, &(struct fs_spawn_attr){.detached = true});
            } else if ((rc = fs_spawn(&f, job_detached, slot, NULL)) == 0) {
                CHECK(fs_detach(f) == 0);
            }
            CHECK(rc == 0, "(detached spawn %d)", rc);
            if (rc)
                atomic_fetch_sub(&detached_spawned, 1);
        }
    }
}

static void *spawn_join_fiber(void *arg)
{
    spawn_join_loop((int)(intptr_t)arg);
    return NULL;
}

static void *spawn_join_thread(void *arg)
{
    spawn_join_loop((int)(intptr_t)arg);
    return NULL;
}

static void phase_spawn_join(void)
{
    phase_begin("spawn/join");
    fs_fiber *f[SPAWN_FIBERS];
    struct thread *t[SPAWN_THREADS];
    for (int i = 0; i < SPAWN_THREADS; i++)
        t[i] = thread_start(spawn_join_thread, (void *)(intptr_t)(SPAWN_FIBERS + i));
    for (int i = 0; i < SPAWN_FIBERS; i++)
        CHECK(fs_spawn(&f[i], spawn_join_fiber, (void *)(intptr_t)i, NULL) == 0);
    for (int i = 0; i < SPAWN_FIBERS; i++)
        CHECK(fs_join(f[i], NULL, FS_NO_DEADLINE) == 0);
    for (int i = 0; i < SPAWN_THREADS; i++)
        thread_join(t[i]);
    while (atomic_load(&detached_done) != atomic_load(&detached_spawned))
        fs_sleep_until(fs_now() + MS);
    int n = 0;
    for (int i = 0; i < SPAWN_FIBERS * SPAWN_ITERS; i++) {
        CHECK(detached_slots[i] <= 1, "(slot %d ran %d times)", i, detached_slots[i]);
        n += detached_slots[i];
    }
    CHECK(n == atomic_load(&detached_spawned), "(%d of %d detached fibers ran)", n,
          atomic_load(&detached_spawned));
}

/* ---- 2. park and unpark ---------------------------------------------------- */

enum { PING_ROUNDS = 2000, PING_FIBER_PAIRS = 3, PING_THREAD_PAIRS = 2 };

struct pingpong {
    struct gate to_a, to_b;
    int ball;      /* plain: handed over by the gates */
    bool b_thread; /* side b is a plain thread */
};

static void *ping_a(void *arg)
{
    struct pingpong *p = arg;
    for (int i = 0; i < PING_ROUNDS; i++) {
        p->ball = 2 * i;
        gate_post(&p->to_b);
        gate_wait(&p->to_a);
        CHECK(p->ball == 2 * i + 1, "(round %d: ball %d)", i, p->ball);
    }
    return NULL;
}

static void *ping_b(void *arg)
{
    struct pingpong *p = arg;
    for (int i = 0; i < PING_ROUNDS; i++) {
        gate_wait(&p->to_b);
        CHECK(p->ball == 2 * i, "(round %d: ball %d)", i, p->ball);
        p->ball = 2 * i + 1;
        gate_post(&p->to_a);
    }
    return NULL;
}

/* Raw park race (as in tests/runtime/test_park.c): the parker publishes
 * each token and parks at once; the unparker, on another thread, unparks
 * as soon as it sees the token, often while the parker is still
 * switching out; with a deadline, the timer races the unpark. The parker
 * waits for the unparker's verdict before its next park. */
enum { RACE_ITERS = 1500 };

struct race {
    int64_t timeout;  /* park deadline after fs_now(); 0: none */
    int max_delay_ns; /* unparker waits 0..this before unparking */
    fs_fiber *_Atomic parker;
    _Atomic fs_park_token pub;
    struct gate verdict;
    int rc[RACE_ITERS];    /* per park: what fs_park returned */
    bool woke[RACE_ITERS]; /* per park: what fs_unpark returned */
};

static void *race_parker(void *arg)
{
    struct race *r = arg;
    atomic_store(&r->parker, fs_self());
    for (int i = 0; i < RACE_ITERS; i++) {
        fs_park_token tok = fs_park_prepare();
        atomic_store(&r->pub, tok);
        int64_t dl = r->timeout ? fs_now() + r->timeout : FS_NO_DEADLINE;
        r->rc[i] = fs_park(tok, FS_PARK_OTHER, r, dl, NULL, NULL);
        gate_wait(&r->verdict);
    }
    return NULL;
}

static void *race_unparker(void *arg)
{
    struct race *r = arg;
    fs_fiber *f;
    while (!(f = atomic_load(&r->parker)))
        fs_yield();
    uint32_t rng = 12345;
    fs_park_token last = 0;
    for (int i = 0; i < RACE_ITERS; i++) {
        fs_park_token tok;
        unsigned n = 0;
        while ((tok = atomic_load(&r->pub)) == last)
            if (++n % 64 == 0)
                fs_yield(); /* fiber: to others; plain thread: sched_yield */
        if (r->max_delay_ns) {
            int64_t end = fs_now() + (int64_t)(rng_next(&rng) % (uint32_t)r->max_delay_ns);
            while (fs_now() < end)
                ;
        }
        r->woke[i] = fs_unpark(f, tok);
        last = tok;
        gate_post(&r->verdict);
    }
    return NULL;
}

static void race_check(struct race *r)
{
    for (int i = 0; i < RACE_ITERS; i++) {
        if (!r->timeout) {
            CHECK(r->rc[i] == 0 && r->woke[i], "(park %d: rc %d, unpark %d: lost wake)", i,
                  r->rc[i], r->woke[i]);
        } else {
            CHECK(r->rc[i] == 0 || r->rc[i] == -ETIMEDOUT, "(park %d: rc %d)", i, r->rc[i]);
            CHECK((r->rc[i] == 0) == r->woke[i], "(park %d: rc %d but unpark said %d)", i, r->rc[i],
                  r->woke[i]);
        }
    }
}

static void phase_park(void)
{
    phase_begin("park/unpark");
    struct pingpong pp[PING_FIBER_PAIRS + PING_THREAD_PAIRS];
    memset(pp, 0, sizeof pp);
    fs_fiber *fa[PING_FIBER_PAIRS + PING_THREAD_PAIRS], *fb[PING_FIBER_PAIRS];
    struct thread *tb[PING_THREAD_PAIRS];
    for (int i = 0; i < PING_FIBER_PAIRS + PING_THREAD_PAIRS; i++) {
        if (i < PING_FIBER_PAIRS)
            CHECK(fs_spawn(&fb[i], ping_b, &pp[i], NULL) == 0);
        else
            tb[i - PING_FIBER_PAIRS] = thread_start(ping_b, &pp[i]);
        CHECK(fs_spawn(&fa[i], ping_a, &pp[i], NULL) == 0);
    }

    /* The raw races run meanwhile: unparkers on a plain thread and on a
     * fiber; without deadlines, and with 50 us deadlines against unparks
     * 0-100 us late. */
    static struct race races[4];
    memset(races, 0, sizeof races);
    fs_fiber *rp[4], *ru[2];
    struct thread *rt[2];
    for (int i = 0; i < 4; i++) {
        races[i].timeout = i >= 2 ? 50 * US : 0;
        races[i].max_delay_ns = i >= 2 ? 100 * US : 0;
        CHECK(fs_spawn(&rp[i], race_parker, &races[i], NULL) == 0);
        if (i % 2)
            rt[i / 2] = thread_start(race_unparker, &races[i]);
        else
            CHECK(fs_spawn(&ru[i / 2], race_unparker, &races[i], NULL) == 0);
    }

    for (int i = 0; i < PING_FIBER_PAIRS + PING_THREAD_PAIRS; i++) {
        CHECK(fs_join(fa[i], NULL, FS_NO_DEADLINE) == 0);
        if (i < PING_FIBER_PAIRS)
            CHECK(fs_join(fb[i], NULL, FS_NO_DEADLINE) == 0);
        else
            thread_join(tb[i - PING_FIBER_PAIRS]);
        CHECK(atomic_load(&pp[i].to_a.posts) == 0 && atomic_load(&pp[i].to_b.posts) == 0);
    }
    for (int i = 0; i < 4; i++) {
        CHECK(fs_join(rp[i], NULL, FS_NO_DEADLINE) == 0);
        if (i % 2)
            thread_join(rt[i / 2]);
        else
            CHECK(fs_join(ru[i / 2], NULL, FS_NO_DEADLINE) == 0);
        race_check(&races[i]);
    }
}

/* ---- 3. work stealing ------------------------------------------------------ */

enum { STEAL_ROUNDS = 4, STEAL_FIBERS = 1000 };

struct steal_round {
    int ran[STEAL_FIBERS]; /* plain: each fiber writes its own slot */
    _Atomic int left;
    struct gate done;
};

struct steal_arg {
    struct steal_round *r;
    int i;
};

static void *steal_child(void *arg)
{
    struct steal_arg *a = arg;
    struct steal_round *r = a->r;
    if (a->i % 7 == 0)
        fs_yield();
    r->ran[a->i]++;
    /* The decrements form one release sequence: the last one has seen
     * every slot written. */
    if (atomic_fetch_sub(&r->left, 1) == 1)
        gate_post(&r->done);
    return NULL;
}

static void *steal_spawner(void *arg)
{
    (void)arg;
    static struct steal_round r;
    static struct steal_arg args[STEAL_FIBERS];
    for (int round = 0; round < STEAL_ROUNDS; round++) {
        memset(r.ran, 0, sizeof r.ran);
        atomic_store(&r.left, STEAL_FIBERS);
        for (int i = 0; i < STEAL_FIBERS; i++) {
            args[i] = (struct steal_arg){&r, i};
            int rc =
                fs_spawn(NULL, steal_child, &args[i], &(struct fs_spawn_attr){.detached = true});
            CHECK(rc == 0, "(spawn %d)", rc);
            if (rc)
                atomic_fetch_sub(&r.left, 1);
        }
        gate_wait(&r.done);
        for (int i = 0; i < STEAL_FIBERS; i++)
            CHECK(r.ran[i] == 1, "(round %d: fiber %d ran %d times)", round, i, r.ran[i]);
    }
    return NULL;
}

static void phase_steal(void)
{
    phase_begin("work stealing");
    fs_fiber *f;
    CHECK(fs_spawn(&f, steal_spawner, NULL, NULL) == 0);
    CHECK(fs_join(f, NULL, FS_NO_DEADLINE) == 0);
}

/* ---- 4. timers ------------------------------------------------------------- */

enum { SLEEPERS = 8, SLEEPS = 60 };

static void *sleeper(void *arg)
{
    uint32_t rng = (uint32_t)(uintptr_t)arg * 7919u + 1;
    for (int i = 0; i < SLEEPS; i++) {
        int64_t dl = fs_now() + (int64_t)(rng_next(&rng) % (2 * MS));
        int rc = fs_sleep_until(dl);
        int64_t now = fs_now();
        CHECK(rc == 0, "(rc %d)", rc);
        CHECK(now >= dl, "(woke %lld ns early)", (long long)(dl - now));
        if (i % 10 == 0) {
            /* A timed park nobody wakes. */
            fs_park_token tok = fs_park_prepare();
            rc = fs_park(tok, FS_PARK_OTHER, NULL, fs_now() + 100 * US, NULL, NULL);
            CHECK(rc == -ETIMEDOUT, "(rc %d)", rc);
        }
    }
    return NULL;
}

static void phase_timers(void)
{
    phase_begin("timers");
    fs_fiber *f[SLEEPERS];
    for (int i = 0; i < SLEEPERS; i++)
        CHECK(fs_spawn(&f[i], sleeper, (void *)(intptr_t)i, NULL) == 0);
    for (int i = 0; i < SLEEPERS; i++)
        CHECK(fs_join(f[i], NULL, FS_NO_DEADLINE) == 0);
}

/* ---- 8. thread-local state ---------------------------------------------------- */

enum { TLS_FIBERS = 32, TLS_ROUNDS = 100 };
static __thread long tls_owner = -1;

static void *tls_checker(void *arg)
{
    long id = (long)(intptr_t)arg;
    bool own_tls = fs_fiber_tls();
    if (own_tls) {
        CHECK(tls_owner == -1, "(a new fiber's __thread is %ld)", tls_owner);
        tls_owner = id;
    }
    long *addr = &tls_owner;
    /* errno afresh each time: the compiler may keep the address the const
     * __errno_location() gave first. */
    int *(*volatile errloc)(void) = __errno_location;
    int *ep = errloc();
    for (int r = 0; r < TLS_ROUNDS; r++) {
        *errloc() = (int)(id * 1000 + r);
        if (r % 3 == 0) {
            fs_yield();
        } else if (r % 3 == 1) {
            fs_sleep_until(fs_now() + (r % 5) * 10 * US);
        } else {
            fs_park_token tok = fs_park_prepare();
            fs_park(tok, FS_PARK_OTHER, NULL, fs_now() + 20 * US, NULL, NULL);
        }
        CHECK(*errloc() == id * 1000 + r, "(fiber %ld: errno %d after a park)", id, *errloc());
        if (own_tls)
            CHECK(tls_owner == id && &tls_owner == addr && errloc() == ep,
                  "(fiber %ld: __thread %ld)", id, tls_owner);
    }
    return NULL;
}

static void phase_tls(void)
{
    phase_begin("thread-local state");
    fs_fiber *f[TLS_FIBERS];
    for (int i = 0; i < TLS_FIBERS; i++)
        CHECK(fs_spawn(&f[i], tls_checker, (void *)(intptr_t)i, NULL) == 0);
    for (int i = 0; i < TLS_FIBERS; i++)
        CHECK(fs_join(f[i], NULL, FS_NO_DEADLINE) == 0);
}

/* ---- 5. netpoll ------------------------------------------------------------ */

enum { STREAMS = 4, STREAM_BYTES = 48 * 1024, CLOSE_ROUNDS = 200, MULTI_ROUNDS = 40 };

static int socket_pair(int sv[2])
{
    int rc = socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv);
    CHECK(rc == 0, "(errno %d)", errno);
    if (rc == 0) {
        /* Small buffers, so writers fill them and wait for write edges. */
        int sz = 4096;
        setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
        setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    }
    return rc;
}

static void socket_close(int sv[2])
{
    fs_fd_close(sv[0]);
    fs_fd_close(sv[1]);
    close(sv[0]);
    close(sv[1]);
}

struct stream {
    int sv[2];
    bool thread_writer;
};

/* Fiber: reads the stream (byte k is k mod 251), waiting the way the shim
 * does, often with a deadline that expires as data arrives. */
static void *stream_reader(void *arg)
{
    struct stream *st = arg;
    int fd = st->sv[0];
    char buf[700];
    size_t got = 0;
    uint32_t rng = (uint32_t)fd;
    while (got < STREAM_BYTES) {
        uint32_t snap = fs_fd_edges(fd, FS_POLL_READ);
        ssize_t n = read(fd, buf, 1 + rng_next(&rng) % sizeof buf);
        if (n > 0) {
            for (ssize_t i = 0; i < n; i++)
                if ((unsigned char)buf[i] != (got + (size_t)i) % 251) {
                    CHECK(0, "(byte %zu wrong)", got + (size_t)i);
                    return NULL;
                }
            got += (size_t)n;
            continue;
        }
        CHECK(n < 0 && errno == EAGAIN, "(read %zd errno %d)", n, errno);
        if (n == 0 || errno != EAGAIN)
            return NULL;
        fs_fd_drained(fd, FS_POLL_READ, snap);
        int64_t dl = rng_next(&rng) % 2 ? fs_now() + 30 * US : FS_NO_DEADLINE;
        int rc = fs_wait_fd(fd, FS_POLL_READ, snap, dl, FS_PARK_READ);
        CHECK(rc == 0 || rc == -ETIMEDOUT, "(wait %d)", rc);
    }
    return NULL;
}

/* Fiber or plain thread: writes the stream in chunks. */
static void *stream_writer(void *arg)
{
    struct stream *st = arg;
    int fd = st->sv[1];
    char buf[1500];
    size_t sent = 0;
    uint32_t rng = (uint32_t)fd * 31u;
    while (sent < STREAM_BYTES) {
        size_t len = 1 + rng_next(&rng) % sizeof buf;
        if (len > STREAM_BYTES - sent)
            len = STREAM_BYTES - sent;
        for (size_t i = 0; i < len; i++)
            buf[i] = (char)((sent + i) % 251);
        uint32_t snap = st->thread_writer ? 0 : fs_fd_edges(fd, FS_POLL_WRITE);
        ssize_t n = write(fd, buf, len);
        if (n > 0) {
            sent += (size_t)n;
            if (rng_next(&rng) % 4 == 0)
                fs_yield();
            continue;
        }
        CHECK(n < 0 && errno == EAGAIN, "(write %zd errno %d)", n, errno);
        if (n == 0 || errno != EAGAIN)
            return NULL;
        if (st->thread_writer) {
            poll(&(struct pollfd){.fd = fd, .events = POLLOUT}, 1, 100);
        } else {
            fs_fd_drained(fd, FS_POLL_WRITE, snap);
            int rc = fs_wait_fd(fd, FS_POLL_WRITE, snap, FS_NO_DEADLINE, FS_PARK_WRITE);
            CHECK(rc == 0, "(wait %d)", rc);
        }
    }
    return NULL;
}

/* fs_fd_close from another thread ends a read wait with -EBADF; every
 * other round the wait's deadline races the close, and every fourth the
 * close races an fs_fd_probe. */
struct closing {
    int sv[2];
    int64_t timeout; /* wait deadline after fs_now() */
    bool probe;
    _Atomic int waiting;
    int rc;
};

static void *closing_waiter(void *arg)
{
    struct closing *c = arg;
    char b;
    if (c->probe) {
        atomic_store(&c->waiting, 1);
        fs_fd_probe(c->sv[0]);
    }
    uint32_t snap = fs_fd_edges(c->sv[0], FS_POLL_READ);
    CHECK(read(c->sv[0], &b, 1) < 0 && errno == EAGAIN);
    fs_fd_drained(c->sv[0], FS_POLL_READ, snap);
    atomic_store(&c->waiting, 1);
    c->rc = fs_wait_fd(c->sv[0], FS_POLL_READ, snap, fs_now() + c->timeout, FS_PARK_READ);
    return NULL;
}

static void *closer(void *arg)
{
    uint32_t rng = (uint32_t)(uintptr_t)arg;
    for (int i = 0; i < CLOSE_ROUNDS; i++) {
        struct closing c = {.timeout = i % 2 ? 10000 * MS : 20 * US, .probe = i % 4 == 0};
        if (socket_pair(c.sv))
            return NULL;
        fs_fiber *f;
        CHECK(fs_spawn(&f, closing_waiter, &c, NULL) == 0);
        while (!atomic_load(&c.waiting))
            fs_yield();
        /* Before the park, during it, or as its deadline passes. */
        int64_t end = fs_now() + (int64_t)(rng_next(&rng) % (40 * US));
        while (fs_now() < end)
            ;
        fs_fd_close(c.sv[0]);
        CHECK(fs_join(f, NULL, FS_NO_DEADLINE) == 0);
        /* -EBADF, or 0 if the wait had not begun: the close bumped the
         * edge counter past its snapshot; or the deadline came first. */
        CHECK(c.rc == -EBADF || c.rc == 0 || (c.rc == -ETIMEDOUT && i % 2 == 0),
              "(round %d: rc %d)", i, c.rc);
        socket_close(c.sv);
    }
    return NULL;
}

/* fs_fd_probe + fs_wait_fds on two fds, one written by a plain thread. */
struct multi {
    int a[2], b[2];
    struct gate go, written;
};

static void *multi_writer(void *arg)
{
    struct multi *m = arg;
    for (int i = 0; i < MULTI_ROUNDS; i++) {
        gate_wait(&m->go);
        char c = 'm';
        CHECK(write(i % 2 ? m->a[1] : m->b[1], &c, 1) == 1);
        gate_post(&m->written);
    }
    return NULL;
}

static void *multi_waiter(void *arg)
{
    struct multi *m = arg;
    int fds[2] = {m->a[0], m->b[0]};
    unsigned masks[2] = {FS_FD_READABLE, FS_FD_READABLE};
    for (int i = 0; i < MULTI_ROUNDS; i++) {
        CHECK(fs_fd_probe(fds[0]) >= 0 && fs_fd_probe(fds[1]) >= 0);
        gate_post(&m->go);
        int rc;
        while ((rc = fs_wait_fds(fds, masks, 2, fs_now() + 50 * US)) == -ETIMEDOUT)
            ;
        CHECK(rc == 0, "(rc %d)", rc);
        gate_wait(&m->written);
        int fd = i % 2 ? fds[0] : fds[1];
        char c;
        uint32_t snap = fs_fd_edges(fd, FS_POLL_READ);
        while (read(fd, &c, 1) != 1) {
            fs_fd_drained(fd, FS_POLL_READ, snap);
            CHECK(fs_wait_fd(fd, FS_POLL_READ, snap, FS_NO_DEADLINE, FS_PARK_READ) == 0);
            snap = fs_fd_edges(fd, FS_POLL_READ);
        }
        /* Drained: the readiness bit goes, so the next wait waits. */
        CHECK(read(fd, &c, 1) < 0 && errno == EAGAIN);
        fs_fd_drained(fd, FS_POLL_READ, snap);
    }
    return NULL;
}

static void phase_netpoll(void)
{
    phase_begin("netpoll");
    struct stream st[STREAMS];
    fs_fiber *rd[STREAMS], *wr[STREAMS];
    struct thread *wt[STREAMS];
    for (int i = 0; i < STREAMS; i++) {
        st[i].thread_writer = i % 2;
        if (socket_pair(st[i].sv))
            return;
        CHECK(fs_spawn(&rd[i], stream_reader, &st[i], NULL) == 0);
        if (st[i].thread_writer)
            wt[i] = thread_start(stream_writer, &st[i]);
        else
            CHECK(fs_spawn(&wr[i], stream_writer, &st[i], NULL) == 0);
    }

    fs_fiber *cl;
    CHECK(fs_spawn(&cl, closer, (void *)1, NULL) == 0);
    struct thread *cl_thread =
        thread_start(closer, (void *)2); /* fs_fd_close from a plain thread */

    static struct multi m;
    memset(&m, 0, sizeof m);
    if (socket_pair(m.a) || socket_pair(m.b))
        return;
    fs_fiber *mw;
    CHECK(fs_spawn(&mw, multi_waiter, &m, NULL) == 0);
    struct thread *mt = thread_start(multi_writer, &m);

    for (int i = 0; i < STREAMS; i++) {
        CHECK(fs_join(rd[i], NULL, FS_NO_DEADLINE) == 0);
        if (st[i].thread_writer)
            thread_join(wt[i]);
        else
            CHECK(fs_join(wr[i], NULL, FS_NO_DEADLINE) == 0);
        socket_close(st[i].sv);
    }
    CHECK(fs_join(cl, NULL, FS_NO_DEADLINE) == 0);
    thread_join(cl_thread);
    CHECK(fs_join(mw, NULL, FS_NO_DEADLINE) == 0);
    thread_join(mt);
    socket_close(m.a);
    socket_close(m.b);
}

/* ---- 6. interrupts --------------------------------------------------------- */

enum { VICTIMS = 4, INTERRUPTS = 1000 };

/* fs_fiber_local of a victim: touched only on the victim's own stack
 * (the hook runs there). */
struct victim {
    int hooks;   /* interrupt hook runs */
    int eintr;   /* parks cut short */
    int idle[2]; /* a socketpair nobody writes to */
    fs_fiber *_Atomic self;
    struct gate ack; /* posted after each -EINTR */
};

static void interrupt_hook(fs_fiber *f)
{
    struct victim *v = fs_fiber_local(f);
    if (v)
        v->hooks++;
}

static void *victim_main(void *arg)
{
    struct victim *v = arg;
    fs_fiber_set_local(fs_self(), v);
    atomic_store(&v->self, fs_self());
    for (int i = 0; i < INTERRUPTS; i++) {
        int rc;
        if (i % 2) {
            rc = fs_sleep_until(fs_now() + 30000 * MS);
        } else {
            uint32_t snap = fs_fd_edges(v->idle[0], FS_POLL_READ);
            rc = fs_wait_fd(v->idle[0], FS_POLL_READ, snap, fs_now() + 30000 * MS, FS_PARK_READ);
        }
        CHECK(rc == -EINTR, "(interrupt %d: rc %d)", i, rc);
        v->eintr += rc == -EINTR;
        gate_post(&v->ack);
    }
    fs_fiber_set_local(fs_self(), NULL);
    return NULL;
}

/* Fiber or plain thread: interrupts the victim INTERRUPTS times, each
 * time once the previous one has cut a park short. */
static void *interrupter(void *arg)
{
    struct victim *v = arg;
    fs_fiber *f;
    while (!(f = atomic_load(&v->self)))
        fs_yield();
    uint32_t rng = (uint32_t)(uintptr_t)v;
    for (int i = 0; i < INTERRUPTS; i++) {
        /* Land before, during and after the victim's park. */
        int64_t end = fs_now() + (int64_t)(rng_next(&rng) % (50 * US));
        while (fs_now() < end)
            ;
        fs_interrupt(f);
        gate_wait(&v->ack);
    }
    return NULL;
}

static void phase_interrupt(void)
{
    phase_begin("interrupt");
    static struct victim v[VICTIMS];
    memset(v, 0, sizeof v);
    fs_fiber *vf[VICTIMS], *ifib[VICTIMS / 2];
    struct thread *it[VICTIMS / 2];
    for (int i = 0; i < VICTIMS; i++) {
        if (socket_pair(v[i].idle))
            return;
        CHECK(fs_spawn(&vf[i], victim_main, &v[i], NULL) == 0);
        if (i % 2)
            it[i / 2] = thread_start(interrupter, &v[i]);
        else
            CHECK(fs_spawn(&ifib[i / 2], interrupter, &v[i], NULL) == 0);
    }
    for (int i = 0; i < VICTIMS; i++) {
        CHECK(fs_join(vf[i], NULL, FS_NO_DEADLINE) == 0);
        if (i % 2)
            thread_join(it[i / 2]);
        else
            CHECK(fs_join(ifib[i / 2], NULL, FS_NO_DEADLINE) == 0);
        CHECK(v[i].eintr == INTERRUPTS, "(victim %d: %d of %d)", i, v[i].eintr, INTERRUPTS);
        CHECK(v[i].hooks == INTERRUPTS, "(victim %d: hook ran %d times for %d)", i, v[i].hooks,
              INTERRUPTS);
        socket_close(v[i].idle);
    }
}

/* ---- 7. handoff ------------------------------------------------------------ */

enum { HANDOFF_ROUNDS = 20, QUICK = 16 };

static _Atomic int quick_done;

static void *quick(void *arg)
{
    int *ran = arg;
    (*ran)++;
    atomic_fetch_add(&quick_done, 1);
    return NULL;
}

/* Sleeps through the spin: its timer is on the spinner's carrier, so the
 * monitor fires it (fs__timers_run from the monitor thread). */
static void *nap(void *arg)
{
    int64_t dl = fs_now() + 10 * MS;
    CHECK(fs_sleep_until(dl) == 0);
    CHECK(fs_now() >= dl);
    return arg;
}

/* Starts NAPPERS sleepers on this carrier, spawns QUICK fibers (the last
 * stays in this carrier's runnext slot, where only the monitor can take
 * it), then computes for 50 ms. */
enum { NAPPERS = 4 };

static void *spinner(void *arg)
{
    int *ran = arg;
    fs_fiber *n[NAPPERS], *f[QUICK];
    for (int i = 0; i < NAPPERS; i++) {
        CHECK(fs_spawn(&n[i], nap, NULL, NULL) == 0);
        fs_yield(); /* it runs here (runnext) and parks */
    }
    for (int i = 0; i < QUICK; i++)
        CHECK(fs_spawn(&f[i], quick, &ran[i], NULL) == 0);
    int64_t end = fs_now() + 50 * MS;
    while (fs_now() < end)
        ;
    for (int i = 0; i < QUICK; i++) {
        CHECK(fs_join(f[i], NULL, FS_NO_DEADLINE) == 0);
        CHECK(ran[i] == 1);
    }
    for (int i = 0; i < NAPPERS; i++)
        CHECK(fs_join(n[i], NULL, FS_NO_DEADLINE) == 0);
    return NULL;
}

/* Plain thread: queues work on the global queue while the spinner spins. */
static void *queuer(void *arg)
{
    int *ran = arg;
    fs_fiber *f[QUICK];
    for (int i = 0; i < QUICK; i++) {
        CHECK(fs_spawn(&f[i], quick, &ran[i], NULL) == 0);
        pause_ns(2 * MS);
    }
    for (int i = 0; i < QUICK; i++) {
        CHECK(fs_join(f[i], NULL, FS_NO_DEADLINE) == 0);
        CHECK(ran[i] == 1);
    }
    return NULL;
}

/* A trickle of bytes through a socketpair, read by a fiber that starts
 * on carrier 0 (so its fd is in carrier 0's epoll, which the spinner
 * then holds) and written by a plain thread until the phase ends. */
struct trickle {
    int sv[2];
    _Atomic int stop;
    size_t sent, got; /* plain: read after the join */
};

static void *trickle_reader(void *arg)
{
    struct trickle *t = arg;
    char buf[64];
    for (;;) {
        uint32_t snap = fs_fd_edges(t->sv[0], FS_POLL_READ);
        ssize_t n = read(t->sv[0], buf, sizeof buf);
        if (n == 0)
            return NULL; /* the writer shut down */
        if (n > 0) {
            t->got += (size_t)n;
            continue;
        }
        CHECK(errno == EAGAIN, "(errno %d)", errno);
        fs_fd_drained(t->sv[0], FS_POLL_READ, snap);
        CHECK(fs_wait_fd(t->sv[0], FS_POLL_READ, snap, FS_NO_DEADLINE, FS_PARK_READ) == 0);
    }
}

static void *trickle_writer(void *arg)
{
    struct trickle *t = arg;
    while (!atomic_load(&t->stop)) {
        char c = 't';
        if (write(t->sv[1], &c, 1) == 1)
            t->sent++;
        pause_ns(MS);
    }
    shutdown(t->sv[1], SHUT_WR);
    return NULL;
}

static void phase_handoff(void)
{
    phase_begin("handoff");
    /* Meanwhile a trickle: the monitor harvests a stuck carrier's epoll. */
    static struct trickle tr;
    if (socket_pair(tr.sv))
        return;
    fs_fiber *rd;
    CHECK(fs_spawn(&rd, trickle_reader, &tr, NULL) == 0);
    fs_yield(); /* it runs here (runnext), on carrier 0, and parks */
    struct thread *wr = thread_start(trickle_writer, &tr);
    struct fs_stats st;
    for (int round = 0; round < HANDOFF_ROUNDS; round++) {
        int ran[2][QUICK] = {{0}};
        atomic_store(&quick_done, 0);
        struct thread *t = thread_start(queuer, ran[1]);
        fs_fiber *f;
        CHECK(fs_spawn(&f, spinner, ran[0], NULL) == 0);
        CHECK(fs_join(f, NULL, FS_NO_DEADLINE) == 0);
        thread_join(t);
        CHECK(atomic_load(&quick_done) == 2 * QUICK);
        fs_stats_get(&st);
        if (st.handoffs > 0 && round >= 2)
            break;
    }
    CHECK(st.handoffs > 0, "(the monitor never started a spare carrier)");
    atomic_store(&tr.stop, 1);
    thread_join(wr);
    CHECK(fs_join(rd, NULL, FS_NO_DEADLINE) == 0);
    CHECK(tr.got == tr.sent, "(%zu bytes read of %zu)", tr.got, tr.sent);
    socket_close(tr.sv);
}

/* ---- statistics reader ----------------------------------------------------- */

static _Atomic int stop_stats;

static void *stats_reader(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_stats)) {
        struct fs_stats st;
        fs_stats_get(&st);
        for (unsigned i = 0; i < st.carriers + st.extra_carriers; i++) {
            struct fs_carrier_stats cs;
            fs_carrier_stats(i, &cs);
        }
        nanosleep(&(struct timespec){0, MS}, NULL);
    }
    return NULL;
}

/* ---- 9. the futex table ----------------------------------------------------- */

enum { FX_LATCHES = 3, FX_FIBERS = 6, FX_THREADS = 2, FX_ITERS = 1500 };

/* Drepper's mutex: 0 free, 1 taken, 2 taken and maybe waited for. */
static _Atomic uint32_t fx_word[FX_LATCHES];
static long fx_count[FX_LATCHES]; /* plain: ordered by the latch */
static uint32_t fx_other;         /* WAKE_OP's second word */

static void fx_lock(_Atomic uint32_t *w, uint32_t *rng)
{
    uint32_t c = 0;
    if (atomic_compare_exchange_strong(w, &c, 1))
        return;
    if (c != 2)
        c = atomic_exchange(w, 2);
    while (c != 0) {
        int64_t dl = rng_next(rng) % 4 == 0 ? fs_now() + (int64_t)(rng_next(rng) % 50) * US
                                            : FS_NO_DEADLINE;
        int rc = fs_futex_wait((uint32_t *)w, 2, FUTEX_BITSET_MATCH_ANY, 0, dl);
        CHECK(rc == 0 || rc == -EAGAIN || rc == -ETIMEDOUT, "(wait %d)", rc);
        c = atomic_exchange(w, 2);
    }
}

static void fx_unlock(_Atomic uint32_t *w, uint32_t *rng)
{
    if (atomic_exchange(w, 0) != 2)
        return;
    int n;
    switch (rng_next(rng) % 4) {
    case 0:
        n = fs_futex_wake_op((uint32_t *)w, 1, &fx_other, 1,
                             FUTEX_OP(FUTEX_OP_ADD, 1, FUTEX_OP_CMP_LT, 0), 0);
        CHECK(n == 0 || n == 1, "(wake_op %d)", n);
        break;
    case 1:
        n = fs_futex_requeue((uint32_t *)w, 1, 1, (uint32_t *)w, NULL, 0);
        CHECK(n >= 0 && n <= 2, "(requeue %d)", n);
        break;
    default:
        n = fs_futex_wake((uint32_t *)w, 1, FUTEX_BITSET_MATCH_ANY, 0);
        CHECK(n == 0 || n == 1, "(wake %d)", n);
        break;
    }
}

static void *fx_worker(void *arg)
{
    uint32_t rng = (uint32_t)(uintptr_t)arg * 2654435761u + 1;
    for (int i = 0; i < FX_ITERS; i++) {
        int l = (int)(rng_next(&rng) % FX_LATCHES);
        fx_lock(&fx_word[l], &rng);
        long v = fx_count[l];
        if (i % 16 == 0)
            fs_yield();
        fx_count[l] = v + 1;
        fx_unlock(&fx_word[l], &rng);
    }
    return NULL;
}

static void phase_futex(void)
{
    phase_begin("futex table");
    fs_fiber *f[FX_FIBERS];
    struct thread *t[FX_THREADS];
    for (int i = 0; i < FX_THREADS; i++)
        t[i] = thread_start(fx_worker, (void *)(intptr_t)(FX_FIBERS + i));
    for (int i = 0; i < FX_FIBERS; i++)
        CHECK(fs_spawn(&f[i], fx_worker, (void *)(intptr_t)i, NULL) == 0);
    for (int i = 0; i < FX_FIBERS; i++)
        CHECK(fs_join(f[i], NULL, FS_NO_DEADLINE) == 0);
    for (int i = 0; i < FX_THREADS; i++)
        thread_join(t[i]);
    long sum = 0;
    for (int l = 0; l < FX_LATCHES; l++) {
        CHECK(atomic_load(&fx_word[l]) == 0, "(latch %d left taken)", l);
        sum += fx_count[l];
    }
    CHECK(sum == (long)(FX_FIBERS + FX_THREADS) * FX_ITERS, "(sum %ld)", sum);
}

int main(int argc, char **argv)
{
    struct fs_config cfg = {.carriers = 3};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--migrate") == 0)
            cfg.migrate = true;
        else if (strcmp(argv[i], "--idle-spin") == 0) /* idle carriers spin 50 us */
            cfg.idle_spin_ns = 50000;
        else
            cfg.carriers = (unsigned)atoi(argv[i]);
    }
    if (cfg.carriers < 2 || cfg.carriers > 4) {
        fprintf(stderr, "usage: stress [2..4 carriers] [--migrate] [--idle-spin]\n");
        return 2;
    }
    fs_set_interrupt_hook(interrupt_hook);
    int rc = fs_init(&cfg);
    if (rc) {
        fprintf(stderr, "fs_init: %s\n", strerror(-rc));
        return 2;
    }
    fs_fiber *self;
    if ((rc = fs_adopt_thread(&self)) != 0) {
        fprintf(stderr, "fs_adopt_thread: %s\n", strerror(-rc));
        return 2;
    }
    pthread_t wd;
    if (pthread_create(&wd, NULL, watchdog_main, NULL) != 0)
        return 2;
    pthread_detach(wd);
    struct thread *sr = thread_start(stats_reader, NULL);

    int64_t t0 = fs_now();
    phase_spawn_join();
    phase_park();
    phase_steal();
    phase_timers();
    phase_netpoll();
    phase_interrupt();
    phase_handoff();
    phase_tls();
    phase_futex();

    atomic_store(&stop_stats, 1);
    thread_join(sr);
    struct fs_stats st;
    fs_stats_get(&st);
    fprintf(stderr,
            "stress: %d failures in %lld ms (carriers %u%s; fibers %llu, switches %llu, "
            "steals %llu, timers fired %llu, handoffs %llu, spare carriers %u, "
            "monitor harvests %llu)\n",
            atomic_load(&failures), (long long)((fs_now() - t0) / MS), cfg.carriers,
            cfg.migrate ? ", migration" : "", (unsigned long long)st.fibers_created,
            (unsigned long long)st.switches, (unsigned long long)st.steals,
            (unsigned long long)st.timers_fired, (unsigned long long)st.handoffs, st.extra_carriers,
            (unsigned long long)st.monitor_harvests);
    return atomic_load(&failures) ? 1 : 0;
}
