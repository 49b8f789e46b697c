/* A program with its own epoll: first the epoll semantics a user relies on
 * (checked from main), then a thread running an epoll event loop that
 * serves echo, level-triggered and edge-triggered connections mixed, for
 * several client threads.
 *
 * Linux facts checked here:
 *  - level-triggered reports readiness on every epoll_wait until drained;
 *    edge-triggered only once per new arrival; EPOLLONESHOT disarms until
 *    EPOLL_CTL_MOD re-arms it.
 *  - ctl errors: ADD twice EEXIST; MOD/DEL of an unregistered fd ENOENT;
 *    ADD of a regular file EPERM; ADD of the epoll fd to itself EINVAL;
 *    epoll_wait with maxevents 0 EINVAL.
 *  - an fd closed while a dup of it stays open keeps being reported
 *    (registration belongs to the open file description).
 *  - epoll_wait timeouts are never early; timeout 0 returns at once.
 */
#include "common.h"
#include <sys/epoll.h>

#define NCLIENTS 8
#define NMSGS 200
#define MAXMSG 3000

static int wait_n(int ep, int timeout, struct epoll_event *evs, int max)
{
    int n;
    while ((n = epoll_wait(ep, evs, max, timeout)) < 0 && errno == EINTR) {
    }
    if (n < 0)
        FAIL("epoll_wait: %s", errname(errno));
    return n;
}

/* "<ret> <errno name>" for a call returning -1/errno; the call is made
 * before errno is read (printf argument order is unspecified). */
static const char *res(int ret)
{
    static char b[4][48];
    static int slot;
    int e = errno;
    char *s = b[slot++ % 4];
    snprintf(s, 48, "%d %s", ret, ret < 0 ? errname(e) : "");
    return s;
}

