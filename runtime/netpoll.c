/*
 * netpoll.c - the edge-triggered epoll netpoller.
 *
 * Layout: one epoll instance per sched (carrier). Started fibers stay on
 * their carrier (internal.h), and an fd is registered in the epoll of the
 * carrier whose fiber first waits on it: for a thread-per-connection
 * server that is the connection's own fiber, so its events are harvested
 * by the carrier that will run it, and handing them over costs nothing.
 * Consequences:
 *  - no thundering herd: exactly one thread ever waits on each epoll
 *    instance, its owner, and nobody else blocks in epoll_wait;
 *  - no syscall on the common path to move an event to another carrier;
 *    the rare fd shared by fibers of several carriers (a listening socket
 *    used by many acceptors) wakes the others through their inboxes, with
 *    an eventfd write only if that carrier sleeps;
 *  - wake-ups of a sleeping carrier are deduplicated (sched.notified), so
 *    a poller is woken at most once per need.
 * A single shared epoll (Go's layout) would instead need one thread to
 * block in it and hand events to whichever carrier owns the fiber.
 *
 * Per-fd records (struct fs_pollfd) live in a two-level table indexed by
 * fd and are never freed: epoll can still report an fd after it is closed.
 * epoll_data carries (generation << 32 | fd); fs_fd_close() bumps the
 * generation, so events for a closed fd, or for an fd number since reused,
 * are recognised and dropped.
 *
 * Readiness is latched in two ways (see fibershim.h): edge counters, for
 * "was there an edge since my snapshot", and READABLE/WRITABLE bits, for
 * poll(). Lock: fs_pollfd.lock protects a record's waiter lists, bits and
 * registration; counters are also readable without it.
 */
#include "internal.h"

#include <limits.h>
#include "sys.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>

#define FS_WAKE_KEY UINT64_MAX
#define FS_PD_CHUNK 4096u
#define FS_PD_CHUNKS 4096u /* 16M fds */
#define FS_EVENTS 128

struct fs_pollwait {
    struct fs_pollwait *next, *prev;
    struct fs_fiber *f;
    fs_park_token tok;
    unsigned mask;  /* FS_FD_* bits that satisfy this waiter */
    int result;     /* 0, or -EBADF when closed under it */
    /* On pd's list. Set under pd->lock; cleared under it too, by the
     * waiter or by a waker, whose release store is its last access to
     * the record (see fs__pd_unlink). */
    _Atomic bool linked;
};

struct fs_pollfd {
    fs_spinlock lock;
    uint32_t gen;               /* bumped by fs_fd_close */
    _Atomic uint32_t redges;    /* read edges seen */
    _Atomic uint32_t wedges;    /* write edges seen */
    _Atomic unsigned bits;      /* FS_FD_* */
    struct fs_sched *sched;     /* whose epoll it is registered in */
    struct fs_pollwait *waiters;/* doubly linked, under lock */
    bool internal;              /* the runtime's own epoll or eventfd */
};

static struct fs_pollfd *_Atomic fs__pd_table[FS_PD_CHUNKS];

static struct fs_pollfd *fs__pd_lookup(int fd)
{
    if (fd < 0 || (unsigned)fd >= FS_PD_CHUNK * FS_PD_CHUNKS)
        return NULL;
    struct fs_pollfd *c =
        atomic_load_explicit(&fs__pd_table[(unsigned)fd / FS_PD_CHUNK], memory_order_acquire);
    return c ? &c[(unsigned)fd % FS_PD_CHUNK] : NULL;
}

static _Atomic int fs__fd_hidden_min = INT_MAX; /* the lowest internal fd */
static _Atomic unsigned fs__fd_hide_slot = 64;  /* carriers use 0..63 (2 each) */

static void fs__fd_hidden_note(int fd)
{
    int lo = atomic_load(&fs__fd_hidden_min);
    while (fd < lo && !atomic_compare_exchange_weak(&fs__fd_hidden_min, &lo, fd))
        ;
}

static struct fs_pollfd *fs__pd_get(int fd)
{
    struct fs_pollfd *pd = fs__pd_lookup(fd);
    if (pd || fd < 0 || (unsigned)fd >= FS_PD_CHUNK * FS_PD_CHUNKS)
        return pd;
    struct fs_pollfd *c = calloc(FS_PD_CHUNK, sizeof *c);
    if (!c)
        return NULL;
    struct fs_pollfd *expect = NULL;
    /* Two threads may race to create a chunk; the loser frees its copy. */
    if (!atomic_compare_exchange_strong(&fs__pd_table[(unsigned)fd / FS_PD_CHUNK], &expect, c)) {
        free(c);
        c = expect;
    }
    return &c[(unsigned)fd % FS_PD_CHUNK];
}

