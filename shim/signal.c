/*
 * signal.c - signals aimed at a fiber: pthread_kill, pthread_sigqueue,
 * pthread_sigmask, sigprocmask and sigpending, and EINTR for the waits
 * they interrupt.
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
 * pthread_sigqueue(fiber, sig, value) does the same, and keeps the value
 * with the pending signal: the hook raises it with rt_tgsigqueueinfo, so
 * the handler and sigwaitinfo see SI_QUEUE and the value. Like a standard
 * signal, one sent again while pending is delivered once (real-time
 * signals are not queued per instance). sigpending reports the fiber's
 * own pending set plus what is pending for the process. The adopted main
 * thread takes its kernel thread's own pending signals into its set as
 * it becomes a fiber, so they stay its own.
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

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "sys.h"

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

void shim__sigstate_init(struct shim_sigstate *ss, const sigset_t *mask)
{
    atomic_store(&ss->pending, 0);
    atomic_store(&ss->queued, 0);
    atomic_store(&ss->restart, 1);
    ss->handled = 0;
    atomic_store(&ss->waiting, 0);
    struct shim_sigstate *cur = shim__sigstate(fs_self());
    uint64_t inherited;
    if (cur) {
        inherited = cur->mask;
    } else {
        sigset_t m;
        REAL(pthread_sigmask)(SIG_BLOCK, NULL, &m);
        inherited = shim__set_to_bits(&m);
    }
    ss->mask = inherited;
    if (mask) {
        ss->mask = shim__set_to_bits(mask) & ~SHIM_UNBLOCKABLE;
        /* A mask other than its creator's: the carrier's must follow it
         * from its first run on (set before it can run). */
        if (ss->mask != inherited)
            fs_hook_every_switch();
    }
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

/* Takes sig off the fiber's pending set: false if another taker had it.
 * *queued says whether pthread_sigqueue sent it, *v with what value. A
 * sender writes the value, then queued, then pending; we clear pending,
 * then queued, so a value we read belongs to a send of sig. */
static bool shim__take_one(struct shim_sigstate *ss, int sig, bool *queued, union sigval *v)
{
    if (!(atomic_fetch_and(&ss->pending, ~SHIM_SIGBIT(sig)) & SHIM_SIGBIT(sig)))
        return false;
    *queued = atomic_fetch_and(&ss->queued, ~SHIM_SIGBIT(sig)) & SHIM_SIGBIT(sig);
    if (*queued) /* relaxed: a sender racing to queue sig again may change it */
        v->sival_ptr = __atomic_load_n(&ss->value[sig - 1].sival_ptr, __ATOMIC_RELAXED);
    return true;
}

/* Sends sig to the calling carrier's kernel thread as it was sent to the
 * fiber: rt_tgsigqueueinfo with its value (SI_QUEUE), else tgkill. */
static int shim__raise_on_carrier(int sig, bool queued, union sigval v)
{
    if (queued)
        return REAL(pthread_sigqueue)(REAL(pthread_self)(), sig, v);
    return REAL(pthread_kill)(REAL(pthread_self)(), sig);
}

