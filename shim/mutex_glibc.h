/*
 * mutex_glibc.h - glibc's own mutexes (process-shared, robust, priority
 * inheritance or protection), owned per fiber: what mutex.c, robust.c and
 * cond.c call. The design is at the top of mutex_glibc.c.
 */
#ifndef SHIM_MUTEX_GLIBC_H
#define SHIM_MUTEX_GLIBC_H

#include "waitq.h"

enum shim__lock_mode { SHIM_LOCK, SHIM_TRYLOCK, SHIM_TIMEDLOCK };

/* pthread_mutex_lock, _trylock, _clocklock (per mode; clock and abs only
 * for SHIM_TIMEDLOCK, clock already checked) on a mutex whose __kind says
 * it is glibc's. Returns what glibc would return to a thread. A fiber
 * parks, never blocking its carrier; a plain thread calls glibc. */
int shim__mutex_glibc_lock(pthread_mutex_t *m, enum shim__lock_mode mode, clockid_t clock,
                           const struct timespec *abs);

/* pthread_mutex_unlock on such a mutex. Any thread. */
int shim__mutex_glibc_unlock(pthread_mutex_t *m);

/* pthread_mutex_init and _destroy let go of whatever this process still
 * recorded for the address: a mutex destroyed while held (glibc allows it
 * for robust ones) and initialized again is a new, free mutex. Any thread;
 * never blocks. */
void shim__mutex_glibc_forget(pthread_mutex_t *m);

/* For robust.c, at the exit of the calling fiber: whether it holds m, and
 * then, once the lock word says owner-dead, hands m to the next fiber of
 * this process that waits for it. */
bool shim__mutex_glibc_held(const pthread_mutex_t *m);
void shim__mutex_glibc_abandon(pthread_mutex_t *m);

/* Stops the program with one line on stderr: the calling fiber holds m,
 * which glibc ties to the kernel thread that locked it, and
 * FIBERSHIM_MIGRATE=1 moved the fiber to another one. */
__attribute__((noreturn, cold)) void shim__mutex_glibc_moved(const pthread_mutex_t *m);

#endif
