/* Signal-waiting threads: sigwaitinfo, sigtimedwait and sigwait, with
 * signals sent to the process (kill, sigqueue) and to the thread
 * (pthread_kill), a timeout, a bad timeout, and a handler of another
 * signal interrupting the wait (EINTR, never restarted). While threads
 * wait, another thread must keep ticking: under the shim this runs with
 * one carrier (tests/programs/CMakeLists.txt), so a wait that held its
 * kernel thread would stop everything and the alarm would fire. */
#include "common.h"

#include <stdatomic.h>
#include <sys/syscall.h>

static sigset_t waitset; /* SIGUSR1, SIGRTMIN: blocked in every thread */
static int tgkill_code;  /* si_code this kernel gives a tgkill (SI_TKILL, or SI_USER on 6.x) */
static int ack[2];       /* waiter -> main: "took one, send the next" */

static void *info_waiter(void *unused)
{
    (void)unused;
    for (int i = 0; i < 3; i++) {
        siginfo_t si;
        int sig = sigwaitinfo(&waitset, &si);
        CHECK(sig > 0);
        const char *code = i == 2 ? (si.si_code == tgkill_code ? "tgkill's code" : "other")
                           : si.si_code == SI_USER  ? "SI_USER"
                           : si.si_code == SI_QUEUE ? "SI_QUEUE"
                                                    : "other";
        printf("sigwaitinfo %d: %s %s pid-ok %s", i, sig == SIGUSR1 ? "SIGUSR1" : "SIGRTMIN", code,
               yesno(si.si_pid == getpid()));
        if (si.si_code == SI_QUEUE)
            printf(" value %d", si.si_value.sival_int);
        printf("\n");
        fflush(stdout);
        write_all(ack[1], "a", 1);
    }
    return NULL;
}

static _Atomic int ticks;
static _Atomic int stop_ticking;

static void *ticker(void *unused)
{
    (void)unused;
    while (!atomic_load(&stop_ticking)) {
        sleep_ms(5);
        atomic_fetch_add(&ticks, 1);
    }
    return NULL;
}

static void *plain_waiter(void *unused)
{
    (void)unused;
    int sig = 0;
    CHECK_RC(sigwait(&waitset, &sig));
    printf("sigwait: %s, ticks meanwhile >= 10: %s\n", sig == SIGUSR1 ? "SIGUSR1" : "other",
           yesno(atomic_load(&ticks) >= 10));
    return NULL;
}

static _Atomic int usr2_handled;
static void on_usr2(int sig)
{
    (void)sig;
    atomic_store(&usr2_handled, 1);
}

static _Atomic int eintr_waiting;

static void *eintr_waiter(void *unused)
{
    (void)unused;
    sigset_t un;
    sigemptyset(&un);
    sigaddset(&un, SIGUSR2);
    CHECK_RC(pthread_sigmask(SIG_UNBLOCK, &un, NULL));
    struct timespec tmo = {5, 0};
    atomic_store(&eintr_waiting, 1);
    int64_t t0 = now_ns();
    int rc = sigtimedwait(&waitset, NULL, &tmo);
    int e = errno;
    printf("sigtimedwait interrupted by a handler: rc %d %s, handler ran %s, early %s\n", rc,
           rc < 0 ? errname(e) : "-", yesno(atomic_load(&usr2_handled)),
           yesno(now_ns() - t0 < 4000000000LL));
    return NULL;
}

int main(void)
{
    tp_setup(30);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr2;
    sa.sa_flags = SA_RESTART; /* irrelevant: sigtimedwait is never restarted */
    CHECK_SYS(sigaction(SIGUSR2, &sa, NULL));

    sigemptyset(&waitset);
    sigaddset(&waitset, SIGUSR1);
    sigaddset(&waitset, SIGRTMIN);
    sigset_t block = waitset;
    sigaddset(&block, SIGUSR2); /* only eintr_waiter takes SIGUSR2 */
    CHECK_RC(pthread_sigmask(SIG_BLOCK, &block, NULL));
    CHECK_SYS(pipe(ack));
    /* What a thread-directed signal looks like here, from the raw call. */
    CHECK_SYS(syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), SIGUSR1));
    siginfo_t probe;
    CHECK(sigwaitinfo(&waitset, &probe) == SIGUSR1);
    tgkill_code = probe.si_code;

    pthread_t tick;
    CHECK_RC(pthread_create(&tick, NULL, ticker, NULL));

    /* 1. sigwaitinfo: process-directed, queued with a value, thread-directed. */
    pthread_t w;
    CHECK_RC(pthread_create(&w, NULL, info_waiter, NULL));
    char c;
    sleep_ms(20);
    CHECK_SYS(kill(getpid(), SIGUSR1));
    CHECK(read_full(ack[0], &c, 1) == 1);
    sleep_ms(20);
    CHECK_SYS(sigqueue(getpid(), SIGRTMIN, (union sigval){.sival_int = 42}));
    CHECK(read_full(ack[0], &c, 1) == 1);
    sleep_ms(20);
    CHECK_RC(pthread_kill(w, SIGUSR1));
    CHECK(read_full(ack[0], &c, 1) == 1);
    CHECK_RC(pthread_join(w, NULL));

    /* 2. sigtimedwait: timeout, zero timeout, bad timeout. */
    struct timespec t50 = {0, 50000000}, t0 = {0, 0}, bad = {0, 2000000000L};
    int64_t start = now_ns();
    int rc = sigtimedwait(&waitset, NULL, &t50);
    int e = errno;
    printf("sigtimedwait 50 ms, nothing sent: rc %d %s, waited >= 50 ms %s\n", rc, errname(e),
           yesno(now_ns() - start >= 50000000LL));
    rc = sigtimedwait(&waitset, NULL, &t0);
    e = errno;
    printf("sigtimedwait 0: rc %d %s\n", rc, errname(e));
    rc = sigtimedwait(&waitset, NULL, &bad);
    e = errno;
    printf("sigtimedwait bad timeout: rc %d %s\n", rc, errname(e));
    CHECK_SYS(kill(getpid(), SIGUSR1));
    siginfo_t si;
    rc = sigtimedwait(&waitset, &si, &t50);
    printf("sigtimedwait with one pending: %s\n", rc == SIGUSR1 ? "SIGUSR1" : "other");

    /* 3. sigwait while another thread keeps ticking. */
    atomic_store(&ticks, 0);
    pthread_t pw;
    CHECK_RC(pthread_create(&pw, NULL, plain_waiter, NULL));
    while (atomic_load(&ticks) < 10)
        sleep_ms(5);
    CHECK_SYS(kill(getpid(), SIGUSR1));
    CHECK_RC(pthread_join(pw, NULL));

    /* 4. A handler of another signal interrupts sigtimedwait. */
    pthread_t ew;
    CHECK_RC(pthread_create(&ew, NULL, eintr_waiter, NULL));
    while (!atomic_load(&eintr_waiting))
        sleep_ms(1);
    sleep_ms(50);
    CHECK_RC(pthread_kill(ew, SIGUSR2));
    CHECK_RC(pthread_join(ew, NULL));

    atomic_store(&stop_ticking, 1);
    CHECK_RC(pthread_join(tick, NULL));
    return 0;
}
