// fibershim-carriers: 1 2
/* Reads that return less than asked without emptying the socket: a peek,
 * a datagram, a message that carries file descriptors.
 *
 * Linux facts checked here:
 *  - recv/recvfrom/recvmsg with MSG_PEEK leave the data queued: a peek that
 *    returns less than asked is followed by poll/select reporting POLLIN at
 *    once and by a blocking read that returns the same bytes at once;
 *  - with SO_PEEK_OFF, a peek past the peeked bytes waits (and times out
 *    at SO_RCVTIMEO) while they are still queued for a read;
 *  - a datagram or seqpacket read returns one message, however large the
 *    buffer: the next message is still readable at once; MSG_TRUNC returns
 *    the message's real length;
 *  - a recvmsg on a stream stops after a message that carries
 *    SCM_RIGHTS, so it can return less than asked with more data queued;
 *  - a TCP read stops at the urgent mark (SO_OOBINLINE off): the data
 *    behind it stays readable, before and after recv(MSG_OOB);
 *  - a server that sniffs the first bytes of each connection with a
 *    blocking recv(MSG_PEEK) (TLS or HTTP?) and then reads the request
 *    answers every connection at once.
 * Each wait that would hang is bounded (a poll or select timeout,
 * SO_RCVTIMEO), so a regression prints "no" instead of hanging.
 */
#include "common.h"
#include <poll.h>
#include <sys/select.h>
#include <sys/un.h>

static void set_rcvtimeo(int fd, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    CHECK_SYS(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
}

/* "poll 1 at once": poll(POLLIN, ms) returned 1 before the tolerance. */
static const char *poll_in(int fd, int ms, char *out, size_t outlen)
{
    struct pollfd p = {fd, POLLIN, 0};
    int64_t t = now_ns();
    int n = poll(&p, 1, ms);
    CHECK(n >= 0);
    snprintf(out, outlen, "poll %d%s", n, n && ms_since(t) < LATE_TOLERANCE_MS ? " at once" : "");
    return out;
}

static const char *select_in(int fd, int ms, char *out, size_t outlen)
{
    fd_set r;
    FD_ZERO(&r);
    FD_SET(fd, &r);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    int64_t t = now_ns();
    int n = select(fd + 1, &r, NULL, NULL, &tv);
    CHECK(n >= 0);
    snprintf(out, outlen, "select %d%s", n, n && ms_since(t) < LATE_TOLERANCE_MS ? " at once" : "");
    return out;
}

enum peek_call { P_RECV, P_RECVFROM, P_RECVMSG };
static const char *peek_name[] = {"recv", "recvfrom", "recvmsg"};

static ssize_t peek(enum peek_call c, int fd, void *buf, size_t len)
{
    if (c == P_RECV)
        return recv(fd, buf, len, MSG_PEEK);
    if (c == P_RECVFROM) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        return recvfrom(fd, buf, len, MSG_PEEK, (struct sockaddr *)&ss, &sl);
    }
    struct iovec v = {buf, len};
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};
    return recvmsg(fd, &m, MSG_PEEK);
}

/* A stream whose whole queue is peeked with room to spare, then read. */
static void stream_peek(int tcp, enum peek_call c)
{
    int s[2];
    if (tcp)
        tcp_pair(s);
    else
        CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s));
    set_rcvtimeo(s[0], 1000);
    static const char req[] = "GET / HTTP/1.0\r\n\r\n";
    const size_t n = sizeof req - 1;
    char buf[64], a[32], b[32], d[32];

    /* Seen once by poll, as a server's event loop would. */
    CHECK(poll(&(struct pollfd){s[0], POLLIN | POLLOUT, 0}, 1, 0) == 1);
    write_all(s[1], req, n);
    CHECK(poll(&(struct pollfd){s[0], POLLIN, 0}, 1, 1000) == 1);

    ssize_t p5 = peek(c, s[0], buf, 5);
    ssize_t p64 = peek(c, s[0], buf, sizeof buf);
    poll_in(s[0], 1000, a, sizeof a);
    select_in(s[0], 1000, b, sizeof b);
    int64_t t = now_ns();
    ssize_t r = read(s[0], buf, sizeof buf);
    double el = ms_since(t);
    int same = r == (ssize_t)n && memcmp(buf, req, n) == 0;
    poll_in(s[0], 50, d, sizeof d);
    printf("%s %s(MSG_PEEK): 5 -> %zd, 64 -> %zd; then %s, %s; read %zd same bytes: %s at "
           "once: %s; then %s\n",
           tcp ? "tcp" : "unix", peek_name[c], p5, p64, a, b, r, yesno(same),
           yesno(el < LATE_TOLERANCE_MS), d);
    close(s[0]);
    close(s[1]);
}