/* Raises the fiber's pending, unblocked signals on its carrier, now. */
static void shim__deliver_pending(struct shim_sigstate *ss)
{
    uint64_t p;
    while ((p = atomic_load(&ss->pending) & ~ss->mask) != 0) {
        int sig = __builtin_ctzll(p) + 1;
        bool queued;
        union sigval v = {0};
        if (!shim__take_one(ss, sig, &queued, &v))
            continue;
        struct sigaction sa;
        if (sigaction(sig, NULL, &sa) == 0) {
            if (!(sa.sa_flags & SA_RESTART))
                atomic_store(&ss->restart, 0);
            if (sa.sa_handler != SIG_IGN && sa.sa_handler != SIG_DFL)
                ss->handled++;
        }
        /* To ourselves: the kernel delivers it before the call returns,
         * with the fiber's mask, on the fiber's stack. */
        shim__raise_on_carrier(sig, queued, v);
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

/* Makes sig (valid, not 0) pending on f and gets it delivered: at once
 * if f is the caller, else by interrupting f if it does not block sig or
 * waits for it in sigwait. f may not have run yet: its local word (its
 * signal state) is set before it can run (thread.c). */
static void shim__post(fs_fiber *f, int sig)
{
    struct shim_sigstate *ss = shim__sigstate(f);
    atomic_fetch_or(&ss->pending, SHIM_SIGBIT(sig));
    if (f == fs_self())
        shim__deliver_pending(ss); /* to ourselves: now, as raise() would */
    else if (!(ss->mask & SHIM_SIGBIT(sig)) || (atomic_load(&ss->waiting) & SHIM_SIGBIT(sig)))
        fs_interrupt(f); /* Dekker with shim__sigwait: pending, then waiting */
}

/* Moves the signals pending for the calling kernel thread alone (SigPnd
 * in /proc/thread-self/status: a pthread_kill to itself while it blocked
 * them) to the adopted fiber ss belongs to, so they stay its own and no
 * other fiber of this carrier takes or sees them. sigtimedwait dequeues a
 * thread's own signals before the process's. Raw syscalls: the caller is
 * already a fiber, whose open and read the shim would park. */
void shim__adopt_pending(struct shim_sigstate *ss)
{
    char buf[2048];
    long fd = fs__sys4(SYS_openat, AT_FDCWD, "/proc/thread-self/status", O_RDONLY | O_CLOEXEC, 0);
    long n = fd < 0 ? -1 : fs__sys3(SYS_read, fd, buf, sizeof buf - 1);
    if (fd >= 0)
        fs__sys1(SYS_close, fd);
    if (n <= 0)
        return;
    buf[n] = '\0';
    const char *p = strstr(buf, "\nSigPnd:");
    if (!p)
        return;
    uint64_t bits = 0;
    for (p += 8; *p == ' ' || *p == '\t'; p++) {
    }
    for (;; p++) {
        int d = *p >= '0' && *p <= '9' ? *p - '0' : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10 : -1;
        if (d < 0)
            break;
        bits = bits << 4 | (uint64_t)d;
    }
    static const struct timespec zero;
    for (int sig = 1; sig <= 64 && sig < NSIG; sig++) {
        if (!(bits & SHIM_SIGBIT(sig)))
            continue;
        sigset_t one;
        siginfo_t si;
        sigemptyset(&one);
        sigaddset(&one, sig);
        if (REAL(sigtimedwait)(&one, &si, &zero) != sig)
            continue;
        if (si.si_code == SI_QUEUE) {
            __atomic_store_n(&ss->value[sig - 1].sival_ptr, si.si_value.sival_ptr, __ATOMIC_RELAXED);
            atomic_fetch_or(&ss->queued, SHIM_SIGBIT(sig));
        }
        atomic_fetch_or(&ss->pending, SHIM_SIGBIT(sig));
    }
}

uint32_t shim__sig_handled(void)
{
    struct shim_sigstate *ss = shim__sigstate(fs_self());
    return ss ? ss->handled : 0;
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
    shim__post(f, sig);
    return 0;
}
SHIM_ALIAS(pthread_kill)

/* glibc 2.36: ESRCH once the thread ended (its tid is 0), EINVAL for the
 * signals glibc keeps for itself and for a number the kernel refuses. */
int shim__pthread_sigqueue(pthread_t t, int sig, const union sigval value)
{
    fs_fiber *f;
    int rc = shim__fiber_running(t, &f);
    if (rc < 0)
        return REAL(pthread_sigqueue)(t, sig, value);
    if (rc)
        return rc;
    if (sig < 0 || sig >= NSIG || sig > 64 || sig == __SIGRTMIN || sig == __SIGRTMIN + 1)
        return EINVAL;
    if (sig == 0)
        return 0;
    struct shim_sigstate *ss = shim__sigstate(f);
    /* The whole 8 bytes, as the kernel copies them: sival_ptr covers sival_int. */
    __atomic_store_n(&ss->value[sig - 1].sival_ptr, value.sival_ptr, __ATOMIC_RELAXED);
    atomic_fetch_or(&ss->queued, SHIM_SIGBIT(sig)); /* after the value: see shim__take_one */
    shim__post(f, sig);
    return 0;
}
SHIM_ALIAS(pthread_sigqueue)

/* The caller's pending signals: those sent to this fiber, and those
 * pending for the process or its carrier's kernel thread (the shim sends
 * a carrier only signals it takes back at once, see shim__adopt_pending). */
int shim__sigpending(sigset_t *set)
{
    if (REAL(sigpending)(set) != 0)
        return -1;
    struct shim_sigstate *ss = shim__sigstate(fs_self());
    uint64_t p = ss ? atomic_load(&ss->pending) : 0;
    for (int sig = 1; sig <= 64 && sig < NSIG; sig++)
        if (p & SHIM_SIGBIT(sig))
            sigaddset(set, sig);
    return 0;
}
SHIM_ALIAS(sigpending)

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
        bool queued;
        union sigval v = {0};
        if (!shim__take_one(ss, sig, &queued, &v))
            continue; /* delivered by the hook meanwhile */
        if (!info)
            return sig;
        /* The siginfo the sender's tgkill or rt_tgsigqueueinfo would give
         * (si_code differs between kernels): send it to our carrier, where
         * the fiber's mask blocks it, and take it back at once. */
        sigset_t cur, one;
        static const struct timespec zero;
        sigemptyset(&one);
        sigaddset(&one, sig);
        if (REAL(pthread_sigmask)(SIG_BLOCK, NULL, &cur) == 0 && sigismember(&cur, sig) == 1 &&
            shim__raise_on_carrier(sig, queued, v) == 0 &&
            REAL(sigtimedwait)(&one, info, &zero) == sig)
            return sig;
        memset(info, 0, sizeof *info);
        info->si_signo = sig;
        info->si_code = queued ? SI_QUEUE : SI_TKILL;
        if (queued)
            info->si_value = v;
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