/* Moves a runtime fd to the top of the fd range, so the program's own
 * fds keep the numbers they would have without the shim, and marks it
 * internal (the shim refuses to let the program close it). */
static long fs__fd_hide(long fd, unsigned slot)
{
    struct fs_rlim {
        uint64_t cur, max;
    } rl;
    if (fs__sys4(SYS_prlimit64, 0, RLIMIT_NOFILE, NULL, &rl) == 0 && rl.cur > 256 &&
        rl.cur <= (1u << 24)) {
        long want = (long)rl.cur - 1 - (long)(slot % 128) - 128;
        long nfd = fs__sys3(SYS_fcntl, fd, F_DUPFD_CLOEXEC, want);
        if (nfd >= 0) {
            fs__sys1(SYS_close, fd);
            fd = nfd;
        }
    }
    struct fs_pollfd *pd = fs__pd_get((int)fd);
    if (pd)
        pd->internal = true;
    return fd;
}

bool fs_fd_is_internal(int fd)
{
    struct fs_pollfd *pd = fs__pd_lookup(fd);
    return pd && pd->internal;
}

int fs_fd_hide(int fd)
{
    int nfd = (int)fs__fd_hide(fd, atomic_fetch_add(&fs__fd_hide_slot, 1));
    fs__fd_hidden_note(nfd);
    return nfd;
}

int fs_fd_internal_lowest(void)
{
    return atomic_load(&fs__fd_hidden_min);
}

int fs__netpoll_init(struct fs_sched *s)
{
    long ep = fs__sys1(SYS_epoll_create1, EPOLL_CLOEXEC);
    if (ep < 0)
        return (int)ep;
    long ev = fs__sys2(SYS_eventfd2, 0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ev < 0) {
        fs__sys1(SYS_close, ep);
        return (int)ev;
    }
    ep = fs__fd_hide(ep, 2 * s->id);
    ev = fs__fd_hide(ev, 2 * s->id + 1);
    fs__fd_hidden_note((int)(ep < ev ? ep : ev));
    /* Edge-triggered: each kick is a new edge, so the counter never needs
     * to be read back (it would take 2^64 kicks to fill). */
    struct epoll_event e = {.events = EPOLLIN | EPOLLET, .data.u64 = FS_WAKE_KEY};
    long rc = fs__sys4(SYS_epoll_ctl, ep, EPOLL_CTL_ADD, ev, &e);
    if (rc < 0) {
        fs__sys1(SYS_close, ep);
        fs__sys1(SYS_close, ev);
        return (int)rc;
    }
    s->epfd = (int)ep;
    s->wakefd = (int)ev;
    return 0;
}

/* ---- events ------------------------------------------------------------ */

static unsigned fs__ev_bits(uint32_t ev)
{
    unsigned b = 0;
    if (ev & EPOLLIN)
        b |= FS_FD_READABLE;
    if (ev & EPOLLOUT)
        b |= FS_FD_WRITABLE;
    if (ev & EPOLLRDHUP)
        b |= FS_FD_RDHUP;
    if (ev & EPOLLHUP)
        b |= FS_FD_HUP;
    if (ev & EPOLLERR)
        b |= FS_FD_ERR;
    if (ev & EPOLLPRI)
        b |= FS_FD_PRI;
    return b;
}

/* Takes w off pd's waiter list. Under pd->lock. A waker must not touch
 * w afterwards: its owner may see `linked` clear and reuse it. */
static void fs__pd_unlink_locked(struct fs_pollfd *pd, struct fs_pollwait *w)
{
    if (!atomic_load_explicit(&w->linked, memory_order_relaxed))
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        pd->waiters = w->next;
    if (w->next)
        w->next->prev = w->prev;
    /* release: the waker's writes to w (result) happen before the owner,
     * which reads `linked` without the lock, reuses w */
    atomic_store_explicit(&w->linked, false, memory_order_release);
}

