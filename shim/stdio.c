/*
 * stdio.c - stdio streams on pipes, FIFOs and sockets park the fiber.
 *
 * glibc's FILE reads and writes with its internal __read/__write, which no
 * wrapper can interpose: fgets on a socket whose peer is slow would block
 * the carrier, and every fiber on it. So a stream on a pipe, FIFO or
 * socket is made a glibc cookie stream (fopencookie) whose read, write,
 * seek and close functions are the shim's read/write/lseek/close on the
 * fd: a fiber parks in the netpoller, a plain thread blocks in the kernel
 * exactly as glibc's own functions would make it. Everything else about the
 * stream stays glibc's: a cookie stream uses the same buffer, line
 * buffering, ungetc, EOF/error, seek and locking code as a file stream
 * (_IO_cookie_jumps in glibc 2.36's libio/iofopncook.c shares _IO_file_*
 * for all of them). What this file adds so the stream is the one glibc
 * would have made:
 *  - fileno: a cookie stream has _fileno = -2; ours gets the fd (fileno
 *    tests _IO_IS_FILEBUF, which cookie streams have, and _fileno >= 0);
 *  - the buffer glibc would allocate (_IO_file_doallocate sizes it by the
 *    fd's st_blksize; a cookie stream cannot stat), allocated when the
 *    stream is made and handed to glibc to own;
 *  - wide orientation for fdopen/fopen/std streams (a cookie stream is
 *    byte-only, an fdopen stream is not): wide data in glibc's layout,
 *    whose size and vtable slot are read from stdout's at start;
 *  - popen/pclose: the child is spawned as glibc 2.36's popen spawns it
 *    (/bin/sh -c, the other popen streams closed in it, 'e'), and the
 *    close function waits for that child: pclose returns its status;
 *  - fclose of a replaced stdin/stdout/stderr leaves the object valid, as
 *    glibc does for its static std streams.
 * Regular files, ttys and devices stay glibc's streams (the page cache,
 * and the tty's line buffering, are glibc's business). Streams are wrapped
 * whoever makes them: a plain thread's calls go straight to the C library.
 * FIBERSHIM_STDIO=0 turns all of this off.
 *
 * The FILE layout used here is glibc 2.36's on x86-64 (struct
 * _IO_FILE_plus: the FILE then its vtable pointer; struct _IO_cookie_file:
 * that, then the cookie, then the four mangled functions). It is checked
 * at start against a cookie stream made for the purpose; on any mismatch
 * the feature stays off.
 */
#include "shim.h"
#include "fd.h"

#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* The wrappers this file goes through (io.c, fd.c, file.c, process.c,
 * wait.c). */
ssize_t shim__read(int fd, void *buf, size_t len);
ssize_t shim__write(int fd, const void *buf, size_t len);
int shim__close(int fd);
int shim__open(const char *path, int flags, ...);
int shim__posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                      const posix_spawnattr_t *attr, char *const argv[], char *const envp[]);
pid_t shim__waitpid(pid_t pid, int *status, int options);

extern char **environ;

/* glibc 2.36 libio/libio.h flag bits of FILE._flags (not in the public
 * headers, which have only _IO_EOF_SEEN, _IO_ERR_SEEN, _IO_USER_LOCK). */
#define SHIM_IO_USER_BUF 0x0001
#define SHIM_IO_UNBUFFERED 0x0002
#define SHIM_IO_NO_READS 0x0004
#define SHIM_IO_NO_WRITES 0x0008
#define SHIM_IO_LINE_BUF 0x0200
#define SHIM_IO_IS_APPENDING 0x1000
#define SHIM_IO_MODE_BITS (SHIM_IO_NO_READS | SHIM_IO_NO_WRITES | SHIM_IO_IS_APPENDING)

/* glibc's exported vtable for wide file streams, its std streams, and the
 * close half of fclose (what fclose does to a static std stream). */
extern const char _IO_wfile_jumps[];
extern FILE _IO_2_1_stdin_, _IO_2_1_stdout_, _IO_2_1_stderr_;
extern int _IO_file_close_it(FILE *fp);