/* SO_PEEK_OFF: each peek starts where the last one ended, so a peek can
 * wait and time out while data is queued; a read still finds it. */
static void peek_offset(void)
{
    int s[2];
    CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s));
    int zero = 0;
    CHECK_SYS(setsockopt(s[0], SOL_SOCKET, SO_PEEK_OFF, &zero, sizeof zero));
    set_rcvtimeo(s[0], 100);
    CHECK(poll(&(struct pollfd){s[0], POLLIN | POLLOUT, 0}, 1, 0) == 1);
    write_all(s[1], "abc", 3);
    CHECK(poll(&(struct pollfd){s[0], POLLIN, 0}, 1, 1000) == 1);
    char buf[64], a[32], b[32];
    ssize_t p1 = recv(s[0], buf, 3, MSG_PEEK);
    errno = 0;
    ssize_t p2 = recv(s[0], buf, sizeof buf, MSG_PEEK);
    int e2 = errno;
    poll_in(s[0], 1000, a, sizeof a);
    select_in(s[0], 1000, b, sizeof b);
    ssize_t r = read(s[0], buf, sizeof buf);
    int ok = r == 3 && memcmp(buf, "abc", 3) == 0;
    printf("unix SO_PEEK_OFF: peek %zd, peek again %zd %s; then %s, %s; read %zd right: %s\n", p1,
           p2, p2 < 0 ? errname(e2) : "", a, b, r, yesno(ok));
    close(s[0]);
    close(s[1]);
}

/* Three messages queued on a message socket: each read takes one. */
static void messages(const char *what, int rx, int tx)
{
    set_rcvtimeo(rx, 1000);
    char buf[64], a[32], b[32], d[32];
    CHECK(poll(&(struct pollfd){rx, POLLIN | POLLOUT, 0}, 1, 0) >= 0);
    CHECK(send(tx, "abc", 3, 0) == 3);
    CHECK(send(tx, "defgh", 5, 0) == 5);
    CHECK(send(tx, "ij", 2, 0) == 2);
    CHECK(poll(&(struct pollfd){rx, POLLIN, 0}, 1, 1000) == 1);

    ssize_t p = recv(rx, buf, sizeof buf, MSG_PEEK);
    poll_in(rx, 1000, a, sizeof a);
    ssize_t r1 = recv(rx, buf, sizeof buf, 0);
    int ok1 = r1 == 3 && memcmp(buf, "abc", 3) == 0;
    select_in(rx, 1000, b, sizeof b);
    int64_t t = now_ns();
    ssize_t r2 = recv(rx, buf, 2, MSG_TRUNC);
    ssize_t r3 = read(rx, buf, sizeof buf);
    double el = ms_since(t);
    int ok3 = r3 == 2 && memcmp(buf, "ij", 2) == 0;
    poll_in(rx, 50, d, sizeof d);
    printf("%s: peek %zd; %s; read %zd right: %s; %s; MSG_TRUNC into 2 bytes %zd; read %zd "
           "right: %s, at once: %s; then %s\n",
           what, p, a, r1, yesno(ok1), b, r2, r3, yesno(ok3), yesno(el < LATE_TOLERANCE_MS), d);
}

