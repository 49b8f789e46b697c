/*
 * poll.c - waiting calls: poll, ppoll, select, pselect, and a fiber's own
 * epoll event loop (epoll_wait, epoll_pwait, epoll_pwait2).
 *
 * poll and select are answered from the netpoller's latched state
 * (fs_fd_state), so steady state makes no poll() syscall: every fd is
 * registered once (fs_fd_probe), and readiness bits are set by edges and
 * cleared when an I/O wrapper proves the fd drained, or when a real poll
 * denies them. Fds epoll refuses (regular files, /dev/null) are always
 * ready, as poll(2) reports them.
 *
 * A fiber's own epoll instance is itself pollable: epoll_wait tries the
 * real call without waiting, then parks on the netpoller until the
 * instance becomes readable.
 *
 * Signal masks passed to ppoll/pselect/epoll_pwait/epoll_pwait2 are the
 * fiber's for the wait (signal.c, shim__sig_mask_push): a signal they let
 * in ends the wait with EINTR after its handler ran, with that mask, as
 * the kernel does; the fiber's own mask is back when the call returns.
 */
#include "shim.h"
#include "fd.h"

#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <time.h>

extern int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen);
extern int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *ts,
                       const sigset_t *mask, size_t fdslen);

/* The netpoller mask that would make fd interesting for `events`, and
 * whether its latched state already says it may be ready. Registers the
 * fd on first sight. Fds epoll refuses (regular files) are always ready. */
static bool shim__poll_candidate(int fd, short events, unsigned *mask_out)
{
    *mask_out = 0;
    struct shim_fd *e = shim__fd_get(fd);
    if (!e || atomic_load(&e->kind) == SHIM_FD_FILE)
        return true; /* POLLNVAL, or always ready: the real poll says which */
    int st = fs_fd_probe(fd);
    if (st < 0) {
        if (st == -EPERM)
            atomic_store(&e->kind, SHIM_FD_FILE);
        return true;
    }
    unsigned m = FS_FD_HUP | FS_FD_ERR;
    if (events & (POLLIN | POLLRDNORM))
        m |= FS_FD_READABLE | FS_FD_RDHUP;
    if (events & POLLPRI)
        m |= FS_FD_PRI;
    if (events & (POLLOUT | POLLWRNORM))
        m |= FS_FD_WRITABLE;
    if (events & POLLRDHUP)
        m |= FS_FD_RDHUP;
    *mask_out = m;
    return (st & m) != 0;
}

/* The state bits a poll for `events` that returned nothing proves clear. */
static unsigned shim__poll_answered(short events)
{
    unsigned b = FS_FD_HUP | FS_FD_ERR;
    if (events & (POLLIN | POLLRDNORM))
        b |= FS_FD_READABLE | FS_FD_RDHUP; /* a shut-down peer is readable */
    if (events & POLLRDHUP)
        b |= FS_FD_RDHUP;
    if (events & POLLPRI)
        b |= FS_FD_PRI;
    if (events & (POLLOUT | POLLWRNORM))
        b |= FS_FD_WRITABLE;
    return b;
}

/*
 * poll for fibers. The netpoller's latched state decides between parking
 * (nothing can be ready: no syscall) and asking the kernel (something may
 * be ready: one real poll with timeout 0, whose answer is exact). Latched
 * bits the kernel contradicts are dropped, so a stale bit costs at most
 * one extra check. deadline as for fs_park. Returns like poll(2).
 */
