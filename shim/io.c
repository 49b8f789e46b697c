/*
 * io.c - blocking I/O parks the fiber, not the carrier.
 *
 * Every wrapper has libdill's shape: try the call without blocking; on
 * EAGAIN, wait for the fd on the netpoller (with the SO_RCVTIMEO or
 * SO_SNDTIMEO deadline); try again. Details that keep the contract:
 *  - Nothing depends on the file description's O_NONBLOCK, which is shared
 *    with every process holding the file: sockets are tried with
 *    MSG_DONTWAIT, pipes and FIFOs with preadv2/pwritev2(RWF_NOWAIT). So a
 *    child that clears the flag cannot make a fiber block its carrier, and
 *    a pipe handed to a child keeps the blocking mode the program chose.
 *    Only accept(), connect() and sendfile() need O_NONBLOCK underneath; fd.c
 *    keeps the user's view of it in a shadow flag.
 *  - A user who chose O_NONBLOCK gets EAGAIN, as without the shim.
 *  - A blocking write or send on a stream returns only when everything is
 *    written, or on error, or at SO_SNDTIMEO (then with the partial count).
 *  - EOF, EPIPE (and SIGPIPE: send without MSG_NOSIGNAL raises it, exactly
 *    as write does), ECONNRESET come back unchanged from the kernel.
 *  - A read that returned less than asked on a stream proves the socket
 *    drained; the next read then parks without a failing syscall, unless an
 *    edge arrived meanwhile (fs_fd_drained / fs_fd_edges). A peek or an
 *    out-of-band read latches nothing; a short read of a datagram, or one
 *    that may have stopped at ancillary data or at the urgent mark, does
 *    not prove the socket drained.
 * Regular files (SHIM_FD_FILE) are not the netpoller's: a fiber's
 * read/write/readv/writev on one goes to file.c (page cache first, then a
 * spare thread). Calls from threads that are not fibers go straight to
 * the C library.
 */
#include "shim.h"
#include "fd.h"
#include "offload.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* The fortify variants are declared by glibc's headers only under
 * _FORTIFY_SOURCE; their prototypes, as glibc exports them: */
extern ssize_t __read_chk(int fd, void *buf, size_t len, size_t buflen);
extern ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags);
extern ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags,
                              struct sockaddr *addr, socklen_t *alen);

/* How an attempt avoids blocking (the `mode` of a shim_try_fn). */
enum {
    SHIM_TRY_BLOCKING = 0, /* the plain call: the fd is known ready, or user-nonblocking */
    SHIM_TRY_DONTWAIT = 1, /* sockets: MSG_DONTWAIT */
    SHIM_TRY_RWF_NOWAIT = 2, /* pipes, FIFOs: preadv2/pwritev2(RWF_NOWAIT) */
};

/* One attempt of the operation in the given mode; returns like the syscall. */
typedef ssize_t (*shim_try_fn)(int fd, void *ctx, int mode);

/* Bits of fs_fd_state that say "trying now may succeed". */
static unsigned shim__may_succeed(unsigned dir)
{
    return dir == FS_POLL_READ
               ? FS_FD_READABLE | FS_FD_RDHUP | FS_FD_HUP | FS_FD_ERR | FS_FD_PRI
               : FS_FD_WRITABLE | FS_FD_HUP | FS_FD_ERR;
}

/* After a wait of a cancellation point ended with -EINTR: whether to
 * restart it (every handler that ran had SA_RESTART, and no cancel is to
 * be acted on). */
static bool shim__io_restart(void)
{
    bool restart = shim__sig_should_restart(); /* and re-arms the flag */
    return restart && !shim__cancel_due();
}

/* The return of a cancellation point: one that failed with EINTR acts on
 * a pending cancel (the call does not return); one that moved data
 * returns it, and the next cancellation point acts (glibc's rule). */
static inline ssize_t shim__io_done(ssize_t n)
{
    if (SHIM_UNLIKELY(n < 0) && errno == EINTR)
        shim__cancel_point();
    return n;
}

/* The `want` of an attempt whose outcome says nothing about what a plain
 * read would find: MSG_PEEK leaves the queue as it was (a short peek
 * proves nothing, and with SO_PEEK_OFF even EAGAIN comes with data still
 * queued), MSG_OOB reads apart from it. Such an attempt leaves the
 * netpoller's latched state alone. */
#define SHIM_WANT_NO_LATCH SIZE_MAX

/*
 * Runs try until it does not fail with EAGAIN, parking in between.
 * want: bytes asked for. A read that returns fewer on a stream marks it
 * drained, so pass 0 where a short result proves nothing (a batch of
 * messages, a read whose ancillary data can end it early), and
 * SHIM_WANT_NO_LATCH where not even EAGAIN does. Returns like the
 * syscall; errno set on -1.
 */
