// fibershim-carriers: 1 2
/* Error and urgent conditions that come and go: waits after they are gone
 * sleep, they do not spin.
 *
 * Linux facts checked here:
 *  - a connected UDP socket whose datagram drew an ICMP port unreachable
 *    reports POLLERR once; recv returns ECONNREFUSED and clears it. After
 *    that, poll/select for POLLIN time out, a blocking recv times out at
 *    SO_RCVTIMEO with EAGAIN, and a blocking recv or poll(-1) waits for
 *    the next datagram: all without using the CPU while they wait;
 *  - with IP_RECVERR the error also stays queued (POLLERR) until
 *    recvmsg(MSG_ERRQUEUE) takes it, and a blocking recv still waits for
 *    data meanwhile;
 *  - once the urgent byte of a TCP stream has been read with MSG_OOB,
 *    select on the exception set and poll for POLLPRI time out, again
 *    without using the CPU.
 * "without spinning" means the process used under 50 ms of CPU time during
 * a wait of 300 ms.
 */
#include "common.h"
#include <linux/errqueue.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/select.h>

static int64_t cpu_ns(void)
{
    struct rusage ru;
    CHECK_SYS(getrusage(RUSAGE_SELF, &ru));
    return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000 +
           ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}

/* A wait measured: wall time and CPU time. */
struct span {
    int64_t t, c;
};

static struct span span_start(void)
{
    return (struct span){now_ns(), cpu_ns()};
}

/* "not early: yes, without spinning: yes" for a wait of want_ms. */
static const char *span_report(struct span s, double want_ms, char *out, size_t len)
{
    double el = ms_since(s.t);
    double cpu = (double)(cpu_ns() - s.c) / 1e6;
    snprintf(out, len, "not early: %s, without spinning: %s", yesno(el >= want_ms - 10.0),
             yesno(cpu < 50.0));
    return out;
}

static const char *revents_name(short r)
{
    static char b[64];
    b[0] = 0;
    if (r & POLLIN)
        strcat(b, "IN|");
    if (r & POLLOUT)
        strcat(b, "OUT|");
    if (r & POLLERR)
        strcat(b, "ERR|");
    if (r & POLLHUP)
        strcat(b, "HUP|");
    if (r & POLLPRI)
        strcat(b, "PRI|");
    if (!b[0])
        return "0";
    b[strlen(b) - 1] = 0;
    return b;
}

