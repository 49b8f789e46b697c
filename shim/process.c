/*
 * process.c - fork, vfork, and the exec family.
 *
 * The runtime's pthread_atfork handlers rebuild the runtime around the
 * forking fiber; the program's handlers run as glibc always runs them.
 * The forking fiber keeps its pthread_t in the child, and is its only
 * thread. Ours must be the first handlers registered in the process:
 * glibc runs prepare handlers last-registered first, and ours take the
 * runtime's and the shim's spin locks (the scheduler's among them) until
 * the fork is made, so any prepare handler run after them that has to
 * wait for a mutex (jemalloc's takes all of its own: redis-server under
 * the shim hung in BGSAVE's fork) parks a fiber with the scheduler
 * locked. A library's constructor may run before ours (libjemalloc's
 * does, registering its handlers), so __register_atfork, which
 * pthread_atfork calls, is interposed: whichever registration comes
 * first, ours are made before it. Then ours also run first in the child,
 * before the program's own.
 *
 * vfork becomes fork. A vfork child shares the parent's memory until it
 * calls exec or _exit, and a close() or dup2() it makes before exec would
 * go through the shim and change the parent's fd records (waking the
 * parent's fibers with EBADF). POSIX allows vfork to be fork; glibc's own
 * posix_spawn, system and popen use a CLONE_VFORK child that makes no
 * interposed call, so they keep their speed.
 *
 * After a fork, parent and child share every file description they held,
 * so both bump fd.c's fork generation: no fd made before counts as the
 * process's own any more (an accept re-reads F_GETFL there).
 *
 * exec hands file descriptions over (fd.c's opening comment explains the
 * mark). An image that will not load the shim cannot read the mark
 * (O_NONBLOCK|O_APPEND) a shim leaves on a listening socket, and would
 * take O_NONBLOCK for the program's choice. So execve and its family, and
 * posix_spawn and posix_spawnp, look at the new image's environment:
 * unless its LD_PRELOAD names a file called as this library is, every
 * inherited marked socket gets the program's blocking mode back first,
 * and its mark again if the exec fails. An image that loads the shim reads
 * the mark itself. The real functions are resolved in the constructor:
 * an exec usually runs in a forked child, where dlsym (it may allocate
 * and take the loader's lock) is not safe. glibc's system() and popen()
 * start /bin/sh inside the C library, with the environment as it is, and
 * are not handed over; nor is execveat, or an exec by raw syscall.
 */
#include "shim.h"
#include "fd.h"
#include "observe.h"
#include "offload.h"
#include "spinlock.h"

#include <dlfcn.h>
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

void shim__thread_atfork_child(void);
void shim__thread_fork_prepare(void);
void shim__thread_fork_done(void);

static void shim__atfork_parent(void)
{
    fs_atfork_parent();
    shim__fd_forked();
}

static void shim__atfork_child(void)
{
    fs_atfork_child();
    shim__thread_atfork_child();
    shim__signal_atfork_child();
    shim__observe_atfork_child();
    shim__offload_atfork_child();
    shim__fd_forked();
}

/* glibc's registration, under pthread_atfork (libc_nonshared.a). */
extern int __register_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void),
                             void *dso);
extern void *__dso_handle;

static _Atomic int shim__atfork_state; /* 0 not yet, 1 being made, 2 made */

/* Registers the shim's fork handlers, once, before anything else. The
 * runtime's prepare takes its locks after the shim's (thread.c's)
 * records: they are registered in that order, and prepare handlers run in
 * the opposite one. */
static void shim__atfork_register_first(void)
{
    int z = 0;
    if (atomic_load_explicit(&shim__atfork_state, memory_order_acquire) == 2)
        return;
    if (!atomic_compare_exchange_strong(&shim__atfork_state, &z, 1)) {
        while (atomic_load_explicit(&shim__atfork_state, memory_order_acquire) != 2)
            __builtin_ia32_pause(); /* another thread is making them */
        return;
    }
    REAL(__register_atfork)(fs_atfork_prepare, shim__atfork_parent, shim__atfork_child,
                            &__dso_handle);
    REAL(__register_atfork)(shim__thread_fork_prepare, shim__thread_fork_done,
                            shim__thread_fork_done, &__dso_handle);
    atomic_store_explicit(&shim__atfork_state, 2, memory_order_release);
}

