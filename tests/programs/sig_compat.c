// fibershim-carriers: 1 2
/* The System V and BSD signal calls, from a thread: bsd_signal and
 * sysv_signal handlers for a trap (the mask inside, SA_RESETHAND),
 * siginterrupt and signal's SA_RESTART, sigset with SIG_HOLD, sighold,
 * sigrelse, sigignore, sigblock/sigsetmask/siggetmask, the X/Open and
 * BSD sigpause woken by pthread_kill, gsignal, and their errors. */
#include "common.h"

#include <semaphore.h>

/* These are the calls under test, deprecated or not. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

/* glibc's sigmask(), whose macro is marked deprecated. */
#define BSDMASK(sig) ((int)(1u << ((sig)-1)))

extern sighandler_t bsd_signal(int sig, sighandler_t handler);
extern int __sigpause(int sig_or_mask, int is_sig);

static volatile sig_atomic_t trap_ran, trap_blocked, trap_reset, usr1_ran, usr1_blocked;
static void (*volatile expect)(int);

static int blocked_now(int sig)
{
    sigset_t cur;
    CHECK_RC(pthread_sigmask(SIG_BLOCK, NULL, &cur));
    return sigismember(&cur, sig) == 1;
}

static sighandler_t handler_now(int sig)
{
    struct sigaction o;
    CHECK_SYS(sigaction(sig, NULL, &o));
    return o.sa_handler;
}

static int flags_now(int sig)
{
    struct sigaction o;
    CHECK_SYS(sigaction(sig, NULL, &o));
    return o.sa_flags & (SA_RESTART | SA_RESETHAND | SA_NODEFER);
}

static void on_trap(int sig)
{
    trap_ran++;
    trap_blocked = blocked_now(sig);
    trap_reset = handler_now(sig) == SIG_DFL;
}

static void on_usr1(int sig)
{
    int e = errno;
    usr1_ran++;
    usr1_blocked = blocked_now(sig);
    errno = e;
}

static void trap(void)
{
    __asm__ volatile("int3");
}

static sem_t ready;

