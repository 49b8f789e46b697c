/* observe_prog - a plain pthread program for the observability tests.
 *
 *   observe_prog sleepers N     N threads sleep 20 ms each, joined; exits 0
 *   observe_prog park SECONDS   three threads park: one in read() on a pipe,
 *                               one in nanosleep, one in pthread_mutex_lock
 *                               (held by main); prints "ready" and waits
 *                               SECONDS, then releases them all and exits 0
 *   observe_prog busy MS        two threads ping-pong through a pipe for MS ms
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int pipefd[2];
static pthread_mutex_t held = PTHREAD_MUTEX_INITIALIZER;
static volatile int stop;

static void *sleeper(void *arg)
{
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    return arg;
}

__attribute__((noinline)) static void *blocked_in_read(void *arg)
{
    char c;
    if (read(pipefd[0], &c, 1) != 1)
        return (void *)1;
    return NULL;
}

__attribute__((noinline)) static void *blocked_in_sleep(void *arg)
{
    while (!stop) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

__attribute__((noinline)) static void *blocked_in_mutex(void *arg)
{
    pthread_mutex_lock(&held);
    pthread_mutex_unlock(&held);
    return NULL;
}

static int pp[2][2];

/* Side 0 writes pp[0] and reads pp[1]; side 1 the other way round. A
 * side that sees stop closes its write end, so that the other one, which
 * may have seen stop still clear a moment earlier and gone back to read
 * (the other side's whole round fits between a write and the check of
 * stop after it), reads end-of-file instead of waiting for ever. */
static void *pinger(void *arg)
{
    long side = (long)arg;
    char c = 'x';
    if (side == 0 && write(pp[0][1], &c, 1) != 1)
        return NULL;
    while (!stop) {
        if (read(pp[side == 0 ? 1 : 0][0], &c, 1) != 1)
            break;
        if (write(pp[side][1], &c, 1) != 1)
            break;
    }
    close(pp[side][1]);
    return NULL;
}

static volatile sig_atomic_t usr2_seen;
static void on_usr2(int sig)
{
    (void)sig;
    usr2_seen++;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: observe_prog sleepers N | park SECONDS | busy MS | ownsig N\n");
        return 2;
    }
    int n = atoi(argv[2]);
    if (!strcmp(argv[1], "sleepers")) {
        pthread_t *t = calloc((size_t)n, sizeof *t);
        for (int i = 0; i < n; i++)
            pthread_create(&t[i], NULL, sleeper, NULL);
        for (int i = 0; i < n; i++)
            pthread_join(t[i], NULL);
        printf("joined %d\n", n);
        return 0;
    }
    if (!strcmp(argv[1], "park")) {
        if (pipe(pipefd))
            return 1;
        pthread_mutex_lock(&held);
        pthread_t t[3];
        pthread_create(&t[0], NULL, blocked_in_read, NULL);
        pthread_create(&t[1], NULL, blocked_in_sleep, NULL);
        pthread_create(&t[2], NULL, blocked_in_mutex, NULL);
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
        printf("ready\n");
        fflush(stdout);
        ts = (struct timespec){n, 0};
        nanosleep(&ts, NULL);
        stop = 1;
        pthread_mutex_unlock(&held);
        (void)!write(pipefd[1], "x", 1);
        for (int i = 0; i < 3; i++)
            pthread_join(t[i], NULL);
        printf("released\n");
        return 0;
    }
    if (!strcmp(argv[1], "ownsig")) {
        /* A program with its own SIGUSR2 handler (as SBCL and stunnel have),
         * installed N times through sigaction and once through signal(). */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_usr2;
        for (int i = 0; i < n; i++)
            sigaction(SIGUSR2, &sa, NULL);
        signal(SIGUSR2, on_usr2);
        raise(SIGUSR2);
        printf("own handler ran %d\n", usr2_seen);
        return 0;
    }
    if (!strcmp(argv[1], "busy")) {
        if (pipe(pp[0]) || pipe(pp[1]))
            return 1;
        pthread_t a, b;
        pthread_create(&a, NULL, pinger, (void *)0L);
        pthread_create(&b, NULL, pinger, (void *)1L);
        struct timespec ts = {n / 1000, (long)(n % 1000) * 1000000};
        nanosleep(&ts, NULL);
        stop = 1;
        pthread_join(a, NULL);
        pthread_join(b, NULL);
        printf("done\n");
        return 0;
    }
    return 2;
}
