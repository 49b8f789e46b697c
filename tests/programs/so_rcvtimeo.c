/* SO_RCVTIMEO / SO_SNDTIMEO on blocking sockets.
 *
 * Linux facts checked here:
 *  - read/recv/accept on a socket with SO_RCVTIMEO return -1 EAGAIN once the
 *    timeout passes with nothing to read (never earlier than the timeout).
 *  - a write that times out after transferring some bytes returns the
 *    partial count; one that transfers nothing returns -1 EAGAIN.
 *  - getsockopt returns the value that was set; {0,0} means "no timeout".
 *  - tv_usec outside [0, 1000000) is rejected with EDOM.
 *  - data arriving before the timeout is returned normally.
 *
 * Socket timeouts are kept in jiffies by the kernel (rounded up when set),
 * and a jiffy-based sleep may end up to one jiffy (at most 10 ms) before
 * the nominal time, so "not early" allows JIFFY_MS. (poll/select/epoll/
 * nanosleep use hrtimers and are checked without that slack elsewhere.)
 */
#include "common.h"

#define JIFFY_MS 10.0

static void set_tv(int fd, int opt, long sec, long usec)
{
    struct timeval tv = {sec, usec};
    CHECK_SYS(setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof tv));
}

static struct timeval get_tv(int fd, int opt)
{
    struct timeval tv;
    socklen_t len = sizeof tv;
    CHECK_SYS(getsockopt(fd, SOL_SOCKET, opt, &tv, &len));
    CHECK(len == sizeof tv);
    return tv;
}

static void report_timeout(const char *what, ssize_t r, int err, double el, double want_ms)
{
    printf("%s: %zd %s, not early: %s, < 1s: %s\n", what, r, r < 0 ? errname(err) : "",
           yesno(el >= want_ms - JIFFY_MS), yesno(el < 1000.0));
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

int main(void)
{
    tp_setup(60);
    int fds[2];
    char c;

    /* ---- SO_RCVTIMEO ---- */
    tcp_pair(fds);
    struct timeval tv = get_tv(fds[0], SO_RCVTIMEO);
    printf("default SO_RCVTIMEO: %ld.%06ld\n", (long)tv.tv_sec, (long)tv.tv_usec);
    set_tv(fds[0], SO_RCVTIMEO, 0, 100000);
    tv = get_tv(fds[0], SO_RCVTIMEO);
    printf("SO_RCVTIMEO after set 0.100000: %ld.%06ld\n", (long)tv.tv_sec, (long)tv.tv_usec);

    int64_t start = now_ns();
    ssize_t r = read(fds[0], &c, 1);
    int e = errno;
    report_timeout("tcp read with SO_RCVTIMEO 100ms", r, e, ms_since(start), 100);

    start = now_ns();
    r = recv(fds[0], &c, 1, 0);
    e = errno;
    report_timeout("tcp recv with SO_RCVTIMEO 100ms", r, e, ms_since(start), 100);

    /* data arriving within the timeout */
    set_tv(fds[0], SO_RCVTIMEO, 0, 500000);
    struct delayed d = {fds[1], 50};
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, delayed_write, &d));
    start = now_ns();
    r = read(fds[0], &c, 1);
    double el = ms_since(start);
    CHECK_RC(pthread_join(t, NULL));
    printf("data after 50ms with SO_RCVTIMEO 500ms: read %zd, before timeout: %s\n", r,
           yesno(el < 500.0));

    /* back to "no timeout" */
    set_tv(fds[0], SO_RCVTIMEO, 0, 0);
    tv = get_tv(fds[0], SO_RCVTIMEO);
    printf("SO_RCVTIMEO after set 0: %ld.%06ld\n", (long)tv.tv_sec, (long)tv.tv_usec);
    d.ms = 150;
    start = now_ns();
    CHECK_RC(pthread_create(&t, NULL, delayed_write, &d));
    r = read(fds[0], &c, 1);
    el = ms_since(start);
    CHECK_RC(pthread_join(t, NULL));
    printf("no timeout: read waited for data written at 150ms: %s (read %zd)\n",
           yesno(el >= 150.0), r);

    /* invalid values */
    struct timeval bad = {0, 1000000};
    errno = 0;
    int sr = setsockopt(fds[0], SOL_SOCKET, SO_RCVTIMEO, &bad, sizeof bad);
    printf("SO_RCVTIMEO tv_usec=1000000: %d %s\n", sr, errname(errno));
    errno = 0;
    sr = setsockopt(fds[0], SOL_SOCKET, SO_RCVTIMEO, &bad, 3);
    printf("SO_RCVTIMEO short optlen: %d %s\n", sr, errname(errno));
    close(fds[0]);
    close(fds[1]);

    /* AF_UNIX, larger timeout */
    CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, fds));
    set_tv(fds[0], SO_RCVTIMEO, 0, 250000);
    start = now_ns();
    r = read(fds[0], &c, 1);
    e = errno;
    report_timeout("unix read with SO_RCVTIMEO 250ms", r, e, ms_since(start), 250);
    close(fds[0]);
    close(fds[1]);

    /* accept with SO_RCVTIMEO on the listening socket */
    int port;
    int lfd = listen_local(8, &port);
    set_tv(lfd, SO_RCVTIMEO, 0, 100000);
    start = now_ns();
    int ar = accept(lfd, NULL, NULL);
    e = errno;
    report_timeout("accept with SO_RCVTIMEO 100ms", ar, e, ms_since(start), 100);
    close(lfd);

    /* ---- SO_SNDTIMEO ---- */
    tcp_pair(fds);
    int sz = 4096;
    CHECK_SYS(setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz));
    CHECK_SYS(setsockopt(fds[1], SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz));
    set_tv(fds[0], SO_SNDTIMEO, 0, 100000);
    tv = get_tv(fds[0], SO_SNDTIMEO);
    printf("SO_SNDTIMEO after set 0.100000: %ld.%06ld\n", (long)tv.tv_sec, (long)tv.tv_usec);
    static char big[4 << 20];
    start = now_ns();
    r = write(fds[0], big, sizeof big);
    e = errno;
    el = ms_since(start);
    printf("tcp write 4 MiB to a peer that does not read: partial count: %s, not early: "
           "%s\n",
           yesno(r > 0 && r < (ssize_t)sizeof big), yesno(el >= 100.0 - JIFFY_MS));
    start = now_ns();
    r = write(fds[0], big, sizeof big);
    e = errno;
    report_timeout("tcp write to the full socket", r, e, ms_since(start), 100);
    close(fds[0]);
    close(fds[1]);

    CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, fds));
    set_tv(fds[0], SO_SNDTIMEO, 0, 100000);
    start = now_ns();
    r = write(fds[0], big, sizeof big);
    el = ms_since(start);
    printf("unix write 4 MiB to a peer that does not read: partial count: %s, not early: "
           "%s\n",
           yesno(r > 0 && r < (ssize_t)sizeof big), yesno(el >= 100.0 - JIFFY_MS));
    start = now_ns();
    r = write(fds[0], big, sizeof big);
    e = errno;
    report_timeout("unix write to the full socket", r, e, ms_since(start), 100);
    close(fds[0]);
    close(fds[1]);

    printf("so_rcvtimeo: ok\n");
    return 0;
}
