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

/* ---- mutex_word.c ---- */

/* Whether a fiber may wait for m in the kernel (shim__mutex_word_lock):
 * any glibc mutex but a priority-protect one. */
bool shim__mutex_word_waitable(const pthread_mutex_t *m);

/* Acquires m, which glibc's non-blocking lock just found busy, for the
 * calling fiber (which owns m's entry in mutex_glibc.c's table, so no
 * other fiber of this process is acquiring it), following glibc's
 * lock-word protocol and sleeping in FUTEX_WAIT on a spare thread between
 * attempts. clock and abs: the caller's timeout (abs NULL: none), already
 * checked, and d its translation. Returns 0 or EOWNERDEAD (acquired, with
 * __owner, __count, __nusers and the robust list as glibc's lock leaves
 * them), ENOTRECOVERABLE or ETIMEDOUT; for a priority-inheritance mutex,
 * which it does not take, -1 once its holder let go (try glibc's lock
 * again), ETIMEDOUT, EDEADLK: its owner died and nobody will let go
 * (wait until the deadline, as glibc does), or another error of the
 * kernel's (EINVAL) to return. Fiber only; the fiber may
 * come back on another carrier, and does not switch from its acquisition
 * to the return. */
int shim__mutex_word_lock(pthread_mutex_t *m, clockid_t clock, const struct timespec *abs,
                          const struct shim__deadline *d);

/* Stops the program with one line on stderr: the calling fiber holds m,
 * which glibc ties to the kernel thread that locked it, and
 * FIBERSHIM_MIGRATE=1 moved the fiber to another one. */
__attribute__((noreturn, cold)) void shim__mutex_glibc_moved(const pthread_mutex_t *m);

#endif