/* Links w at the head of pd's waiter list. Under pd->lock. */
static void fs__pd_link_locked(struct fs_pollfd *pd, struct fs_pollwait *w)
{
    w->prev = NULL;
    w->next = pd->waiters;
    if (w->next)
        w->next->prev = w;
    pd->waiters = w;
    atomic_store_explicit(&w->linked, true, memory_order_relaxed);
}

/* A waiter whose park ended otherwise than by a wake of pd (timeout,
 * interrupt, another fd of a multi-wait) unlinks itself under the lock.
 * Its park ending does not order it after a waker that is unlinking it
 * at that very moment (a deadline racing an event or fs_fd_close), so
 * the lock-free check must be an acquire that pairs with the waker's
 * release in fs__pd_unlink_locked: once `linked` reads false, the waker
 * is done with w, and w (on the waiter's stack, or freed by
 * fs_wait_fds) may go. */
static void fs__pd_unlink(struct fs_pollfd *pd, struct fs_pollwait *w)
{
    if (!atomic_load_explicit(&w->linked, memory_order_acquire))
        return;
    fs__spin_lock(&pd->lock);
    fs__pd_unlink_locked(pd, w);
    fs__spin_unlock(&pd->lock);
}

/* Wakes the waiters of pd that `bits` satisfies. Under pd->lock: waiter
 * records live on their fibers' stacks and are only valid while linked. */
static int fs__pd_wake_locked(struct fs_pollfd *pd, unsigned bits, int result)
{
    int n = 0;
    struct fs_pollwait *w = pd->waiters, *nx;
    for (; w; w = nx) {
        nx = w->next;
        if (!(w->mask & bits) && result == 0)
            continue;
        struct fs_fiber *f = w->f;
        fs_park_token tok = w->tok;
        w->result = result;
        fs__pd_unlink_locked(pd, w); /* the last access to w */
        n += fs_unpark(f, tok);
    }
    return n;
}

static int fs__pd_event(struct fs_pollfd *pd, uint32_t gen, uint32_t ev)
{
    unsigned bits = fs__ev_bits(ev);
    fs__spin_lock(&pd->lock);
    if (pd->gen != gen) { /* the fd was closed since: stale event */
        fs__spin_unlock(&pd->lock);
        return 0;
    }
    if (bits & (FS_FD_READABLE | FS_FD_RDHUP | FS_FD_HUP | FS_FD_ERR | FS_FD_PRI))
        atomic_fetch_add_explicit(&pd->redges, 1, memory_order_release);
    if (bits & (FS_FD_WRITABLE | FS_FD_HUP | FS_FD_ERR))
        atomic_fetch_add_explicit(&pd->wedges, 1, memory_order_release);
    /* Readiness holds until drained; hang-up, error and urgent data until
     * the kernel says they are gone (fs_fd_not_ready). That urgent data
     * came at all is kept until close: a stream read stops at its mark. */
    if (bits & FS_FD_PRI)
        bits |= FS_FD_PRI_SEEN;
    atomic_fetch_or_explicit(&pd->bits, bits, memory_order_release);
    int n = pd->waiters ? fs__pd_wake_locked(pd, bits, 0) : 0;
    fs__spin_unlock(&pd->lock);
    return n;
}

/* The mask of a carrier waiting for events: every signal blocked but
 * glibc's SIGCANCEL and SIGSETXID (setuid() waits for every thread to
 * take the latter). A carrier runs no fiber while it waits, so no
 * program handler may run on it then: signals pending for the process
 * wait for a fiber that takes them (shim/signal.c). */
static const uint64_t fs__idle_sigmask = ~((1ull << 31) | (1ull << 32));

