/*
 * offload.h - calls the netpoller cannot make non-blocking run on a
 * bounded pool of spare kernel threads (offload.c), and the wrappers that
 * use it: regular-file I/O and file locks (file.c), name resolution
 * (resolve.c), waiting for children (wait.c), raw futex waits (futex.c).
 */
#ifndef SHIM_OFFLOAD_H
#define SHIM_OFFLOAD_H

#include "shim.h"

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

#define SHIM_SPARES_DEFAULT 64u
#define SHIM_SPARES_MAX 4096u

/* ---- offload.c ----------------------------------------------------------- */

/* Validates FIBERSHIM_MAX_SPARES (constructor time, and tests). Returns 0,
 * or -1 with one line for the user in err. */
int shim__offload_init(char *err, size_t errlen);

/*
 * Runs fn(ctx) on a spare thread while the calling fiber parks (reason
 * why, shown in dumps), and returns fn's result with errno as fn left it;
 * fn starts with the caller's errno. fn must be a plain call of the C
 * library (REAL()), safe on any thread. Off a fiber, calls fn(ctx) here.
 * Never blocks the carrier: when every spare is busy the call waits in a
 * FIFO queue. Any thread.
 */
long shim__offload_blocking(long (*fn)(void *ctx), void *ctx, enum fs_park_reason why);

/* The same for a call that is a cancellation point (read, write, fsync,
 * open, waitpid...): a pending cancel acts at entry, and a cancel of the
 * caller while the call runs interrupts it on its spare where it can
 * (see offload.c), then acts. */
long shim__offload_cancellable(long (*fn)(void *ctx), void *ctx, enum fs_park_reason why);

/* pthread_cancel of f, or a signal for it to handle: wakes f if it waits
 * for a cancellable handed-off call, to interrupt it. Any thread. */
void shim__offload_cancel(fs_fiber *f);

/* The value of the shim's SIGCANCEL that asks a spare to interrupt the
 * call it runs for a cancelled fiber, and its handler there (signal.c
 * calls it with the ucontext). */
#define SHIM_OFFLOAD_CANCEL_VALUE ((void *)0x6669737363616e63ull) /* "fisscanc" */
void shim__offload_cancel_signal(void *uc);

/* Calls handed to spare threads so far (FIBERSHIM_STATS "offloads"). Any
 * thread. */
uint64_t shim__offload_count(void);

/* ---- file.c ---------------------------------------------------------------- */

/*
 * I/O of a fiber on a regular file (shim_fd kind SHIM_FD_FILE): first
 * without blocking (preadv2/pwritev2 RWF_NOWAIT: a page-cache hit costs no
 * switch), the rest on a spare thread. A file that refuses RWF_NOWAIT is
 * read on the carrier if it never blocks (procfs, sysfs, tmpfs...), on a
 * spare if it cannot tell; decided once per fd. off < 0 uses and advances
 * the file position, as read/write/readv/writev do. Returns like the
 * syscall. Fiber only (io.c calls it after its fiber check).
 */
ssize_t shim__file_rw(int fd, const struct iovec *iov, int iovcnt, off_t off, bool write);

/* Whether reading a file with this fstat and fstatfs f_type never waits
 * for long, so a fiber may read it on its carrier: regular files of the
 * file systems whose data lives in memory or is made by the kernel on
 * demand, and the memory devices that answer at once. Any thread. */
bool shim__file_never_blocks(const struct stat *st, long f_type);

/* Fiber file calls made on the carrier because the file refused
 * RWF_NOWAIT (FIBERSHIM_STATS "file_inplace"). Any thread. */
uint64_t shim__file_inplace_count(void);

/* The same for one buffer (read, write, pread, pwrite). The kernel clamps
 * a huge count where an iovec longer than SSIZE_MAX is EINVAL: clamping
 * here keeps read's answer. */
static inline ssize_t shim__file_rw1(int fd, const void *buf, size_t len, off_t off, bool write)
{
    struct iovec v = {(void *)buf, len > SSIZE_MAX ? SSIZE_MAX : len};
    return shim__file_rw(fd, &v, 1, off, write);
}

/* fcntl's F_SETLKW/F_OFD_SETLKW (fd.c): tries the non-waiting command and
 * offloads the wait only if the lock is held elsewhere. Any thread. */
int shim__file_setlkw(int (*real)(int, int, ...), int fd, int cmd, void *lock);

/* fork child: forget the spares (process.c). */
void shim__offload_atfork_child(void);

#endif
