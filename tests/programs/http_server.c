/* A small thread-per-connection HTTP/1.1 keep-alive server and client
 * threads doing requests: sequential keep-alive requests, pipelined
 * requests in a single write, requests split into many small writes with
 * pauses (headers byte by byte, body sent later), 404/405/400 paths, and
 * "Connection: close". Prints the counts of response status codes, a
 * checksum over all response bodies, and how connections ended. */
#include "common.h"
#include <ctype.h>
#include <stdatomic.h>
#include <strings.h>

#define NCLIENTS 16
#define NCONNS (NCLIENTS + 1) /* + one connection sending garbage */

/* ---------------- server ---------------- */

static int listen_fd;
static pthread_t server_threads[NCONNS];

static void respond(int fd, int code, const char *body, size_t blen, int keep)
{
    const char *reason = code == 200   ? "OK"
                         : code == 400 ? "Bad Request"
                         : code == 404 ? "Not Found"
                         : code == 405 ? "Method Not Allowed"
                                       : "Error";
    char hdr[256];
    int n = snprintf(hdr, sizeof hdr,
                     "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n"
                     "Content-Type: text/plain\r\nConnection: %s\r\n\r\n",
                     code, reason, blen, keep ? "keep-alive" : "close");
    write_all(fd, hdr, (size_t)n);
    if (blen)
        write_all(fd, body, blen);
}

/* Find a header value (case-insensitive name) within [h, end). */
static const char *find_header(const char *h, const char *end, const char *name,
                               size_t *vlen)
{
    size_t nl = strlen(name);
    const char *p = h;
    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (!eol)
            eol = end;
        if ((size_t)(eol - p) > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
            const char *v = p + nl + 1;
            while (v < eol && *v == ' ')
                v++;
            *vlen = (size_t)(eol - v);
            return v;
        }
        p = eol + 2;
    }
    return NULL;
}

static void *serve(void *arg)
{
    int fd = (int)(long)arg;
    size_t cap = 16384, len = 0;
    char *buf = malloc(cap);
    CHECK(buf);
    for (;;) {
        /* Do we have a complete request head? */
        char *hend = len ? memmem(buf, len, "\r\n\r\n", 4) : NULL;
        if (!hend) {
            if (len == cap)
                FAIL("request head too large");
            ssize_t r = read(fd, buf + len, cap - len);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0)
                FAIL("server read: %s", errname(errno));
            if (r == 0)
                break; /* client closed (maybe mid-request: just close) */
            len += (size_t)r;
            continue;
        }
        size_t head_len = (size_t)(hend - buf) + 4;
        /* request line */
        char *line_end = memmem(buf, head_len, "\r\n", 2);
        char method[16], path[256], version[16];
        char line[512];
        size_t ll = (size_t)(line_end - buf);
        if (ll >= sizeof line)
            ll = sizeof line - 1;
        memcpy(line, buf, ll);
        line[ll] = 0;
        if (sscanf(line, "%15s %255s %15s", method, path, version) != 3 ||
            strncmp(version, "HTTP/1.", 7) != 0) {
            static const char b[] = "bad request\n";
            respond(fd, 400, b, sizeof b - 1, 0);
            break;
        }
        size_t clen = 0, vlen;
        const char *v = find_header(line_end + 2, hend + 2, "Content-Length", &vlen);
        if (v)
            clen = strtoul(v, NULL, 10);
        int keep = 1;
        v = find_header(line_end + 2, hend + 2, "Connection", &vlen);
        if (v && vlen == 5 && strncasecmp(v, "close", 5) == 0)
            keep = 0;
        /* wait for the whole body */
        if (head_len + clen > cap)
            FAIL("request too large");
        while (len < head_len + clen) {
            ssize_t r = read(fd, buf + len, cap - len);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                FAIL("server read body: %zd %s", r, errname(errno));
            len += (size_t)r;
        }
        const char *body = buf + head_len;
        char out[512];
        if (strcmp(method, "GET") == 0 && strcmp(path, "/hello") == 0) {
            respond(fd, 200, "hello world\n", 12, keep);
        } else if (strcmp(method, "GET") == 0 && strncmp(path, "/echo/", 6) == 0) {
            respond(fd, 200, path + 6, strlen(path + 6), keep);
        } else if (strcmp(method, "POST") == 0 && strcmp(path, "/sum") == 0) {
            unsigned long s = 0;
            for (size_t i = 0; i < clen; i++)
                s += (unsigned char)body[i];
            int n = snprintf(out, sizeof out, "%lu\n", s);
            respond(fd, 200, out, (size_t)n, keep);
        } else if (strcmp(method, "GET") == 0 || strcmp(method, "POST") == 0) {
            respond(fd, 404, "not found\n", 10, keep);
        } else {
            respond(fd, 405, "method not allowed\n", 19, keep);
        }
        /* consume the request, keep any pipelined bytes after it */
        size_t used = head_len + clen;
        memmove(buf, buf + used, len - used);
        len -= used;
        if (!keep)
            break;
    }
    close(fd);
    free(buf);
    return NULL;
}