static void semantics(void)
{
    struct epoll_event ev, evs[8];
    int ep = (int)CHECK_SYS(epoll_create1(EPOLL_CLOEXEC));
    printf("epoll_create1(EPOLL_CLOEXEC): FD_CLOEXEC %s\n",
           yesno(fcntl(ep, F_GETFD) & FD_CLOEXEC));

    int64_t start = now_ns();
    int n = wait_n(ep, 100, evs, 8);
    double el = ms_since(start);
    printf("empty set, 100ms: %d, not early: %s, late < %.0fms: %s\n", n, yesno(el >= 100.0),
           LATE_TOLERANCE_MS, yesno(el < 100.0 + LATE_TOLERANCE_MS));
    printf("empty set, timeout 0: %d\n", wait_n(ep, 0, evs, 8));

    int lt[2], et[2], os[2];
    CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, lt));
    CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, et));
    CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, os));

    /* errors */
    ev.events = EPOLLIN;
    ev.data.u64 = 0x1111222233334444ULL;
    CHECK_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, lt[0], &ev));
    printf("ADD twice: %s\n", res(epoll_ctl(ep, EPOLL_CTL_ADD, lt[0], &ev)));
    printf("MOD unregistered: %s\n", res(epoll_ctl(ep, EPOLL_CTL_MOD, et[0], &ev)));
    printf("DEL unregistered: %s\n", res(epoll_ctl(ep, EPOLL_CTL_DEL, et[0], &ev)));
    char path[] = "/tmp/epoll_in_thread.XXXXXX";
    int file = (int)CHECK_SYS(mkstemp(path));
    unlink(path);
    printf("ADD regular file: %s\n", res(epoll_ctl(ep, EPOLL_CTL_ADD, file, &ev)));
    close(file);
    printf("ADD epoll fd to itself: %s\n", res(epoll_ctl(ep, EPOLL_CTL_ADD, ep, &ev)));
    printf("epoll_wait maxevents 0: %s\n", res(epoll_wait(ep, evs, 0, 0)));

    /* level-triggered */
    write_all(lt[1], "ab", 2);
    n = wait_n(ep, 1000, evs, 8);
    printf("LT after write: %d, data.u64 kept: %s, EPOLLIN: %s\n", n,
           yesno(n == 1 && evs[0].data.u64 == 0x1111222233334444ULL),
           yesno(evs[0].events & EPOLLIN));
    printf("LT again without reading: %d\n", wait_n(ep, 0, evs, 8));
    char buf[16];
    CHECK(read(lt[0], buf, 1) == 1);
    printf("LT after reading 1 of 2 bytes: %d\n", wait_n(ep, 0, evs, 8));
    CHECK(read(lt[0], buf, 1) == 1);
    printf("LT after draining: %d\n", wait_n(ep, 0, evs, 8));

    /* edge-triggered */
    ev.events = EPOLLIN | EPOLLET;
    ev.data.fd = et[0];
    CHECK_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, et[0], &ev));
    write_all(et[1], "cd", 2);
    n = wait_n(ep, 1000, evs, 8);
    printf("ET after write: %d, fd matches: %s\n", n, yesno(n == 1 && evs[0].data.fd == et[0]));
    printf("ET again without reading: %d\n", wait_n(ep, 0, evs, 8));
    write_all(et[1], "e", 1);
    printf("ET after another write: %d\n", wait_n(ep, 1000, evs, 8));
    CHECK(read(et[0], buf, sizeof buf) == 3);
    printf("ET after draining: %d\n", wait_n(ep, 0, evs, 8));

    /* one-shot */
    ev.events = EPOLLIN | EPOLLONESHOT;
    ev.data.fd = os[0];
    CHECK_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, os[0], &ev));
    write_all(os[1], "f", 1);
    printf("ONESHOT first: %d\n", wait_n(ep, 1000, evs, 8));
    printf("ONESHOT second (data still there): %d\n", wait_n(ep, 0, evs, 8));
    CHECK_SYS(epoll_ctl(ep, EPOLL_CTL_MOD, os[0], &ev));
    printf("ONESHOT after MOD re-arm: %d\n", wait_n(ep, 0, evs, 8));
    CHECK(read(os[0], buf, sizeof buf) == 1);

    /* peer shutdown: EPOLLRDHUP */
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.fd = os[0];
    CHECK_SYS(epoll_ctl(ep, EPOLL_CTL_MOD, os[0], &ev));
    CHECK_SYS(shutdown(os[1], SHUT_WR));
    n = wait_n(ep, 1000, evs, 8);
    printf("peer shutdown(SHUT_WR): %d, EPOLLIN %s, EPOLLRDHUP %s, EPOLLHUP %s\n", n,
           yesno(evs[0].events & EPOLLIN), yesno(evs[0].events & EPOLLRDHUP),
           yesno(evs[0].events & EPOLLHUP));
    CHECK_SYS(epoll_ctl(ep, EPOLL_CTL_DEL, os[0], NULL));
    printf("after DEL: %d\n", wait_n(ep, 0, evs, 8));

    /* close an fd whose dup stays open: still reported */
    int d = (int)CHECK_SYS(dup(et[0]));
    close(et[0]);
    write_all(et[1], "g", 1);
    n = wait_n(ep, 200, evs, 8);
    printf("registered fd closed, dup open: still reported: %s\n", yesno(n == 1));
    close(d);
    printf("all references closed (data still unread): reported: %s\n",
           yesno(wait_n(ep, 100, evs, 8) != 0));

    /* epoll_pwait / epoll_pwait2 */
    sigset_t mask;
    sigemptyset(&mask);
    start = now_ns();
    n = epoll_pwait(ep, evs, 8, 100, &mask);
    el = ms_since(start);
    printf("epoll_pwait 100ms: %d, not early: %s\n", n, yesno(el >= 100.0));
    struct timespec ts = {0, 100 * 1000 * 1000};
    start = now_ns();
    n = epoll_pwait2(ep, evs, 8, &ts, NULL);
    el = ms_since(start);
    printf("epoll_pwait2 100ms: %d, not early: %s\n", n, yesno(el >= 100.0));
    write_all(lt[1], "i", 1);
    ts = (struct timespec){5, 0};
    printf("epoll_pwait2 with data: %d\n", epoll_pwait2(ep, evs, 8, &ts, NULL));

    close(lt[0]);
    close(lt[1]);
    close(et[1]);
    close(os[0]);
    close(os[1]);
    close(ep);
}

/* ---------------- event-loop echo server ---------------- */

static int listen_fd, port;

struct conn {
    int fd;
    int et;
};

static long loop_bytes;
static int loop_conns_lt, loop_conns_et;