int fs__netpoll(struct fs_sched *s, int64_t timeout_ns)
{
    struct epoll_event evs[FS_EVENTS];
    const uint64_t *mask = &fs__idle_sigmask;
    long n;
    if (timeout_ns < 0) {
        n = fs__sys6(SYS_epoll_pwait2, s->epfd, evs, FS_EVENTS, NULL, mask, 8);
    } else {
        struct timespec ts = {timeout_ns / 1000000000, timeout_ns % 1000000000};
        n = fs__sys6(SYS_epoll_pwait2, s->epfd, evs, FS_EVENTS, &ts, mask, 8);
        if (n == -ENOSYS) /* before Linux 5.11: millisecond timeouts, rounded up */
            n = fs__sys6(SYS_epoll_pwait, s->epfd, evs, FS_EVENTS,
                         (long)((timeout_ns + 999999) / 1000000), mask, 8);
    }
    if (n == -ENOSYS && timeout_ns < 0)
        n = fs__sys6(SYS_epoll_pwait, s->epfd, evs, FS_EVENTS, -1, mask, 8);
    fs__stat_inc(&s->st.epoll_waits);
    atomic_store_explicit(&s->last_poll, fs_now(), memory_order_relaxed);
    int woken = 0;
    for (long i = 0; i < n; i++) {
        uint64_t key = evs[i].data.u64;
        if (key == FS_WAKE_KEY) {
            /* A kick. On s's own thread it has done its job: s is awake.
             * From another thread (the monitor harvesting a carrier it
             * judged stuck) it was meant for s, which may have gone to
             * sleep in epoll_wait since the judgement: the kernel woke
             * s's thread, but this call emptied the ready list first, so
             * s sleeps on, and with s->notified still set every later
             * kick skips the write. Post it again, so that s gets an edge
             * of its own (at worst s returns once for nothing). */
            if (FS_UNLIKELY(fs__cur_sched() != s)) {
                uint64_t one = 1;
                fs__sys3(SYS_write, s->wakefd, &one, sizeof one);
            }
            continue;
        }
        struct fs_pollfd *pd = fs__pd_lookup((int)(uint32_t)key);
        if (pd)
            woken += fs__pd_event(pd, (uint32_t)(key >> 32), evs[i].events);
    }
    return woken;
}

/* Polls s's epoll instance from a thread that is not s's carrier (the
 * monitor, while s is stuck). Event processing only takes pollfd locks and
 * wakes fibers with fs_unpark, which is safe from any thread; the fields
 * fs__netpoll writes besides are relaxed atomics: counters (an increment
 * may be lost, see fs__stat_inc) and last_poll. */
int fs__netpoll_foreign(struct fs_sched *s)
{
    return fs__netpoll(s, 0);
}

/* ---- registration ------------------------------------------------------ */

/* Adds fd to s's epoll. Under pd->lock. */
static int fs__pd_register_locked(struct fs_pollfd *pd, int fd, struct fs_sched *s)
{
    struct epoll_event e = {
        .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET,
        .data.u64 = ((uint64_t)pd->gen << 32) | (uint32_t)fd,
    };
    long rc = fs__sys4(SYS_epoll_ctl, s->epfd, EPOLL_CTL_ADD, fd, &e);
    fs__stat_inc(&s->st.epoll_ctls);
    if (rc == -EEXIST) {
        /* The same file was registered under this fd number before (the
         * shim did not see a close, e.g. one made inside libc): update the
         * key to the current generation. */
        rc = fs__sys4(SYS_epoll_ctl, s->epfd, EPOLL_CTL_MOD, fd, &e);
        fs__stat_inc(&s->st.epoll_ctls);
    }
    if (rc < 0)
        return (int)rc;
    pd->sched = s;
    atomic_fetch_add_explicit(&s->nfds, 1, memory_order_relaxed);
    atomic_fetch_or_explicit(&pd->bits, FS_FD_REGISTERED, memory_order_release);
    return 0;
}

/* ---- public ------------------------------------------------------------ */

uint32_t fs_fd_edges(int fd, unsigned dir)
{
    struct fs_pollfd *pd = fs__pd_lookup(fd);
    if (!pd)
        return 0;
    return atomic_load_explicit(dir == FS_POLL_READ ? &pd->redges : &pd->wedges,
                                memory_order_acquire);
}

unsigned fs_fd_state(int fd)
{
    struct fs_pollfd *pd = fs__pd_lookup(fd);
    return pd ? atomic_load_explicit(&pd->bits, memory_order_acquire) : 0;
}

void fs_fd_drained(int fd, unsigned dir, uint32_t since)
{
    struct fs_pollfd *pd = fs__pd_lookup(fd);
    if (!pd)
        return;
    _Atomic uint32_t *ctr = dir == FS_POLL_READ ? &pd->redges : &pd->wedges;
    unsigned bit = dir == FS_POLL_READ ? FS_FD_READABLE : FS_FD_WRITABLE;
    if (!(atomic_load_explicit(&pd->bits, memory_order_relaxed) & bit))
        return;
    fs__spin_lock(&pd->lock);
    /* Under the lock, edges cannot move: if none came since the snapshot,
     * the failed or short I/O is the newest news and the fd is drained. */
    if (atomic_load_explicit(ctr, memory_order_relaxed) == since)
        atomic_fetch_and_explicit(&pd->bits, ~bit, memory_order_relaxed);
    fs__spin_unlock(&pd->lock);
}

