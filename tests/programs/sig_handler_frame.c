// fibershim-carriers: 1 2
/* sig_handler_frame.c - the signal mask a handler sees, and the one it
 * leaves behind by editing its ucontext (uc_sigmask), are the kernel's,
 * also in the handler of a synchronous trap (int3, SIGTRAP). Reduced from
 * SBCL's "blockables unblocked" death under the shim
 * (it was tests/servers/repro/handler_mask.c). */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <ucontext.h>

static volatile int sa_mask_seen = -1, self_seen = -1;

static void on_usr2(int sig, siginfo_t *si, void *ctx)
{
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    sa_mask_seen = sigismember(&cur, SIGUSR1); /* added by the kernel: sa_mask */
    self_seen = sigismember(&cur, SIGUSR2);    /* added by the kernel: no SA_NODEFER */
    /* As SBCL does: the mask restored at sigreturn blocks SIGALRM. */
    sigaddset(&((ucontext_t *)ctx)->uc_sigmask, SIGALRM);
}

static volatile int trap_seen = -1;

static void on_trap(int sig, siginfo_t *si, void *ctx)
{
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    trap_seen = sigismember(&cur, SIGUSR1);
}

static void *noop(void *a) { return a; }

int main(void)
{
    /* One thread, so that the shim has made main a fiber. */
    pthread_t t;
    pthread_create(&t, NULL, noop, NULL);
    pthread_join(t, NULL);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_usr2;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR1);
    sigaction(SIGUSR2, &sa, NULL);
    raise(SIGUSR2);

    sa.sa_sigaction = on_trap;
    sigfillset(&sa.sa_mask);
    sigaction(SIGTRAP, &sa, NULL);
    __asm__ volatile("int3");

    sigset_t after;
    pthread_sigmask(SIG_BLOCK, NULL, &after);
    printf("in the handler: sa_mask signal blocked %d, own signal blocked %d\n", sa_mask_seen,
           self_seen);
    printf("after it: SIGUSR1 blocked %d, SIGALRM blocked %d (set through uc_sigmask)\n",
           sigismember(&after, SIGUSR1), sigismember(&after, SIGALRM));
    printf("in a SIGTRAP (int3) handler: sa_mask signal blocked %d\n", trap_seen);
    return 0;
}
