// fibershim-carriers: 1 2
/* What a thread keeps and reports about itself: scheduling policy and
 * priority, affinity, name, CPU time. Prints one line per check passed.
 *
 *  - Scheduling: PTHREAD_EXPLICIT_SCHED takes the attr's policy and
 *    priority (EINVAL from pthread_create for a priority out of range,
 *    EPERM for a real-time one the process may not use); with
 *    PTHREAD_INHERIT_SCHED a thread takes its creator's (as glibc reports
 *    it: SCHED_RESET_ON_FORK included). pthread_setschedparam,
 *    pthread_getschedparam and pthread_setschedprio on another thread and
 *    seen by the thread itself, with EINVAL for a bad policy or a priority
 *    outside sched_get_priority_min/max. Whether the process may use
 *    real-time policies (CAP_SYS_NICE) is asked of the kernel by the main
 *    thread before any thread exists; the program exits 77 (skip) when
 *    RLIMIT_RTPRIO rather than privilege allows them.
 *  - Affinity: inherited from the creator, set from another thread and
 *    seen by the thread itself, from an attr, passed on to a child;
 *    EINVAL for an empty set, a set of CPUs that do not exist, a bad size.
 *  - Names: a new thread has its creator's; pthread_setname_np from another
 *    thread and prctl(PR_SET_NAME) from the thread itself (15 bytes kept),
 *    seen from both sides; ERANGE for a 16-byte name or a 15-byte buffer;
 *    other prctl options still work.
 *  - CPU time: a thread that spins 200 ms of CPU and one that sleeps
 *    200 ms, each measured by itself (CLOCK_THREAD_CPUTIME_ID) and by the
 *    main thread (pthread_getcpuclockid + clock_gettime): at least 150 ms
 *    and at most its lifetime for the spinner, at most 20 ms for the
 *    sleeper, and a new thread starts near 0 although the main thread has
 *    used 100 ms. A finished thread's clock id fails with EINVAL.
 */
#include "common.h"

#include <sched.h>
#include <semaphore.h>
#include <stdbool.h>
#include <sys/prctl.h>

#define PASS(...)                                                              \
    do {                                                                       \
        printf("ok " __VA_ARGS__);                                             \
        printf("\n");                                                          \
    } while (0)

static bool rt_allowed;
static cpu_set_t main_affinity;
static char main_name[16];

/* ---- helpers --------------------------------------------------------- */

static void expect_sched(pthread_t t, int policy, int prio, const char *what)
{
    int p;
    struct sched_param sp;
    CHECK_RC(pthread_getschedparam(t, &p, &sp));
    if (p != policy || sp.sched_priority != prio)
        FAIL("%s: policy %d priority %d, expected %d %d", what, p, sp.sched_priority, policy,
             prio);
}

/* Runs fn(arg) in a new thread made with attr and returns its result. */
static void *run_thread(const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    pthread_t t;
    void *r;
    CHECK_RC(pthread_create(&t, attr, fn, arg));
    CHECK_RC(pthread_join(t, &r));
    return r;
}

static int64_t cpu_now(clockid_t c)
{
    struct timespec ts;
    CHECK(clock_gettime(c, &ts) == 0);
    return ts_to_ns(ts);
}

/* A thread that reports its own scheduling, in one word. */
static void *own_sched(void *unused)
{
    int p;
    struct sched_param sp;
    CHECK_RC(pthread_getschedparam(pthread_self(), &p, &sp));
    return (void *)((intptr_t)p << 8 | sp.sched_priority);
}
#define SCHED_WORD(p, prio) ((void *)((intptr_t)(p) << 8 | (prio)))

/* A thread that waits on its semaphore, so that others can act on it. */
struct parked {
    pthread_t t;
    sem_t go, acted;
    void *(*check)(void *); /* run by the thread at each go; NULL: end */
    void *result;
};

static void *parked_main(void *arg)
{
    struct parked *p = arg;
    for (;;) {
        while (sem_wait(&p->go) != 0) {
        }
        if (!p->check)
            return NULL;
        p->result = p->check(p);
        CHECK(sem_post(&p->acted) == 0);
    }
}

static void parked_start(struct parked *p, const pthread_attr_t *attr)
{
    CHECK(sem_init(&p->go, 0, 0) == 0);
    CHECK(sem_init(&p->acted, 0, 0) == 0);
    p->check = NULL;
    CHECK_RC(pthread_create(&p->t, attr, parked_main, p));
}

