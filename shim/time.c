/*
 * time.c - sleeps run on the runtime's timers: the fiber parks, the
 * carrier runs others. Never early: an absolute REALTIME sleep re-checks
 * its clock after waking (the clock may have been stepped) and sleeps
 * again until the time has really come.
 *
 * Thread CPU-time clocks are a fiber's own: CLOCK_THREAD_CPUTIME_ID in a
 * fiber, and the ids pthread_getcpuclockid gives for fibers (thread.c),
 * never its carrier's. Every other clock goes straight to the C library.
 */
#include "shim.h"

#include <time.h>
#include <unistd.h>

/* Sleeps the calling fiber until `abs` on `clock`. Returns 0, or EINTR
 * when a signal handler ran (sleeps are never restarted, signal(7)). A
 * cancellation point: a pending cancel acts at entry, and one that
 * interrupts the sleep acts then. */
static int shim__sleep_abs(clockid_t clock, const struct timespec *abs)
{
    shim__cancel_point();
    for (;;) {
        struct timespec now;
        clock_gettime(clock, &now);
        int64_t left = (int64_t)(abs->tv_sec - now.tv_sec) * 1000000000 +
                       (abs->tv_nsec - now.tv_nsec);
        if (left <= 0)
            return 0;
        if (fs_sleep_until(shim__deadline_after(left)) == -EINTR) {
            shim__sig_should_restart(); /* consume: sleeps report EINTR regardless */
            shim__cancel_point();
            return EINTR;
        }
    }
}

/* What is left of a sleep until abs on clock (for rem after EINTR). */
static struct timespec shim__left(clockid_t clock, const struct timespec *abs)
{
    struct timespec now;
    clock_gettime(clock, &now);
    int64_t left = (int64_t)(abs->tv_sec - now.tv_sec) * 1000000000 + (abs->tv_nsec - now.tv_nsec);
    if (left < 0)
        left = 0;
    return (struct timespec){left / 1000000000, left % 1000000000};
}

static bool shim__sleep_clock_ok(clockid_t clock)
{
    return clock == CLOCK_REALTIME || clock == CLOCK_MONOTONIC || clock == CLOCK_BOOTTIME ||
           clock == CLOCK_TAI;
}

int shim__clock_nanosleep(clockid_t clock, int flags, const struct timespec *req,
                          struct timespec *rem)
{
    if (!fs_self())
        return REAL(clock_nanosleep)(clock, flags, req, rem);
    if (!shim__sleep_clock_ok(clock)) {
        shim__cancel_point();
        return REAL(clock_nanosleep)(clock, flags, req, rem);
    }
    if (req->tv_nsec < 0 || req->tv_nsec >= 1000000000 || req->tv_sec < 0)
        return EINVAL;
    if (flags & TIMER_ABSTIME) {
        return shim__sleep_abs(clock, req);
    } else {
        struct timespec now, abs;
        clock_gettime(CLOCK_MONOTONIC, &now);
        abs.tv_sec = now.tv_sec + req->tv_sec;
        abs.tv_nsec = now.tv_nsec + req->tv_nsec;
        if (abs.tv_nsec >= 1000000000) {
            abs.tv_sec++;
            abs.tv_nsec -= 1000000000;
        }
        int rc = shim__sleep_abs(CLOCK_MONOTONIC, &abs);
        if (rc == EINTR && rem)
            *rem = shim__left(CLOCK_MONOTONIC, &abs);
        return rc;
    }
}
SHIM_ALIAS(clock_nanosleep)

int shim__nanosleep(const struct timespec *req, struct timespec *rem)
{
    if (!fs_self())
        return REAL(nanosleep)(req, rem);
    int rc = shim__clock_nanosleep(CLOCK_MONOTONIC, 0, req, rem);
    if (rc) {
        errno = rc;
        return -1;
    }
    return 0;
}
SHIM_ALIAS(nanosleep)

int shim__usleep(useconds_t usec)
{
    if (!fs_self())
        return REAL(usleep)(usec);
    struct timespec ts = {usec / 1000000, (long)(usec % 1000000) * 1000};
    return shim__nanosleep(&ts, NULL);
}
SHIM_ALIAS(usleep)

unsigned shim__sleep(unsigned secs)
{
    if (!fs_self())
        return REAL(sleep)(secs);
    struct timespec ts = {(time_t)secs, 0}, rem = {0, 0};
    if (shim__nanosleep(&ts, &rem) == 0)
        return 0;
    return (unsigned)rem.tv_sec + (rem.tv_nsec > 0); /* unslept seconds, rounded up */
}
SHIM_ALIAS(sleep)

/* Out of line: the fast path of clock_gettime stays one compare. */
__attribute__((noinline)) static int shim__clock_gettime_cpu(clockid_t clock, struct timespec *ts)
{
    int rc = clock == CLOCK_THREAD_CPUTIME_ID ? shim__cpuclock_self(ts)
                                              : shim__cpuclock_gettime(clock, ts);
    if (rc < 0)
        return REAL(clock_gettime)(clock, ts);
    if (rc) {
        errno = rc;
        return -1;
    }
    return 0;
}

/* Also called by the runtime (fs_now) and the shim for CLOCK_MONOTONIC and
 * CLOCK_REALTIME: those cost one compare more than the vDSO call. CPU-time
 * clock ids are CLOCK_THREAD_CPUTIME_ID and negative numbers. */
int shim__clock_gettime(clockid_t clock, struct timespec *ts)
{
    if (SHIM_LIKELY(clock >= 0 && clock != CLOCK_THREAD_CPUTIME_ID))
        return REAL(clock_gettime)(clock, ts);
    return shim__clock_gettime_cpu(clock, ts);
}
SHIM_ALIAS(clock_gettime)

/* A fiber's clock ticks in nanoseconds, as the kernel's CPU clocks do. */
int shim__clock_getres(clockid_t clock, struct timespec *res)
{
    if (SHIM_LIKELY(clock >= 0))
        return REAL(clock_getres)(clock, res);
    struct timespec ts;
    int rc = shim__cpuclock_gettime(clock, &ts);
    if (rc < 0)
        return REAL(clock_getres)(clock, res);
    if (rc) {
        errno = rc;
        return -1;
    }
    if (res)
        *res = (struct timespec){0, 1};
    return 0;
}
SHIM_ALIAS(clock_getres)
