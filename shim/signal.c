/*
 * signal.c - signals aimed at a fiber: pthread_kill, pthread_sigmask and
 * sigprocmask, and EINTR for the waits they interrupt.
 *
 * Every fiber has a signal mask and a set of pending signals of its own.
 * The carrier's real mask follows the running fiber's: the runtime calls
 * our hook when a fiber resumes (at every resume once any fiber has set a
 * mask of its own), and the hook sets the carrier's mask if it differs.
 * So a process-directed signal reaches a carrier whose current fiber does
 * not block it, and its handler runs in that fiber, as the kernel would
 * pick a thread.
 *
 * pthread_kill(fiber, sig) records sig as pending for that fiber. If the
 * fiber does not block it, fs_interrupt() wakes it from an I/O, poll or
 * sleep wait (not from lock waits, which POSIX does not interrupt), and
 * the hook, running on the fiber's own stack as it resumes, raises the
 * signal on its carrier with tgkill: the handler runs right there, in the
 * fiber. The interrupted wrapper then restarts the call if every handler
 * that ran has SA_RESTART, and fails with EINTR otherwise; poll, select,
 * epoll_wait and sleeps always fail with EINTR, as signal(7) specifies.
 *
 * sigwait, sigwaitinfo and sigtimedwait from a fiber park it, not its
 * carrier: signals sent to the fiber are taken from its pending set;
 * signals pending for the process (kill) or the carrier are taken with a
 * zero-timeout sigtimedwait; in between, the fiber waits on a signalfd for
 * the set in the netpoller (a signalfd is readable while a signal of its
 * set is pending for the process or the polling thread). As with threads,
 * the set must be blocked in every thread, or some other fiber's handler
 * (or default action) may take the signal first.
 */
#include "shim.h"

#include <pthread.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

fs_fiber *shim__fiber_of(pthread_t t);

/* The carrier's real mask, as last set by us: fs_carrier_local()[0], valid
 * when [1] is 1. Per kernel thread, which a __thread variable no longer
 * is: with per-fiber TLS every fiber would have its own copy, and one
 * fiber's stale copy would skip a change another fiber made. */
#define SHIM_CARRIER_MASK 0
#define SHIM_CARRIER_MASK_KNOWN 1

#define SHIM_SIGBIT(sig) (1ull << ((sig)-1))
#define SHIM_UNBLOCKABLE (SHIM_SIGBIT(SIGKILL) | SHIM_SIGBIT(SIGSTOP))

static uint64_t shim__set_to_bits(const sigset_t *set)
{
    uint64_t b = 0;
    for (int sig = 1; sig <= 64 && sig < NSIG; sig++)
        if (sigismember(set, sig) == 1)
            b |= SHIM_SIGBIT(sig);
    return b;
}

static void shim__bits_to_set(uint64_t b, sigset_t *set)
{
    sigemptyset(set);
    for (int sig = 1; sig <= 64 && sig < NSIG; sig++)
        if (b & SHIM_SIGBIT(sig))
            sigaddset(set, sig);
}

void shim__sigstate_init(struct shim_sigstate *ss, bool inherit_current)
{
    atomic_store(&ss->pending, 0);
    atomic_store(&ss->restart, 1);
    atomic_store(&ss->waiting, 0);
    struct shim_sigstate *cur = shim__sigstate(fs_self());
    if (cur) {
        ss->mask = cur->mask;
    } else {
        sigset_t m;
        REAL(pthread_sigmask)(SIG_BLOCK, NULL, &m);
        ss->mask = shim__set_to_bits(&m);
    }
    (void)inherit_current;
}

/* Makes the carrier's real mask the fiber's. */
static void shim__carrier_follow(const struct shim_sigstate *ss)
{
    uint64_t *cl = fs_carrier_local(); /* the hook runs on fibers only */
    if (cl[SHIM_CARRIER_MASK_KNOWN] && cl[SHIM_CARRIER_MASK] == ss->mask)
        return;
    sigset_t m;
    shim__bits_to_set(ss->mask, &m);
    REAL(pthread_sigmask)(SIG_SETMASK, &m, NULL);
    cl[SHIM_CARRIER_MASK] = ss->mask;
    cl[SHIM_CARRIER_MASK_KNOWN] = 1;
}

/* Raises the fiber's pending, unblocked signals on its carrier, now. */
static void shim__deliver_pending(struct shim_sigstate *ss)
{
    uint64_t p;
    while ((p = atomic_load(&ss->pending) & ~ss->mask) != 0) {
        int sig = __builtin_ctzll(p) + 1;
        atomic_fetch_and(&ss->pending, ~SHIM_SIGBIT(sig));
        struct sigaction sa;
        if (sigaction(sig, NULL, &sa) == 0 && !(sa.sa_flags & SA_RESTART))
            atomic_store(&ss->restart, 0);
        /* tgkill to ourselves: the kernel delivers it before the call
         * returns, with the fiber's mask, on the fiber's stack. */
        REAL(pthread_kill)(REAL(pthread_self)(), sig);
    }
}

