/*
 * fd.c - the fd-state table and the calls that keep it right: creation
 * (socket, socketpair, pipe, pipe2), duplication (dup, dup2, dup3,
 * F_DUPFD), closing, the shadow O_NONBLOCK (fcntl F_GETFL/F_SETFL, ioctl
 * FIONBIO) and socket timeouts (setsockopt SO_RCVTIMEO/SO_SNDTIMEO).
 *
 * Races: two fibers may classify the same fd at once; both compute the
 * same answer from the kernel, and the last store wins harmlessly. A close
 * racing a waiter is handled by the runtime (fs_fd_close wakes it with
 * EBADF) before the real close, so the waiter never sees a reused number.
 */
#include "shim.h"
#include "fd.h"
#include "offload.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#define SHIM_FD_CHUNK 4096u
#define SHIM_FD_CHUNKS 4096u

static struct shim_fd *_Atomic shim__fd_table[SHIM_FD_CHUNKS];

struct shim_fd *shim__fd_peek(int fd)
{
    if (fd < 0 || (unsigned)fd >= SHIM_FD_CHUNK * SHIM_FD_CHUNKS)
        return NULL;
    struct shim_fd *c =
        atomic_load_explicit(&shim__fd_table[(unsigned)fd / SHIM_FD_CHUNK], memory_order_acquire);
    return c ? &c[(unsigned)fd % SHIM_FD_CHUNK] : NULL;
}

static struct shim_fd *shim__fd_slot(int fd)
{
    struct shim_fd *e = shim__fd_peek(fd);
    if (e || fd < 0 || (unsigned)fd >= SHIM_FD_CHUNK * SHIM_FD_CHUNKS)
        return e;
    struct shim_fd *c = calloc(SHIM_FD_CHUNK, sizeof *c);
    if (!c)
        return NULL;
    struct shim_fd *expect = NULL;
    if (!atomic_compare_exchange_strong(&shim__fd_table[(unsigned)fd / SHIM_FD_CHUNK], &expect,
                                        c)) {
        free(c);
        c = expect;
    }
    return &c[(unsigned)fd % SHIM_FD_CHUNK];
}

int64_t shim__timeval_ns(const void *val, unsigned len, bool new_format)
{
    int64_t sec, usec;
    if (new_format) {
        if (len < 16)
            return -1;
        const int64_t *v = val; /* struct __kernel_sock_timeval */
        sec = v[0];
        usec = v[1];
    } else {
        if (len < sizeof(struct timeval))
            return -1;
        const struct timeval *tv = val;
        sec = tv->tv_sec;
        usec = tv->tv_usec;
    }
    if (sec < 0 || usec < 0)
        return 0;
    if (sec > INT64_MAX / 1000000000 - 1)
        return 0; /* effectively infinite, as the kernel treats it */
    return sec * 1000000000 + usec * 1000;
}

static void shim__fd_classify(int fd, struct shim_fd *e)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return;
    uint8_t kind;
    if (S_ISSOCK(st.st_mode)) {
        int type = 0;
        socklen_t len = sizeof type;
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len);
        kind = type == SOCK_STREAM ? SHIM_FD_STREAM : SHIM_FD_DGRAM;
        struct timeval tv;
        len = sizeof tv;
        if (getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, &len) == 0)
            atomic_store(&e->rcvtimeo, shim__timeval_ns(&tv, len, false));
        len = sizeof tv;
        if (getsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, &len) == 0)
            atomic_store(&e->sndtimeo, shim__timeval_ns(&tv, len, false));
    } else if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode) || S_ISBLK(st.st_mode)) {
        kind = SHIM_FD_FILE;
    } else {
        kind = SHIM_FD_PIPE; /* FIFOs, ttys, eventfds...: epoll decides later */
    }
    if (!atomic_load(&e->real_nb)) {
        int fl = REAL(fcntl)(fd, F_GETFL);
        if (fl >= 0)
            atomic_store(&e->user_nb, (fl & O_NONBLOCK) != 0);
    }
    atomic_store_explicit(&e->kind, kind, memory_order_release);
}

struct shim_fd *shim__fd_get(int fd)
{
    struct shim_fd *e = shim__fd_slot(fd);
    if (!e) {
        errno = fd < 0 ? EBADF : ENOMEM;
        return NULL;
    }
    if (SHIM_UNLIKELY(atomic_load_explicit(&e->kind, memory_order_acquire) == SHIM_FD_UNKNOWN)) {
        shim__fd_classify(fd, e);
        if (atomic_load(&e->kind) == SHIM_FD_UNKNOWN) {
            errno = EBADF;
            return NULL;
        }
    }
    return e;
}