static ssize_t shim__do_io(int fd, struct shim_fd *e, unsigned dir, enum fs_park_reason why,
                           shim_try_fn try, void *ctx, size_t want)
{
    uint8_t kind = atomic_load_explicit(&e->kind, memory_order_relaxed);
    bool sock = kind == SHIM_FD_STREAM || kind == SHIM_FD_DGRAM;
    bool user_nb = atomic_load_explicit(&e->user_nb, memory_order_relaxed);
    int mode = sock ? SHIM_TRY_DONTWAIT : SHIM_TRY_RWF_NOWAIT;
    if (!sock && atomic_load_explicit(&e->no_rwf_nowait, memory_order_relaxed)) {
        /* A tty or device without RWF_NOWAIT: wait until the netpoller says
         * it is ready, then make the plain call (a racing reader could
         * still make it block: the README lists this). */
        for (;;) {
            uint32_t snap = fs_fd_edges(fd, dir);
            int st = fs_fd_probe(fd);
            if (user_nb || st < 0 || (st & shim__may_succeed(dir)))
                break;
            int rc = fs_wait_fd(fd, dir, snap, FS_NO_DEADLINE, why);
            if (rc == -EBADF || (rc == -EINTR && !shim__io_restart())) {
                errno = -rc;
                return -1;
            }
            if (rc == -EINTR)
                continue;
            if (rc)
                break;
        }
        fs_count_syscall();
        ssize_t n = try(fd, ctx, SHIM_TRY_BLOCKING);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            fs_fd_drained(fd, dir, fs_fd_edges(fd, dir));
        return n;
    }
    int64_t deadline = 0; /* computed at the first wait: no clock read on the fast path */
    for (;;) {
        uint32_t snap = fs_fd_edges(fd, dir);
        unsigned st = fs_fd_state(fd);
        if (!user_nb && (st & FS_FD_REGISTERED) && !(st & shim__may_succeed(dir))) {
            /* The netpoller knows it is not ready: park without a syscall. */
            fs_count_avoided();
        } else {
            fs_count_syscall();
            ssize_t n = try(fd, ctx, mode);
            if (n >= 0) {
                /* Short on a stream: the receive queue is empty, or the
                 * send buffer full, as of this call. Not a datagram or
                 * seqpacket read (one message, whatever is queued behind
                 * it), and not once urgent data has come: a TCP read
                 * stops at the urgent mark with data queued past it. */
                if (n > 0 && (size_t)n < want && want != SHIM_WANT_NO_LATCH &&
                    (kind == SHIM_FD_STREAM || (dir == FS_POLL_WRITE && kind == SHIM_FD_PIPE)) &&
                    !(dir == FS_POLL_READ && (st & FS_FD_PRI_SEEN)))
                    fs_fd_drained(fd, dir, snap);
                return n;
            }
            if (errno == EOPNOTSUPP && mode == SHIM_TRY_RWF_NOWAIT) {
                atomic_store(&e->no_rwf_nowait, 1);
                return shim__do_io(fd, e, dir, why, try, ctx, want);
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return -1;
            if (want != SHIM_WANT_NO_LATCH)
                fs_fd_drained(fd, dir, snap);
            if (user_nb)
                return -1;
        }
        if (!deadline) {
            int64_t t = atomic_load_explicit(dir == FS_POLL_READ ? &e->rcvtimeo : &e->sndtimeo,
                                             memory_order_relaxed);
            deadline = t > 0 ? shim__deadline_after(t) : FS_NO_DEADLINE;
        }
        /* Tried after the snapshot and got EAGAIN, or parked because the
         * state read after it had no hang-up or error bit: either way a
         * latched one is stale, and waiting on it would spin. */
        int rc = fs_wait_fd(fd, dir | FS_POLL_TRIED, snap, deadline, why);
        if (rc == 0)
            continue;
        if (rc == -EINTR) {
            /* A signal sent to this fiber ran its handler (signal.c):
             * restart under SA_RESTART, else fail as the kernel would. A
             * cancel fails it too: the wrapper acts (shim__io_done). */
            if (shim__io_restart())
                continue;
            errno = EINTR;
            return -1;
        }
        if (rc == -ETIMEDOUT) {
            /* SO_RCVTIMEO/SO_SNDTIMEO: one last try, then EAGAIN as the
             * kernel reports it. */
            fs_count_syscall();
            ssize_t n = try(fd, ctx, mode);
            if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
                return n;
            errno = EAGAIN;
            return -1;
        }
        if (rc == -EPERM) {
            /* epoll refuses it (a regular file behind an fd we took for
             * something else): it never blocks in the kernel's sense. */
            atomic_store(&e->kind, SHIM_FD_FILE);
            return try(fd, ctx, SHIM_TRY_BLOCKING);
        }
        errno = -rc;
        return -1;
    }
}

/* A fiber's entry check: the fd's entry if the call should go through the
 * netpoller, NULL if it should go straight to the C library. */
static inline struct shim_fd *shim__io_entry_nocancel(int fd)
{
    if (!fs_self())
        return NULL;
    struct shim_fd *e = shim__fd_get(fd);
    if (!e || atomic_load_explicit(&e->kind, memory_order_relaxed) == SHIM_FD_FILE)
        return NULL;
    return e;
}

/* The same for a call that is a cancellation point (all but sendfile):
 * a pending cancel acts first. */
static inline struct shim_fd *shim__io_entry(int fd)
{
    if (!fs_self())
        return NULL;
    shim__cancel_point();
    struct shim_fd *e = shim__fd_get(fd);
    if (!e || atomic_load_explicit(&e->kind, memory_order_relaxed) == SHIM_FD_FILE)
        return NULL;
    return e;
}

/* After shim__io_entry() said NULL: whether the caller is a fiber and fd
 * a regular file, for file.c. */
static inline bool shim__io_file(int fd)
{
    struct shim_fd *e = fs_self() ? shim__fd_peek(fd) : NULL;
    return e && atomic_load_explicit(&e->kind, memory_order_relaxed) == SHIM_FD_FILE;
}

/* ---- reads ------------------------------------------------------------------ */

struct shim_buf {
    void *buf;
    size_t len;
    int flags;
    struct sockaddr *addr;
    socklen_t *alen;
};

static ssize_t shim__try_read(int fd, void *ctx, int mode)
{
    struct shim_buf *b = ctx;
    if (mode == SHIM_TRY_DONTWAIT)
        return REAL(recv)(fd, b->buf, b->len, MSG_DONTWAIT);
    if (mode == SHIM_TRY_RWF_NOWAIT) {
        struct iovec v = {b->buf, b->len};
        return REAL(preadv2)(fd, &v, 1, -1, RWF_NOWAIT); /* -1: the file position */
    }
    return REAL(read)(fd, b->buf, b->len);
}

ssize_t shim__read(int fd, void *buf, size_t len)
{
    struct shim_fd *e = shim__io_entry(fd);
    if (!e && shim__io_file(fd))
        return shim__file_rw1(fd, buf, len, -1, false);
    if (!e)
        return REAL(read)(fd, buf, len);
    struct shim_buf b = {buf, len, 0, NULL, NULL};
    return shim__io_done(shim__do_io(fd, e, FS_POLL_READ, FS_PARK_READ, shim__try_read, &b, len));
}
SHIM_ALIAS(read)

ssize_t shim____read_chk(int fd, void *buf, size_t len, size_t buflen)
{
    if (len > buflen)
        __builtin_trap(); /* what glibc's __chk_fail amounts to: the program is wrong */
    return shim__read(fd, buf, len);
}
SHIM_ALIAS(__read_chk)

/* Socket-only calls: any mode but blocking means MSG_DONTWAIT (on a
 * non-socket the kernel answers ENOTSOCK either way). */
static inline int shim__sockflag(int mode)
{
    return mode == SHIM_TRY_BLOCKING ? 0 : MSG_DONTWAIT;
}

/* shim__do_io's `want` for a receive of len bytes with these flags. */
static inline size_t shim__recv_want(int flags, size_t len)
{
    return flags & (MSG_PEEK | MSG_OOB) ? SHIM_WANT_NO_LATCH : len;
}

static ssize_t shim__try_recvfrom(int fd, void *ctx, int mode)
{
    struct shim_buf *b = ctx;
    return REAL(recvfrom)(fd, b->buf, b->len, b->flags | shim__sockflag(mode), b->addr, b->alen);
}

/* recv/recvfrom, including MSG_WAITALL on a blocking stream (which must
 * return the full length unless EOF, error or timeout comes first). */
static ssize_t shim__recv_common(int fd, void *buf, size_t len, int flags, struct sockaddr *addr,
                                 socklen_t *alen)
{
    struct shim_fd *e = shim__io_entry(fd);
    if (!e || (flags & MSG_DONTWAIT))
        return REAL(recvfrom)(fd, buf, len, flags, addr, alen);
    bool waitall = (flags & MSG_WAITALL) && atomic_load(&e->kind) == SHIM_FD_STREAM &&
                   !atomic_load(&e->user_nb) && !(flags & MSG_PEEK);
    size_t got = 0;
    do {
        struct shim_buf b = {(char *)buf + got, len - got, flags & ~MSG_WAITALL, addr, alen};
        ssize_t n = shim__do_io(fd, e, FS_POLL_READ, FS_PARK_READ, shim__try_recvfrom, &b,
                                shim__recv_want(flags, len - got));
        if (n < 0)
            return got ? (ssize_t)got : -1;
        if (n == 0)
            break;
        got += (size_t)n;
    } while (waitall && got < len);
    return (ssize_t)got;
}

ssize_t shim__recv(int fd, void *buf, size_t len, int flags)
{
    return shim__io_done(shim__recv_common(fd, buf, len, flags, NULL, NULL));
}
SHIM_ALIAS(recv)

ssize_t shim____recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags)
{
    if (len > buflen)
        __builtin_trap();
    return shim__recv(fd, buf, len, flags);
}
SHIM_ALIAS(__recv_chk)

