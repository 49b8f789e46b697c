/*
 * test_fd.c - the fd-state table and the shadow O_NONBLOCK flag (shim/fd.c),
 * and the blocking-I/O contract of shim/io.c for fibers.
 *
 * The shim is compiled with SHIM_NO_EXPORTS here: the test calls the
 * shim__<name> implementations directly, from fibers made with fs_spawn.
 */
#include <criterion/criterion.h>

#include "fd.h"
#include "shim.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int shim__socketpair(int domain, int type, int protocol, int sv[2]);
int shim__pipe2(int fds[2], int flags);
int shim__close(int fd);
int shim__dup(int fd);
int shim__dup2(int from, int to);
int shim__fcntl(int fd, int cmd, ...);
int shim__ioctl(int fd, unsigned long req, ...);
int shim__setsockopt(int fd, int level, int name, const void *val, socklen_t len);
ssize_t shim__read(int fd, void *buf, size_t len);
ssize_t shim__write(int fd, const void *buf, size_t len);
int shim__accept4(int fd, struct sockaddr *addr, socklen_t *alen, int flags);

static void *run_in_fiber(void *(*fn)(void *), void *arg)
{
    fs_fiber *f;
    cr_assert_eq(fs_spawn(&f, fn, arg, NULL), 0);
    void *ret;
    cr_assert_eq(fs_join(f, &ret, FS_NO_DEADLINE), 0);
    return ret;
}

static void setup(void)
{
    fs_init(&(struct fs_config){.carriers = 2});
}

TestSuite(fd, .init = setup, .timeout = 30);

/* ---- classification ------------------------------------------------------ */