static void echo_back(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EAGAIN) {
            /* wait until writable via a private epoll */
            int ep = (int)CHECK_SYS(epoll_create1(0));
            struct epoll_event ev = {.events = EPOLLOUT, .data.fd = fd};
            CHECK_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev));
            wait_n(ep, 1000, &ev, 1);
            close(ep);
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            FAIL("echo write: %s", errname(errno));
        buf += w;
        n -= (size_t)w;
    }
}

static void *event_loop(void *unused)
{
    int ep = (int)CHECK_SYS(epoll_create1(EPOLL_CLOEXEC));
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    CHECK_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &ev));
    int accepted = 0, closed = 0;
    char buf[1024]; /* smaller than messages: several reads per message */
    struct epoll_event evs[16];
    while (closed < NCLIENTS) {
        int n = wait_n(ep, 50, evs, 16);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0)
                    FAIL("accept4: %s", errname(errno));
                c = malloc(sizeof *c);
                c->fd = fd;
                c->et = accepted++ % 2;
                if (c->et)
                    loop_conns_et++;
                else
                    loop_conns_lt++;
                struct epoll_event cev = {.events = EPOLLIN | (c->et ? EPOLLET : 0u),
                                          .data.ptr = c};
                CHECK_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev));
                continue;
            }
            /* LT: one read per wakeup; ET: must drain until EAGAIN */
            for (;;) {
                ssize_t r = read(c->fd, buf, sizeof buf);
                if (r > 0) {
                    echo_back(c->fd, buf, (size_t)r);
                    loop_bytes += r;
                    if (!c->et)
                        break;
                    continue;
                }
                if (r < 0 && errno == EAGAIN)
                    break;
                if (r < 0 && errno == EINTR)
                    continue;
                if (r < 0)
                    FAIL("loop read: %s", errname(errno));
                /* EOF */
                CHECK_SYS(epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL));
                close(c->fd);
                free(c);
                closed++;
                break;
            }
        }
    }
    close(ep);
    return NULL;
}

static uint64_t client_sum[NCLIENTS];
static long client_bytes[NCLIENTS];

static void *client(void *arg)
{
    long id = (long)arg;
    uint64_t rng = rng_seed((uint64_t)id + 77);
    char out[MAXMSG], in[MAXMSG];
    int fd = connect_local(port);
    uint64_t sum = FNV_INIT;
    for (int m = 0; m < NMSGS; m++) {
        size_t len = 1 + rng_next(&rng) % MAXMSG;
        for (size_t i = 0; i < len; i++)
            out[i] = (char)rng_next(&rng);
        write_all(fd, out, len);
        if (read_full(fd, in, len) != len)
            FAIL("client %ld: short echo", id);
        if (memcmp(in, out, len))
            FAIL("client %ld: echo differs", id);
        sum = fnv1a(sum, in, len);
        client_bytes[id] += (long)len;
    }
    close(fd);
    client_sum[id] = sum;
    return NULL;
}

int main(void)
{
    tp_setup(60);
    semantics();

    listen_fd = listen_local(64, &port);
    CHECK_SYS(fcntl(listen_fd, F_SETFL, O_NONBLOCK));
    pthread_t loop, cl[NCLIENTS];
    CHECK_RC(pthread_create(&loop, NULL, event_loop, NULL));
    for (long i = 0; i < NCLIENTS; i++)
        CHECK_RC(create_thread(&cl[i], 256 * 1024, client, (void *)i));
    for (int i = 0; i < NCLIENTS; i++)
        CHECK_RC(pthread_join(cl[i], NULL));
    CHECK_RC(pthread_join(loop, NULL));
    close(listen_fd);
    long total = 0;
    uint64_t sum = FNV_INIT;
    for (int i = 0; i < NCLIENTS; i++) {
        total += client_bytes[i];
        sum = fnv1a(sum, &client_sum[i], sizeof client_sum[i]);
    }
    printf("event loop: %d connections (%d level-triggered, %d edge-triggered)\n",
           loop_conns_lt + loop_conns_et, loop_conns_lt, loop_conns_et);
    printf("echoed bytes: %ld, matches clients: %s\n", loop_bytes, yesno(loop_bytes == total));
    printf("checksum: %016llx\n", (unsigned long long)sum);
    printf("epoll_in_thread: ok\n");
    return 0;
}
