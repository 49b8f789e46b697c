// fibershim-carriers: 1 2
/* Signals aimed at one thread, per thread: pthread_sigqueue to a thread
 * waiting in sigwaitinfo and to one with an SA_SIGINFO handler (SI_QUEUE
 * and the value), and its errors; pthread_kill right after
 * pthread_create, before the new thread ran (the handler runs in it; a
 * blocked signal waits for its sigwaitinfo); sigpending per thread (a
 * signal main sent itself before creating any thread is main's alone);
 * and the signal mask pthread_attr_setsigmask_np gives a new thread. */
#include "common.h"

#include <stdatomic.h>

static atomic_int handled;
static _Atomic pthread_t handler_thread;
static atomic_int handler_code, handler_value;

static void on_usr1(int sig)
{
    (void)sig;
    atomic_store(&handler_thread, pthread_self());
    atomic_fetch_add(&handled, 1);
}

static void on_rt1(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    atomic_store(&handler_code, si->si_code);
    atomic_store(&handler_value, si->si_value.sival_int);
    atomic_store(&handler_thread, pthread_self());
    atomic_fetch_add(&handled, 1);
}

static void wait_handled(int n)
{
    while (atomic_load(&handled) < n)
        usleep(1000);
}

static const char *is_pending(int sig)
{
    sigset_t p;
    CHECK_SYS(sigpending(&p));
    return yesno(sigismember(&p, sig) == 1);
}

/* A new thread: what it finds pending (main's own SIGUSR2 must not be). */
static void *report_pending(void *unused)
{
    (void)unused;
    printf("new thread: SIGUSR2 pending %s\n", is_pending(SIGUSR2));
    return NULL;
}

/* Killed with SIGUSR1 (handled) before it first ran: waits for the handler. */
static void *await_handler(void *unused)
{
    (void)unused;
    wait_handled(1);
    return NULL;
}

/* Killed with SIGUSR2 (blocked), most likely before it first ran: finds
 * it pending. It looks once main has sent it (a new thread may run at
 * once, on another CPU, plain or under the shim). */
static atomic_int kill_sent;

static void *await_blocked(void *unused)
{
    (void)unused;
    while (!atomic_load(&kill_sent))
        usleep(1000);
    printf("killed before it ran: SIGUSR2 pending %s\n", is_pending(SIGUSR2));
    siginfo_t si;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    int sig = sigwaitinfo(&set, &si);
    printf("killed before it ran: sigwaitinfo %s\n", sig == SIGUSR2 ? "SIGUSR2" : "other");
    return NULL;
}

static atomic_int waiting;

/* Waits for SIGRTMIN, which main queues to this thread with a value. */
static void *queue_waiter(void *unused)
{
    (void)unused;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN);
    atomic_store(&waiting, 1);
    siginfo_t si;
    int sig = sigwaitinfo(&set, &si);
    printf("sigqueue to a waiter: %s %s value %d pid-ok %s\n",
           sig == SIGRTMIN ? "SIGRTMIN" : "other", si.si_code == SI_QUEUE ? "SI_QUEUE" : "other",
           si.si_value.sival_int, yesno(si.si_pid == getpid()));
    return NULL;
}

/* SIGRTMIN+1 unblocked: its SA_SIGINFO handler runs here. */
static void *queue_handled(void *unused)
{
    (void)unused;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN + 1);
    CHECK_RC(pthread_sigmask(SIG_UNBLOCK, &set, NULL));
    atomic_store(&waiting, 1);
    wait_handled(2);
    return NULL;
}

/* Reports which of SIGUSR1, SIGUSR2 and SIGTERM its mask holds. */
static void *report_mask(void *unused)
{
    (void)unused;
    sigset_t m;
    CHECK_RC(pthread_sigmask(SIG_BLOCK, NULL, &m));
    printf("  blocked: SIGUSR1 %s SIGUSR2 %s SIGTERM %s\n", yesno(sigismember(&m, SIGUSR1) == 1),
           yesno(sigismember(&m, SIGUSR2) == 1), yesno(sigismember(&m, SIGTERM) == 1));
    return NULL;
}

