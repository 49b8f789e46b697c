/*
 * fd.h - what the shim knows about each fd: its kind, the O_NONBLOCK the
 * user asked for (the shadow flag), and socket timeouts.
 *
 * Entries are classified lazily, at the first blocking call a fiber makes
 * on the fd (fstat, SO_TYPE, F_GETFL, SO_RCVTIMEO/SO_SNDTIMEO), so fds the
 * shim never saw created (inherited, opened inside libc) work the same as
 * ours. Calls that create or destroy an fd reset its entry. Entries live
 * in a two-level table indexed by fd and are never freed.
 */
#ifndef SHIM_FD_H
#define SHIM_FD_H

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

struct shim_fd {
    _Atomic uint8_t kind;     /* enum shim_fd_kind */
    _Atomic uint8_t user_nb;  /* O_NONBLOCK as the user set it */
    _Atomic uint8_t real_nb;  /* we set O_NONBLOCK on the open file description */
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

/* A new fd: forget whatever the number meant before. */
void shim__fd_created(int fd);

/* A socket accepted from listener l (classified) with accept4 flags:
 * classified without a syscall. It has the listener's type and inherits
 * its SO_RCVTIMEO/SO_SNDTIMEO (the kernel clones the listener's socket),
 * but not its O_NONBLOCK: that comes from SOCK_NONBLOCK alone. */
void shim__fd_accepted(int fd, const struct shim_fd *l, int flags);

/* Copies what we know of `from` to `to` (dup: same open file description). */
void shim__fd_copy(int from, int to);

/* Makes a socket's file description non-blocking underneath, keeping the
 * user's view in the shadow flag (accept, connect and sendfile need it).
 * Returns false for anything but a socket, or on failure. */
bool shim__fd_make_nonblocking(int fd, struct shim_fd *e);

/* Timeout conversion for SO_RCVTIMEO/SO_SNDTIMEO option values. */
int64_t shim__timeval_ns(const void *val, unsigned len, bool new_format);

#endif