/* Has the parked thread run check once, and returns what it returned. */
static void *parked_run(struct parked *p, void *(*check)(void *))
{
    p->check = check;
    CHECK(sem_post(&p->go) == 0);
    while (sem_wait(&p->acted) != 0) {
    }
    return p->result;
}

static void parked_end(struct parked *p)
{
    p->check = NULL;
    CHECK(sem_post(&p->go) == 0);
    CHECK_RC(pthread_join(p->t, NULL));
    sem_destroy(&p->go);
    sem_destroy(&p->acted);
}

/* ---- scheduling ------------------------------------------------------ */

static void sched_explicit(void)
{
    pthread_attr_t a;
    struct sched_param sp = {0};
    CHECK_RC(pthread_attr_init(&a));
    CHECK_RC(pthread_attr_setinheritsched(&a, PTHREAD_EXPLICIT_SCHED));
    CHECK_RC(pthread_attr_setschedpolicy(&a, SCHED_OTHER));
    CHECK_RC(pthread_attr_setschedparam(&a, &sp));
    if (run_thread(&a, own_sched, NULL) != SCHED_WORD(SCHED_OTHER, 0))
        FAIL("explicit SCHED_OTHER not seen by the thread");
    PASS("explicit SCHED_OTHER: the thread has it");

    CHECK_RC(pthread_attr_setschedpolicy(&a, SCHED_FIFO));
    sp.sched_priority = 10;
    CHECK_RC(pthread_attr_setschedparam(&a, &sp));
    pthread_t t;
    int rc = pthread_create(&t, &a, own_sched, NULL);
    if (rc != (rt_allowed ? 0 : EPERM))
        FAIL("explicit SCHED_FIFO 10: pthread_create %s", errname(rc));
    if (rc == 0) {
        void *r;
        CHECK_RC(pthread_join(t, &r));
        if (r != SCHED_WORD(SCHED_FIFO, 10))
            FAIL("explicit SCHED_FIFO 10 not seen by the thread");
    }
    PASS("explicit SCHED_FIFO 10: created and seen, or EPERM, as the kernel allows");

    /* The attr keeps a priority set under another policy. */
    sp.sched_priority = 99;
    CHECK_RC(pthread_attr_setschedparam(&a, &sp));
    CHECK_RC(pthread_attr_setschedpolicy(&a, SCHED_OTHER));
    rc = pthread_create(&t, &a, own_sched, NULL);
    if (rc != EINVAL)
        FAIL("explicit SCHED_OTHER priority 99: pthread_create %s", errname(rc));
    PASS("explicit SCHED_OTHER priority 99: pthread_create EINVAL");

    /* An explicit attr's inheritsched is reported by pthread_getattr_np. */
    sp.sched_priority = 0;
    CHECK_RC(pthread_attr_setschedparam(&a, &sp));
    struct parked p;
    parked_start(&p, &a);
    pthread_attr_t got;
    int inh, pol;
    CHECK_RC(pthread_getattr_np(p.t, &got));
    CHECK_RC(pthread_attr_getinheritsched(&got, &inh));
    CHECK_RC(pthread_attr_getschedpolicy(&got, &pol));
    pthread_attr_destroy(&got);
    if (inh != PTHREAD_EXPLICIT_SCHED || pol != SCHED_OTHER)
        FAIL("pthread_getattr_np: inheritsched %d policy %d", inh, pol);
    parked_end(&p);
    PASS("pthread_getattr_np reports PTHREAD_EXPLICIT_SCHED and the policy");
    pthread_attr_destroy(&a);
}

/* In a thread of its own, as dropping the mark may be refused for good. A
 * policy marked SCHED_RESET_ON_FORK is reported to a new thread as its
 * creator's, mark included (glibc passes on what it caches). Keeping the
 * mark is always allowed; dropping it needs privilege. */