int main(void)
{
    tp_setup(30);
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    CHECK_SYS(sigaction(SIGUSR1, &sa, NULL));
    sa.sa_sigaction = on_rt1;
    sa.sa_flags = SA_SIGINFO;
    CHECK_SYS(sigaction(SIGRTMIN + 1, &sa, NULL));

    sigset_t blocked;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGUSR2);
    sigaddset(&blocked, SIGRTMIN);
    sigaddset(&blocked, SIGRTMIN + 1);
    CHECK_RC(pthread_sigmask(SIG_BLOCK, &blocked, NULL));

    /* Before any thread: signals to main itself stay main's. */
    CHECK_RC(pthread_kill(pthread_self(), SIGUSR2));
    CHECK_RC(pthread_sigqueue(pthread_self(), SIGRTMIN, (union sigval){.sival_int = 42}));
    printf("main, before create: SIGUSR2 pending %s\n", is_pending(SIGUSR2));
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, report_pending, NULL));
    CHECK_RC(pthread_join(t, NULL));
    printf("main, after create: SIGUSR2 pending %s SIGRTMIN pending %s\n", is_pending(SIGUSR2),
           is_pending(SIGRTMIN));
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN);
    siginfo_t si;
    int sig = sigwaitinfo(&set, &si);
    printf("main takes back: %s %s value %d\n", sig == SIGRTMIN ? "SIGRTMIN" : "other",
           si.si_code == SI_QUEUE ? "SI_QUEUE" : "other", si.si_value.sival_int);
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    sig = sigwaitinfo(&set, &si);
    printf("main takes back: %s, SIGUSR2 pending %s\n", sig == SIGUSR2 ? "SIGUSR2" : "other",
           is_pending(SIGUSR2));

    /* pthread_kill before the new thread ran. */
    CHECK_RC(pthread_create(&t, NULL, await_handler, NULL));
    CHECK_RC(pthread_kill(t, SIGUSR1));
    CHECK_RC(pthread_join(t, NULL));
    printf("killed before it ran: handler ran %d time(s), in it %s\n", atomic_load(&handled),
           yesno(pthread_equal(atomic_load(&handler_thread), t)));
    CHECK_RC(pthread_create(&t, NULL, await_blocked, NULL));
    CHECK_RC(pthread_kill(t, SIGUSR2));
    printf("main: SIGUSR2 pending %s\n", is_pending(SIGUSR2));
    fflush(stdout);
    atomic_store(&kill_sent, 1);
    CHECK_RC(pthread_join(t, NULL));

    /* pthread_sigqueue to a thread waiting for the signal. */
    atomic_store(&waiting, 0);
    CHECK_RC(pthread_create(&t, NULL, queue_waiter, NULL));
    while (!atomic_load(&waiting))
        usleep(1000);
    usleep(20000); /* into sigwaitinfo, most likely: either way it is taken */
    CHECK_RC(pthread_sigqueue(t, SIGRTMIN, (union sigval){.sival_int = 7}));
    CHECK_RC(pthread_join(t, NULL));

    /* ... and to one whose handler takes it. */
    atomic_store(&waiting, 0);
    CHECK_RC(pthread_create(&t, NULL, queue_handled, NULL));
    while (!atomic_load(&waiting))
        usleep(1000);
    CHECK_RC(pthread_sigqueue(t, SIGRTMIN + 1, (union sigval){.sival_int = 99}));
    CHECK_RC(pthread_join(t, NULL));
    printf("sigqueue to a handler: %s value %d, in it %s\n",
           atomic_load(&handler_code) == SI_QUEUE ? "SI_QUEUE" : "other",
           atomic_load(&handler_value), yesno(pthread_equal(atomic_load(&handler_thread), t)));

    /* Errors, as glibc gives them. */
    atomic_store(&waiting, 0);
    CHECK_RC(pthread_create(&t, NULL, queue_waiter, NULL));
    while (!atomic_load(&waiting))
        usleep(1000);
    union sigval v = {.sival_int = 1};
    printf("sigqueue signal 0: %s\n", errname(pthread_sigqueue(t, 0, v)));
    printf("sigqueue signal 65: %s\n", errname(pthread_sigqueue(t, 65, v)));
    printf("sigqueue signal -1: %s\n", errname(pthread_sigqueue(t, -1, v)));
    printf("sigqueue SIGCANCEL (32): %s\n", errname(pthread_sigqueue(t, 32, v)));
    CHECK_RC(pthread_sigqueue(t, SIGRTMIN, v));
    CHECK_RC(pthread_join(t, NULL));
    printf("sigqueue after join: %s\n", errname(pthread_sigqueue(t, SIGRTMIN, v)));

    /* pthread_attr_setsigmask_np: the new thread's mask, or the creator's. */
    pthread_attr_t attr;
    CHECK_RC(pthread_attr_init(&attr));
    sigset_t got;
    printf("attr without a mask: %s\n",
           pthread_attr_getsigmask_np(&attr, &got) == PTHREAD_ATTR_NO_SIGMASK_NP ? "no mask"
                                                                                  : "a mask");
    CHECK_RC(pthread_create(&t, &attr, report_mask, NULL));
    CHECK_RC(pthread_join(t, NULL));
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR1);
    sigaddset(&m, SIGTERM);
    CHECK_RC(pthread_attr_setsigmask_np(&attr, &m));
    printf("attr with {SIGUSR1, SIGTERM}:\n");
    CHECK_RC(pthread_create(&t, &attr, report_mask, NULL));
    CHECK_RC(pthread_join(t, NULL));
    CHECK_RC(pthread_attr_setsigmask_np(&attr, NULL));
    printf("attr mask cleared: %s\n",
           pthread_attr_getsigmask_np(&attr, &got) == PTHREAD_ATTR_NO_SIGMASK_NP ? "no mask"
                                                                                  : "a mask");
    CHECK_RC(pthread_create(&t, &attr, report_mask, NULL));
    CHECK_RC(pthread_join(t, NULL));
    CHECK_RC(pthread_attr_destroy(&attr));
    printf("done\n");
    return 0;
}
