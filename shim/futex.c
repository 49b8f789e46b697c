/*
 * futex.c - a raw futex wait from a fiber runs on a spare thread.
 *
 * A program (or a library with its own locks) that calls
 * syscall(SYS_futex, addr, FUTEX_WAIT...) would put the carrier to sleep
 * in the kernel, often waiting for a fiber queued behind it on that very
 * carrier. The wait goes to offload.c instead, so the carrier keeps
 * running fibers, the waker among them; its FUTEX_WAKE passes straight
 * through and wakes the spare. Private futexes are keyed by address
 * space, which the spare shares. Priority-inheritance operations pass
 * through: their lock owner is a thread id, and must be the caller's.
 * Every other system call passes through unchanged.
 */
#include "offload.h"

#include <linux/futex.h>
#include <stdarg.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

struct shim_futex_wait {
    long a[6]; /* uaddr, op, val, timeout, uaddr2, val3 */
};

static long shim__futex_wait_blocking(void *p)
{
    struct shim_futex_wait *f = p;
    return REAL(syscall)(SYS_futex, f->a[0], f->a[1], f->a[2], f->a[3], f->a[4], f->a[5]);
}

static long shim__futex_wait(long a[6])
{
    struct shim_futex_wait f = {{a[0], a[1], a[2], a[3], a[4], a[5]}};
    struct timespec abs;
    const struct timespec *rel = (const struct timespec *)a[3];
    if ((a[1] & FUTEX_CMD_MASK) == FUTEX_WAIT && rel) {
        /* FUTEX_WAIT's timeout is relative: made absolute now, time spent
         * queued for a spare counts against it, as it would in the kernel. */
        if (rel->tv_sec < 0 || rel->tv_nsec < 0 || rel->tv_nsec >= 1000000000)
            return REAL(syscall)(SYS_futex, a[0], a[1], a[2], a[3], a[4], a[5]); /* EINVAL */
        clock_gettime((a[1] & FUTEX_CLOCK_REALTIME) ? CLOCK_REALTIME : CLOCK_MONOTONIC, &abs);
        abs.tv_sec += rel->tv_sec;
        abs.tv_nsec += rel->tv_nsec;
        if (abs.tv_nsec >= 1000000000) {
            abs.tv_sec++;
            abs.tv_nsec -= 1000000000;
        }
        f.a[1] = FUTEX_WAIT_BITSET | (a[1] & (FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME));
        f.a[3] = (long)&abs;
        f.a[5] = (long)FUTEX_BITSET_MATCH_ANY;
    }
    return shim__offload_blocking(shim__futex_wait_blocking, &f, FS_PARK_OTHER);
}

/* Reads six arguments whatever the call takes, as glibc's syscall() does
 * with its registers; the ones the call does not take are never used. */
long shim__syscall(long n, ...)
{
    va_list ap;
    va_start(ap, n);
    long a[6];
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    if (n == SYS_futex && fs_self()) {
        int cmd = (int)a[1] & FUTEX_CMD_MASK;
        if (cmd == FUTEX_WAIT || cmd == FUTEX_WAIT_BITSET)
            return shim__futex_wait(a);
    }
    return REAL(syscall)(n, a[0], a[1], a[2], a[3], a[4], a[5]);
}
SHIM_ALIAS(syscall)
