/* A thread-per-connection echo server where two handlers hold their
 * kernel thread for 1.5 s each, in ways no wrapper can see:
 *  - 'S' spins the CPU (no call at all);
 *  - 'B' sleeps in a raw nanosleep system call (syscall(2), not libc's).
 * Both answer "ok" first, so the clients know they are stuck, then their
 * result when done. Meanwhile 10 fast clients connect (new connections,
 * new handler threads) and do 20 round trips each, 10 ms apart; the
 * program prints whether every round trip took less than 500 ms and all
 * fast clients were done before either stuck handler answered.
 *
 * Threads: true by construction. Under the shim it is run with one
 * carrier and migration on (tests/programs/CMakeLists.txt): the only
 * carrier and then the first spare are stuck, so only handoff carriers
 * started by the monitor can serve anyone. */
#include "common.h"

#include <sys/syscall.h>

#define STUCK_MS 1500
#define FAST_CLIENTS 10
#define FAST_ROUNDS 20
#define BOUND_MS 500

static int listen_fd, port;


static void *handle(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char cmd;
    if (read_full(fd, &cmd, 1) != 1)
        FAIL("no command");
    if (cmd == 'S' || cmd == 'B') {
        write_all(fd, "ok", 2);
        if (cmd == 'S') {
            volatile uint64_t x = 0;
            int64_t end = now_ns() + STUCK_MS * 1000000LL;
            while (now_ns() < end)
                x++;
            write_all(fd, "spun", 4);
        } else {
            struct timespec ts = {STUCK_MS / 1000, (STUCK_MS % 1000) * 1000000L};
            while (syscall(SYS_nanosleep, &ts, &ts) != 0)
                CHECK(errno == EINTR);
            write_all(fd, "slept", 5);
        }
    } else if (cmd == 'E') {
        char buf[8];
        while (read_full(fd, buf, sizeof buf) == sizeof buf)
            write_all(fd, buf, sizeof buf);
    } else {
        FAIL("bad command %c", cmd);
    }
    close(fd);
    return NULL;
}

static void *acceptor(void *unused)
{
    (void)unused;
    for (int i = 0; i < 2 + FAST_CLIENTS; i++) {
        int fd = (int)CHECK_SYS(accept(listen_fd, NULL, NULL));
        pthread_t t;
        pthread_attr_t a;
        CHECK_RC(pthread_attr_init(&a));
        CHECK_RC(pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED));
        CHECK_RC(pthread_create(&t, &a, handle, (void *)(intptr_t)fd));
        pthread_attr_destroy(&a);
    }
    return NULL;
}

struct stuck_client {
    char cmd;
    int fd;
    char answer[16];
    int64_t answered_at;
};

static void *stuck_finish(void *p)
{
    struct stuck_client *c = p;
    size_t n = 0;
    for (;;) {
        ssize_t r = read(c->fd, c->answer + n, sizeof c->answer - 1 - n);
        CHECK(r >= 0);
        if (r == 0)
            break;
        n += (size_t)r;
    }
    c->answer[n] = 0;
    c->answered_at = now_ns();
    close(c->fd);
    return NULL;
}

/* Runs everything from a thread of its own: under the shim main() is the
 * adopted fiber of the first carrier, which is about to be stuck. */
static void *driver(void *unused)
{
    (void)unused;
    listen_fd = listen_local(64, &port);
    pthread_t acc;
    CHECK_RC(pthread_create(&acc, NULL, acceptor, NULL));

    struct stuck_client sc[2] = {{'S', -1, "", 0}, {'B', -1, "", 0}};
    pthread_t finish[2];
    for (int i = 0; i < 2; i++) {
        sc[i].fd = connect_local(port);
        write_all(sc[i].fd, &sc[i].cmd, 1);
        char ok[2];
        if (read_full(sc[i].fd, ok, 2) != 2 || memcmp(ok, "ok", 2))
            FAIL("no ok from the '%c' handler", sc[i].cmd);
    }
    /* Both handlers are stuck now (or about to be). */
    for (int i = 0; i < 2; i++)
        CHECK_RC(pthread_create(&finish[i], NULL, stuck_finish, &sc[i]));

    pthread_t fast[FAST_CLIENTS];
    struct echo_probe fc[FAST_CLIENTS];
    for (int i = 0; i < FAST_CLIENTS; i++) {
        fc[i] = (struct echo_probe){.id = i, .port = port, .rounds = FAST_ROUNDS, .gap_ms = 10};
        CHECK_RC(pthread_create(&fast[i], NULL, echo_probe_run, &fc[i]));
    }
    for (int i = 0; i < FAST_CLIENTS; i++)
        CHECK_RC(pthread_join(fast[i], NULL));
    for (int i = 0; i < 2; i++)
        CHECK_RC(pthread_join(finish[i], NULL));
    CHECK_RC(pthread_join(acc, NULL));
    close(listen_fd);

    int64_t worst = 0, last_fast = 0, first_stuck = INT64_MAX;
    int ok = 0;
    for (int i = 0; i < FAST_CLIENTS; i++) {
        ok += fc[i].rounds_ok;
        if (fc[i].worst_ns > worst)
            worst = fc[i].worst_ns;
        if (fc[i].done_at > last_fast)
            last_fast = fc[i].done_at;
    }
    for (int i = 0; i < 2; i++)
        if (sc[i].answered_at < first_stuck)
            first_stuck = sc[i].answered_at;
    printf("cpu spin: %s\n", sc[0].answer);
    printf("raw blocking syscall: %s\n", sc[1].answer);
    printf("fast round trips echoed: %d of %d\n", ok, FAST_CLIENTS * FAST_ROUNDS);
    printf("every round trip under %d ms: %s\n", BOUND_MS,
           yesno(worst < BOUND_MS * 1000000LL));
    printf("fast clients done while both handlers were stuck: %s\n",
           yesno(last_fast < first_stuck));
    if (worst >= BOUND_MS * 1000000LL || last_fast >= first_stuck)
        fprintf(stderr, "worst fast round trip %.1f ms; fast done %.1f ms %s the first stuck "
                        "answer\n",
                (double)worst / 1e6, (double)llabs(first_stuck - last_fast) / 1e6,
                last_fast < first_stuck ? "before" : "after");
    return NULL;
}

int main(void)
{
    tp_setup(60);
    pthread_t d;
    CHECK_RC(pthread_create(&d, NULL, driver, NULL));
    CHECK_RC(pthread_join(d, NULL));
    return 0;
}