Test(fd, classifies_kinds_lazily)
{
    int sv[2], dg[2], p[2];
    cr_assert_eq(shim__socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    cr_assert_eq(shim__socketpair(AF_UNIX, SOCK_DGRAM, 0, dg), 0);
    cr_assert_eq(shim__pipe2(p, 0), 0);
    char path[] = "/tmp/fibershim-fd-XXXXXX";
    int file = mkstemp(path);
    unlink(path);
    cr_assert_geq(file, 0);

    cr_assert_eq(shim__fd_get(sv[0])->kind, SHIM_FD_STREAM);
    cr_assert_eq(shim__fd_get(dg[0])->kind, SHIM_FD_DGRAM);
    cr_assert_eq(shim__fd_get(p[0])->kind, SHIM_FD_PIPE);
    cr_assert_eq(shim__fd_get(file)->kind, SHIM_FD_FILE);
    errno = 0;
    cr_assert_null(shim__fd_get(-1));
    cr_assert_eq(errno, EBADF);
}

Test(fd, closed_fd_is_not_classified)
{
    int p[2];
    cr_assert_eq(shim__pipe2(p, 0), 0);
    cr_assert_not_null(shim__fd_get(p[0]));
    cr_assert_eq(shim__close(p[0]), 0);
    cr_assert_eq(shim__fd_peek(p[0])->kind, SHIM_FD_UNKNOWN, "close forgets the fd");
    errno = 0;
    cr_assert_null(shim__fd_get(p[0]));
    cr_assert_eq(errno, EBADF);
}

Test(fd, reused_number_is_reclassified)
{
    int sv[2];
    cr_assert_eq(shim__socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    cr_assert_eq(shim__fd_get(sv[0])->kind, SHIM_FD_STREAM);
    int n = sv[0];
    shim__close(sv[0]);
    int p[2];
    cr_assert_eq(shim__pipe2(p, 0), 0);
    cr_assert_eq(p[0], n, "the kernel reuses the lowest number");
    cr_assert_eq(shim__fd_get(n)->kind, SHIM_FD_PIPE);
}

Test(fd, socket_timeouts_are_read_and_tracked)
{
    int sv[2];
    cr_assert_eq(shim__socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct timeval tv = {1, 500000};
    /* Set before the shim classified the fd: read back at classification. */
    cr_assert_eq(setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    cr_assert_eq(shim__fd_get(sv[0])->rcvtimeo, 1500000000);
    /* Set afterwards through the wrapper: tracked. */
    tv = (struct timeval){0, 250000};
    cr_assert_eq(shim__setsockopt(sv[0], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), 0);
    cr_assert_eq(shim__fd_get(sv[0])->sndtimeo, 250000000);
    struct timeval got;
    socklen_t len = sizeof got;
    cr_assert_eq(getsockopt(sv[0], SOL_SOCKET, SO_SNDTIMEO, &got, &len), 0);
    cr_assert(got.tv_sec == 0 && got.tv_usec >= 240000 && got.tv_usec <= 260000,
              "the kernel keeps its own copy (in ticks)");
}

/* ---- the shadow O_NONBLOCK --------------------------------------------------- */

/* Holds fd non-blocking underneath, with the mark, as a connect does. */
static bool hold_marked(int fd, struct shim_fd *e)
{
    int saved;
    return shim__fd_hold_call(fd, e, true, &saved) == 1;
}

Test(fd, shadow_flag_hides_the_real_one)
{
    int sv[2];
    cr_assert_eq(shim__socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct shim_fd *e = shim__fd_get(sv[0]);
    int before = shim__fcntl(sv[0], F_GETFL);
    cr_assert(hold_marked(sv[0], e));
    cr_assert(fcntl(sv[0], F_GETFL) & O_NONBLOCK, "non-blocking underneath");
    cr_assert_eq(shim__fcntl(sv[0], F_GETFL), before, "the user sees what they chose");

    /* The user sets O_NONBLOCK: shadow follows, real stays set. */
    cr_assert_eq(shim__fcntl(sv[0], F_SETFL, before | O_NONBLOCK), 0);
    cr_assert(shim__fcntl(sv[0], F_GETFL) & O_NONBLOCK);
    cr_assert_eq(e->user_nb, 1);
    /* And clears it: the real flag must stay. */
    cr_assert_eq(shim__fcntl(sv[0], F_SETFL, before & ~O_NONBLOCK), 0);
    cr_assert_not(shim__fcntl(sv[0], F_GETFL) & O_NONBLOCK);
    cr_assert(fcntl(sv[0], F_GETFL) & O_NONBLOCK);
}

Test(fd, fionbio_updates_the_shadow)
{
    int sv[2];
    cr_assert_eq(shim__socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct shim_fd *e = shim__fd_get(sv[0]);
    cr_assert(hold_marked(sv[0], e));
    int on = 1, off = 0;
    cr_assert_eq(shim__ioctl(sv[0], FIONBIO, &on), 0);
    cr_assert_eq(e->user_nb, 1);
    cr_assert_eq(shim__ioctl(sv[0], FIONBIO, &off), 0);
    cr_assert_eq(e->user_nb, 0);
    cr_assert(fcntl(sv[0], F_GETFL) & O_NONBLOCK, "still non-blocking underneath");
}

Test(fd, pipes_are_never_made_nonblocking_underneath)
{
    int p[2];
    cr_assert_eq(shim__pipe2(p, 0), 0);
    cr_assert_not(hold_marked(p[0], shim__fd_get(p[0])),
                  "a pipe may be shared with other processes");
    cr_assert_not(fcntl(p[0], F_GETFL) & O_NONBLOCK);
}

Test(fd, dup_copies_the_state)
{
    int sv[2];
    cr_assert_eq(shim__socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct shim_fd *e = shim__fd_get(sv[0]);
    cr_assert(hold_marked(sv[0], e));
    int d = shim__dup(sv[0]);
    cr_assert_geq(d, 0);
    struct shim_fd *de = shim__fd_peek(d);
    cr_assert_eq(de->kind, SHIM_FD_STREAM);
    cr_assert_eq(de->real_nb, 1);
    cr_assert_not(shim__fcntl(d, F_GETFL) & O_NONBLOCK, "same shadow through the dup");
    int d2 = shim__fcntl(sv[0], F_DUPFD_CLOEXEC, 100);
    cr_assert_geq(d2, 100);
    cr_assert_eq(shim__fd_peek(d2)->real_nb, 1);
    int p[2];
    cr_assert_eq(shim__pipe2(p, 0), 0);
    cr_assert_eq(shim__dup2(p[0], d), d);
    cr_assert_eq(shim__fd_get(d)->kind, SHIM_FD_PIPE, "dup2 replaces what d was");
}

/* ---- I/O contract from a fiber ------------------------------------------------- */

static int g_sv[2];

static void *read_user_nonblocking(void *arg)
{
    char c;
    errno = 0;
    ssize_t n = shim__read(g_sv[0], &c, 1);
    return (void *)(intptr_t)(n == -1 && errno == EAGAIN);
}

Test(fd, user_nonblocking_gets_eagain)
{
    cr_assert_eq(shim__socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, g_sv), 0);
    cr_assert_eq((intptr_t)run_in_fiber(read_user_nonblocking, NULL), 1);
}

static void *write_later(void *arg)
{
    fs_sleep_until(fs_now() + 30 * 1000000);
    shim__write(g_sv[1], "hello", 5);
    return NULL;
}

static void *blocking_read(void *arg)
{
    fs_fiber *w;
    fs_spawn(&w, write_later, NULL, NULL);
    char buf[16];
    ssize_t n = shim__read(g_sv[0], buf, sizeof buf); /* parks ~30 ms */
    fs_join(w, NULL, FS_NO_DEADLINE);
    return (void *)(intptr_t)n;
}

Test(fd, blocking_read_parks_until_data)
{
    cr_assert_eq(shim__socketpair(AF_UNIX, SOCK_STREAM, 0, g_sv), 0);
    cr_assert_eq((intptr_t)run_in_fiber(blocking_read, NULL), 5);
    cr_assert_not(shim__fcntl(g_sv[0], F_GETFL) & O_NONBLOCK);
}

static void *timed_read(void *arg)
{
    struct timeval tv = {0, 100000};
    shim__setsockopt(g_sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char c;
    int64_t t0 = fs_now();
    errno = 0;
    ssize_t n = shim__read(g_sv[0], &c, 1);
    int64_t el = fs_now() - t0;
    return (void *)(intptr_t)(n == -1 && errno == EAGAIN && el >= 100000000 - 1000000 &&
                              el < 1000000000);
}

Test(fd, so_rcvtimeo_gives_eagain_at_the_timeout)
{
    cr_assert_eq(shim__socketpair(AF_UNIX, SOCK_STREAM, 0, g_sv), 0);
    cr_assert_eq((intptr_t)run_in_fiber(timed_read, NULL), 1);
}

static void *big_write(void *arg)
{
    size_t len = 4 << 20; /* far more than the socket buffer */
    char *buf = malloc(len);
    memset(buf, 'x', len);
    ssize_t n = shim__write(g_sv[0], buf, len);
    free(buf);
    return (void *)(intptr_t)n;
}

static void *drain(void *arg)
{
    size_t total = 0;
    char buf[65536];
    while (total < (size_t)(intptr_t)arg) {
        ssize_t n = shim__read(g_sv[1], buf, sizeof buf);
        if (n <= 0)
            break;
        total += (size_t)n;
    }
    return (void *)(intptr_t)total;
}

Test(fd, blocking_write_writes_everything)
{
    cr_assert_eq(shim__socketpair(AF_UNIX, SOCK_STREAM, 0, g_sv), 0);
    fs_fiber *w, *r;
    fs_spawn(&w, big_write, NULL, NULL);
    fs_spawn(&r, drain, (void *)(intptr_t)(4 << 20), NULL);
    void *wn, *rn;
    fs_join(w, &wn, FS_NO_DEADLINE);
    fs_join(r, &rn, FS_NO_DEADLINE);
    cr_assert_eq((intptr_t)wn, 4 << 20);
    cr_assert_eq((intptr_t)rn, 4 << 20);
}

static void *closer(void *arg)
{
    fs_sleep_until(fs_now() + 20 * 1000000);
    shim__close(g_sv[0]);
    return NULL;
}

static void *read_then_closed(void *arg)
{
    fs_fiber *c;
    fs_spawn(&c, closer, NULL, NULL);
    char ch;
    errno = 0;
    ssize_t n = shim__read(g_sv[0], &ch, 1);
    int e = errno;
    fs_join(c, NULL, FS_NO_DEADLINE);
    return (void *)(intptr_t)(n == -1 && e == EBADF);
}

Test(fd, close_wakes_a_blocked_reader_with_ebadf)
{
    cr_assert_eq(shim__socketpair(AF_UNIX, SOCK_STREAM, 0, g_sv), 0);
    cr_assert_eq((intptr_t)run_in_fiber(read_then_closed, NULL), 1);
}

static void *write_to_closed_peer(void *arg)
{
    shim__close(g_sv[1]);
    errno = 0;
    ssize_t n = shim__write(g_sv[0], "x", 1);
    return (void *)(intptr_t)(n == -1 && errno == EPIPE);
}

Test(fd, epipe_and_sigpipe_come_through)
{
    signal(SIGPIPE, SIG_IGN);
    cr_assert_eq(shim__socketpair(AF_UNIX, SOCK_STREAM, 0, g_sv), 0);
    cr_assert_eq((intptr_t)run_in_fiber(write_to_closed_peer, NULL), 1);
}

static void *write_sigpipe(void *arg)
{
    shim__close(g_sv[1]);
    shim__write(g_sv[0], "x", 1);
    return NULL;
}

Test(fd, sigpipe_is_raised, .signal = SIGPIPE)
{
    cr_assert_eq(shim__socketpair(AF_UNIX, SOCK_STREAM, 0, g_sv), 0);
    run_in_fiber(write_sigpipe, NULL);
}

static void *read_eof(void *arg)
{
    shim__close(g_sv[1]);
    char c;
    return (void *)(intptr_t)shim__read(g_sv[0], &c, 1);
}

Test(fd, eof_reads_zero)
{
    cr_assert_eq(shim__socketpair(AF_UNIX, SOCK_STREAM, 0, g_sv), 0);
    cr_assert_eq((intptr_t)run_in_fiber(read_eof, NULL), 0);
}

static int g_pipe[2];

static void *pipe_reader(void *arg)
{
    char buf[8];
    ssize_t n = shim__read(g_pipe[0], buf, sizeof buf); /* parks: RWF_NOWAIT */
    return (void *)(intptr_t)n;
}

static void *pipe_writer(void *arg)
{
    fs_sleep_until(fs_now() + 20 * 1000000);
    return (void *)(intptr_t)shim__write(g_pipe[1], "abc", 3);
}

Test(fd, blocking_pipe_read_parks_and_keeps_blocking_mode)
{
    cr_assert_eq(shim__pipe2(g_pipe, 0), 0);
    fs_fiber *r, *w;
    fs_spawn(&r, pipe_reader, NULL, NULL);
    fs_spawn(&w, pipe_writer, NULL, NULL);
    void *rn, *wn;
    fs_join(r, &rn, FS_NO_DEADLINE);
    fs_join(w, &wn, FS_NO_DEADLINE);
    cr_assert_eq((intptr_t)rn, 3);
    cr_assert_eq((intptr_t)wn, 3);
    cr_assert_not(fcntl(g_pipe[0], F_GETFL) & O_NONBLOCK, "never changed underneath");
}

static void *plain_thread_read(void *arg)
{
    char c;
    return (void *)(intptr_t)shim__read(g_sv[0], &c, 1);
}

Test(fd, plain_thread_calls_pass_through)
{
    /* The Criterion thread is not a fiber: the wrapper is the real call. */
    cr_assert_eq(shim__socketpair(AF_UNIX, SOCK_STREAM, 0, g_sv), 0);
    cr_assert_eq(write(g_sv[1], "z", 1), 1);
    cr_assert_eq((intptr_t)plain_thread_read(NULL), 1);
    cr_assert_eq(shim__fd_peek(g_sv[0]) ? shim__fd_peek(g_sv[0])->real_nb : 0, 0);
}

/* ---- file descriptions shared with other processes (fd.c) ------------------------ */

int shim__socket(int domain, int type, int protocol);
int shim__connect(int fd, const struct sockaddr *addr, socklen_t alen);
ssize_t shim__sendfile(int out, int in, off_t *off, size_t count);

#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>

/* A TCP listener on 127.0.0.1 made through the wrapper; *addr gets its
 * address. */
static int listener(struct sockaddr_in *addr)
{
    int l = shim__socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(l, 0);
    *addr = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof *addr;
    cr_assert_eq(bind(l, (struct sockaddr *)addr, len), 0);
    cr_assert_eq(listen(l, 16), 0);
    cr_assert_eq(getsockname(l, (struct sockaddr *)addr, &len), 0);
    return l;
}

static int connect_to(const struct sockaddr_in *addr)
{
    int c = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_eq(connect(c, (const struct sockaddr *)addr, sizeof *addr), 0);
    return c;
}

Test(fd, the_mark_reads_as_blocking_in_every_shim_process)
{
    struct sockaddr_in a;
    int l = listener(&a);
    int plain = fcntl(l, F_GETFL);
    /* Marked as another process's shim would mark it; this process knows
     * nothing of it yet (an exec'd image, a sibling forked earlier). */
    cr_assert_eq(fcntl(l, F_SETFL, plain | SHIM_FD_MARK), 0);
    shim__fd_reset(l);
    struct shim_fd *e = shim__fd_get(l);
    cr_assert_eq(e->user_nb, 0, "the mark means blocking");
    cr_assert_eq(e->real_nb, SHIM_HOLD_MARKED);
    cr_assert_eq(shim__fcntl(l, F_GETFL), plain, "F_GETFL hides both bits");
    /* On a file, O_APPEND|O_NONBLOCK is the program's own. */
    char path[] = "/tmp/fibershim-fd-XXXXXX";
    int f = mkstemp(path);
    unlink(path);
    cr_assert_eq(fcntl(f, F_SETFL, O_APPEND | O_NONBLOCK), 0);
    cr_assert_eq(shim__fcntl(f, F_GETFL) & SHIM_FD_MARK, SHIM_FD_MARK);
}

Test(fd, the_programs_mode_changes_keep_or_drop_the_mark)
{
    struct sockaddr_in a;
    int l = listener(&a);
    struct shim_fd *e = shim__fd_get(l);
    int plain = fcntl(l, F_GETFL);
    cr_assert_eq(shim__fd_accept_mode(l, e), SHIM_ACCEPT_HELD);
    cr_assert_eq(fcntl(l, F_GETFL), plain | SHIM_FD_MARK, "marked at the first accept");
    /* O_NONBLOCK asked by the program: its choice, visible to all. */
    cr_assert_eq(shim__fcntl(l, F_SETFL, plain | O_NONBLOCK), 0);
    cr_assert_eq(fcntl(l, F_GETFL), plain | O_NONBLOCK);
    cr_assert_eq(shim__fd_accept_mode(l, e), SHIM_ACCEPT_USER_NB);
    /* Blocking again: held again, with the mark. */
    cr_assert_eq(shim__fcntl(l, F_SETFL, plain), 0);
    cr_assert_eq(fcntl(l, F_GETFL), plain | SHIM_FD_MARK);
    cr_assert_eq(shim__fcntl(l, F_GETFL), plain);
    int on = 1, off = 0;
    cr_assert_eq(shim__ioctl(l, FIONBIO, &on), 0);
    cr_assert_eq(fcntl(l, F_GETFL), plain | O_NONBLOCK, "FIONBIO 1 drops the mark");
    cr_assert_eq(shim__ioctl(l, FIONBIO, &off), 0);
    cr_assert_eq(fcntl(l, F_GETFL), plain | SHIM_FD_MARK, "FIONBIO 0 keeps it held");
    /* O_APPEND asked by the program leaves no room for the mark. */
    cr_assert_eq(shim__fcntl(l, F_SETFL, plain | O_APPEND), 0);
    cr_assert_eq(fcntl(l, F_GETFL), plain | O_APPEND);
    cr_assert_eq(shim__fd_accept_mode(l, e), SHIM_ACCEPT_BLOCKING);
    cr_assert_eq(shim__fcntl(l, F_SETFL, plain), 0);
    cr_assert_eq(shim__fd_accept_mode(l, e), SHIM_ACCEPT_HELD, "not released: our own choice");
}

Test(fd, a_listener_cleared_outside_the_shim_is_released)
{
    struct sockaddr_in a;
    int l = listener(&a);
    struct shim_fd *e = shim__fd_get(l);
    int plain = fcntl(l, F_GETFL);
    cr_assert_eq(shim__fd_accept_mode(l, e), SHIM_ACCEPT_HELD);
    /* Until a fork the listener is ours alone: the entry is trusted. */
    shim__fd_forked();
    /* Another process sets O_NONBLOCK itself, then clears it. */
    cr_assert_eq(fcntl(l, F_SETFL, plain | O_NONBLOCK), 0);
    cr_assert_eq(shim__fd_accept_mode(l, e), SHIM_ACCEPT_USER_NB);
    cr_assert_eq(shim__fcntl(l, F_GETFL), plain | O_NONBLOCK);
    cr_assert_eq(fcntl(l, F_SETFL, plain), 0);
    cr_assert_eq(shim__fd_accept_mode(l, e), SHIM_ACCEPT_BLOCKING);
    cr_assert_eq(e->released, 1);
    cr_assert_eq(fcntl(l, F_GETFL), plain, "never marked again here");
    cr_assert_eq(shim__fcntl(l, F_SETFL, plain), 0);
    cr_assert_eq(fcntl(l, F_GETFL), plain, "nor by the program's F_SETFL");
    cr_assert_eq(shim__fd_accept_mode(l, e), SHIM_ACCEPT_BLOCKING);
}

static void setup1(void)
{
    fs_init(&(struct fs_config){.carriers = 1});
}

static int g_l;
static struct sockaddr_in g_addr;
static atomic_int g_ran;

static void *accept_fiber(void *arg)
{
    return (void *)(intptr_t)shim__accept4(g_l, NULL, NULL, 0);
}

static void *connect_after_20ms(void *arg)
{
    fs_sleep_until(fs_now() + 20 * 1000000);
    atomic_store(&g_ran, 1);
    return (void *)(intptr_t)connect_to(&g_addr);
}

Test(fd, accept_on_a_released_listener_keeps_the_carrier, .init = setup1)
{
    g_l = listener(&g_addr);
    struct shim_fd *e = shim__fd_get(g_l);
    cr_assert_eq(shim__fd_accept_mode(g_l, e), SHIM_ACCEPT_HELD);
    shim__fd_forked();
    cr_assert_eq(fcntl(g_l, F_SETFL, fcntl(g_l, F_GETFL) & ~SHIM_FD_MARK), 0);
    /* One carrier: if the accept blocked it, the connecting fiber would
     * never run, and the accept would never return. */
    fs_fiber *a, *c;
    cr_assert_eq(fs_spawn(&a, accept_fiber, NULL, NULL), 0);
    cr_assert_eq(fs_spawn(&c, connect_after_20ms, NULL, NULL), 0);
    void *nfd, *cfd;
    cr_assert_eq(fs_join(a, &nfd, FS_NO_DEADLINE), 0);
    cr_assert_eq(fs_join(c, &cfd, FS_NO_DEADLINE), 0);
    cr_assert_geq((intptr_t)nfd, 0);
    cr_assert_eq(atomic_load(&g_ran), 1);
    cr_assert_eq(e->released, 1);
    cr_assert_not(fcntl(g_l, F_GETFL) & O_NONBLOCK, "left blocking for the other process");
}

static void *connect_later_thread(void *arg)
{
    struct timespec t = {0, 50 * 1000000};
    nanosleep(&t, NULL);
    return (void *)(intptr_t)connect_to(&g_addr);
}

Test(fd, plain_thread_accept_blocks_on_a_marked_listener)
{
    g_l = listener(&g_addr);
    int plain = fcntl(g_l, F_GETFL);
    /* Marked by another process that shares it since a fork. */
    shim__fd_forked();
    cr_assert_eq(fcntl(g_l, F_SETFL, plain | SHIM_FD_MARK), 0);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, connect_later_thread, NULL), 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int c = shim__accept4(g_l, NULL, NULL, 0); /* the Criterion thread: not a fiber */
    clock_gettime(CLOCK_MONOTONIC, &t1);
    pthread_join(t, NULL);
    cr_assert_geq(c, 0, "blocked until the connection, no EAGAIN");
    int64_t ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    cr_assert_geq(ms, 40, "it waited (50 ms, 10 ms tolerance)");
    /* The program's own O_NONBLOCK: EAGAIN at once. */
    cr_assert_eq(fcntl(g_l, F_SETFL, plain | O_NONBLOCK), 0);
    errno = 0;
    cr_assert_eq(shim__accept4(g_l, NULL, NULL, 0), -1);
    cr_assert_eq(errno, EAGAIN);
}

Test(fd, exec_handover_clears_inherited_marks_only)
{
    struct sockaddr_in a;
    int inherited = listener(&a);
    int closed_on_exec = listener(&a);
    int user_nb = listener(&a);
    int plain = fcntl(inherited, F_GETFL);
    cr_assert_eq(fcntl(inherited, F_SETFL, plain | SHIM_FD_MARK), 0);
    cr_assert_eq(fcntl(closed_on_exec, F_SETFL, plain | SHIM_FD_MARK), 0);
    cr_assert_eq(fcntl(closed_on_exec, F_SETFD, FD_CLOEXEC), 0);
    cr_assert_eq(fcntl(user_nb, F_SETFL, plain | O_NONBLOCK), 0);
    struct shim_fd_handover h;
    shim__fd_exec_handover(&h);
    cr_assert_eq(h.n, 1);
    cr_assert_eq(fcntl(inherited, F_GETFL), plain, "the program's blocking mode");
    cr_assert_eq(fcntl(closed_on_exec, F_GETFL), plain | SHIM_FD_MARK, "not inherited");
    cr_assert_eq(fcntl(user_nb, F_GETFL), plain | O_NONBLOCK, "the program's own choice");
    shim__fd_exec_undo(&h);
    cr_assert_eq(fcntl(inherited, F_GETFL), plain | SHIM_FD_MARK, "the exec failed: marked again");
}

static void *connect_fiber(void *arg)
{
    return (void *)(intptr_t)shim__connect(g_sv[0], (struct sockaddr *)&g_addr, sizeof g_addr);
}

Test(fd, connect_marks_only_while_it_lasts)
{
    g_l = listener(&g_addr);
    g_sv[0] = shim__socket(AF_INET, SOCK_STREAM, 0);
    int plain = fcntl(g_sv[0], F_GETFL);
    cr_assert_eq((intptr_t)run_in_fiber(connect_fiber, NULL), 0);
    cr_assert_eq(fcntl(g_sv[0], F_GETFL), plain, "no O_NONBLOCK, no mark, once connected");
    cr_assert_eq(shim__fd_peek(g_sv[0])->real_nb, SHIM_HOLD_NONE);
}

static int g_file;
#define SENDFILE_BYTES (4 << 20)

static void *sendfile_fiber(void *arg)
{
    off_t off = 0;
    return (void *)(intptr_t)shim__sendfile(g_sv[0], g_file, &off, SENDFILE_BYTES);
}

static void *drain_later(void *arg)
{
    fs_sleep_until(fs_now() + 20 * 1000000);
    static char buf[65536];
    size_t got = 0;
    while (got < SENDFILE_BYTES) {
        ssize_t n = shim__read(g_sv[1], buf, sizeof buf);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    return (void *)(intptr_t)got;
}

Test(fd, sendfile_holds_the_flag_for_the_call_only)
{
    cr_assert_eq(shim__socketpair(AF_UNIX, SOCK_STREAM, 0, g_sv), 0);
    char path[] = "/tmp/fibershim-fd-XXXXXX";
    g_file = mkstemp(path);
    unlink(path);
    cr_assert_eq(ftruncate(g_file, SENDFILE_BYTES), 0);
    int plain = fcntl(g_sv[0], F_GETFL);
    fs_fiber *s, *d;
    cr_assert_eq(fs_spawn(&s, sendfile_fiber, NULL, NULL), 0);
    cr_assert_eq(fs_spawn(&d, drain_later, NULL, NULL), 0);
    void *sent, *got;
    cr_assert_eq(fs_join(s, &sent, FS_NO_DEADLINE), 0);
    cr_assert_eq(fs_join(d, &got, FS_NO_DEADLINE), 0);
    cr_assert_eq((intptr_t)sent, SENDFILE_BYTES, "all of it, parking while the buffer is full");
    cr_assert_eq((intptr_t)got, SENDFILE_BYTES);
    cr_assert_eq(fcntl(g_sv[0], F_GETFL), plain, "the program's blocking mode after the call");
}
