/*
 * init.c - loading the library: environment validation in the
 * constructor, and activation at the first pthread_create.
 *
 * The constructor only validates and records configuration: a program
 * that never creates a thread gets no carrier, no epoll instance and no
 * changed fd, and every wrapper passes straight through (fs_self() is
 * NULL until activation). A bad variable stops the program before main()
 * with one line naming it, and exit status 2.
 */
#include "shim.h"
#include "observe.h"
#include "offload.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct fs_config shim__cfg;
static int shim__activate_lock;

int shim__adopt_current(void);
void shim__process_init(void);

__attribute__((noreturn)) static void shim__bad_env(const char *msg)
{
    char buf[512];
    int n = snprintf(buf, sizeof buf, "fibershim: %s\n", msg);
    if (n > 0)
        (void)!write(2, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
    _exit(2);
}

__attribute__((constructor(101))) static void shim__init(void)
{
    char err[256];
    if (fs_config_from_env(&shim__cfg, err, sizeof err))
        shim__bad_env(err);
    /* main (the first thread to create one) keeps a kernel thread of its
     * own: FIBERSHIM_CARRIERS counts the carriers of the other threads. */
    shim__cfg.adopt_exclusive = true;
    if (shim__observe_init(err, sizeof err))
        shim__bad_env(err);
    shim__process_init();
    if (shim__offload_init(err, sizeof err))
        shim__bad_env(err);
}

int shim__activate(void)
{
    /* The first thread to create a thread becomes carrier 0; racing
     * first callers (foreign threads) serialise here. */
    while (__atomic_exchange_n(&shim__activate_lock, 1, __ATOMIC_ACQUIRE))
        sched_yield();
    int rc = 0;
    if (!fs_self()) {
        rc = fs_init(&shim__cfg);
        if (rc == -EALREADY)
            rc = 0;
        if (rc == 0)
            rc = -shim__adopt_current(); /* positive errno -> runtime style */
        if (rc == 0) {
            shim__signal_activate();
            shim__observe_start();
        }
    }
    __atomic_store_n(&shim__activate_lock, 0, __ATOMIC_RELEASE);
    if (rc < 0)
        return rc == -ENOMEM ? EAGAIN : -rc;
    return rc;
}
