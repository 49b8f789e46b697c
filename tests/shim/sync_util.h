/*
 * sync_util.h - helpers shared by the synchronization tests
 * (tests/shim/test_{mutex,cond,rwlock,sem,barrier_once_spin,c11}.c).
 *
 * The tests are built without the shim's exports, so pthread_create and
 * friends are glibc's: "plain threads" below are real kernel threads, and
 * the shim is reached only through the shim__* names.
 */
#ifndef TESTS_SHIM_SYNC_UTIL_H
#define TESTS_SHIM_SYNC_UTIL_H

#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "fibershim.h"

/* Criterion's assertions may only fail on the test's own thread; fibers
 * and plain threads check with this, which reports and aborts (Criterion
 * then reports the test as crashed). */
#define FCHECK(cond, ...)                                                                  \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);       \
            fprintf(stderr, " " __VA_ARGS__);                                              \
            fprintf(stderr, "\n");                                                         \
            abort();                                                                       \
        }                                                                                  \
    } while (0)
#define FCHECK_EQ(a, b)                                                                    \
    do {                                                                                   \
        long long fa_ = (long long)(a), fb_ = (long long)(b);                              \
        FCHECK(fa_ == fb_, "%s = %lld, %s = %lld", #a, fa_, #b, fb_);                      \
    } while (0)

/* Lateness allowed for a timed wait on a loaded 2-CPU CI machine. */
#define LATE_TOLERANCE_NS 500000000LL

/* The wrappers under test (their prototypes are libc's). */
#define SHIM_DECL(name) extern __typeof__(name) shim__##name;

static inline void start_runtime(unsigned carriers)
{
    int rc = fs_init(&(struct fs_config){.carriers = carriers});
    cr_assert(rc == 0 || rc == -EALREADY, "fs_init: %d", rc);
}

/* Runs fn(args[i]) (args may be NULL: arg is the index) in n fibers and
 * joins them all from the calling plain thread. */
static inline void run_fibers(int n, void *(*fn)(void *), void **args)
{
    fs_fiber **f = calloc((size_t)n, sizeof *f);
    cr_assert(f);
    for (int i = 0; i < n; i++)
        cr_assert_eq(fs_spawn(&f[i], fn, args ? args[i] : (void *)(intptr_t)i, NULL), 0);
    for (int i = 0; i < n; i++)
        cr_assert_eq(fs_join(f[i], NULL, FS_NO_DEADLINE), 0);
    free(f);
}

static inline fs_fiber *spawn(void *(*fn)(void *), void *arg)
{
    fs_fiber *f;
    cr_assert_eq(fs_spawn(&f, fn, arg, NULL), 0);
    return f;
}

static inline void *join(fs_fiber *f)
{
    void *ret;
    cr_assert_eq(fs_join(f, &ret, FS_NO_DEADLINE), 0);
    return ret;
}

static inline pthread_t plain_thread(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, fn, arg), 0);
    return t;
}

static inline void *plain_join(pthread_t t)
{
    void *ret;
    cr_assert_eq(pthread_join(t, &ret), 0);
    return ret;
}

static inline int64_t clock_ns(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* An absolute time ns from now on clock c. */
static inline struct timespec abs_in(clockid_t c, int64_t ns)
{
    int64_t t = clock_ns(c) + ns;
    return (struct timespec){.tv_sec = t / 1000000000, .tv_nsec = t % 1000000000};
}

static inline int64_t ts_ns(const struct timespec *ts)
{
    return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

/* Sleeps ns on any thread (fibers park). */
static inline void sleep_ns(int64_t ns)
{
    if (fs_self()) {
        fs_sleep_until(fs_now() + ns);
    } else {
        struct timespec ts = {ns / 1000000000, ns % 1000000000};
        while (nanosleep(&ts, &ts) != 0)
            ;
    }
}

/* Asserts a timed wait that began at `start` (on clock c) and was to end
 * at `abs` returned neither early nor later than the tolerance. */
static inline void check_on_time(clockid_t c, const struct timespec *abs)
{
    int64_t now = clock_ns(c), dl = ts_ns(abs);
    FCHECK(now >= dl, "returned %lld ns early", (long long)(dl - now));
    FCHECK(now - dl < LATE_TOLERANCE_NS, "returned %lld ns late", (long long)(now - dl));
}

#endif
