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

Test(fd, shadow_flag_hides_the_real_one)
{
    int sv[2];
    cr_assert_eq(shim__socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct shim_fd *e = shim__fd_get(sv[0]);
    int before = shim__fcntl(sv[0], F_GETFL);
    cr_assert(shim__fd_make_nonblocking(sv[0], e));
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
    cr_assert(shim__fd_make_nonblocking(sv[0], e));
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
    cr_assert_not(shim__fd_make_nonblocking(p[0], shim__fd_get(p[0])),
                  "a pipe may be shared with other processes");
    cr_assert_not(fcntl(p[0], F_GETFL) & O_NONBLOCK);
}

Test(fd, dup_copies_the_state)
{
    int sv[2];
    cr_assert_eq(shim__socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct shim_fd *e = shim__fd_get(sv[0]);
    cr_assert(shim__fd_make_nonblocking(sv[0], e));
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
