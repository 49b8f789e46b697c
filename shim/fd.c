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
 *
 * O_NONBLOCK and file descriptions shared between processes.
 *
 * Reads and writes never need O_NONBLOCK (io.c: MSG_DONTWAIT, RWF_NOWAIT),
 * but Linux has no per-call non-blocking accept or connect, so the shim
 * sets O_NONBLOCK on a listening socket, and on a connecting one while the
 * connect lasts. The flag lives in the open file description, which fork()
 * and exec() share with other processes. A sibling that reads it there,
 * with the shim (classifying the fd afresh) or without, took it for the
 * program's choice, and its blocking accept returned EAGAIN: Apache's
 * worker MPM, two children on one listener, spun at 13,000 accepts a
 * second and ignored shutdown.
 *
 * The design: the shim marks what it sets, in the description itself. It
 * writes O_NONBLOCK|O_APPEND (SHIM_FD_MARK). On a socket, F_SETFL accepts
 * O_APPEND, F_GETFL reports it, and nothing else looks at it, except that
 * sendfile() and splice() into the socket fail with EINVAL (measured on
 * 6.18), which rules the mark out for a connected socket: only listeners
 * and connecting sockets carry it, and sendfile holds plain O_NONBLOCK for
 * the length of one call (shim__fd_hold_call). O_DIRECT, O_NOATIME and
 * O_ASYNC are no alternative: refused on sockets, owner-only, or acting.
 * Every shim process that shares the description - the parent, a forked
 * child, an image exec'd with the shim - reads the mark as "O_NONBLOCK set
 * by a fibershim, the program wants blocking mode": classification and
 * shim__fd_accept_mode decode it, F_GETFL answers without both bits, and
 * the program's F_SETFL and FIONBIO keep it while the program asks for
 * blocking mode and drop it when the program asks for O_NONBLOCK, which
 * every sibling then sees, as without the shim. Limit: a program that
 * sets O_NONBLOCK|O_APPEND on a socket itself is read as blocking by other
 * shim processes (and one that sets O_APPEND alone keeps its listener
 * unmarked: accepts there take the released path below).
 *
 * Alternatives we rejected. A per-process shadow table alone, tracking
 * the program's intent from socket() on, is inherited by forked children,
 * but not by an exec'd image nor by a sibling forked before the parent's
 * first accept, and no table sees another process change the flag.
 * Clearing the flag after each accept, as connect does after it
 * completes: a listener's accept waits most of its life, with the flag
 * set. io_uring's IORING_ACCEPT_DONTWAIT is per call, but new (6.10),
 * often disabled by seccomp, and a ring per carrier for one call.
 *
 * A process without the shim cannot decode the mark. Before exec() of an
 * image that will not load the shim (its LD_PRELOAD does not name this
 * library), and before posix_spawn() of one, process.c hands every
 * inherited (not FD_CLOEXEC) marked socket over in the mode the program
 * chose: both bits cleared (shim__fd_exec_handover; a failed exec marks
 * them again). A shim process that still shares such a listener can no
 * longer count on O_NONBLOCK there: its accept4 could block a carrier,
 * and every fiber on it, until the next connection. So:
 *  - Before each accept attempt on a socket that another process may
 *    share, shim__fd_accept_mode re-reads F_GETFL (one syscall). A socket
 *    this process made since its last fork or spawn (own_gen) is its alone
 *    and skips it: a server that never forks pays nothing.
 *  - A listener that was held and is now blocking without the mark is
 *    "released": someone outside the shim wants it blocking. This process
 *    never marks it again, and a fiber's accept there waits for readiness
 *    in the netpoller, checks it with poll(0), and makes the blocking
 *    accept4 on a spare thread, one fiber per listener at a time (io.c).
 *  - Residual races: another process may take the connection between that
 *    poll and accept4; the spare, not a carrier, then waits for the next
 *    connection, and the fiber parked on it is not interrupted by signals
 *    meanwhile. And a process that clears the flag between a shim
 *    process's F_GETFL and its accept4 makes that one accept4 block its
 *    carrier until a connection arrives.
 *  - A shim process that finds an unmarked blocking listener it never held
 *    marks it: a process without the shim that accepts on the same
 *    listener then sees O_NONBLOCK (a supervisor with shim and non-shim
 *    children on one listener). Only the exec handover is safe against it.
 * Plain threads (before the first pthread_create, or foreign threads) call
 * accept4 directly; when it fails with EAGAIN on a marked listener, io.c
 * waits in poll() and tries again, so they block as the program asked.
 * Not covered: a description passed with SCM_RIGHTS or pidfd_getfd to a
 * process without the shim, children made by clone() or _Fork() (no
 * atfork handlers run), and images that ignore LD_PRELOAD (static,
 * set-user-ID) although it names the shim: they see the flag as set.
 */
