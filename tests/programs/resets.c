/* Hostile clients: connections reset (SO_LINGER {1,0} then close, which sends
 * an RST) at every stage, and half-closed connections.
 *
 *  A. mid-request: the client sends part of a request line (or nothing) and
 *     resets while the server thread is blocked in read(): that read returns
 *     -1 ECONNRESET (or 0), and a later write() to the reset peer fails
 *     (EPIPE or ECONNRESET; which one is not printed).
 *  B. mid-response: the server thread writes an 8 MiB response into capped
 *     socket buffers; the client reads a little and resets while the writer
 *     is blocked: the blocked write fails (EPIPE or ECONNRESET).
 *  C. half-close: the client sends a request and shutdown(SHUT_WR); the
 *     server reads the request, then EOF, and still writes a 256 KiB
 *     response, which the client reads in full, then EOF.
 *  D. reset before accept: the client connects and resets before the server
 *     accepts; accept() still returns the connection (Linux) and its first
 *     read reports the reset (or EOF), or accept fails with ECONNABORTED.
 *
 * Each scenario runs ITER times, with server and client in their own
 * threads. Only yes/no facts are printed. */
#include "common.h"

#define ITER 10
#define BIG (8 * 1024 * 1024)
#define HALF_PAYLOAD (256 * 1024)
#define BUFCAP (64 * 1024)

static int port, listen_fd;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int stage; /* handshake between the server and client thread */

static void set_stage(int s)
{
    pthread_mutex_lock(&mu);
    stage = s;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void wait_stage(int s)
{
    pthread_mutex_lock(&mu);
    while (stage < s)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

static void abortive_close(int fd)
{
    struct linger lg = {1, 0};
    CHECK_SYS(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
    CHECK_SYS(close(fd));
}

static int is_reset_errno(int e) { return e == ECONNRESET || e == EPIPE; }

static int accept_one(void)
{
    int fd;
    while ((fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC)) < 0 && errno == EINTR) {
    }
    if (fd < 0)
        FAIL("accept: %s", errname(errno));
    return fd;
}

static ssize_t read_retry(int fd, void *buf, size_t n)
{
    ssize_t r;
    while ((r = read(fd, buf, n)) < 0 && errno == EINTR) {
    }
    return r;
}

/* Reads until a '\n' arrived; returns 1, or 0 on EOF first. */
static int read_request(int fd)
{
    char buf[256];
    for (;;) {
        ssize_t r = read_retry(fd, buf, sizeof buf);
        if (r < 0)
            FAIL("read_request: %s", errname(errno));
        if (r == 0)
            return 0;
        if (memchr(buf, '\n', (size_t)r))
            return 1;
    }
}

static int it; /* current iteration */

/* ---------------- A: reset mid-request ---------------- */

static int a_reset_seen, a_write_fails;

static void *a_server(void *unused)
{
    int fd = accept_one();
    char buf[256];
    if (it % 2 == 0) { /* the client sends a partial line first */
        size_t got = 0;
        while (got < 8) {
            ssize_t r = read_retry(fd, buf, sizeof buf);
            if (r <= 0)
                FAIL("A: read of the partial request: %zd %s", r, errname(errno));
            got += (size_t)r;
        }
    }
    set_stage(1);
    errno = 0;
    ssize_t r = read_retry(fd, buf, sizeof buf); /* blocks until the RST */
    if (r == 0 || (r < 0 && errno == ECONNRESET))
        a_reset_seen++;
    else
        fprintf(stderr, "A: read after reset: %zd %s\n", r, errname(errno));
    errno = 0;
    ssize_t w = write(fd, "ok\n", 3);
    if (w < 0 && is_reset_errno(errno))
        a_write_fails++;
    else
        fprintf(stderr, "A: write after reset: %zd %s\n", w, errname(errno));
    close(fd);
    return NULL;
}

static void *a_client(void *unused)
{
    int fd = connect_local(port);
    if (it % 2 == 0)
        write_all(fd, "GET /par", 8);
    wait_stage(1);
    sleep_ms(50); /* the server thread is blocked in read() by now */
    abortive_close(fd);
    return NULL;
}

/* ---------------- B: reset mid-response ---------------- */

static char *big;
static int b_write_fails;

static void *b_server(void *unused)
{
    int fd = accept_one();
    int cap = BUFCAP;
    CHECK_SYS(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &cap, sizeof cap));
    if (!read_request(fd))
        FAIL("B: EOF before the request");
    long sent = 0;
    int failed = 0;
    while (sent < BIG) {
        ssize_t w = write(fd, big + sent, (size_t)(BIG - sent));
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            if (is_reset_errno(errno))
                failed = 1;
            else
                fprintf(stderr, "B: write: %s\n", errname(errno));
            break;
        }
        if (w == 0)
            FAIL("B: write returned 0");
        sent += w;
    }
    if (failed)
        b_write_fails++;
    else if (sent == BIG)
        fprintf(stderr, "B: the whole response was sent despite the reset\n");
    close(fd);
    return NULL;
}

