/* O_NONBLOCK set by the program itself, in every usual way, must behave
 * exactly as the kernel defines it: read/accept return -1 EAGAIN, and
 * F_GETFL reports O_NONBLOCK exactly as the program set it -- never set
 * when the program did not set it (a runtime that makes fds non-blocking
 * internally must hide that). Clearing it makes read block again.
 *
 * Linux facts checked here:
 *  - accept() does NOT inherit O_NONBLOCK from the listening socket;
 *    accept4(SOCK_NONBLOCK) sets it.
 *  - O_NONBLOCK belongs to the open file description: it is shared by
 *    dup()ed descriptors.
 *  - recv(MSG_DONTWAIT) on a blocking socket returns EAGAIN and leaves the
 *    flags alone.
 *  - non-blocking connect() on loopback returns EINPROGRESS.
 */
#include "common.h"
#include <poll.h>
#include <sys/ioctl.h>

static const char *nb(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        FAIL("F_GETFL: %s", errname(errno));
    return (fl & O_NONBLOCK) ? "O_NONBLOCK" : "blocking";
}

static const char *read_result(int fd)
{
    static char b[64];
    char c;
    errno = 0;
    ssize_t r = read(fd, &c, 1);
    if (r < 0)
        snprintf(b, sizeof b, "-1 %s", errname(errno));
    else
        snprintf(b, sizeof b, "%zd", r);
    return b;
}

struct delayed {
    int fd;
    int ms;
};

static void *delayed_write(void *arg)
{
    struct delayed *d = arg;
    sleep_ms(d->ms);
    write_all(d->fd, "x", 1);
    return NULL;
}

/* read must block until the writer thread writes after 50 ms */
static void check_blocks(const char *what, int rfd, int wfd)
{
    struct delayed d = {wfd, 50};
    pthread_t t;
    int64_t start = now_ns();
    CHECK_RC(pthread_create(&t, NULL, delayed_write, &d));
    char c;
    ssize_t r = read(rfd, &c, 1);
    double el = ms_since(start);
    CHECK_RC(pthread_join(t, NULL));
    printf("%s: read blocked until the write: %s (returned %zd)\n", what,
           yesno(r == 1 && el >= 45.0), r);
}