static int shim__fiber_poll(struct pollfd *fds, nfds_t n, int64_t deadline)
{
    int small_fds[16];
    unsigned small_masks[16];
    uint32_t small_snaps[32];
    bool big = n > 16;
    int *wfds = big ? malloc(n * sizeof *wfds) : small_fds;
    unsigned *wmasks = big ? malloc(n * sizeof *wmasks) : small_masks;
    uint32_t *snaps = big ? malloc(2 * n * sizeof *snaps) : small_snaps;
    int ret = -1;
    if (!wfds || !wmasks || !snaps) {
        errno = ENOMEM;
        goto out;
    }
    bool harvested = false;
    for (;;) {
        bool maybe = false;
        int nw = 0;
        for (nfds_t i = 0; i < n; i++) {
            int fd = fds[i].fd;
            if (fd < 0)
                continue;
            snaps[2 * i] = fs_fd_edges(fd, FS_POLL_READ);
            snaps[2 * i + 1] = fs_fd_edges(fd, FS_POLL_WRITE);
            unsigned m;
            if (shim__poll_candidate(fd, fds[i].events, &m))
                maybe = true;
            else {
                wfds[nw] = fd;
                wmasks[nw++] = m;
            }
        }
        bool due = deadline != FS_NO_DEADLINE && deadline <= fs_now();
        if (!maybe && due && !harvested) {
            /* About to report "nothing": make sure no event is waiting
             * unharvested in this carrier's epoll first. */
            fs_netpoll_now();
            harvested = true;
            continue;
        }
        if (maybe) {
            fs_count_syscall();
            int r = REAL(poll)(fds, n, 0);
            if (r != 0 || due) {
                ret = r;
                break;
            }
            /* Stale bits: the kernel says none of them is ready now, in
             * the directions it was asked about, and only those. A poll
             * for POLLIN says nothing of POLLOUT: forgetting that the fd
             * is writable would make the next poll for POLLOUT, or a
             * write, wait for an edge that already came. Hang-up and
             * error it reports whatever was asked: a latched one it
             * denies is gone (an error a recv reported and cleared), and
             * left latched it would make this loop spin. */
            for (nfds_t i = 0; i < n; i++) {
                if (fds[i].fd < 0)
                    continue;
                fs_fd_not_ready(fds[i].fd, shim__poll_answered(fds[i].events), snaps[2 * i],
                                snaps[2 * i + 1]);
            }
            continue;
        }
        if (due) {
            for (nfds_t i = 0; i < n; i++)
                fds[i].revents = 0;
            ret = 0;
            break;
        }
        int rc = fs_wait_fds(wfds, wmasks, nw, deadline);
        if (rc == -EINTR)
            shim__sig_should_restart(); /* poll and select are never restarted */
        if (rc < 0 && rc != -ETIMEDOUT) {
            errno = -rc;
            break;
        }
    }
out:
    if (big) {
        free(wfds);
        free(wmasks);
        free(snaps);
    }
    return ret;
}

/* Every call here is a cancellation point: a pending cancel acts at entry
 * (shim__cancel_point), and on a wait that ended with EINTR, once the
 * caller's mask is back and nothing is held. */
static int shim__poll_done(int rc)
{
    if (rc < 0 && errno == EINTR)
        shim__cancel_point();
    return rc;
}

int shim__poll(struct pollfd *fds, nfds_t n, int timeout)
{
    if (!fs_self())
        return REAL(poll)(fds, n, timeout);
    shim__cancel_point();
    if (n > (nfds_t)1 << 20) {
        errno = EINVAL;
        return -1;
    }
    int64_t dl = timeout < 0 ? FS_NO_DEADLINE : shim__deadline_after((int64_t)timeout * 1000000);
    return shim__poll_done(shim__fiber_poll(fds, n, dl));
}
SHIM_ALIAS(poll)

int shim____poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen)
{
    if (fdslen / sizeof *fds < n)
        __builtin_trap();
    return shim__poll(fds, n, timeout);
}
SHIM_ALIAS(__poll_chk)

static bool shim__ts_valid(const struct timespec *ts)
{
    return ts->tv_sec >= 0 && ts->tv_nsec >= 0 && ts->tv_nsec < 1000000000;
}

static int64_t shim__ts_ns(const struct timespec *ts)
{
    if (ts->tv_sec > INT64_MAX / 1000000000 - 1)
        return INT64_MAX / 2;
    return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

/* After a wait with a mask of the caller's: its own mask back, errno kept. */
static void shim__masked_end(uint64_t saved)
{
    int e = errno;
    shim__sig_mask_pop(saved);
    errno = e;
}

/* A handler ran as the mask was applied: no wait, EINTR. */
static int shim__masked_eintr(uint64_t saved)
{
    shim__sig_mask_pop(saved);
    errno = EINTR;
    return -1;
}

int shim__ppoll(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *mask)
{
    if (!fs_self())
        return REAL(ppoll)(fds, n, ts, mask);
    shim__cancel_point();
    if (ts && !shim__ts_valid(ts)) {
        errno = EINVAL;
        return -1;
    }
    uint64_t saved;
    if (mask && shim__sig_mask_push(mask, &saved))
        return shim__poll_done(shim__masked_eintr(saved));
    int rc = shim__fiber_poll(fds, n, ts ? shim__deadline_after(shim__ts_ns(ts)) : FS_NO_DEADLINE);
    if (mask)
        shim__masked_end(saved);
    return shim__poll_done(rc);
}
SHIM_ALIAS(ppoll)

int shim____ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *ts,
                      const sigset_t *mask, size_t fdslen)
{
    if (fdslen / sizeof *fds < n)
        __builtin_trap();
    return shim__ppoll(fds, n, ts, mask);
}
SHIM_ALIAS(__ppoll_chk)

