/*
 * http_min.h - what the C benchmark servers (threads_http, pool_http,
 * epoll_http) share: the minimal HTTP/1.1 request handling, the listening
 * socket, a blocking write loop and the exit-on-signal report.
 *
 * All servers do the same protocol work per request so that the benchmark
 * compares concurrency models, not parsers: find the end of the header block
 * ("\r\n\r\n"), look for "Connection: close", answer with a fixed 13-byte
 * body. Request bodies are not supported (wrk sends GET without a body).
 * go_http/main.go does the same work in Go.
 */
#ifndef BENCH_HTTP_MIN_H
#define BENCH_HTTP_MIN_H

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define HTTP_REQ_MAX 8192 /* largest accepted request header block */

static const char HTTP_RESP_KEEP[] =
    "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\n"
    "Hello, World!";
static const char HTTP_RESP_CLOSE[] =
    "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n"
    "Connection: close\r\n\r\nHello, World!";
#define HTTP_RESP_KEEP_LEN (sizeof HTTP_RESP_KEEP - 1)
#define HTTP_RESP_CLOSE_LEN (sizeof HTTP_RESP_CLOSE - 1)

/* Does the header block [p, p+len) carry "Connection: close"? */
static inline int http_wants_close(const char *p, size_t len)
{
    static const char name[] = "\r\nconnection:";
    const size_t nlen = sizeof name - 1;
    for (size_t i = 0; i + nlen <= len; i++) {
        if (p[i] != '\r' || strncasecmp(p + i, name, nlen) != 0)
            continue;
        size_t j = i + nlen;
        while (j < len && (p[j] == ' ' || p[j] == '\t'))
            j++;
        if (j + 5 <= len && strncasecmp(p + j, "close", 5) == 0)
            return 1;
    }
    return 0;
}

/*
 * Looks for one complete request at the start of [buf, buf+len).
 * Returns its length (headers included) or 0 when more bytes are needed.
 * *close is set when the client asked for "Connection: close".
 */
static inline size_t http_parse(const char *buf, size_t len, int *close)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (end == NULL)
        return 0;
    size_t n = (size_t)(end - buf) + 4;
    *close = http_wants_close(buf, n - 2);
    return n;
}

/* Writes all of [buf, buf+len) to a blocking socket. 0 on success, -1 on error. */
static inline int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Parses a TCP port argument; exits with a usage line when it is not one. */
static inline int parse_port(const char *s, const char *usage)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 1 || v > 65535) {
        fprintf(stderr, "usage: %s\n", usage);
        exit(2);
    }
    return (int)v;
}

/*
 * Creates a listening TCP socket on 0.0.0.0:port with SO_REUSEADDR (and
 * SO_REUSEPORT when asked), backlog 65535 (the kernel caps it at
 * net.core.somaxconn). Exits on failure: a benchmark server that cannot
 * listen has nothing else to do.
 */
static inline int listen_tcp(int port, int reuseport, int nonblock)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) {
        perror("socket");
        exit(1);
    }
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)) {
        perror("setsockopt");
        exit(1);
    }
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_ANY);
    sa.sin_port = htons((unsigned short)port);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        perror("bind");
        exit(1);
    }
    if (listen(fd, 65535) < 0) {
        perror("listen");
        exit(1);
    }
    return fd;
}

/*
 * Go sets TCP_NODELAY on every connection; the C servers do the same so all
 * servers put responses on the wire the same way.
 */
static inline void set_nodelay(int fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/*
 * SIGTERM/SIGINT: print "<name>: served N requests" to stderr and exit.
 * Done inside the handler with async-signal-safe calls only, so it works
 * whichever thread (or fiber, under the shim) the signal lands on; the
 * counter is read with a relaxed atomic load (a torn or slightly stale
 * total at exit is harmless).
 */
/* Serves one connection with blocking I/O until EOF, error or
 * "Connection: close", answering every complete request in the buffer
 * (pipelining); count(n) is told how many requests each batch served.
 * Shared by threads_http and pool_http, so that both do identical work. */
static inline void http_serve_blocking(int fd, void (*count)(long))
{
    char in[HTTP_REQ_MAX];
    char out[64 * HTTP_RESP_CLOSE_LEN];
    size_t have = 0;
    int closing = 0;

    while (!closing) {
        ssize_t n = read(fd, in + have, sizeof in - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        have += (size_t)n;

        size_t used = 0, olen = 0;
        long served = 0;
        int failed = 0;
        for (;;) {
            size_t rlen = http_parse(in + used, have - used, &closing);
            if (rlen == 0)
                break;
            used += rlen;
            served++;
            if (olen + HTTP_RESP_CLOSE_LEN > sizeof out) {
                if (write_all(fd, out, olen) < 0) {
                    failed = 1;
                    break;
                }
                olen = 0;
            }
            const char *resp = closing ? HTTP_RESP_CLOSE : HTTP_RESP_KEEP;
            size_t len = closing ? HTTP_RESP_CLOSE_LEN : HTTP_RESP_KEEP_LEN;
            memcpy(out + olen, resp, len);
            olen += len;
            if (closing)
                break;
        }
        if (!failed && olen > 0 && write_all(fd, out, olen) < 0)
            failed = 1;
        if (served > 0)
            count(served);
        if (failed)
            break;
        if (used == 0 && have == sizeof in)
            break; /* header block larger than HTTP_REQ_MAX */
        memmove(in, in + used, have - used);
        have -= used;
    }
    close(fd);
}

static long (*exit_report_total)(void);
static const char *exit_report_name;

static void exit_report_handler(int sig)
{
    (void)sig;
    char num[24];
    char *p = num + sizeof num;
    long v = exit_report_total ? exit_report_total() : 0;
    unsigned long u = v < 0 ? 0 : (unsigned long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    ssize_t r = write(2, exit_report_name, strlen(exit_report_name));
    r = write(2, ": served ", 9);
    r = write(2, p, (size_t)(num + sizeof num - p));
    r = write(2, " requests\n", 10);
    (void)r;
    _exit(0);
}

static inline void install_exit_report(const char *name, long (*total)(void))
{
    exit_report_name = name;
    exit_report_total = total;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = exit_report_handler;
    sigfillset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* Peers that vanish mid-response give EPIPE from write(), not a signal. */
    signal(SIGPIPE, SIG_IGN);
}

#endif /* BENCH_HTTP_MIN_H */
