/*
 * fd.h - what the shim knows about each fd: its kind, the O_NONBLOCK the
 * user asked for (the shadow flag), and socket timeouts.
 *
 * Entries are classified lazily, at the first blocking call a fiber makes
 * on the fd (fstat, SO_TYPE, F_GETFL, SO_RCVTIMEO/SO_SNDTIMEO), so fds the
 * shim never saw created (inherited, opened inside libc) work the same as
 * ours. Calls that create or destroy an fd reset its entry. Entries live
 * in a two-level table indexed by fd and are never freed.
 *
 * The O_NONBLOCK the shim sets on a listening or connecting socket is
 * marked in the open file description itself (O_NONBLOCK|O_APPEND), so
 * that every process sharing the description reads the program's mode
 * right; fd.c's opening comment explains the design and its limits.
 */
#ifndef SHIM_FD_H
#define SHIM_FD_H

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

enum shim_fd_kind {
    SHIM_FD_UNKNOWN = 0, /* not classified yet */
    SHIM_FD_STREAM,      /* SOCK_STREAM socket: a short read proves it drained */
    SHIM_FD_DGRAM,       /* datagram or seqpacket socket */
    SHIM_FD_PIPE,        /* pipe, FIFO, tty, eventfd...: pollable, no MSG_DONTWAIT */
    SHIM_FD_FILE,        /* regular file, directory, or anything epoll refuses */
};

/* How file.c makes a fiber's reads, or writes, of an fd it sends there.
 * Decided once per fd and direction, at the first EOPNOTSUPP from
 * RWF_NOWAIT (shim__file_rw). */
enum shim_file_way {
    SHIM_FILE_NOWAIT = 0, /* RWF_NOWAIT first, a spare thread if it would block */
    SHIM_FILE_INPLACE,    /* the plain call on the carrier: it never waits for long */
    SHIM_FILE_OFFLOAD,    /* the file cannot tell: always on a spare thread */
};

/* Flags that say "O_NONBLOCK set by a fibershim; the program's mode is
 * blocking" on a socket's open file description (fd.c). */
#define SHIM_FD_MARK (O_NONBLOCK | O_APPEND)

/* Whether the shim holds O_NONBLOCK on a socket's description (real_nb). */
enum shim_fd_hold {
    SHIM_HOLD_NONE = 0, /* the description's O_NONBLOCK, if any, is the program's */
    SHIM_HOLD_MARKED,   /* held with the mark while the program wants blocking mode */
    SHIM_HOLD_PLAIN,    /* O_NONBLOCK alone, for one sendfile call (sendfile refuses O_APPEND) */
};

/* How an accept on a listener waits (shim__fd_accept_mode). */
enum shim_accept_mode {
    SHIM_ACCEPT_USER_NB,  /* the program chose O_NONBLOCK: one attempt, EAGAIN is its answer */
    SHIM_ACCEPT_HELD,     /* non-blocking underneath: try, and park in the netpoller on EAGAIN */
    SHIM_ACCEPT_BLOCKING, /* blocking underneath and it must stay so: wait for readiness, then
                             make the blocking accept on a spare thread */
};

struct shim_fd {
    _Atomic uint8_t kind;     /* enum shim_fd_kind */
    _Atomic uint8_t user_nb;  /* O_NONBLOCK as the user set it */
    _Atomic uint8_t real_nb;  /* enum shim_fd_hold: what we hold on the open file description */
    _Atomic uint8_t released; /* held once, then found blocking and unmarked: a process outside
                                 the shim wants it blocking; never marked again here */
    _Atomic uint8_t no_mark;   /* accepted, or from socketpair or pipe: never listens or
                                  connects, so never carries the mark */
    _Atomic uint32_t own_gen;  /* shim__fd_gen when this process made the fd (0: inherited,
                                  or not made by a wrapper); equal: no other process has it */
    pthread_mutex_t *_Atomic accept_lock; /* SHIM_ACCEPT_BLOCKING accepts, one at a time; made
                                             at the first, kept across resets, never freed */
    _Atomic uint8_t no_rwf_nowait; /* preadv2/pwritev2(RWF_NOWAIT) unsupported here */
    _Atomic uint8_t file_read;  /* enum shim_file_way of reads */
    _Atomic uint8_t file_write; /* enum shim_file_way of writes */
    _Atomic int64_t rcvtimeo; /* SO_RCVTIMEO in ns, 0 = none */
    _Atomic int64_t sndtimeo; /* SO_SNDTIMEO in ns, 0 = none */
};

