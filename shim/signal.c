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
 */
#include "shim.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

fs_fiber *shim__fiber_of(pthread_t t);

/* The carrier's real mask, as last set by us (per kernel thread). */
static __thread uint64_t shim__carrier_mask;
static __thread bool shim__carrier_mask_known;

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
    if (shim__carrier_mask_known && shim__carrier_mask == ss->mask)
        return;
    sigset_t m;
    shim__bits_to_set(ss->mask, &m);
    REAL(pthread_sigmask)(SIG_SETMASK, &m, NULL);
    shim__carrier_mask = ss->mask;
    shim__carrier_mask_known = true;
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
    else if (!(ss->mask & SHIM_SIGBIT(sig)))
        fs_interrupt(f);
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
