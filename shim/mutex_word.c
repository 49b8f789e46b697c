/*
 * mutex_word.c - a fiber waits for a busy glibc mutex in the kernel, on
 * the mutex's lock word, with glibc's own protocol.
 *
 * mutex_glibc.c lets one fiber of this process at a time deal with a
 * glibc mutex (process-shared or robust). When glibc's non-blocking lock
 * finds it busy, the holder is another process or a plain thread of this
 * one, whose unlock reaches only the kernel: it wakes a FUTEX_WAIT on the
 * lock word, never the runtime's queues. So the fiber waits exactly where
 * a thread blocked in glibc would: in FUTEX_WAIT on the word, on a spare
 * thread (offload.c), its carrier free meanwhile. No polling: a mutex held
 * elsewhere for an hour costs one wake.
 *
 * The word's protocol is glibc 2.36's, so waiters of both kinds (kernel
 * threads here or in another process, and this fiber) wake one another:
 *  - normal, recursive, errorcheck and adaptive mutexes: lll_lock's
 *    states 0 (free), 1 (held), 2 (held, maybe waiters). A waiter makes
 *    the word 2 before it sleeps, so the holder's unlock (exchange to 0,
 *    wake one if it was 2) wakes someone; and a woken waiter takes the
 *    word as 2 (__lll_lock_wait's exchange), never as 1, since others may
 *    sleep behind it and its own unlock must wake the next.
 *  - robust mutexes: the holder's thread id | FUTEX_WAITERS |
 *    FUTEX_OWNER_DIED. A waiter sets FUTEX_WAITERS before it sleeps (the
 *    unlock, an exchange to 0, wakes one when it was set); once it has
 *    slept it takes the word with FUTEX_WAITERS set, as
 *    __pthread_mutex_lock_full does, for the same reason. A word marked
 *    owner-dead is taken as such (EOWNERDEAD, __owner inconsistent), one
 *    whose __owner says not recoverable is given back (ENOTRECOVERABLE).
 *    The robust-list steps are glibc's too, on the list the kernel walks
 *    for the carrier (robust.c): list_op_pending names the mutex while the
 *    word changes hands, and the acquired mutex goes at its front.
 * The acquiring side then records what glibc's lock records: __owner,
 * __nusers, __count; glibc's unlock, trylock and relock see a mutex their
 * own lock could have taken.
 *
 *  - priority-inheritance mutexes (robust or not): the word is the
 *    holder's thread id | FUTEX_WAITERS | FUTEX_OWNER_DIED, and the kernel
 *    keeps their waiters: an unlock with FUTEX_WAITERS clear is a bare
 *    compare-and-swap that wakes nobody, and a FUTEX_WAIT on the word
 *    would make the holder's FUTEX_UNLOCK_PI fail. The only way to sleep
 *    until the holder lets go is FUTEX_LOCK_PI, which makes the sleeper
 *    the owner, and only the fiber's carrier may own it (glibc's unlock
 *    and the kernel check the thread id). So the spare takes the lock in
 *    FUTEX_LOCK_PI and at once lets go of it again as glibc's unlock
 *    does, and the fiber then competes for it with glibc's trylock (a
 *    wake, then a race: it may lose to a newcomer, then it sleeps again).
 *    While the spare holds it (microseconds) the mutex is on the spare's
 *    robust list (list_op_pending), so a death of the process meanwhile
 *    marks it owner-dead for the others. If the spare got it from a dead
 *    owner (FUTEX_OWNER_DIED), it puts the owner-dead word back (0 |
 *    FUTEX_OWNER_DIED), so the fiber's trylock gets EOWNERDEAD. Not
 *    exact there: when FUTEX_WAITERS is set too (the kernel sets it on
 *    every hand-over), the letting go goes through FUTEX_UNLOCK_PI, which
 *    hands the lock to another sleeper if there is one, or frees it
 *    before the mark is put back: that sleeper, or a thread that takes
 *    the free word in that instant, gets 0 instead of EOWNERDEAD.
 *    A non-robust one whose owner died (ESRCH) waits forever, or until
 *    the deadline, as glibc's does.
 * Not here: priority-protect mutexes (the word carries the ceiling):
 * mutex_glibc.c still polls those.
 */
