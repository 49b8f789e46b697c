/* A thread-per-connection TCP server whose handlers make calls that block
 * in the kernel, while 20 other clients keep doing request/response:
 *  - one handler resolves "nonexistent.invalid" with getaddrinfo (only the
 *    fact that it failed is printed: how it fails depends on the resolver);
 *  - one opens a FIFO and reads it; the FIFO's writer comes 1.5 s later,
 *    longer than the latency bound, so a handler that held a whole kernel
 *    thread hostage (instead of only itself) would show up as a late
 *    fast request;
 *  - one spins the CPU for 200 ms (nobody can hand that off: the other
 *    threads just have to keep being served meanwhile).
 * Each fast client does 100 round trips of 8 bytes, 20 ms apart; the
 * program prints "yes" if every single one took less than 1 s. */
#include "common.h"

#include <netdb.h>
#include <sys/stat.h>

#define FAST_CLIENTS 20
#define FAST_ROUNDS 100
#define FIFO_WRITER_DELAY_MS 1500
#define SPIN_MS 200
#define BOUND_MS 1000
#define NCONNS (3 + FAST_CLIENTS)

static int listen_fd;
static char fifo_path[128];
static pthread_t handlers[NCONNS];

/* ---- server ---- */

static void reply(int fd, const char *msg)
{
    write_all(fd, msg, strlen(msg));
}

static void *handle(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char cmd;
    if (read_full(fd, &cmd, 1) != 1)
        FAIL("no command");
    switch (cmd) {
    case 'R': {
        struct addrinfo hints, *res;
        memset(&hints, 0, sizeof hints);
        hints.ai_socktype = SOCK_STREAM;
        int rc = getaddrinfo("nonexistent.invalid", "80", &hints, &res);
        if (rc == 0)
            freeaddrinfo(res);
        reply(fd, rc != 0 ? "returned an error" : "resolved (unexpected)");
        break;
    }
    case 'F': {
        int f = (int)CHECK_SYS(open(fifo_path, O_RDONLY)); /* waits for the writer */
        char buf[64];
        size_t n = read_full(f, buf, sizeof buf - 1);
        buf[n] = 0;
        close(f);
        reply(fd, buf);
        break;
    }
    case 'S': {
        volatile uint64_t x = 0;
        int64_t end = now_ns() + SPIN_MS * 1000000LL;
        while (now_ns() < end)
            x++;
        reply(fd, "spun");
        break;
    }
    case 'E': {
        char buf[8];
        while (read_full(fd, buf, sizeof buf) == sizeof buf)
            write_all(fd, buf, sizeof buf);
        break;
    }
    default:
        FAIL("bad command %c", cmd);
    }
    close(fd);
    return NULL;
}

static void *acceptor(void *unused)
{
    (void)unused;
    for (int i = 0; i < NCONNS; i++) {
        int fd = (int)CHECK_SYS(accept(listen_fd, NULL, NULL));
        CHECK_RC(pthread_create(&handlers[i], NULL, handle, (void *)(intptr_t)fd));
    }
    return NULL;
}

/* ---- clients ---- */

static int port;

struct slow_client {
    char cmd;
    char answer[64];
};

static void *slow_client(void *p)
{
    struct slow_client *c = p;
    int fd = connect_local(port);
    write_all(fd, &c->cmd, 1);
    size_t n = read_full(fd, c->answer, sizeof c->answer - 1);
    c->answer[n] = 0;
    close(fd);
    return NULL;
}

static void *fifo_writer(void *unused)
{
    (void)unused;
    sleep_ms(FIFO_WRITER_DELAY_MS);
    int f = (int)CHECK_SYS(open(fifo_path, O_WRONLY));
    write_all(f, "fifo-data", 9);
    close(f);
    return NULL;
}

int main(void)
{
    tp_setup(60);
    char dir[] = "/tmp/handoff_server-XXXXXX";
    CHECK(mkdtemp(dir));
    snprintf(fifo_path, sizeof fifo_path, "%s/fifo", dir);
    CHECK_SYS(mkfifo(fifo_path, 0600));
    listen_fd = listen_local(NCONNS, &port);

    pthread_t acc, writer, slow[3], fast[FAST_CLIENTS];
    struct slow_client sc[3] = {{'R', ""}, {'F', ""}, {'S', ""}};
    struct echo_probe fc[FAST_CLIENTS];
    CHECK_RC(pthread_create(&acc, NULL, acceptor, NULL));
    CHECK_RC(pthread_create(&writer, NULL, fifo_writer, NULL));
    for (int i = 0; i < 3; i++)
        CHECK_RC(pthread_create(&slow[i], NULL, slow_client, &sc[i]));
    for (int i = 0; i < FAST_CLIENTS; i++) {
        fc[i] = (struct echo_probe){.id = i, .port = port, .rounds = FAST_ROUNDS, .gap_ms = 20};
        CHECK_RC(pthread_create(&fast[i], NULL, echo_probe_run, &fc[i]));
    }

    for (int i = 0; i < FAST_CLIENTS; i++)
        CHECK_RC(pthread_join(fast[i], NULL));
    for (int i = 0; i < 3; i++)
        CHECK_RC(pthread_join(slow[i], NULL));
    CHECK_RC(pthread_join(writer, NULL));
    CHECK_RC(pthread_join(acc, NULL));
    for (int i = 0; i < NCONNS; i++)
        CHECK_RC(pthread_join(handlers[i], NULL));
    close(listen_fd);
    unlink(fifo_path);
    rmdir(dir);

    int64_t worst = 0;
    int ok = 0;
    for (int i = 0; i < FAST_CLIENTS; i++) {
        ok += fc[i].rounds_ok;
        if (fc[i].worst_ns > worst)
            worst = fc[i].worst_ns;
    }
    printf("getaddrinfo(nonexistent.invalid): %s\n", sc[0].answer);
    printf("fifo read: %s\n", sc[1].answer);
    printf("cpu spin: %s\n", sc[2].answer);
    printf("fast round trips echoed: %d of %d\n", ok, FAST_CLIENTS * FAST_ROUNDS);
    printf("fast clients served: %s\n", yesno(worst < BOUND_MS * 1000000LL));
    if (worst >= BOUND_MS * 1000000LL)
        fprintf(stderr, "worst fast round trip: %.1f ms\n", (double)worst / 1e6);
    return 0;
}
