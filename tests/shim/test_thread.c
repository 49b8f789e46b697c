/*
 * test_thread.c - shim/thread.c: thread handles.
 *
 * Without per-fiber TLS (fiber_tls_off, as FIBERSHIM_FIBER_TLS=0 and the
 * sanitizer builds) a handle is the shim's tagged record index, and the
 * shim promises more than glibc: the handle of an ended thread keeps
 * failing with ESRCH once its record is reused for new threads (after the
 * quarantine), never naming one of them; its CPU clock id keeps failing
 * with EINVAL; a value that was never a handle fails too.
 *
 * With per-fiber TLS (the default) a handle is the fiber's TCB address,
 * as in glibc: THREAD_SELF (%fs:0x10), %fs:0 and pthread_self() agree
 * in every fiber and with the id pthread_create stored; the handle of an
 * ended thread answers as glibc's until a new thread takes its stack, and
 * then names that thread, as glibc's does (its old CPU clock id still
 * fails); TCB blocks of caller-owned stacks are reused, never freed; a
 * glibc thread's handle goes to glibc; the handle table grows past its
 * first size. (tests/programs/stale_handles checks the answers glibc
 * itself gives, before any reuse; thread_self_tcb the identities.)
 *
 * The threads are created from a fiber that is not a thread of the shim,
 * as the shim's own threads would be from a plain thread. One of them
 * stays parked to the end: the shim ends the process when its last thread
 * exits.
 */
#include "sync_util.h"

#include <signal.h>
#include <stdbool.h>
#include <string.h>

SHIM_DECL(pthread_create)
SHIM_DECL(pthread_join)
SHIM_DECL(pthread_tryjoin_np)
SHIM_DECL(pthread_detach)
SHIM_DECL(pthread_getschedparam)
SHIM_DECL(pthread_setname_np)
SHIM_DECL(pthread_getcpuclockid)
SHIM_DECL(clock_gettime)
SHIM_DECL(pthread_self)
SHIM_DECL(pthread_kill)
SHIM_DECL(pthread_getname_np)

static atomic_int ended;

/* Parks until the process ends (a glibc sem_wait would hold a carrier). */
static void *keeper(void *arg)
{
    for (;;)
        sleep_ns(1000000000);
    return arg;
}

static void *ret_arg(void *arg)
{
    return arg;
}

static void *post_and_end(void *arg)
{
    atomic_store(&ended, 1);
    return arg;
}

static void *reuse_main(void *unused)
{
    pthread_t k, joined, detached;
    void *r;
    FCHECK_EQ(shim__pthread_create(&k, NULL, keeper, NULL), 0);

    FCHECK_EQ(shim__pthread_create(&joined, NULL, ret_arg, (void *)1), 0);
    clockid_t clock;
    FCHECK_EQ(shim__pthread_getcpuclockid(joined, &clock), 0);
    FCHECK_EQ(shim__pthread_join(joined, &r), 0);
    pthread_attr_t a;
    FCHECK_EQ(pthread_attr_init(&a), 0);
    FCHECK_EQ(pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED), 0);
    FCHECK_EQ(shim__pthread_create(&detached, &a, post_and_end, NULL), 0);
    pthread_attr_destroy(&a);
    while (!atomic_load(&ended))
        sleep_ns(1000000);
    sleep_ns(20000000);
    /* Before reuse: glibc's answers (tests/programs/stale_handles). */
    FCHECK_EQ(shim__pthread_join(joined, &r), ESRCH);
    FCHECK_EQ(shim__pthread_tryjoin_np(joined, &r), EBUSY);
    FCHECK_EQ(shim__pthread_join(detached, &r), EINVAL);
    FCHECK_EQ(shim__pthread_detach(detached), EINVAL);

    /* 1,000 threads, some of them on the records of the two above: the
     * handles share the index (low 32 bits) but never the generation. */
    int reused = 0;
    for (long i = 0; i < 1000; i++) {
        pthread_t t;
        FCHECK_EQ(shim__pthread_create(&t, NULL, ret_arg, (void *)i), 0);
        FCHECK(t != joined && t != detached);
        reused += (uint32_t)t == (uint32_t)joined || (uint32_t)t == (uint32_t)detached;
        FCHECK_EQ(shim__pthread_join(t, &r), 0);
        FCHECK_EQ((long)r, i);
    }
    FCHECK(reused >= 2, "records reused %d times", reused);

    int policy;
    struct sched_param sp;
    struct timespec ts;
    pthread_t stale[] = {joined, detached, (pthread_t)(1ull << 63 | 0x3fffffu), (pthread_t)(1ull << 63)};
    for (size_t i = 0; i < sizeof stale / sizeof stale[0]; i++) {
        FCHECK_EQ(shim__pthread_join(stale[i], &r), ESRCH);
        FCHECK_EQ(shim__pthread_tryjoin_np(stale[i], &r), ESRCH);
        FCHECK_EQ(shim__pthread_detach(stale[i]), ESRCH);
        FCHECK_EQ(shim__pthread_getschedparam(stale[i], &policy, &sp), ESRCH);
        FCHECK_EQ(shim__pthread_setname_np(stale[i], "x"), ENOENT);
    }
    errno = 0;
    FCHECK_EQ(shim__clock_gettime(clock, &ts), -1);
    FCHECK_EQ(errno, EINVAL);
    return NULL;
}