static void shim__sig_hook(fs_fiber *f)
{
    struct shim_sigstate *ss = shim__sigstate(f);
    if (!ss)
        return;
    shim__carrier_follow(ss);
    if (atomic_load_explicit(&ss->pending, memory_order_relaxed))
        shim__deliver_pending(ss);
}

void shim__signal_activate(void)
{
    fs_set_interrupt_hook(shim__sig_hook);
}

bool shim__sig_should_restart(void)
{
    struct shim_sigstate *ss = shim__sigstate(fs_self());
    if (!ss)
        return false;
    return atomic_exchange(&ss->restart, 1) != 0;
}

int shim__pthread_kill(pthread_t t, int sig)
{
    int rc = shim__kill_ended(t, sig); /* never glibc's code on a shim handle */
    if (rc >= 0)
        return rc;
    fs_fiber *f = shim__fiber_of(t);
    if (!f)
        return REAL(pthread_kill)(t, sig);
    if (sig < 0 || sig >= NSIG || sig > 64)
        return EINVAL;
    if (sig == 0)
        return 0; /* it exists: its handle has not been released by a join */
    struct shim_sigstate *ss = shim__sigstate(f);
    atomic_fetch_or(&ss->pending, SHIM_SIGBIT(sig));
    if (f == fs_self())
        shim__deliver_pending(ss); /* to ourselves: now, as raise() would */
    else if (!(ss->mask & SHIM_SIGBIT(sig)) || (atomic_load(&ss->waiting) & SHIM_SIGBIT(sig)))
        fs_interrupt(f); /* Dekker with shim__sigwait: pending, then waiting */
    return 0;
}
SHIM_ALIAS(pthread_kill)

int shim__pthread_sigmask(int how, const sigset_t *set, sigset_t *old)
{
    struct shim_sigstate *ss = shim__sigstate(fs_self());
    if (!ss)
        return REAL(pthread_sigmask)(how, set, old);
    if (set && how != SIG_BLOCK && how != SIG_UNBLOCK && how != SIG_SETMASK)
        return EINVAL;
    if (old) {
        /* Signals above 64 do not exist on Linux/x86-64; keep the rest. */
        shim__bits_to_set(ss->mask, old);
    }
    if (!set)
        return 0;
    uint64_t b = shim__set_to_bits(set);
    uint64_t m = ss->mask;
    if (how == SIG_BLOCK)
        m |= b;
    else if (how == SIG_UNBLOCK)
        m &= ~b;
    else
        m = b;
    m &= ~SHIM_UNBLOCKABLE;
    if (m != ss->mask) {
        ss->mask = m;
        /* From now on the carrier's mask must be checked at every switch. */
        fs_hook_every_switch();
    }
    shim__carrier_follow(ss);
    if (atomic_load(&ss->pending) & ~ss->mask)
        shim__deliver_pending(ss);
    return 0;
}
SHIM_ALIAS(pthread_sigmask)

int shim__sigprocmask(int how, const sigset_t *set, sigset_t *old)
{
    if (!fs_self())
        return REAL(sigprocmask)(how, set, old);
    int rc = shim__pthread_sigmask(how, set, old);
    if (rc) {
        errno = rc;
        return -1;
    }
    return 0;
}
SHIM_ALIAS(sigprocmask)

/* ---- sigwait and friends ----------------------------------------------- */

/* Takes one signal of bits from the fiber's own pending set; 0 if none. */
static int shim__take_fiber_pending(struct shim_sigstate *ss, uint64_t bits, siginfo_t *info)
{
    uint64_t p;
    while ((p = atomic_load(&ss->pending) & bits) != 0) {
        int sig = __builtin_ctzll(p) + 1;
        if (!(atomic_fetch_and(&ss->pending, ~SHIM_SIGBIT(sig)) & SHIM_SIGBIT(sig)))
            continue; /* delivered by the hook meanwhile */
        if (!info)
            return sig;
        /* The siginfo pthread_kill's tgkill would give (si_code differs
         * between kernels): send it to our carrier, where the fiber's
         * mask blocks it, and take it back at once. */
        sigset_t cur, one;
        static const struct timespec zero;
        sigemptyset(&one);
        sigaddset(&one, sig);
        if (REAL(pthread_sigmask)(SIG_BLOCK, NULL, &cur) == 0 && sigismember(&cur, sig) == 1 &&
            REAL(pthread_kill)(REAL(pthread_self)(), sig) == 0 &&
            REAL(sigtimedwait)(&one, info, &zero) == sig)
            return sig;
        memset(info, 0, sizeof *info);
        info->si_signo = sig;
        info->si_code = SI_TKILL;
        info->si_pid = getpid();
        info->si_uid = getuid();
        return sig;
    }
    return 0;
}

