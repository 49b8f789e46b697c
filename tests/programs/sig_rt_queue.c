// fibershim-carriers: 1 2
/* Signals sent to a thread that blocks them queue as the kernel queues
 * them: each instance of a real-time signal is kept, in order, with its
 * si_code and si_value (pthread_sigqueue: SI_QUEUE, pthread_kill:
 * SI_TKILL), si_pid and si_uid; a standard signal sent again while
 * pending is dropped, its first siginfo kept. When the thread unblocks
 * them, the handlers run lowest signal first, each instance once. Then
 * sigwaitinfo takes the instances one by one, and RLIMIT_SIGPENDING
 * bounds the queue (EAGAIN for a real-time signal past it). */
#include "common.h"

#include <semaphore.h>

#define RT_A (SIGRTMIN + 2)
#define RT_B (SIGRTMIN + 3)
#define RT_W (SIGRTMIN + 4)
#define RT_L (SIGRTMIN + 5)

struct rec {
    int sig, code, value, ours;
};
static struct rec recs[32];
static volatile int nrecs;

static void handler(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    if (nrecs < 32)
        recs[nrecs++] = (struct rec){sig, si->si_code, si->si_value.sival_int,
                                     si->si_pid == getpid() && si->si_uid == getuid()};
}

static const char *signame(int sig)
{
    static char buf[16];
    if (sig == SIGUSR1)
        return "SIGUSR1";
    snprintf(buf, sizeof buf, "SIGRTMIN+%d", sig - SIGRTMIN);
    return buf;
}

static const char *codename(int code)
{
    return code == SI_QUEUE ? "SI_QUEUE" : code == SI_TKILL ? "SI_TKILL" : "other";
}

static sem_t ready, go;
/* The drain phase's results, handed over by the semaphores. */
static int drained, drained_ordered, drain_stop;

static long sigq_count(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    CHECK(f != NULL);
    char line[256];
    long n = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "SigQ: %ld/", &n) == 1)
            break;
    fclose(f);
    return n;
}

