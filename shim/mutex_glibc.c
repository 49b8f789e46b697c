/*
 * mutex_glibc.c - glibc's own mutexes, owned per fiber.
 *
 * Process-shared, robust and priority-inheritance/protection mutexes stay
 * glibc's (mutex.c hands them to glibc at init): other processes, the
 * kernel's robust lists and PI futexes all know their layout. But glibc
 * records an owner as a kernel thread id, and every fiber of a carrier
 * has the carrier's. Left alone, a second fiber of the owner's carrier
 * would relock a held recursive mutex or trylock it successfully, get
 * EDEADLK from an errorcheck one it does not hold, and unlock one it does
 * not hold.
 *
 * Design: glibc stays the lock between processes, and between this
 * process's fibers and its plain threads, held by the carrier's kernel
 * thread for the fiber that owns it. In front of it sits an ownership
 * layer private to this process: a side table keyed by the mutex's
 * address records which fiber owns the mutex (or is acquiring it), so at
 * most one fiber of this process ever deals with glibc for a mutex at a
 * time, and glibc's answers (counts, EDEADLK, EPERM, EOWNERDEAD,
 * ENOTRECOVERABLE, EAGAIN) are right for that fiber:
 *  - A fiber that finds another fiber of this process in the table parks
 *    in the table's wait queue (no carrier blocked, no polling). The
 *    owner's last unlock releases glibc's lock, then the entry, and wakes
 *    the oldest waiter, which competes with newcomers as in mutex.c (or,
 *    once it has waited 1 ms, is handed the entry) and then takes glibc's
 *    lock. Only a fiber's first acquisition and last release reach
 *    glibc's lock word.
 *  - The owner's own relock, trylock and unlock go to glibc, which counts
 *    them for its kernel thread: nobody else of this process can be using
 *    that kernel thread's ownership meanwhile. Only a normal mutex's
 *    relock is kept from glibc: it would block the carrier for good, so
 *    the fiber parks for good instead (or until its deadline).
 *  - A fiber that owns the entry but finds glibc's lock busy (another
 *    process, a plain thread of this one) sleeps in the kernel on the
 *    lock word, on a spare thread, and takes it with glibc's protocol
 *    (mutex_word.c): the holder's unlock, wherever it runs, wakes it.
 *    A priority-inheritance one it cannot take there (the kernel would
 *    make the spare its owner): it is woken when the holder lets go and
 *    competes for it with glibc's lock. The other fibers wait behind it
 *    in the queue. A trylock meanwhile gets EBUSY: the mutex is busy.
 *    Priority-protect mutexes are the exception: the fiber polls those
 *    with a non-blocking lock, sleeping 50 us .. 1 ms between attempts
 *    on the runtime's timers.
 *  - Plain threads (no fiber) use glibc directly: their kernel thread id is
 *    their own.
 *  - Keyed by address in this process only: a mutex mapped at different
 *    addresses in two processes is two keys in two tables, which is what
 *    each process needs. pthread_mutex_init and _destroy drop the entry.
 *    A fork child starts with an empty table: its fibers own no mutex of
 *    the parent's, exactly as glibc sees it (the child's thread id owns
 *    nothing).
 *  - Robust mutexes: robust.c remembers the ones a fiber holds and, when
 *    it ends, marks them owner-dead as the kernel does for a thread, then
 *    hands the entry on (shim__mutex_glibc_abandon); the next fiber gets
 *    EOWNERDEAD from glibc.
 *
 * Kernel threads: glibc's unlock must run on the kernel thread that
 * locked. Fibers migrate between carriers (the default with per-fiber
 * TLS), so a holder may resume elsewhere, and glibc then answers it as it
 * would a stranger (EPERM, busy). A robust or priority-inheritance/
 * protection mutex is on the locking kernel thread's robust list or in
 * the kernel's PI state, which only that thread may change: its holder is
 * pinned to its carrier (fs_pin) from its first acquisition to its last
 * release, so this never happens (shim__mutex_glibc_moved stops the
 * program should it happen anyway). A plain process-shared normal,
 * recursive or errorcheck mutex, which glibc knows the holder of only by
 * __owner, does not pin: the holder looks only on such an answer
 * (shim__gm_follow) and moves __owner to its new kernel thread.
 *
 * The kernel thread that became carrier 0 may hold glibc mutexes it
 * locked before that, as a plain thread (none of this table's business).
 * glibc's answers to a fiber of that carrier then speak of that hold (a
 * recursive count above one, EDEADLK): the adopted fiber, which is that
 * thread, takes them as its own and from then on holds the mutex through
 * the table; any other fiber gives back what glibc counted and finds the
 * mutex busy. The adopted fiber that finds another fiber acquiring such a
 * mutex (waiting for the adopted one's hold) goes to glibc directly.
 *
 * Locking: each bucket's queue lock protects its chain of entries, every
 * field of them, and its wait queue, which holds the waiters of every
 * mutex of the bucket (struct shim__gm_waiter). It is a leaf lock, also
 * taken under a condition variable's queue lock (cond.c releases the
 * mutex while holding its own), and never held across a park
 * (shim__waitq_wait releases it after the switch). glibc's non-blocking
 * lock attempt and its unlock run inside it on the uncontended paths:
 * neither blocks nor calls back into the shim, and so taking the entry
 * and glibc's lock (or letting go of both) is one critical section.
 */
