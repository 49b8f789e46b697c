/*
 * epoll_http - an event-loop HTTP/1.1 keep-alive server: the practical
 * ceiling the other designs are measured against.
 *
 *   epoll_http PORT [LOOPS]       (LOOPS defaults to the number of CPUs)
 *
 * LOOPS threads each own a listening socket bound to PORT with SO_REUSEPORT
 * (the kernel spreads new connections over them) and an edge-triggered epoll
 * set. A loop accepts with nonblocking accept4() until EAGAIN; for each
 * ready connection it reads until EAGAIN into the connection's buffer,
 * answers every complete request into an output buffer, and writes it until
 * done or EAGAIN (then EPOLLOUT is armed until the output is written;
 * reading pauses while too much output is pending). Connections are closed on error, and on EOF or
 * "Connection: close" once their output is written. Same protocol work as the other servers (http_min.h).
 * SIGTERM/SIGINT print the number of requests served and exit.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "http_min.h"

#define MAX_LOOPS 1024
#define OUT_HIGH (64 * 1024) /* stop reading while this much output is pending */

struct conn {
    int fd;
    int closing;    /* "Connection: close" or EOF: close once flushed */
    int want_out;   /* EPOLLOUT is in the interest set */
    size_t inlen;
    char *out;      /* pending output: out[outoff, outlen) */
    size_t outlen, outoff, outcap;
    char in[HTTP_REQ_MAX];
};

struct loop {
    pthread_t tid;
    int lfd, ep;
    long served; /* written only by this loop; read at exit */
    char pad[64];
};

static struct loop loops[MAX_LOOPS];
static int nloops;
static int listen_port;
static char listen_tag; /* its address marks the listening socket in epoll data */

static long total_requests(void)
{
    long sum = 0;
    for (int i = 0; i < nloops; i++)
        sum += __atomic_load_n(&loops[i].served, __ATOMIC_RELAXED);
    return sum;
}

static void conn_close(struct conn *c)
{
    close(c->fd); /* also removes it from the epoll set */
    free(c->out);
    free(c);
}

static int out_append(struct conn *c, const char *p, size_t len)
{
    if (c->outoff > 0 && c->outoff == c->outlen)
        c->outoff = c->outlen = 0;
    if (c->outlen + len > c->outcap) {
        size_t ncap = c->outcap ? c->outcap : 1024;
        while (ncap < c->outlen + len)
            ncap *= 2;
        char *n = realloc(c->out, ncap);
        if (n == NULL)
            return -1;
        c->out = n;
        c->outcap = ncap;
    }
    memcpy(c->out + c->outlen, p, len);
    c->outlen += len;
    return 0;
}

/* Writes pending output until done or EAGAIN. -1 on a fatal error. */
static int flush_out(struct conn *c)
{
    while (c->outoff < c->outlen) {
        ssize_t n = write(c->fd, c->out + c->outoff, c->outlen - c->outoff);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -1;
        }
        c->outoff += (size_t)n;
    }
    c->outoff = c->outlen = 0;
    return 0;
}

/* Answers every complete request in c->in. -1 when the connection must go. */
static int process_input(struct loop *l, struct conn *c)
{
    size_t used = 0;
    while (!c->closing) {
        size_t rlen = http_parse(c->in + used, c->inlen - used, &c->closing);
        if (rlen == 0)
            break;
        used += rlen;
        l->served++;
        int rc = c->closing ? out_append(c, HTTP_RESP_CLOSE, HTTP_RESP_CLOSE_LEN)
                            : out_append(c, HTTP_RESP_KEEP, HTTP_RESP_KEEP_LEN);
        if (rc < 0)
            return -1;
    }
    if (used == 0 && c->inlen == sizeof c->in)
        return -1; /* header block larger than HTTP_REQ_MAX */
    memmove(c->in, c->in + used, c->inlen - used);
    c->inlen -= used;
    return 0;
}