ssize_t shim__recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *addr,
                       socklen_t *alen)
{
    return shim__io_done(shim__recv_common(fd, buf, len, flags, addr, alen));
}
SHIM_ALIAS(recvfrom)

ssize_t shim____recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags,
                             struct sockaddr *addr, socklen_t *alen)
{
    if (len > buflen)
        __builtin_trap();
    return shim__recvfrom(fd, buf, len, flags, addr, alen);
}
SHIM_ALIAS(__recvfrom_chk)

struct shim_msg {
    struct msghdr *msg;
    int flags;
    const struct iovec *iov;
    int iovcnt;
};

static ssize_t shim__try_readv(int fd, void *ctx, int mode)
{
    struct shim_msg *m = ctx;
    if (mode == SHIM_TRY_DONTWAIT) {
        struct msghdr h = {.msg_iov = (struct iovec *)m->iov, .msg_iovlen = (size_t)m->iovcnt};
        return REAL(recvmsg)(fd, &h, MSG_DONTWAIT);
    }
    if (mode == SHIM_TRY_RWF_NOWAIT)
        return REAL(preadv2)(fd, m->iov, m->iovcnt, -1, RWF_NOWAIT);
    return REAL(readv)(fd, m->iov, m->iovcnt);
}

static size_t shim__iov_len(const struct iovec *iov, int n)
{
    size_t t = 0;
    for (int i = 0; i < n; i++)
        t += iov[i].iov_len;
    return t;
}

