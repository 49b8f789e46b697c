/* connect(): refused, non-blocking, success, and the address calls.
 *
 * The "closed port" is a TCP socket bound to 127.0.0.1:<ephemeral> but not
 * listening, so no other process can take the port meanwhile; a SYN to it
 * is answered with RST.
 *
 * Linux facts checked here:
 *  - blocking connect to a closed port: -1 ECONNREFUSED.
 *  - non-blocking connect on loopback: -1 EINPROGRESS even when the answer
 *    is already known; poll then reports POLLOUT|POLLERR|POLLHUP and
 *    SO_ERROR gives ECONNREFUSED (and reading SO_ERROR clears it to 0).
 *  - non-blocking connect that succeeds: EINPROGRESS, POLLOUT, SO_ERROR 0;
 *    the next connect() on it returns 0 (it reports the completed
 *    connection), only the one after that EISCONN. After a blocking
 *    connect, connecting again is EISCONN at once.
 *  - getpeername on an unconnected socket: ENOTCONN.
 *  - AF_UNIX: connect to a missing path ENOENT, to a socket file nobody
 *    listens on ECONNREFUSED.
 */
#include "common.h"
#include <poll.h>
#include <sys/un.h>

static const char *pev(short e)
{
    static char b[64];
    snprintf(b, sizeof b, "%s%s%s%s", (e & POLLIN) ? "IN " : "", (e & POLLOUT) ? "OUT " : "",
             (e & POLLERR) ? "ERR " : "", (e & POLLHUP) ? "HUP " : "");
    size_t l = strlen(b);
    if (l)
        b[l - 1] = 0;
    return b;
}

static int so_error(int fd)
{
    int err = -1;
    socklen_t len = sizeof err;
    CHECK_SYS(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len));
    return err;
}

static int mt_port, mt_lfd;
static pthread_t acc_thread;
static int n_refused, n_connected, n_accepted;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static void *acceptor(void *unused)
{
    for (int i = 0; i < 8; i++) {
        int s = (int)CHECK_SYS(accept(mt_lfd, NULL, NULL));
        char c;
        CHECK(read(s, &c, 1) == 1);
        close(s);
        pthread_mutex_lock(&mu);
        n_accepted++;
        pthread_mutex_unlock(&mu);
    }
    close(mt_lfd);
    return NULL;
}

/* arg: the closed port, or 0 for the listening one */
static void *connector(void *arg)
{
    int port = (int)(long)arg;
    int fd = (int)CHECK_SYS(socket(AF_INET, SOCK_STREAM, 0));
    struct sockaddr_in a = local_addr(port ? port : mt_port);
    int r = connect(fd, (struct sockaddr *)&a, sizeof a);
    int e = errno;
    pthread_mutex_lock(&mu);
    if (r == 0 && !port)
        n_connected++;
    else if (r < 0 && e == ECONNREFUSED && port)
        n_refused++;
    else
        FAIL("connect to %s port: %d %s", port ? "closed" : "open", r, errname(e));
    pthread_mutex_unlock(&mu);
    if (r == 0)
        write_all(fd, "x", 1);
    close(fd);
    return NULL;
}

