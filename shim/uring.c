/*
 * uring.c - waiting for io_uring completions (liburing.so.2).
 *
 * liburing makes its io_uring_enter calls with its own syscall
 * instruction, which no wrapper can see: a fiber that waits for a
 * completion there (MariaDB's InnoDB completion thread, in
 * io_uring_wait_cqe, for good) blocks its carrier until one comes. The
 * wait itself is reachable, though: io_uring_wait_cqe and
 * io_uring_wait_cqe_nr are inline in liburing.h, and call
 * __io_uring_get_cqe, which liburing.so.2 exports (LIBURING_2.0) and a
 * program that links liburing dynamically calls through its PLT.
 *
 * For a fiber, the one shape that only waits, (submit 0, wait_nr 1, no
 * signal mask), becomes: look for a completion without waiting (the real
 * __io_uring_get_cqe with wait_nr 0: it peeks at the completion ring, and
 * enters the kernel, without waiting, only where the ring says the
 * kernel holds completions back: an overflow to flush, task work to run),
 * and while there is none, park on the ring fd's readiness (an io_uring
 * fd polls readable while its completion ring is not empty), with an
 * edge snapshot taken before the look so that no completion posted in
 * between is missed. The carrier runs other fibers meanwhile.
 *
 * Everything else goes to the real function, which may block the carrier
 * as before: a call off a fiber; a submission (submit > 0: the kernel
 * must get it, in one call with the wait); wait_nr > 1 (how many
 * completions are ready is not something the real function tells); a
 * signal mask (the kernel swaps it for the wait only); and rings whose
 * completions a poll cannot report: IORING_SETUP_IOPOLL (completions are
 * reaped by io_uring_enter itself), IORING_SETUP_DEFER_TASKRUN (only the
 * submitting thread's io_uring_enter posts them) and
 * IORING_SETUP_COOP_TASKRUN (the task work that posts them waits for the
 * submitting thread to enter the kernel for io_uring; without it, the
 * kernel interrupts that thread to run it, wherever it is, and a
 * completion is posted, and the fd polls readable, at once). SQPOLL is
 * fine: a pure wait never needs to wake the kernel's submission thread.
 *
 * Results are the real call's: 0 and the completion, or -errno. A signal
 * handler that interrupts the wait ends it with -EINTR, as it ends
 * io_uring_enter (which is never restarted).
 *
 * The ring's layout: struct io_uring is liburing's ABI (its inline
 * functions read it in the program), fixed for soname 2 since 2.0:
 * struct io_uring_sq (104 bytes) and struct io_uring_cq (88 bytes), then
 * unsigned flags and int ring_fd. The fd is checked to be an io_uring
 * instance (its /proc/self/fd link) once per ring and fd.
 */
#include "shim.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct io_uring;
struct io_uring_cqe;

int __io_uring_get_cqe(struct io_uring *ring, struct io_uring_cqe **cqe_ptr, unsigned submit,
                       unsigned wait_nr, sigset_t *sigmask);

#define SHIM_URING_FLAGS_OFF 192
#define SHIM_URING_FD_OFF 196
#define SHIM_IORING_SETUP_IOPOLL (1u << 0)
#define SHIM_IORING_SETUP_COOP_TASKRUN (1u << 8)
#define SHIM_IORING_SETUP_DEFER_TASKRUN (1u << 13)
#define SHIM_URING_NOT_POLLABLE                                                            \
    (SHIM_IORING_SETUP_IOPOLL | SHIM_IORING_SETUP_COOP_TASKRUN | SHIM_IORING_SETUP_DEFER_TASKRUN)

/* The last ring seen to be a real io_uring, with its fd: most programs
 * have one ring per waiting thread, and one waiting thread. A ring that
 * fails the check is simply checked again next time (and waits in the
 * real call). */
static struct io_uring *_Atomic shim__uring_ok_ring;
static _Atomic int shim__uring_ok_fd = -1;

/* Whether fd is an io_uring instance. */
static bool shim__is_uring_fd(int fd)
{
    char path[64], link[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, link, sizeof link - 1);
    if (n <= 0)
        return false;
    link[n] = 0;
    return strcmp(link, "anon_inode:[io_uring]") == 0;
}

/* The ring's fd if a fiber may wait for its completions on the fd's
 * readiness, else -1. */
static int shim__uring_pollable_fd(struct io_uring *ring)
{
    unsigned flags;
    int fd;
    memcpy(&flags, (const char *)ring + SHIM_URING_FLAGS_OFF, sizeof flags);
    memcpy(&fd, (const char *)ring + SHIM_URING_FD_OFF, sizeof fd);
    if (fd < 0 || (flags & SHIM_URING_NOT_POLLABLE))
        return -1;
    if (atomic_load_explicit(&shim__uring_ok_ring, memory_order_acquire) == ring &&
        atomic_load_explicit(&shim__uring_ok_fd, memory_order_relaxed) == fd)
        return fd;
    if (!shim__is_uring_fd(fd))
        return -1;
    atomic_store_explicit(&shim__uring_ok_fd, fd, memory_order_relaxed);
    atomic_store_explicit(&shim__uring_ok_ring, ring, memory_order_release);
    return fd;
}

int shim____io_uring_get_cqe(struct io_uring *ring, struct io_uring_cqe **cqe_ptr, unsigned submit,
                             unsigned wait_nr, sigset_t *sigmask)
{
    __typeof__(__io_uring_get_cqe) *real = REAL_V(__io_uring_get_cqe, "LIBURING_2.0");
    int fd;
    if (!fs_self() || submit != 0 || wait_nr != 1 || sigmask || (fd = shim__uring_pollable_fd(ring)) < 0)
        return real(ring, cqe_ptr, submit, wait_nr, sigmask);
    for (;;) {
        uint32_t snap = fs_fd_edges(fd, FS_POLL_READ);
        int ret = real(ring, cqe_ptr, 0, 0, NULL);
        if (ret != -EAGAIN)
            return ret;
        int rc = fs_wait_fd(fd, FS_POLL_READ, snap, FS_NO_DEADLINE, FS_PARK_POLL);
        if (rc == -EINTR) {
            shim__sig_should_restart(); /* io_uring_enter is never restarted */
            *cqe_ptr = NULL;
            return -EINTR;
        }
        if (rc < 0) /* the netpoller cannot watch it: wait in the kernel */
            return real(ring, cqe_ptr, submit, wait_nr, sigmask);
    }
}
SHIM_ALIAS(__io_uring_get_cqe)