/* select and pselect through poll: fd_sets in, fd_sets out. */
static int shim__fiber_select(int nfds, fd_set *r, fd_set *w, fd_set *x, int64_t deadline)
{
    if (nfds < 0 || nfds > FD_SETSIZE) {
        errno = EINVAL;
        return -1;
    }
    struct pollfd small[64], *p = small;
    int n = 0;
    for (int fd = 0; fd < nfds; fd++)
        if ((r && FD_ISSET(fd, r)) || (w && FD_ISSET(fd, w)) || (x && FD_ISSET(fd, x)))
            n++;
    if (n > 64 && !(p = malloc((size_t)n * sizeof *p))) {
        errno = ENOMEM;
        return -1;
    }
    n = 0;
    for (int fd = 0; fd < nfds; fd++) {
        short ev = 0;
        if (r && FD_ISSET(fd, r))
            ev |= POLLIN;
        if (w && FD_ISSET(fd, w))
            ev |= POLLOUT;
        if (x && FD_ISSET(fd, x))
            ev |= POLLPRI;
        if (ev)
            p[n++] = (struct pollfd){.fd = fd, .events = ev};
    }
    int rc = shim__fiber_poll(p, (nfds_t)n, deadline);
    if (rc >= 0) {
        for (int i = 0; i < n; i++) {
            if (p[i].revents & POLLNVAL) {
                errno = EBADF; /* select reports a closed fd as an error */
                rc = -1;
                break;
            }
        }
    }
    if (rc >= 0) {
        rc = 0;
        if (r)
            FD_ZERO(r);
        if (w)
            FD_ZERO(w);
        if (x)
            FD_ZERO(x);
        for (int i = 0; i < n; i++) {
            short re = p[i].revents;
            /* select counts each set membership; HUP and ERR make an fd
             * readable and writable, as the kernel's select does. */
            if (r && (p[i].events & POLLIN) && (re & (POLLIN | POLLHUP | POLLERR))) {
                FD_SET(p[i].fd, r);
                rc++;
            }
            if (w && (p[i].events & POLLOUT) && (re & (POLLOUT | POLLERR))) {
                FD_SET(p[i].fd, w);
                rc++;
            }
            if (x && (p[i].events & POLLPRI) && (re & POLLPRI)) {
                FD_SET(p[i].fd, x);
                rc++;
            }
        }
    }
    if (p != small)
        free(p);
    return rc;
}

int shim__select(int nfds, fd_set *r, fd_set *w, fd_set *x, struct timeval *tv)
{
    if (!fs_self())
        return REAL(select)(nfds, r, w, x, tv);
    shim__cancel_point();
    int64_t dl = FS_NO_DEADLINE;
    if (tv) {
        if (tv->tv_sec < 0 || tv->tv_usec < 0) {
            errno = EINVAL;
            return -1;
        }
        dl = shim__deadline_after((int64_t)tv->tv_sec * 1000000000 + tv->tv_usec * 1000);
    }
    int rc = shim__fiber_select(nfds, r, w, x, dl);
    if (tv && rc >= 0) {
        /* Linux writes the time left back into the timeval. */
        int64_t left = dl - fs_now();
        if (left < 0)
            left = 0;
        tv->tv_sec = left / 1000000000;
        tv->tv_usec = (left % 1000000000) / 1000;
    }
    return shim__poll_done(rc);
}
SHIM_ALIAS(select)

