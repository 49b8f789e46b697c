/* Echo server, thread per connection, and 50 client threads each sending 100
 * messages of varying sizes (1 byte .. 20000 bytes). Clients write in
 * random-sized pieces and read the echo back with random-sized reads (so
 * partial reads/writes happen), verify every byte, and fold everything into
 * a checksum. Output: totals and checksum (deterministic: the message
 * contents come from a per-client seeded PRNG). */
#include "common.h"

#define NCLIENTS 50
#define NMSGS 100
#define MAXMSG 20000

static int listen_fd;
static pthread_t server_threads[NCLIENTS];
static uint64_t client_sum[NCLIENTS];
static uint64_t client_bytes[NCLIENTS];
static long server_bytes[NCLIENTS];

static void *serve(void *arg)
{
    long idx = (long)arg >> 32;
    int fd = (int)((long)arg & 0xffffffff);
    char buf[4096];
    long total = 0;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            FAIL("server read: %s", errname(errno));
        if (r == 0)
            break;
        write_all(fd, buf, (size_t)r);
        total += r;
    }
    close(fd);
    server_bytes[idx] = total;
    return NULL;
}

static void *acceptor(void *unused)
{
    for (long i = 0; i < NCLIENTS; i++) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            FAIL("accept: %s", errname(errno));
        CHECK_RC(create_thread(&server_threads[i], 128 * 1024, serve,
                               (void *)((i << 32) | fd)));
    }
    return NULL;
}

static int port;

static void *client(void *arg)
{
    long id = (long)arg;
    uint64_t rng = rng_seed((uint64_t)id);
    /* read sizes use their own PRNG: how many reads happen depends on
     * timing, and must not perturb the message contents */
    uint64_t rrng = rng_seed((uint64_t)id + 1000);
    char *out = malloc(MAXMSG), *in = malloc(MAXMSG);
    CHECK(out && in);
    int fd = connect_local(port);
    int one = 1;
    if (id % 2) /* half the clients without Nagle, for variety */
        CHECK_SYS(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one));
    uint64_t sum = FNV_INIT, bytes = 0;
    for (int m = 0; m < NMSGS; m++) {
        size_t len;
        switch (m % 4) {
        case 0: len = 1 + rng_next(&rng) % 16; break;
        case 1: len = 1 + rng_next(&rng) % 1500; break;
        case 2: len = 1 + rng_next(&rng) % MAXMSG; break;
        default: len = MAXMSG - rng_next(&rng) % 64; break;
        }
        for (size_t i = 0; i < len; i++)
            out[i] = (char)rng_next(&rng);
        /* write in random pieces */
        size_t off = 0;
        while (off < len) {
            size_t piece = 1 + rng_next(&rng) % (len - off);
            write_all(fd, out + off, piece);
            off += piece;
        }
        /* read back with random-sized reads */
        size_t got = 0;
        while (got < len) {
            size_t want = 1 + rng_next(&rrng) % (len - got);
            ssize_t r = read(fd, in + got, want);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                FAIL("client %ld read: %zd %s", id, r, errname(errno));
            if ((size_t)r > want)
                FAIL("read returned more than asked");
            got += (size_t)r;
        }
        if (memcmp(in, out, len) != 0)
            FAIL("client %ld message %d: echo differs", id, m);
        sum = fnv1a(sum, in, len);
        bytes += len;
    }
    /* After shutdown(SHUT_WR) the server sees EOF and closes: we read 0. */
    CHECK_SYS(shutdown(fd, SHUT_WR));
    char c;
    ssize_t r = read(fd, &c, 1);
    if (r != 0)
        FAIL("expected EOF after shutdown, got %zd %s", r, errname(errno));
    close(fd);
    free(out);
    free(in);
    client_sum[id] = sum;
    client_bytes[id] = bytes;
    return NULL;
}

int main(void)
{
    tp_setup(60);
    listen_fd = listen_local(128, &port);
    pthread_t acc, clients[NCLIENTS];
    CHECK_RC(pthread_create(&acc, NULL, acceptor, NULL));
    for (long i = 0; i < NCLIENTS; i++)
        CHECK_RC(create_thread(&clients[i], 256 * 1024, client, (void *)i));
    for (int i = 0; i < NCLIENTS; i++)
        CHECK_RC(pthread_join(clients[i], NULL));
    CHECK_RC(pthread_join(acc, NULL));
    for (int i = 0; i < NCLIENTS; i++)
        CHECK_RC(pthread_join(server_threads[i], NULL));
    close(listen_fd);

    uint64_t total = 0, sbytes = 0, sum = FNV_INIT;
    for (int i = 0; i < NCLIENTS; i++) {
        total += client_bytes[i];
        sbytes += (uint64_t)server_bytes[i];
        sum = fnv1a(sum, &client_sum[i], sizeof client_sum[i]);
    }
    CHECK(total == sbytes);
    printf("clients: %d\n", NCLIENTS);
    printf("messages: %d\n", NCLIENTS * NMSGS);
    printf("bytes echoed: %llu\n", (unsigned long long)total);
    printf("server bytes match: %s\n", yesno(total == sbytes));
    printf("checksum: %016llx\n", (unsigned long long)sum);
    printf("echo_server: ok\n");
    return 0;
}
