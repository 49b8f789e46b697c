/*
 * test_thread.c - shim/thread.c: what only the shim can promise about the
 * handle of an ended thread. Its record is reused for new threads (after
 * the quarantine), and the handle keeps failing with ESRCH, never naming
 * one of them; its CPU clock id keeps failing with EINVAL; a value that
 * was never a handle fails too. (tests/programs/stale_handles checks the
 * answers glibc itself gives, before any reuse.)
 *
 * The threads are created from a fiber that is not a thread of the shim,
 * as the shim's own threads would be from a plain thread. One of them
 * stays parked to the end: the shim ends the process when its last thread
 * exits.
 */
#include "sync_util.h"

SHIM_DECL(pthread_create)
SHIM_DECL(pthread_join)
SHIM_DECL(pthread_tryjoin_np)
SHIM_DECL(pthread_detach)
SHIM_DECL(pthread_getschedparam)
SHIM_DECL(pthread_setname_np)
SHIM_DECL(pthread_getcpuclockid)
SHIM_DECL(clock_gettime)

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
    start_runtime(2);
    join(spawn(reuse_main, NULL));
}
