/*
 * sigcompat.c - the System V and BSD signal interfaces: signal (BSD
 * semantics, also bsd_signal and ssignal), sysv_signal and __sysv_signal,
 * siginterrupt, sigset, sighold, sigrelse, sigignore, sigpause
 * (__sigpause, __xpg_sigpause, the BSD sigpause), sigblock, sigsetmask,
 * siggetmask and gsignal.
 *
 * glibc implements each of them over its internal __sigaction,
 * __sigprocmask and __sigsuspend, which no interposition reaches: a
 * handler they install would not be behind the shim's trampoline (a
 * fault or trap handler would see the carrier's mask, signal.c), and a
 * mask they change would be the carrier's, not the fiber's (sigpause
 * would hold the carrier in the kernel, waiting for a signal the fiber
 * is sent). So each is written here as glibc 2.36 writes it, over the
 * shim's sigaction (observe.c), sigprocmask, sigsuspend and raise
 * (signal.c), which act per fiber in a fiber and are the C library's
 * elsewhere.
 */
#include "shim.h"

#include <signal.h>
#include <stdatomic.h>

/* The prototypes are marked deprecated in glibc's headers. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

int shim__sigaction(int sig, const struct sigaction *act, struct sigaction *old);
int shim__sigprocmask(int how, const sigset_t *set, sigset_t *old);
int shim__sigsuspend(const sigset_t *set);
int shim__raise(int sig);

/* Exports a wrapper under a libc name whose header declaration is in the
 * way (a macro, an asm label). */
