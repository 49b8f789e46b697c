// fibershim-carriers: 1 2
// blocking_handler.c - SBCL's stop-the-world GC handler blocks (it waits
// in sem_wait until the GC is over) in a thread it interrupted in a read,
// poll or sleep (issue #15). Under the shim the handler runs from the
// interrupt hook inside the interrupted park, its own wait parks the fiber
// again, and when it returns the outer park finds another park's token:
// "internal error at runtime/park.c:297" and SIGABRT. Plain pthread
// program; same output with and without the shim. It failed under the
// shim before the hook ran after the park ended (issue 13).
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static sem_t in_handler, release;
static int fds[2];

static void on_usr2(int sig)
{
    sem_post(&in_handler);
    while (sem_wait(&release) != 0 && errno == EINTR) {
    }
}

static void *reader(void *a)
{
    char c = 0;
    ssize_t n;
    while ((n = read(fds[0], &c, 1)) < 0 && errno == EINTR) {
    }
    printf("read after the handler returned: %zd '%c'\n", n, c);
    return a;
}

int main(void)
{
    sem_init(&in_handler, 0, 0);
    sem_init(&release, 0, 0);
    if (pipe(fds) != 0)
        return 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr2;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR2, &sa, NULL);
    pthread_t t;
    pthread_create(&t, NULL, reader, NULL);
    nanosleep(&(struct timespec){0, 50000000}, NULL); /* in read by now */
    pthread_kill(t, SIGUSR2);
    while (sem_wait(&in_handler) != 0 && errno == EINTR) {
    }
    nanosleep(&(struct timespec){0, 20000000}, NULL); /* the handler waits */
    sem_post(&release);
    nanosleep(&(struct timespec){0, 20000000}, NULL);
    if (write(fds[1], "x", 1) != 1)
        return 1;
    pthread_join(t, NULL);
    return 0;
}
