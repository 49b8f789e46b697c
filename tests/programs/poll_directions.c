// fibershim-carriers: 1 2
/* poll/ppoll/select/pselect answer for the directions they are asked about,
 * and what they learn about one direction says nothing about the other.
 *
 * Linux facts checked here:
 *  - a poll for POLLIN that times out on a socket with nothing to read does
 *    not change whether the socket is writable: a poll for POLLOUT right
 *    after it reports POLLOUT at once (timeout 0 or not), and a blocking
 *    write returns at once;
 *  - the reverse: a poll for POLLOUT that times out on a socket whose send
 *    buffer is full does not hide data waiting to be read: POLLIN is
 *    reported at once and a blocking read returns the data at once;
 *  - the same with select and pselect (read set, then write set);
 *  - a "TLS proxy" per connection thread that waits for a request with
 *    POLLIN, checks with a short POLLIN poll that nothing more is pipelined,
 *    then waits for POLLOUT before answering, is never kept waiting by the
 *    POLLOUT wait.
 * Each wait that would hang is bounded (a poll timeout, SO_SNDTIMEO,
 * SO_RCVTIMEO), so a regression prints "no" instead of hanging.
 */
#include "common.h"
#include <poll.h>
#include <sys/select.h>

enum how { W_POLL, W_PPOLL, W_SELECT, W_PSELECT };
static const char *how_name[] = {"poll", "ppoll", "select", "pselect"};

/* Waits up to ms for fd to be ready in direction ev (POLLIN or POLLOUT)
 * with the given call; returns 1 if that direction was reported, else 0. */
static int wait_dir(enum how h, int fd, short ev, int ms)
{
    struct timespec ts = ns_to_ts((int64_t)ms * 1000000);
    if (h == W_POLL || h == W_PPOLL) {
        struct pollfd p = {fd, ev, 0};
        int n = h == W_POLL ? poll(&p, 1, ms) : ppoll(&p, 1, &ts, NULL);
        CHECK(n >= 0);
        return n == 1 && (p.revents & ev) != 0;
    }
    fd_set s;
    FD_ZERO(&s);
    FD_SET(fd, &s);
    fd_set *r = ev == POLLIN ? &s : NULL, *w = ev == POLLOUT ? &s : NULL;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    int n =
        h == W_SELECT ? select(fd + 1, r, w, NULL, &tv) : pselect(fd + 1, r, w, NULL, &ts, NULL);
    CHECK(n >= 0);
    return n == 1 && FD_ISSET(fd, &s);
}

static void set_timeout(int fd, int opt, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    CHECK_SYS(setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof tv));
}

/* A connected pair: fds[0] is tested, fds[1] is its peer. */
static void make_pair(int tcp, int fds[2])
{
    if (tcp)
        tcp_pair(fds);
    else
        CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds));
}

/* Reads whatever the peer has queued without blocking; returns the count. */
static size_t drain_nb(int fd)
{
    char buf[65536];
    size_t total = 0;
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return total;
        CHECK(r > 0);
        total += (size_t)r;
    }
}

/* Nothing to read, so a wait for POLLIN times out; the socket stays
 * writable throughout. */
static void read_wait_keeps_writable(int tcp, enum how h)
{
    int s[2];
    make_pair(tcp, s);
    set_timeout(s[0], SO_SNDTIMEO, 1000);
    char buf[4];

    /* Readable once, then read exactly what came (not a short read). */
    write_all(s[1], "ping", 4);
    int in1 = wait_dir(h, s[0], POLLIN, 1000);
    CHECK(read(s[0], buf, 4) == 4);

    int in2 = wait_dir(h, s[0], POLLIN, 50);
    int out0 = wait_dir(h, s[0], POLLOUT, 0);
    int64_t t = now_ns();
    int out1 = wait_dir(h, s[0], POLLOUT, 500);
    double el_out = ms_since(t);
    CHECK(wait_dir(h, s[0], POLLIN, 50) == 0);
    t = now_ns();
    ssize_t w = write(s[0], "pong", 4);
    double el_w = ms_since(t);
    CHECK(read_full(s[1], buf, 4) == 4 && memcmp(buf, "pong", 4) == 0);
    printf("%s %s: POLLIN with data %d, after reading it: %d; then POLLOUT timeout 0: %d, "
           "timeout 500: %d at once: %s; blocking write %zd at once: %s\n",
           tcp ? "tcp" : "unix", how_name[h], in1, in2, out0, out1,
           yesno(el_out < LATE_TOLERANCE_MS), w, yesno(el_w < LATE_TOLERANCE_MS));
    close(s[0]);
    close(s[1]);
}

/* The send buffer is full, so a wait for POLLOUT times out; data that the
 * peer sent stays readable throughout. */