void shim__fd_reset(int fd)
{
    struct shim_fd *e = shim__fd_peek(fd);
    if (e) {
        atomic_store(&e->kind, SHIM_FD_UNKNOWN);
        atomic_store(&e->real_nb, 0);
        atomic_store(&e->user_nb, 0);
        atomic_store(&e->no_rwf_nowait, 0);
        atomic_store(&e->file_read, SHIM_FILE_NOWAIT);
        atomic_store(&e->file_write, SHIM_FILE_NOWAIT);
        atomic_store(&e->rcvtimeo, 0);
        atomic_store(&e->sndtimeo, 0);
    }
}

void shim__fd_created(int fd)
{
    /* Classification stays lazy: the first blocking call reads the flags
     * the creating call set (SOCK_NONBLOCK, O_NONBLOCK) from the kernel. */
    shim__fd_reset(fd);
}

void shim__fd_accepted(int fd, const struct shim_fd *l, int flags)
{
    shim__fd_reset(fd);
    struct shim_fd *e = shim__fd_slot(fd);
    if (!e)
        return;
    atomic_store(&e->user_nb, (flags & SOCK_NONBLOCK) != 0);
    atomic_store(&e->rcvtimeo, atomic_load(&l->rcvtimeo));
    atomic_store(&e->sndtimeo, atomic_load(&l->sndtimeo));
    atomic_store_explicit(&e->kind, atomic_load(&l->kind), memory_order_release);
}

void shim__fd_copy(int from, int to)
{
    struct shim_fd *a = shim__fd_peek(from);
    shim__fd_reset(to);
    if (!a || atomic_load(&a->kind) == SHIM_FD_UNKNOWN)
        return;
    struct shim_fd *b = shim__fd_slot(to);
    if (!b)
        return;
    atomic_store(&b->user_nb, atomic_load(&a->user_nb));
    atomic_store(&b->real_nb, atomic_load(&a->real_nb));
    atomic_store(&b->no_rwf_nowait, atomic_load(&a->no_rwf_nowait));
    atomic_store(&b->file_read, atomic_load(&a->file_read));
    atomic_store(&b->file_write, atomic_load(&a->file_write));
    atomic_store(&b->rcvtimeo, atomic_load(&a->rcvtimeo));
    atomic_store(&b->sndtimeo, atomic_load(&a->sndtimeo));
    atomic_store_explicit(&b->kind, atomic_load(&a->kind), memory_order_release);
}

bool shim__fd_make_nonblocking(int fd, struct shim_fd *e)
{
    if (atomic_load(&e->real_nb))
        return true;
    uint8_t kind = atomic_load(&e->kind);
    /* Only sockets: a pipe or tty may be shared with other processes,
     * whose reads would start failing with EAGAIN (and io.c never needs it
     * for them: RWF_NOWAIT does the job per call). */
    if (kind != SHIM_FD_STREAM && kind != SHIM_FD_DGRAM)
        return false;
    int fl = REAL(fcntl)(fd, F_GETFL);
    if (fl < 0)
        return false;
    if (!(fl & O_NONBLOCK) && REAL(fcntl)(fd, F_SETFL, fl | O_NONBLOCK) != 0)
        return false;
    atomic_store(&e->user_nb, (fl & O_NONBLOCK) != 0);
    atomic_store(&e->real_nb, 1);
    return true;
}

/* ---- creation ------------------------------------------------------------- */

int shim__socket(int domain, int type, int protocol)
{
    int fd = REAL(socket)(domain, type, protocol);
    if (fd >= 0)
        shim__fd_created(fd);
    return fd;
}
SHIM_ALIAS(socket)

int shim__socketpair(int domain, int type, int protocol, int sv[2])
{
    int rc = REAL(socketpair)(domain, type, protocol, sv);
    if (rc == 0) {
        shim__fd_created(sv[0]);
        shim__fd_created(sv[1]);
    }
    return rc;
}
SHIM_ALIAS(socketpair)

int shim__pipe2(int fds[2], int flags)
{
    int rc = REAL(pipe2)(fds, flags);
    if (rc == 0) {
        shim__fd_created(fds[0]);
        shim__fd_created(fds[1]);
    }
    return rc;
}
SHIM_ALIAS(pipe2)

int shim__pipe(int fds[2])
{
    return shim__pipe2(fds, 0);
}
SHIM_ALIAS(pipe)

/* ---- closing and duplication ----------------------------------------------- */

int shim__close(int fd)
{
    if (fs_fd_is_internal(fd)) {
        errno = EBADF; /* the runtime's own fd: not the program's to close */
        return -1;
    }
    /* Wake fibers blocked on fd (with EBADF) before the number can be
     * reused by another thread's open. */
    fs_fd_close(fd);
    shim__fd_reset(fd);
    return REAL(close)(fd);
}
SHIM_ALIAS(close)