Test(thread, stale_handles_never_name_new_threads)
{
    int rc = fs_init(&(struct fs_config){.carriers = 2, .fiber_tls_off = true});
    cr_assert(rc == 0, "fs_init: %d", rc);
    cr_assert(!fs_fiber_tls());
    join(spawn(reuse_main, NULL));
}

/* ---- per-fiber TLS: handles are TCB addresses ----------------------------- */

static pthread_t fs16(void)
{
    pthread_t v;
    __asm__ volatile("movq %%fs:0x10, %0" : "=r"(v));
    return v;
}

static pthread_t fs0(void)
{
    pthread_t v;
    __asm__ volatile("movq %%fs:0, %0" : "=r"(v));
    return v;
}

static atomic_int agree;

/* Counts itself when every name of its identity is the same value. */
static void *check_self(void *arg)
{
    pthread_t s = shim__pthread_self();
    bool ok = s == fs16() && s == fs0() && s == (pthread_t)fs_fiber_tcb(fs_self());
    sleep_ns(1000000); /* it may run on another carrier after */
    ok = ok && s == fs16() && s == shim__pthread_self();
    atomic_fetch_add(&agree, ok);
    return (void *)s;
}

static void *park_until(void *arg)
{
    while (!atomic_load((atomic_int *)arg))
        sleep_ns(1000000);
    return arg;
}

