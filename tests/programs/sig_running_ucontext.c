// fibershim-carriers: 1 2
/* A handler that interrupts a thread running code without system calls
 * gets the interrupted code's context, as SBCL's handlers expect: its
 * uc_mcontext's program counter is in that code, and what it changes
 * there takes effect when it returns. The thread spins while %rax is 0;
 * the handler sets the interrupted %rax to 42, which ends the loop. Then
 * the handler edits uc_sigmask (SIGUSR2 blocked after it returns). */
#include "common.h"

#include <stdatomic.h>
#include <ucontext.h>

static atomic_int spinning;
static volatile int pc_in_loop, ran;

__attribute__((noinline)) static long spin_while_rax_zero(void)
{
    long rax = 0;
    atomic_store(&spinning, 1);
    __asm__ volatile("1: test %0, %0\n\tjz 1b" : "+a"(rax));
    return rax;
}

static void handler(int sig, siginfo_t *si, void *ucv)
{
    (void)sig;
    (void)si;
    ucontext_t *uc = ucv;
    uintptr_t pc = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
    uintptr_t fn = (uintptr_t)spin_while_rax_zero;
    pc_in_loop = pc >= fn && pc < fn + 256;
    uc->uc_mcontext.gregs[REG_RAX] = 42;
    sigaddset(&uc->uc_sigmask, SIGUSR2);
    ran++;
}

static void *spinner(void *arg)
{
    (void)arg;
    long r = spin_while_rax_zero();
    sigset_t cur;
    CHECK_RC(pthread_sigmask(SIG_BLOCK, NULL, &cur));
    printf("handler ran %d, the program counter it saw was in the loop: %s, the loop ended with "
           "%%rax = %ld, SIGUSR2 blocked after: %s\n",
           ran, yesno(pc_in_loop), r, yesno(sigismember(&cur, SIGUSR2) == 1));
    return NULL;
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    CHECK_SYS(sigaction(SIGUSR1, &sa, NULL));
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, spinner, NULL));
    while (!atomic_load(&spinning))
        usleep(1000);
    usleep(50000);
    CHECK_RC(pthread_kill(t, SIGUSR1));
    CHECK_RC(pthread_join(t, NULL));
    return 0;
}