/* Does all the work an edge (EPOLLIN or EPOLLOUT) allows on one connection. */
static void conn_service(struct loop *l, struct conn *c)
{
    int eof = 0;
    if (flush_out(c) < 0)
        goto drop;
    while (!c->closing && !eof && c->outlen - c->outoff < OUT_HIGH) {
        ssize_t n = read(c->fd, c->in + c->inlen, sizeof c->in - c->inlen);
        if (n > 0) {
            c->inlen += (size_t)n;
            if (process_input(l, c) < 0 || flush_out(c) < 0)
                goto drop;
        } else if (n == 0) {
            eof = 1;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        } else {
            goto drop;
        }
    }
    /* EOF: the peer sent all it will; close once its answers are out. */
    if (eof)
        c->closing = 1;
    if (c->closing && c->outoff == c->outlen)
        goto drop;
    /* Ask for EPOLLOUT only while output is stuck: an always-armed EPOLLOUT
     * would add a wakeup for every acknowledged response. */
    int pending = c->outoff < c->outlen;
    if (pending != c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET | (pending ? EPOLLOUT : 0),
                                 .data.ptr = c};
        if (epoll_ctl(l->ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
            goto drop;
        c->want_out = pending;
    }
    return; /* the next EPOLLIN (or EPOLLOUT) edge brings us back */
drop:
    conn_close(c);
}

static void accept_all(struct loop *l, int *accept_blocked)
{
    *accept_blocked = 0;
    for (;;) {
        int fd = accept4(l->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                *accept_blocked = 1; /* retry after a 10 ms epoll_wait timeout */
            return;                  /* EAGAIN: drained until the next edge */
        }
        set_nodelay(fd);
        struct conn *c = calloc(1, sizeof *c);
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->fd = fd;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = c};
        if (epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            conn_close(c);
            continue;
        }
        /* Data that arrived before EPOLL_CTL_ADD is reported by the first edge. */
    }
}

static void *loop_main(void *arg)
{
    struct loop *l = arg;
    struct epoll_event evs[256];
    int accept_blocked = 0;
    for (;;) {
        int n = epoll_wait(l->ep, evs, 256, accept_blocked ? 10 : -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("epoll_wait");
            exit(1);
        }
        if (accept_blocked)
            accept_all(l, &accept_blocked);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == &listen_tag)
                accept_all(l, &accept_blocked);
            else
                conn_service(l, evs[i].data.ptr);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    static const char usage[] = "epoll_http PORT [LOOPS]";
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s\n", usage);
        return 2;
    }
    listen_port = parse_port(argv[1], usage);
    nloops = get_nprocs();
    if (argc == 3) {
        char *end;
        long v = strtol(argv[2], &end, 10);
        if (*argv[2] == '\0' || *end != '\0' || v < 1 || v > MAX_LOOPS) {
            fprintf(stderr, "usage: %s  (1 <= LOOPS <= %d)\n", usage, MAX_LOOPS);
            return 2;
        }
        nloops = (int)v;
    }
    if (nloops < 1)
        nloops = 1;
    if (nloops > MAX_LOOPS)
        nloops = MAX_LOOPS;
    install_exit_report("epoll_http", total_requests);

    for (int i = 0; i < nloops; i++) {
        struct loop *l = &loops[i];
        l->lfd = listen_tcp(listen_port, 1, 1);
        l->ep = epoll_create1(EPOLL_CLOEXEC);
        if (l->ep < 0) {
            perror("epoll_create1");
            return 1;
        }
        struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.ptr = &listen_tag};
        if (epoll_ctl(l->ep, EPOLL_CTL_ADD, l->lfd, &ev) < 0) {
            perror("epoll_ctl");
            return 1;
        }
    }
    for (int i = 1; i < nloops; i++) {
        int err = pthread_create(&loops[i].tid, NULL, loop_main, &loops[i]);
        if (err != 0) {
            fprintf(stderr, "epoll_http: pthread_create: %s\n", strerror(err));
            return 1;
        }
    }
    loop_main(&loops[0]); /* the main thread is loop 0 */
    return 0;
}