static void *reset_on_fork(void *unused)
{
    struct sched_param sp = {0};
    CHECK_RC(pthread_setschedparam(pthread_self(), SCHED_BATCH | SCHED_RESET_ON_FORK, &sp));
    expect_sched(pthread_self(), SCHED_BATCH | SCHED_RESET_ON_FORK, 0, "reset on fork");
    if (run_thread(NULL, own_sched, NULL) != SCHED_WORD(SCHED_BATCH | SCHED_RESET_ON_FORK, 0))
        FAIL("SCHED_RESET_ON_FORK: the thread does not report its creator's policy");
    int rc = pthread_setschedparam(pthread_self(), SCHED_OTHER, &sp);
    if (rc != (rt_allowed ? 0 : EPERM))
        FAIL("dropping SCHED_RESET_ON_FORK: %s", errname(rc));
    expect_sched(pthread_self(), rc ? SCHED_BATCH | SCHED_RESET_ON_FORK : SCHED_OTHER, 0,
                 "after dropping the mark");
    return NULL;
}

static void sched_inherited(void)
{
    struct sched_param sp = {0};
    CHECK_RC(pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp));
    expect_sched(pthread_self(), SCHED_BATCH, 0, "main after SCHED_BATCH");
    if (run_thread(NULL, own_sched, NULL) != SCHED_WORD(SCHED_BATCH, 0))
        FAIL("a thread of a SCHED_BATCH creator is not SCHED_BATCH");
    PASS("inherited: SCHED_BATCH from the creator");

    /* PTHREAD_INHERIT_SCHED ignores the attr's policy. */
    pthread_attr_t a;
    CHECK_RC(pthread_attr_init(&a));
    CHECK_RC(pthread_attr_setschedpolicy(&a, SCHED_RR));
    sp.sched_priority = 20;
    CHECK_RC(pthread_attr_setschedparam(&a, &sp));
    if (run_thread(&a, own_sched, NULL) != SCHED_WORD(SCHED_BATCH, 0))
        FAIL("PTHREAD_INHERIT_SCHED took the attr's policy");
    PASS("inherited: the attr's SCHED_RR 20 ignored");

    if (rt_allowed) {
        sp.sched_priority = 7;
        CHECK_RC(pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp));
        void *r = run_thread(NULL, own_sched, NULL);
        sp.sched_priority = 0;
        CHECK_RC(pthread_setschedparam(pthread_self(), SCHED_OTHER, &sp));
        if (r != SCHED_WORD(SCHED_FIFO, 7))
            FAIL("a thread of a SCHED_FIFO 7 creator is not");
    }
    PASS("inherited: SCHED_FIFO 7 from the creator (where allowed)");

    sp.sched_priority = 0;
    CHECK_RC(pthread_setschedparam(pthread_self(), SCHED_OTHER, &sp)); /* allowed from SCHED_BATCH */
    if (run_thread(NULL, reset_on_fork, NULL) != NULL)
        FAIL("SCHED_RESET_ON_FORK");
    PASS("SCHED_RESET_ON_FORK: reported to the new thread, dropped only with privilege");
    pthread_attr_destroy(&a);
}

static void *sched_seen(void *arg)
{
    return own_sched(NULL);
}