static void *worker(void *arg)
{
    (void)arg;
    /* Blocked from the start (inherited from main). */
    sem_post(&ready);
    while (sem_wait(&go) != 0)
        CHECK(errno == EINTR);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    sigaddset(&s, RT_A);
    sigaddset(&s, RT_B);
    CHECK_RC(pthread_sigmask(SIG_UNBLOCK, &s, NULL));
    printf("unblocked: %d handlers ran\n", nrecs);
    for (int i = 0; i < nrecs; i++)
        printf("  %s %s value %d, from this process %s\n", signame(recs[i].sig),
               codename(recs[i].code), recs[i].value, yesno(recs[i].ours));

    /* sigwaitinfo, one instance at a time. */
    sem_post(&ready);
    while (sem_wait(&go) != 0)
        CHECK(errno == EINTR);
    sigemptyset(&s);
    sigaddset(&s, RT_W);
    for (int i = 0; i < 3; i++) {
        siginfo_t si;
        int sig = sigwaitinfo(&s, &si);
        printf("sigwaitinfo: %s %s value %d, from this process %s\n", signame(sig),
               codename(si.si_code), si.si_value.sival_int,
               yesno(si.si_pid == getpid() && si.si_uid == getuid()));
    }
    sigset_t p;
    CHECK_SYS(sigpending(&p));
    printf("then pending: %s\n", yesno(sigismember(&p, RT_W) == 1));
    static const struct timespec zero;
    errno = 0;
    int rc = sigtimedwait(&s, NULL, &zero);
    printf("sigtimedwait again: %d %s\n", rc, errname(errno));

    /* Drain what main queued up to the limit, once per attempt. */
    for (;;) {
        sem_post(&ready);
        while (sem_wait(&go) != 0)
            CHECK(errno == EINTR);
        if (drain_stop)
            break;
        sigemptyset(&s);
        sigaddset(&s, RT_L);
        int n = 0, last = 0, ordered = 1;
        siginfo_t si;
        while (sigtimedwait(&s, &si, &zero) == RT_L) {
            ordered &= si.si_value.sival_int == last + 1;
            last = si.si_value.sival_int;
            n++;
        }
        drained = n;
        drained_ordered = ordered;
    }
    return NULL;
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO;
    sigfillset(&sa.sa_mask);
    CHECK_SYS(sigaction(SIGUSR1, &sa, NULL));
    CHECK_SYS(sigaction(RT_A, &sa, NULL));
    CHECK_SYS(sigaction(RT_B, &sa, NULL));
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    sigaddset(&s, RT_A);
    sigaddset(&s, RT_B);
    sigaddset(&s, RT_W);
    sigaddset(&s, RT_L);
    CHECK_RC(pthread_sigmask(SIG_BLOCK, &s, NULL));
    CHECK_SYS(sem_init(&ready, 0, 0));
    CHECK_SYS(sem_init(&go, 0, 0));
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, worker, NULL));
    while (sem_wait(&ready) != 0)
        CHECK(errno == EINTR);

    union sigval v;
    for (int i = 1; i <= 3; i++) {
        v.sival_int = i;
        CHECK_RC(pthread_sigqueue(t, RT_B, v));
    }
    v.sival_int = 10;
    CHECK_RC(pthread_sigqueue(t, RT_A, v));
    CHECK_RC(pthread_kill(t, RT_A));
    v.sival_int = 20;
    CHECK_RC(pthread_sigqueue(t, RT_A, v));
    v.sival_int = 100;
    CHECK_RC(pthread_sigqueue(t, SIGUSR1, v));
    v.sival_int = 200;
    CHECK_RC(pthread_sigqueue(t, SIGUSR1, v));
    CHECK_RC(pthread_kill(t, SIGUSR1));
    sem_post(&go);

    while (sem_wait(&ready) != 0)
        CHECK(errno == EINTR);
    for (int i = 5; i <= 7; i++) {
        v.sival_int = i;
        CHECK_RC(pthread_sigqueue(t, RT_W, v));
    }
    sem_post(&go);

    while (sem_wait(&ready) != 0)
        CHECK(errno == EINTR);
    /* RLIMIT_SIGPENDING counts every queued signal of the user (SigQ),
     * and other processes of the same user (tests run in parallel) may
     * queue or take one between our reading the count and our last
     * send. An attempt whose count is not exactly 5 is retried. */
    struct rlimit old, lim;
    CHECK_SYS(getrlimit(RLIMIT_SIGPENDING, &old));
    int accepted = 0, rc = 0, kill_rc = 0;
    for (int attempt = 0; attempt < 20; attempt++) {
        long q = sigq_count();
        CHECK(q >= 0);
        lim = old;
        lim.rlim_cur = (rlim_t)q + 5;
        CHECK_SYS(setrlimit(RLIMIT_SIGPENDING, &lim));
        accepted = 0;
        rc = 0;
        for (int i = 1; i <= 50; i++) {
            v.sival_int = i;
            if ((rc = pthread_sigqueue(t, RT_L, v)) != 0)
                break;
            accepted++;
        }
        kill_rc = pthread_kill(t, RT_L);
        CHECK_SYS(setrlimit(RLIMIT_SIGPENDING, &old));
        sem_post(&go);
        while (sem_wait(&ready) != 0)
            CHECK(errno == EINTR);
        if (accepted == 5 && drained == 5)
            break;
    }
    printf("RLIMIT_SIGPENDING 5 above the count: %d queued, then %s; pthread_kill %s\n", accepted,
           errname(rc), errname(kill_rc));
    printf("drained %d instances, in order %s\n", drained, yesno(drained_ordered));
    drain_stop = 1;
    sem_post(&go);
    CHECK_RC(pthread_join(t, NULL));
    return 0;
}
