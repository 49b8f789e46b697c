// fibershim-carriers: 1 2
/* The mask a handler sees is the kernel's: the thread's mask, plus the
 * action's sa_mask, plus the signal itself unless SA_NODEFER; restored
 * when the handler returns. For a signal sent to a thread blocked in
 * read (pthread_kill), to the process (kill, taken by the one thread
 * that does not block it), and raised by the thread itself. */
#include "common.h"

#include <stdatomic.h>

struct seen {
    int self, extra, other, thread_blocked;
};
static struct seen seen;

static void handler(int sig)
{
    sigset_t m;
    pthread_sigmask(SIG_BLOCK, NULL, &m);
    seen.self = sigismember(&m, sig);
    seen.extra = sigismember(&m, SIGUSR2);
    seen.other = sigismember(&m, SIGINT);
    seen.thread_blocked = sigismember(&m, SIGHUP);
}

static void install(int flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR2);
    CHECK_SYS(sigaction(SIGUSR1, &sa, NULL));
}

static int blocked(int sig)
{
    sigset_t m;
    pthread_sigmask(SIG_BLOCK, NULL, &m);
    return sigismember(&m, sig);
}

struct job {
    int fd;
    atomic_int ready, done;
    int after_self, after_extra;
};

static void *reader(void *p)
{
    struct job *j = p;
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    CHECK_RC(pthread_sigmask(SIG_UNBLOCK, &s, NULL));
    sigemptyset(&s);
    sigaddset(&s, SIGHUP);
    CHECK_RC(pthread_sigmask(SIG_BLOCK, &s, NULL));
    atomic_store(&j->ready, 1);
    char c;
    ssize_t n = read(j->fd, &c, 1);
    CHECK(n < 0 && errno == EINTR);
    j->after_self = blocked(SIGUSR1);
    j->after_extra = blocked(SIGUSR2);
    atomic_store(&j->done, 1);
    return NULL;
}

static void report(const char *how, int nodefer, const struct job *j)
{
    printf("%s, %s: in the handler: signal blocked %s, sa_mask's SIGUSR2 blocked %s, SIGINT "
           "blocked %s, thread's SIGHUP blocked %s; after: SIGUSR1 %s, SIGUSR2 %s\n",
           how, nodefer ? "SA_NODEFER" : "no SA_NODEFER", yesno(seen.self), yesno(seen.extra),
           yesno(seen.other), yesno(seen.thread_blocked), yesno(j->after_self),
           yesno(j->after_extra));
}

static void run(const char *how, int nodefer)
{
    install(nodefer ? SA_NODEFER : 0);
    memset(&seen, 0, sizeof seen);
    int p[2];
    CHECK_SYS(pipe(p));
    struct job j = {.fd = p[0]};
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, reader, &j));
    while (!atomic_load(&j.ready))
        usleep(1000);
    /* Again every 100 ms until the read returns: a signal that came
     * before the reader was in read (a loaded machine) ran the handler
     * only, with the same mask. */
    do {
        usleep(100000);
        if (atomic_load(&j.done))
            break;
        if (!strcmp(how, "pthread_kill"))
            CHECK_RC(pthread_kill(t, SIGUSR1));
        else
            CHECK_SYS(kill(getpid(), SIGUSR1));
    } while (!atomic_load(&j.done));
    CHECK_RC(pthread_join(t, NULL));
    report(how, nodefer, &j);
    close(p[0]);
    close(p[1]);
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    CHECK_RC(pthread_sigmask(SIG_BLOCK, &s, NULL));
    run("pthread_kill", 0);
    run("pthread_kill", 1);
    run("kill", 0);
    run("kill", 1);

    /* raise() from main, which unblocks SIGUSR1 and blocks SIGHUP first. */
    CHECK_RC(pthread_sigmask(SIG_UNBLOCK, &s, NULL));
    sigemptyset(&s);
    sigaddset(&s, SIGHUP);
    CHECK_RC(pthread_sigmask(SIG_BLOCK, &s, NULL));
    for (int nodefer = 0; nodefer <= 1; nodefer++) {
        install(nodefer ? SA_NODEFER : 0);
        memset(&seen, 0, sizeof seen);
        CHECK_SYS(raise(SIGUSR1));
        struct job j = {.after_self = blocked(SIGUSR1), .after_extra = blocked(SIGUSR2)};
        report("raise", nodefer, &j);
    }
    return 0;
}