#include "mutex_glibc.h"

#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* glibc's __kind bits: robust, priority inheritance, priority protection;
 * the low two bits are the type (normal, recursive, errorcheck, adaptive). */
#define SHIM_GM_ROBUST 0x10
#define SHIM_GM_PI 0x20
#define SHIM_GM_PP 0x40
#define SHIM_GM_TYPE 3

/* fs_waiter.data of a waiter: the releaser made it the entry's owner. */
#define SHIM_GM_GRANTED 1u

/* A waiter that has waited this long gets the mutex handed over, as in
 * mutex.c (starvation mode); younger ones are woken to compete for it. */
#define SHIM_GM_STARVE_NS 1000000

#define SHIM_GM_BUCKETS 256

/* A mutex that a fiber of this process owns or waits for. It exists only
 * while one does. */
struct shim__gm {
    struct shim__gm *next;    /* bucket chain */
    const pthread_mutex_t *m; /* the key */
    uint64_t owner;           /* shim__self_owner() of the fiber that owns or is acquiring it */
    bool held;                /* glibc's lock is taken for owner (else it is acquiring) */
    unsigned waiters;         /* fibers that will look at this entry again after a park */
    fs_fiber *pinned;         /* the holder, pinned to its kernel thread while it holds */
};

/* A fiber waiting for an entry, on its stack, queued in its bucket. */
struct shim__gm_waiter {
    struct fs_waiter w;       /* queued; data: SHIM_GM_GRANTED */
    const pthread_mutex_t *m; /* the mutex it waits for */
    int64_t since;            /* fs_now() when it first queued */
};

struct shim__gm_bucket {
    struct shim__waitq q;   /* its lock protects all of this bucket */
    struct shim__gm *chain; /* entries */
    struct shim__gm *spare; /* one unused entry, so a lock and unlock cost no malloc */
};

static struct shim__gm_bucket shim__gm_table[SHIM_GM_BUCKETS];

static struct shim__gm_bucket *shim__gm_bucket_of(const pthread_mutex_t *m)
{
    uint64_t h = ((uintptr_t)m >> 3) * 0x9e3779b97f4a7c15ull;
    return &shim__gm_table[h >> (64 - 8)];
}
_Static_assert(SHIM_GM_BUCKETS == 1 << 8, "the hash takes 8 bits");

static struct shim__gm *shim__gm_find_locked(struct shim__gm_bucket *b, const pthread_mutex_t *m)
{
    for (struct shim__gm *e = b->chain; e; e = e->next)
        if (e->m == m)
            return e;
    return NULL;
}

/* Unlinks e if nobody owns it or will come back to it. Returns an entry
 * for the caller to free() after dropping the lock, or NULL. */
static struct shim__gm *shim__gm_put_locked(struct shim__gm_bucket *b, struct shim__gm *e)
{
    if (e->owner || e->waiters)
        return NULL;
    for (struct shim__gm **p = &b->chain;; p = &(*p)->next) {
        if (*p == e) {
            /* Atomic: shim__mutex_glibc_forget peeks at b->chain unlocked. */
            __atomic_store_n(p, e->next, __ATOMIC_RELAXED);
            break;
        }
    }
    if (b->spare)
        return e;
    b->spare = e;
    return NULL;
}

