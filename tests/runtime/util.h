/*
 * util.h - helpers shared by the runtime's Criterion tests (included by
 * test_*.c files; not a test itself).
 */
#ifndef FS_TEST_UTIL_H
#define FS_TEST_UTIL_H

#include <criterion/criterion.h>

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "fibershim.h"

#define MS (1000000LL)
#define US (1000LL)

/* Checks inside fibers. Criterion's cr_assert longjmps back to the test
 * thread's stack when it fails, which from a fiber (running on a carrier
 * thread, on another stack) would crash instead of failing cleanly. So a
 * fiber records its first failed check here and goes on; the test thread
 * reports it with FCHECK_REPORT() once the fibers are joined. */
static _Atomic int fcheck_failed;
static char fcheck_msg[512];

static inline void fcheck_fail(int line, const char *fmt, ...)
{
    if (atomic_exchange(&fcheck_failed, 1))
        return;
    int n = snprintf(fcheck_msg, sizeof fcheck_msg, "line %d: ", line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fcheck_msg + n, sizeof fcheck_msg - (size_t)n, fmt, ap);
    va_end(ap);
}

#define FCHECK(cond, ...)                                                                  \
    do {                                                                                   \
        if (!(cond))                                                                       \
            fcheck_fail(__LINE__, "" __VA_ARGS__);                                         \
    } while (0)

#define FCHECK_REPORT()                                                                    \
    cr_assert_eq(atomic_load(&fcheck_failed), 0, "check failed in a fiber: %s", fcheck_msg)

static inline pid_t test_gettid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

/* Runs fn(arg) in a fiber from the (plain) test thread and returns its
 * result. */
static inline void *run_in_fiber(void *(*fn)(void *), void *arg)
{
    fs_fiber *f;
    void *ret = NULL;
    cr_assert_eq(fs_spawn(&f, fn, arg, NULL), 0);
    cr_assert_eq(fs_join(f, &ret, FS_NO_DEADLINE), 0);
    FCHECK_REPORT();
    return ret;
}

/* Polls cond on the test thread every millisecond for up to timeout_ms. */
#define WAIT_FOR(cond, timeout_ms)                                                         \
    do {                                                                                   \
        int64_t wait_end_ = fs_now() + (int64_t)(timeout_ms) * MS;                         \
        while (!(cond) && fs_now() < wait_end_)                                            \
            nanosleep(&(struct timespec){0, 1000000}, NULL);                               \
    } while (0)

/*
 * A binary event built on fs_park/fs_unpark: ev_wait (fiber only) returns
 * once the event is set and clears it; ev_signal (any thread) sets it and
 * wakes the waiter. One waiter at a time.
 *
 * The waiter publishes (fiber, token) and then rechecks `set`; the
 * signaller sets `set` and then takes the waiter: with sequentially
 * consistent accesses on both sides one of them sees the other, so a
 * signal is never lost. A waiter that sees `set` after publishing takes
 * itself back; if the signaller got there first, its unpark ends the park.
 */
struct ev {
    _Atomic int set;
    fs_fiber *_Atomic waiter;
    _Atomic fs_park_token tok;
};

static inline void ev_wait(struct ev *e)
{
    for (;;) {
        if (atomic_exchange(&e->set, 0))
            return;
        fs_park_token tok = fs_park_prepare();
        atomic_store(&e->tok, tok);
        atomic_store(&e->waiter, fs_self());
        if (atomic_load(&e->set) && atomic_exchange(&e->waiter, NULL)) {
            /* Took ourselves back: nobody will unpark; end the park. */
            fs_park(tok, FS_PARK_OTHER, e, 0, NULL, NULL);
            continue;
        }
        fs_park(tok, FS_PARK_OTHER, e, FS_NO_DEADLINE, NULL, NULL);
    }
}

static inline void ev_signal(struct ev *e)
{
    atomic_store(&e->set, 1);
    fs_fiber *w = atomic_exchange(&e->waiter, NULL);
    if (w)
        fs_unpark(w, atomic_load(&e->tok));
}

#endif