void fs_fd_not_ready(int fd, unsigned bits, uint32_t rsince, uint32_t wsince)
{
    struct fs_pollfd *pd = fs__pd_lookup(fd);
    if (!pd)
        return;
    bits &= FS_FD_READABLE | FS_FD_WRITABLE | FS_FD_RDHUP | FS_FD_HUP | FS_FD_ERR | FS_FD_PRI;
    if (!(atomic_load_explicit(&pd->bits, memory_order_relaxed) & bits))
        return;
    fs__spin_lock(&pd->lock);
    /* Under the lock, edges cannot move. An edge counted after the
     * snapshot may have set any bit of its direction after the kernel
     * answered; hang-up and error count in both directions. */
    bool r = atomic_load_explicit(&pd->redges, memory_order_relaxed) == rsince;
    bool w = atomic_load_explicit(&pd->wedges, memory_order_relaxed) == wsince;
    unsigned clear = 0;
    if (r)
        clear |= bits & (FS_FD_READABLE | FS_FD_RDHUP | FS_FD_PRI);
    if (w)
        clear |= bits & FS_FD_WRITABLE;
    if (r && w)
        clear |= bits & (FS_FD_HUP | FS_FD_ERR);
    atomic_fetch_and_explicit(&pd->bits, ~clear, memory_order_relaxed);
    fs__spin_unlock(&pd->lock);
}

static bool fs__commit_unlock(void *arg)
{
    fs__spin_unlock(&((struct fs_pollfd *)arg)->lock);
    return true;
}

int fs_wait_fd(int fd, unsigned dir, uint32_t since, int64_t deadline, enum fs_park_reason why)
{
    struct fs_sched *s = fs__cur_sched();
    if (!s || !s->cur)
        return -EPERM;
    struct fs_pollfd *pd = fs__pd_get(fd);
    if (!pd)
        return fd < 0 ? -EBADF : -ENOMEM;
    bool tried = dir & FS_POLL_TRIED;
    dir &= ~FS_POLL_TRIED;
    _Atomic uint32_t *ctr = dir == FS_POLL_READ ? &pd->redges : &pd->wedges;
    unsigned sticky = dir == FS_POLL_READ ? (FS_FD_RDHUP | FS_FD_HUP | FS_FD_ERR)
                                          : (FS_FD_HUP | FS_FD_ERR);
    fs__spin_lock(&pd->lock);
    unsigned bits = atomic_load_explicit(&pd->bits, memory_order_relaxed);
    /* A hang-up or error bit ends the wait at once, since no edge may
     * follow it; not for a caller whose attempt after the snapshot got
     * EAGAIN: the kernel would have reported the condition instead, so the
     * bit is stale (fibershim.h, FS_POLL_TRIED), and an edge newer than
     * the snapshot carries any new one. */
    if (atomic_load_explicit(ctr, memory_order_relaxed) != since || (!tried && (bits & sticky))) {
        fs__spin_unlock(&pd->lock);
        return 0; /* an edge came after the snapshot: retry the I/O */
    }
    if (!(bits & FS_FD_REGISTERED)) {
        int rc = fs__pd_register_locked(pd, fd, s);
        if (rc) {
            fs__spin_unlock(&pd->lock);
            return rc;
        }
    }
    struct fs_pollwait w = {
        .f = s->cur,
        .tok = fs_park_prepare(),
        .mask = (dir == FS_POLL_READ ? FS_FD_READABLE | FS_FD_PRI : FS_FD_WRITABLE) | sticky,
    };
    fs__pd_link_locked(pd, &w);
    int rc = fs_park(w.tok, why, (const void *)(intptr_t)fd, deadline, fs__commit_unlock, pd);
    fs__pd_unlink(pd, &w); /* still linked: timed out or interrupted */
    if (w.result)
        return w.result;
    return rc;
}