static inline struct shim__gm_waiter *shim__gm_waiter_of(struct fs_waiter *w)
{
    return (struct shim__gm_waiter *)((char *)w - offsetof(struct shim__gm_waiter, w));
}

/* Lets go of e (owned by the caller, or by a fiber the caller acts for)
 * and wakes the oldest fiber waiting for it, which competes for it with
 * fibers that come meanwhile (barging keeps a running fiber running: no
 * switch, and no wake of another carrier, per acquisition). One that
 * has waited over SHIM_GM_STARVE_NS gets e handed over instead. A woken
 * waiter that loses queues again at the head, so the next release wakes
 * it again: no wake is lost. Returns what to free(). */
static inline int shim__gm_kind(const pthread_mutex_t *m);

/* e's hold begins, for the calling fiber (under the bucket lock). glibc
 * and the kernel tie a robust, priority-inheritance or priority-protect
 * mutex to the kernel thread that locked it (its robust list, the owner
 * thread id in the lock word, the kernel's PI state): its holder is
 * pinned to its carrier until the hold ends (shim__gm_unhold_locked), so
 * migration never moves it away. Other kinds follow a moved holder
 * (shim__gm_follow). */
static void shim__gm_hold_locked(struct shim__gm *e)
{
    e->held = true;
    if (shim__gm_kind(e->m) & (SHIM_GM_ROBUST | SHIM_GM_PI | SHIM_GM_PP)) {
        e->pinned = fs_self();
        fs_pin(e->pinned);
    }
}

/* e's hold ends (under the bucket lock). Only the holder itself unpins:
 * a hold another ends (a destroy, a PI normal mutex unlocked by another)
 * leaves its fiber pinned for good, which is safe, where touching a
 * fiber that may have exited is not. */
static void shim__gm_unhold_locked(struct shim__gm *e)
{
    e->held = false;
    if (e->pinned && e->pinned == fs_self())
        fs_unpin(e->pinned);
    e->pinned = NULL;
}

static struct shim__gm *shim__gm_release_locked(struct shim__gm_bucket *b, struct shim__gm *e)
{
    int64_t now = 0;
    struct fs_waiter *w = b->q.head, *next;
    for (; w; w = next) {
        next = shim__waitq_next_locked(&b->q, w);
        struct shim__gm_waiter *gw = shim__gm_waiter_of(w);
        if (gw->m != e->m)
            continue;
        shim__waitq_remove_locked(&b->q, w);
        if (!now)
            now = fs_now();
        bool starving = now - gw->since > SHIM_GM_STARVE_NS;
        if (starving) {
            e->owner = fs_fiber_id(w->fiber) | SHIM_OWNER_FIBER;
            shim__gm_unhold_locked(e);
            w->data = SHIM_GM_GRANTED;
        }
        if (fs_waiter_wake(w)) {
            if (starving)
                return NULL;
            break;
        }
        /* It timed out meanwhile: it gets nothing, the next one does. */
        w->data = 0;
    }
    e->owner = 0;
    shim__gm_unhold_locked(e);
    return shim__gm_put_locked(b, e);
}

/* Hands on the entry of m if owner still owns it (and, if holding, holds
 * glibc's lock for it). Looked up again: the entry may have gone with a
 * pthread_mutex_destroy or _init since the caller last held the lock. */
static void shim__gm_release(struct shim__gm_bucket *b, const pthread_mutex_t *m, uint64_t owner,
                             bool holding)
{
    fs__spin_lock(&b->q.lock);
    struct shim__gm *dead = NULL, *e = shim__gm_find_locked(b, m);
    if (e && e->owner == owner && (e->held || !holding))
        dead = shim__gm_release_locked(b, e);
    fs__spin_unlock(&b->q.lock);
    free(dead);
}

/* ---- what glibc says ------------------------------------------------------------ */

static inline int shim__gm_kind(const pthread_mutex_t *m)
{
    return __atomic_load_n(&m->__data.__kind, __ATOMIC_RELAXED);
}

/* Whether glibc's unlock checks that the caller owns the mutex (it does
 * not for a plain normal or adaptive one, which anyone may unlock). */
