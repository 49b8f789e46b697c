/* poll()/ppoll() over a mix of descriptors and timeouts.
 *
 * Linux facts checked here:
 *  - a regular file is always ready: POLLIN|POLLOUT.
 *  - a closed descriptor gives POLLNVAL (and counts in the return value);
 *    a negative fd is ignored (revents 0).
 *  - events = 0 still reports POLLHUP/POLLERR, nothing else.
 *  - pipe read end with no writers left: POLLHUP (no POLLIN when empty);
 *    pipe write end with no readers: POLLERR (plus POLLOUT).
 *  - socket whose peer closed: POLLIN|POLLHUP (+POLLRDHUP when asked).
 *  - timeouts are never early (hrtimers); nfds = 0 is a plain sleep.
 */
#include "common.h"
#include <poll.h>

static const char *ev(short e)
{
    static char b[8][128];
    static int slot;
    char *s = b[slot++ % 8];
    s[0] = 0;
    if (!e) {
        strcpy(s, "0");
        return s;
    }
    static const struct {
        short bit;
        const char *name;
    } names[] = {{POLLIN, "IN"},   {POLLPRI, "PRI"},   {POLLOUT, "OUT"},
                 {POLLERR, "ERR"}, {POLLHUP, "HUP"},   {POLLNVAL, "NVAL"},
                 {POLLRDHUP, "RDHUP"}, {POLLRDNORM, "RDNORM"}, {POLLWRNORM, "WRNORM"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (e & names[i].bit) {
            if (s[0])
                strcat(s, "|");
            strcat(s, names[i].name);
            e &= (short)~names[i].bit;
        }
    if (e)
        sprintf(s + strlen(s), "|0x%x", (unsigned)e);
    return s;
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
    int p[2], sp[2], idle[2];
    CHECK_SYS(pipe(p));
    CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, sp));
    CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, idle));
    char path[] = "/tmp/poll_mixed.XXXXXX";
    int file = (int)CHECK_SYS(mkstemp(path));
    unlink(path);
    write_all(file, "data", 4);

    /* 1. a pipe that becomes readable when a thread writes at 50 ms */
    struct delayed d = {p[1], 50};
    pthread_t t;
    int64_t start = now_ns();
    CHECK_RC(pthread_create(&t, NULL, delayed_write, &d));
    struct pollfd one = {p[0], POLLIN, 0};
    int n = poll(&one, 1, 5000);
    double el = ms_since(start);
    CHECK_RC(pthread_join(t, NULL));
    printf("pipe written at 50ms: poll returned %d, revents %s, waited >= 50ms: %s\n", n,
           ev(one.revents), yesno(el >= 50.0));
    char c;
    CHECK(read(p[0], &c, 1) == 1);

    /* 2. everything at once, timeout 0 */
    int closed = (int)CHECK_SYS(dup(0));
    close(closed);
    struct pollfd set[6] = {
        {p[0], POLLIN, 0},            /* empty pipe: nothing */
        {sp[0], POLLOUT, 0},          /* socket: writable */
        {idle[0], 0, 0},              /* no events asked */
        {closed, POLLIN, 0},          /* closed fd: POLLNVAL */
        {file, POLLIN | POLLOUT, 0},  /* regular file: always ready */
        {-1, POLLIN, 0},              /* negative fd: ignored */
    };
    n = poll(set, 6, 0);
    printf("mixed poll, timeout 0: returned %d\n", n);
    static const char *what[6] = {"empty pipe", "socket POLLOUT", "events=0",
                                  "closed fd", "regular file", "fd -1"};
    for (int i = 0; i < 6; i++)
        printf("  %s: %s\n", what[i], ev(set[i].revents));

    /* 3. same set with a timeout: ready ones make it return at once */
    start = now_ns();
    n = poll(set, 6, 1000);
    printf("mixed poll, timeout 1000: returned %d, immediately: %s\n", n,
           yesno(ms_since(start) < 500.0));

    /* 4. nothing ready, 100 ms */
    struct pollfd nothing[2] = {{p[0], POLLIN, 0}, {idle[0], POLLIN, 0}};
    start = now_ns();
    n = poll(nothing, 2, 100);
    el = ms_since(start);
    printf("poll nothing ready, 100ms: returned %d, not early: %s, late < %.0fms: %s\n", n,
           yesno(el >= 100.0), LATE_TOLERANCE_MS, yesno(el < 100.0 + LATE_TOLERANCE_MS));

    /* 5. nothing ready, timeout 0 */
    n = poll(nothing, 2, 0);
    printf("poll nothing ready, timeout 0: returned %d\n", n);

    /* 6. nfds = 0: a sleep */
    start = now_ns();
    n = poll(NULL, 0, 100);
    el = ms_since(start);
    printf("poll(NULL, 0, 100): returned %d, not early: %s, late < %.0fms: %s\n", n,
           yesno(el >= 100.0), LATE_TOLERANCE_MS, yesno(el < 100.0 + LATE_TOLERANCE_MS));

    /* 7. ppoll with a timespec, and with NULL (infinite) on a ready fd */
    struct timespec ts = {0, 100 * 1000 * 1000};
    start = now_ns();
    n = ppoll(nothing, 2, &ts, NULL);
    el = ms_since(start);
    printf("ppoll 100ms: returned %d, not early: %s, late < %.0fms: %s, timespec "
           "unchanged: %s\n",
           n, yesno(el >= 100.0), LATE_TOLERANCE_MS, yesno(el < 100.0 + LATE_TOLERANCE_MS),
           yesno(ts.tv_sec == 0 && ts.tv_nsec == 100 * 1000 * 1000));
    d.ms = 50;
    start = now_ns();
    CHECK_RC(pthread_create(&t, NULL, delayed_write, &d));
    one = (struct pollfd){p[0], POLLIN, 0};
    n = ppoll(&one, 1, NULL, NULL);
    el = ms_since(start);
    CHECK_RC(pthread_join(t, NULL));
    printf("ppoll no timeout, pipe written at 50ms: returned %d, revents %s, waited: %s\n",
           n, ev(one.revents), yesno(el >= 50.0));
    CHECK(read(p[0], &c, 1) == 1);
    struct timespec badts = {0, 1000000000L};
    errno = 0;
    n = ppoll(nothing, 2, &badts, NULL);
    printf("ppoll tv_nsec=1000000000: %d %s\n", n, errname(errno));

    /* 8. negative timeout = infinite */
    d.ms = 30;
    CHECK_RC(pthread_create(&t, NULL, delayed_write, &d));
    one = (struct pollfd){p[0], POLLIN, 0};
    n = poll(&one, 1, -1);
    CHECK_RC(pthread_join(t, NULL));
    printf("poll timeout -1: returned %d, revents %s\n", n, ev(one.revents));
    CHECK(read(p[0], &c, 1) == 1);

    /* 9. hang-ups and errors */
    close(p[1]);
    struct pollfd h = {p[0], POLLIN, 0};
    n = poll(&h, 1, 0);
    printf("pipe read end, writer closed: %d %s\n", n, ev(h.revents));
    close(p[0]);
    CHECK_SYS(pipe(p));
    close(p[0]);
    h = (struct pollfd){p[1], POLLOUT, 0};
    n = poll(&h, 1, 0);
    printf("pipe write end, reader closed: %d %s\n", n, ev(h.revents));
    close(p[1]);

    close(sp[1]);
    struct pollfd hs[2] = {{sp[0], POLLIN | POLLRDHUP, 0}, {sp[0], 0, 0}};
    n = poll(hs, 2, 0);
    printf("socket, peer closed: %d, POLLIN|POLLRDHUP asked: %s, events=0: %s\n", n,
           ev(hs[0].revents), ev(hs[1].revents));
    close(sp[0]);

    /* 10. same fd twice in one set, different events */
    CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, sp));
    write_all(sp[1], "y", 1);
    struct pollfd dup2x[2] = {{sp[0], POLLIN, 0}, {sp[0], POLLOUT, 0}};
    n = poll(dup2x, 2, 0);
    printf("same fd twice: %d, POLLIN entry: %s, POLLOUT entry: %s\n", n, ev(dup2x[0].revents),
           ev(dup2x[1].revents));

    /* 11. a TCP connection through its life */
    int tp[2];
    tcp_pair(tp);
    struct pollfd tcp = {tp[0], POLLIN | POLLOUT | POLLRDHUP, 0};
    n = poll(&tcp, 1, 0);
    printf("tcp idle: %d %s\n", n, ev(tcp.revents));
    write_all(tp[1], "z", 1);
    tcp.revents = 0;
    n = poll(&tcp, 1, 1000);
    printf("tcp data: %d %s\n", n, ev(tcp.revents));
    CHECK_SYS(shutdown(tp[1], SHUT_WR));
    /* the FIN arrives through loopback: wait until RDHUP shows */
    for (int i = 0; i < 100; i++) {
        n = poll(&tcp, 1, 10);
        if (tcp.revents & POLLRDHUP)
            break;
    }
    printf("tcp peer shutdown(SHUT_WR): %d %s\n", n, ev(tcp.revents));
    close(tp[0]);
    close(tp[1]);
    close(sp[0]);
    close(sp[1]);
    close(idle[0]);
    close(idle[1]);
    close(file);

    printf("poll_mixed: ok\n");
    return 0;
}
