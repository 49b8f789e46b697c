/*
 * file.c - files: I/O on regular files, fsync, opening FIFOs, and file
 * locks. epoll cannot wait for any of these, so a fiber that would block
 * hands the call to a spare thread (offload.c) and parks.
 *
 * Each wrapper first tries a form of the call that cannot block, and
 * offloads only when that form says it would:
 *  - reads: preadv2(RWF_NOWAIT) returns what the page cache holds and
 *    EAGAIN when it holds none of it. A page-cache hit, the common case,
 *    costs no switch. Writes: pwritev2(RWF_NOWAIT); a file system that
 *    says EAGAIN (it would wait) gets the write offloaded. Where it refuses
 *    the flag (EOPNOTSUPP: buffered writes on ext4), the write is made on
 *    the carrier, as Go's runtime makes it: a buffered write lands in the
 *    page cache and waits only under dirty-page throttling, and offloading
 *    every log line would cost ~25x per write.
 *  - a partly cached read goes on without blocking first: a blocking read
 *    of a regular file returns everything up to EOF, and programs count on
 *    that; so only the part that is not cached goes to a spare.
 *  - read/write/readv/writev pass offset -1: the file position is used and
 *    advanced exactly as by the plain calls, on whichever thread.
 *  - flock and F_SETLKW/F_OFD_SETLKW try LOCK_NB / F_SETLK first.
 *  - open/openat offload only a FIFO opened for reading or for writing
 *    alone without O_NONBLOCK, which waits for the other end; any other
 *    open passes through: on local file systems it does not wait (one
 *    extra fstatat per open from a fiber tells the two apart).
 * Calls from threads that are not fibers go straight to the C library.
 */
#include "offload.h"
#include "fd.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* The fortify and internal variants, as glibc exports them. */
extern ssize_t __pread_chk(int fd, void *buf, size_t len, off_t off, size_t buflen);
extern ssize_t __pread64_chk(int fd, void *buf, size_t len, off_t off, size_t buflen);
extern int __open_2(const char *path, int flags);
extern int __open64_2(const char *path, int flags);
extern int __openat_2(int dirfd, const char *path, int flags);
extern int __openat64_2(int dirfd, const char *path, int flags);

/* ---- reads and writes --------------------------------------------------------- */

struct shim_file_io {
    int fd;
    const struct iovec *iov;
    int iovcnt;
    off_t off; /* -1: the file position */
};

static long shim__file_read_blocking(void *p)
{
    struct shim_file_io *io = p;
    return preadv2(io->fd, io->iov, io->iovcnt, io->off, 0);
}

static long shim__file_write_blocking(void *p)
{
    struct shim_file_io *io = p;
    return pwritev2(io->fd, io->iov, io->iovcnt, io->off, 0);
}

ssize_t shim__file_rw(int fd, const struct iovec *iov, int iovcnt, off_t off, bool write)
{
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    struct iovec small[8], *copy = NULL; /* a private, advanced copy once partly done */
    const struct iovec *v = iov;
    ssize_t done = 0;
    for (;;) {
        off_t at = off < 0 ? -1 : off + done;
        fs_count_syscall();
        ssize_t n = write ? pwritev2(fd, v, iovcnt, at, RWF_NOWAIT)
                          : preadv2(fd, v, iovcnt, at, RWF_NOWAIT);
        if (n < 0 && write && errno == EOPNOTSUPP) {
            fs_count_syscall();
            n = pwritev2(fd, v, iovcnt, at, 0);
            if (n < 0 && !done)
                done = -1;
            else if (n > 0)
                done += n;
            break;
        }
        if (n < 0 && (errno == EAGAIN || errno == EOPNOTSUPP)) {
            struct shim_file_io io = {fd, v, iovcnt, at};
            n = shim__offload_blocking(write ? shim__file_write_blocking
                                             : shim__file_read_blocking,
                                       &io, write ? FS_PARK_WRITE : FS_PARK_READ);
            if (n >= 0)
                done += n;
            else if (!done)
                done = -1;
            break;
        }
        if (n <= 0) {
            /* An error after progress reports the progress, as the
             * kernel does. */
            if (n < 0 && !done)
                done = -1;
            break;
        }
        done += n;
        if ((size_t)done >= total)
            break;
        /* Partly cached (or partly written): continue past the n bytes. */
        if (!copy) {
            copy = iovcnt <= 8 ? small : malloc((size_t)iovcnt * sizeof *copy);
            if (!copy)
                break; /* a short count, which the caller must accept */
            memcpy(copy, iov, (size_t)iovcnt * sizeof *copy);
            v = copy;
        }
        struct iovec *w = (struct iovec *)v;
        size_t k = (size_t)n;
        while (iovcnt > 1 && k >= w->iov_len) {
            k -= w->iov_len;
            w++;
            iovcnt--;
        }
        w->iov_base = (char *)w->iov_base + k;
        w->iov_len -= k;
        v = w;
    }
    if (copy && copy != small)
        free(copy);
    return done;
}