#ifdef SHIM_NO_EXPORTS
#define SHIM_ALIAS_AS(sym, fn)
#else
#define SHIM_ALIAS_AS(sym, fn)                                                             \
    extern __typeof__(fn) shim__export_##fn __asm__(#sym)                                  \
        __attribute__((alias(#fn), visibility("default")));
#endif

/* glibc's _sigintr: the signals siginterrupt() made interrupting, for
 * which signal() leaves SA_RESTART out. Bit sig-1. */
static _Atomic uint64_t shim__sigintr;

#define SHIM_BIT(sig) (1ull << ((sig)-1))

/* glibc's sigset_set_old_mask / sigset_get_old_mask (BSD int masks). */
static void shim__old_mask_set(sigset_t *set, int mask)
{
    sigemptyset(set);
    set->__val[0] = (unsigned int)mask;
}

static int shim__old_mask_get(const sigset_t *set)
{
    return (int)(unsigned int)set->__val[0];
}

/* glibc's __bsd_signal (signal, bsd_signal, ssignal): the signal blocked
 * in its handler, calls restarted unless siginterrupt said otherwise. */
sighandler_t shim__bsd_signal(int sig, sighandler_t handler)
{
    if (handler == SIG_ERR || sig < 1 || sig >= NSIG) {
        errno = EINVAL;
        return SIG_ERR;
    }
    struct sigaction act, oact;
    act.sa_handler = handler;
    sigemptyset(&act.sa_mask);
    sigaddset(&act.sa_mask, sig);
    act.sa_flags = (atomic_load(&shim__sigintr) & SHIM_BIT(sig)) ? 0 : SA_RESTART;
    if (shim__sigaction(sig, &act, &oact) < 0)
        return SIG_ERR;
    return oact.sa_handler;
}
SHIM_ALIAS_AS(bsd_signal, shim__bsd_signal)

sighandler_t shim__ssignal(int sig, sighandler_t handler)
{
    return shim__bsd_signal(sig, handler);
}
SHIM_ALIAS(ssignal)

/* glibc's __sysv_signal: reset to SIG_DFL at delivery, not blocked in its
 * handler, calls interrupted. */
sighandler_t shim____sysv_signal(int sig, sighandler_t handler)
{
    if (handler == SIG_ERR || sig < 1 || sig >= NSIG) {
        errno = EINVAL;
        return SIG_ERR;
    }
    struct sigaction act, oact;
    act.sa_handler = handler;
    sigemptyset(&act.sa_mask);
    act.sa_flags = (SA_RESETHAND | SA_NODEFER) & ~SA_RESTART;
    if (shim__sigaction(sig, &act, &oact) < 0)
        return SIG_ERR;
    return oact.sa_handler;
}
SHIM_ALIAS(__sysv_signal)

sighandler_t shim__sysv_signal(int sig, sighandler_t handler)
{
    return shim____sysv_signal(sig, handler);
}
SHIM_ALIAS(sysv_signal)

int shim__siginterrupt(int sig, int interrupt)
{
    struct sigaction action;
    if (shim__sigaction(sig, NULL, &action) < 0)
        return -1;
    if (interrupt) {
        atomic_fetch_or(&shim__sigintr, SHIM_BIT(sig));
        action.sa_flags &= ~SA_RESTART;
    } else {
        atomic_fetch_and(&shim__sigintr, ~SHIM_BIT(sig));
        action.sa_flags |= SA_RESTART;
    }
    if (shim__sigaction(sig, &action, NULL) < 0)
        return -1;
    return 0;
}
SHIM_ALIAS(siginterrupt)

/* SIG_HOLD blocks the signal; any other disposition is installed (no
 * mask, no flags) and unblocks it. SIG_HOLD comes back when it was
 * blocked before. */
sighandler_t shim__sigset(int sig, sighandler_t disp)
{
    if (disp == SIG_ERR || sig < 1 || sig >= NSIG) {
        errno = EINVAL;
        return SIG_ERR;
    }
    sigset_t set, oset;
    struct sigaction act, oact;
    sigemptyset(&set);
    sigaddset(&set, sig);
    if (disp == SIG_HOLD) {
        if (shim__sigprocmask(SIG_BLOCK, &set, &oset) < 0)
            return SIG_ERR;
        if (sigismember(&oset, sig))
            return SIG_HOLD;
        if (shim__sigaction(sig, NULL, &oact) < 0)
            return SIG_ERR;
        return oact.sa_handler;
    }
    act.sa_handler = disp;
    sigemptyset(&act.sa_mask);
    act.sa_flags = 0;
    if (shim__sigaction(sig, &act, &oact) < 0)
        return SIG_ERR;
    if (shim__sigprocmask(SIG_UNBLOCK, &set, &oset) < 0)
        return SIG_ERR;
    return sigismember(&oset, sig) ? SIG_HOLD : oact.sa_handler;
}
SHIM_ALIAS(sigset)

int shim__sighold(int sig)
{
    sigset_t set;
    sigemptyset(&set);
    if (sigaddset(&set, sig) < 0)
        return -1;
    return shim__sigprocmask(SIG_BLOCK, &set, NULL);
}
SHIM_ALIAS(sighold)

int shim__sigrelse(int sig)
{
    sigset_t set;
    sigemptyset(&set);
    if (sigaddset(&set, sig) < 0)
        return -1;
    return shim__sigprocmask(SIG_UNBLOCK, &set, NULL);
}
SHIM_ALIAS(sigrelse)

int shim__sigignore(int sig)
{
    struct sigaction act;
    act.sa_handler = SIG_IGN;
    sigemptyset(&act.sa_mask);
    act.sa_flags = 0;
    return shim__sigaction(sig, &act, NULL);
}
SHIM_ALIAS(sigignore)

/* is_sig: sig_or_mask is a signal to let in (X/Open), else a BSD mask to
 * wait with. A cancellation point through sigsuspend. */
int shim____sigpause(int sig_or_mask, int is_sig)
{
    sigset_t set;
    if (is_sig) {
        if (shim__sigprocmask(SIG_BLOCK, NULL, &set) < 0 || sigdelset(&set, sig_or_mask) < 0)
            return -1;
    } else {
        shim__old_mask_set(&set, sig_or_mask);
    }
    return shim__sigsuspend(&set);
}
SHIM_ALIAS_AS(__sigpause, shim____sigpause)

int shim__xpg_sigpause(int sig)
{
    return shim____sigpause(sig, 1);
}
SHIM_ALIAS_AS(__xpg_sigpause, shim__xpg_sigpause)

int shim__bsd_sigpause(int mask)
{
    return shim____sigpause(mask, 0);
}
SHIM_ALIAS_AS(sigpause, shim__bsd_sigpause)

int shim__sigblock(int mask)
{
    sigset_t set, oset;
    shim__old_mask_set(&set, mask);
    shim__sigprocmask(SIG_BLOCK, &set, &oset); /* cannot fail */
    return shim__old_mask_get(&oset);
}
SHIM_ALIAS(sigblock)

int shim__sigsetmask(int mask)
{
    sigset_t set, oset;
    shim__old_mask_set(&set, mask);
    shim__sigprocmask(SIG_SETMASK, &set, &oset); /* cannot fail */
    return shim__old_mask_get(&oset);
}
SHIM_ALIAS(sigsetmask)

int shim__siggetmask(void)
{
    return shim__sigblock(0);
}
SHIM_ALIAS(siggetmask)

int shim__gsignal(int sig)
{
    return shim__raise(sig);
}
SHIM_ALIAS(gsignal)