/* One of our streams: the cookie of its FILE. */
struct shim_stream {
    int fd;                   /* the fd; -1 once closed */
    pid_t pid;                /* popen's child, 0 for other streams */
    struct shim_stream *next; /* popen streams: the chain, under shim__popen_lock */
    FILE *fp;                 /* its FILE */
    void *wide;               /* the wide data we gave it, or NULL */
    bool std;                 /* replaces stdin, stdout or stderr: never freed */
};

/* Set once at start (shim__stdio_init), read-only after. */
static struct {
    bool on;                   /* streams are wrapped */
    const void *cookie_vtable; /* glibc's _IO_cookie_jumps */
    uintptr_t mangled_read;    /* our read function as stored (mangled) in a cookie FILE */
    size_t wide_size;          /* sizeof(struct _IO_wide_data), 0: unknown */
    size_t wide_vtable_off;    /* offsetof(struct _IO_wide_data, _wide_vtable) */
    FILE *std[3];              /* the streams that replaced stdin, stdout, stderr */
} shim__stdio;

/* The popen streams that are open, newest first, as glibc's
 * proc_file_chain: their fds are closed in every new popen child. */
static pthread_mutex_t shim__popen_lock = PTHREAD_MUTEX_INITIALIZER;
static struct shim_stream *shim__popen_chain;

/* Fields past the FILE in glibc's struct _IO_cookie_file. */
#define SHIM_FILE_VTABLE(fp) ((const void **)((char *)(fp) + sizeof(FILE)))
#define SHIM_FILE_COOKIE(fp) ((void **)((char *)(fp) + sizeof(FILE) + sizeof(void *)))
#define SHIM_FILE_READFN(fp) ((uintptr_t *)((char *)(fp) + sizeof(FILE) + 2 * sizeof(void *)))

/* ---- the cookie functions ----------------------------------------------------- */

/* Whether the calling thread may park inside a stream: glibc holds the
 * stream's lock across our functions, and its lock is recursive for the
 * owner it records, the caller's thread control block. Fibers that share
 * their carrier's (no per-fiber TLS: FIBERSHIM_FIBER_TLS=0, a sanitizer
 * build, an unknown glibc) would all pass as that owner, so a second
 * fiber on the carrier would enter the stream while the first is parked
 * in it. Such fibers make the plain call and hold the carrier, as before
 * the shim wrapped streams. Plain threads go straight to the C library
 * in either case. */
static inline bool shim__stream_may_park(void)
{
    return !fs_self() || fs_fiber_tls();
}

/* As glibc's _IO_file_read: one read. A read that succeeds leaves errno
 * as it was, as the kernel's does (the shim's may have seen an EAGAIN
 * before it parked): programs test errno after fgets returned NULL at
 * EOF. */
static ssize_t shim__stream_read(void *cookie, char *buf, size_t len)
{
    struct shim_stream *s = cookie;
    int saved = errno;
    ssize_t n = shim__stream_may_park() ? shim__read(s->fd, buf, len) : REAL(read)(s->fd, buf, len);
    if (n >= 0)
        errno = saved;
    return n;
}

/* As glibc's _IO_new_file_write: write until all is written or a write
 * fails, and return what was written (0, not -1, when nothing was:
 * glibc's buffer code adds the result to its counts). The cookie layer
 * sets the error flag when the count is short; errno is the failing
 * write's (EPIPE, EAGAIN for a user's O_NONBLOCK, ...). */
static ssize_t shim__stream_write(void *cookie, const char *buf, size_t len)
{
    struct shim_stream *s = cookie;
    int saved = errno;
    bool park = shim__stream_may_park();
    size_t done = 0;
    while (done < len) {
        ssize_t n = park ? shim__write(s->fd, buf + done, len - done)
                         : REAL(write)(s->fd, buf + done, len - done);
        if (n <= 0)
            return (ssize_t)done;
        done += (size_t)n;
    }
    errno = saved; /* as after a read that succeeds */
    return (ssize_t)done;
}

