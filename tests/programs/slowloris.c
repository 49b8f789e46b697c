/* Slowloris against a thread-per-connection HTTP-ish server.
 *
 * Server: one acceptor thread and one thread (64 KiB stack) per connection;
 * a connection thread reads request lines terminated by "\n" and answers
 * each with "ok\n" (keep-alive) until EOF.
 *
 * 2,000 slow clients (driven by a few client threads, one blocking 1-byte
 * write per connection per tick) each send one byte every 250 ms for 16 ticks
 * (~4 s), never completing a request line. Meanwhile 20 fast clients loop
 * request/response for 3 s. The server must keep serving the fast clients:
 * each completes more than 50 requests and no request takes 1 s or more.
 * Then the slow clients check that nothing was ever answered to them, and
 * close; every server thread ends on EOF.
 *
 * Both ends live in this process: ~2*(2000+20) descriptors. If the open-file
 * limit is too low the slow count is scaled down (same output). */
#include "common.h"

#define NSLOW_MAX 2000
#define NFAST 20
#define NDRIVERS 4
#define STACK (64 * 1024)
#define SLOW_TICKS 16
#define TICK_MS 250
#define FAST_MS 3000
#define MIN_FAST_REQUESTS 50
#define MAX_LATENCY_NS 1000000000LL

static int nslow;
static int port, listen_fd;

/* ---------------- server ---------------- */

struct conn_stat {
    long bytes;     /* bytes received */
    long responses; /* "ok\n" answers sent */
    int eof;        /* ended on EOF */
};

static pthread_mutex_t smu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t scond = PTHREAD_COND_INITIALIZER;
static int accepted;
static pthread_t server_threads[NSLOW_MAX + NFAST];
static struct conn_stat stats[NSLOW_MAX + NFAST];
static int conn_fd[NSLOW_MAX + NFAST];

static void *serve(void *arg)
{
    long idx = (long)arg;
    int fd = conn_fd[idx];
    char buf[512];
    long bytes = 0, responses = 0;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            FAIL("server read: %s", errname(errno));
        if (r == 0)
            break;
        bytes += r;
        for (ssize_t i = 0; i < r; i++)
            if (buf[i] == '\n') {
                write_all(fd, "ok\n", 3);
                responses++;
            }
    }
    close(fd);
    stats[idx].bytes = bytes;
    stats[idx].responses = responses;
    stats[idx].eof = 1;
    return NULL;
}

static void *acceptor(void *unused)
{
    int total = nslow + NFAST;
    for (long i = 0; i < total; i++) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            FAIL("accept #%ld: %s", i, errname(errno));
        conn_fd[i] = fd;
        int rc = create_thread(&server_threads[i], STACK, serve, (void *)i);
        if (rc)
            FAIL("pthread_create server %ld: %s", i, errname(rc));
        pthread_mutex_lock(&smu);
        accepted++;
        pthread_cond_broadcast(&scond);
        pthread_mutex_unlock(&smu);
    }
    return NULL;
}

static void wait_accepted(int n)
{
    pthread_mutex_lock(&smu);
    while (accepted < n)
        pthread_cond_wait(&scond, &smu);
    pthread_mutex_unlock(&smu);
}

/* ---------------- clients ---------------- */

static int connect_retry(void)
{
    for (int attempt = 0;; attempt++) {
        int fd = (int)CHECK_SYS(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        struct sockaddr_in a = local_addr(port);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
            return fd;
        int e = errno;
        close(fd);
        if (e != EAGAIN || attempt > 50)
            FAIL("connect: %s", errname(e));
        sleep_ms(20);
    }
}

static pthread_barrier_t start_barrier; /* drivers + main: all slow connected */
static pthread_mutex_t fmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fcond = PTHREAD_COND_INITIALIZER;
static int fast_done;
static int slow_answered; /* slow connections that got any byte back */

static void *slow_driver(void *arg)
{
    long d = (long)arg;
    int lo = (int)(d * nslow / NDRIVERS), hi = (int)((d + 1) * nslow / NDRIVERS);
    int *fds = malloc(sizeof(int) * (size_t)(hi - lo + 1));
    CHECK(fds);
    for (int i = lo; i < hi; i++)
        fds[i - lo] = connect_retry();
    pthread_barrier_wait(&start_barrier);

    int64_t t0 = now_ns();
    for (int tick = 0; tick < SLOW_TICKS; tick++) {
        int64_t due = t0 + (int64_t)tick * TICK_MS * 1000000LL;
        int64_t now = now_ns();
        if (due > now)
            sleep_ms((due - now) / 1000000LL);
        for (int i = lo; i < hi; i++)
            write_all(fds[i - lo], "x", 1); /* never a '\n' */
    }

    pthread_mutex_lock(&fmu);
    while (!fast_done)
        pthread_cond_wait(&fcond, &fmu);
    pthread_mutex_unlock(&fmu);

    int answered = 0;
    for (int i = lo; i < hi; i++) {
        char c;
        ssize_t r = recv(fds[i - lo], &c, 1, MSG_DONTWAIT);
        if (r != -1 || (errno != EAGAIN && errno != EWOULDBLOCK))
            answered++;
        close(fds[i - lo]);
    }
    free(fds);
    pthread_mutex_lock(&fmu);
    slow_answered += answered;
    pthread_mutex_unlock(&fmu);
    return NULL;
}

static long fast_count[NFAST];
static int64_t fast_max_ns[NFAST];
static int64_t fast_start_ns;

static void *fast_client(void *arg)
{
    long id = (long)arg;
    int fd = connect_retry();
    int one = 1;
    CHECK_SYS(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one));
    long n = 0;
    int64_t maxlat = 0;
    static const char req[] = "GET /fast HTTP/1.1\n";
    while (now_ns() - fast_start_ns < (int64_t)FAST_MS * 1000000LL) {
        int64_t t = now_ns();
        write_all(fd, req, sizeof req - 1);
        char resp[3];
        if (read_full(fd, resp, 3) != 3 || memcmp(resp, "ok\n", 3) != 0)
            FAIL("fast client %ld: bad response", id);
        int64_t lat = now_ns() - t;
        if (lat > maxlat)
            maxlat = lat;
        n++;
    }
    close(fd);
    fast_count[id] = n;
    fast_max_ns[id] = maxlat;
    return NULL;
}