static void *b_client(void *unused)
{
    int fd = (int)CHECK_SYS(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    int cap = BUFCAP;
    CHECK_SYS(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &cap, sizeof cap));
    struct sockaddr_in a = local_addr(port);
    CHECK_SYS(connect(fd, (struct sockaddr *)&a, sizeof a));
    write_all(fd, "GET /big\n", 9);
    char buf[1000];
    if (read_full(fd, buf, sizeof buf) != sizeof buf || memcmp(buf, big, sizeof buf) != 0)
        FAIL("B: bad start of the response");
    sleep_ms(50); /* the server thread is blocked in write() by now */
    abortive_close(fd);
    return NULL;
}

/* ---------------- C: half-close ---------------- */

static int c_ok, c_server_saw_eof;

static void *c_server(void *unused)
{
    int fd = accept_one();
    if (!read_request(fd))
        FAIL("C: EOF before the request");
    char buf[64];
    ssize_t r = read_retry(fd, buf, sizeof buf);
    if (r == 0)
        c_server_saw_eof++;
    else
        fprintf(stderr, "C: read after the request: %zd %s\n", r, errname(errno));
    write_all(fd, "ok\n", 3);
    write_all(fd, big, HALF_PAYLOAD);
    close(fd);
    return NULL;
}

static void *c_client(void *unused)
{
    int fd = connect_local(port);
    write_all(fd, "GET /half\n", 10);
    CHECK_SYS(shutdown(fd, SHUT_WR));
    size_t n = 3 + HALF_PAYLOAD;
    char *buf = malloc(n + 1);
    CHECK(buf);
    size_t got = read_full(fd, buf, n + 1); /* n bytes, then EOF */
    if (got == n && memcmp(buf, "ok\n", 3) == 0 && memcmp(buf + 3, big, HALF_PAYLOAD) == 0)
        c_ok++;
    else
        fprintf(stderr, "C: client got %zu bytes\n", got);
    free(buf);
    close(fd);
    return NULL;
}

/* ---------------- D: reset before accept ---------------- */

static int d_ok;

static void *d_server(void *unused)
{
    wait_stage(1);
    sleep_ms(50); /* the RST has been processed */
    int fd;
    while ((fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC)) < 0 && errno == EINTR) {
    }
    if (fd < 0) {
        if (errno == ECONNABORTED)
            d_ok++;
        else
            fprintf(stderr, "D: accept: %s\n", errname(errno));
        return NULL;
    }
    char buf[16];
    errno = 0;
    ssize_t r = read_retry(fd, buf, sizeof buf);
    if (r == 0 || (r < 0 && errno == ECONNRESET))
        d_ok++;
    else
        fprintf(stderr, "D: read: %zd %s\n", r, errname(errno));
    close(fd);
    return NULL;
}

static void *d_client(void *unused)
{
    int fd = connect_local(port);
    abortive_close(fd);
    set_stage(1);
    return NULL;
}

static void run(void *(*server)(void *), void *(*client)(void *))
{
    for (it = 0; it < ITER; it++) {
        stage = 0;
        listen_fd = listen_local(16, &port);
        pthread_t s, c;
        CHECK_RC(pthread_create(&s, NULL, server, NULL));
        CHECK_RC(pthread_create(&c, NULL, client, NULL));
        CHECK_RC(pthread_join(c, NULL));
        CHECK_RC(pthread_join(s, NULL));
        close(listen_fd);
    }
}

int main(void)
{
    tp_setup(60);
    big = malloc(BIG);
    CHECK(big);
    uint64_t rng = rng_seed(7);
    for (size_t i = 0; i < BIG; i += 8) {
        uint64_t v = rng_next(&rng);
        memcpy(big + i, &v, 8);
    }

    run(a_server, a_client);
    printf("mid-request: reset seen by reader: %s\n", yesno(a_reset_seen == ITER));
    printf("mid-request: write after reset fails: %s\n", yesno(a_write_fails == ITER));
    run(b_server, b_client);
    printf("mid-response: blocked write fails after reset: %s\n", yesno(b_write_fails == ITER));
    run(c_server, c_client);
    printf("half-close: server saw EOF after the request: %s\n",
           yesno(c_server_saw_eof == ITER));
    printf("half-close response received: %s\n", yesno(c_ok == ITER));
    run(d_server, d_client);
    printf("reset before accept: reset or abort reported: %s\n", yesno(d_ok == ITER));
    return 0;
}