static void *acceptor(void *unused)
{
    for (int i = 0; i < NCONNS; i++) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            FAIL("accept: %s", errname(errno));
        CHECK_RC(create_thread(&server_threads[i], 256 * 1024, serve, (void *)(long)fd));
    }
    return NULL;
}

/* ---------------- client ---------------- */

static int port;
static atomic_int status_count[600];
static atomic_int eof_after_close, responses;
static uint64_t body_sums[NCONNS];

struct conn {
    int fd;
    char buf[8192];
    size_t len;
    uint64_t sum;
};

/* Read one response; returns its status code; the body goes into the sum. */
static int read_response(struct conn *c, int *server_keep)
{
    char *hend;
    while (!(hend = c->len ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL)) {
        ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            FAIL("client read head: %zd %s", r, errname(errno));
        c->len += (size_t)r;
    }
    size_t head_len = (size_t)(hend - c->buf) + 4;
    int code = 0;
    if (sscanf(c->buf, "HTTP/1.1 %d ", &code) != 1 || code < 100 || code >= 600)
        FAIL("bad status line");
    size_t vlen;
    const char *v = find_header(c->buf, hend + 2, "Content-Length", &vlen);
    if (!v)
        FAIL("no content-length");
    size_t clen = strtoul(v, NULL, 10);
    v = find_header(c->buf, hend + 2, "Connection", &vlen);
    *server_keep = !(v && vlen == 5 && strncmp(v, "close", 5) == 0);
    while (c->len < head_len + clen) {
        ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            FAIL("client read body: %zd %s", r, errname(errno));
        c->len += (size_t)r;
    }
    char tag[16];
    int n = snprintf(tag, sizeof tag, "%d:", code);
    c->sum = fnv1a(c->sum, tag, (size_t)n);
    c->sum = fnv1a(c->sum, c->buf + head_len, clen);
    size_t used = head_len + clen;
    memmove(c->buf, c->buf + used, c->len - used);
    c->len -= used;
    atomic_fetch_add(&status_count[code], 1);
    atomic_fetch_add(&responses, 1);
    return code;
}

static void expect(struct conn *c, int want)
{
    int keep;
    int code = read_response(c, &keep);
    if (code != want)
        FAIL("status %d, expected %d", code, want);
    if (!keep)
        FAIL("server closed unexpectedly");
}

static void send_str(struct conn *c, const char *s) { write_all(c->fd, s, strlen(s)); }

