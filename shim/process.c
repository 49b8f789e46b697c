/*
 * process.c - fork and vfork.
 *
 * The runtime's pthread_atfork handlers (registered first, in the library
 * constructor, so that the child's runs before the program's own) rebuild
 * the runtime around the forking fiber; the program's handlers run as
 * glibc always runs them. The forking fiber keeps its pthread_t in the
 * child, and is its only thread.
 *
 * vfork becomes fork. A vfork child shares the parent's memory until it
 * calls exec or _exit, and a close() or dup2() it makes before exec would
 * go through the shim and change the parent's fd records (waking the
 * parent's fibers with EBADF). POSIX allows vfork to be fork; glibc's own
 * posix_spawn, system and popen use a CLONE_VFORK child that makes no
 * interposed call, so they keep their speed.
 */
#include "shim.h"
#include "observe.h"
#include "offload.h"

#include <pthread.h>
#include <unistd.h>

void shim__thread_atfork_child(void);

static void shim__atfork_child(void)
{
    fs_atfork_child();
    shim__thread_atfork_child();
    shim__observe_atfork_child();
    shim__offload_atfork_child();
}

void shim__process_init(void)
{
    pthread_atfork(fs_atfork_prepare, fs_atfork_parent, shim__atfork_child);
}

pid_t shim__vfork(void)
{
    return fork();
}
SHIM_ALIAS(vfork)
