// fibershim-carriers: 1 2
/* Signals that every thread blocks stay pending for the process, whatever
 * threads ran and ended before: threads that never blocked SIGUSR1 come
 * and go, then a kill(SIGUSR1) (default action: terminate) is taken by a
 * thread in sigwait; a SIGUSR2 with a handler is pending (sigpending in
 * every thread shows it) until a thread unblocks it, and its handler then
 * runs in that thread before pthread_sigmask returns. A handler that
 * calls pthread_exit ends its own thread only. */
#include "common.h"

#include <stdatomic.h>

static __thread int tag;
static atomic_int usr2_tag;

static void on_usr2(int sig)
{
    (void)sig;
    atomic_store(&usr2_tag, tag);
}

static void *short_lived(void *arg)
{
    (void)arg;
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    sigaddset(&s, SIGUSR2);
    CHECK_RC(pthread_sigmask(SIG_UNBLOCK, &s, NULL));
    return NULL;
}

static void *waiter(void *arg)
{
    (void)arg;
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    int sig = 0;
    CHECK_RC(sigwait(&s, &sig));
    return (void *)(intptr_t)sig;
}

static int pending_usr2(void)
{
    sigset_t p;
    CHECK_SYS(sigpending(&p));
    return sigismember(&p, SIGUSR2);
}

static void *check_pending(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)pending_usr2();
}

static void *unblocker(void *arg)
{
    (void)arg;
    tag = 7;
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR2);
    CHECK_RC(pthread_sigmask(SIG_UNBLOCK, &s, NULL));
    /* The handler ran before the call returned. */
    return (void *)(intptr_t)atomic_load(&usr2_tag);
}

static void on_alrm_exit(int sig)
{
    (void)sig;
    pthread_exit((void *)42);
}

static void *exiter(void *arg)
{
    (void)arg;
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGALRM);
    CHECK_RC(pthread_sigmask(SIG_UNBLOCK, &s, NULL));
    char c;
    int p[2];
    CHECK_SYS(pipe(p));
    read(p[0], &c, 1); /* ended by the handler's pthread_exit */
    FAIL("read returned");
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr2;
    sigemptyset(&sa.sa_mask);
    CHECK_SYS(sigaction(SIGUSR2, &sa, NULL));
    sa.sa_handler = on_alrm_exit;
    CHECK_SYS(sigaction(SIGALRM, &sa, NULL));

    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    sigaddset(&s, SIGUSR2);
    sigaddset(&s, SIGALRM);
    CHECK_RC(pthread_sigmask(SIG_BLOCK, &s, NULL));

    pthread_t t[8];
    for (int i = 0; i < 8; i++)
        CHECK_RC(pthread_create(&t[i], NULL, short_lived, NULL));
    for (int i = 0; i < 8; i++)
        CHECK_RC(pthread_join(t[i], NULL));
    usleep(50000);

    pthread_t w;
    CHECK_RC(pthread_create(&w, NULL, waiter, NULL));
    usleep(100000);
    CHECK_SYS(kill(getpid(), SIGUSR1));
    void *ret;
    CHECK_RC(pthread_join(w, &ret));
    printf("sigwait took signal %s\n", (intptr_t)ret == SIGUSR1 ? "SIGUSR1" : "another");

    CHECK_SYS(kill(getpid(), SIGUSR2));
    usleep(50000);
    pthread_t c;
    CHECK_RC(pthread_create(&c, NULL, check_pending, NULL));
    CHECK_RC(pthread_join(c, &ret));
    printf("SIGUSR2 pending in main %s, in another thread %s, handler ran %s\n",
           yesno(pending_usr2()), yesno((intptr_t)ret), yesno(atomic_load(&usr2_tag) != 0));
    pthread_t u;
    CHECK_RC(pthread_create(&u, NULL, unblocker, NULL));
    CHECK_RC(pthread_join(u, &ret));
    printf("handler ran in the thread that unblocked it before its pthread_sigmask returned %s, "
           "still pending %s\n",
           yesno((intptr_t)ret == 7), yesno(pending_usr2()));

    pthread_t x;
    CHECK_RC(pthread_create(&x, NULL, exiter, NULL));
    usleep(100000);
    alarm(1);
    CHECK_RC(pthread_join(x, &ret));
    printf("SIGALRM handler's pthread_exit ended the reader with %d\n", (int)(intptr_t)ret);
    usleep(50000);
    printf("main goes on\n");
    return 0;
}