/* The fiber version of sigtimedwait: returns the signal, or -EAGAIN when
 * the timeout passes, -EINTR when a handler of another signal ran in this
 * fiber (restart says whether the caller wants that), -EINVAL. Contract
 * of sigtimedwait(2); timeout NULL waits forever. */
static int shim__sigwait_fiber(const sigset_t *set, siginfo_t *info, const struct timespec *tmo,
                               bool restart)
{
    struct shim_sigstate *ss = shim__sigstate(fs_self());
    if (tmo && (tmo->tv_sec < 0 || tmo->tv_nsec < 0 || tmo->tv_nsec >= 1000000000L))
        return -EINVAL;
    int64_t deadline = FS_NO_DEADLINE;
    if (tmo) {
        int64_t ns = tmo->tv_sec > INT64_MAX / 2000000000 ? INT64_MAX / 2
                                                          : tmo->tv_sec * 1000000000 + tmo->tv_nsec;
        deadline = fs_now() + ns;
    }
    uint64_t bits = shim__set_to_bits(set) & ~SHIM_UNBLOCKABLE;
    sigset_t waitset;
    shim__bits_to_set(bits, &waitset);
    static const struct timespec zero;
    int sfd = -1, rc;
    uint32_t snap = 0;
    atomic_store(&ss->waiting, bits); /* seq_cst: then we read pending */
    for (;;) {
        if ((rc = shim__take_fiber_pending(ss, bits, info)) > 0)
            break;
        if (sfd >= 0)
            snap = fs_fd_edges(sfd, FS_POLL_READ); /* before the check below */
        rc = REAL(sigtimedwait)(&waitset, info, &zero);
        if (rc > 0)
            break;
        if (errno == EINTR) {
            if (restart)
                continue;
            rc = -EINTR;
            break;
        }
        if (errno != EAGAIN) {
            rc = -errno;
            break;
        }
        if (sfd < 0) {
            sfd = signalfd(-1, &waitset, SFD_NONBLOCK | SFD_CLOEXEC);
            if (sfd < 0) {
                rc = -errno;
                break;
            }
            continue; /* take the edge snapshot, then look again */
        }
        int w = fs_wait_fd(sfd, FS_POLL_READ, snap, deadline, FS_PARK_POLL);
        if (w == -ETIMEDOUT) {
            /* One last look, as the kernel's timeout would have had. */
            if ((rc = shim__take_fiber_pending(ss, bits, info)) > 0)
                break;
            rc = REAL(sigtimedwait)(&waitset, info, &zero);
            if (rc <= 0)
                rc = -EAGAIN;
            break;
        }
        if (w == -EINTR && !(atomic_load(&ss->pending) & bits)) {
            /* A handler of another signal ran in this fiber. The kernel
             * never restarts sigwaitinfo/sigtimedwait, SA_RESTART or not. */
            (void)shim__sig_should_restart();
            if (!restart) {
                rc = -EINTR;
                break;
            }
        }
        /* Readiness, or an interrupt for a signal of ours: look again. */
    }
    atomic_store(&ss->waiting, 0);
    if (sfd >= 0) {
        fs_fd_close(sfd);
        REAL(close)(sfd);
    }
    return rc;
}

int shim__sigtimedwait(const sigset_t *set, siginfo_t *info, const struct timespec *tmo)
{
    if (!fs_self())
        return REAL(sigtimedwait)(set, info, tmo);
    int rc = shim__sigwait_fiber(set, info, tmo, false);
    if (rc < 0) {
        errno = -rc;
        return -1;
    }
    return rc;
}
SHIM_ALIAS(sigtimedwait)

int shim__sigwaitinfo(const sigset_t *set, siginfo_t *info)
{
    if (!fs_self())
        return REAL(sigwaitinfo)(set, info);
    int rc = shim__sigwait_fiber(set, info, NULL, false);
    if (rc < 0) {
        errno = -rc;
        return -1;
    }
    return rc;
}
SHIM_ALIAS(sigwaitinfo)

/* sigwait returns an error number and is never interrupted (POSIX). */
int shim__sigwait(const sigset_t *set, int *sig)
{
    if (!fs_self())
        return REAL(sigwait)(set, sig);
    int rc = shim__sigwait_fiber(set, NULL, NULL, true);
    if (rc < 0)
        return -rc;
    *sig = rc;
    return 0;
}
SHIM_ALIAS(sigwait)
