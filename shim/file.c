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
 *  - a file that refuses RWF_NOWAIT for reads (EOPNOTSUPP: procfs, sysfs,
 *    tmpfs, cgroup files...) is classified once, by fstat and fstatfs,
 *    and the answer kept in its fd entry: one that never waits for long
 *    is read on the carrier with the plain call, as a page-cache hit is
 *    (a handoff would cost several times the read of a sysctl); any other
 *    (FUSE, debugfs, /proc/kmsg) cannot tell whether it would block, so
 *    each read goes to a spare. A write's refusal is kept the same way.
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
#include <linux/magic.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>
#include <termios.h>
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

/* ---- files that never block ------------------------------------------------------ */

/* In-place calls, counted per CPU: carriers on different CPUs then add to
 * different cache lines, so the count costs the read no line traffic.
 * sched_getcpu reads the rseq area; a thread moved between it and the add
 * only shares a stripe, which the atomic add makes safe. */
#define SHIM_INPLACE_STRIPES 64u
static struct {
    _Alignas(64) _Atomic uint64_t n;
} shim__inplace[SHIM_INPLACE_STRIPES];

static void shim__file_count_inplace(void)
{
    unsigned cpu = (unsigned)sched_getcpu(); /* -1 on failure: any stripe will do */
    atomic_fetch_add_explicit(&shim__inplace[cpu % SHIM_INPLACE_STRIPES].n, 1,
                              memory_order_relaxed);
}

uint64_t shim__file_inplace_count(void)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < SHIM_INPLACE_STRIPES; i++)
        n += atomic_load_explicit(&shim__inplace[i].n, memory_order_relaxed);
    return n;
}

/* The inode number of /proc/kmsg, 0 if there is none: the one procfs file
 * whose read waits, for the next kernel message, as long as it takes. Its
 * number is fixed at boot and the same in every procfs mount. Looked up
 * once; two fibers racing both store the same answer. */
static ino_t shim__proc_kmsg_ino(void)
{
    static _Atomic uint64_t ino; /* 0: not looked up; UINT64_MAX: none */
    uint64_t v = atomic_load_explicit(&ino, memory_order_relaxed);
    if (SHIM_UNLIKELY(v == 0)) {
        int saved = errno;
        struct stat st;
        v = stat("/proc/kmsg", &st) == 0 && S_ISREG(st.st_mode) ? (uint64_t)st.st_ino
                                                                  : UINT64_MAX;
        errno = saved;
        atomic_store_explicit(&ino, v, memory_order_relaxed);
    }
    return v == UINT64_MAX ? 0 : (ino_t)v;
}

bool shim__file_never_blocks(const struct stat *st, long f_type)
{
    /* Memory devices: null, zero, full and urandom answer at once. Not
     * /dev/random: before Linux 5.6 its reads wait for entropy, and current
     * kernels take RWF_NOWAIT for it themselves. */
    if (S_ISCHR(st->st_mode)) {
        unsigned mi = minor(st->st_rdev);
        return major(st->st_rdev) == 1 && (mi == 3 || mi == 5 || mi == 7 || mi == 9);
    }
    /* Anything but a regular file (a FIFO or device node on tmpfs) waits
     * for whatever it is, wherever it lives. */
    if (!S_ISREG(st->st_mode))
        return false;
    switch (f_type) {
    case PROC_SUPER_MAGIC: {
        ino_t kmsg = shim__proc_kmsg_ino();
        return !kmsg || st->st_ino != kmsg;
    }
    case SYSFS_MAGIC:
    case CGROUP_SUPER_MAGIC:
    case CGROUP2_SUPER_MAGIC:
    case SECURITYFS_MAGIC:
        /* Made by the kernel on demand. A driver's attribute may still
         * talk to its hardware (a 1-wire sensor, ~750 ms): the monitor
         * treats a carrier held that long as any stuck carrier. */
        return true;
    case TMPFS_MAGIC:
    case RAMFS_MAGIC:
    case HUGETLBFS_MAGIC:
        /* In memory (tmpfs: unless swapped out, which is rare and short). */
        return true;
    default:
        /* FUSE, network file systems, debugfs and tracefs (trace_pipe
         * waits for events): they cannot say whether a read would wait. */
        return false;
    }
}

/* How fd's reads (write: writes) are made from now on, now that it refused
 * RWF_NOWAIT; remembered in its entry, so the refusal and the fstat and
 * fstatfs here happen once per fd. A write is made on the carrier whatever
 * the file, as before: buffered writes (ext4) refuse RWF_NOWAIT yet only
 * copy into the page cache. The answer holds for the open file: only
 * fcntl(F_SETFL, O_DIRECT) could change it, and then the fd keeps the way
 * of a buffered write. Keeps errno. */
