/*
 * mqueue.c - POSIX message queues: a full or empty queue parks the fiber.
 *
 * A message queue descriptor is a file descriptor the kernel can poll:
 * readable while a message is queued, writable while there is room
 * (ipc/mqueue.c wakes its poll waiters on every send, and on every
 * receive that no blocked sender takes the room of). So mq_send,
 * mq_receive and their timed forms have io.c's shape:
 *  - Try the call with an absolute timeout already past ({0, 0} on
 *    CLOCK_REALTIME). The kernel sends or receives if it can; on a full
 *    (empty) queue it fails with ETIMEDOUT at once, or with EAGAIN if the
 *    description is O_NONBLOCK, which the user chose (mq_open,
 *    mq_setattr): that EAGAIN is returned as it is. One system call when
 *    the queue is ready, as without the shim.
 *  - On ETIMEDOUT, wait on the netpoller for an edge newer than the
 *    snapshot taken before the try, until the caller's deadline (the
 *    timed forms: CLOCK_REALTIME, as the kernel measures it; a clock step
 *    re-translates it, so ETIMEDOUT never comes early), then try again.
 *  - A signal handler that runs in the fiber while it waits restarts the
 *    call if every handler that ran had SA_RESTART, else the call fails
 *    with EINTR (signal(7) lists these calls among the restartable ones).
 *    All four are cancellation points.
 * The kernel validates the timeout at entry (EINVAL for tv_nsec outside
 * [0, 1e9)) even when the call would not block; so does this, before the
 * first try. Other errors (EBADF, EMSGSIZE, EINVAL for a priority) come
 * from the try itself, unchanged.
 *
 * mq_close is glibc's close system call, which fd.c never sees: it tells
 * the netpoller first, as close does, so that a waiter gets EBADF and the
 * next file to get that number starts with no state of the queue's.
 * Calls from threads that are not fibers go straight to the C library.
 */
#include "shim.h"
#include "fd.h"
#include "waitq.h"

#include <mqueue.h>
#include <time.h>

static const struct timespec shim__mq_past = {0, 0};

/* One send or receive; buf is const for a send. */
struct shim_mq_op {
    mqd_t mq;
    bool send;
    char *buf;
    size_t len;
    unsigned prio;      /* send */
    unsigned *prio_out; /* receive */
};

static ssize_t shim__mq_try(const struct shim_mq_op *op, const struct timespec *abs)
{
    if (op->send)
        return REAL(mq_timedsend)(op->mq, op->buf, op->len, op->prio, abs);
    return REAL(mq_timedreceive)(op->mq, op->buf, op->len, op->prio_out, abs);
}

/* The call for a fiber; abs NULL: no timeout. Returns as the C library. */
static ssize_t shim__mq_op(const struct shim_mq_op *op, const struct timespec *abs)
{
    shim__cancel_point();
    struct shim__deadline d;
    if (shim__deadline_init(&d, CLOCK_REALTIME, abs)) {
        errno = EINVAL;
        return -1;
    }
    unsigned dir = op->send ? FS_POLL_WRITE : FS_POLL_READ;
    int saved = errno;
    for (;;) {
        uint32_t snap = fs_fd_edges(op->mq, dir);
        errno = saved;
        ssize_t n = shim__mq_try(op, &shim__mq_past);
        if (n >= 0 || errno != ETIMEDOUT)
            return n; /* done, or EAGAIN (the user's O_NONBLOCK), or an error */
        if (shim__deadline_passed(&d)) {
            errno = ETIMEDOUT;
            return -1;
        }
        int rc = fs_wait_fd(op->mq, dir | FS_POLL_TRIED, snap, d.mono,
                            op->send ? FS_PARK_WRITE : FS_PARK_READ);
        if (rc == 0)
            continue;
        if (rc == -ETIMEDOUT) {
            /* Early on CLOCK_REALTIME after a clock step: translate
             * again; the next round's check says whether it passed. */
            shim__deadline_refresh(&d);
            continue;
        }
        if (rc == -EINTR) {
            if (shim__sig_should_restart() && !shim__cancel_due())
                continue;
            errno = EINTR;
            shim__cancel_point();
            return -1;
        }
        if (rc == -EBADF) {
            errno = EBADF; /* mq_close or close ran while waiting */
            return -1;
        }
        /* epoll refused it (not a queue after all): the plain call. */
        errno = saved;
        return shim__mq_try(op, abs);
    }
}

int shim__mq_timedsend(mqd_t mq, const char *msg, size_t len, unsigned prio,
                       const struct timespec *abs)
{
    if (!fs_self())
        return REAL(mq_timedsend)(mq, msg, len, prio, abs);
    struct shim_mq_op op = {mq, true, (char *)msg, len, prio, NULL};
    return (int)shim__mq_op(&op, abs);
}
SHIM_ALIAS(mq_timedsend)

int shim__mq_send(mqd_t mq, const char *msg, size_t len, unsigned prio)
{
    if (!fs_self())
        return REAL(mq_send)(mq, msg, len, prio);
    struct shim_mq_op op = {mq, true, (char *)msg, len, prio, NULL};
    return (int)shim__mq_op(&op, NULL);
}
SHIM_ALIAS(mq_send)

ssize_t shim__mq_timedreceive(mqd_t mq, char *buf, size_t len, unsigned *prio,
                              const struct timespec *abs)
{
    if (!fs_self())
        return REAL(mq_timedreceive)(mq, buf, len, prio, abs);
    struct shim_mq_op op = {mq, false, buf, len, 0, prio};
    return shim__mq_op(&op, abs);
}
SHIM_ALIAS(mq_timedreceive)

ssize_t shim__mq_receive(mqd_t mq, char *buf, size_t len, unsigned *prio)
{
    if (!fs_self())
        return REAL(mq_receive)(mq, buf, len, prio);
    struct shim_mq_op op = {mq, false, buf, len, 0, prio};
    return shim__mq_op(&op, NULL);
}
SHIM_ALIAS(mq_receive)

int shim__mq_close(mqd_t mq)
{
    if (shim__fd_release(mq))
        return -1;
    return REAL(mq_close)(mq);
}
SHIM_ALIAS(mq_close)