/* Registrations made through us, to drop an exact repeat: libjemalloc
 * initialises itself twice when the shim's early calloc (pthread_setspecific
 * during start-up) reaches it before its own constructor, and registers
 * its handlers twice; its second prepare then relocks every mutex the
 * first took (a single-threaded fork under the shim hung, and so did
 * redis-server's BGSAVE). A program that means to register the same three
 * handlers twice gets them once: glibc would run them twice. */
#define SHIM_ATFORK_SEEN 64
static struct {
    void (*prepare)(void), (*parent)(void), (*child)(void);
    void *dso;
} shim__atfork_seen[SHIM_ATFORK_SEEN];
static unsigned shim__atfork_nseen;
static fs_spinlock shim__atfork_lock = FS_SPINLOCK_INIT;

int shim____register_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void),
                            void *dso)
{
    shim__atfork_register_first();
    fs__spin_lock(&shim__atfork_lock);
    for (unsigned i = 0; i < shim__atfork_nseen; i++) {
        if (shim__atfork_seen[i].prepare == prepare && shim__atfork_seen[i].parent == parent &&
            shim__atfork_seen[i].child == child && shim__atfork_seen[i].dso == dso &&
            (prepare || parent || child)) {
            fs__spin_unlock(&shim__atfork_lock);
            return 0;
        }
    }
    if (shim__atfork_nseen < SHIM_ATFORK_SEEN) {
        unsigned i = shim__atfork_nseen++;
        shim__atfork_seen[i].prepare = prepare;
        shim__atfork_seen[i].parent = parent;
        shim__atfork_seen[i].child = child;
        shim__atfork_seen[i].dso = dso;
    }
    fs__spin_unlock(&shim__atfork_lock);
    return REAL(__register_atfork)(prepare, parent, child, dso);
}
SHIM_ALIAS(__register_atfork)

/* The C library's exec and spawn functions, resolved at load time. */
static struct {
    __typeof__(execve) *execve;
    __typeof__(execvpe) *execvpe;
    __typeof__(fexecve) *fexecve;
    __typeof__(posix_spawn) *posix_spawn;
    __typeof__(posix_spawnp) *posix_spawnp;
} shim__real_exec;

/* This library's file name (no directory), as LD_PRELOAD would name it;
 * empty if unknown, and then every exec hands over. */
static char shim__lib_name[256];

void shim__process_init(void)
{
    shim__atfork_register_first();
    shim__real_exec.execve = shim__resolve("execve", NULL);
    shim__real_exec.execvpe = shim__resolve("execvpe", NULL);
    shim__real_exec.fexecve = shim__resolve("fexecve", NULL);
    shim__real_exec.posix_spawn = shim__resolve("posix_spawn", NULL);
    shim__real_exec.posix_spawnp = shim__resolve("posix_spawnp", NULL);
    Dl_info info;
    if (dladdr((void *)shim__process_init, &info) && info.dli_fname) {
        const char *base = strrchr(info.dli_fname, '/');
        base = base ? base + 1 : info.dli_fname;
        if (strlen(base) < sizeof shim__lib_name)
            strcpy(shim__lib_name, base);
    }
}

/* Whether an image started with environment envp will load this library:
 * an entry of its LD_PRELOAD (separated by spaces or colons, a path or a
 * bare name) has our file name. Async-signal-safe. */
static bool shim__env_loads_shim(char *const envp[])
{
    size_t len = strlen(shim__lib_name);
    if (!len || !envp)
        return false;
    for (char *const *e = envp; *e; e++) {
        if (strncmp(*e, "LD_PRELOAD=", 11) != 0)
            continue;
        for (const char *p = *e + 11; *p;) {
            size_t n = strcspn(p, " :");
            const char *base = p;
            for (const char *c = p; c < p + n; c++)
                if (*c == '/')
                    base = c + 1;
            if ((size_t)(p + n - base) == len && memcmp(base, shim__lib_name, len) == 0)
                return true;
            p += n;
            p += strspn(p, " :");
        }
    }
    return false;
}

/* Before an exec: hands the sockets over if the new image will not load
 * the shim (envp: its environment). Returns whether it did. */
static bool shim__exec_begin(char *const envp[], struct shim_fd_handover *h)
{
    shim__sig_exec_begin(); /* the new image gets the fiber's signal mask */
    if (shim__env_loads_shim(envp))
        return false;
    shim__fd_exec_handover(h);
    return true;
}

/* After an exec that returned (it failed): takes the hand-over back.
 * Returns rc, with errno as the exec left it. */