/* As glibc's _IO_file_seek: lseek (ESPIPE on a pipe or socket). */
static int shim__stream_seek(void *cookie, off64_t *off, int whence)
{
    struct shim_stream *s = cookie;
    off64_t r = lseek64(s->fd, *off, whence);
    if (r < 0)
        return -1;
    *off = r;
    return 0;
}

/* A popen stream's close, as glibc's _IO_new_proc_close: leave the chain,
 * close the fd, then wait for the child (restarting on EINTR, with
 * cancellation off) and return its status. */
static int shim__popen_close(struct shim_stream *s)
{
    bool found = false;
    pthread_mutex_lock(&shim__popen_lock);
    for (struct shim_stream **p = &shim__popen_chain; *p; p = &(*p)->next) {
        if (*p == s) {
            *p = s->next;
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&shim__popen_lock);
    if (!found || shim__close(s->fd) < 0)
        return -1;
    int wstatus, state;
    pid_t r;
    do {
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &state);
        r = shim__waitpid(s->pid, &wstatus, 0);
        pthread_setcancelstate(state, NULL);
    } while (r == -1 && errno == EINTR);
    return r == -1 ? -1 : wstatus;
}

/* Called once, by glibc's fclose (or pclose) of the stream. The cookie of
 * a std stream stays: the FILE stays valid (closed) after fclose. */
static int shim__stream_close(void *cookie)
{
    struct shim_stream *s = cookie;
    int rc = s->pid ? shim__popen_close(s) : shim__close(s->fd);
    s->fd = -1;
    if (!s->std)
        free(s);
    return rc;
}

static const cookie_io_functions_t shim__stream_fns = {
    .read = shim__stream_read,
    .write = shim__stream_write,
    .seek = shim__stream_seek,
    .close = shim__stream_close,
};

/* ---- making streams ----------------------------------------------------------- */

/* The cookie of fp if fp is one of our streams, else NULL. A FILE is ours
 * if it has the cookie vtable and our (mangled) read function: a
 * program's own fopencookie streams have other functions. */
static struct shim_stream *shim__stream_of(FILE *fp)
{
    if (!shim__stdio.on || !fp || *SHIM_FILE_VTABLE(fp) != shim__stdio.cookie_vtable ||
        *SHIM_FILE_READFN(fp) != shim__stdio.mangled_read)
        return NULL;
    return *SHIM_FILE_COOKIE(fp);
}

/* Whether fd (fstat'ed into *st) is one whose stream should park: a pipe,
 * a FIFO or a socket. */
static bool shim__stream_fd(int fd, struct stat *st)
{
    int saved = errno;
    bool ok = fstat(fd, st) == 0 && (S_ISFIFO(st->st_mode) || S_ISSOCK(st->st_mode));
    errno = saved;
    return ok;
}

/* Gives fp zeroed wide data with glibc's wide file vtable, as fdopen's
 * _IO_no_init does, and makes its orientation unset (0) instead of the
 * byte-only (-1) of a cookie stream. */
static void *shim__stream_give_wide(FILE *fp)
{
    if (!shim__stdio.wide_size)
        return NULL;
    void *wd = calloc(1, shim__stdio.wide_size);
    if (!wd)
        return NULL;
    *(const void **)((char *)wd + shim__stdio.wide_vtable_off) = _IO_wfile_jumps;
    fp->_wide_data = wd;
    fp->_mode = 0;
    return wd;
}

/* Gives fp the buffer glibc's _IO_file_doallocate would give it (BUFSIZ,
 * or st_blksize when smaller), owned by glibc (freed at fclose), or makes
 * it unbuffered. On failure glibc allocates BUFSIZ at the first use. */
static void shim__stream_buffer(FILE *fp, const struct stat *st, bool unbuffered)
{
    if (unbuffered) {
        setvbuf(fp, NULL, _IONBF, 0);
        return;
    }
    size_t size = BUFSIZ;
    if (st->st_blksize > 0 && st->st_blksize < BUFSIZ)
        size = (size_t)st->st_blksize;
    char *b = malloc(size);
    if (b && setvbuf(fp, b, _IOFBF, size) == 0)
        fp->_flags &= ~SHIM_IO_USER_BUF; /* glibc's to free, as its own */
    else
        free(b);
}