ssize_t shim__readv(int fd, const struct iovec *iov, int iovcnt)
{
    struct shim_fd *e = shim__io_entry(fd);
    if (!e && shim__io_file(fd))
        return shim__file_rw(fd, iov, iovcnt, -1, false);
    if (!e)
        return REAL(readv)(fd, iov, iovcnt);
    struct shim_msg m = {NULL, 0, iov, iovcnt};
    return shim__io_done(shim__do_io(fd, e, FS_POLL_READ, FS_PARK_READ, shim__try_readv, &m,
                                     shim__iov_len(iov, iovcnt)));
}
SHIM_ALIAS(readv)

static ssize_t shim__try_recvmsg(int fd, void *ctx, int mode)
{
    struct shim_msg *m = ctx;
    return REAL(recvmsg)(fd, m->msg, m->flags | shim__sockflag(mode));
}

ssize_t shim__recvmsg(int fd, struct msghdr *msg, int flags)
{
    struct shim_fd *e = shim__io_entry(fd);
    if (!e || (flags & MSG_DONTWAIT))
        return REAL(recvmsg)(fd, msg, flags);
    struct shim_msg m = {msg, flags, NULL, 0};
    /* Room for ancillary data: a stream read stops after a message that
     * carries file descriptors (or other credentials than the next), so
     * a short one does not prove the socket drained. */
    size_t want = msg->msg_controllen > 0 ? 0 : shim__iov_len(msg->msg_iov, (int)msg->msg_iovlen);
    return shim__io_done(shim__do_io(fd, e, FS_POLL_READ, FS_PARK_READ, shim__try_recvmsg, &m,
                                     shim__recv_want(flags, want)));
}
SHIM_ALIAS(recvmsg)

struct shim_mmsg {
    struct mmsghdr *vec;
    unsigned vlen;
    int flags;
};

static ssize_t shim__try_recvmmsg(int fd, void *ctx, int mode)
{
    struct shim_mmsg *m = ctx;
    return REAL(recvmmsg)(fd, m->vec, m->vlen, m->flags | shim__sockflag(mode), NULL);
}

/* Blocking recvmmsg waits for the first message, then takes what is
 * queued (up to vlen) without waiting for more; with a timeout argument,
 * the kernel's own semantics are kept by the real call. */
int shim__recvmmsg(int fd, struct mmsghdr *vec, unsigned vlen, int flags, struct timespec *tmo)
{
    struct shim_fd *e = shim__io_entry(fd);
    if (!e || (flags & MSG_DONTWAIT) || tmo)
        return REAL(recvmmsg)(fd, vec, vlen, flags, tmo);
    struct shim_mmsg m = {vec, vlen, flags};
    return (int)shim__io_done(shim__do_io(fd, e, FS_POLL_READ, FS_PARK_READ, shim__try_recvmmsg,
                                          &m, shim__recv_want(flags, 0)));
}
SHIM_ALIAS(recvmmsg)

/* ---- writes ------------------------------------------------------------------ */

struct shim_cbuf {
    const void *buf;
    size_t len;
    int flags;
    const struct sockaddr *addr;
    socklen_t alen;
};

static ssize_t shim__try_write(int fd, void *ctx, int mode)
{
    struct shim_cbuf *b = ctx;
    if (mode == SHIM_TRY_DONTWAIT)
        return REAL(send)(fd, b->buf, b->len, MSG_DONTWAIT); /* SIGPIPE as write() */
    if (mode == SHIM_TRY_RWF_NOWAIT) {
        struct iovec v = {(void *)b->buf, b->len};
        return REAL(pwritev2)(fd, &v, 1, -1, RWF_NOWAIT);
    }
    return REAL(write)(fd, b->buf, b->len);
}

static ssize_t shim__try_sendto(int fd, void *ctx, int mode)
{
    struct shim_cbuf *b = ctx;
    return REAL(sendto)(fd, b->buf, b->len, b->flags | shim__sockflag(mode), b->addr, b->alen);
}

