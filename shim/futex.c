/*
 * futex.c - syscall(SYS_futex, ...) through the C library: a fiber's wait
 * parks on the runtime's futex table (runtime/futex.c), and every wake,
 * requeue and wake-op goes through the table and then the kernel.
 *
 * Who waits where:
 *  - a fiber's FUTEX_WAIT / FUTEX_WAIT_BITSET: the table (no kernel thread
 *    held, however many wait); an operation without FUTEX_PRIVATE_FLAG
 *    only when the word's page is private to this process (below);
 *  - a plain thread's wait: the kernel, unchanged;
 *  - a fiber's wait on a page shared with other processes (a file or
 *    shared memory mapping): the kernel, on a spare thread (offload.c),
 *    since a wake from another process reaches only the kernel.
 * Wakes from any thread reach both (the table first), so the two kinds of
 * waiters may share a word.
 *
 * Only glibc's syscall() is seen. A library that enters the kernel with
 * its own syscall instruction (libgomp does, for its futexes) waits with
 * its carrier blocked, and its wakes reach the kernel only: a word it
 * wakes that way must not be waited on through syscall() by a fiber.
 *
 * Passed through: priority-inheritance operations (LOCK_PI, LOCK_PI2,
 * UNLOCK_PI, TRYLOCK_PI, WAIT_REQUEUE_PI, CMP_REQUEUE_PI), whose lock
 * owner is a kernel thread id, and must be the caller's: a contended
 * LOCK_PI blocks the carrier, and a fiber the kernel gave a PI futex is
 * pinned to its carrier until it unlocks one through the kernel (one
 * taken or released with a compare-and-swap alone is not seen); unknown
 * commands and flags (the kernel's ENOSYS); FUTEX_WAIT with
 * FUTEX_CLOCK_REALTIME where the kernel refuses it (Linux 6.x: ENOSYS),
 * run on a spare where it accepts it. Every other system call passes
 * through unchanged.
 *
 * futex_waitv (SYS_futex_waitv) from a fiber waits in the kernel on a
 * spare, as every raw futex wait did before the table: bounded by
 * FIBERSHIM_MAX_SPARES.
 *
 * Not as the kernel: an unmapped futex word or timeout faults (SIGSEGV)
 * instead of failing with EFAULT, as any user-space access would.
 */
#include "offload.h"
#include "sys.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
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

/* The same with the call number first: a[0] is n, a[1..5] its arguments. */
static long shim__syscall_blocking(void *p)
{
    struct shim_futex_wait *f = p;
    return REAL(syscall)(f->a[0], f->a[1], f->a[2], f->a[3], f->a[4], f->a[5]);
}

static long shim__futex_ret(long rc)
{
    if (rc < 0) {
        errno = (int)-rc;
        return -1;
    }
    return rc;
}

/* Whether the page holding uaddr is private anonymous memory of this
 * process, where the kernel keys even an operation without
 * FUTEX_PRIVATE_FLAG by (process, address): /proc/self/pagemap bit 61
 * ("file page or shared anonymous") clear on a present page. Anything
 * else, or no answer, counts as shared (the kernel then waits). Opened
 * per call: a cached descriptor could be closed or inherited by a child. */