/* A cookie stream on fd with glibc mode bits `mode` (_IO_NO_READS,
 * _IO_NO_WRITES, _IO_IS_APPENDING as glibc's fdopen/popen set them).
 * wide: give it an unset orientation (fdopen, fopen, std streams), else
 * it is byte-only (popen, as glibc's). NULL on allocation failure. */
static FILE *shim__stream_new(int fd, int mode, const struct stat *st, bool wide, bool unbuffered,
                              struct shim_stream **out)
{
    const char *m;
    switch (mode & SHIM_IO_MODE_BITS) {
    case SHIM_IO_NO_WRITES:
        m = "r";
        break;
    case SHIM_IO_NO_READS:
        m = "w";
        break;
    case SHIM_IO_NO_READS | SHIM_IO_IS_APPENDING:
        m = "a";
        break;
    case SHIM_IO_IS_APPENDING:
        m = "a+";
        break;
    default:
        m = "r+";
        break;
    }
    struct shim_stream *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->fd = fd;
    FILE *fp = fopencookie(s, m, shim__stream_fns);
    if (!fp) {
        free(s);
        return NULL;
    }
    s->fp = fp;
    fp->_fileno = fd; /* fileno() answers it; -2 said "no fd" */
    if (wide)
        s->wide = shim__stream_give_wide(fp);
    shim__stream_buffer(fp, st, unbuffered);
    *out = s;
    return fp;
}

/* Replaces the glibc stream g (just made on fd, nothing read or written)
 * by one of ours, without closing fd. Returns g if it cannot. */
static FILE *shim__stream_adopt(FILE *g, int fd, const struct stat *st)
{
    struct shim_stream *s;
    FILE *fp = shim__stream_new(fd, g->_flags, st, true, false, &s);
    if (!fp)
        return g;
    /* glibc's fclose of a stream whose fd is -1 closes nothing: it
     * unlinks and frees the FILE. */
    int saved = errno;
    g->_fileno = -1;
    REAL(fclose)(g);
    errno = saved;
    return fp;
}

/* ---- the interposed calls ----------------------------------------------------- */

FILE *shim__fdopen(int fd, const char *mode)
{
    /* glibc checks the mode against the fd's access mode and sets
     * O_APPEND for "a": its stream is made first, then replaced. */
    FILE *g = REAL(fdopen)(fd, mode);
    struct stat st;
    if (!g || !shim__stdio.on || !shim__stream_fd(fd, &st))
        return g;
    return shim__stream_adopt(g, fd, &st);
}
SHIM_ALIAS(fdopen)

/* The open(2) flags glibc 2.36's _IO_file_fopen makes of an fopen mode,
 * or -1 (EINVAL). */
static int shim__fopen_flags(const char *mode)
{
    int omode, oflags = 0;
    switch (*mode) {
    case 'r':
        omode = O_RDONLY;
        break;
    case 'w':
        omode = O_WRONLY;
        oflags = O_CREAT | O_TRUNC;
        break;
    case 'a':
        omode = O_WRONLY;
        oflags = O_CREAT | O_APPEND;
        break;
    default:
        errno = EINVAL;
        return -1;
    }
    for (int i = 1; i < 7 && mode[i]; i++) {
        if (mode[i] == '+')
            omode = O_RDWR;
        else if (mode[i] == 'x')
            oflags |= O_EXCL;
        else if (mode[i] == 'e')
            oflags |= O_CLOEXEC;
    }
    return omode | oflags;
}

/* fopen of a FIFO: opened through the shim's open (a fiber waits for the
 * other end on a spare thread, not on its carrier), then made a stream as
 * fdopen makes one. Anything else, and a mode with ",ccs=" (a wide stream
 * with its own conversion), is glibc's fopen. */
