/* 10,000 concurrent TCP connections over loopback, all held open at once.
 *
 * Server: one acceptor thread and one thread per accepted connection. Each
 * server thread reads a 'hello' (carrying the client's index), answers with
 * an 'ack', and then waits until ALL connections have exchanged their
 * hello/ack — so all 10,000 connections are open simultaneously — then sends
 * 'bye', waits for the client to close, and closes.
 * Client: one thread per connection: connect, hello, ack, wait for bye,
 * close.
 *
 * Both ends in one process need 2 x 10,000 descriptors. The soft
 * RLIMIT_NOFILE is raised to the hard limit; if the hard limit cannot hold
 * both ends but can hold one, the client threads run in a child process
 * (this same executable, spawned with "--client <port>"), which exercises
 * the same code. If even that does not fit, the program prints a SKIP line
 * and exits 77. Thread stacks are 64 KiB so that plain threads fit easily. */
#include "common.h"
#include <spawn.h>
#include <sys/wait.h>

#ifndef NCONN
#define NCONN 10000
#endif
#define STACK (64 * 1024)
#define HELLO_MAGIC 0x68656c6fU
#define ACK_MAGIC 0x61636b21U

extern char **environ;

static int port;

/* ---------------- client side ---------------- */

static pthread_mutex_t cmu = PTHREAD_MUTEX_INITIALIZER;
static int clients_ok;

static void *client(void *arg)
{
    uint32_t idx = (uint32_t)(long)arg;
    int fd;
    for (int attempt = 0;; attempt++) {
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            FAIL("client socket: %s", errname(errno));
        struct sockaddr_in a = local_addr(port);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
            break;
        int e = errno;
        close(fd);
        /* EAGAIN: out of ephemeral ports for a moment; retry a few times */
        if (e != EAGAIN || attempt > 50)
            FAIL("client %u connect: %s", idx, errname(e));
        sleep_ms(20);
    }
    uint32_t hello[2] = {HELLO_MAGIC, idx};
    write_all(fd, hello, sizeof hello);
    uint32_t ack[2];
    if (read_full(fd, ack, sizeof ack) != sizeof ack || ack[0] != ACK_MAGIC || ack[1] != idx)
        FAIL("client %u: bad ack", idx);
    char bye[4];
    if (read_full(fd, bye, sizeof bye) != sizeof bye || memcmp(bye, "bye!", 4) != 0)
        FAIL("client %u: bad bye", idx);
    close(fd);
    pthread_mutex_lock(&cmu);
    clients_ok++;
    pthread_mutex_unlock(&cmu);
    return NULL;
}

static pthread_t client_threads[NCONN];

static void start_clients(void)
{
    for (long i = 0; i < NCONN; i++) {
        int rc = create_thread(&client_threads[i], STACK, client, (void *)i);
        if (rc)
            FAIL("pthread_create client %ld: %s", i, errname(rc));
    }
}

static void join_clients(void)
{
    for (int i = 0; i < NCONN; i++)
        CHECK_RC(pthread_join(client_threads[i], NULL));
    if (clients_ok != NCONN)
        FAIL("clients ok: %d", clients_ok);
}

/* ---------------- server side ---------------- */

static int listen_fd;
static pthread_t server_threads[NCONN];
static pthread_mutex_t smu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t all_exchanged = PTHREAD_COND_INITIALIZER;
static int exchanged, max_open, open_now, closed_ok;
static unsigned char seen[NCONN];

static void *server(void *arg)
{
    int fd = (int)(long)arg;
    uint32_t hello[2];
    if (read_full(fd, hello, sizeof hello) != sizeof hello || hello[0] != HELLO_MAGIC ||
        hello[1] >= NCONN)
        FAIL("server: bad hello");
    uint32_t ack[2] = {ACK_MAGIC, hello[1]};
    write_all(fd, ack, sizeof ack);

    pthread_mutex_lock(&smu);
    if (seen[hello[1]]++)
        FAIL("duplicate client index %u", hello[1]);
    if (++exchanged == NCONN)
        pthread_cond_broadcast(&all_exchanged);
    while (exchanged < NCONN)
        pthread_cond_wait(&all_exchanged, &smu);
    pthread_mutex_unlock(&smu);

    write_all(fd, "bye!", 4);
    char c;
    ssize_t r;
    while ((r = read(fd, &c, 1)) < 0 && errno == EINTR) {
    }
    if (r != 0 && !(r < 0 && errno == ECONNRESET))
        FAIL("server: expected EOF, got %zd %s", r, errname(errno));
    close(fd);
    pthread_mutex_lock(&smu);
    closed_ok++;
    open_now--;
    pthread_mutex_unlock(&smu);
    return NULL;
}

static void *acceptor(void *unused)
{
    for (long i = 0; i < NCONN; i++) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            FAIL("accept #%ld: %s", i, errname(errno));
        pthread_mutex_lock(&smu);
        if (++open_now > max_open)
            max_open = open_now;
        pthread_mutex_unlock(&smu);
        int rc = create_thread(&server_threads[i], STACK, server, (void *)(long)fd);
        if (rc)
            FAIL("pthread_create server %ld: %s", i, errname(rc));
    }
    return NULL;
}

int main(int argc, char **argv)
{
    tp_setup(100);
    rlim_t lim = raise_nofile();

    if (argc == 3 && strcmp(argv[1], "--client") == 0) {
        port = atoi(argv[2]);
        start_clients();
        join_clients();
        return 0;
    }

    const rlim_t need_one_side = NCONN + 100, need_both = 2 * NCONN + 100;
    if (lim < need_one_side) {
        printf("SKIP: open-file limit %lu too low (need %lu)\n", (unsigned long)lim,
               (unsigned long)need_one_side);
        return 77;
    }
    int split = lim < need_both;
    if (split)
        fprintf(stderr, "conns_10k: open-file limit %lu < %lu: clients run in a child process\n",
                (unsigned long)lim, (unsigned long)need_both);

    listen_fd = listen_local(4096, &port);
    pthread_t acc;
    CHECK_RC(pthread_create(&acc, NULL, acceptor, NULL));

    pid_t child = -1;
    if (split) {
        char portstr[16];
        snprintf(portstr, sizeof portstr, "%d", port);
        char *cargv[] = {argv[0], "--client", portstr, NULL};
        int rc = posix_spawn(&child, "/proc/self/exe", NULL, NULL, cargv, environ);
        if (rc)
            FAIL("posix_spawn: %s", errname(rc));
    } else {
        start_clients();
    }

    CHECK_RC(pthread_join(acc, NULL));
    close(listen_fd);
    for (int i = 0; i < NCONN; i++)
        CHECK_RC(pthread_join(server_threads[i], NULL));
    if (split) {
        int st;
        CHECK_SYS(waitpid(child, &st, 0));
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            FAIL("client process failed (status 0x%x)", st);
    } else {
        join_clients();
    }

    printf("connections accepted: %d\n", NCONN);
    printf("exchanged: %d\n", exchanged);
    printf("all open simultaneously: %s\n", yesno(max_open == NCONN));
    printf("closed: %d\n", closed_ok);
    if (exchanged == NCONN && max_open == NCONN && closed_ok == NCONN)
        printf("conns: %d ok\n", NCONN);
    else
        FAIL("not all connections succeeded");
    return 0;
}
