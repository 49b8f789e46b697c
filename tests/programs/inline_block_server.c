// fibershim-carriers: 1 2
/* A thread-per-connection server in which one handler blocks its kernel
 * thread in a call no wrapper can see: a read of a pipe made with an
 * inline syscall instruction. Meanwhile 20 other clients connect and do 50
 * request/response round trips each, through an acceptor thread and
 * handler threads. Only after every one of them has finished does main
 * write the pipe. So if the blocked handler held up anything the other
 * clients need (the acceptor, handlers that already ran where it blocks,
 * the readiness of their sockets, their timers), the program would never
 * finish: under the shim, the monitor must hand the stuck carrier's
 * runnable threads, readiness and timers to other carriers or a spare. */
#include "common.h"

#include <stdatomic.h>
#include <sys/syscall.h>

#define FAST_CLIENTS 20
#define ROUNDS 50
#define NCONNS (1 + FAST_CLIENTS)

static int listen_fd, port;
static int pipe_fd[2];
static pthread_t handlers[NCONNS];
static atomic_int blocker_entered;

static void *handle(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char cmd;
    if (read_full(fd, &cmd, 1) != 1)
        FAIL("no command");
    if (cmd == 'B') {
        char c = '?';
        atomic_store(&blocker_entered, 1);
        long n = inline_read(pipe_fd[0], &c, 1);
        if (n != 1)
            FAIL("inline read returned %ld", n);
        write_all(fd, &c, 1);
    } else {
        char buf[8];
        while (read_full(fd, buf, sizeof buf) == sizeof buf) {
            usleep(200); /* a timer per round trip too */
            write_all(fd, buf, sizeof buf);
        }
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

static atomic_int answered;

static void *fast_client(void *arg)
{
    int id = (int)(intptr_t)arg;
    int fd = connect_local(port);
    write_all(fd, "E", 1);
    for (int r = 0; r < ROUNDS; r++) {
        char out[8], in[8];
        snprintf(out, sizeof out, "%03d%04d", id, r);
        write_all(fd, out, sizeof out);
        if (read_full(fd, in, sizeof in) != sizeof in || memcmp(in, out, sizeof in) != 0)
            FAIL("client %d round %d: wrong answer", id, r);
        atomic_fetch_add(&answered, 1);
    }
    close(fd);
    return NULL;
}

int main(void)
{
    tp_setup(120);
    CHECK_SYS(pipe(pipe_fd));
    listen_fd = listen_local(NCONNS, &port);
    pthread_t acc, fast[FAST_CLIENTS];
    CHECK_RC(pthread_create(&acc, NULL, acceptor, NULL));

    int bfd = connect_local(port);
    write_all(bfd, "B", 1);
    while (!atomic_load(&blocker_entered))
        sleep_ms(1);
    sleep_ms(20); /* into the read, most likely: either way it blocks there */

    for (int i = 0; i < FAST_CLIENTS; i++)
        CHECK_RC(pthread_create(&fast[i], NULL, fast_client, (void *)(intptr_t)i));
    for (int i = 0; i < FAST_CLIENTS; i++)
        CHECK_RC(pthread_join(fast[i], NULL));
    printf("while a handler was blocked: %d of %d round trips answered\n",
           atomic_load(&answered), FAST_CLIENTS * ROUNDS);

    CHECK_SYS(write(pipe_fd[1], "x", 1));
    char c = 0;
    if (read_full(bfd, &c, 1) != 1)
        FAIL("the blocked handler did not answer");
    printf("then the blocked handler answered '%c'\n", c);
    close(bfd);
    CHECK_RC(pthread_join(acc, NULL));
    for (int i = 0; i < NCONNS; i++)
        CHECK_RC(pthread_join(handlers[i], NULL));
    return 0;
}