#include "mutex_glibc.h"
#include "offload.h"
#include "sys.h"

#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>

/* glibc's __kind bits and __owner values this file needs. */
#define SHIM_MW_RECURSIVE 1             /* PTHREAD_MUTEX_RECURSIVE_NP (type) */
#define SHIM_MW_TYPE 3
#define SHIM_MW_ROBUST 0x10             /* PTHREAD_MUTEX_ROBUST_NORMAL_NP */
#define SHIM_MW_PI 0x20                 /* PTHREAD_MUTEX_PRIO_INHERIT_NP */
#define SHIM_MW_PP 0x40                 /* PTHREAD_MUTEX_PRIO_PROTECT_NP */
#define SHIM_MW_PSHARED 0x80            /* PTHREAD_MUTEX_PSHARED_BIT */
#define SHIM_MW_INCONSISTENT INT_MAX    /* PTHREAD_MUTEX_INCONSISTENT */
#define SHIM_MW_NOTRECOVERABLE (INT_MAX - 1)

/* One FUTEX_WAIT_BITSET, run on a spare. */
struct shim__mw_wait {
    unsigned *word;
    unsigned val;
    int op;
    const struct timespec *abs; /* on the clock op names; NULL: none */
};

static long shim__mw_wait_blocking(void *p)
{
    struct shim__mw_wait *w = p;
    return REAL(syscall)(SYS_futex, w->word, w->op, w->val, w->abs, NULL,
                         FUTEX_BITSET_MATCH_ANY);
}

/* Sleeps in the kernel while *word is val, until a wake, a signal to the
 * spare or the deadline (abs on clock, or none). Returns ETIMEDOUT once
 * the deadline has passed, else 0: look at the word again. The caller's
 * errno is kept, as glibc's lock keeps it. */
static int shim__mw_sleep(unsigned *word, unsigned val, bool shared, clockid_t clock,
                          const struct timespec *abs)
{
    struct shim__mw_wait w = {
        .word = word,
        .val = val,
        .op = FUTEX_WAIT_BITSET | (shared ? 0 : FUTEX_PRIVATE_FLAG) |
              (abs && clock == CLOCK_REALTIME ? FUTEX_CLOCK_REALTIME : 0),
        .abs = abs,
    };
    int saved = errno;
    long rc = shim__offload_blocking(shim__mw_wait_blocking, &w, FS_PARK_MUTEX);
    int err = rc < 0 ? errno : 0;
    errno = saved;
    return err == ETIMEDOUT ? ETIMEDOUT : 0;
}

/* lll_lock's wait (__lll_lock_wait, __lll_clocklock_wait), then what
 * pthread_mutex_lock records for a simple mutex. */
static int shim__mw_lock_simple(pthread_mutex_t *m, int kind, clockid_t clock,
                                const struct timespec *abs, const struct shim__deadline *d)
{
    unsigned *word = (unsigned *)&m->__data.__lock;
    bool shared = kind & SHIM_MW_PSHARED;
    /* 2 before we sleep, so the unlock wakes; 2 when we take it, so our
     * unlock wakes whoever sleeps behind us. */
    while (__atomic_exchange_n(word, 2, __ATOMIC_ACQUIRE) != 0) {
        if (shim__deadline_passed(d) || shim__mw_sleep(word, 2, shared, clock, abs))
            return ETIMEDOUT;
    }
    if ((kind & SHIM_MW_TYPE) == SHIM_MW_RECURSIVE)
        m->__data.__count = 1;
    /* The kernel thread id glibc's own lock would record (runtime/tls.c
     * keeps the fiber's copy of it equal to its carrier's). */
    m->__data.__owner = (int)fs__sys0(SYS_gettid);
    ++m->__data.__nusers;
    return 0;
}

/* __pthread_mutex_lock_full's robust loop (and its clocklock twin), with
 * the futex wait on a spare. */