int main(void)
{
    tp_setup(60);
    int sp[2];

    /* fresh sockets and pipes are blocking */
    CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, sp));
    printf("fresh socketpair: %s, F_GETFL 0x%x\n", nb(sp[0]),
           (unsigned)CHECK_SYS(fcntl(sp[0], F_GETFL)));

    /* 1. fcntl(F_SETFL, O_NONBLOCK) */
    int fl = (int)CHECK_SYS(fcntl(sp[0], F_GETFL));
    CHECK_SYS(fcntl(sp[0], F_SETFL, fl | O_NONBLOCK));
    printf("fcntl set: %s, F_GETFL 0x%x, read: %s\n", nb(sp[0]),
           (unsigned)CHECK_SYS(fcntl(sp[0], F_GETFL)), read_result(sp[0]));
    printf("other end unaffected: %s\n", nb(sp[1]));
    int dupfd = (int)CHECK_SYS(dup(sp[0]));
    printf("dup shares the flag: %s, read on dup: %s\n", nb(dupfd), read_result(dupfd));
    CHECK_SYS(fcntl(sp[0], F_SETFL, fl & ~O_NONBLOCK));
    printf("fcntl cleared: %s, dup: %s\n", nb(sp[0]), nb(dupfd));
    check_blocks("after fcntl clear", sp[0], sp[1]);
    close(dupfd);

    /* 2. recv(MSG_DONTWAIT) on a blocking socket */
    char c;
    errno = 0;
    ssize_t r = recv(sp[0], &c, 1, MSG_DONTWAIT);
    printf("recv(MSG_DONTWAIT) on blocking socket: %zd %s, flags after: %s\n", r,
           errname(errno), nb(sp[0]));

    /* 3. ioctl(FIONBIO) */
    int on = 1, off = 0;
    CHECK_SYS(ioctl(sp[0], FIONBIO, &on));
    printf("FIONBIO 1: %s, read: %s\n", nb(sp[0]), read_result(sp[0]));
    CHECK_SYS(ioctl(sp[0], FIONBIO, &off));
    printf("FIONBIO 0: %s\n", nb(sp[0]));
    check_blocks("after FIONBIO 0", sp[0], sp[1]);
    close(sp[0]);
    close(sp[1]);

    /* 4. socketpair(SOCK_NONBLOCK) */
    CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sp));
    printf("socketpair(SOCK_NONBLOCK): %s %s, read: %s\n", nb(sp[0]), nb(sp[1]),
           read_result(sp[0]));
    /* fill it up: write returns EAGAIN when full */
    static char big[65536];
    long total = 0;
    for (;;) {
        ssize_t w = write(sp[1], big, sizeof big);
        if (w < 0) {
            printf("write to full non-blocking socket: -1 %s, wrote some first: %s\n",
                   errname(errno), yesno(total > 0));
            break;
        }
        total += w;
    }
    close(sp[0]);
    close(sp[1]);

    /* 5. TCP: socket(SOCK_NONBLOCK), connect -> EINPROGRESS */
    int port;
    int lfd = listen_local(8, &port);
    int cfd = (int)CHECK_SYS(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
    printf("socket(SOCK_NONBLOCK): %s\n", nb(cfd));
    struct sockaddr_in a = local_addr(port);
    errno = 0;
    int cr = connect(cfd, (struct sockaddr *)&a, sizeof a);
    printf("non-blocking connect: %d %s\n", cr, errname(errno));
    struct pollfd pfd = {cfd, POLLOUT, 0};
    CHECK(poll(&pfd, 1, 5000) == 1);
    int soerr = -1;
    socklen_t sl = sizeof soerr;
    CHECK_SYS(getsockopt(cfd, SOL_SOCKET, SO_ERROR, &soerr, &sl));
    printf("connect completed: POLLOUT %s, SO_ERROR %s\n", yesno(pfd.revents & POLLOUT),
           errname(soerr));
    printf("connected non-blocking socket read: %s\n", read_result(cfd));

    /* 6. accept: plain accept does not inherit O_NONBLOCK */
    int s1 = (int)CHECK_SYS(accept(lfd, NULL, NULL));
    printf("accept() on blocking listener: %s\n", nb(s1));
    /* non-blocking listener with nothing pending */
    int lfl = (int)CHECK_SYS(fcntl(lfd, F_GETFL));
    CHECK_SYS(fcntl(lfd, F_SETFL, O_NONBLOCK | lfl));
    errno = 0;
    int ar = accept(lfd, NULL, NULL);
    printf("accept() on non-blocking listener, nothing pending: %d %s\n", ar, errname(errno));
    int c2 = connect_local(port);
    pfd = (struct pollfd){lfd, POLLIN, 0};
    CHECK(poll(&pfd, 1, 5000) == 1);
    int s2 = (int)CHECK_SYS(accept(lfd, NULL, NULL));
    printf("accept() on non-blocking listener: accepted socket is %s\n", nb(s2));
    check_blocks("accepted socket", s2, c2);

    /* 7. accept4(SOCK_NONBLOCK) */
    int c3 = connect_local(port);
    CHECK(poll(&pfd, 1, 5000) == 1);
    int s3 = (int)CHECK_SYS(accept4(lfd, NULL, NULL, SOCK_NONBLOCK));
    printf("accept4(SOCK_NONBLOCK): %s, read: %s\n", nb(s3), read_result(s3));
    CHECK_SYS(fcntl(s3, F_SETFL, 0));
    printf("accept4 socket after F_SETFL 0: %s\n", nb(s3));
    check_blocks("accept4 socket after clearing", s3, c3);
    close(s1);
    close(s2);
    close(s3);
    close(c2);
    close(c3);
    close(cfd);
    close(lfd);

    /* 8. pipe2(O_NONBLOCK) and a full pipe */
    int p[2];
    CHECK_SYS(pipe(p));
    printf("fresh pipe: %s %s\n", nb(p[0]), nb(p[1]));
    close(p[0]);
    close(p[1]);
    CHECK_SYS(pipe2(p, O_NONBLOCK));
    printf("pipe2(O_NONBLOCK): %s %s, read: %s\n", nb(p[0]), nb(p[1]), read_result(p[0]));
    total = 0;
    for (;;) {
        ssize_t w = write(p[1], big, sizeof big);
        if (w < 0) {
            printf("write to full non-blocking pipe: -1 %s, pipe held 65536: %s\n",
                   errname(errno), yesno(total == 65536));
            break;
        }
        total += w;
    }
    /* clear O_NONBLOCK on the read end only: empty it, then read blocks */
    CHECK_SYS(fcntl(p[0], F_SETFL, 0));
    printf("pipe read end after F_SETFL 0: %s, write end: %s\n", nb(p[0]), nb(p[1]));
    CHECK(read_full(p[0], big, sizeof big) == sizeof big);
    check_blocks("pipe after clearing", p[0], p[1]);
    close(p[0]);
    close(p[1]);

    printf("nonblock_user: ok\n");
    return 0;
}
