/*
 * threads_http - a classic thread-per-connection HTTP/1.1 keep-alive server.
 *
 *   threads_http PORT
 *
 * The main thread runs a blocking accept() loop and starts one detached
 * pthread per connection; that thread reads requests with blocking read(),
 * answers each with write() and counts them in a mutex-protected counter,
 * until the client closes the connection, asks for "Connection: close", or
 * an error occurs. Nothing is printed on the hot path. SIGTERM/SIGINT print
 * the number of requests served and exit.
 *
 * This is the program the shim exists for: the same unmodified binary runs
 * on plain kernel threads and under LD_PRELOAD=libfibershim.so, where each
 * connection thread becomes a fiber.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http_min.h"

static pthread_mutex_t count_lock = PTHREAD_MUTEX_INITIALIZER;
static long requests_served;

static long total_requests(void)
{
    return __atomic_load_n(&requests_served, __ATOMIC_RELAXED);
}

static void count_requests(long n)
{
    pthread_mutex_lock(&count_lock);
    requests_served += n;
    pthread_mutex_unlock(&count_lock);
}

/* One thread per connection: serves it, then ends. */
static void *connection_main(void *arg)
{
    http_serve_blocking((int)(intptr_t)arg, count_requests);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: threads_http PORT\n");
        return 2;
    }
    int port = parse_port(argv[1], "threads_http PORT");
    install_exit_report("threads_http", total_requests);
    int lfd = listen_tcp(port, 0, 0);

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);

    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors or memory: back off, let connections close. */
                struct timespec ts = {0, 10 * 1000 * 1000};
                nanosleep(&ts, NULL);
            }
            continue; /* EINTR, ECONNABORTED, EPROTO, ...: try the next one */
        }
        set_nodelay(fd);
        pthread_t tid;
        int err = pthread_create(&tid, &attr, connection_main, (void *)(intptr_t)fd);
        if (err != 0) {
            /* No thread for it (EAGAIN: thread or memory limit): shed the connection. */
            close(fd);
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
}