int shim__dup(int fd)
{
    int nfd = REAL(dup)(fd);
    if (nfd >= 0)
        shim__fd_copy(fd, nfd);
    return nfd;
}
SHIM_ALIAS(dup)

static int shim__dup3_common(int from, int to, int flags, bool is_dup2)
{
    if (fs_fd_is_internal(to)) {
        errno = EBADF;
        return -1;
    }
    if (from != to) {
        fs_fd_close(to);
    }
    int rc = is_dup2 ? REAL(dup2)(from, to) : REAL(dup3)(from, to, flags);
    if (rc >= 0 && from != to)
        shim__fd_copy(from, to);
    return rc;
}

int shim__dup2(int from, int to)
{
    return shim__dup3_common(from, to, 0, true);
}
SHIM_ALIAS(dup2)

int shim__dup3(int from, int to, int flags)
{
    return shim__dup3_common(from, to, flags, false);
}
SHIM_ALIAS(dup3)

/* ---- the shadow O_NONBLOCK --------------------------------------------------- */

static int shim__fcntl_impl(int (*real)(int, int, ...), int fd, int cmd, void *arg)
{
    switch (cmd) {
    case F_GETFL: {
        int fl = real(fd, cmd);
        struct shim_fd *e = shim__fd_peek(fd);
        if (fl >= 0 && e && atomic_load(&e->real_nb))
            fl = (fl & ~O_NONBLOCK) | (atomic_load(&e->user_nb) ? O_NONBLOCK : 0);
        return fl;
    }
    case F_SETFL: {
        int want = (int)(intptr_t)arg;
        struct shim_fd *e = shim__fd_peek(fd);
        if (e && atomic_load(&e->real_nb)) {
            int rc = real(fd, cmd, want | O_NONBLOCK);
            if (rc == 0)
                atomic_store(&e->user_nb, (want & O_NONBLOCK) != 0);
            return rc;
        }
        int rc = real(fd, cmd, want);
        if (rc == 0 && e && atomic_load(&e->kind) != SHIM_FD_UNKNOWN)
            atomic_store(&e->user_nb, (want & O_NONBLOCK) != 0);
        return rc;
    }
    case F_DUPFD:
    case F_DUPFD_CLOEXEC: {
        int nfd = real(fd, cmd, (int)(intptr_t)arg);
        if (nfd >= 0)
            shim__fd_copy(fd, nfd);
        return nfd;
    }
    case F_SETLKW:
    case F_OFD_SETLKW:
        return shim__file_setlkw(real, fd, cmd, arg); /* waits off the carrier */
    default:
        return real(fd, cmd, arg);
    }
}

int shim__fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    return shim__fcntl_impl(REAL(fcntl), fd, cmd, arg);
}
SHIM_ALIAS(fcntl)

int shim__fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    return shim__fcntl_impl(REAL(fcntl64), fd, cmd, arg);
}
SHIM_ALIAS(fcntl64)

int shim__ioctl(int fd, unsigned long req, ...)
{
    va_list ap;
    va_start(ap, req);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    if (req == FIONBIO && arg) {
        struct shim_fd *e = shim__fd_peek(fd);
        if (e && atomic_load(&e->real_nb)) {
            int on = 1;
            int rc = REAL(ioctl)(fd, req, &on); /* stays non-blocking underneath */
            if (rc == 0)
                atomic_store(&e->user_nb, *(int *)arg != 0);
            return rc;
        }
        int rc = REAL(ioctl)(fd, req, arg);
        if (rc == 0 && e && atomic_load(&e->kind) != SHIM_FD_UNKNOWN)
            atomic_store(&e->user_nb, *(int *)arg != 0);
        return rc;
    }
    return REAL(ioctl)(fd, req, arg);
}
SHIM_ALIAS(ioctl)

int shim__setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
    int rc = REAL(setsockopt)(fd, level, name, val, len);
    if (rc == 0 && level == SOL_SOCKET &&
        (name == SO_RCVTIMEO_OLD || name == SO_SNDTIMEO_OLD || name == SO_RCVTIMEO_NEW ||
         name == SO_SNDTIMEO_NEW)) {
        struct shim_fd *e = shim__fd_peek(fd);
        if (e && atomic_load(&e->kind) != SHIM_FD_UNKNOWN) {
            bool nw = name == SO_RCVTIMEO_NEW || name == SO_SNDTIMEO_NEW;
            int64_t ns = shim__timeval_ns(val, len, nw);
            if (ns >= 0)
                atomic_store(name == SO_RCVTIMEO_OLD || name == SO_RCVTIMEO_NEW ? &e->rcvtimeo
                                                                                 : &e->sndtimeo,
                             ns);
        }
    }
    return rc;
}
SHIM_ALIAS(setsockopt)
