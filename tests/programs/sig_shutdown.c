// fibershim-carriers: 1 2
/* Graceful shutdown: a SIGTERM handler installed without SA_RESTART ends
 * main's blocking accept() with EINTR, as the kernel ends a thread's. The
 * signal is sent to the process (kill), once from another process and once
 * from a thread of this one, while workers are blocked elsewhere (a read,
 * a condition wait) or spin: the kernel prefers the main thread when it
 * does not block the signal, so the handler runs in main and its accept
 * is the call interrupted. With SA_RESTART the accept goes on and takes
 * the connection made after the signal. The sender repeats the signal
 * every 100 ms until accept returns, so that a signal that came before
 * main was in accept (a loaded machine) does not hang the test. */
#include "common.h"

#include <stdatomic.h>
#include <sys/wait.h>

static volatile sig_atomic_t stop;
static __thread int is_main;
static atomic_int handled, handled_in_main, accepted;
static int port;

static void on_term(int sig)
{
    (void)sig;
    stop = 1;
    atomic_fetch_add(&handled, 1);
    if (is_main)
        atomic_fetch_add(&handled_in_main, 1);
}

static int pipefd[2];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int done;

static void *reader(void *arg)
{
    (void)arg;
    char c;
    ssize_t n;
    do
        n = read(pipefd[0], &c, 1);
    while (n < 0 && errno == EINTR);
    return NULL;
}

static void *cond_waiter(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    while (!done)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return NULL;
}

static void *killer(void *arg)
{
    (void)arg;
    while (!atomic_load(&accepted)) {
        usleep(100000);
        if (!atomic_load(&accepted))
            kill(getpid(), SIGTERM);
    }
    return NULL;
}

static void *connector(void *arg)
{
    int before = (int)(intptr_t)arg;
    while (atomic_load(&handled_in_main) == before)
        usleep(1000);
    int c = CHECK_SYS(socket(AF_INET, SOCK_STREAM, 0));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_SYS(connect(c, (struct sockaddr *)&a, sizeof a));
    close(c);
    return NULL;
}

static int listener(void)
{
    int s = CHECK_SYS(socket(AF_INET, SOCK_STREAM, 0));
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_SYS(bind(s, (struct sockaddr *)&a, sizeof a));
    CHECK_SYS(listen(s, 16));
    socklen_t len = sizeof a;
    CHECK_SYS(getsockname(s, (struct sockaddr *)&a, &len));
    port = ntohs(a.sin_port);
    return s;
}

static void install(int flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    CHECK_SYS(sigaction(SIGTERM, &sa, NULL));
}

/* One accept, interrupted (or not) by a SIGTERM from `from`. */
static void round_(const char *from, int flags)
{
    int s = listener();
    stop = 0;
    int before = atomic_load(&handled_in_main);
    atomic_store(&accepted, 0);
    install(flags);
    pid_t child = 0;
    pthread_t k, c = 0;
    if (!strcmp(from, "another process")) {
        child = CHECK_SYS(fork());
        if (child == 0) {
            for (;;) { /* until the parent kills us */
                usleep(100000);
                kill(getppid(), SIGTERM);
            }
        }
    } else {
        CHECK_RC(pthread_create(&k, NULL, killer, NULL));
    }
    if (flags & SA_RESTART)
        CHECK_RC(pthread_create(&c, NULL, connector, (void *)(intptr_t)before));
    int fd = accept(s, NULL, NULL);
    int err = errno;
    atomic_store(&accepted, 1);
    printf("SIGTERM from %s, %s: accept %s, handler ran in main %s, stop flag %s\n", from,
           flags & SA_RESTART ? "SA_RESTART" : "no SA_RESTART",
           fd >= 0 ? "returned a connection" : errname(err),
           yesno(atomic_load(&handled_in_main) > before), yesno(stop));
    if (fd >= 0)
        close(fd);
    if (child) {
        int st;
        CHECK_SYS(kill(child, SIGKILL));
        CHECK_SYS(waitpid(child, &st, 0));
    } else {
        CHECK_RC(pthread_join(k, NULL));
    }
    if (c)
        CHECK_RC(pthread_join(c, NULL));
    close(s);
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    is_main = 1;
    CHECK_SYS(pipe(pipefd));
    pthread_t r, w;
    CHECK_RC(pthread_create(&r, NULL, reader, NULL));
    CHECK_RC(pthread_create(&w, NULL, cond_waiter, NULL));
    round_("another process", 0);
    round_("a thread", 0);
    round_("a thread", SA_RESTART);
    pthread_mutex_lock(&mu);
    done = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    CHECK_SYS(write(pipefd[1], "x", 1));
    CHECK_RC(pthread_join(r, NULL));
    CHECK_RC(pthread_join(w, NULL));
    printf("every handler ran in main: %s\n",
           yesno(atomic_load(&handled) == atomic_load(&handled_in_main)));
    return 0;
}
