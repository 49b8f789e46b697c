/* Shared helpers for the conformance programs in tests/programs/.
 *
 * These are ordinary pthread programs: they know nothing about fibershim.
 * Every program prints only facts that are identical under kernel threads
 * and under fibers (results, checksums, errno names, yes/no for timing
 * bounds), never timings, addresses or thread ids.  On any unexpected result
 * a program prints "FAIL file:line ..." on stdout (and stderr) and exits 1.
 */
#ifndef FIBERSHIM_TEST_PROGRAMS_COMMON_H
#define FIBERSHIM_TEST_PROGRAMS_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define TP_UNUSED __attribute__((unused))

/* Name of an errno value ("EAGAIN"), or "E<n>" for unknown ones, "0" for 0. */
static TP_UNUSED const char *errname(int e)
{
    static __thread char buf[32];
    if (e == 0)
        return "0";
    const char *n = strerrorname_np(e);
    if (n)
        return n;
    snprintf(buf, sizeof buf, "E%d", e);
    return buf;
}

static TP_UNUSED void tp_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));

static TP_UNUSED void tp_fail(const char *file, int line, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* Flush what was printed so far, then the failure line, then leave
     * without running atexit handlers or joining anything. */
    fflush(stdout);
    printf("FAIL %s:%d %s\n", file, line, msg);
    fflush(stdout);
    fprintf(stderr, "FAIL %s:%d %s\n", file, line, msg);
    _exit(1);
}

#define FAIL(...) tp_fail(__FILE__, __LINE__, __VA_ARGS__)

/* Boolean condition; reports errno too since most conditions are syscalls. */
#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            int e_ = errno;                                                    \
            FAIL("check failed: %s (errno %s)", #cond, errname(e_));           \
        }                                                                      \
    } while (0)