static int shim__mw_lock_robust(pthread_mutex_t *m, clockid_t clock, const struct timespec *abs,
                                const struct shim__deadline *d)
{
    unsigned *word = (unsigned *)&m->__data.__lock;
    /* FUTEX_WAITERS once we may share it with other sleepers: from our
     * first sleep on, every word we install keeps it. */
    unsigned assume_waiters = 0;
    unsigned id, old;
    for (;;) {
        /* Looked up each round: the fiber may come back from its sleep on
         * another carrier. From here to the pin (mutex_glibc.c) the fiber
         * does not switch, so the id, the kernel list and the pending
         * entry stay this kernel thread's. */
        id = (unsigned)fs__sys0(SYS_gettid);
        shim__robust_pending(m);
        old = __atomic_load_n(word, __ATOMIC_RELAXED);
        for (;;) {
            if (old == 0) {
                if (__atomic_compare_exchange_n(word, &old, id | assume_waiters, false,
                                                __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
                    goto acquired;
                continue;
            }
            if (old & FUTEX_OWNER_DIED) {
                unsigned nv = id | (old & FUTEX_WAITERS) | assume_waiters;
                if (!__atomic_compare_exchange_n(word, &old, nv, false, __ATOMIC_ACQUIRE,
                                                 __ATOMIC_RELAXED))
                    continue;
                m->__data.__count = 1;
                m->__data.__owner = SHIM_MW_INCONSISTENT;
                shim__robust_enqueue_kernel(m);
                shim__robust_pending(NULL);
                /* No __nusers increment: the dead owner's is taken over. */
                return EOWNERDEAD;
            }
            /* Held: announce a sleeper, unless the word changes first. */
            if (!(old & FUTEX_WAITERS)) {
                if (!__atomic_compare_exchange_n(word, &old, old | FUTEX_WAITERS, false,
                                                 __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
                    continue;
                old |= FUTEX_WAITERS;
            }
            break;
        }
        /* Other fibers of this carrier run while we sleep and use the
         * pending slot: nothing of ours is pending until we try again. */
        shim__robust_pending(NULL);
        assume_waiters = FUTEX_WAITERS;
        /* glibc waits on the robust word with a shared futex always (the
         * kernel's owner-death wake is a shared one). */
        if (shim__deadline_passed(d) || shim__mw_sleep(word, old, true, clock, abs))
            return ETIMEDOUT;
    }
acquired:
    if (m->__data.__owner == SHIM_MW_NOTRECOVERABLE) {
        /* Marked not recoverable by its last owner: given back as glibc's
         * lll_unlock does (the word is above 1: a wake). */
        m->__data.__count = 0;
        __atomic_exchange_n(word, 0, __ATOMIC_RELEASE);
        fs__sys6(SYS_futex, word, FUTEX_WAKE, 1, 0, 0, 0);
        shim__robust_pending(NULL);
        return ENOTRECOVERABLE;
    }
    m->__data.__count = 1;
    shim__robust_enqueue_kernel(m);
    shim__robust_pending(NULL);
    m->__data.__owner = (int)id;
    ++m->__data.__nusers;
    return 0;
}

/* One FUTEX_LOCK_PI (or _PI2) and its immediate release, on a spare. */
struct shim__mw_pi {
    pthread_mutex_t *m;
    bool robust;
    int private_flag;           /* 0 or FUTEX_PRIVATE_FLAG */
    clockid_t clock;
    const struct timespec *abs; /* NULL: none */
};

/* The spare's robust list head (glibc registered it when the spare
 * started), or NULL. */
static struct robust_list_head *shim__mw_own_robust_head(void)
{
    struct robust_list_head *head;
    size_t len;
    if (REAL(syscall)(SYS_get_robust_list, 0, &head, &len) != 0)
        return NULL;
    return head;
}

/* Runs on the spare. Returns 0 (the holder let go: compete for it now),
 * or -errno from FUTEX_LOCK_PI: -ETIMEDOUT, -ESRCH (a non-robust mutex's
 * owner died: nobody will let go), or a retry (-EAGAIN, -EINTR). */
static long shim__mw_pi_blocking(void *p)
{
    struct shim__mw_pi *k = p;
    unsigned *word = (unsigned *)&k->m->__data.__lock;
    struct robust_list_head *head = k->robust ? shim__mw_own_robust_head() : NULL;
    /* glibc marks a PI entry of the robust list with bit 0. */
    if (head)
        head->list_op_pending =
            (struct robust_list *)((uintptr_t)&k->m->__data.__list.__next | 1);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    /* FUTEX_LOCK_PI measures its deadline on CLOCK_REALTIME, _PI2 on
     * CLOCK_MONOTONIC (Linux 5.14+), as glibc's __futex_lock_pi64. */
    int op = (k->abs && k->clock == CLOCK_MONOTONIC ? FUTEX_LOCK_PI2 : FUTEX_LOCK_PI) |
             k->private_flag;
    long rc = REAL(syscall)(SYS_futex, word, op, 0, k->abs, NULL, 0);
    if (rc != 0) {
        rc = -errno;
    } else {
        /* Ours now: let go as glibc's unlock does (a compare-and-swap while
         * nobody sleeps, else the kernel), keeping an owner-death mark. */
        unsigned v = __atomic_load_n(word, __ATOMIC_RELAXED);
        unsigned died = v & FUTEX_OWNER_DIED;
        if ((v & FUTEX_WAITERS) ||
            !__atomic_compare_exchange_n(word, &v, died, false, __ATOMIC_RELEASE,
                                         __ATOMIC_RELAXED)) {
            REAL(syscall)(SYS_futex, word, FUTEX_UNLOCK_PI | k->private_flag, 0, NULL, NULL, 0);
            if (died) {
                unsigned free_word = 0;
                __atomic_compare_exchange_n(word, &free_word, FUTEX_OWNER_DIED, false,
                                            __ATOMIC_RELEASE, __ATOMIC_RELAXED);
            }
        }
    }
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    if (head)
        head->list_op_pending = NULL;
    return rc;
}

/* Sleeps until m's holder lets go (see the top of the file). */
static int shim__mw_wait_pi(pthread_mutex_t *m, int kind, clockid_t clock,
                            const struct timespec *abs, const struct shim__deadline *d)
{
    if (shim__deadline_passed(d))
        return ETIMEDOUT;
    bool robust = kind & SHIM_MW_ROBUST;
    struct shim__mw_pi k = {
        .m = m,
        .robust = robust,
        /* glibc's PTHREAD_ROBUST_MUTEX_PSHARED and PTHREAD_MUTEX_PSHARED. */
        .private_flag = robust || (kind & SHIM_MW_PSHARED) ? 0 : FUTEX_PRIVATE_FLAG,
        .clock = clock,
        .abs = abs,
    };
    int saved = errno;
    long rc = shim__offload_blocking(shim__mw_pi_blocking, &k, FS_PARK_MUTEX);
    errno = saved;
    switch (rc) {
    case 0:
    case -EAGAIN: /* the owner is exiting: the kernel asks for a retry */
    case -EINTR:
        return -1;
    case -ETIMEDOUT:
        return ETIMEDOUT;
    case -ESRCH:
    case -EDEADLK:
        return EDEADLK;
    case -ENOSYS:
        return EINVAL; /* no FUTEX_LOCK_PI2 (Linux < 5.14) for CLOCK_MONOTONIC */
    default:
        return (int)-rc; /* never retried: no busy loop on a refusal */
    }
}

bool shim__mutex_word_waitable(const pthread_mutex_t *m)
{
    int kind = __atomic_load_n(&m->__data.__kind, __ATOMIC_RELAXED);
    return kind >= 0 && !(kind & SHIM_MW_PP);
}

int shim__mutex_word_lock(pthread_mutex_t *m, clockid_t clock, const struct timespec *abs,
                          const struct shim__deadline *d)
{
    int kind = __atomic_load_n(&m->__data.__kind, __ATOMIC_RELAXED);
    if (kind & SHIM_MW_PI)
        return shim__mw_wait_pi(m, kind, clock, abs, d);
    if (kind & SHIM_MW_ROBUST)
        return shim__mw_lock_robust(m, clock, abs, d);
    return shim__mw_lock_simple(m, kind, clock, abs, d);
}
