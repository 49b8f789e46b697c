/* A writer blocked on a peer that does not read.
 *
 * A server thread writes an 8 MiB response over loopback TCP to a client
 * that does not read. The socket buffers are capped (SO_SNDBUF/SO_RCVBUF
 * 64 KiB), so the writer must block: after 300 ms its "done" flag is still
 * clear, and the process did not grow by more than 4 MiB of resident memory
 * while it was blocked (nothing buffers the unsent response in user space).
 * Then the client reads everything, the data is intact, and the writer's
 * one blocking write call returns the full 8 MiB. */
#include "common.h"

#define TOTAL (8 * 1024 * 1024)
#define BUFCAP (64 * 1024)

static char *out;
static int server_fd;
static volatile int writer_done;
static long writer_bytes, writer_calls;

static long vmrss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    CHECK(f);
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    CHECK(kb > 0);
    return kb;
}

static void *writer(void *unused)
{
    long total = 0;
    while (total < TOTAL) {
        ssize_t w = write(server_fd, out + total, (size_t)(TOTAL - total));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            FAIL("writer: write returned %zd %s", w, errname(errno));
        total += w;
        writer_calls++;
    }
    writer_bytes = total;
    __atomic_store_n(&writer_done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void *nothing(void *unused) { return NULL; }

int main(void)
{
    tp_setup(60);

    out = malloc(TOTAL);
    char *in = malloc(TOTAL);
    CHECK(out && in);
    uint64_t rng = rng_seed(42);
    for (size_t i = 0; i < TOTAL; i += 8) {
        uint64_t v = rng_next(&rng);
        memcpy(out + i, &v, 8);
    }
    memset(in, 0, TOTAL); /* touch it now, not while measuring */

    /* Small buffers on both ends, set before connecting. */
    int port;
    int l = listen_local(1, &port);
    int cap = BUFCAP;
    CHECK_SYS(setsockopt(l, SOL_SOCKET, SO_SNDBUF, &cap, sizeof cap));
    int client_fd = (int)CHECK_SYS(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    CHECK_SYS(setsockopt(client_fd, SOL_SOCKET, SO_RCVBUF, &cap, sizeof cap));
    struct sockaddr_in a = local_addr(port);
    CHECK_SYS(connect(client_fd, (struct sockaddr *)&a, sizeof a));
    server_fd = (int)CHECK_SYS(accept4(l, NULL, NULL, SOCK_CLOEXEC));
    close(l);
    CHECK_SYS(setsockopt(server_fd, SOL_SOCKET, SO_SNDBUF, &cap, sizeof cap));

    /* One thread started and joined first, so that whatever a threads
     * library sets up once is not counted as growth. */
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, nothing, NULL));
    CHECK_RC(pthread_join(t, NULL));

    long rss0 = vmrss_kb();
    CHECK_RC(create_thread(&t, 256 * 1024, writer, NULL));
    sleep_ms(300);
    int blocked = !__atomic_load_n(&writer_done, __ATOMIC_ACQUIRE);
    long rss1 = vmrss_kb();
    fprintf(stderr, "peer_never_reads: VmRSS %ld -> %ld kB while blocked\n", rss0, rss1);
    printf("writer blocked while peer does not read: %s\n", yesno(blocked));
    printf("memory bounded: %s\n", yesno(rss1 - rss0 < 4 * 1024));

    size_t got = read_full(client_fd, in, TOTAL);
    CHECK_RC(pthread_join(t, NULL));
    printf("client read: %zu bytes, intact: %s\n", got,
           yesno(got == TOTAL && memcmp(in, out, TOTAL) == 0));
    printf("writer completed: %s, bytes: %ld\n", yesno(writer_done), writer_bytes);
    /* A blocking write on a stream socket returns only when all of it was
     * sent (no signal arrived meanwhile). */
    printf("one blocking write call sent it all: %s\n", yesno(writer_calls == 1));

    /* Clean end: EOF both ways. */
    close(server_fd);
    char c;
    CHECK(read(client_fd, &c, 1) == 0);
    close(client_fd);
    return 0;
}