/* Syscall-style: fails on a negative result, reporting errno. Yields value. */
#define CHECK_SYS(expr)                                                        \
    ({                                                                         \
        long r_ = (long)(expr);                                                \
        if (r_ < 0) {                                                          \
            int e_ = errno;                                                    \
            FAIL("%s failed: %s", #expr, errname(e_));                         \
        }                                                                      \
        r_;                                                                    \
    })

/* pthread-style: the call returns an error number, 0 on success. */
#define CHECK_RC(expr)                                                         \
    do {                                                                       \
        int rc_ = (expr);                                                      \
        if (rc_ != 0)                                                          \
            FAIL("%s returned %s", #expr, errname(rc_));                       \
    } while (0)

/* pthread-style call expected to return a specific error number. */
#define EXPECT_RC(expr, want)                                                  \
    do {                                                                       \
        int rc_ = (expr);                                                      \
        if (rc_ != (want))                                                     \
            FAIL("%s returned %s, expected %s", #expr, errname(rc_),           \
                 errname(want));                                               \
    } while (0)

/* Syscall-style call expected to return -1 with a specific errno. */
#define EXPECT_ERRNO(expr, want)                                               \
    do {                                                                       \
        errno = 0;                                                             \
        long r_ = (long)(expr);                                                \
        int e_ = errno;                                                        \
        if (r_ != -1 || e_ != (want))                                          \
            FAIL("%s returned %ld errno %s, expected -1 %s", #expr, r_,        \
                 errname(e_), errname(want));                                  \
    } while (0)

static TP_UNUSED const char *yesno(int b) { return b ? "yes" : "no"; }

/* ---- time ---- */

static TP_UNUSED int64_t ts_to_ns(struct timespec t)
{
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static TP_UNUSED struct timespec ns_to_ts(int64_t ns)
{
    struct timespec t = {(time_t)(ns / 1000000000LL), (long)(ns % 1000000000LL)};
    return t;
}

static TP_UNUSED int64_t clock_ns(clockid_t c)
{
    struct timespec t;
    if (clock_gettime(c, &t) != 0)
        FAIL("clock_gettime: %s", errname(errno));
    return ts_to_ns(t);
}

static TP_UNUSED int64_t now_ns(void) { return clock_ns(CLOCK_MONOTONIC); }

/* Milliseconds elapsed since a now_ns() value, as a double. */
static TP_UNUSED double ms_since(int64_t start_ns)
{
    return (double)(now_ns() - start_ns) / 1e6;
}

/* Absolute timespec 'ms' milliseconds from now on clock c. */
static TP_UNUSED struct timespec deadline_ms(clockid_t c, int64_t ms)
{
    return ns_to_ts(clock_ns(c) + ms * 1000000LL);
}

static TP_UNUSED void sleep_ms(int64_t ms)
{
    struct timespec t = ns_to_ts(ms * 1000000LL);
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

/* Generous bound for "how late may a wakeup be" on a 2-core noisy VM. */
#define LATE_TOLERANCE_MS 500.0

/* ---- setup ---- */

static TP_UNUSED void tp_alarm_handler(int sig)
{
    static const char m[] = "FAIL timeout: program did not finish in time\n";
    (void)sig;
    (void)!write(1, m, sizeof m - 1);
    (void)!write(2, m, sizeof m - 1);
    _exit(1);
}

/* Call first thing in main(): bounded run time, no SIGPIPE. */
static TP_UNUSED void tp_setup(unsigned seconds)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = tp_alarm_handler;
    sigaction(SIGALRM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    alarm(seconds);
}

/* Raise the soft open-file limit to the hard limit; returns the new soft. */
static TP_UNUSED rlim_t raise_nofile(void)
{
    struct rlimit rl;
    CHECK_SYS(getrlimit(RLIMIT_NOFILE, &rl));
    rl.rlim_cur = rl.rlim_max;
    CHECK_SYS(setrlimit(RLIMIT_NOFILE, &rl));
    return rl.rlim_cur;
}

/* ---- sockets ---- */

/* TCP socket listening on 127.0.0.1, ephemeral port; *port gets the port. */
static TP_UNUSED int listen_local(int backlog, int *port)
{
    int fd = (int)CHECK_SYS(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    int one = 1;
    CHECK_SYS(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    CHECK_SYS(bind(fd, (struct sockaddr *)&a, sizeof a));
    CHECK_SYS(listen(fd, backlog));
    socklen_t len = sizeof a;
    CHECK_SYS(getsockname(fd, (struct sockaddr *)&a, &len));
    *port = ntohs(a.sin_port);
    return fd;
}

static TP_UNUSED struct sockaddr_in local_addr(int port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    return a;
}

/* Blocking TCP connect to 127.0.0.1:port; returns the fd or fails. */
static TP_UNUSED int connect_local(int port)
{
    int fd = (int)CHECK_SYS(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    struct sockaddr_in a = local_addr(port);
    CHECK_SYS(connect(fd, (struct sockaddr *)&a, sizeof a));
    return fd;
}

/* A connected TCP pair over loopback: fds[0] client side, fds[1] server. */
static TP_UNUSED void tcp_pair(int fds[2])
{
    int port;
    int l = listen_local(1, &port);
    fds[0] = connect_local(port);
    fds[1] = (int)CHECK_SYS(accept4(l, NULL, NULL, SOCK_CLOEXEC));
    close(l);
}

/* Write exactly n bytes (handles partial writes); fails on error. */
static TP_UNUSED void write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            FAIL("write_all: %zd %s", w, errname(errno));
        p += w;
        n -= (size_t)w;
    }
}

/* Read exactly n bytes; returns n, or the short count on EOF; fails on error. */
static TP_UNUSED size_t read_full(int fd, void *buf, size_t n)
{
    char *p = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            FAIL("read_full: %s", errname(errno));
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return got;
}

/* ---- latency probes ---- */

/* A client that measures a server while something else holds it up:
 * connects to c->port, sends "E" (the servers' echo command), then does
 * `rounds` round trips of 8 bytes, gap_ms apart. */
struct echo_probe {
    int id, port;
    int rounds, gap_ms;
    int64_t worst_ns; /* slowest round trip */
    int64_t done_at;  /* now_ns() when it finished */
    int rounds_ok;    /* echoes that matched */
};

static TP_UNUSED void *echo_probe_run(void *p)
{
    struct echo_probe *c = p;
    int fd = connect_local(c->port);
    write_all(fd, "E", 1);
    for (int i = 0; i < c->rounds; i++) {
        char req[8], resp[8];
        snprintf(req, sizeof req, "%02u:%04u", (unsigned)c->id % 100u, (unsigned)i % 10000u);
        int64_t t = now_ns();
        write_all(fd, req, sizeof req);
        if (read_full(fd, resp, sizeof resp) != sizeof resp)
            FAIL("echo probe %d: short echo", c->id);
        int64_t dt = now_ns() - t;
        if (dt > c->worst_ns)
            c->worst_ns = dt;
        c->rounds_ok += memcmp(req, resp, sizeof req) == 0;
        sleep_ms(c->gap_ms);
    }
    close(fd);
    c->done_at = now_ns();
    return NULL;
}

/* ---- misc ---- */

/* FNV-1a 64-bit, incremental. Start with FNV_INIT. */
#define FNV_INIT 0xcbf29ce484222325ULL
static TP_UNUSED uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* Small deterministic PRNG (xorshift64*), per-thread state. */
static TP_UNUSED uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static TP_UNUSED uint64_t rng_seed(uint64_t v)
{
    return (v + 1) * 0x9E3779B97F4A7C15ULL | 1;
}

/* pthread_create with a given stack size (0 = default); returns error. */
static TP_UNUSED int create_thread(pthread_t *t, size_t stack, void *(*fn)(void *),
                                   void *arg)
{
    pthread_attr_t a;
    int rc = pthread_attr_init(&a);
    if (rc)
        return rc;
    if (stack)
        rc = pthread_attr_setstacksize(&a, stack);
    if (!rc)
        rc = pthread_create(t, &a, fn, arg);
    pthread_attr_destroy(&a);
    return rc;
}

/* read(2) made with an inline syscall instruction, as libraries with their
 * own system-call stubs make it (liburing, some runtimes): no wrapper, the
 * shim's included, can see it, so it blocks whatever kernel thread runs
 * it. Returns the raw result (-errno on failure). */
static TP_UNUSED long inline_read(int fd, void *buf, size_t n)
{
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "0"((long)SYS_read), "D"((long)fd), "S"(buf), "d"(n)
                     : "rcx", "r11", "memory");
    return ret;
}

#endif
