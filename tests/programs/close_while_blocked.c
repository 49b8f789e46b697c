/* What happens to a thread blocked on an fd when another thread shuts the
 * fd down, closes it, or the peer goes away.
 *
 * Linux facts this relies on (all with real threads):
 *  - shutdown(fd, SHUT_RDWR) or SHUT_RD on a connected socket wakes a
 *    thread blocked in read(fd) with 0 (EOF), for TCP and AF_UNIX.
 *  - shutdown(listen_fd, SHUT_RDWR) wakes a thread blocked in accept() with
 *    -1 EINVAL.
 *  - shutdown(fd, SHUT_WR) wakes a thread blocked in write(fd) on a full
 *    socket; that write returns its partial count, the next one EPIPE.
 *  - close(fd) does NOT wake a thread blocked in read(fd) on a socket or a
 *    pipe (the read holds its own reference to the open file). The cases
 *    below therefore also close the peer end afterwards, after which the
 *    reader wakes with 0 (plain threads) -- or EBADF, which a runtime that
 *    notices the close may return; both print "woken".
 *  - a peer that closes with SO_LINGER {1, 0} sends RST: the blocked
 *    reader gets -1 ECONNRESET.
 */
#include "common.h"
#include <sys/socket.h>

struct rd {
    int fd;
    ssize_t ret;
    int err;
};

static void *reader(void *arg)
{
    struct rd *r = arg;
    char buf[16];
    do {
        r->ret = read(r->fd, buf, sizeof buf);
        r->err = r->ret < 0 ? errno : 0;
    } while (r->ret < 0 && r->err == EINTR);
    return NULL;
}

static const char *result(struct rd *r)
{
    static char b[64];
    if (r->ret >= 0)
        snprintf(b, sizeof b, "read returned %zd", r->ret);
    else
        snprintf(b, sizeof b, "read failed %s", errname(r->err));
    return b;
}

/* Start a reader on fd, let it block, run 'act', join, return the result. */
static volatile struct rd *current; /* the reader of run_reader, for stderr notes */

static struct rd run_reader(int fd, void (*act)(void *), void *ctx)
{
    struct rd r = {fd, -2, 0};
    current = &r;
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, reader, &r));
    sleep_ms(50);
    act(ctx);
    CHECK_RC(pthread_join(t, NULL));
    return r;
}

static void do_shut_rdwr(void *p) { CHECK_SYS(shutdown(*(int *)p, SHUT_RDWR)); }
static void do_close(void *p) { CHECK_SYS(close(*(int *)p)); }
static void do_shut_rd(void *p) { CHECK_SYS(shutdown(*(int *)p, SHUT_RD)); }

/* close the reader's fd, wait, then close the peer */
static void do_close_then_peer(void *p)
{
    int *fds = p;
    CHECK_SYS(close(fds[0]));
    sleep_ms(50);
    /* informational only (stderr is not compared): plain threads stay
     * blocked here, a runtime may already have woken the reader */
    fprintf(stderr, "note: reader still blocked 50 ms after close(fd): %s\n",
            yesno(current->ret == -2));
    CHECK_SYS(close(fds[1]));
}

static void do_rst(void *p)
{
    int fd = *(int *)p;
    struct linger lg = {1, 0};
    CHECK_SYS(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
    CHECK_SYS(close(fd));
}

static void print_woken(const char *what, struct rd *r)
{
    int woken = r->ret == 0 || (r->ret < 0 && r->err == EBADF);
    if (!woken)
        FAIL("%s: %s", what, result(r));
    printf("%s: woken\n", what);
}

struct acc {
    int fd;
    int ret, err;
};

static void *acceptor(void *arg)
{
    struct acc *a = arg;
    do {
        a->ret = accept(a->fd, NULL, NULL);
        a->err = a->ret < 0 ? errno : 0;
    } while (a->ret < 0 && a->err == EINTR);
    return NULL;
}

struct wr {
    int fd;
    long total;
    ssize_t last;
    int err;
};

static void *writer(void *arg)
{
    struct wr *w = arg;
    static char buf[1 << 20];
    for (;;) {
        ssize_t n = write(w->fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            w->last = n;
            w->err = errno;
            return NULL;
        }
        w->total += n;
    }
}

int main(void)
{
    tp_setup(60);
    int fds[2];

    /* 1. TCP, shutdown(SHUT_RDWR) from another thread */
    tcp_pair(fds);
    struct rd r = run_reader(fds[0], do_shut_rdwr, &fds[0]);
    printf("tcp shutdown(SHUT_RDWR) while blocked in read: %s\n", result(&r));
    close(fds[0]);
    close(fds[1]);

    /* 2. TCP, shutdown(SHUT_RD) */
    tcp_pair(fds);
    r = run_reader(fds[0], do_shut_rd, &fds[0]);
    printf("tcp shutdown(SHUT_RD) while blocked in read: %s\n", result(&r));
    close(fds[0]);
    close(fds[1]);

    /* 3. AF_UNIX socketpair, shutdown(SHUT_RDWR) */
    CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds));
    r = run_reader(fds[0], do_shut_rdwr, &fds[0]);
    printf("unix shutdown(SHUT_RDWR) while blocked in read: %s\n", result(&r));
    close(fds[0]);
    close(fds[1]);

    /* 4. TCP, close(fd) while blocked, then the peer closes */
    tcp_pair(fds);
    r = run_reader(fds[0], do_close_then_peer, fds);
    print_woken("tcp close(fd) while blocked in read, then peer close", &r);

    /* 5. AF_UNIX, same */
    CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds));
    r = run_reader(fds[0], do_close_then_peer, fds);
    print_woken("unix close(fd) while blocked in read, then peer close", &r);

    /* 6. pipe: close the read end while blocked, then the write end */
    CHECK_SYS(pipe2(fds, O_CLOEXEC));
    r = run_reader(fds[0], do_close_then_peer, fds);
    print_woken("pipe close(fd) while blocked in read, then writer close", &r);

    /* 7. peer resets the connection (SO_LINGER 0) */
    tcp_pair(fds);
    r = run_reader(fds[0], do_rst, &fds[1]);
    printf("tcp peer reset while blocked in read: %s\n", result(&r));
    close(fds[0]);

    /* 8. peer closes normally */
    CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds));
    r = run_reader(fds[0], do_close, &fds[1]);
    printf("unix peer close while blocked in read: %s\n", result(&r));
    close(fds[0]);

    /* 9. accept() blocked, listening socket shut down */
    int port;
    struct acc a = {listen_local(8, &port), -2, 0};
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, acceptor, &a));
    sleep_ms(50);
    CHECK_SYS(shutdown(a.fd, SHUT_RDWR));
    CHECK_RC(pthread_join(t, NULL));
    printf("listener shutdown(SHUT_RDWR) while blocked in accept: %s\n",
           a.ret >= 0 ? "accepted?!" : errname(a.err));
    close(a.fd);

    /* 10. write() blocked on a full socket, shutdown(SHUT_WR) on it */
    tcp_pair(fds);
    struct wr w = {fds[0], 0, 0, 0};
    CHECK_RC(pthread_create(&t, NULL, writer, &w));
    sleep_ms(100);
    CHECK_SYS(shutdown(fds[0], SHUT_WR));
    CHECK_RC(pthread_join(t, NULL));
    printf("tcp shutdown(SHUT_WR) while blocked in write: wrote some: %s, then %s\n",
           yesno(w.total > 0), errname(w.err));
    close(fds[0]);
    close(fds[1]);

    printf("close_while_blocked: ok\n");
    return 0;
}
