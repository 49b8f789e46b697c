/*
 * wait.c - waiting for child processes runs on a spare thread.
 *
 * waitpid and friends may wait for as long as a child runs; system() and
 * pclose() wait inside the C library. A fiber hands the call to offload.c
 * and parks. Children belong to the process, so a spare may reap a child
 * any fiber started. waitpid/wait4 first ask with WNOHANG: a child that
 * already exited is reaped without a hand-off. Calls with WNOHANG pass
 * straight through.
 */
#include "offload.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>

struct shim_wait4 {
    pid_t pid;
    int *status;
    int options;
    struct rusage *ru;
};

static long shim__wait4_blocking(void *p)
{
    struct shim_wait4 *w = p;
    return REAL(wait4)(w->pid, w->status, w->options, w->ru);
}

pid_t shim__wait4(pid_t pid, int *status, int options, struct rusage *ru)
{
    if (!fs_self())
        return REAL(wait4)(pid, status, options, ru);
    shim__cancel_point(); /* glibc's wait4, under every wait call, is one */
    if (options & WNOHANG)
        return REAL(wait4)(pid, status, options, ru);
    int saved = errno;
    pid_t r = REAL(wait4)(pid, status, options | WNOHANG, ru);
    if (r != 0)
        return r; /* reaped, or an error such as ECHILD */
    errno = saved;
    struct shim_wait4 w = {pid, status, options, ru};
    return (pid_t)shim__offload_cancellable(shim__wait4_blocking, &w, FS_PARK_OTHER);
}
SHIM_ALIAS(wait4)

pid_t shim__waitpid(pid_t pid, int *status, int options)
{
    return shim__wait4(pid, status, options, NULL);
}
SHIM_ALIAS(waitpid)

pid_t shim__wait(int *status)
{
    return shim__wait4(-1, status, 0, NULL);
}
SHIM_ALIAS(wait)

pid_t shim__wait3(int *status, int options, struct rusage *ru)
{
    return shim__wait4(-1, status, options, ru);
}
SHIM_ALIAS(wait3)

struct shim_waitid {
    idtype_t type;
    id_t id;
    siginfo_t *info;
    int options;
};

static long shim__waitid_blocking(void *p)
{
    struct shim_waitid *w = p;
    return REAL(waitid)(w->type, w->id, w->info, w->options);
}

int shim__waitid(idtype_t type, id_t id, siginfo_t *info, int options)
{
    if (!fs_self())
        return REAL(waitid)(type, id, info, options);
    shim__cancel_point();
    if (options & WNOHANG)
        return REAL(waitid)(type, id, info, options);
    struct shim_waitid w = {type, id, info, options};
    return (int)shim__offload_cancellable(shim__waitid_blocking, &w, FS_PARK_OTHER);
}
SHIM_ALIAS(waitid)

struct shim_system {
    const char *cmd;
    sigset_t mask; /* the calling fiber's */
};

/* On the spare: the command inherits the spare's mask, which for the call
 * is the fiber's (a spare otherwise blocks the signals carriers leave to
 * the dispatcher, see signal.c). */
static long shim__system_blocking(void *p)
{
    struct shim_system *s = p;
    sigset_t old;
    REAL(pthread_sigmask)(SIG_SETMASK, &s->mask, &old);
    long rc = REAL(system)(s->cmd);
    REAL(pthread_sigmask)(SIG_SETMASK, &old, NULL);
    return rc;
}

/* While the command runs, glibc ignores SIGINT and SIGQUIT in the whole
 * process, as it does for a plain thread. */
int shim__system(const char *cmd)
{
    if (!fs_self())
        return REAL(system)(cmd);
    /* A cancellation point at entry; once the command runs, it runs to
     * its end (glibc would kill and reap it: not done here). */
    shim__cancel_point();
    struct shim_system s = {.cmd = cmd};
    shim__pthread_sigmask(SIG_BLOCK, NULL, &s.mask);
    return (int)shim__offload_blocking(shim__system_blocking, &s, FS_PARK_OTHER);
}
SHIM_ALIAS(system)

static long shim__pclose_blocking(void *p)
{
    return REAL(pclose)(p);
}

bool shim__stdio_owns(FILE *f);

/* popen returns at once; pclose waits for the command to exit. A popen
 * stream of stdio.c waits through the shim's waitpid in its own close
 * function, in the calling fiber; another one waits on a spare thread. */
int shim__pclose(FILE *f)
{
    if (shim__stdio_owns(f))
        return REAL(pclose)(f);
    return (int)shim__offload_blocking(shim__pclose_blocking, f, FS_PARK_OTHER);
}
SHIM_ALIAS(pclose)