static FILE *shim__fopen_common(const char *path, const char *mode, __typeof__(fopen) *real)
{
    struct stat st;
    int saved = errno;
    if (!shim__stdio.on || !path || !mode || strstr(mode, ",ccs=") || stat(path, &st) != 0 ||
        !S_ISFIFO(st.st_mode)) {
        errno = saved;
        return real(path, mode);
    }
    int flags = shim__fopen_flags(mode);
    if (flags < 0)
        return NULL;
    int fd = shim__open(path, flags, 0666);
    if (fd < 0)
        return NULL;
    FILE *fp = shim__fdopen(fd, mode);
    if (!fp) {
        int e = errno;
        shim__close(fd);
        errno = e;
    }
    return fp;
}

FILE *shim__fopen(const char *path, const char *mode)
{
    return shim__fopen_common(path, mode, REAL(fopen));
}
SHIM_ALIAS(fopen)

FILE *shim__fopen64(const char *path, const char *mode)
{
    return shim__fopen_common(path, mode, REAL(fopen64));
}
SHIM_ALIAS(fopen64)

/* popen as glibc 2.36's (libio/iopopen.c): pipe2(O_CLOEXEC); the child's
 * end moved off the fd the child will use; /bin/sh -c command spawned
 * with that end on its stdin or stdout and the other popen streams'
 * fds closed; the parent's end loses O_CLOEXEC unless the mode has 'e'.
 * Spawn failure is ENOMEM, a bad mode EINVAL. */