/* Writes all of buf on a blocking stream (partial count only on error or
 * timeout after some progress); one attempt otherwise. */
static ssize_t shim__write_all(int fd, struct shim_fd *e, shim_try_fn try, struct shim_cbuf *b)
{
    bool all = atomic_load(&e->kind) != SHIM_FD_DGRAM && !atomic_load(&e->user_nb);
    size_t done = 0, len = b->len;
    const char *p = b->buf;
    do {
        b->buf = p + done;
        b->len = len - done;
        ssize_t n = shim__do_io(fd, e, FS_POLL_WRITE, FS_PARK_WRITE, try, b, b->len);
        if (n < 0)
            return done ? (ssize_t)done : -1;
        done += (size_t)n;
    } while (all && done < len);
    return (ssize_t)done;
}

ssize_t shim__write(int fd, const void *buf, size_t len)
{
    struct shim_fd *e = shim__io_entry(fd);
    if (!e && shim__io_file(fd))
        return shim__file_rw1(fd, buf, len, -1, true);
    if (!e)
        return REAL(write)(fd, buf, len);
    struct shim_cbuf b = {buf, len, 0, NULL, 0};
    return shim__io_done(shim__write_all(fd, e, shim__try_write, &b));
}
SHIM_ALIAS(write)

ssize_t shim__send(int fd, const void *buf, size_t len, int flags)
{
    struct shim_fd *e = shim__io_entry(fd);
    if (!e || (flags & MSG_DONTWAIT))
        return REAL(send)(fd, buf, len, flags);
    struct shim_cbuf b = {buf, len, flags, NULL, 0};
    return shim__io_done(shim__write_all(fd, e, shim__try_sendto, &b));
}
SHIM_ALIAS(send)

ssize_t shim__sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *addr,
                     socklen_t alen)
{
    struct shim_fd *e = shim__io_entry(fd);
    if (!e || (flags & MSG_DONTWAIT))
        return REAL(sendto)(fd, buf, len, flags, addr, alen);
    struct shim_cbuf b = {buf, len, flags, addr, alen};
    return shim__io_done(shim__write_all(fd, e, shim__try_sendto, &b));
}
SHIM_ALIAS(sendto)

/* Advances an iovec array past n bytes, in a copy owned by the caller. */
static int shim__iov_advance(struct iovec *iov, int cnt, size_t n)
{
    int i = 0;
    while (i < cnt && n >= iov[i].iov_len)
        n -= iov[i++].iov_len;
    if (i < cnt) {
        iov[i].iov_base = (char *)iov[i].iov_base + n;
        iov[i].iov_len -= n;
    }
    memmove(iov, iov + i, (size_t)(cnt - i) * sizeof *iov);
    return cnt - i;
}

static ssize_t shim__try_writev(int fd, void *ctx, int mode)
{
    struct shim_msg *m = ctx;
    if (mode == SHIM_TRY_DONTWAIT) {
        struct msghdr h = {.msg_iov = (struct iovec *)m->iov, .msg_iovlen = (size_t)m->iovcnt};
        return REAL(sendmsg)(fd, &h, MSG_DONTWAIT | m->flags);
    }
    if (mode == SHIM_TRY_RWF_NOWAIT)
        return REAL(pwritev2)(fd, m->iov, m->iovcnt, -1, RWF_NOWAIT);
    return REAL(writev)(fd, m->iov, m->iovcnt);
}

static ssize_t shim__try_sendmsg(int fd, void *ctx, int mode)
{
    struct shim_msg *m = ctx;
    struct msghdr h = *m->msg;
    h.msg_iov = (struct iovec *)m->iov;
    h.msg_iovlen = (size_t)m->iovcnt;
    return REAL(sendmsg)(fd, &h, m->flags | shim__sockflag(mode));
}

/* writev/sendmsg: all bytes on a blocking stream, advancing a private copy
 * of the iovec array between attempts. */
static ssize_t shim__writev_all(int fd, struct shim_fd *e, const struct iovec *iov, int cnt,
                                struct msghdr *msg, int flags)
{
    size_t total = shim__iov_len(iov, cnt);
    bool all = atomic_load(&e->kind) != SHIM_FD_DGRAM && !atomic_load(&e->user_nb);
    struct iovec small[16], *v = cnt <= 16 ? small : malloc((size_t)cnt * sizeof *v);
    if (!v) {
        errno = ENOMEM;
        return -1;
    }
    if (cnt > 0)
        memcpy(v, iov, (size_t)cnt * sizeof *v);
    struct shim_msg m = {msg, flags, v, cnt};
    struct msghdr cont; /* later chunks: same destination, no ancillary data */
    size_t done = 0;
    ssize_t ret;
    for (;;) {
        ssize_t n = shim__do_io(fd, e, FS_POLL_WRITE, FS_PARK_WRITE,
                                msg ? shim__try_sendmsg : shim__try_writev, &m, total - done);
        if (n < 0) {
            ret = done ? (ssize_t)done : -1;
            break;
        }
        done += (size_t)n;
        if (!all || done >= total) {
            ret = (ssize_t)done;
            break;
        }
        m.iovcnt = shim__iov_advance(v, m.iovcnt, (size_t)n);
        /* Only the first chunk of a message carries its ancillary data. */
        if (msg) {
            memset(&cont, 0, sizeof cont);
            cont.msg_name = msg->msg_name;
            cont.msg_namelen = msg->msg_namelen;
            m.msg = &cont;
        }
    }
    if (v != small)
        free(v);
    return ret;
}

