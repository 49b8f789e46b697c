/*
 * pool_http - a fixed thread-pool HTTP/1.1 keep-alive server.
 *
 *   pool_http PORT [WORKERS]      (WORKERS defaults to 128)
 *
 * The classic bounded-threads design: the main thread accepts connections
 * and pushes them on a mutex + condition variable queue; WORKERS threads pop
 * one connection each and serve it with blocking read()/write() until the
 * client closes it. With more open connections than workers the extra
 * connections wait in the queue, unserved, until a worker frees up: that is
 * the limit of the design and what the benchmark shows at high connection
 * counts. Same protocol work as threads_http (see http_min.h).
 * SIGTERM/SIGINT print the number of requests served and exit.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http_min.h"

#define DEFAULT_WORKERS 128
#define MAX_WORKERS 100000

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

/* Unbounded FIFO of accepted descriptors: a ring buffer that doubles when full. */
static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_nonempty = PTHREAD_COND_INITIALIZER;
static int *queue_fds;
static size_t queue_cap, queue_head, queue_len;

static int queue_push(int fd)
{
    pthread_mutex_lock(&queue_lock);
    if (queue_len == queue_cap) {
        size_t ncap = queue_cap ? queue_cap * 2 : 1024;
        int *n = malloc(ncap * sizeof *n);
        if (n == NULL) {
            pthread_mutex_unlock(&queue_lock);
            return -1;
        }
        for (size_t i = 0; i < queue_len; i++)
            n[i] = queue_fds[(queue_head + i) % queue_cap];
        free(queue_fds);
        queue_fds = n;
        queue_cap = ncap;
        queue_head = 0;
    }
    queue_fds[(queue_head + queue_len) % queue_cap] = fd;
    queue_len++;
    pthread_cond_signal(&queue_nonempty);
    pthread_mutex_unlock(&queue_lock);
    return 0;
}

static int queue_pop(void)
{
    pthread_mutex_lock(&queue_lock);
    while (queue_len == 0)
        pthread_cond_wait(&queue_nonempty, &queue_lock);
    int fd = queue_fds[queue_head];
    queue_head = (queue_head + 1) % queue_cap;
    queue_len--;
    pthread_mutex_unlock(&queue_lock);
    return fd;
}


static void *worker_main(void *arg)
{
    (void)arg;
    for (;;)
        http_serve_blocking(queue_pop(), count_requests);
    return NULL;
}

int main(int argc, char **argv)
{
    static const char usage[] = "pool_http PORT [WORKERS]";
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s\n", usage);
        return 2;
    }
    int port = parse_port(argv[1], usage);
    long workers = DEFAULT_WORKERS;
    if (argc == 3) {
        char *end;
        workers = strtol(argv[2], &end, 10);
        if (*argv[2] == '\0' || *end != '\0' || workers < 1 || workers > MAX_WORKERS) {
            fprintf(stderr, "usage: %s  (1 <= WORKERS <= %d)\n", usage, MAX_WORKERS);
            return 2;
        }
    }
    install_exit_report("pool_http", total_requests);
    int lfd = listen_tcp(port, 0, 0);

    for (long i = 0; i < workers; i++) {
        pthread_t tid;
        int err = pthread_create(&tid, NULL, worker_main, NULL);
        if (err != 0) {
            fprintf(stderr, "pool_http: pthread_create: %s\n", strerror(err));
            return 1;
        }
        pthread_detach(tid);
    }

    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                struct timespec ts = {0, 10 * 1000 * 1000};
                nanosleep(&ts, NULL);
            }
            continue;
        }
        set_nodelay(fd);
        if (queue_push(fd) < 0)
            close(fd);
    }
}