static void sched_set_get(void)
{
    struct parked p;
    parked_start(&p, NULL);
    struct sched_param sp = {0};
    struct {
        int policy, prio;
    } bad[] = {{SCHED_FIFO, 0}, {SCHED_FIFO, 100}, {SCHED_RR, -1}, {SCHED_OTHER, 1},
               {SCHED_BATCH, 5}, {42, 0},          {-1, 0},        {SCHED_DEADLINE, 0}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sp.sched_priority = bad[i].prio;
        int rc = pthread_setschedparam(p.t, bad[i].policy, &sp);
        if (rc != EINVAL)
            FAIL("setschedparam policy %d priority %d: %s", bad[i].policy, bad[i].prio,
                 errname(rc));
    }
    expect_sched(p.t, SCHED_OTHER, 0, "after refused changes");
    PASS("setschedparam: EINVAL for bad policies and priorities, nothing changed");

    sp.sched_priority = 0;
    CHECK_RC(pthread_setschedparam(p.t, SCHED_BATCH, &sp));
    expect_sched(p.t, SCHED_BATCH, 0, "after SCHED_BATCH");
    if (parked_run(&p, sched_seen) != SCHED_WORD(SCHED_BATCH, 0))
        FAIL("SCHED_BATCH set by main not seen by the thread");
    CHECK_RC(pthread_setschedparam(p.t, SCHED_OTHER, &sp));
    PASS("setschedparam SCHED_BATCH from another thread: reported to both");

    EXPECT_RC(pthread_setschedprio(p.t, 1), EINVAL);
    CHECK_RC(pthread_setschedprio(p.t, 0));
    PASS("setschedprio on SCHED_OTHER: 0 accepted, 1 EINVAL");

    sp.sched_priority = 10;
    int rc = pthread_setschedparam(p.t, SCHED_FIFO, &sp);
    if (rc != (rt_allowed ? 0 : EPERM))
        FAIL("setschedparam SCHED_FIFO 10: %s", errname(rc));
    if (rc == 0) {
        expect_sched(p.t, SCHED_FIFO, 10, "after SCHED_FIFO 10");
        if (parked_run(&p, sched_seen) != SCHED_WORD(SCHED_FIFO, 10))
            FAIL("SCHED_FIFO 10 not seen by the thread");
        CHECK_RC(pthread_setschedprio(p.t, 5));
        expect_sched(p.t, SCHED_FIFO, 5, "after setschedprio 5");
        EXPECT_RC(pthread_setschedprio(p.t, 0), EINVAL);
        EXPECT_RC(pthread_setschedprio(p.t, 100), EINVAL);
        expect_sched(p.t, SCHED_FIFO, 5, "after refused setschedprio");
        sp.sched_priority = 0;
        CHECK_RC(pthread_setschedparam(p.t, SCHED_OTHER, &sp));
    } else {
        expect_sched(p.t, SCHED_OTHER, 0, "after EPERM");
    }
    PASS("setschedparam SCHED_FIFO 10, setschedprio: as the kernel allows, reported");
    parked_end(&p);
}

/* ---- affinity -------------------------------------------------------- */

static void *own_affinity(void *arg)
{
    cpu_set_t *out = malloc(sizeof *out);
    CHECK(out);
    CHECK_RC(pthread_getaffinity_np(pthread_self(), sizeof *out, out));
    return out;
}

static void *child_affinity(void *arg)
{
    return run_thread(NULL, own_affinity, NULL);
}

static bool affinity_is(void *got, const cpu_set_t *want)
{
    bool same = CPU_EQUAL((cpu_set_t *)got, want);
    free(got);
    return same;
}

static void affinity(void)
{
    if (!affinity_is(run_thread(NULL, own_affinity, NULL), &main_affinity))
        FAIL("a new thread's affinity is not its creator's");
    PASS("affinity: a new thread has its creator's");

    int cpu = -1;
    for (int i = CPU_SETSIZE - 1; i >= 0; i--)
        if (CPU_ISSET(i, &main_affinity))
            cpu = i; /* the lowest allowed CPU */
    CHECK(cpu >= 0);
    cpu_set_t one, got;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);

    struct parked p;
    parked_start(&p, NULL);
    CHECK_RC(pthread_setaffinity_np(p.t, sizeof one, &one));
    CHECK_RC(pthread_getaffinity_np(p.t, sizeof got, &got));
    if (!CPU_EQUAL(&got, &one))
        FAIL("pthread_getaffinity_np after set: not the set");
    if (!affinity_is(parked_run(&p, own_affinity), &one))
        FAIL("the thread does not see the affinity set for it");
    if (!affinity_is(parked_run(&p, child_affinity), &one))
        FAIL("a child of the pinned thread does not inherit its affinity");
    PASS("affinity: set from another thread, seen by both, passed on to a child");

    cpu_set_t empty, none;
    CPU_ZERO(&empty);
    CPU_ZERO(&none);
    CPU_SET(CPU_SETSIZE - 1, &none); /* no such CPU here */
    EXPECT_RC(pthread_setaffinity_np(p.t, sizeof empty, &empty), EINVAL);
    EXPECT_RC(pthread_setaffinity_np(p.t, sizeof none, &none), EINVAL);
    EXPECT_RC(pthread_getaffinity_np(p.t, 4, &got), EINVAL);
    CHECK_RC(pthread_getaffinity_np(p.t, sizeof got, &got));
    if (!CPU_EQUAL(&got, &one))
        FAIL("a refused affinity changed it");
    PASS("affinity: EINVAL for an empty set, a missing CPU, a bad size; nothing changed");
    parked_end(&p);

    pthread_attr_t a;
    CHECK_RC(pthread_attr_init(&a));
    CHECK_RC(pthread_attr_setaffinity_np(&a, sizeof one, &one));
    if (!affinity_is(run_thread(&a, own_affinity, NULL), &one))
        FAIL("affinity from the attr not seen by the thread");
    pthread_attr_destroy(&a);
    PASS("affinity: from pthread_attr_setaffinity_np");
}