/* The entry of fd, classified; NULL if fd is not open (errno EBADF) or
 * out of the table's range. */
struct shim_fd *shim__fd_get(int fd);

/* The entry of fd without classifying it, or NULL (never allocates). */
struct shim_fd *shim__fd_peek(int fd);

/* Forgets fd (it was closed, or is about to be reused). */
void shim__fd_reset(int fd);

/* What close does before the real call: -1 with EBADF for one of the
 * runtime's own fds, else wakes its waiters (EBADF), forgets its state
 * and returns 0. For every call that closes an fd behind glibc's close
 * (mq_close, close_range). */
int shim__fd_release(int fd);

/* A new fd: forget whatever the number meant before. */
void shim__fd_created(int fd);

/* A socket accepted from listener l (classified; NULL if the accept was
 * not a fiber's) with accept4 flags: classified without a syscall. It has
 * the listener's type and inherits its SO_RCVTIMEO/SO_SNDTIMEO (the kernel
 * clones the listener's socket), but not its O_NONBLOCK: that comes from
 * SOCK_NONBLOCK alone. gen: shim__fd_gen_now() read before the accept. */
void shim__fd_accepted(int fd, const struct shim_fd *l, int flags, uint32_t gen);

/* Copies what we know of `from` to `to` (dup: same open file description). */
void shim__fd_copy(int from, int to);

/* ---- shared file descriptions (fd.c's opening comment) ---------------- */

/* The fork generation, to be read before a call that makes an fd (socket,
 * accept4): an fd made after a fork, by the process that reads the
 * generation, is that process's alone until the next fork or spawn. */
uint32_t shim__fd_gen_now(void);

/* Every description this process holds may now be shared with a new
 * process (fork, in the parent and the child; posix_spawn). */
void shim__fd_forked(void);

/* How a fiber's accept on socket fd (entry e, classified) must wait;
 * marks the description the first time. One F_GETFL if another process
 * may share it, none otherwise. Any thread. */
enum shim_accept_mode shim__fd_accept_mode(int fd, struct shim_fd *e);

/* True if fd is a socket whose description carries the mark, so that an
 * EAGAIN from a plain thread's accept is the shim's, not the program's. */
bool shim__fd_marked(int fd);

/* Takes and releases the lock that lets one SHIM_ACCEPT_BLOCKING accept of
 * this process at a time run on a spare thread (a fiber parks on it). The
 * lock returns false if it cannot be allocated. */
bool shim__fd_accept_lock(struct shim_fd *e);
void shim__fd_accept_unlock(struct shim_fd *e);

/* Holds socket fd non-blocking underneath for one call (connect: with the
 * mark; sendfile: without, since sendfile fails with EINVAL on a socket
 * with O_APPEND). Returns -1 if it cannot (not a socket, F_SETFL failed:
 * make the plain call), 0 if the description says the program chose
 * O_NONBLOCK (e->user_nb is set: one attempt), 1 if this call set it
 * (undo with shim__fd_release_call(fd, e, *saved)), 2 if it was held
 * already (the mark of a listener or of a connect elsewhere). */
int shim__fd_hold_call(int fd, struct shim_fd *e, bool mark, int *saved);

/* Gives the description back the flags `saved` after shim__fd_hold_call
 * returned 1; errno is preserved. */
void shim__fd_release_call(int fd, struct shim_fd *e, int saved);

/* Sockets handed over before an exec, so that a failed exec can mark them
 * again. Beyond SHIM_HANDOVER_MAX the rest are handed over all the same,
 * and stay so (this process then finds them released). */
#define SHIM_HANDOVER_MAX 64
struct shim_fd_handover {
    int n; /* entries in v */
    struct {
        int fd, flags; /* the fd and its flags before */
    } v[SHIM_HANDOVER_MAX];
};

/* Before an exec (or spawn) of an image that will not load the shim:
 * every inherited (not FD_CLOEXEC) socket whose description carries the
 * mark, or that this process holds for a call, gets the mode the program
 * chose (the flags without the shim's O_NONBLOCK). Async-signal-safe
 * (raw syscalls, no allocation): it runs in a forked child. */
void shim__fd_exec_handover(struct shim_fd_handover *h);

/* After that exec failed: marks the sockets of h again. */
void shim__fd_exec_undo(const struct shim_fd_handover *h);

/* Timeout conversion for SO_RCVTIMEO/SO_SNDTIMEO option values. */
int64_t shim__timeval_ns(const void *val, unsigned len, bool new_format);

#endif