static bool shim__gm_unlock_checks_owner(int kind)
{
    int type = kind & SHIM_GM_TYPE;
    return type == PTHREAD_MUTEX_RECURSIVE || type == PTHREAD_MUTEX_ERRORCHECK ||
           (kind & (SHIM_GM_ROBUST | SHIM_GM_PI));
}

/* The kernel thread id glibc holds m for, or 0: robust and PI mutexes
 * keep it in the lock word, the others in __owner. A racy read, compared
 * only with the caller's own id, which only the caller's thread writes. */
static pid_t shim__gm_glibc_owner(const pthread_mutex_t *m)
{
    if (shim__gm_kind(m) & (SHIM_GM_ROBUST | SHIM_GM_PI))
        return (pid_t)(__atomic_load_n((const unsigned *)&m->__data.__lock, __ATOMIC_RELAXED) &
                       FUTEX_TID_MASK);
    return __atomic_load_n(&m->__data.__owner, __ATOMIC_RELAXED);
}

/* Whether m is held by the caller's kernel thread outside this table: by
 * the adopted fiber, which locked it as a plain thread before adoption.
 * Then the answer is whether the caller is that fiber, which costs a
 * stack lookup the first time (waitq.c); the cheap checks come first. */
static bool shim__gm_held_by_this_thread(const pthread_mutex_t *m)
{
    return __atomic_load_n(&m->__data.__lock, __ATOMIC_RELAXED) != 0 &&
           shim__gm_glibc_owner(m) == (pid_t)syscall(SYS_gettid);
}

static bool shim__gm_adopted(void)
{
    return shim__owner_is_adopted_self((uint64_t)REAL(pthread_self)(), shim__self_owner());
}

/* A lock that never blocks: glibc's trylock for a trylock; otherwise a
 * lock with a deadline long past, which has lock's semantics (EDEADLK for
 * an errorcheck owner, a notrecoverable robust mutex left unlocked) but
 * returns ETIMEDOUT where the lock would wait. A PI mutex is always tried:
 * a timed PI lock enters the kernel, which marks the word FUTEX_WAITERS
 * and attaches PI state even when the wait times out at once. */
static int shim__gm_try(pthread_mutex_t *m, enum shim__lock_mode mode)
{
    static const struct timespec past = {-1, 0};
    if (mode == SHIM_TRYLOCK || (shim__gm_kind(m) & SHIM_GM_PI))
        return REAL(pthread_mutex_trylock)(m);
    return REAL(pthread_mutex_clocklock)(m, CLOCK_REALTIME, &past);
}

/* ---- the owner's own calls ------------------------------------------------------- */