/* ---- names ----------------------------------------------------------- */

static void *own_names(void *arg)
{
    char *out = calloc(2, 16);
    CHECK(out);
    CHECK_RC(pthread_getname_np(pthread_self(), out, 16));
    CHECK(prctl(PR_GET_NAME, out + 16) == 0);
    return out;
}

static bool names_are(void *got, const char *want)
{
    char *n = got;
    bool same = strcmp(n, want) == 0 && strcmp(n + 16, want) == 0;
    free(got);
    return same;
}

static void *prctl_rename(void *arg)
{
    CHECK(prctl(PR_SET_NAME, "a-name-longer-than-15") == 0);
    return own_names(NULL);
}

static void *child_names(void *arg)
{
    return run_thread(NULL, own_names, NULL);
}

static void names(void)
{
    if (!names_are(run_thread(NULL, own_names, NULL), main_name))
        FAIL("a new thread's name is not its creator's");
    PASS("names: a new thread has its creator's");

    struct parked p;
    parked_start(&p, NULL);
    char buf[16];
    CHECK_RC(pthread_setname_np(p.t, "worker-1"));
    CHECK_RC(pthread_getname_np(p.t, buf, sizeof buf));
    if (strcmp(buf, "worker-1") != 0)
        FAIL("pthread_getname_np after set: %s", buf);
    if (!names_are(parked_run(&p, own_names), "worker-1"))
        FAIL("the thread does not see the name set for it");
    PASS("names: pthread_setname_np from another thread, seen by both");

    if (!names_are(parked_run(&p, prctl_rename), "a-name-longer-t"))
        FAIL("prctl(PR_SET_NAME) not seen by the thread itself");
    CHECK_RC(pthread_getname_np(p.t, buf, sizeof buf));
    if (strcmp(buf, "a-name-longer-t") != 0)
        FAIL("prctl(PR_SET_NAME) seen from main as %s", buf);
    if (!names_are(parked_run(&p, child_names), "a-name-longer-t"))
        FAIL("a child of the renamed thread does not have its name");
    PASS("names: prctl(PR_SET_NAME) keeps 15 bytes, seen by both, passed on to a child");

    EXPECT_RC(pthread_setname_np(p.t, "sixteen-bytes-xx"), ERANGE);
    EXPECT_RC(pthread_getname_np(p.t, buf, 15), ERANGE);
    parked_end(&p);
    PASS("names: ERANGE for a 16-byte name and a 15-byte buffer");

    char mine[16] = {0};
    CHECK(prctl(PR_GET_NAME, mine) == 0);
    if (strcmp(mine, main_name) != 0)
        FAIL("main's name changed to %s", mine);
    int dumpable = prctl(PR_GET_DUMPABLE);
    CHECK(dumpable == 0 || dumpable == 1);
    PASS("names: main keeps its own; other prctl options work");
}

/* ---- CPU time -------------------------------------------------------- */

struct cpu_thread {
    pthread_t t;
    bool spin;
    int64_t start_cpu, self_cpu; /* its own clock, at start and at the end */
    int64_t born;                /* CLOCK_MONOTONIC when main created it */
    sem_t done, leave;
};

static void *cpu_main(void *arg)
{
    struct cpu_thread *c = arg;
    c->start_cpu = cpu_now(CLOCK_THREAD_CPUTIME_ID);
    if (c->spin) {
        int64_t wall = now_ns();
        while (cpu_now(CLOCK_THREAD_CPUTIME_ID) - c->start_cpu < 200000000) {
            if (now_ns() - wall > 20000000000)
                FAIL("spinner: 200 ms of CPU not reached in 20 s");
        }
    } else {
        sleep_ms(200);
    }
    c->self_cpu = cpu_now(CLOCK_THREAD_CPUTIME_ID);
    CHECK(sem_post(&c->done) == 0);
    while (sem_wait(&c->leave) != 0) {
    }
    return NULL;
}

