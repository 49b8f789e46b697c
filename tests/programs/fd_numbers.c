// fibershim-carriers: 1 2
/* The program's fd numbers are its own. After its first thread (when the
 * shim starts its carriers and its signal dispatcher, with an epoll
 * instance, eventfds and a signalfd of its own) the next fds it opens
 * have the numbers they would have without the shim. closefrom(3) and close_range(3, ~0, 0)
 * then close every fd of the program's and none of the shim's: blocking
 * pipe I/O between new threads, a timed sleep and a signal handler all
 * still work. (The shim's eventfd and signalfd took fds 3 and 4: a
 * closefrom(3) broke later blocking reads with EBADF, and a program's
 * dup2 onto fd 3 put an eventfd counter into its stdout.) */
#include "common.h"

#include <sys/wait.h>

static volatile int handled;
static void on_usr1(int sig)
{
    (void)sig;
    handled++;
}

static void *nothing(void *p)
{
    return p;
}

struct pp {
    int rd, wr, rounds;
};

static void *pong(void *p)
{
    struct pp *x = p;
    char c;
    for (int i = 0; i < x->rounds; i++) {
        CHECK(read(x->rd, &c, 1) == 1);
        CHECK(write(x->wr, &c, 1) == 1);
    }
    return NULL;
}

/* A ping-pong of blocking reads and writes over two pipes, a short
 * sleep, and a signal to ourselves with a handler. */
static void still_works(const char *after)
{
    int a[2], b[2];
    CHECK_SYS(pipe(a));
    CHECK_SYS(pipe(b));
    printf("%s: the next pipes are fds %d %d %d %d\n", after, a[0], a[1], b[0], b[1]);
    struct pp x = {a[0], b[1], 200};
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, pong, &x));
    char c = 'x';
    for (int i = 0; i < 200; i++) {
        CHECK(write(a[1], &c, 1) == 1);
        CHECK(read(b[0], &c, 1) == 1);
    }
    CHECK_RC(pthread_join(t, NULL));
    int64_t t0 = clock_ns(CLOCK_MONOTONIC);
    usleep(20000);
    int slept = clock_ns(CLOCK_MONOTONIC) - t0 >= 15000000;
    handled = 0;
    CHECK_SYS(kill(getpid(), SIGUSR1));
    for (int i = 0; i < 1000 && !handled; i++)
        usleep(1000);
    printf("%s: 200 blocking round trips, a 20 ms sleep %s, the handler ran %s\n", after,
           slept ? "slept" : "did not sleep", yesno(handled == 1));
    close(a[0]);
    close(a[1]);
    close(b[0]);
    close(b[1]);
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    CHECK_SYS(sigaction(SIGUSR1, &sa, NULL));
    /* The harness may hand us open fds of its own: compare with the
     * numbers a socketpair got before the first thread. */
    int before[2];
    CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, before));
    CHECK_SYS(close(before[0]));
    CHECK_SYS(close(before[1]));
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, nothing, NULL));
    CHECK_RC(pthread_join(t, NULL));
    int sv[2];
    CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
    printf("after the first thread, socketpair gives the fds it gave before it: %s\n",
           yesno(sv[0] == before[0] && sv[1] == before[1]));
    /* What a daemon does: stdout onto fd 3 (taken by the socket: close it
     * first), write through it. */
    CHECK_SYS(close(sv[0]));
    CHECK_SYS(dup2(1, sv[0]));
    CHECK(write(sv[0], "written through a dup2 of stdout onto the lowest free fd\n", 57) == 57);
    closefrom(3);
    still_works("after closefrom(3)");
    int p[2];
    CHECK_SYS(pipe(p));
    CHECK_SYS(close_range(3, ~0u, 0));
    EXPECT_ERRNO(fcntl(p[0], F_GETFD), EBADF);
    still_works("after close_range(3, ~0, 0)");
    return 0;
}
