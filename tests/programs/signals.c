/* Signals aimed at a thread: pthread_kill interrupts a blocked read
 * (restarted under SA_RESTART, EINTR without), a nanosleep (always EINTR,
 * with the time left), and a poll (always EINTR); pthread_sigmask keeps a
 * signal pending until it is unblocked; signal 0 checks existence; a
 * handler runs in the thread it was sent to. */
#include "common.h"
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>

static __thread int in_target;
static atomic_int handled, handled_in_target;

static void handler(int sig)
{
    (void)sig;
    atomic_fetch_add(&handled, 1);
    if (in_target)
        atomic_fetch_add(&handled_in_target, 1);
}

static int sv_restart[2], sv_eintr[2];
static atomic_int ready;
static ssize_t restart_rc, eintr_rc;
static int eintr_errno, sleep_rc, sleep_errno, sleep_rem_ok, poll_rc, poll_errno;

static void *reader_restart(void *arg)
{
    in_target = 1;
    atomic_fetch_add(&ready, 1);
    char c;
    restart_rc = read(sv_restart[0], &c, 1); /* SIGUSR1 (SA_RESTART) mid-way */
    return NULL;
}

static void *reader_eintr(void *arg)
{
    in_target = 1;
    atomic_fetch_add(&ready, 1);
    char c;
    eintr_rc = read(sv_eintr[0], &c, 1); /* SIGUSR2 (no SA_RESTART) */
    eintr_errno = errno;
    return NULL;
}

static void *sleeper(void *arg)
{
    in_target = 1;
    atomic_fetch_add(&ready, 1);
    struct timespec ts = {5, 0}, rem = {0, 0};
    sleep_rc = nanosleep(&ts, &rem);
    sleep_errno = errno;
    sleep_rem_ok = rem.tv_sec >= 3 && rem.tv_sec <= 5;
    return NULL;
}

static void *poller(void *arg)
{
    in_target = 1;
    int p[2];
    CHECK_SYS(pipe(p));
    atomic_fetch_add(&ready, 1);
    struct pollfd pf = {p[0], POLLIN, 0};
    poll_rc = poll(&pf, 1, 5000); /* SIGUSR1: poll is never restarted */
    poll_errno = errno;
    close(p[0]);
    close(p[1]);
    return NULL;
}

int main(void)
{
    tp_setup(60);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_flags = 0;
    sigaction(SIGUSR2, &sa, NULL);
    CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, sv_restart));
    CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, sv_eintr));

    pthread_t t[4];
    CHECK_RC(pthread_create(&t[0], NULL, reader_restart, NULL));
    CHECK_RC(pthread_create(&t[1], NULL, reader_eintr, NULL));
    CHECK_RC(pthread_create(&t[2], NULL, sleeper, NULL));
    CHECK_RC(pthread_create(&t[3], NULL, poller, NULL));
    while (atomic_load(&ready) < 4)
        sleep_ms(5);
    sleep_ms(100); /* all four are blocked now */
    CHECK_RC(pthread_kill(t[0], SIGUSR1));
    CHECK_RC(pthread_kill(t[1], SIGUSR2));
    CHECK_RC(pthread_kill(t[2], SIGUSR2));
    CHECK_RC(pthread_kill(t[3], SIGUSR1));
    sleep_ms(100);
    write_all(sv_restart[1], "x", 1); /* the restarted read gets this */
    for (int i = 0; i < 4; i++)
        CHECK_RC(pthread_join(t[i], NULL));
    printf("SA_RESTART read: restarted, returned %zd\n", restart_rc);
    printf("read without SA_RESTART: %zd %s\n", eintr_rc, errname(eintr_errno));
    printf("nanosleep: %d %s, time left returned: %s\n", sleep_rc, errname(sleep_errno),
           yesno(sleep_rem_ok));
    printf("poll: %d %s\n", poll_rc, errname(poll_errno));
    printf("handlers ran: %d, all in the target thread: %s\n", (int)handled,
           yesno(handled_in_target == handled));

    /* Blocked, then pending, then delivered at unblock. */
    atomic_store(&handled, 0);
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR1);
    CHECK_RC(pthread_sigmask(SIG_BLOCK, &m, NULL));
    CHECK_RC(pthread_kill(pthread_self(), SIGUSR1));
    printf("while blocked: handler ran %d times\n", (int)handled);
    sigset_t cur;
    CHECK_RC(pthread_sigmask(SIG_BLOCK, NULL, &cur));
    printf("mask reports SIGUSR1 blocked: %s\n", yesno(sigismember(&cur, SIGUSR1) == 1));
    CHECK_RC(pthread_sigmask(SIG_UNBLOCK, &m, NULL));
    printf("after unblock: handler ran %d times\n", (int)handled);
    printf("pthread_kill(self, 0): %d, bad signal: %s\n", pthread_kill(pthread_self(), 0),
           errname(pthread_kill(pthread_self(), 99999)));
    printf("signals: ok\n");
    return 0;
}