static void *worker(void *arg)
{
    (void)arg;
    sighandler_t prev = bsd_signal(SIGTRAP, on_trap);
    trap();
    printf("bsd_signal: previous SIG_DFL %s, ran %d, SIGTRAP blocked inside %s, reset %s, "
           "flags SA_RESTART %s\n",
           yesno(prev == SIG_DFL), trap_ran, yesno(trap_blocked), yesno(trap_reset),
           yesno(flags_now(SIGTRAP) == SA_RESTART));
    trap_ran = 0;
    prev = sysv_signal(SIGTRAP, on_trap);
    int fl = flags_now(SIGTRAP);
    trap();
    printf("sysv_signal: previous on_trap %s, flags SA_RESETHAND|SA_NODEFER %s, ran %d, "
           "SIGTRAP blocked inside %s, reset inside %s, after SIG_DFL %s\n",
           yesno(prev == on_trap), yesno(fl == (int)(SA_RESETHAND | SA_NODEFER)), trap_ran,
           yesno(trap_blocked), yesno(trap_reset), yesno(handler_now(SIGTRAP) == SIG_DFL));
    errno = 0;
    int bad0 = sysv_signal(0, on_usr1) == SIG_ERR, e0 = errno;
    errno = 0;
    int badk = __sysv_signal(SIGKILL, on_usr1) == SIG_ERR, ek = errno;
    printf("sysv_signal(0): SIG_ERR %s %s; sysv_signal(SIGKILL): SIG_ERR %s %s\n", yesno(bad0),
           errname(e0), yesno(badk), errname(ek));

    CHECK_SYS(siginterrupt(SIGUSR1, 1));
    signal(SIGUSR1, on_usr1);
    printf("siginterrupt 1, then signal: SA_RESTART %s\n",
           yesno(flags_now(SIGUSR1) & SA_RESTART));
    CHECK_SYS(siginterrupt(SIGUSR1, 0));
    printf("siginterrupt 0: SA_RESTART %s, handler kept %s\n",
           yesno(flags_now(SIGUSR1) & SA_RESTART), yesno(handler_now(SIGUSR1) == on_usr1));
    errno = 0;
    int rk = siginterrupt(SIGKILL, 1);
    printf("siginterrupt(SIGKILL): %d %s\n", rk, errname(errno));

    prev = sigset(SIGUSR1, SIG_HOLD);
    printf("sigset SIG_HOLD: previous on_usr1 %s, blocked %s, again gives SIG_HOLD %s\n",
           yesno(prev == on_usr1), yesno(blocked_now(SIGUSR1)),
           yesno(sigset(SIGUSR1, SIG_HOLD) == SIG_HOLD));
    CHECK_RC(pthread_kill(pthread_self(), SIGUSR1));
    sigset_t p;
    CHECK_SYS(sigpending(&p));
    printf("sent while held: pending %s, ran %d\n", yesno(sigismember(&p, SIGUSR1) == 1),
           usr1_ran);
    prev = sigset(SIGUSR1, on_usr1);
    printf("sigset handler: previous SIG_HOLD %s, ran %d, blocked inside %s, blocked after %s, "
           "flags %d\n",
           yesno(prev == SIG_HOLD), usr1_ran, yesno(usr1_blocked), yesno(blocked_now(SIGUSR1)),
           flags_now(SIGUSR1));
    errno = 0;
    badk = sigset(SIGKILL, on_usr1) == SIG_ERR;
    printf("sigset(SIGKILL): SIG_ERR %s %s\n", yesno(badk), errname(errno));

    CHECK_SYS(sighold(SIGUSR2));
    int h = blocked_now(SIGUSR2);
    CHECK_SYS(sigrelse(SIGUSR2));
    printf("sighold: blocked %s; sigrelse: blocked %s\n", yesno(h), yesno(blocked_now(SIGUSR2)));
    errno = 0;
    int r32 = sighold(32);
    e0 = errno;
    errno = 0;
    int r0 = sigrelse(0);
    printf("sighold(32): %d %s; sigrelse(0): %d %s\n", r32, errname(e0), r0, errname(errno));
    CHECK_SYS(sigignore(SIGUSR2));
    printf("sigignore: SIG_IGN %s\n", yesno(handler_now(SIGUSR2) == SIG_IGN));

    int old = sigblock(BSDMASK(SIGUSR2));
    int now = siggetmask();
    int before = sigsetmask(old);
    printf("sigblock: old has SIGUSR2 %s, siggetmask has it %s, sigsetmask returned it %s, "
           "blocked after %s\n",
           yesno(old & BSDMASK(SIGUSR2)), yesno(now & BSDMASK(SIGUSR2)),
           yesno(before & BSDMASK(SIGUSR2)), yesno(blocked_now(SIGUSR2)));

    usr1_ran = 0;
    CHECK_RC(gsignal(SIGUSR1));
    printf("gsignal: ran %d\n", usr1_ran);

    /* sigpause: SIGUSR1 blocked, let in only for the wait. */
    CHECK_SYS(sighold(SIGUSR1));
    usr1_ran = 0;
    sem_post(&ready);
    errno = 0;
    int rc = sigpause(SIGUSR1);
    printf("sigpause: %d %s, ran %d, blocked after %s\n", rc, errname(errno), usr1_ran,
           yesno(blocked_now(SIGUSR1)));
    usr1_ran = 0;
    sigset_t cur;
    CHECK_RC(pthread_sigmask(SIG_BLOCK, NULL, &cur));
    int mask = (int)((unsigned)cur.__val[0] & ~(unsigned)BSDMASK(SIGUSR1));
    sem_post(&ready);
    errno = 0;
    rc = __sigpause(mask, 0);
    printf("BSD sigpause: %d %s, ran %d, blocked after %s\n", rc, errname(errno), usr1_ran,
           yesno(blocked_now(SIGUSR1)));
    return NULL;
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    CHECK_SYS(sem_init(&ready, 0, 0));
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, worker, NULL));
    for (int i = 0; i < 2; i++) {
        while (sem_wait(&ready) != 0)
            CHECK(errno == EINTR);
        usleep(20000);
        CHECK_RC(pthread_kill(t, SIGUSR1));
    }
    CHECK_RC(pthread_join(t, NULL));
    return 0;
}