static void *client(void *arg)
{
    long id = (long)arg;
    struct conn *c = calloc(1, sizeof *c);
    CHECK(c);
    c->fd = connect_local(port);
    c->sum = FNV_INIT;
    char req[1024];

    /* 1. sequential keep-alive requests */
    for (int i = 0; i < 5; i++) {
        send_str(c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
        expect(c, 200);
    }
    /* 2. three pipelined requests in one write */
    snprintf(req, sizeof req,
             "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
             "GET /echo/client-%ld HTTP/1.1\r\nHost: x\r\n\r\n"
             "POST /sum HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello %05ld",
             id, id);
    send_str(c, req);
    expect(c, 200);
    expect(c, 200);
    expect(c, 200);
    /* 3. a request split into single bytes, with pauses now and then */
    snprintf(req, sizeof req, "GET /echo/split-%ld HTTP/1.1\r\nHost: x\r\n\r\n", id);
    for (size_t i = 0; req[i]; i++) {
        write_all(c->fd, req + i, 1);
        if (i % 16 == 0)
            sleep_ms(1);
    }
    expect(c, 200);
    /* 4. head first, body 20 ms later; header name in lower case */
    send_str(c, "POST /sum HTTP/1.1\r\ncontent-length: 26\r\n\r\n");
    sleep_ms(20);
    send_str(c, "abcdefghijklm");
    sleep_ms(5);
    send_str(c, "nopqrstuvwxyz");
    expect(c, 200);
    /* 5. pipelined, with the split falling inside the second request */
    send_str(c, "GET /missing HTTP/1.1\r\n\r\nPUT /hello HTT");
    sleep_ms(10);
    send_str(c, "P/1.1\r\nContent-Length: 0\r\n\r\n");
    expect(c, 404);
    expect(c, 405);
    /* 6. Connection: close -> response, then EOF */
    send_str(c, "GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n");
    int keep;
    if (read_response(c, &keep) != 200 || keep)
        FAIL("close request");
    char ch;
    ssize_t r = read(c->fd, &ch, 1);
    if (r == 0 && c->len == 0)
        atomic_fetch_add(&eof_after_close, 1);
    close(c->fd);
    body_sums[id] = c->sum;
    free(c);
    return NULL;
}

static void *bad_client(void *arg)
{
    struct conn *c = calloc(1, sizeof *c);
    CHECK(c);
    c->fd = connect_local(port);
    c->sum = FNV_INIT;
    send_str(c, "BOGUS\r\n\r\n");
    int keep;
    if (read_response(c, &keep) != 400 || keep)
        FAIL("bad request not answered with 400 + close");
    char ch;
    if (read(c->fd, &ch, 1) == 0)
        atomic_fetch_add(&eof_after_close, 1);
    close(c->fd);
    body_sums[NCLIENTS] = c->sum;
    free(c);
    return NULL;
}

int main(void)
{
    tp_setup(60);
    listen_fd = listen_local(64, &port);
    pthread_t acc, cl[NCONNS];
    CHECK_RC(pthread_create(&acc, NULL, acceptor, NULL));
    for (long i = 0; i < NCLIENTS; i++)
        CHECK_RC(create_thread(&cl[i], 256 * 1024, client, (void *)i));
    CHECK_RC(create_thread(&cl[NCLIENTS], 256 * 1024, bad_client, NULL));
    for (int i = 0; i < NCONNS; i++)
        CHECK_RC(pthread_join(cl[i], NULL));
    CHECK_RC(pthread_join(acc, NULL));
    for (int i = 0; i < NCONNS; i++)
        CHECK_RC(pthread_join(server_threads[i], NULL));
    close(listen_fd);

    uint64_t sum = FNV_INIT;
    for (int i = 0; i < NCONNS; i++)
        sum = fnv1a(sum, &body_sums[i], sizeof body_sums[i]);
    printf("connections: %d\n", NCONNS);
    printf("responses: %d\n", atomic_load(&responses));
    for (int code = 100; code < 600; code++)
        if (atomic_load(&status_count[code]))
            printf("status %d: %d\n", code, atomic_load(&status_count[code]));
    printf("eof after Connection: close / 400: %d\n", atomic_load(&eof_after_close));
    printf("body checksum: %016llx\n", (unsigned long long)sum);
    printf("http_server: ok\n");
    return 0;
}