static uint8_t shim__file_learn(int fd, bool write)
{
    int saved = errno;
    uint8_t way = SHIM_FILE_INPLACE;
    if (!write) {
        struct stat st;
        struct statfs sf;
        bool never = fstat(fd, &st) == 0 && fstatfs(fd, &sf) == 0 &&
                     shim__file_never_blocks(&st, (long)sf.f_type);
        way = never ? SHIM_FILE_INPLACE : SHIM_FILE_OFFLOAD;
    }
    /* pread and pwrite come here on fds nobody classified yet: peek does
     * not classify, and its entry is reset when the fd is closed. */
    struct shim_fd *e = shim__fd_peek(fd);
    if (!e)
        e = shim__fd_get(fd);
    if (e)
        atomic_store_explicit(write ? &e->file_write : &e->file_read, way,
                              memory_order_relaxed);
    errno = saved;
    return way;
}

/* One plain call of fd's I/O, made the way `way` says: on the carrier, or
 * on a spare while the fiber parks. Returns like the syscall. */
static ssize_t shim__file_rw_plain(int fd, const struct iovec *v, int iovcnt, off_t at,
                                   bool write, uint8_t way)
{
    if (way == SHIM_FILE_INPLACE) {
        fs_count_syscall();
        shim__file_count_inplace();
        return write ? pwritev2(fd, v, iovcnt, at, 0) : preadv2(fd, v, iovcnt, at, 0);
    }
    struct shim_file_io io = {fd, v, iovcnt, at};
    return shim__offload_cancellable(write ? shim__file_write_blocking : shim__file_read_blocking,
                                     &io, write ? FS_PARK_WRITE : FS_PARK_READ);
}

ssize_t shim__file_rw(int fd, const struct iovec *iov, int iovcnt, off_t off, bool write)
{
    /* A file that refused RWF_NOWAIT before: no second refusal. */
    struct shim_fd *e = shim__fd_peek(fd);
    uint8_t way = e ? atomic_load_explicit(write ? &e->file_write : &e->file_read,
                                           memory_order_relaxed)
                    : SHIM_FILE_NOWAIT;
    if (way != SHIM_FILE_NOWAIT)
        return shim__file_rw_plain(fd, iov, iovcnt, off, write, way);

    int saved = errno;
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
        if (n < 0 && (errno == EAGAIN || errno == EOPNOTSUPP)) {
            /* It would wait (this once: the rest goes to a spare), or it
             * cannot say (for good: learn how to treat the file). The
             * call starts from the caller's errno, as the plain one does. */
            way = errno == EAGAIN ? SHIM_FILE_OFFLOAD : shim__file_learn(fd, write);
            errno = saved;
            n = shim__file_rw_plain(fd, v, iovcnt, at, write, way);
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
    if (!fs_self())
        return REAL(pread)(fd, buf, len, off);
    shim__cancel_point();
    if (off < 0)
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
    if (!fs_self())
        return REAL(pwrite)(fd, buf, len, off);
    shim__cancel_point();
    if (off < 0)
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
    return (int)shim__offload_cancellable(shim__fsync_blocking, &fd, FS_PARK_WRITE);
}
SHIM_ALIAS(fsync)

int shim__fdatasync(int fd)
{
    return (int)shim__offload_cancellable(shim__fdatasync_blocking, &fd, FS_PARK_WRITE);
}
SHIM_ALIAS(fdatasync)

/* Cancellation points of glibc's that never wait for long (or, for
 * tcdrain, wait on a tty without a way to park): only their entry acts on
 * a pending cancel, then the C library makes the call. */
int shim__msync(void *addr, size_t len, int flags)
{
    shim__cancel_point();
    return REAL(msync)(addr, len, flags);
}
SHIM_ALIAS(msync)

int shim__tcdrain(int fd)
{
    shim__cancel_point();
    return REAL(tcdrain)(fd);
}
SHIM_ALIAS(tcdrain)

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
    shim__cancel_point(); /* open and openat are cancellation points */
    if (fs_self() && shim__open_waits(dirfd, path, flags)) {
        struct shim_open o = {dirfd, path, flags, mode};
        fd = (int)shim__offload_cancellable(shim__open_blocking, &o, FS_PARK_OTHER);
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

/* creat is open(path, O_CREAT | O_WRONLY | O_TRUNC, mode). */
int shim__creat(const char *path, mode_t mode)
{
    return shim__openat_common(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}
SHIM_ALIAS(creat)

int shim__creat64(const char *path, mode_t mode)
{
    return shim__openat_common(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC | O_LARGEFILE, mode);
}
SHIM_ALIAS(creat64)

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
    shim__cancel_point(); /* glibc's fcntl is one for these two commands */
    int saved = errno;
    if (real(fd, cmd == F_SETLKW ? F_SETLK : F_OFD_SETLK, lock) == 0)
        return 0;
    if (errno != EAGAIN && errno != EACCES)
        return -1;
    errno = saved;
    struct shim_setlkw s = {real, fd, cmd, lock};
    return (int)shim__offload_cancellable(shim__setlkw_blocking, &s, FS_PARK_OTHER);
}
