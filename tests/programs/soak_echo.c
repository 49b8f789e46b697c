/* Data-integrity soak: an echo server (thread per connection, 64 KiB stacks)
 * and 1,000 client threads (64 KiB stacks), each on its own connection,
 * sending random-sized messages (1 B .. 64 KiB, contents and sizes from a
 * per-client seeded PRNG) for a bounded time (20 s; SOAK_SECONDS overrides).
 *
 * Every client checks that each echoed message equals what it sent, in
 * order. One client in 20 resets its connection mid-message (SO_LINGER
 * {1,0}, then close) now and then, and reconnects; the server thread of a
 * reset connection must see ECONNRESET (read) or EPIPE/ECONNRESET (write)
 * and end quietly. A connection starts with a header (client id,
 * generation). At the end a client half-closes its last connection and reads
 * EOF (nothing duplicated); the server records the byte count and checksum
 * it received on each connection that ended with EOF, which must equal what
 * the client sent on it (nothing lost).
 *
 * Output: only facts independent of timing (no byte or message counts). */
#include "common.h"

#define NCLIENTS 1000
#define STACK (64 * 1024)
#define MAXMSG (64 * 1024)
#define RESET_EVERY 20 /* clients with id % RESET_EVERY == 3 reset */
#define HDR_MAGIC 0x736f616bU

static int port, listen_fd;
static int64_t deadline_ns;

/* ---------------- server ---------------- */

struct final_rec {
    uint32_t gen;
    int done;
    uint64_t bytes, sum;
};

static pthread_mutex_t smu = PTHREAD_MUTEX_INITIALIZER;
static struct final_rec server_final[NCLIENTS]; /* connections that ended with EOF */
static long server_resets;                      /* connections that ended in a reset */
static long server_conns;
static int server_running;
static int stopping;
static pthread_cond_t scv = PTHREAD_COND_INITIALIZER;

static int is_reset_errno(int e) { return e == ECONNRESET || e == EPIPE; }

static void *serve(void *arg)
{
    int fd = (int)(long)arg;
    char *buf = malloc(16384);
    CHECK(buf);
    uint32_t hdr[3];
    int reset = 0;
    uint64_t bytes = 0, sum = FNV_INIT;
    size_t got = 0;
    /* header: magic, client id, generation (a reset may cut it short) */
    while (got < sizeof hdr) {
        ssize_t r = read(fd, (char *)hdr + got, sizeof hdr - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && is_reset_errno(errno)) {
            reset = 1;
            break;
        }
        if (r <= 0)
            FAIL("server: header read %zd %s", r, errname(errno));
        got += (size_t)r;
    }
    if (!reset && (hdr[0] != HDR_MAGIC || hdr[1] >= NCLIENTS))
        FAIL("server: bad header");
    while (!reset) {
        ssize_t r = read(fd, buf, 16384);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && is_reset_errno(errno)) {
            reset = 1;
            break;
        }
        if (r < 0)
            FAIL("server read: %s", errname(errno));
        if (r == 0)
            break;
        bytes += (uint64_t)r;
        sum = fnv1a(sum, buf, (size_t)r);
        for (ssize_t off = 0; off < r;) {
            ssize_t w = write(fd, buf + off, (size_t)(r - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0 && is_reset_errno(errno)) {
                reset = 1;
                break;
            }
            if (w <= 0)
                FAIL("server write: %zd %s", w, errname(errno));
            off += w;
        }
    }
    close(fd);
    free(buf);
    pthread_mutex_lock(&smu);
    if (reset) {
        server_resets++;
    } else {
        struct final_rec *f = &server_final[hdr[1]];
        if (f->done)
            FAIL("server: two connections of client %u ended with EOF", hdr[1]);
        f->done = 1;
        f->gen = hdr[2];
        f->bytes = bytes;
        f->sum = sum;
    }
    server_running--;
    pthread_cond_broadcast(&scv);
    pthread_mutex_unlock(&smu);
    return NULL;
}

static void *acceptor(void *unused)
{
    pthread_attr_t a;
    CHECK_RC(pthread_attr_init(&a));
    CHECK_RC(pthread_attr_setstacksize(&a, STACK));
    CHECK_RC(pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED));
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0 && (errno == EINTR || errno == ECONNABORTED))
            continue;
        if (fd < 0)
            FAIL("accept: %s", errname(errno));
        pthread_mutex_lock(&smu);
        if (stopping) { /* main's wake-up connection: every client is done */
            pthread_mutex_unlock(&smu);
            close(fd);
            break;
        }
        server_conns++;
        server_running++;
        pthread_mutex_unlock(&smu);
        pthread_t t;
        int rc = pthread_create(&t, &a, serve, (void *)(long)fd);
        if (rc)
            FAIL("pthread_create server: %s", errname(rc));
    }
    pthread_attr_destroy(&a);
    return NULL;
}

/* ---------------- clients ---------------- */

static long client_resets[NCLIENTS];
static uint32_t client_gen[NCLIENTS];
static uint64_t client_bytes[NCLIENTS], client_sum[NCLIENTS];
static int client_ok[NCLIENTS];

