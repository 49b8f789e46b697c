/* A handler resolving a name through a resolver that never answers, while
 * 20 other clients keep doing request/response on the same server.
 *
 * Needs /etc/resolv.conf to say "nameserver 127.0.0.1" with a short
 * timeout: with-blackhole-dns.sh bind-mounts such a file in a private
 * mount namespace. The program itself plays the resolver: it binds UDP
 * 127.0.0.1:53 and never reads, so queries are swallowed (no ICMP
 * "port unreachable" to make the lookup fail fast) and getaddrinfo waits
 * out its whole timeout. Exit 77 (skipped) if that set-up is missing.
 *
 * Threads: true by construction. Under the shim (one carrier, default
 * settings: tests/programs/CMakeLists.txt) getaddrinfo must not hold the
 * carrier, or no fast round trip could complete during the lookup. */
#include "common.h"

#include <netdb.h>
#include <stdatomic.h>
#include <stdbool.h>

#define FAST_CLIENTS 20
#define FAST_ROUNDS 20
#define BOUND_MS 500

static int listen_fd, port;
static _Atomic int64_t lookup_started, lookup_done;

static void *handle(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char cmd;
    if (read_full(fd, &cmd, 1) != 1)
        FAIL("no command");
    if (cmd == 'R') {
        struct addrinfo hints, *res;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        atomic_store(&lookup_started, now_ns());
        write_all(fd, "k", 1);
        int rc = getaddrinfo("blackhole.fibershim.test", "80", &hints, &res);
        atomic_store(&lookup_done, now_ns());
        if (rc == 0)
            freeaddrinfo(res);
        const char *m = rc == EAI_AGAIN ? "EAI_AGAIN" : rc == 0 ? "resolved?!" : "other error";
        write_all(fd, m, strlen(m));
    } else {
        char buf[8];
        while (read_full(fd, buf, sizeof buf) == sizeof buf)
            write_all(fd, buf, sizeof buf);
    }
    close(fd);
    return NULL;
}

static void *acceptor(void *unused)
{
    (void)unused;
    for (int i = 0; i < 1 + FAST_CLIENTS; i++) {
        int fd = (int)CHECK_SYS(accept(listen_fd, NULL, NULL));
        pthread_t t;
        CHECK_RC(pthread_create(&t, NULL, handle, (void *)(intptr_t)fd));
        CHECK_RC(pthread_detach(t));
    }
    return NULL;
}

static bool resolver_is_local(void)
{
    FILE *f = fopen("/etc/resolv.conf", "r");
    if (!f)
        return false;
    char line[256];
    bool local = false;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "nameserver", 10) == 0)
            local = strstr(line, "127.0.0.1") != NULL; /* the last one decides */
    fclose(f);
    return local;
}

int main(void)
{
    tp_setup(60);
    if (!resolver_is_local()) {
        printf("skipped: /etc/resolv.conf does not point at 127.0.0.1 "
               "(run through with-blackhole-dns.sh)\n");
        return 77;
    }
    int hole = (int)CHECK_SYS(socket(AF_INET, SOCK_DGRAM, 0));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(53)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(hole, (struct sockaddr *)&a, sizeof a) != 0) {
        printf("skipped: cannot bind udp 127.0.0.1:53 (%s)\n", errname(errno));
        return 77;
    }
    listen_fd = listen_local(64, &port);
    pthread_t acc;
    CHECK_RC(pthread_create(&acc, NULL, acceptor, NULL));

    int r = connect_local(port);
    write_all(r, "R", 1);
    char k;
    CHECK(read_full(r, &k, 1) == 1); /* the lookup is under way */

    pthread_t t[FAST_CLIENTS];
    struct echo_probe c[FAST_CLIENTS];
    for (int i = 0; i < FAST_CLIENTS; i++) {
        c[i] = (struct echo_probe){.id = i, .port = port, .rounds = FAST_ROUNDS, .gap_ms = 10};
        CHECK_RC(pthread_create(&t[i], NULL, echo_probe_run, &c[i]));
    }
    int ok = 0;
    int64_t worst = 0, last = 0;
    for (int i = 0; i < FAST_CLIENTS; i++) {
        CHECK_RC(pthread_join(t[i], NULL));
        ok += c[i].rounds_ok;
        worst = c[i].worst_ns > worst ? c[i].worst_ns : worst;
        last = c[i].done_at > last ? c[i].done_at : last;
    }
    char answer[32];
    size_t n = read_full(r, answer, sizeof answer - 1);
    answer[n] = 0;
    CHECK_RC(pthread_join(acc, NULL));
    int64_t took = atomic_load(&lookup_done) - atomic_load(&lookup_started);
    printf("lookup through a silent resolver: %s after >= 1 s: %s\n", answer,
           yesno(took >= 1000000000LL));
    printf("fast round trips echoed: %d of %d\n", ok, FAST_CLIENTS * FAST_ROUNDS);
    printf("every round trip under %d ms: %s\n", BOUND_MS, yesno(worst < BOUND_MS * 1000000LL));
    printf("fast clients done while the lookup waited: %s\n",
           yesno(last < atomic_load(&lookup_done)));
    if (last >= atomic_load(&lookup_done) || worst >= BOUND_MS * 1000000LL)
        fprintf(stderr, "worst %.1f ms, lookup %.1f ms\n", worst / 1e6, took / 1e6);
    close(r);
    close(hole);
    return 0;
}