ssize_t shim__writev(int fd, const struct iovec *iov, int iovcnt)
{
    struct shim_fd *e = shim__io_entry(fd);
    if (!e && shim__io_file(fd))
        return shim__file_rw(fd, iov, iovcnt, -1, true);
    if (!e || iovcnt < 0)
        return REAL(writev)(fd, iov, iovcnt);
    return shim__io_done(shim__writev_all(fd, e, iov, iovcnt, NULL, 0));
}
SHIM_ALIAS(writev)

ssize_t shim__sendmsg(int fd, const struct msghdr *msg, int flags)
{
    struct shim_fd *e = shim__io_entry(fd);
    if (!e || (flags & MSG_DONTWAIT))
        return REAL(sendmsg)(fd, msg, flags);
    return shim__io_done(shim__writev_all(fd, e, msg->msg_iov, (int)msg->msg_iovlen,
                                          (struct msghdr *)msg, flags));
}
SHIM_ALIAS(sendmsg)

static ssize_t shim__try_sendmmsg(int fd, void *ctx, int mode)
{
    struct shim_mmsg *m = ctx;
    return REAL(sendmmsg)(fd, m->vec, m->vlen, m->flags | shim__sockflag(mode));
}

int shim__sendmmsg(int fd, struct mmsghdr *vec, unsigned vlen, int flags)
{
    struct shim_fd *e = shim__io_entry(fd);
    if (!e || (flags & MSG_DONTWAIT))
        return REAL(sendmmsg)(fd, vec, vlen, flags);
    struct shim_mmsg m = {vec, vlen, flags};
    return (int)shim__io_done(
        shim__do_io(fd, e, FS_POLL_WRITE, FS_PARK_WRITE, shim__try_sendmmsg, &m, 0));
}
SHIM_ALIAS(sendmmsg)

/* ---- sendfile ---------------------------------------------------------------- */

struct shim_sendfile {
    int in;
    off_t *off;
    size_t count;
};

static ssize_t shim__try_sendfile(int fd, void *ctx, int mode)
{
    struct shim_sendfile *s = ctx;
    return REAL(sendfile)(fd, s->in, s->off, s->count);
}

/* sendfile has no per-call non-blocking flag either: the socket is held
 * non-blocking for the length of the call only (without the mark, which
 * sendfile refuses; fd.c), so a connection never keeps an O_NONBLOCK that
 * a child it is handed to could see. Three fcntl calls per blocking
 * sendfile are the price. */
ssize_t shim__sendfile(int out, int in, off_t *off, size_t count)
{
    struct shim_fd *e = shim__io_entry_nocancel(out); /* glibc's is no cancellation point */
    int saved = 0;
    int held = e ? shim__fd_hold_call(out, e, false, &saved) : -1;
    if (held < 0)
        return REAL(sendfile)(out, in, off, count);
    bool all = !atomic_load(&e->user_nb);
    size_t done = 0;
    ssize_t ret;
    for (;;) {
        struct shim_sendfile s = {in, off, count - done};
        ssize_t n =
            shim__do_io(out, e, FS_POLL_WRITE, FS_PARK_WRITE, shim__try_sendfile, &s, count - done);
        if (n <= 0) {
            /* An error (the partial count if some went), or the input's end. */
            ret = n < 0 && !done ? -1 : (ssize_t)done;
            break;
        }
        done += (size_t)n;
        if (!all || done >= count) {
            ret = (ssize_t)done;
            break;
        }
    }
    if (held == 1)
        shim__fd_release_call(out, e, saved);
    return ret;
}
SHIM_ALIAS(sendfile)

ssize_t shim__sendfile64(int out, int in, off_t *off, size_t count)
{
    return shim__sendfile(out, in, off, count);
}
SHIM_ALIAS(sendfile64)

/* ---- accept and connect ------------------------------------------------------- */

/*
 * accept needs O_NONBLOCK underneath; fd.c decides per attempt how a
 * fiber's accept waits on a listener that other processes may share
 * (shim__fd_accept_mode), and its opening comment explains why.
 */

struct shim_accept {
    int fd;
    struct sockaddr *addr;
    socklen_t *alen;
    int flags;
};

static int shim__accept_call(const struct shim_accept *a)
{
    return REAL(accept4)(a->fd, a->addr, a->alen, a->flags);
}

/* The blocking accept4 of a released listener, made on a spare thread. */
static long shim__accept_blocking(void *ctx)
{
    return shim__accept_call(ctx);
}

/* Whether a plain thread's blocking call that a signal interrupted should
 * be restarted. The kernel restarts it if the handler that ran has
 * SA_RESTART; which one ran is not known here, so: if every caught signal
 * has SA_RESTART. A program that mixes both kinds gets EINTR from a call
 * that would have restarted (the README lists it). */