static int connect_retry(void)
{
    for (int attempt = 0;; attempt++) {
        int fd = (int)CHECK_SYS(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        struct sockaddr_in a = local_addr(port);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
            return fd;
        int e = errno;
        close(fd);
        if ((e != EAGAIN && e != ECONNREFUSED) || attempt > 100)
            FAIL("connect: %s", errname(e));
        sleep_ms(20);
    }
}

static int open_conn(uint32_t id, uint32_t gen)
{
    int fd = connect_retry();
    uint32_t hdr[3] = {HDR_MAGIC, id, gen};
    write_all(fd, hdr, sizeof hdr);
    return fd;
}

static void *client(void *arg)
{
    uint32_t id = (uint32_t)(long)arg;
    uint64_t rng = rng_seed(id);
    uint64_t rrng = rng_seed(id + 100000); /* read sizes: timing-dependent use */
    unsigned char *out = malloc(MAXMSG), *in = malloc(MAXMSG);
    CHECK(out && in);
    int resetter = id % RESET_EVERY == 3;
    uint32_t gen = 0;
    int fd = open_conn(id, gen);
    uint64_t bytes = 0, sum = FNV_INIT;
    /* messages until the next reset (resetters reset at least once, early) */
    long until_reset = resetter ? 1 + (long)(rng_next(&rng) % 8) : -1;

    for (long m = 0;; m++) {
        if (now_ns() >= deadline_ns && (!resetter || client_resets[id] > 0))
            break;
        size_t len;
        switch (rng_next(&rng) % 4) {
        case 0: len = 1 + rng_next(&rng) % 64; break;
        case 1: len = 1 + rng_next(&rng) % 4096; break;
        default: len = 1 + rng_next(&rng) % MAXMSG; break;
        }
        for (size_t i = 0; i < len; i += 8) {
            uint64_t v = rng_next(&rng);
            memcpy(out + i, &v, len - i < 8 ? len - i : 8);
        }
        if (until_reset == 0) {
            /* part of the message, then an abortive close */
            write_all(fd, out, len / 2);
            struct linger lg = {1, 0};
            CHECK_SYS(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
            CHECK_SYS(close(fd));
            client_resets[id]++;
            fd = open_conn(id, ++gen);
            bytes = 0;
            sum = FNV_INIT;
            until_reset = 5 + (long)(rng_next(&rng) % 40);
            continue;
        }
        if (until_reset > 0)
            until_reset--;
        write_all(fd, out, len);
        size_t got = 0;
        while (got < len) {
            size_t want = 1 + rng_next(&rrng) % (len - got);
            ssize_t r = read(fd, in + got, want);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                FAIL("client %u read: %zd %s", id, r, errname(errno));
            got += (size_t)r;
        }
        if (memcmp(in, out, len) != 0)
            FAIL("client %u message %ld (%zu bytes): echo differs", id, m, len);
        bytes += len;
        sum = fnv1a(sum, out, len);
    }
    /* half-close: the server sees EOF, echoes nothing more, closes */
    CHECK_SYS(shutdown(fd, SHUT_WR));
    char c;
    ssize_t r;
    while ((r = read(fd, &c, 1)) < 0 && errno == EINTR) {
    }
    if (r != 0)
        FAIL("client %u: expected EOF, got %zd %s", id, r, errname(errno));
    close(fd);
    free(out);
    free(in);
    client_gen[id] = gen;
    client_bytes[id] = bytes;
    client_sum[id] = sum;
    client_ok[id] = 1;
    return NULL;
}

int main(void)
{
    int seconds = 20;
    const char *env = getenv("SOAK_SECONDS");
    if (env && atoi(env) > 0)
        seconds = atoi(env);
    tp_setup((unsigned)seconds + 100);
    rlim_t lim = raise_nofile();
    if (lim < 2 * NCLIENTS + 200) {
        printf("SKIP: open-file limit %lu too low\n", (unsigned long)lim);
        return 77;
    }

    listen_fd = listen_local(4096, &port);
    pthread_t acc;
    CHECK_RC(pthread_create(&acc, NULL, acceptor, NULL));
    deadline_ns = now_ns() + (int64_t)seconds * 1000000000LL;
    static pthread_t clients[NCLIENTS];
    for (long i = 0; i < NCLIENTS; i++) {
        int rc = create_thread(&clients[i], STACK, client, (void *)i);
        if (rc)
            FAIL("pthread_create client %ld: %s", i, errname(rc));
    }
    for (int i = 0; i < NCLIENTS; i++)
        CHECK_RC(pthread_join(clients[i], NULL));

    /* every client is done: wait for the server threads, stop the acceptor */
    pthread_mutex_lock(&smu);
    while (server_running > 0)
        pthread_cond_wait(&scv, &smu);
    stopping = 1;
    pthread_mutex_unlock(&smu);
    int sfd = connect_retry();
    CHECK_RC(pthread_join(acc, NULL));
    close(sfd);
    close(listen_fd);

    long resets = 0, resetters = 0, ok = 0, match = 0;
    uint64_t total = 0;
    for (int i = 0; i < NCLIENTS; i++) {
        resets += client_resets[i];
        if (i % RESET_EVERY == 3 && client_resets[i] > 0)
            resetters++;
        ok += client_ok[i];
        struct final_rec *f = &server_final[i];
        if (f->done && f->gen == client_gen[i] && f->bytes == client_bytes[i] &&
            f->sum == client_sum[i])
            match++;
        total += client_bytes[i];
    }
    fprintf(stderr, "soak_echo: %d s, %ld connections, %ld resets (server saw %ld), "
            "%llu bytes on the final connections\n", seconds, server_conns, resets,
            server_resets, (unsigned long long)total);
    printf("connections: %d\n", NCLIENTS);
    printf("clients completed: %s\n", yesno(ok == NCLIENTS));
    printf("integrity: %s\n", match == NCLIENTS ? "ok" : "FAILED");
    printf("resets handled: %s\n",
           yesno(resetters == NCLIENTS / RESET_EVERY && server_resets == resets &&
                 server_conns == NCLIENTS + resets));
    return 0;
}