static void *tcb_main(void *unused)
{
    pthread_t k, a, d, t;
    void *r;
    FCHECK_EQ(shim__pthread_create(&k, NULL, keeper, NULL), 0);

    /* pthread_create stores the TCB, which the thread sees as itself. */
    FCHECK_EQ(shim__pthread_create(&a, NULL, check_self, NULL), 0);
    clockid_t clock;
    FCHECK_EQ(shim__pthread_getcpuclockid(a, &clock), 0);
    FCHECK_EQ(shim__pthread_join(a, &r), 0);
    FCHECK_EQ(r, a);
    FCHECK_EQ(atomic_load(&agree), 1);

    /* Ended, before its stack is reused: glibc's answers. */
    int policy;
    struct sched_param sp;
    clockid_t c2;
    FCHECK_EQ(shim__pthread_join(a, &r), ESRCH);
    FCHECK_EQ(shim__pthread_tryjoin_np(a, &r), EBUSY);
    FCHECK_EQ(shim__pthread_detach(a), ESRCH);
    FCHECK_EQ(shim__pthread_getschedparam(a, &policy, &sp), ESRCH);
    FCHECK_EQ(shim__pthread_getcpuclockid(a, &c2), ESRCH);
    FCHECK_EQ(shim__pthread_kill(a, 0), 0);
    pthread_attr_t at;
    FCHECK_EQ(pthread_attr_init(&at), 0);
    FCHECK_EQ(pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED), 0);
    atomic_store(&ended, 0);
    FCHECK_EQ(shim__pthread_create(&d, &at, post_and_end, NULL), 0);
    pthread_attr_destroy(&at);
    while (!atomic_load(&ended))
        sleep_ns(1000000);
    sleep_ns(20000000);
    FCHECK_EQ(shim__pthread_join(d, &r), EINVAL);
    FCHECK_EQ(shim__pthread_detach(d), EINVAL);

    /* Then new threads take the stacks over, and with them the handles:
     * what was a's names the new thread, as a cached stack's struct
     * pthread does in glibc. Its old CPU clock id still names nobody. */
    int took = 0;
    for (long i = 0; i < 300; i++) {
        FCHECK_EQ(shim__pthread_create(&t, NULL, check_self, NULL), 0);
        if (t == a) {
            took++;
            char name[16];
            FCHECK_EQ(shim__pthread_setname_np(t, "new"), 0);
            FCHECK_EQ(shim__pthread_getname_np(a, name, sizeof name), 0);
            FCHECK(strcmp(name, "new") == 0);
        }
        FCHECK_EQ(shim__pthread_join(t, &r), 0);
        FCHECK_EQ(r, t);
    }
    FCHECK(took > 0, "no new thread reused the joined one's stack");
    FCHECK_EQ(atomic_load(&agree), 301);
    struct timespec ts;
    errno = 0;
    FCHECK_EQ(shim__clock_gettime(clock, &ts), -1);
    FCHECK_EQ(errno, EINVAL);

    /* A caller-owned stack: the TCB block is its own, reused for the next
     * such thread (never given back to malloc, whose memory might later
     * hold a glibc thread's TCB). */
    static char stack[2][64 * 1024] __attribute__((aligned(4096)));
    pthread_t own[2];
    for (int i = 0; i < 2; i++) {
        FCHECK_EQ(pthread_attr_init(&at), 0);
        FCHECK_EQ(pthread_attr_setstack(&at, stack[i], sizeof stack[i]), 0);
        FCHECK_EQ(shim__pthread_create(&own[i], &at, check_self, NULL), 0);
        pthread_attr_destroy(&at);
        FCHECK_EQ(shim__pthread_join(own[i], &r), 0);
        FCHECK_EQ(r, own[i]);
    }
    FCHECK_EQ(own[0], own[1]);
    FCHECK_EQ(atomic_load(&agree), 303);

    /* Bit 63 is no address: never a thread. */
    pthread_t bad = (pthread_t)(1ull << 63 | 0x1000);
    FCHECK_EQ(shim__pthread_join(bad, &r), ESRCH);
    FCHECK_EQ(shim__pthread_getschedparam(bad, &policy, &sp), ESRCH);

    /* A glibc thread: glibc answers. */
    atomic_int go = 0;
    pthread_t p;
    FCHECK_EQ(pthread_create(&p, NULL, park_until, &go), 0);
    FCHECK_EQ(shim__pthread_getschedparam(p, &policy, &sp), 0);
    FCHECK_EQ(shim__pthread_tryjoin_np(p, &r), EBUSY);
    atomic_store(&go, 1);
    FCHECK_EQ(shim__pthread_join(p, &r), 0);
    FCHECK_EQ(r, &go);

    /* 2,000 threads alive at once: the table grows (from 1,024 slots,
     * at most half full) and every handle still names its thread. */
    enum { M = 2000 };
    static pthread_t many[M];
    atomic_int stop = 0;
    for (int i = 0; i < M; i++)
        FCHECK_EQ(shim__pthread_create(&many[i], NULL, park_until, &stop), 0);
    for (int i = 0; i < M; i++) {
        char name[16];
        snprintf(name, sizeof name, "t%d", i);
        FCHECK_EQ(shim__pthread_setname_np(many[i], name), 0);
    }
    for (int i = 0; i < M; i++) {
        char name[16], want[16];
        snprintf(want, sizeof want, "t%d", i);
        FCHECK_EQ(shim__pthread_getname_np(many[i], name, sizeof name), 0);
        FCHECK(strcmp(name, want) == 0, "%s: %s", want, name);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < M; i++) {
        FCHECK_EQ(shim__pthread_join(many[i], &r), 0);
        FCHECK_EQ(r, &stop);
    }
    return NULL;
}

Test(thread, handles_are_tcb_addresses)
{
    start_runtime(2);
    if (!fs_fiber_tls())
        cr_skip_test("no per-fiber TLS in this build");
    join(spawn(tcb_main, NULL));
}
