/*
 * stdio_bench.c - fast clients of a stdio line server beside slow ones.
 *
 * A plain pthread program (run it as is, and with LD_PRELOAD=libfibershim.so):
 * a thread-per-connection echo server that reads lines with fgets from
 * fdopen(fd, "r") and answers with fprintf + fflush on fdopen(dup(fd), "w").
 * 200 slow clients each send one byte of a line every 100 ms for 2 s, then
 * the newline; while they trickle, 20 fast clients make 50 line round trips
 * each. The clients are a second process (this program with --clients,
 * started without LD_PRELOAD): only the server runs under the shim. The
 * client process prints one line:
 *
 *   worst_ms=<worst fast round trip> median_ms=<median fast round trip>
 *   total_ms=<first fast connect to last fast answer>
 *
 * or "stuck" if the fast clients are not done within 20 s (the processes
 * then exit without waiting). bench/stdio-bench runs it several times per
 * mode and reports medians.
 *
 * usage: stdio_bench [slow_clients] [fast_clients] [round_trips]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SLOW_BYTES 20
#define SLOW_GAP_MS 100
#define STUCK_S 20
#define STACK (64 * 1024)

static int nslow = 200, nfast = 20, ntrips = 50;
static int port, lfd;
static atomic_int slow_started;
static int64_t *lat_ns; /* nfast * ntrips round trips */
static int64_t fast_t0;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "stdio_bench: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void spawn(void *(*fn)(void *), void *arg, pthread_t *out)
{
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setstacksize(&a, STACK);
    pthread_t t;
    if (pthread_create(&t, &a, fn, arg))
        die("pthread_create");
    pthread_attr_destroy(&a);
    if (out)
        *out = t;
    else
        pthread_detach(t);
}

static int connect_server(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        die("connect");
    return fd;
}

static void *conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    FILE *in = fdopen(fd, "r"), *out = fdopen(dup(fd), "w");
    if (!in || !out)
        die("fdopen");
    char line[256];
    while (fgets(line, sizeof line, in)) {
        fprintf(out, "echo:%s", line);
        fflush(out);
    }
    fclose(in);
    fclose(out);
    return NULL;
}

static void *acceptor(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            die("accept");
        spawn(conn, (void *)(intptr_t)fd, NULL);
    }
    return NULL;
}

static void *slow(void *arg)
{
    (void)arg;
    int fd = connect_server();
    FILE *in = fdopen(fd, "r"), *out = fdopen(dup(fd), "w");
    for (int i = 0; i < SLOW_BYTES; i++) {
        fputc('s', out);
        fflush(out);
        if (i == 0)
            atomic_fetch_add(&slow_started, 1);
        usleep(SLOW_GAP_MS * 1000);
    }
    fputc('\n', out);
    fflush(out);
    char line[256];
    if (!fgets(line, sizeof line, in))
        die("slow client: no echo");
    fclose(in);
    fclose(out);
    return NULL;
}

static void *fast(void *arg)
{
    int id = (int)(intptr_t)arg;
    int fd = connect_server();
    FILE *in = fdopen(fd, "r"), *out = fdopen(dup(fd), "w");
    char line[256];
    for (int i = 0; i < ntrips; i++) {
        int64_t t = now_ns();
        fprintf(out, "fast %d %d\n", id, i);
        fflush(out);
        if (!fgets(line, sizeof line, in))
            die("fast client: no echo");
        lat_ns[id * ntrips + i] = now_ns() - t;
    }
    fclose(in);
    fclose(out);
    return NULL;
}

/* SIGALRM, not a sleeping thread: under a shim whose carriers are all
 * blocked, no thread of the program would run. */
static void stuck(int sig)
{
    (void)sig;
    static const char m[] = "stuck\n";
    (void)!write(1, m, sizeof m - 1);
    _exit(0);
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* The client side: its own process, started without LD_PRELOAD, so that
 * only the server runs under the shim. Prints the result line. */
static int clients(void)
{
    signal(SIGALRM, stuck);
    alarm(STUCK_S);
    lat_ns = calloc((size_t)nfast * (size_t)ntrips, sizeof *lat_ns);
    pthread_t *st = calloc((size_t)nslow, sizeof *st), *ft = calloc((size_t)nfast, sizeof *ft);
    for (int i = 0; i < nslow; i++)
        spawn(slow, NULL, &st[i]);
    while (atomic_load(&slow_started) < nslow)
        usleep(1000);
    fast_t0 = now_ns();
    for (int i = 0; i < nfast; i++)
        spawn(fast, (void *)(intptr_t)i, &ft[i]);
    for (int i = 0; i < nfast; i++)
        pthread_join(ft[i], NULL);
    int64_t total = now_ns() - fast_t0;
    size_t n = (size_t)nfast * (size_t)ntrips;
    qsort(lat_ns, n, sizeof *lat_ns, cmp64);
    printf("worst_ms=%.2f median_ms=%.3f total_ms=%.1f\n", lat_ns[n - 1] / 1e6, lat_ns[n / 2] / 1e6,
           total / 1e6);
    fflush(stdout);
    for (int i = 0; i < nslow; i++)
        pthread_join(st[i], NULL);
    return 0;
}

int main(int argc, char **argv)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (argc == 6 && strcmp(argv[1], "--clients") == 0) {
        port = atoi(argv[2]);
        nslow = atoi(argv[3]);
        nfast = atoi(argv[4]);
        ntrips = atoi(argv[5]);
        return clients();
    }
    if (argc > 1)
        nslow = atoi(argv[1]);
    if (argc > 2)
        nfast = atoi(argv[2]);
    if (argc > 3)
        ntrips = atoi(argv[3]);

    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 4096) < 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &len) < 0)
        die("listen");
    port = ntohs(a.sin_port);
    spawn(acceptor, NULL, NULL);

    /* The clients: this program again, without the shim. */
    char self[4096], sport[16], s1[16], s2[16], s3[16];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n < 0)
        die("readlink");
    self[n] = 0;
    snprintf(sport, sizeof sport, "%d", port);
    snprintf(s1, sizeof s1, "%d", nslow);
    snprintf(s2, sizeof s2, "%d", nfast);
    snprintf(s3, sizeof s3, "%d", ntrips);
    unsetenv("LD_PRELOAD");
    char *args[] = {self, (char *)"--clients", sport, s1, s2, s3, NULL};
    pid_t pid;
    extern char **environ;
    if (posix_spawn(&pid, self, NULL, NULL, args, environ) != 0)
        die("posix_spawn");
    int status;
    if (waitpid(pid, &status, 0) < 0)
        die("waitpid");
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