#include "shim.h"
#include "fd.h"
#include "offload.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "sys.h"
#include "waitq.h"

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
        if (fl >= 0 && kind != SHIM_FD_PIPE && kind != SHIM_FD_FILE &&
            (fl & SHIM_FD_MARK) == SHIM_FD_MARK) {
            /* Marked by a shim, perhaps in another process: blocking. */
            atomic_store(&e->user_nb, 0);
            atomic_store(&e->real_nb, SHIM_HOLD_MARKED);
        } else if (fl >= 0) {
            atomic_store(&e->user_nb, (fl & O_NONBLOCK) != 0);
        }
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
        atomic_store(&e->released, 0);
        atomic_store(&e->no_mark, 0);
        atomic_store(&e->own_gen, 0);
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

/* Records that this process made fd after reading generation gen. */
static void shim__fd_made(int fd, uint32_t gen, bool no_mark)
{
    struct shim_fd *e = shim__fd_slot(fd);
    if (!e)
        return;
    atomic_store(&e->own_gen, gen);
    atomic_store(&e->no_mark, no_mark);
}

void shim__fd_accepted(int fd, const struct shim_fd *l, int flags, uint32_t gen)
{
    shim__fd_reset(fd);
    shim__fd_made(fd, gen, true);
    struct shim_fd *e = shim__fd_slot(fd);
    if (!e || !l)
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
    atomic_store(&b->released, atomic_load(&a->released));
    atomic_store(&b->no_mark, atomic_load(&a->no_mark));
    atomic_store(&b->own_gen, atomic_load(&a->own_gen));
    atomic_store(&b->no_rwf_nowait, atomic_load(&a->no_rwf_nowait));
    atomic_store(&b->file_read, atomic_load(&a->file_read));
    atomic_store(&b->file_write, atomic_load(&a->file_write));
    atomic_store(&b->rcvtimeo, atomic_load(&a->rcvtimeo));
    atomic_store(&b->sndtimeo, atomic_load(&a->sndtimeo));
    atomic_store_explicit(&b->kind, atomic_load(&a->kind), memory_order_release);
}

/* ---- shared file descriptions (see the opening comment) ------------------ */

/* The fork generation: bumped whenever another process may come to share
 * this one's descriptions. Starts at 1, so that own_gen 0 never matches. */
static _Atomic uint32_t shim__fd_gen = 1;

uint32_t shim__fd_gen_now(void)
{
    return atomic_load(&shim__fd_gen);
}

void shim__fd_forked(void)
{
    atomic_fetch_add(&shim__fd_gen, 1);
}

/* Whether no other process can hold e's description. The maker read the
 * generation before the syscall that made the fd, so an fd made just
 * before a fork carries the old generation even if its entry is written
 * after the fork, and counts as shared. */
static bool shim__fd_exclusive(const struct shim_fd *e)
{
    uint32_t g = atomic_load(&e->own_gen);
    return g != 0 && g == atomic_load(&shim__fd_gen);
}