int fs_fd_probe(int fd)
{
    struct fs_sched *s = fs__cur_sched();
    if (!s || !s->cur)
        return -EPERM;
    struct fs_pollfd *pd = fs__pd_get(fd);
    if (!pd)
        return fd < 0 ? -EBADF : -ENOMEM;
    unsigned bits = atomic_load_explicit(&pd->bits, memory_order_acquire);
    if (bits & FS_FD_REGISTERED)
        return (int)bits;
    fs__spin_lock(&pd->lock);
    int rc = 0;
    if (!(atomic_load(&pd->bits) & FS_FD_REGISTERED))
        rc = fs__pd_register_locked(pd, fd, s);
    /* Read under the lock: fs_fd_close on another thread resets it. */
    bool mine = pd->sched == s;
    fs__spin_unlock(&pd->lock);
    if (rc)
        return rc;
    /* The kernel queued the fd's current readiness at EPOLL_CTL_ADD;
     * harvest it now so the caller sees the truth, not "nothing yet". */
    if (mine)
        fs__netpoll(s, 0);
    return (int)atomic_load_explicit(&pd->bits, memory_order_acquire);
}

void fs_netpoll_now(void)
{
    struct fs_sched *s = fs__cur_sched();
    if (s && s->cur)
        fs__netpoll(s, 0);
}

int fs_wait_fds(const int *fds, const unsigned *masks, int n, int64_t deadline)
{
    struct fs_sched *s = fs__cur_sched();
    if (!s || !s->cur)
        return -EPERM;
    struct fs_pollwait stackw[8];
    struct fs_pollwait *ws = n <= 8 ? stackw : calloc((size_t)n, sizeof *ws);
    if (!ws)
        return -ENOMEM;
    fs_park_token tok = fs_park_prepare();
    bool ready = false;
    int i;
    for (i = 0; i < n && !ready; i++) {
        struct fs_pollfd *pd = fs__pd_lookup(fds[i]);
        atomic_init(&ws[i].linked, false);
        if (!pd)
            continue;
        unsigned m = masks[i] | FS_FD_HUP | FS_FD_ERR;
        fs__spin_lock(&pd->lock);
        if (atomic_load_explicit(&pd->bits, memory_order_relaxed) & m) {
            ready = true;
        } else {
            /* Linked before we park: an event now finds us PREPARED and
             * marks the park woken; fs_park then returns at once. */
            ws[i] = (struct fs_pollwait){.f = s->cur, .tok = tok, .mask = m};
            fs__pd_link_locked(pd, &ws[i]);
        }
        fs__spin_unlock(&pd->lock);
    }
    int linked = i, rc = 0;
    if (!ready)
        rc = fs_park(tok, FS_PARK_POLL, fds, deadline, NULL, NULL);
    else
        fs_park(tok, FS_PARK_POLL, fds, 0, NULL, NULL); /* ends the prepared park */
    for (i = 0; i < linked; i++)
        fs__pd_unlink(fs__pd_lookup(fds[i]), &ws[i]);
    if (ws != stackw)
        free(ws);
    return ready ? 0 : rc;
}

void fs_fd_close(int fd)
{
    struct fs_pollfd *pd = fs__pd_lookup(fd);
    if (!pd || pd->internal)
        return;
    fs__spin_lock(&pd->lock);
    pd->gen++;
    /* The registration (if any) goes away with the file's last close; if
     * the file lives on (dup, fork), its events carry the old generation
     * and are dropped. So no EPOLL_CTL_DEL: one epoll_ctl per fd, total. */
    unsigned was = atomic_exchange_explicit(&pd->bits, 0, memory_order_acq_rel);
    atomic_fetch_add(&pd->redges, 1);
    atomic_fetch_add(&pd->wedges, 1);
    /* Its sched's count drops now, though a file that lives on stays in
     * that epoll: what it still reports carries the old generation and
     * is dropped, so no poll is needed for it. */
    if ((was & FS_FD_REGISTERED) && pd->sched)
        atomic_fetch_sub_explicit(&pd->sched->nfds, 1, memory_order_relaxed);
    pd->sched = NULL;
    fs__pd_wake_locked(pd, ~0u, -EBADF);
    fs__spin_unlock(&pd->lock);
}

/* fork child (fork.c): forget every fd record. The child's epoll
 * instances are new and empty, so no event for an old record can come. */
void fs__netpoll_forget_all(void)
{
    for (unsigned c = 0; c < FS_PD_CHUNKS; c++) {
        struct fs_pollfd *chunk = atomic_load(&fs__pd_table[c]);
        if (chunk)
            memset(chunk, 0, FS_PD_CHUNK * sizeof *chunk);
    }
}