int main(void)
{
    tp_setup(60);
    mt_lfd = listen_local(16, &mt_port);

    /* a port that refuses: bound, not listening */
    int hold = (int)CHECK_SYS(socket(AF_INET, SOCK_STREAM, 0));
    struct sockaddr_in a = local_addr(0);
    CHECK_SYS(bind(hold, (struct sockaddr *)&a, sizeof a));
    socklen_t al = sizeof a;
    CHECK_SYS(getsockname(hold, (struct sockaddr *)&a, &al));
    int closed_port = ntohs(a.sin_port);

    /* 1. blocking connect -> ECONNREFUSED */
    int fd = (int)CHECK_SYS(socket(AF_INET, SOCK_STREAM, 0));
    struct sockaddr_in dst = local_addr(closed_port);
    errno = 0;
    int r = connect(fd, (struct sockaddr *)&dst, sizeof dst);
    printf("blocking connect to closed port: %d %s\n", r, errname(errno));
    close(fd);

    /* 2. non-blocking connect -> EINPROGRESS, then SO_ERROR ECONNREFUSED */
    fd = (int)CHECK_SYS(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
    errno = 0;
    r = connect(fd, (struct sockaddr *)&dst, sizeof dst);
    printf("non-blocking connect to closed port: %d %s\n", r, errname(errno));
    struct pollfd p = {fd, POLLOUT, 0};
    int n = poll(&p, 1, 5000);
    printf("poll: %d %s\n", n, pev(p.revents));
    printf("SO_ERROR: %s\n", errname(so_error(fd)));
    printf("SO_ERROR read again: %s\n", errname(so_error(fd)));
    close(fd);

    /* 3. success path, blocking */
    int port;
    int lfd = listen_local(16, &port);
    fd = (int)CHECK_SYS(socket(AF_INET, SOCK_STREAM, 0));
    struct sockaddr_in peer;
    socklen_t pl = sizeof peer;
    errno = 0;
    r = getpeername(fd, (struct sockaddr *)&peer, &pl);
    printf("getpeername before connect: %d %s\n", r, errname(errno));
    dst = local_addr(port);
    r = connect(fd, (struct sockaddr *)&dst, sizeof dst);
    printf("blocking connect to listener: %d\n", r);
    pl = sizeof peer;
    CHECK_SYS(getpeername(fd, (struct sockaddr *)&peer, &pl));
    printf("getpeername: family AF_INET %s, 127.0.0.1 %s, port matches %s\n",
           yesno(peer.sin_family == AF_INET),
           yesno(peer.sin_addr.s_addr == htonl(INADDR_LOOPBACK)),
           yesno(ntohs(peer.sin_port) == port));
    struct sockaddr_in self;
    socklen_t sl = sizeof self;
    CHECK_SYS(getsockname(fd, (struct sockaddr *)&self, &sl));
    int s = (int)CHECK_SYS(accept(lfd, NULL, NULL));
    struct sockaddr_in apeer;
    socklen_t apl = sizeof apeer;
    CHECK_SYS(getpeername(s, (struct sockaddr *)&apeer, &apl));
    printf("server sees the client's address: %s\n",
           yesno(apeer.sin_port == self.sin_port && apeer.sin_addr.s_addr == self.sin_addr.s_addr));
    errno = 0;
    r = connect(fd, (struct sockaddr *)&dst, sizeof dst);
    printf("connect again: %d %s\n", r, errname(errno));
    write_all(fd, "ping", 4);
    char buf[4];
    CHECK(read_full(s, buf, 4) == 4 && memcmp(buf, "ping", 4) == 0);
    printf("data after connect: ok\n");
    close(fd);
    close(s);

    /* 4. success path, non-blocking */
    fd = (int)CHECK_SYS(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
    errno = 0;
    r = connect(fd, (struct sockaddr *)&dst, sizeof dst);
    printf("non-blocking connect to listener: %d %s\n", r, errname(errno));
    p = (struct pollfd){fd, POLLOUT, 0};
    n = poll(&p, 1, 5000);
    printf("poll: %d %s, SO_ERROR: %s\n", n, pev(p.revents), errname(so_error(fd)));
    errno = 0;
    r = connect(fd, (struct sockaddr *)&dst, sizeof dst);
    printf("connect again after completion: %d %s\n", r, errname(errno));
    errno = 0;
    r = connect(fd, (struct sockaddr *)&dst, sizeof dst);
    printf("connect a third time: %d %s\n", r, errname(errno));
    pl = sizeof peer;
    printf("getpeername: %d\n", getpeername(fd, (struct sockaddr *)&peer, &pl));
    s = (int)CHECK_SYS(accept(lfd, NULL, NULL));
    close(s);
    close(fd);

    /* 5. many threads connecting at once: refused ones and accepted ones */
    close(lfd);
    CHECK_RC(pthread_create(&acc_thread, NULL, acceptor, NULL));
    pthread_t t[16];
    for (long i = 0; i < 16; i++)
        CHECK_RC(pthread_create(&t[i], NULL, connector,
                                (void *)(long)((i % 2) ? closed_port : 0)));
    for (int i = 0; i < 16; i++)
        CHECK_RC(pthread_join(t[i], NULL));
    CHECK_RC(pthread_join(acc_thread, NULL));
    printf("16 threads connecting: refused %d, connected %d, accepted %d\n", n_refused,
           n_connected, n_accepted);
    close(hold);

    /* 6. AF_UNIX */
    struct sockaddr_un ua;
    memset(&ua, 0, sizeof ua);
    ua.sun_family = AF_UNIX;
    snprintf(ua.sun_path, sizeof ua.sun_path, "/tmp/connect_refused.%d.sock", (int)getpid());
    unlink(ua.sun_path);
    fd = (int)CHECK_SYS(socket(AF_UNIX, SOCK_STREAM, 0));
    errno = 0;
    r = connect(fd, (struct sockaddr *)&ua, sizeof ua);
    printf("unix connect, no such path: %d %s\n", r, errname(errno));
    int us = (int)CHECK_SYS(socket(AF_UNIX, SOCK_STREAM, 0));
    CHECK_SYS(bind(us, (struct sockaddr *)&ua, sizeof ua));
    errno = 0;
    r = connect(fd, (struct sockaddr *)&ua, sizeof ua);
    printf("unix connect, bound but not listening: %d %s\n", r, errname(errno));
    close(fd);
    CHECK_SYS(listen(us, 4));
    fd = (int)CHECK_SYS(socket(AF_UNIX, SOCK_STREAM, 0));
    r = connect(fd, (struct sockaddr *)&ua, sizeof ua);
    printf("unix connect, listening: %d\n", r);
    close(fd);
    close(us);
    errno = 0;
    fd = (int)CHECK_SYS(socket(AF_UNIX, SOCK_STREAM, 0));
    r = connect(fd, (struct sockaddr *)&ua, sizeof ua);
    printf("unix connect, listener closed, file left: %d %s\n", r, errname(errno));
    close(fd);
    unlink(ua.sun_path);

    printf("connect_refused: ok\n");
    return 0;
}