ssize_t shim__pread(int fd, void *buf, size_t len, off_t off)
{
    if (!fs_self() || off < 0)
        return REAL(pread)(fd, buf, len, off);
    return shim__file_rw1(fd, buf, len, off, false);
}
SHIM_ALIAS(pread)

ssize_t shim__pread64(int fd, void *buf, size_t len, off_t off)
{
    return shim__pread(fd, buf, len, off);
}
SHIM_ALIAS(pread64)

ssize_t shim____pread_chk(int fd, void *buf, size_t len, off_t off, size_t buflen)
{
    if (len > buflen)
        __builtin_trap(); /* what glibc's __chk_fail amounts to: the program is wrong */
    return shim__pread(fd, buf, len, off);
}
SHIM_ALIAS(__pread_chk)

ssize_t shim____pread64_chk(int fd, void *buf, size_t len, off_t off, size_t buflen)
{
    return shim____pread_chk(fd, buf, len, off, buflen);
}
SHIM_ALIAS(__pread64_chk)

ssize_t shim__pwrite(int fd, const void *buf, size_t len, off_t off)
{
    if (!fs_self() || off < 0)
        return REAL(pwrite)(fd, buf, len, off);
    return shim__file_rw1(fd, buf, len, off, true);
}
SHIM_ALIAS(pwrite)

ssize_t shim__pwrite64(int fd, const void *buf, size_t len, off_t off)
{
    return shim__pwrite(fd, buf, len, off);
}
SHIM_ALIAS(pwrite64)

/* ---- syncing ------------------------------------------------------------------ */

static long shim__fsync_blocking(void *p)
{
    return REAL(fsync)(*(int *)p);
}

static long shim__fdatasync_blocking(void *p)
{
    return REAL(fdatasync)(*(int *)p);
}

int shim__fsync(int fd)
{
    return (int)shim__offload_blocking(shim__fsync_blocking, &fd, FS_PARK_WRITE);
}
SHIM_ALIAS(fsync)

int shim__fdatasync(int fd)
{
    return (int)shim__offload_blocking(shim__fdatasync_blocking, &fd, FS_PARK_WRITE);
}
SHIM_ALIAS(fdatasync)

/* ---- opening ------------------------------------------------------------------ */

struct shim_open {
    int dirfd;
    const char *path;
    int flags;
    mode_t mode;
};

static long shim__open_blocking(void *p)
{
    struct shim_open *o = p;
    return REAL(openat)(o->dirfd, o->path, o->flags, o->mode);
}

/* Whether this open waits for another process: a FIFO opened read-only or
 * write-only, without O_NONBLOCK, blocks until its other end is opened. */
static bool shim__open_waits(int dirfd, const char *path, int flags)
{
    if ((flags & (O_NONBLOCK | O_PATH)) || (flags & O_ACCMODE) == O_RDWR)
        return false;
    int saved = errno;
    struct stat st;
    bool fifo = fstatat(dirfd, path, &st, (flags & O_NOFOLLOW) ? AT_SYMLINK_NOFOLLOW : 0) == 0 &&
                S_ISFIFO(st.st_mode);
    errno = saved;
    return fifo;
}

static int shim__openat_common(int dirfd, const char *path, int flags, mode_t mode)
{
    int fd;
    if (fs_self() && shim__open_waits(dirfd, path, flags)) {
        struct shim_open o = {dirfd, path, flags, mode};
        fd = (int)shim__offload_blocking(shim__open_blocking, &o, FS_PARK_OTHER);
    } else {
        fd = REAL(openat)(dirfd, path, flags, mode);
    }
    /* A new fd: forget what an earlier file with its number left (one
     * closed behind the shim's back, by fclose for example). */
    if (fd >= 0)
        shim__fd_created(fd);
    return fd;
}