int shim__pselect(int nfds, fd_set *r, fd_set *w, fd_set *x, const struct timespec *ts,
                  const sigset_t *mask)
{
    if (!fs_self())
        return REAL(pselect)(nfds, r, w, x, ts, mask);
    shim__cancel_point();
    if (ts && !shim__ts_valid(ts)) {
        errno = EINVAL;
        return -1;
    }
    uint64_t saved;
    if (mask && shim__sig_mask_push(mask, &saved))
        return shim__poll_done(shim__masked_eintr(saved));
    int rc = shim__fiber_select(nfds, r, w, x,
                                ts ? shim__deadline_after(shim__ts_ns(ts)) : FS_NO_DEADLINE);
    if (mask)
        shim__masked_end(saved);
    return shim__poll_done(rc);
}
SHIM_ALIAS(pselect)

/* ---- a fiber's own epoll loop ------------------------------------------------ */

static int shim__fiber_epoll_wait(int ep, struct epoll_event *ev, int max, int64_t deadline)
{
    if (max <= 0) {
        errno = EINVAL;
        return -1;
    }
    for (;;) {
        uint32_t snap = fs_fd_edges(ep, FS_POLL_READ);
        fs_count_syscall();
        int n = REAL(epoll_wait)(ep, ev, max, 0);
        if (n != 0)
            return n;
        if (deadline != FS_NO_DEADLINE && deadline <= fs_now())
            return 0;
        fs_fd_drained(ep, FS_POLL_READ, snap);
        int rc = fs_wait_fd(ep, FS_POLL_READ, snap, deadline, FS_PARK_POLL);
        if (rc == -EINTR)
            shim__sig_should_restart(); /* epoll_wait is never restarted */
        if (rc == -ETIMEDOUT)
            deadline = 0;
        else if (rc < 0) {
            errno = -rc;
            return -1;
        }
    }
}

int shim__epoll_wait(int ep, struct epoll_event *ev, int max, int timeout)
{
    if (!fs_self())
        return REAL(epoll_wait)(ep, ev, max, timeout);
    shim__cancel_point();
    if (timeout == 0)
        return REAL(epoll_wait)(ep, ev, max, timeout);
    int64_t dl = timeout < 0 ? FS_NO_DEADLINE : shim__deadline_after((int64_t)timeout * 1000000);
    return shim__poll_done(shim__fiber_epoll_wait(ep, ev, max, dl));
}
SHIM_ALIAS(epoll_wait)

int shim__epoll_pwait(int ep, struct epoll_event *ev, int max, int timeout, const sigset_t *mask)
{
    if (!fs_self())
        return REAL(epoll_pwait)(ep, ev, max, timeout, mask);
    shim__cancel_point();
    if (timeout == 0 && !mask)
        return REAL(epoll_pwait)(ep, ev, max, timeout, mask);
    uint64_t saved;
    if (mask && shim__sig_mask_push(mask, &saved))
        return shim__poll_done(shim__masked_eintr(saved));
    int rc = shim__fiber_epoll_wait(
        ep, ev, max,
        timeout < 0 ? FS_NO_DEADLINE : shim__deadline_after((int64_t)timeout * 1000000));
    if (mask)
        shim__masked_end(saved);
    return shim__poll_done(rc);
}
SHIM_ALIAS(epoll_pwait)

int shim__epoll_pwait2(int ep, struct epoll_event *ev, int max, const struct timespec *ts,
                       const sigset_t *mask)
{
    if (!fs_self())
        return REAL(epoll_pwait2)(ep, ev, max, ts, mask);
    shim__cancel_point();
    if (ts && ts->tv_sec == 0 && ts->tv_nsec == 0 && !mask)
        return REAL(epoll_pwait2)(ep, ev, max, ts, mask);
    if (ts && !shim__ts_valid(ts)) {
        errno = EINVAL;
        return -1;
    }
    uint64_t saved;
    if (mask && shim__sig_mask_push(mask, &saved))
        return shim__poll_done(shim__masked_eintr(saved));
    int rc = shim__fiber_epoll_wait(ep, ev, max,
                                    ts ? shim__deadline_after(shim__ts_ns(ts)) : FS_NO_DEADLINE);
    if (mask)
        shim__masked_end(saved);
    return shim__poll_done(rc);
}
SHIM_ALIAS(epoll_pwait2)