static bool shim__fd_is_socket(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

bool shim__fd_marked(int fd)
{
    struct shim_fd *e = shim__fd_peek(fd);
    if (e && shim__fd_exclusive(e) && atomic_load(&e->real_nb) != SHIM_HOLD_MARKED)
        return false; /* ours alone, and our wrappers did not mark it: no syscall */
    int fl = REAL(fcntl)(fd, F_GETFL);
    return fl >= 0 && (fl & SHIM_FD_MARK) == SHIM_FD_MARK && shim__fd_is_socket(fd);
}

enum shim_accept_mode shim__fd_accept_mode(int fd, struct shim_fd *e)
{
    uint8_t hold = atomic_load(&e->real_nb);
    bool mine = shim__fd_exclusive(e);
    if (mine) {
        /* Only this process's wrappers change its flags: the entry is exact. */
        if (atomic_load(&e->user_nb))
            return SHIM_ACCEPT_USER_NB;
        if (hold == SHIM_HOLD_MARKED)
            return SHIM_ACCEPT_HELD;
    }
    int fl = REAL(fcntl)(fd, F_GETFL);
    if (fl < 0)
        return SHIM_ACCEPT_USER_NB; /* accept4 will say why */
    if ((fl & SHIM_FD_MARK) == SHIM_FD_MARK) {
        atomic_store(&e->user_nb, 0);
        atomic_store(&e->real_nb, SHIM_HOLD_MARKED);
        return SHIM_ACCEPT_HELD;
    }
    if (fl & O_NONBLOCK) {
        /* The program chose it, here or in a process sharing the listener. */
        atomic_store(&e->user_nb, 1);
        return SHIM_ACCEPT_USER_NB;
    }
    atomic_store(&e->user_nb, 0);
    if (hold == SHIM_HOLD_MARKED && !mine) {
        /* We held it and our wrappers keep the mark: a process outside
         * the shim cleared it, and wants it blocking. */
        atomic_store(&e->real_nb, SHIM_HOLD_NONE);
        atomic_store(&e->released, 1);
    }
    if (atomic_load(&e->released) || (fl & O_APPEND))
        return SHIM_ACCEPT_BLOCKING;
    if (REAL(fcntl)(fd, F_SETFL, fl | SHIM_FD_MARK) != 0)
        return SHIM_ACCEPT_BLOCKING;
    atomic_store(&e->real_nb, SHIM_HOLD_MARKED);
    return SHIM_ACCEPT_HELD;
}

/* The lock of e's blocking accepts, made at the first. Any thread. */
static pthread_mutex_t *shim__fd_accept_mutex(struct shim_fd *e)
{
    pthread_mutex_t *m = atomic_load_explicit(&e->accept_lock, memory_order_acquire);
    if (m)
        return m;
    pthread_mutex_t *n = malloc(sizeof *n);
    if (!n)
        return NULL;
    *n = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
    if (!atomic_compare_exchange_strong_explicit(&e->accept_lock, &m, n, memory_order_acq_rel,
                                                 memory_order_acquire)) {
        free(n); /* another thread made it first: m is theirs */
        return m;
    }
    return n;
}

bool shim__fd_accept_lock(struct shim_fd *e)
{
    pthread_mutex_t *m = shim__fd_accept_mutex(e);
    return m && shim__pthread_mutex_lock(m) == 0;
}

void shim__fd_accept_unlock(struct shim_fd *e)
{
    shim__pthread_mutex_unlock(atomic_load_explicit(&e->accept_lock, memory_order_acquire));
}

int shim__fd_hold_call(int fd, struct shim_fd *e, bool mark, int *saved)
{
    uint8_t kind = atomic_load(&e->kind);
    /* Only sockets: a pipe or tty may be shared with other processes,
     * whose reads would start failing with EAGAIN (and io.c never needs it
     * for them: RWF_NOWAIT does the job per call). */
    if (kind != SHIM_FD_STREAM && kind != SHIM_FD_DGRAM)
        return -1;
    int fl = REAL(fcntl)(fd, F_GETFL);
    if (fl < 0)
        return -1;
    if ((fl & SHIM_FD_MARK) == SHIM_FD_MARK) {
        atomic_store(&e->user_nb, 0);
        return 2;
    }
    if (fl & O_NONBLOCK) {
        if (atomic_load(&e->real_nb) == SHIM_HOLD_PLAIN && !atomic_load(&e->user_nb))
            return 2; /* another fiber's sendfile holds it */
        atomic_store(&e->user_nb, 1);
        return 0;
    }
    atomic_store(&e->user_nb, 0);
    /* Published before the flag is set, so that F_GETFL from another fiber
     * never shows our O_NONBLOCK as the program's. */
    atomic_store(&e->real_nb, mark ? SHIM_HOLD_MARKED : SHIM_HOLD_PLAIN);
    if (REAL(fcntl)(fd, F_SETFL, fl | (mark ? SHIM_FD_MARK : O_NONBLOCK)) != 0) {
        atomic_store(&e->real_nb, SHIM_HOLD_NONE);
        return -1;
    }
    *saved = fl;
    return 1;
}

void shim__fd_release_call(int fd, struct shim_fd *e, int saved)
{
    int err = errno;
    if (REAL(fcntl)(fd, F_SETFL, saved) == 0)
        atomic_store(&e->real_nb, SHIM_HOLD_NONE);
    errno = err;
}

/* Hands fd over if it is inherited and held by a shim; records it in h.
 * Raw syscalls only (see shim__fd_exec_handover). */
static void shim__fd_handover_one(int fd, struct shim_fd_handover *h)
{
    if (fs_fd_is_internal(fd))
        return;
    struct shim_fd *e = shim__fd_peek(fd);
    if (e && atomic_load(&e->no_mark) && atomic_load(&e->real_nb) != SHIM_HOLD_PLAIN)
        return; /* a connection or a pipe never carries the mark: no syscall */
    long fl = fs__sys2(SYS_fcntl, fd, F_GETFL);
    if (fl < 0)
        return;
    int clear;
    if ((fl & SHIM_FD_MARK) == SHIM_FD_MARK)
        clear = SHIM_FD_MARK;
    else if ((fl & O_NONBLOCK) && e && atomic_load(&e->real_nb) == SHIM_HOLD_PLAIN &&
             !atomic_load(&e->user_nb))
        clear = O_NONBLOCK;
    else
        return;
    long fdfl = fs__sys2(SYS_fcntl, fd, F_GETFD);
    struct stat st;
    if (fdfl < 0 || (fdfl & FD_CLOEXEC) || fs__sys2(SYS_fstat, fd, &st) != 0 ||
        !S_ISSOCK(st.st_mode))
        return;
    if (fs__sys3(SYS_fcntl, fd, F_SETFL, fl & ~clear) != 0)
        return;
    if (h->n < SHIM_HANDOVER_MAX) {
        h->v[h->n].fd = fd;
        h->v[h->n].flags = (int)fl;
        h->n++;
    }
}

/* Every open fd is below this: the size of the process's fd table
 * (FDSize in /proc/self/status), else the soft RLIMIT_NOFILE within
 * reason. Listing /proc/self/fd instead costs 8 ms per 10,000 open fds
 * with a 64 KiB buffer, 135 ms with 4 KiB (6.18): more than polling every
 * number below the bound. Raw syscalls only. */
static long shim__fd_bound(void)
{
    char buf[2048];
    long f = fs__sys4(SYS_openat, AT_FDCWD, "/proc/self/status", O_RDONLY | O_CLOEXEC, 0);
    long n = f < 0 ? -1 : fs__sys3(SYS_read, f, buf, sizeof buf - 1);
    if (f >= 0)
        fs__sys1(SYS_close, f);
    if (n > 0) {
        buf[n] = '\0';
        const char *p = strstr(buf, "\nFDSize:");
        if (p) {
            long size = 0;
            for (p += 8; *p == ' ' || *p == '\t'; p++) {
            }
            for (; *p >= '0' && *p <= '9'; p++)
                size = size * 10 + (*p - '0');
            if (size > 0)
                return size;
        }
    }
    struct rlimit rl;
    long top = fs__sys2(SYS_getrlimit, RLIMIT_NOFILE, &rl) == 0 ? (long)rl.rlim_cur : 1024;
    return top < 65536 ? top : 65536;
}

void shim__fd_exec_handover(struct shim_fd_handover *h)
{
    /* First: from now on a fiber of ours re-reads the flags before each
     * accept, and never takes a listener for its own while they change. */
    shim__fd_forked();
    h->n = 0;
    long bound = shim__fd_bound();
    /* A zero-timeout poll of 256 numbers at a time tells the open ones
     * (no POLLNVAL) in one syscall: the runtime's own fds sit at the top
     * of the range, so most numbers below the bound are closed. */
    struct pollfd p[256];
    struct timespec zero = {0, 0};
    for (long base = 0; base < bound; base += 256) {
        int n = bound - base < 256 ? (int)(bound - base) : 256;
        for (int i = 0; i < n; i++)
            p[i] = (struct pollfd){.fd = (int)(base + i)};
        bool listed = fs__sys5(SYS_ppoll, p, n, &zero, NULL, 0) >= 0;
        for (int i = 0; i < n; i++)
            if (!listed || !(p[i].revents & POLLNVAL))
                shim__fd_handover_one((int)(base + i), h);
    }
}

void shim__fd_exec_undo(const struct shim_fd_handover *h)
{
    for (int i = 0; i < h->n; i++)
        fs__sys3(SYS_fcntl, h->v[i].fd, F_SETFL, h->v[i].flags);
}

/* ---- creation ------------------------------------------------------------- */

int shim__socket(int domain, int type, int protocol)
{
    uint32_t gen = shim__fd_gen_now(); /* before the fd exists: see shim__fd_exclusive */
    int fd = REAL(socket)(domain, type, protocol);
    if (fd >= 0) {
        shim__fd_created(fd);
        shim__fd_made(fd, gen, false);
    }
    return fd;
}
SHIM_ALIAS(socket)

int shim__socketpair(int domain, int type, int protocol, int sv[2])
{
    uint32_t gen = shim__fd_gen_now();
    int rc = REAL(socketpair)(domain, type, protocol, sv);
    if (rc == 0) {
        shim__fd_created(sv[0]);
        shim__fd_created(sv[1]);
        shim__fd_made(sv[0], gen, true);
        shim__fd_made(sv[1], gen, true);
    }
    return rc;
}
SHIM_ALIAS(socketpair)

int shim__pipe2(int fds[2], int flags)
{
    uint32_t gen = shim__fd_gen_now();
    int rc = REAL(pipe2)(fds, flags);
    if (rc == 0) {
        shim__fd_created(fds[0]);
        shim__fd_created(fds[1]);
        shim__fd_made(fds[0], gen, true);
        shim__fd_made(fds[1], gen, true);
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

int shim__fd_release(int fd)
{
    if (fs_fd_is_internal(fd)) {
        errno = EBADF; /* the runtime's own fd: not the program's to close */
        return -1;
    }
    /* Wake fibers blocked on fd (with EBADF) before the number can be
     * reused by another thread's open. */
    fs_fd_close(fd);
    shim__fd_reset(fd);
    return 0;
}

int shim__close(int fd)
{
    shim__cancel_point(); /* glibc's close is one: a pending cancel leaves fd open */
    if (shim__fd_release(fd))
        return -1;
    return REAL(close)(fd);
}
SHIM_ALIAS(close)

/* close_range and closefrom (glibc's calls close_range itself): the
 * program's fds in the range are closed, as close closes one, and the
 * runtime's own (fs_fd_is_internal, all at or above
 * fs_fd_internal_lowest()) are left open: a program that closes every fd
 * but 0-2 after its first thread (daemons, a child before exec) must not
 * take the shim's eventfds and epoll instances with them. The part of the
 * range below the lowest internal fd is one system call; the rest, a few
 * hundred fds at most, is closed one fd at a time around the internal
 * ones. With CLOSE_RANGE_CLOEXEC nothing is closed and the call passes
 * through. Not a cancellation point (glibc's is not). */
/* One past the highest fd the process may have (RLIMIT_NOFILE, capped at
 * the netpoller's table). */
static unsigned shim__fd_top(void)
{
    struct rlimit rl;
    return getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (1u << 24) ? (unsigned)rl.rlim_cur
                                                                          : (1u << 24);
}

static void shim__fd_forget_range(unsigned first, unsigned last, unsigned top)
{
    for (unsigned fd = first; fd <= last && fd < top; fd++)
        (void)shim__fd_release((int)fd); /* EBADF for internal ones: kept */
}

int shim__close_range(unsigned first, unsigned last, int flags)
{
    if (first > last || (flags & CLOSE_RANGE_CLOEXEC))
        return REAL(close_range)(first, last, flags);
    int lo = fs_fd_internal_lowest();
    unsigned top = shim__fd_top();
    int saved = errno;
    shim__fd_forget_range(first, last, top);
    errno = saved;
    if (lo == INT_MAX || last < (unsigned)lo)
        return REAL(close_range)(first, last, flags);
    if (first < (unsigned)lo && REAL(close_range)(first, (unsigned)lo - 1, flags) != 0)
        return -1;
    /* CLOSE_RANGE_UNSHARE, if asked, has been done by the call above, or
     * is done now by this one (on an empty range). */
    if (first >= (unsigned)lo && (flags & CLOSE_RANGE_UNSHARE) &&
        REAL(close_range)(~0u, ~0u, CLOSE_RANGE_UNSHARE) != 0)
        return -1;
    for (unsigned fd = first > (unsigned)lo ? first : (unsigned)lo; fd <= last && fd < top; fd++)
        if (!fs_fd_is_internal((int)fd))
            REAL(close)((int)fd); /* EBADF for the unused ones */
    errno = saved;
    return 0;
}
SHIM_ALIAS(close_range)

void shim__closefrom(int lowfd)
{
    if (lowfd < 0)
        lowfd = 0;
    shim__close_range((unsigned)lowfd, ~0u, 0);
}
SHIM_ALIAS(closefrom)

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

/* Whether a shim holds fd's description: this process (for a listener, or
 * for one call), or another one sharing it (the mark). Only then does the
 * program's blocking mode need the shim's O_NONBLOCK kept underneath.
 * Costs a syscall only for a socket this process may share and does not
 * hold; connections and fds of other kinds never carry the mark. */
static uint8_t shim__fd_held(int fd, struct shim_fd *e)
{
    if (e) {
        uint8_t h = atomic_load(&e->real_nb);
        uint8_t kind = atomic_load(&e->kind);
        if (h != SHIM_HOLD_NONE || atomic_load(&e->no_mark) || kind == SHIM_FD_PIPE ||
            kind == SHIM_FD_FILE || shim__fd_exclusive(e))
            return h;
    }
    return shim__fd_marked(fd) ? SHIM_HOLD_MARKED : SHIM_HOLD_NONE;
}

static int shim__fcntl_impl(int (*real)(int, int, ...), int fd, int cmd, void *arg)
{
    switch (cmd) {
    case F_GETFL: {
        int fl = real(fd, cmd);
        if (fl < 0)
            return fl;
        if ((fl & SHIM_FD_MARK) == SHIM_FD_MARK) {
            /* A shim's mark, set here or by any process sharing the
             * description: the program's mode is blocking, and O_APPEND
             * is ours. On a file, both bits are the program's. */
            return shim__fd_is_socket(fd) ? fl & ~SHIM_FD_MARK : fl;
        }
        struct shim_fd *e = shim__fd_peek(fd);
        if ((fl & O_NONBLOCK) && e && atomic_load(&e->real_nb) == SHIM_HOLD_PLAIN &&
            !atomic_load(&e->user_nb))
            fl &= ~O_NONBLOCK; /* a sendfile of ours holds it for one call */
        return fl;
    }
    case F_SETFL: {
        int want = (int)(intptr_t)arg;
        struct shim_fd *e = shim__fd_peek(fd);
        uint8_t h = want & (O_NONBLOCK | O_APPEND) ? SHIM_HOLD_NONE : shim__fd_held(fd, e);
        if (h != SHIM_HOLD_NONE) {
            /* Blocking mode, on a socket a shim holds: keep it held (and
             * marked), so that every process sharing it still reads the
             * program's blocking mode, and no accept here can block. */
            int rc = real(fd, cmd, want | (h == SHIM_HOLD_MARKED ? SHIM_FD_MARK : O_NONBLOCK));
            if (rc == 0 && e)
                atomic_store(&e->user_nb, 0);
            return rc;
        }
        int rc = real(fd, cmd, want);
        if (rc == 0 && e) {
            if (atomic_load(&e->kind) != SHIM_FD_UNKNOWN)
                atomic_store(&e->user_nb, (want & O_NONBLOCK) != 0);
            /* O_APPEND without O_NONBLOCK leaves no room for the mark: the
             * program's own choice, not a release by another process. */
            if (!(want & O_NONBLOCK) && atomic_load(&e->real_nb) == SHIM_HOLD_MARKED)
                atomic_store(&e->real_nb, SHIM_HOLD_NONE);
        }
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
        bool on = *(int *)arg != 0;
        struct shim_fd *e = shim__fd_peek(fd);
        uint8_t h = shim__fd_held(fd, e);
        if (h != SHIM_HOLD_NONE) {
            /* As F_SETFL: it stays non-blocking underneath; the mark goes
             * when the program asks for O_NONBLOCK (its choice, which
             * every sharing process must see), and stays otherwise. */
            int fl = REAL(fcntl)(fd, F_GETFL);
            int set = fl | O_NONBLOCK;
            if (h == SHIM_HOLD_MARKED)
                set = on ? set & ~O_APPEND : set | O_APPEND;
            int rc = fl < 0 ? fl : REAL(fcntl)(fd, F_SETFL, set);
            if (rc == 0 && e)
                atomic_store(&e->user_nb, on);
            return rc;
        }
        int rc = REAL(ioctl)(fd, req, arg);
        if (rc == 0 && e && atomic_load(&e->kind) != SHIM_FD_UNKNOWN)
            atomic_store(&e->user_nb, on);
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