static void datagrams(void)
{
    int s[2];
    CHECK_SYS(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, s));
    messages("unix dgram", s[0], s[1]);
    close(s[0]);
    close(s[1]);
    CHECK_SYS(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, s));
    messages("unix seqpacket", s[0], s[1]);
    close(s[0]);
    close(s[1]);

    int rx = (int)CHECK_SYS(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    int tx = (int)CHECK_SYS(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    struct sockaddr_in a = local_addr(0);
    CHECK_SYS(bind(rx, (struct sockaddr *)&a, sizeof a));
    socklen_t al = sizeof a;
    CHECK_SYS(getsockname(rx, (struct sockaddr *)&a, &al));
    CHECK_SYS(connect(tx, (struct sockaddr *)&a, sizeof a));
    messages("udp", rx, tx);
    close(rx);
    close(tx);
}

/* Sends text with one fd (a dup of stdin) attached. */
static void send_with_fd(int fd, const char *text)
{
    int pass = (int)CHECK_SYS(dup(0));
    char ctl[CMSG_SPACE(sizeof(int))];
    memset(ctl, 0, sizeof ctl);
    struct iovec v = {(void *)text, strlen(text)};
    struct msghdr m = {
        .msg_iov = &v, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &pass, sizeof pass);
    CHECK(sendmsg(fd, &m, 0) == (ssize_t)strlen(text));
    close(pass);
}

/* Receives into buf with room for one fd; returns the count, *got_fd 1
 * if an fd came (closed at once). */
static ssize_t recv_with_fd(int fd, char *buf, size_t len, int *got_fd)
{
    char ctl[CMSG_SPACE(sizeof(int))];
    struct iovec v = {buf, len};
    struct msghdr m = {
        .msg_iov = &v, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
    ssize_t r = recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
    *got_fd = 0;
    struct cmsghdr *cm = r >= 0 ? CMSG_FIRSTHDR(&m) : NULL;
    if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
        int passed;
        memcpy(&passed, CMSG_DATA(cm), sizeof passed);
        close(passed);
        *got_fd = 1;
    }
    return r;
}

/* Two messages with fds queued on a stream: recvmsg stops after the first. */
static void rights(void)
{
    int s[2];
    CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s));
    set_rcvtimeo(s[0], 1000);
    CHECK(poll(&(struct pollfd){s[0], POLLIN | POLLOUT, 0}, 1, 0) == 1);
    send_with_fd(s[1], "one");
    send_with_fd(s[1], "two");
    CHECK(poll(&(struct pollfd){s[0], POLLIN, 0}, 1, 1000) == 1);
    char buf[64], a[32];
    int f1, f2;
    ssize_t r1 = recv_with_fd(s[0], buf, sizeof buf, &f1);
    int ok1 = r1 == 3 && memcmp(buf, "one", 3) == 0;
    poll_in(s[0], 1000, a, sizeof a);
    int64_t t = now_ns();
    ssize_t r2 = recv_with_fd(s[0], buf, sizeof buf, &f2);
    double el = ms_since(t);
    int ok2 = r2 == 3 && memcmp(buf, "two", 3) == 0;
    printf("unix stream SCM_RIGHTS: recvmsg %zd right: %s, fd: %d; %s; recvmsg %zd right: %s, "
           "fd: %d, at once: %s\n",
           r1, yesno(ok1), f1, a, r2, yesno(ok2), f2, yesno(el < LATE_TOLERANCE_MS));
    close(s[0]);
    close(s[1]);
}

/* Urgent data in a TCP stream: a read stops at the urgent mark, with the
 * rest of the stream queued behind it. */