void shim__mutex_glibc_moved(const pthread_mutex_t *m)
{
    char buf[320];
    int n = snprintf(buf, sizeof buf,
                     "fibershim: a fiber holds the robust or priority-inheritance/protection "
                     "mutex %p, which glibc ties to the kernel thread that locked it, and "
                     "was moved to another carrier although pinned (a fibershim bug); "
                     "FIBERSHIM_MIGRATE=0 avoids it\n",
                     (const void *)m);
    if (n > 0)
        (void)!write(2, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
    abort();
}

/* The caller holds m through its entry, but glibc just answered as to
 * another holder. Returns whether to ask glibc again: glibc holds m for
 * another kernel thread, so migration moved the caller since it
 * locked m (see "Kernel threads" at the top), and __owner, all glibc
 * knows the holder of a plain mutex by, now names the caller's. A robust,
 * PI or PP mutex cannot follow: the program stops. Costs a gettid(), on
 * these rare answers only, so the paths that go well need no check. */
static bool shim__gm_follow(pthread_mutex_t *m)
{
    pid_t tid = (pid_t)syscall(SYS_gettid);
    if (shim__gm_glibc_owner(m) == tid)
        return false; /* glibc's answer stands */
    if (shim__gm_kind(m) & (SHIM_GM_ROBUST | SHIM_GM_PI | SHIM_GM_PP))
        shim__mutex_glibc_moved(m);
    /* Only the holder writes __owner while it holds m. */
    __atomic_store_n(&m->__data.__owner, tid, __ATOMIC_RELAXED);
    return true;
}

/* The timeout of a lock call, looked at only once the mutex turns out
 * busy, as glibc does. */
struct shim__gm_call {
    enum shim__lock_mode mode;
    clockid_t clock;
    const struct timespec *abs; /* SHIM_TIMEDLOCK only */
    bool ready;                 /* d is set up */
    struct shim__deadline d;
};

static int shim__gm_deadline(struct shim__gm_call *c)
{
    if (!c->ready) {
        if (shim__deadline_init(&c->d, c->clock, c->mode == SHIM_TIMEDLOCK ? c->abs : NULL))
            return EINVAL;
        c->ready = true;
    }
    return 0;
}

/* A relock by the owner of a normal mutex: a thread would wait for itself
 * forever, or until its deadline. */
static int shim__gm_wait_for_self(const pthread_mutex_t *m, struct shim__gm_call *c)
{
    if (shim__gm_deadline(c))
        return EINVAL;
    while (!shim__deadline_passed(&c->d)) {
        struct fs_waiter w;
        fs_waiter_prepare(&w);
        /* Nobody knows this waiter: only the deadline ends the wait. */
        fs_waiter_wait(&w, FS_PARK_MUTEX, m, c->d.mono, NULL, NULL);
        shim__deadline_refresh(&c->d);
    }
    return ETIMEDOUT;
}

/* Lock or trylock by the fiber that holds m (glibc holds it for the
 * caller's kernel thread): glibc counts a recursive mutex and refuses an
 * errorcheck one without blocking. Only the answers that say "busy" to
 * the holder, which it never gets unless it was moved, are looked into. */
static int shim__gm_relock(pthread_mutex_t *m, struct shim__gm_call *c)
{
    int kind = shim__gm_kind(m), type = kind & SHIM_GM_TYPE, rc;
    if (c->mode == SHIM_TRYLOCK) {
        /* EBUSY is the answer to the holder of an errorcheck or normal
         * mutex, not of a recursive or errorcheck PI one. */
        do
            rc = REAL(pthread_mutex_trylock)(m);
        while (rc == EBUSY && (type == PTHREAD_MUTEX_RECURSIVE || (kind & SHIM_GM_PI)) &&
               shim__gm_follow(m));
        return rc;
    }
    if (type == PTHREAD_MUTEX_RECURSIVE || type == PTHREAD_MUTEX_ERRORCHECK) {
        do
            rc = shim__gm_try(m, SHIM_LOCK);
        while ((rc == ETIMEDOUT || rc == EBUSY) && shim__gm_follow(m));
        if (rc != ETIMEDOUT && rc != EBUSY)
            return rc;
    }
    return shim__gm_wait_for_self(m, c);
}

/* ---- acquiring ---------------------------------------------------------------------- */

/* Whether glibc's success just counted a hold of the caller's kernel
 * thread, which the caller did not have: a recursive count above one.
 * EOWNERDEAD always starts the count at one. */
static bool shim__gm_counted_again(const pthread_mutex_t *m)
{
    return (shim__gm_kind(m) & SHIM_GM_TYPE) == PTHREAD_MUTEX_RECURSIVE && m->__data.__count > 1;
}

/* The caller owns entry e, in state "acquiring": takes glibc's lock,
 * waiting in the kernel while it is busy (polling a PP one). On failure hands e on and returns the error.
 * rc is the result of a first try, or -1 for none yet. e stays valid
 * throughout: an entry whose owner is acquiring is freed only after its
 * owner hands it on (shim__mutex_glibc_forget spares it).
 *
 * glibc may answer as to the holder (a count above one, EDEADLK): its
 * kernel thread holds the mutex outside the table. The adopted fiber
 * then holds it from before adoption and takes the answer, now holding
 * it through e; any other fiber gives back what glibc counted and takes
 * the mutex as busy. */
static int shim__gm_acquire(pthread_mutex_t *m, struct shim__gm_bucket *b, struct shim__gm *e,
                            struct shim__gm_call *c, int rc)
{
    uint64_t self = shim__self_owner();
    int adopted = -1; /* whether the caller is the adopted fiber; -1: not looked yet */
    for (int64_t backoff = SHIM_POLL_MIN_NS;; rc = -1) {
        if (rc < 0)
            rc = shim__gm_try(m, c->mode);
        bool again = (rc == 0 && shim__gm_counted_again(m)) || rc == EDEADLK;
        if (again && adopted < 0)
            adopted = shim__gm_adopted();
        if ((rc == 0 || rc == EOWNERDEAD || again) && (!again || adopted)) {
            fs__spin_lock(&b->q.lock);
            shim__gm_hold_locked(e);
            fs__spin_unlock(&b->q.lock);
            shim__robust_locked(m, again ? 0 : rc);
            return rc;
        }
        if (rc == 0) {
            REAL(pthread_mutex_unlock)(m); /* give back what glibc counted */
        } else if (rc != EBUSY && rc != ETIMEDOUT && rc != EDEADLK) {
            /* ENOTRECOVERABLE and the like: glibc did not lock it. */
            shim__gm_release(b, m, self, false);
            return rc;
        }
        if (c->mode == SHIM_TRYLOCK)
            rc = EBUSY;
        else if (shim__gm_deadline(c))
            rc = EINVAL;
        else if (shim__deadline_passed(&c->d))
            rc = ETIMEDOUT;
        else
            rc = 0;
        if (!rc && shim__mutex_word_waitable(m)) {
            /* Sleep in the kernel on the lock word, where the holder's
             * unlock wakes us, and take it there (mutex_word.c). */
            rc = shim__mutex_word_lock(m, c->clock, c->mode == SHIM_TIMEDLOCK ? c->abs : NULL,
                                       &c->d);
            if (rc == 0 || rc == EOWNERDEAD) {
                fs__spin_lock(&b->q.lock);
                shim__gm_hold_locked(e);
                fs__spin_unlock(&b->q.lock);
                shim__robust_locked(m, rc);
                return rc;
            }
            if (rc < 0)
                continue; /* a PI mutex's holder let go: glibc's lock again */
            if (rc == EDEADLK)
                rc = shim__gm_wait_for_self(m, c);
        }
        if (rc) {
            shim__gm_release(b, m, self, false);
            return rc;
        }
        shim__backoff_sleep(backoff, &c->d);
        backoff = backoff * 2 > SHIM_POLL_MAX_NS ? SHIM_POLL_MAX_NS : backoff * 2;
    }
}

static int shim__gm_real_lock(pthread_mutex_t *m, enum shim__lock_mode mode, clockid_t clock,
                              const struct timespec *abs)
{
    switch (mode) {
    case SHIM_TRYLOCK:
        return REAL(pthread_mutex_trylock)(m);
    case SHIM_TIMEDLOCK:
        return REAL(pthread_mutex_clocklock)(m, clock, abs);
    default:
        return REAL(pthread_mutex_lock)(m);
    }
}

/* Takes an entry for m from the bucket's spare or *spare and links it. */
static struct shim__gm *shim__gm_insert_locked(struct shim__gm_bucket *b, const pthread_mutex_t *m,
                                               struct shim__gm **spare)
{
    struct shim__gm *e = b->spare ? b->spare : *spare;
    if (e == b->spare)
        b->spare = NULL;
    else
        *spare = NULL;
    memset(e, 0, sizeof *e);
    e->m = m;
    e->next = b->chain;
    __atomic_store_n(&b->chain, e, __ATOMIC_RELAXED);
    return e;
}

int shim__mutex_glibc_lock(pthread_mutex_t *m, enum shim__lock_mode mode, clockid_t clock,
                           const struct timespec *abs)
{
    /* A destroyed mutex (glibc sets __kind to -1): glibc's EINVAL. */
    if (!fs_self() || SHIM_UNLIKELY(shim__gm_kind(m) < 0))
        return shim__gm_real_lock(m, mode, clock, abs);
    struct shim__gm_call c = {.mode = mode, .clock = clock, .abs = abs};
    uint64_t self = shim__self_owner();
    struct shim__gm_bucket *b = shim__gm_bucket_of(m);
    struct shim__gm *e, *spare = NULL, *dead = NULL;
    struct shim__gm_waiter gw = {.m = m};
    bool requeue = false, looked = false;
    int rc = 0;
    fs__spin_lock(&b->q.lock);
    for (;;) {
        e = shim__gm_find_locked(b, m);
        if (!e) {
            if (!b->spare && !spare) {
                /* No malloc under a spinlock: get one, then look again. */
                fs__spin_unlock(&b->q.lock);
                if (!(spare = malloc(sizeof *spare)))
                    return EAGAIN;
                fs__spin_lock(&b->q.lock);
                continue;
            }
            e = shim__gm_insert_locked(b, m, &spare);
        }
        if (!e->owner) {
            /* The uncontended case: take glibc's lock in the same critical
             * section (it never blocks, nor calls the shim). */
            e->owner = self;
            e->held = false;
            rc = shim__gm_try(m, mode);
            if ((rc == 0 && !shim__gm_counted_again(m)) || rc == EOWNERDEAD) {
                shim__gm_hold_locked(e);
                fs__spin_unlock(&b->q.lock);
                free(spare);
                shim__robust_locked(m, rc);
                return rc;
            }
            break;
        }
        if (e->owner == self) {
            /* Held (never acquiring: that would be this very call). */
            fs__spin_unlock(&b->q.lock);
            free(spare);
            return shim__gm_relock(m, &c);
        }
        /* Another fiber of this process owns it, or is acquiring it: it
         * may be waiting for the adopted fiber's hold from before
         * adoption, which is the caller's if the caller is that fiber.
         * Looked at once, outside the lock (a syscall). */
        if (!e->held && !looked) {
            fs__spin_unlock(&b->q.lock);
            looked = true;
            if (shim__gm_held_by_this_thread(m) && shim__gm_adopted()) {
                free(spare);
                return shim__gm_relock(m, &c);
            }
            fs__spin_lock(&b->q.lock);
            continue;
        }
        if (mode == SHIM_TRYLOCK)
            rc = EBUSY;
        else if (shim__gm_deadline(&c))
            rc = EINVAL;
        else if (shim__deadline_passed(&c.d))
            rc = ETIMEDOUT;
        if (rc)
            goto out;
        if (!gw.since)
            gw.since = fs_now();
        fs_waiter_prepare(&gw.w);
        /* A waiter that comes back without the mutex keeps its place. */
        if (requeue)
            shim__waitq_push_head_locked(&b->q, &gw.w);
        else
            shim__waitq_push_tail_locked(&b->q, &gw.w);
        e->waiters++;
        int wrc = shim__waitq_wait(&b->q, &gw.w, FS_PARK_MUTEX, m, &c.d);
        fs__spin_lock(&b->q.lock);
        e->waiters--;
        /* The releaser wrote data before its wake, under the lock. */
        if (wrc == 0 && (gw.w.data & SHIM_GM_GRANTED)) {
            rc = -1; /* e->owner is self now, acquiring */
            break;
        }
        if (wrc == -ETIMEDOUT) {
            dead = shim__gm_put_locked(b, e);
            rc = ETIMEDOUT;
            goto out;
        }
        if (wrc == 1 && shim__cancel_async_due(fs_self())) {
            /* Out of the queue for an asynchronous cancel (waitq.h):
             * leave as a timed-out waiter does, then act. */
            dead = shim__gm_put_locked(b, e);
            fs__spin_unlock(&b->q.lock);
            free(spare);
            free(dead);
            shim__cancel_async_act();
            fs__spin_lock(&b->q.lock); /* not reached: it acted */
            rc = EINTR;
            goto out;
        }
        /* Woken to compete, an early timer, or the mutex was destroyed:
         * look again. */
        requeue = true;
    }
    fs__spin_unlock(&b->q.lock);
    free(spare);
    return shim__gm_acquire(m, b, e, &c, rc);
out:
    fs__spin_unlock(&b->q.lock);
    free(spare);
    free(dead);
    return rc;
}

/* ---- releasing ------------------------------------------------------------------------ */

int shim__mutex_glibc_unlock(pthread_mutex_t *m)
{
    if (!fs_self() || SHIM_UNLIKELY(shim__gm_kind(m) < 0))
        return REAL(pthread_mutex_unlock)(m);
    uint64_t self = shim__self_owner();
    struct shim__gm_bucket *b = shim__gm_bucket_of(m);
    int kind = shim__gm_kind(m);
    fs__spin_lock(&b->q.lock);
    struct shim__gm *e = shim__gm_find_locked(b, m);
    uint64_t owner = e ? e->owner : 0;
    bool held = e && e->held;
    if (owner == self && held) {
        /* The holder: glibc's unlock in the same critical section (it
         * never blocks, nor calls the shim). The count is the holder's to
         * read while glibc's lock is ours. */
        bool last = (kind & SHIM_GM_TYPE) != PTHREAD_MUTEX_RECURSIVE || m->__data.__count <= 1;
        int rc = REAL(pthread_mutex_unlock)(m);
        /* EPERM: glibc holds it for another kernel thread, nothing was
         * released. (A priority-protect unlock can fail after the release,
         * with the error of the priority change.) */
        struct shim__gm *dead = NULL;
        if (last && rc != EPERM)
            dead = shim__gm_release_locked(b, e);
        fs__spin_unlock(&b->q.lock);
        free(dead);
        if (rc == EPERM && shim__gm_follow(m))
            return shim__mutex_glibc_unlock(m);
        if (last && rc != EPERM)
            shim__robust_unlocked(m, 0);
        return rc;
    }
    fs__spin_unlock(&b->q.lock);
    if (shim__gm_unlock_checks_owner(kind)) {
        if (owner && held)
            return EPERM; /* another fiber of this process holds it */
        /* glibc knows who holds it, unless that is this kernel thread:
         * then it is the adopted thread's hold from before adoption. */
        if (shim__gm_held_by_this_thread(m) && !shim__gm_adopted())
            return EPERM;
        return REAL(pthread_mutex_unlock)(m);
    }
    /* A normal mutex: glibc lets anyone unlock it, which ends the holder's
     * hold; this process's next fiber gets the entry, too. */
    int rc = REAL(pthread_mutex_unlock)(m);
    if (owner && held)
        shim__gm_release(b, m, owner, true);
    return rc;
}

void shim__mutex_glibc_forget(pthread_mutex_t *m)
{
    struct shim__gm_bucket *b = shim__gm_bucket_of(m);
    /* Nothing recorded, the common case (any init before the first
     * thread, and every mutex nobody waits for or holds). A racy look: an
     * init or destroy racing with a lock of the same mutex is undefined. */
    if (!__atomic_load_n(&b->chain, __ATOMIC_RELAXED))
        return;
    fs__spin_lock(&b->q.lock);
    struct shim__gm *dead = NULL, *e = shim__gm_find_locked(b, m);
    if (e) {
        /* Waiters look again and find the new mutex free. */
        struct fs_waiter *w = b->q.head, *next;
        for (; w; w = next) {
            next = shim__waitq_next_locked(&b->q, w);
            if (shim__gm_waiter_of(w)->m == m) {
                shim__waitq_remove_locked(&b->q, w);
                fs_waiter_wake(w);
            }
        }
        /* A holder's hold ends. A fiber still acquiring keeps the entry
         * (it points to it) and goes on to lock the new mutex. */
        if (e->held) {
            e->owner = 0;
            shim__gm_unhold_locked(e);
            dead = shim__gm_put_locked(b, e);
        }
    }
    fs__spin_unlock(&b->q.lock);
    free(dead);
}

/* ---- robust.c ------------------------------------------------------------------------ */

bool shim__mutex_glibc_held(const pthread_mutex_t *m)
{
    uint64_t self = shim__self_owner();
    struct shim__gm_bucket *b = shim__gm_bucket_of(m);
    fs__spin_lock(&b->q.lock);
    struct shim__gm *e = shim__gm_find_locked(b, m);
    bool held = e && e->owner == self && e->held;
    fs__spin_unlock(&b->q.lock);
    return held;
}

void shim__mutex_glibc_abandon(pthread_mutex_t *m)
{
    uint64_t self = shim__self_owner();
    struct shim__gm_bucket *b = shim__gm_bucket_of(m);
    fs__spin_lock(&b->q.lock);
    struct shim__gm *dead = NULL, *e = shim__gm_find_locked(b, m);
    if (e && e->owner == self)
        dead = shim__gm_release_locked(b, e);
    fs__spin_unlock(&b->q.lock);
    free(dead);
}

/* ---- fork ------------------------------------------------------------------------------ */

/* The child's only fiber owns nothing the parent's fibers held (glibc
 * sees the child's kernel thread as a stranger to all of it), and nobody
 * waits. A bucket lock another carrier held at the fork is reset with
 * the rest; the entries are leaked, their lists may be half-updated. */
static void shim__gm_atfork_child(void)
{
    memset(shim__gm_table, 0, sizeof shim__gm_table);
}

__attribute__((constructor(102))) static void shim__gm_init(void)
{
    pthread_atfork(NULL, NULL, shim__gm_atfork_child);
}