static int shim__exec_failed(bool handed, const struct shim_fd_handover *h, int rc)
{
    int err = errno;
    if (handed)
        shim__fd_exec_undo(h);
    shim__sig_exec_end();
    errno = err;
    return rc;
}

int shim__execve(const char *path, char *const argv[], char *const envp[])
{
    struct shim_fd_handover h;
    bool handed = shim__exec_begin(envp, &h);
    return shim__exec_failed(handed, &h, shim__real_exec.execve(path, argv, envp));
}
SHIM_ALIAS(execve)

int shim__execv(const char *path, char *const argv[])
{
    return shim__execve(path, argv, environ);
}
SHIM_ALIAS(execv)

int shim__execvpe(const char *file, char *const argv[], char *const envp[])
{
    struct shim_fd_handover h;
    bool handed = shim__exec_begin(envp, &h);
    return shim__exec_failed(handed, &h, shim__real_exec.execvpe(file, argv, envp));
}
SHIM_ALIAS(execvpe)

int shim__execvp(const char *file, char *const argv[])
{
    return shim__execvpe(file, argv, environ);
}
SHIM_ALIAS(execvp)

int shim__fexecve(int fd, char *const argv[], char *const envp[])
{
    struct shim_fd_handover h;
    bool handed = shim__exec_begin(envp, &h);
    return shim__exec_failed(handed, &h, shim__real_exec.fexecve(fd, argv, envp));
}
SHIM_ALIAS(fexecve)

/* execl, execle and execlp build the argument array on the stack, as glibc
 * does: the arguments after the first, up to the terminating NULL. */
static size_t shim__execl_count(va_list ap)
{
    size_t n = 0;
    while (va_arg(ap, const char *))
        n++;
    return n;
}

/* Fills argv[0..n+1] (the last is NULL) and consumes the NULL from ap. */
static void shim__execl_fill(char **argv, const char *arg, size_t n, va_list ap)
{
    argv[0] = (char *)arg;
    for (size_t i = 1; i <= n + 1; i++)
        argv[i] = va_arg(ap, char *);
}

int shim__execl(const char *path, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    size_t n = shim__execl_count(ap);
    va_end(ap);
    char *argv[n + 2];
    va_start(ap, arg);
    shim__execl_fill(argv, arg, n, ap);
    va_end(ap);
    return shim__execve(path, argv, environ);
}
SHIM_ALIAS(execl)

int shim__execle(const char *path, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    size_t n = shim__execl_count(ap);
    va_end(ap);
    char *argv[n + 2];
    va_start(ap, arg);
    shim__execl_fill(argv, arg, n, ap);
    char *const *envp = va_arg(ap, char *const *);
    va_end(ap);
    return shim__execve(path, argv, envp);
}
SHIM_ALIAS(execle)

int shim__execlp(const char *file, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    size_t n = shim__execl_count(ap);
    va_end(ap);
    char *argv[n + 2];
    va_start(ap, arg);
    shim__execl_fill(argv, arg, n, ap);
    va_end(ap);
    return shim__execvpe(file, argv, environ);
}
SHIM_ALIAS(execlp)

/* posix_spawn hands over in the parent, whose descriptions the new image
 * then shares: fd.c counts every socket as shared from the hand-over on
 * (shim__fd_exec_handover bumps the generation first, so no fiber of ours
 * takes a listener for its own while the flags change), and again after
 * the spawn, for fds made meanwhile. */
static int shim__spawn(__typeof__(posix_spawn) *real, pid_t *pid, const char *path,
                       const posix_spawn_file_actions_t *fa, const posix_spawnattr_t *attr,
                       char *const argv[], char *const envp[])
{
    struct shim_fd_handover h;
    bool handed = shim__exec_begin(envp, &h);
    int rc = real(pid, path, fa, attr, argv, envp);
    shim__sig_exec_end();
    shim__fd_forked();
    if (handed && rc != 0)
        shim__fd_exec_undo(&h);
    return rc;
}

int shim__posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                      const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    return shim__spawn(shim__real_exec.posix_spawn, pid, path, fa, attr, argv, envp);
}
SHIM_ALIAS(posix_spawn)

int shim__posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                       const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    return shim__spawn(shim__real_exec.posix_spawnp, pid, file, fa, attr, argv, envp);
}
SHIM_ALIAS(posix_spawnp)

pid_t shim__vfork(void)
{
    return fork();
}
SHIM_ALIAS(vfork)