int main(void)
{
    tp_setup(90);
    rlim_t lim = raise_nofile();
    nslow = NSLOW_MAX;
    if (lim < (rlim_t)(2 * (NSLOW_MAX + NFAST) + 100)) {
        long n = ((long)lim - 100) / 2 - NFAST;
        if (n < 8 * NDRIVERS) {
            printf("SKIP: open-file limit %lu too low\n", (unsigned long)lim);
            return 77;
        }
        nslow = (int)n;
        fprintf(stderr, "slowloris: open-file limit %lu: %d slow clients\n",
                (unsigned long)lim, nslow);
    }

    listen_fd = listen_local(4096, &port);
    pthread_t acc, drivers[NDRIVERS], fast[NFAST];
    CHECK_RC(pthread_create(&acc, NULL, acceptor, NULL));
    CHECK_RC(pthread_barrier_init(&start_barrier, NULL, NDRIVERS + 1));
    for (long d = 0; d < NDRIVERS; d++)
        CHECK_RC(create_thread(&drivers[d], STACK, slow_driver, (void *)d));
    pthread_barrier_wait(&start_barrier);
    wait_accepted(nslow); /* every slow connection holds a server thread */

    fast_start_ns = now_ns();
    for (long i = 0; i < NFAST; i++)
        CHECK_RC(create_thread(&fast[i], STACK, fast_client, (void *)i));
    for (int i = 0; i < NFAST; i++)
        CHECK_RC(pthread_join(fast[i], NULL));
    pthread_mutex_lock(&fmu);
    fast_done = 1;
    pthread_cond_broadcast(&fcond);
    pthread_mutex_unlock(&fmu);
    for (int d = 0; d < NDRIVERS; d++)
        CHECK_RC(pthread_join(drivers[d], NULL));
    CHECK_RC(pthread_join(acc, NULL));
    close(listen_fd);
    for (int i = 0; i < nslow + NFAST; i++)
        CHECK_RC(pthread_join(server_threads[i], NULL));

    int fast_ok = 1;
    int64_t maxlat = 0;
    long fast_total = 0;
    for (int i = 0; i < NFAST; i++) {
        if (fast_count[i] <= MIN_FAST_REQUESTS)
            fast_ok = 0;
        if (fast_max_ns[i] > maxlat)
            maxlat = fast_max_ns[i];
        fast_total += fast_count[i];
    }
    /* Server side: exactly nslow connections got SLOW_TICKS bytes and no
     * answer; the fast connections got as many answers as requests. */
    int slow_seen = 0, all_eof = 1;
    long responses = 0;
    for (int i = 0; i < nslow + NFAST; i++) {
        if (!stats[i].eof)
            all_eof = 0;
        if (stats[i].responses == 0 && stats[i].bytes == SLOW_TICKS)
            slow_seen++;
        responses += stats[i].responses;
    }
    fprintf(stderr, "slowloris: %d slow, fast requests %ld, max latency %.1f ms\n", nslow,
            fast_total, (double)maxlat / 1e6);

    printf("fast requests completed: %s\n", yesno(fast_ok));
    printf("max fast latency < 1s: %s\n", yesno(maxlat < MAX_LATENCY_NS));
    printf("slow connections held without answer: %s\n",
           yesno(slow_seen == nslow && slow_answered == 0));
    printf("server answered every fast request: %s\n", yesno(responses == fast_total));
    printf("all server threads ended on EOF: %s\n", yesno(all_eof));
    return 0;
}