static bool shim__plain_should_restart(void)
{
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction sa;
        if (sigaction(sig, NULL, &sa) != 0)
            continue;
        bool caught =
            (sa.sa_flags & SA_SIGINFO) || (sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN);
        if (caught && !(sa.sa_flags & SA_RESTART))
            return false;
    }
    return true;
}

/*
 * accept4 from a thread that is not a fiber: the C library's call. Its
 * EAGAIN on a listener that a shim marked (in this process or another
 * sharing it) is not the program's answer: wait in ppoll() and try again,
 * as the kernel's blocking accept would, up to the listener's SO_RCVTIMEO.
 * The fast path (a connection is queued, or the listener is blocking
 * underneath) is the one syscall.
 */
static int shim__accept_plain(const struct shim_accept *a)
{
    int nfd = shim__accept_call(a);
    if (nfd >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
        return nfd;
    if (!shim__fd_marked(a->fd)) {
        errno = EAGAIN; /* the program's own O_NONBLOCK */
        return -1;
    }
    struct timeval tv;
    socklen_t len = sizeof tv;
    int64_t timeo = getsockopt(a->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, &len) == 0
                        ? shim__timeval_ns(&tv, len, false)
                        : 0;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t end = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec + timeo;
    for (;;) {
        struct timespec left, *lp = NULL;
        if (timeo > 0) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            int64_t ns = end - ((int64_t)now.tv_sec * 1000000000 + now.tv_nsec);
            if (ns <= 0) {
                errno = EAGAIN; /* SO_RCVTIMEO, as the kernel reports it */
                return -1;
            }
            left = (struct timespec){(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
            lp = &left;
        }
        struct pollfd p = {a->fd, POLLIN, 0};
        int r = REAL(ppoll)(&p, 1, lp, NULL);
        if (r < 0 && errno == EINTR && shim__plain_should_restart())
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            continue; /* the deadline: reported at the top */
        nfd = shim__accept_call(a);
        if (nfd >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            return nfd;
        /* Someone else took the connection; or the program chose
         * O_NONBLOCK meanwhile, and EAGAIN is its answer. */
        if (!shim__fd_marked(a->fd)) {
            errno = EAGAIN;
            return -1;
        }
    }
}

/*
 * A fiber's accept on a released listener (SHIM_ACCEPT_BLOCKING): blocking
 * underneath, and it must stay so. If poll() says a connection is queued,
 * the blocking accept4 runs on a spare thread, one fiber of this process
 * at a time: a connection taken by another process between the poll and
 * the accept4 then makes a spare wait for the next one, never the carrier
 * (and never more than one spare per listener). Returns the new fd, -1
 * with errno, or -2 when nothing is queued (the caller parks).
 */
static int shim__accept_released(struct shim_fd *e, struct shim_accept *a)
{
    if (!shim__fd_accept_lock(e)) {
        errno = ENOMEM;
        return -1;
    }
    struct pollfd p = {a->fd, POLLIN, 0};
    int r = REAL(poll)(&p, 1, 0);
    int nfd = r < 0 ? -1 : -2;
    if (r > 0) {
        nfd = (int)shim__offload_blocking(shim__accept_blocking, a, FS_PARK_ACCEPT);
        /* Marked again meanwhile by another shim process: try again. */
        if (nfd < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            nfd = -2;
    }
    int err = errno;
    shim__fd_accept_unlock(e);
    errno = err;
    return nfd;
}

/* A fiber's accept4 on a socket: try, park on EAGAIN, try again. */
static int shim__accept_fiber(struct shim_fd *e, struct shim_accept *a)
{
    int fd = a->fd;
    int64_t deadline = 0; /* computed at the first wait: no clock read on the fast path */
    bool last = false;    /* SO_RCVTIMEO ran out: one more attempt, then EAGAIN */
    for (;;) {
        uint32_t snap = fs_fd_edges(fd, FS_POLL_READ);
        unsigned st = fs_fd_state(fd);
        if (!last && (st & FS_FD_REGISTERED) && !(st & shim__may_succeed(FS_POLL_READ)) &&
            atomic_load_explicit(&e->real_nb, memory_order_relaxed) == SHIM_HOLD_MARKED &&
            !atomic_load_explicit(&e->user_nb, memory_order_relaxed)) {
            /* Held, and the netpoller knows nothing is queued: park
             * without a syscall. (A change of mode made meanwhile by
             * another process is seen at the next attempt.) */
            fs_count_avoided();
        } else {
            enum shim_accept_mode m = shim__fd_accept_mode(fd, e);
            fs_count_syscall();
            int nfd =
                m == SHIM_ACCEPT_BLOCKING ? shim__accept_released(e, a) : shim__accept_call(a);
            if (nfd == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
                nfd = -2;
            if (nfd != -2)
                return nfd;
            fs_fd_drained(fd, FS_POLL_READ, snap);
            if (m == SHIM_ACCEPT_USER_NB || last) {
                errno = EAGAIN;
                return -1;
            }
        }
        if (!deadline) {
            int64_t t = atomic_load_explicit(&e->rcvtimeo, memory_order_relaxed);
            deadline = t > 0 ? shim__deadline_after(t) : FS_NO_DEADLINE;
        }
        int rc = fs_wait_fd(fd, FS_POLL_READ, snap, deadline, FS_PARK_ACCEPT);
        if (rc == 0)
            continue;
        if (rc == -EINTR) {
            /* As do_io: restart under SA_RESTART, else fail as the kernel would. */
            if (shim__io_restart())
                continue;
            errno = EINTR;
            return -1;
        }
        if (rc == -ETIMEDOUT) {
            last = true;
            continue;
        }
        errno = -rc;
        return -1;
    }
}

int shim__accept4(int fd, struct sockaddr *addr, socklen_t *alen, int flags)
{
    uint32_t gen = shim__fd_gen_now(); /* before the fd exists: see fd.c */
    struct shim_accept a = {fd, addr, alen, flags};
    struct shim_fd *e = shim__io_entry(fd); /* NULL off a fiber */
    uint8_t kind = e ? atomic_load(&e->kind) : SHIM_FD_UNKNOWN;
    if (kind != SHIM_FD_STREAM && kind != SHIM_FD_DGRAM)
        e = NULL; /* not a socket: accept4 says so itself */
    int nfd;
    if (!fs_self())
        nfd = shim__accept_plain(&a);
    else if (!e)
        nfd = shim__accept_call(&a);
    else
        nfd = shim__accept_fiber(e, &a);
    if (nfd >= 0)
        shim__fd_accepted(nfd, e, flags, gen);
    return (int)shim__io_done(nfd);
}
SHIM_ALIAS(accept4)

int shim__accept(int fd, struct sockaddr *addr, socklen_t *alen)
{
    return shim__accept4(fd, addr, alen, 0);
}
SHIM_ALIAS(accept)

static int shim__connect_nb(int fd, struct shim_fd *e, const struct sockaddr *addr,
                            socklen_t alen);

int shim__connect(int fd, const struct sockaddr *addr, socklen_t alen)
{
    struct shim_fd *e = shim__io_entry(fd);
    if (!e || atomic_load(&e->user_nb))
        return REAL(connect)(fd, addr, alen);
    /* Marked (fd.c) while the connect lasts, for a process that shares
     * the socket meanwhile. */
    int saved = 0;
    int held = shim__fd_hold_call(fd, e, true, &saved);
    if (held <= 0)
        return REAL(connect)(fd, addr, alen);
    int rc = shim__connect_nb(fd, e, addr, alen);
    if (held == 1) {
        /* Give the connected socket back its blocking mode, so that a
         * child it is handed to sees what the program chose. */
        shim__fd_release_call(fd, e, saved);
    }
    return (int)shim__io_done(rc);
}
SHIM_ALIAS(connect)

/* connect on a socket that is non-blocking underneath, for a user who
 * wants a blocking connect. */
static int shim__connect_nb(int fd, struct shim_fd *e, const struct sockaddr *addr,
                            socklen_t alen)
{
    int64_t backoff = 1000000;
    for (;;) {
        uint32_t snap = fs_fd_edges(fd, FS_POLL_WRITE);
        fs_count_syscall();
        int rc = REAL(connect)(fd, addr, alen);
        if (rc == 0 || (errno != EINPROGRESS && errno != EAGAIN))
            return rc;
        if (errno == EAGAIN) {
            /* A full UNIX-socket backlog: the kernel gives no edge for
             * "room in the listener's queue", so retry with backoff. */
            fs_sleep_until(fs_now() + backoff);
            if (backoff < 50000000)
                backoff *= 2;
            if (shim__cancel_due()) {
                errno = EINTR; /* shim__connect acts on it (shim__io_done) */
                return -1;
            }
            continue;
        }
        int64_t t = atomic_load(&e->sndtimeo);
        int64_t dl = t > 0 ? shim__deadline_after(t) : FS_NO_DEADLINE;
        for (;;) {
            int w = fs_wait_fd(fd, FS_POLL_WRITE, snap, dl, FS_PARK_CONNECT);
            if (w == -ETIMEDOUT) {
                errno = EINPROGRESS; /* what a blocking connect says at SO_SNDTIMEO */
                return -1;
            }
            if (w < 0) {
                if (w == -EINTR)
                    shim__sig_should_restart(); /* connect goes on in the background;
                                                   so it does for a cancel (shim__io_done) */
                errno = -w;
                return -1;
            }
            int err = 0;
            socklen_t len = sizeof err;
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
                return -1;
            if (err) {
                errno = err;
                return -1;
            }
            /* Writable with no error means connected, unless the edge was
             * stale (from before); confirm with getpeername. */
            struct sockaddr_storage ss;
            socklen_t sl = sizeof ss;
            if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
                return 0;
            snap = fs_fd_edges(fd, FS_POLL_WRITE);
            fs_fd_drained(fd, FS_POLL_WRITE, snap);
        }
    }
}