/* A UDP port nothing listens on: bound once, then closed. */
static struct sockaddr_in closed_udp_port(void)
{
    int s = (int)CHECK_SYS(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    struct sockaddr_in a = local_addr(0);
    CHECK_SYS(bind(s, (struct sockaddr *)&a, sizeof a));
    socklen_t al = sizeof a;
    CHECK_SYS(getsockname(s, (struct sockaddr *)&a, &al));
    close(s);
    return a;
}

struct later {
    struct sockaddr_in from, to;
    int ms;
};

/* After d->ms, sends "late" to d->to from d->from (the refused port, now
 * taken: the connected socket accepts datagrams from its peer only). */
static void *send_later(void *arg)
{
    struct later *d = arg;
    int s = (int)CHECK_SYS(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    int one = 1;
    CHECK_SYS(setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
    CHECK_SYS(bind(s, (struct sockaddr *)&d->from, sizeof d->from));
    sleep_ms(d->ms);
    CHECK(sendto(s, "late", 4, 0, (struct sockaddr *)&d->to, sizeof d->to) == 4);
    close(s);
    return NULL;
}

/* Sends a datagram to a closed port and waits for the ICMP error. */
static int refused_socket(int recverr, struct sockaddr_in *peer, struct sockaddr_in *self)
{
    *peer = closed_udp_port();
    int u = (int)CHECK_SYS(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (recverr) {
        int one = 1;
        CHECK_SYS(setsockopt(u, IPPROTO_IP, IP_RECVERR, &one, sizeof one));
    }
    CHECK_SYS(connect(u, (struct sockaddr *)peer, sizeof *peer));
    socklen_t sl = sizeof *self;
    CHECK_SYS(getsockname(u, (struct sockaddr *)self, &sl));
    /* Seen by poll before the error, as an event loop would. */
    struct pollfd p = {u, POLLIN, 0};
    CHECK(poll(&p, 1, 0) == 0);
    CHECK(send(u, "x", 1, 0) == 1);
    p.revents = 0;
    int n = poll(&p, 1, 2000);
    printf("udp%s to a closed port: poll %d %s\n", recverr ? " IP_RECVERR" : "", n,
           revents_name(p.revents));
    char c;
    errno = 0;
    ssize_t r = recv(u, &c, 1, 0);
    printf("  recv %zd %s\n", r, errname(errno));
    return u;
}

static void waits_after_error(int u, struct sockaddr_in peer, struct sockaddr_in self)
{
    char rep[96];
    struct pollfd p = {u, POLLIN, 0};
    struct span s = span_start();
    int n = poll(&p, 1, 300);
    printf("  poll POLLIN 300ms: %d %s, %s\n", n, revents_name(p.revents),
           span_report(s, 300, rep, sizeof rep));

    fd_set r;
    FD_ZERO(&r);
    FD_SET(u, &r);
    struct timeval tv = {0, 300000};
    s = span_start();
    n = select(u + 1, &r, NULL, NULL, &tv);
    printf("  select read 300ms: %d, %s\n", n, span_report(s, 300, rep, sizeof rep));

    struct timeval rt = {0, 300000};
    CHECK_SYS(setsockopt(u, SOL_SOCKET, SO_RCVTIMEO, &rt, sizeof rt));
    char buf[16];
    s = span_start();
    errno = 0;
    ssize_t got = recv(u, buf, sizeof buf, 0);
    printf("  recv, SO_RCVTIMEO 300ms: %zd %s, %s\n", got, errname(errno),
           span_report(s, 290, rep, sizeof rep));

    /* A datagram that comes 100 ms later ends a blocking recv... */
    rt = (struct timeval){0, 0};
    CHECK_SYS(setsockopt(u, SOL_SOCKET, SO_RCVTIMEO, &rt, sizeof rt));
    struct later d = {peer, self, 100};
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, send_later, &d));
    s = span_start();
    got = recv(u, buf, sizeof buf, 0);
    CHECK_RC(pthread_join(t, NULL));
    printf("  blocking recv, datagram at 100ms: %zd '%.*s', %s\n", got, (int)(got > 0 ? got : 0),
           buf, span_report(s, 100, rep, sizeof rep));

    /* ... and a poll without a timeout. */
    CHECK_RC(pthread_create(&t, NULL, send_later, &d));
    p = (struct pollfd){u, POLLIN, 0};
    s = span_start();
    n = poll(&p, 1, -1);
    CHECK_RC(pthread_join(t, NULL));
    printf("  poll POLLIN -1, datagram at 100ms: %d %s, %s\n", n, revents_name(p.revents),
           span_report(s, 100, rep, sizeof rep));
    CHECK(recv(u, buf, sizeof buf, 0) == 4);
}

static void udp_refused(void)
{
    struct sockaddr_in peer, self;
    int u = refused_socket(0, &peer, &self);
    waits_after_error(u, peer, self);
    close(u);
}

static void udp_recverr(void)
{
    struct sockaddr_in peer, self;
    int u = refused_socket(1, &peer, &self);
    char rep[96];
    struct pollfd p = {u, POLLIN, 0};
    int n = poll(&p, 1, 0);
    printf("  error still queued: poll %d %s\n", n, revents_name(p.revents));

    struct timeval rt = {0, 300000};
    CHECK_SYS(setsockopt(u, SOL_SOCKET, SO_RCVTIMEO, &rt, sizeof rt));
    char buf[16];
    struct span s = span_start();
    errno = 0;
    ssize_t got = recv(u, buf, sizeof buf, 0);
    printf("  recv meanwhile, SO_RCVTIMEO 300ms: %zd %s, %s\n", got, errname(errno),
           span_report(s, 290, rep, sizeof rep));
    rt = (struct timeval){0, 0};
    CHECK_SYS(setsockopt(u, SOL_SOCKET, SO_RCVTIMEO, &rt, sizeof rt));

    char ctl[512];
    struct iovec v = {buf, sizeof buf};
    struct msghdr m = {
        .msg_iov = &v, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
    got = recvmsg(u, &m, MSG_ERRQUEUE);
    int ee = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_RECVERR)
            ee = ((struct sock_extended_err *)CMSG_DATA(c))->ee_errno;
    printf("  recvmsg MSG_ERRQUEUE: %zd, ee_errno %s\n", got, errname(ee));
    waits_after_error(u, peer, self);
    close(u);
}

static void tcp_urgent_read(void)
{
    int s[2];
    tcp_pair(s);
    char rep[96];
    CHECK(send(s[1], "X", 1, MSG_OOB) == 1);
    fd_set x;
    FD_ZERO(&x);
    FD_SET(s[0], &x);
    struct timeval tv = {2, 0};
    int n = select(s[0] + 1, NULL, NULL, &x, &tv);
    char c = 0;
    ssize_t r = recv(s[0], &c, 1, MSG_OOB);
    printf("tcp urgent byte: select exceptions %d; recv MSG_OOB %zd '%c'\n", n, r, c);

    fd_set rd;
    FD_ZERO(&rd);
    FD_SET(s[0], &rd);
    FD_ZERO(&x);
    FD_SET(s[0], &x);
    tv = (struct timeval){0, 300000};
    struct span sp = span_start();
    n = select(s[0] + 1, &rd, NULL, &x, &tv);
    printf("  then select read+exceptions 300ms: %d, %s\n", n,
           span_report(sp, 300, rep, sizeof rep));
    struct pollfd p = {s[0], POLLPRI, 0};
    sp = span_start();
    n = poll(&p, 1, 300);
    printf("  then poll POLLPRI 300ms: %d %s, %s\n", n, revents_name(p.revents),
           span_report(sp, 300, rep, sizeof rep));
    close(s[0]);
    close(s[1]);
}

static void *run(void *arg)
{
    udp_refused();
    udp_recverr();
    tcp_urgent_read();
    return NULL;
}

int main(void)
{
    tp_setup(30);
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress survives the alarm */
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, run, NULL));
    CHECK_RC(pthread_join(t, NULL));
    printf("stale_events: ok\n");
    return 0;
}