static bool shim__futex_page_private(const uint32_t *uaddr)
{
    (void)*(const volatile uint32_t *)uaddr; /* fault the page in, as the compare will */
    long fd = fs__sys4(SYS_openat, AT_FDCWD, "/proc/self/pagemap", O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return false;
    uint64_t e = 0;
    long page = sysconf(_SC_PAGESIZE);
    long n = fs__sys4(SYS_pread64, fd, &e, sizeof e, (long)((uintptr_t)uaddr / page * 8));
    fs__sys1(SYS_close, fd);
    return n == (long)sizeof e && (e >> 63 & 1) && !(e >> 61 & 1);
}

/* Whether this kernel accepts FUTEX_CLOCK_REALTIME with FUTEX_WAIT (Linux
 * 4.5 to 5.x did; later ones answer ENOSYS). Asked once, with a word that
 * does not match, so the probe never waits. */
static bool shim__futex_wait_rt_accepted(void)
{
    static _Atomic int known; /* 0 unknown, 1 accepted, 2 refused */
    int k = atomic_load_explicit(&known, memory_order_relaxed);
    if (!k) {
        uint32_t w = 0;
        struct timespec zero = {0, 0};
        long rc = fs__sys4(SYS_futex, &w, FUTEX_WAIT | FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME, 1,
                           &zero);
        k = rc == -ENOSYS ? 2 : 1;
        atomic_store_explicit(&known, k, memory_order_relaxed);
    }
    return k == 1;
}

/* ts + base, in nanoseconds, saturating at FS_NO_DEADLINE. */
static int64_t shim__futex_ns(const struct timespec *ts, int64_t base)
{
    if (ts->tv_sec >= FS_NO_DEADLINE / 1000000000 - 1)
        return FS_NO_DEADLINE;
    int64_t ns = (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
    return ns > FS_NO_DEADLINE - base ? FS_NO_DEADLINE : ns + base;
}

/* A fiber's FUTEX_WAIT or FUTEX_WAIT_BITSET. */
static long shim__futex_wait(long a[6])
{
    uint32_t *uaddr = (uint32_t *)a[0];
    int op = (int)a[1];
    int cmd = op & FUTEX_CMD_MASK;
    const struct timespec *ts = (const struct timespec *)a[3];
    bool rt = op & FUTEX_CLOCK_REALTIME;

    if (cmd == FUTEX_WAIT && rt && !shim__futex_wait_rt_accepted())
        return REAL(syscall)(SYS_futex, a[0], a[1], a[2], a[3], a[4], a[5]); /* ENOSYS, EINVAL */
    int64_t deadline = FS_NO_DEADLINE;
    if (ts) {
        /* The kernel's first check (timespec64_valid), before any other. */
        if (ts->tv_sec < 0 || (unsigned long)ts->tv_nsec >= 1000000000) {
            errno = EINVAL;
            return -1;
        }
        /* FUTEX_WAIT's timeout is relative to now on the monotonic clock
         * (the kernel adds it to ktime_get()), FUTEX_WAIT_BITSET's absolute
         * on the clock the op names. */
        deadline = shim__futex_ns(ts, cmd == FUTEX_WAIT ? fs_now() : 0);
    }
    unsigned flags = (op & FUTEX_PRIVATE_FLAG) ? 0 : FS_FUTEX_SHARED;
    if (rt)
        flags |= FS_FUTEX_REALTIME;

    if (((flags & FS_FUTEX_SHARED) && !((uintptr_t)uaddr & 3) &&
         !shim__futex_page_private(uaddr)) ||
        (cmd == FUTEX_WAIT && rt)) {
        /* In the kernel, on a spare. FUTEX_WAIT's relative timeout is
         * made absolute now, so time spent queued for a spare counts. */
        struct shim_futex_wait f = {{a[0], a[1], a[2], a[3], a[4], a[5]}};
        struct timespec abs;
        if (cmd == FUTEX_WAIT && ts && !rt) {
            abs.tv_sec = deadline / 1000000000;
            abs.tv_nsec = deadline % 1000000000;
            f.a[1] = FUTEX_WAIT_BITSET | (op & FUTEX_PRIVATE_FLAG);
            f.a[3] = deadline == FS_NO_DEADLINE ? 0 : (long)&abs;
            f.a[5] = (long)FUTEX_BITSET_MATCH_ANY;
        }
        return shim__offload_blocking(shim__futex_wait_blocking, &f, FS_PARK_FUTEX);
    }

    uint32_t val = (uint32_t)a[2];
    uint32_t bitset = cmd == FUTEX_WAIT ? FUTEX_BITSET_MATCH_ANY : (uint32_t)a[5];
    uint32_t handled = shim__sig_handled();
    for (;;) {
        int rc = fs_futex_wait(uaddr, val, bitset, flags, deadline);
        if (rc == -EINTR) {
            /* As the kernel ends an interrupted futex wait: restarted when
             * no handler ran; with a handler, a timed wait fails with
             * EINTR (ERESTART_RESTARTBLOCK), an untimed one is restarted
             * if every handler that ran had SA_RESTART (ERESTARTSYS). A
             * restart compares the word again, as the kernel's does. */
            uint32_t now = shim__sig_handled();
            if (now == handled)
                continue;
            handled = now;
            bool restart = shim__sig_should_restart(); /* and re-arms the flag */
            if (!ts && restart)
                continue;
        }
        return shim__futex_ret(rc);
    }
}

static long shim__futex(long a[6])
{
    uint32_t *uaddr = (uint32_t *)a[0];
    int op = (int)a[1];
    unsigned flags = (op & FUTEX_PRIVATE_FLAG) ? 0 : FS_FUTEX_SHARED;
    /* The kernel reads val, val2 (the timeout slot) and val3 as u32. */
    uint32_t val = (uint32_t)a[2], val2 = (uint32_t)a[3], val3 = (uint32_t)a[5];
    /* FUTEX_CLOCK_REALTIME makes every command below ENOSYS: the kernel's. */
    switch (op & (FUTEX_CMD_MASK | FUTEX_CLOCK_REALTIME)) {
    case FUTEX_WAIT:
    case FUTEX_WAIT_BITSET:
    case FUTEX_WAIT | FUTEX_CLOCK_REALTIME:
    case FUTEX_WAIT_BITSET | FUTEX_CLOCK_REALTIME:
        if (fs_self())
            return shim__futex_wait(a);
        break;
    case FUTEX_WAKE:
        return shim__futex_ret(fs_futex_wake(uaddr, (int)val, FUTEX_BITSET_MATCH_ANY, flags));
    case FUTEX_WAKE_BITSET:
        return shim__futex_ret(fs_futex_wake(uaddr, (int)val, val3, flags));
    case FUTEX_REQUEUE:
        return shim__futex_ret(
            fs_futex_requeue(uaddr, (int)val, (int)val2, (uint32_t *)a[4], NULL, flags));
    case FUTEX_CMP_REQUEUE:
        return shim__futex_ret(
            fs_futex_requeue(uaddr, (int)val, (int)val2, (uint32_t *)a[4], &val3, flags));
    case FUTEX_WAKE_OP:
        return shim__futex_ret(
            fs_futex_wake_op(uaddr, (int)val, (uint32_t *)a[4], (int)val2, val3, flags));
    default:
        break;
    }
    long rc = REAL(syscall)(SYS_futex, a[0], a[1], a[2], a[3], a[4], a[5]);
    fs_fiber *self = fs_self();
    if (rc == 0 && self) {
        /* A PI futex the kernel gave this fiber is owned by its carrier's
         * thread id: the fiber stays on that kernel thread until it
         * releases one through the kernel (counted, never below zero). */
        switch (op & FUTEX_CMD_MASK) {
        case FUTEX_LOCK_PI:
        case FUTEX_LOCK_PI2:
        case FUTEX_TRYLOCK_PI:
        case FUTEX_WAIT_REQUEUE_PI:
            fs_pin(self);
            break;
        case FUTEX_UNLOCK_PI:
            fs_unpin(self);
            break;
        default:
            break;
        }
    }
    return rc;
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
    if (n == SYS_futex)
        return shim__futex(a);
    if (n == SYS_futex_waitv && fs_self()) {
        /* Waits on up to 128 words at once in the kernel, on a spare
         * (its timeout is absolute): wakes reach it through the kernel
         * part of every wake. */
        struct shim_futex_wait f = {{SYS_futex_waitv, a[0], a[1], a[2], a[3], a[4]}};
        return shim__offload_blocking(shim__syscall_blocking, &f, FS_PARK_FUTEX);
    }
    return REAL(syscall)(n, a[0], a[1], a[2], a[3], a[4], a[5]);
}
SHIM_ALIAS(syscall)