/* The mode argument, present only when the flags need it. */
#define SHIM_OPEN_MODE(flags, last)                                                        \
    (__extension__({                                                                       \
        mode_t m_ = 0;                                                                     \
        if (__OPEN_NEEDS_MODE(flags)) {                                                    \
            va_list ap_;                                                                   \
            va_start(ap_, last);                                                           \
            m_ = va_arg(ap_, mode_t);                                                      \
            va_end(ap_);                                                                   \
        }                                                                                  \
        m_;                                                                                \
    }))

int shim__open(const char *path, int flags, ...)
{
    return shim__openat_common(AT_FDCWD, path, flags, SHIM_OPEN_MODE(flags, flags));
}
SHIM_ALIAS(open)

int shim__open64(const char *path, int flags, ...)
{
    return shim__openat_common(AT_FDCWD, path, flags, SHIM_OPEN_MODE(flags, flags));
}
SHIM_ALIAS(open64)

int shim__openat(int dirfd, const char *path, int flags, ...)
{
    return shim__openat_common(dirfd, path, flags, SHIM_OPEN_MODE(flags, flags));
}
SHIM_ALIAS(openat)

int shim__openat64(int dirfd, const char *path, int flags, ...)
{
    return shim__openat_common(dirfd, path, flags, SHIM_OPEN_MODE(flags, flags));
}
SHIM_ALIAS(openat64)

/* The fortify variants: called when the flags are not known at compile
 * time and need no mode. */
int shim____open_2(const char *path, int flags)
{
    return shim__openat_common(AT_FDCWD, path, flags, 0);
}
SHIM_ALIAS(__open_2)

int shim____open64_2(const char *path, int flags)
{
    return shim__openat_common(AT_FDCWD, path, flags, 0);
}
SHIM_ALIAS(__open64_2)

int shim____openat_2(int dirfd, const char *path, int flags)
{
    return shim__openat_common(dirfd, path, flags, 0);
}
SHIM_ALIAS(__openat_2)

int shim____openat64_2(int dirfd, const char *path, int flags)
{
    return shim__openat_common(dirfd, path, flags, 0);
}
SHIM_ALIAS(__openat64_2)

/* ---- locks -------------------------------------------------------------------- */

struct shim_flock {
    int fd;
    int op;
};

static long shim__flock_blocking(void *p)
{
    struct shim_flock *f = p;
    return REAL(flock)(f->fd, f->op);
}

int shim__flock(int fd, int op)
{
    if (!fs_self() || (op & LOCK_NB) || (op & ~LOCK_NB) == LOCK_UN)
        return REAL(flock)(fd, op);
    int saved = errno;
    if (REAL(flock)(fd, op | LOCK_NB) == 0)
        return 0;
    if (errno != EWOULDBLOCK)
        return -1;
    errno = saved;
    struct shim_flock f = {fd, op};
    return (int)shim__offload_blocking(shim__flock_blocking, &f, FS_PARK_OTHER);
}
SHIM_ALIAS(flock)

struct shim_setlkw {
    int (*real)(int, int, ...);
    int fd;
    int cmd;
    void *lock;
};

static long shim__setlkw_blocking(void *p)
{
    struct shim_setlkw *s = p;
    return s->real(s->fd, s->cmd, s->lock);
}

/* Record locks belong to the process (F_SETLKW) or to the open file
 * description (F_OFD_SETLKW), never to a thread, so a spare may take one
 * for the fiber. */
int shim__file_setlkw(int (*real)(int, int, ...), int fd, int cmd, void *lock)
{
    if (!fs_self())
        return real(fd, cmd, lock);
    int saved = errno;
    if (real(fd, cmd == F_SETLKW ? F_SETLK : F_OFD_SETLK, lock) == 0)
        return 0;
    if (errno != EAGAIN && errno != EACCES)
        return -1;
    errno = saved;
    struct shim_setlkw s = {real, fd, cmd, lock};
    return (int)shim__offload_blocking(shim__setlkw_blocking, &s, FS_PARK_OTHER);
}