FILE *shim__popen(const char *command, const char *mode)
{
    if (!shim__stdio.on)
        return REAL(popen)(command, mode);
    bool rd = false, wr = false, cloexec = false;
    for (const char *m = mode; *m; m++) {
        if (*m == 'r')
            rd = true;
        else if (*m == 'w')
            wr = true;
        else if (*m == 'e')
            cloexec = true;
        else
            rd = wr = true; /* any other character: EINVAL */
    }
    if (rd == wr) {
        errno = EINVAL;
        return NULL;
    }
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return NULL;
    int parent = rd ? p[0] : p[1], child = rd ? p[1] : p[0];
    int child_fd = rd ? 1 : 0;
    struct stat st;
    struct shim_stream *s;
    FILE *fp = NULL;
    if (fstat(parent, &st) == 0)
        fp = shim__stream_new(parent, rd ? SHIM_IO_NO_WRITES : SHIM_IO_NO_READS, &st, false, false,
                              &s);
    if (!fp) {
        shim__close(p[0]);
        shim__close(p[1]);
        errno = ENOMEM;
        return NULL;
    }
    bool ok = true;
    if (child == child_fd) {
        int tmp = fcntl(child, F_DUPFD_CLOEXEC, 0);
        if (tmp < 0)
            ok = false;
        else {
            shim__close(child);
            child = tmp;
        }
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (ok && posix_spawn_file_actions_adddup2(&fa, child, child_fd) != 0)
        ok = false;
    if (ok) {
        /* Under the lock, so that no popen stream made meanwhile is
         * missed by the child's closes (glibc's proc_file_chain_lock). */
        pthread_mutex_lock(&shim__popen_lock);
        for (struct shim_stream *o = shim__popen_chain; o && ok; o = o->next)
            if (o->fd != child_fd && posix_spawn_file_actions_addclose(&fa, o->fd) != 0)
                ok = false;
        char *argv[] = {(char *)"sh", (char *)"-c", (char *)command, NULL};
        if (ok && shim__posix_spawn(&s->pid, "/bin/sh", &fa, NULL, argv, environ) != 0)
            ok = false;
        if (ok) {
            s->next = shim__popen_chain;
            shim__popen_chain = s;
        }
        pthread_mutex_unlock(&shim__popen_lock);
    }
    posix_spawn_file_actions_destroy(&fa);
    if (!ok) {
        /* The stream's close would wait for a child: it has none. */
        s->pid = 0;
        shim__close(child);
        fclose(fp); /* closes parent */
        errno = ENOMEM;
        return NULL;
    }
    shim__close(child);
    if (!cloexec)
        fcntl(parent, F_SETFD, 0);
    return fp;
}
SHIM_ALIAS(popen)

/* Whether f is a stream of ours whose pclose can run in the calling fiber
 * (wait.c): its close function waits through the shim's waitpid. */
bool shim__stdio_owns(FILE *f)
{
    return shim__stream_of(f) != NULL;
}

/* fclose of one of ours is glibc's (flush, the close function once, free),
 * plus the wide data we gave it. A replaced std stream is closed the way
 * glibc closes its static ones: the FILE stays, closed. */
int shim__fclose(FILE *fp)
{
    struct shim_stream *s = shim__stream_of(fp);
    bool std =
        fp && (fp == shim__stdio.std[0] || fp == shim__stdio.std[1] || fp == shim__stdio.std[2]);
    if (!s && !std)
        return REAL(fclose)(fp);
    if (std) {
        /* Ours, or glibc's file stream since a freopen: either way the
         * object stays, as glibc's static std streams do. */
        flockfile(fp);
        int rc = _IO_file_close_it(fp);
        funlockfile(fp);
        return rc;
    }
    void *wd = s->wide; /* s is freed by the close function */
    int rc = REAL(fclose)(fp);
    free(wd);
    return rc;
}
SHIM_ALIAS(fclose)

/* Makes fp, a glibc file stream in memory that fopencookie allocated,
 * one of ours again on its fd (freopen onto a pipe, FIFO or socket). */
static void shim__stream_rewrap(FILE *fp, struct shim_stream *s, const struct stat *st)
{
    s->fd = fp->_fileno;
    s->pid = 0;
    s->wide = fp->_wide_data;
    *SHIM_FILE_VTABLE(fp) = shim__stdio.cookie_vtable;
    *SHIM_FILE_COOKIE(fp) = s;
    shim__stream_buffer(fp, st, false);
}

/* freopen of one of ours is glibc's, which turns the FILE into a file
 * stream on the new target (keeping the fd number): it needs wide data
 * (a popen stream has none), and the target may again be one to wrap.
 * glibc closes or replaces the old fd inside: the shim forgets it. */
static FILE *shim__freopen_common(const char *path, const char *mode, FILE *fp,
                                  __typeof__(freopen) *real)
{
    struct shim_stream *s = shim__stream_of(fp);
    if (!s)
        return real(path, mode, fp);
    int fd = s->fd;
    if (s->pid) {
        /* glibc's freopen does not close (or wait for) a popen stream. */
        pthread_mutex_lock(&shim__popen_lock);
        for (struct shim_stream **p = &shim__popen_chain; *p; p = &(*p)->next)
            if (*p == s) {
                *p = s->next;
                break;
            }
        pthread_mutex_unlock(&shim__popen_lock);
    }
    if (!s->wide && fp->_mode < 0)
        s->wide = shim__stream_give_wide(fp);
    FILE *r = real(path, mode, fp);
    if (fd >= 0)
        shim__fd_reset(fd);
    struct stat st;
    if (r && shim__stream_fd(fileno(r), &st)) {
        shim__stream_rewrap(r, s, &st);
        return r;
    }
    if (!s->std)
        free(s); /* the wide data stays: the stream's now (a leak at its fclose) */
    else
        s->fd = -1; /* a std cookie is referenced by nothing now; kept all the same */
    return r;
}

FILE *shim__freopen(const char *path, const char *mode, FILE *fp)
{
    return shim__freopen_common(path, mode, fp, REAL(freopen));
}
SHIM_ALIAS(freopen)

FILE *shim__freopen64(const char *path, const char *mode, FILE *fp)
{
    return shim__freopen_common(path, mode, fp, REAL(freopen64));
}
SHIM_ALIAS(freopen64)

/* ---- start -------------------------------------------------------------------- */

/* The unit tests (SHIM_NO_EXPORTS) leave the runner's streams alone: the
 * feature is off there. */
#ifndef SHIM_NO_EXPORTS

/* Finds sizeof(struct _IO_wide_data) and the offset of its last field,
 * _wide_vtable, in stdout's static wide data (glibc's _IO_wide_data_1,
 * whose vtable is _IO_wfile_jumps). False if it is not there. */
static bool shim__stdio_find_wide(void)
{
    void *const *w = (void *const *)_IO_2_1_stdout_._wide_data;
    if (!w || w == (void *)-1)
        return false;
    for (size_t i = 16; i < 128; i++) {
        if (w[i] == (const void *)_IO_wfile_jumps) {
            shim__stdio.wide_vtable_off = i * sizeof(void *);
            shim__stdio.wide_size = (i + 1) * sizeof(void *);
            return true;
        }
    }
    return false;
}

/* Learns where glibc keeps a cookie stream's vtable, cookie and read
 * function, from a stream made for the purpose; false if it is not laid
 * out as described at the top of this file. */
static bool shim__stdio_find_cookie(void)
{
    static struct shim_stream probe = {.fd = -1, .std = true}; /* never freed */
    FILE *fp = fopencookie(&probe, "r", shim__stream_fns);
    if (!fp)
        return false;
    bool ok = fp->_fileno == -2 && fp->_vtable_offset == 0 && *SHIM_FILE_COOKIE(fp) == &probe &&
              *SHIM_FILE_VTABLE(fp) != NULL;
    if (ok) {
        shim__stdio.cookie_vtable = *SHIM_FILE_VTABLE(fp);
        shim__stdio.mangled_read = *SHIM_FILE_READFN(fp);
    }
    REAL(fclose)(fp); /* calls the close function: probe has fd -1, close(-1) is EBADF */
    return ok;
}

/* Replaces *slot (stdin, stdout or stderr, still glibc's static stream,
 * never read or written and without a buffer of its own) by one of ours
 * if fd is a pipe, FIFO or socket. A buffering mode or locking mode set
 * before (stdbuf's preloaded library calls setvbuf in its constructor) is
 * carried over. */
static void shim__stdio_replace(int i, FILE **slot, FILE *orig, int mode)
{
    struct stat st;
    FILE *old = *slot;
    if (old != orig || old->_IO_buf_base || (old->_flags & SHIM_IO_USER_BUF) || old->_mode != 0 ||
        !shim__stream_fd(i, &st))
        return;
    struct shim_stream *s;
    bool unbuffered = old->_flags & SHIM_IO_UNBUFFERED;
    FILE *fp = shim__stream_new(i, mode, &st, true, unbuffered, &s);
    if (!fp)
        return;
    if (!unbuffered && (old->_flags & SHIM_IO_LINE_BUF))
        setvbuf(fp, NULL, _IOLBF, 0);
    fp->_flags |= old->_flags & _IO_USER_LOCK;
    s->std = true;
    shim__stdio.std[i] = fp;
    *slot = fp;
}

/* After init.c's constructor (101): before the program's constructors
 * and main() use the std streams. */
__attribute__((constructor(102))) static void shim__stdio_init(void)
{
    const char *v = secure_getenv("FIBERSHIM_STDIO");
    if (v && strcmp(v, "0") == 0)
        return;
    if (v && strcmp(v, "1") != 0) {
        /* As init.c reports the runtime's variables. */
        char msg[256];
        int n = snprintf(msg, sizeof msg,
                         "fibershim: FIBERSHIM_STDIO=\"%.64s\" is invalid: expected 0 or 1\n", v);
        (void)!write(2, msg, (size_t)n);
        _exit(2);
    }
    if (!shim__stdio_find_wide() || !shim__stdio_find_cookie())
        return;
    shim__stdio.on = true;
    shim__stdio_replace(0, &stdin, &_IO_2_1_stdin_, SHIM_IO_NO_WRITES);
    shim__stdio_replace(1, &stdout, &_IO_2_1_stdout_, SHIM_IO_NO_READS);
    shim__stdio_replace(2, &stderr, &_IO_2_1_stderr_, SHIM_IO_NO_READS);
}
#endif