static void cpu_time(void)
{
    /* Main uses 100 ms of CPU first: a thread that reported its carrier's
     * time instead of its own would start above that. */
    int64_t m0 = cpu_now(CLOCK_THREAD_CPUTIME_ID);
    while (cpu_now(CLOCK_THREAD_CPUTIME_ID) - m0 < 100000000) {
    }
    clockid_t mc;
    CHECK_RC(pthread_getcpuclockid(pthread_self(), &mc));
    if (cpu_now(mc) < 100000000 || cpu_now(CLOCK_THREAD_CPUTIME_ID) < 100000000)
        FAIL("main's own CPU time below the 100 ms it spun");
    PASS("cpu: main's clock, both ways, counts what it spun");

    struct cpu_thread c[2] = {{.spin = true}, {.spin = false}};
    for (int i = 0; i < 2; i++) {
        CHECK(sem_init(&c[i].done, 0, 0) == 0);
        CHECK(sem_init(&c[i].leave, 0, 0) == 0);
        c[i].born = now_ns();
        CHECK_RC(pthread_create(&c[i].t, NULL, cpu_main, &c[i]));
    }
    for (int i = 0; i < 2; i++)
        while (sem_wait(&c[i].done) != 0) {
        }
    clockid_t id[2];
    int64_t other[2];
    for (int i = 0; i < 2; i++) {
        CHECK_RC(pthread_getcpuclockid(c[i].t, &id[i]));
        other[i] = cpu_now(id[i]);
        struct timespec res;
        CHECK(clock_getres(id[i], &res) == 0);
        CHECK(ts_to_ns(res) > 0);
    }
    int64_t spin_life = now_ns() - c[0].born;
    if (c[0].start_cpu > 20000000 || c[1].start_cpu > 20000000)
        FAIL("a new thread started at %lld / %lld ns of CPU", (long long)c[0].start_cpu,
             (long long)c[1].start_cpu);
    PASS("cpu: a new thread starts near 0");
    if (c[0].self_cpu < 150000000 || other[0] < 150000000 || other[0] > spin_life)
        FAIL("spinner: %lld ns by itself, %lld by main, lifetime %lld", (long long)c[0].self_cpu,
             (long long)other[0], (long long)spin_life);
    PASS("cpu: spinner >= 150 ms, by itself and from main, within its lifetime");
    if (c[1].self_cpu > 20000000 || other[1] > 20000000)
        FAIL("sleeper: %lld ns by itself, %lld by main", (long long)c[1].self_cpu,
             (long long)other[1]);
    PASS("cpu: sleeper <= 20 ms, by itself and from main");

    for (int i = 0; i < 2; i++) {
        CHECK(sem_post(&c[i].leave) == 0);
        CHECK_RC(pthread_join(c[i].t, NULL));
    }
    struct timespec ts;
    errno = 0;
    if (clock_gettime(id[0], &ts) != -1 || errno != EINVAL)
        FAIL("clock of a joined thread: %s", errname(errno));
    PASS("cpu: a joined thread's clock id fails with EINVAL");
}

int main(void)
{
    tp_setup(120);
    /* Before any thread exists: may this process use real-time policies?
     * (The main thread asks the kernel, then goes back to SCHED_OTHER.) */
    struct sched_param sp = {.sched_priority = 10};
    int hi = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
    sp.sched_priority = 1;
    int lo = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
    sp.sched_priority = 0;
    CHECK_RC(pthread_setschedparam(pthread_self(), SCHED_OTHER, &sp));
    struct rlimit rl;
    CHECK(getrlimit(RLIMIT_RTPRIO, &rl) == 0);
    if (hi != lo || (hi == 0 && rl.rlim_cur != 0)) {
        /* Real-time policies through RLIMIT_RTPRIO, not CAP_SYS_NICE: the
         * expectations below assume one or the other. */
        printf("SKIP: real-time policies allowed by RLIMIT_RTPRIO\n");
        return 77;
    }
    rt_allowed = hi == 0;
    CHECK(sched_getaffinity(0, sizeof main_affinity, &main_affinity) == 0);
    CHECK(prctl(PR_GET_NAME, main_name) == 0);

    sched_explicit();
    sched_inherited();
    sched_set_get();
    affinity();
    names();
    cpu_time();
    printf("thread_attrs: ok\n");
    return 0;
}