static void write_wait_keeps_readable(int tcp, enum how h)
{
    int s[2];
    make_pair(tcp, s);
    set_timeout(s[0], SO_RCVTIMEO, 1000);
    int out0 = wait_dir(h, s[0], POLLOUT, 1000);

    /* Fill s[0]'s way out without blocking, then let the peer send a byte. */
    static char big[65536];
    size_t filled = 0;
    for (;;) {
        ssize_t r = send(s[0], big, sizeof big, MSG_DONTWAIT);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        CHECK(r > 0);
        filled += (size_t)r;
    }
    write_all(s[1], "x", 1);
    int in1 = wait_dir(h, s[0], POLLIN, 1000);

    int out1 = wait_dir(h, s[0], POLLOUT, 50);
    int in2 = wait_dir(h, s[0], POLLIN, 0);
    int64_t t = now_ns();
    int in3 = wait_dir(h, s[0], POLLIN, 500);
    double el_in = ms_since(t);
    char c = 0;
    t = now_ns();
    ssize_t r = read(s[0], &c, 1);
    double el_r = ms_since(t);

    /* The peer empties the way out: writable again. */
    size_t got = 0;
    while (got < filled) {
        got += drain_nb(s[1]);
        if (got < filled)
            CHECK(wait_dir(W_POLL, s[1], POLLIN, 2000) == 1);
    }
    int out2 = wait_dir(h, s[0], POLLOUT, 1000);
    printf("%s %s: POLLOUT %d, with the send buffer full: %d; then POLLIN with data, timeout "
           "0: %d (before: %d), timeout 500: %d at once: %s; blocking read %zd '%c' at once: "
           "%s; POLLOUT once emptied: %d\n",
           tcp ? "tcp" : "unix", how_name[h], out0, out1, in2, in1, in3,
           yesno(el_in < LATE_TOLERANCE_MS), r, c, yesno(el_r < LATE_TOLERANCE_MS), out2);
    close(s[0]);
    close(s[1]);
}

/* ---- a TLS-proxy shape ------------------------------------------------------- */

#define PROXY_CONNS 16
#define PROXY_ROUNDS 3
#define PROXY_MSG 16

struct proxy_conn {
    int fd;
    enum how h;
    int ok;         /* requests answered */
    int out_waited; /* POLLOUT waits that did not report POLLOUT */
    int pipelined;  /* short POLLIN polls that reported more data */
};

static void *proxy_serve(void *arg)
{
    struct proxy_conn *c = arg;
    for (int i = 0; i < PROXY_ROUNDS; i++) {
        char req[PROXY_MSG];
        if (!wait_dir(c->h, c->fd, POLLIN, 5000))
            FAIL("proxy: no request within 5 s");
        CHECK(read_full(c->fd, req, sizeof req) == sizeof req);
        /* Anything more pipelined behind it? (No: the client waits.) */
        c->pipelined += wait_dir(c->h, c->fd, POLLIN, 20);
        /* Wait for room to answer; bounded so a regression cannot hang. */
        if (!wait_dir(c->h, c->fd, POLLOUT, 2000))
            c->out_waited++;
        req[0] = 'R';
        write_all(c->fd, req, sizeof req);
        c->ok++;
    }
    return NULL;
}

static void *proxy_client(void *arg)
{
    int fd = *(int *)arg;
    for (int i = 0; i < PROXY_ROUNDS; i++) {
        char req[64], resp[PROXY_MSG];
        snprintf(req, sizeof req, "Q%02d-round-%d................", fd % 100, i);
        write_all(fd, req, PROXY_MSG);
        CHECK(read_full(fd, resp, sizeof resp) == sizeof resp);
        CHECK(resp[0] == 'R' && memcmp(resp + 1, req + 1, PROXY_MSG - 1) == 0);
    }
    return NULL;
}

static void proxy_shape(void)
{
    int port;
    int l = listen_local(PROXY_CONNS, &port);
    int cfd[PROXY_CONNS];
    struct proxy_conn pc[PROXY_CONNS];
    pthread_t st[PROXY_CONNS], ct[PROXY_CONNS];
    for (int i = 0; i < PROXY_CONNS; i++) {
        cfd[i] = connect_local(port);
        pc[i] = (struct proxy_conn){.h = (enum how)(i % 4)};
        pc[i].fd = (int)CHECK_SYS(accept(l, NULL, NULL));
        set_timeout(pc[i].fd, SO_SNDTIMEO, 2000); /* a regression must not hang */
    }
    int64_t t = now_ns();
    for (int i = 0; i < PROXY_CONNS; i++) {
        CHECK_RC(pthread_create(&st[i], NULL, proxy_serve, &pc[i]));
        CHECK_RC(pthread_create(&ct[i], NULL, proxy_client, &cfd[i]));
    }
    int ok = 0, waited = 0, pipelined = 0;
    for (int i = 0; i < PROXY_CONNS; i++) {
        CHECK_RC(pthread_join(st[i], NULL));
        CHECK_RC(pthread_join(ct[i], NULL));
        ok += pc[i].ok;
        waited += pc[i].out_waited;
        pipelined += pc[i].pipelined;
        close(pc[i].fd);
        close(cfd[i]);
    }
    double el = ms_since(t);
    close(l);
    printf("tls-proxy shape, %d connections x %d rounds (poll, ppoll, select, pselect): "
           "answered %d, pipelined %d, POLLOUT waits that timed out %d, under 2 s: %s\n",
           PROXY_CONNS, PROXY_ROUNDS, ok, pipelined, waited, yesno(el < 2000.0));
}

static void *run(void *arg)
{
    for (int tcp = 0; tcp < 2; tcp++)
        for (int h = W_POLL; h <= W_PSELECT; h++)
            read_wait_keeps_writable(tcp, (enum how)h);
    for (int tcp = 0; tcp < 2; tcp++)
        for (int h = W_POLL; h <= W_PSELECT; h++)
            write_wait_keeps_readable(tcp, (enum how)h);
    proxy_shape();
    return NULL;
}

int main(void)
{
    tp_setup(120);
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress survives the alarm */
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, run, NULL));
    CHECK_RC(pthread_join(t, NULL));
    printf("poll_directions: ok\n");
    return 0;
}