static void urgent(void)
{
    int s[2];
    tcp_pair(s);
    set_rcvtimeo(s[0], 1000);
    CHECK(poll(&(struct pollfd){s[0], POLLIN | POLLOUT, 0}, 1, 0) == 1);
    /* No Nagle: each send is queued on the loopback peer when it returns. */
    int one = 1;
    CHECK_SYS(setsockopt(s[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one));
    write_all(s[1], "abc", 3);
    CHECK(send(s[1], "X", 1, MSG_OOB) == 1);
    write_all(s[1], "def", 3);
    struct pollfd p = {s[0], POLLIN | POLLPRI, 0};
    CHECK(poll(&p, 1, 1000) == 1 && (p.revents & POLLPRI));
    char buf[64], a[32], b[32];
    ssize_t r1 = read(s[0], buf, sizeof buf);
    int ok1 = r1 == 3 && memcmp(buf, "abc", 3) == 0;
    poll_in(s[0], 1000, a, sizeof a);
    char oob = 0;
    ssize_t ro = recv(s[0], &oob, 1, MSG_OOB);
    select_in(s[0], 1000, b, sizeof b);
    int64_t t = now_ns();
    ssize_t r2 = read(s[0], buf, sizeof buf);
    double el = ms_since(t);
    int ok2 = r2 == 3 && memcmp(buf, "def", 3) == 0;
    printf("tcp urgent data: read %zd right: %s; %s; MSG_OOB %zd '%c'; %s; read %zd right: %s, "
           "at once: %s\n",
           r1, yesno(ok1), a, ro, oob, b, r2, yesno(ok2), yesno(el < LATE_TOLERANCE_MS));
    close(s[0]);
    close(s[1]);
}

/* ---- a sniffing server ------------------------------------------------------- */

#define SNIFF_CONNS 8

struct sniff_conn {
    int fd;
    int tls;      /* what the server decided */
    int answered; /* the whole request was read and answered */
};

/* Peeks at the first bytes before they arrive (the client waits a little),
 * decides TLS (0x16 0x03) or HTTP, then reads the request and answers. */
static void *sniff_serve(void *arg)
{
    struct sniff_conn *c = arg;
    set_rcvtimeo(c->fd, 2000);
    unsigned char hdr[64];
    ssize_t p = recv(c->fd, hdr, sizeof hdr, MSG_PEEK);
    CHECK(p >= 2);
    c->tls = hdr[0] == 0x16 && hdr[1] == 0x03;
    char req[32];
    ssize_t r = read(c->fd, req, sizeof req);
    if (r == 24) {
        write_all(c->fd, c->tls ? "T" : "H", 1);
        c->answered = 1;
    }
    return NULL;
}

struct sniff_client {
    int fd;
    int tls; /* what the client sends */
};

static void *sniff_client(void *arg)
{
    struct sniff_client *k = arg;
    static const char http[24] = "GET / HTTP/1.0\r\nX: y\r\n\r\n";
    static const char tls[24] = "\x16\x03\x01\x00\x13\x01\x00\x00\x0f\x03\x03"
                                "hello-world!!";
    sleep_ms(20);
    write_all(k->fd, k->tls ? tls : http, 24);
    char c;
    CHECK(read_full(k->fd, &c, 1) == 1);
    CHECK(c == (k->tls ? 'T' : 'H'));
    return NULL;
}

static void sniff_server(void)
{
    int port;
    int l = listen_local(SNIFF_CONNS, &port);
    struct sniff_client cc[SNIFF_CONNS];
    struct sniff_conn sc[SNIFF_CONNS];
    pthread_t st[SNIFF_CONNS], ct[SNIFF_CONNS];
    for (int i = 0; i < SNIFF_CONNS; i++) {
        cc[i] = (struct sniff_client){.fd = connect_local(port), .tls = i % 2};
        sc[i] = (struct sniff_conn){.fd = (int)CHECK_SYS(accept(l, NULL, NULL))};
    }
    int64_t t = now_ns();
    for (int i = 0; i < SNIFF_CONNS; i++) {
        CHECK_RC(pthread_create(&st[i], NULL, sniff_serve, &sc[i]));
        CHECK_RC(pthread_create(&ct[i], NULL, sniff_client, &cc[i]));
    }
    int tls = 0, answered = 0;
    for (int i = 0; i < SNIFF_CONNS; i++) {
        CHECK_RC(pthread_join(st[i], NULL));
        CHECK_RC(pthread_join(ct[i], NULL));
        tls += sc[i].tls;
        answered += sc[i].answered;
        close(sc[i].fd);
        close(cc[i].fd);
    }
    double el = ms_since(t);
    close(l);
    printf("sniffing server, %d connections: tls %d, http %d, answered %d, under 1 s: %s\n",
           SNIFF_CONNS, tls, SNIFF_CONNS - tls, answered, yesno(el < 1000.0));
}

static void *run(void *arg)
{
    for (int tcp = 0; tcp < 2; tcp++)
        for (int c = P_RECV; c <= P_RECVMSG; c++)
            stream_peek(tcp, (enum peek_call)c);
    peek_offset();
    datagrams();
    rights();
    urgent();
    sniff_server();
    return NULL;
}

int main(void)
{
    tp_setup(120);
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress survives the alarm */
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, run, NULL));
    CHECK_RC(pthread_join(t, NULL));
    printf("peek_sniff: ok\n");
    return 0;
}
