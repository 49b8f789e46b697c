/*
 * futex.c - a futex wait table in the process, so that a fiber waiting on
 * a 32-bit word parks instead of holding its carrier in the kernel.
 *
 * The table is a fixed array of buckets, hashed by key (the address, with
 * its low bit set for an operation without FUTEX_PRIVATE_FLAG: the kernel
 * keeps the two apart). A waiting fiber's record (struct fs__futex_q) lives
 * on its own stack and is linked into its bucket's FIFO list.
 *
 * Atomicity of compare and park, as the kernel's: a waiter takes the
 * bucket lock, counts itself in b->waiters, reads the word, and if it
 * matches queues itself and parks; the lock is released only after the
 * switch (fs_park's commit). A waker changes the word first (that is the
 * futex protocol), then reads b->waiters behind a full fence: either the
 * waiter's read sees the new value (-EAGAIN), or the waker sees the count
 * and takes the lock, behind which the waiter is queued. The same pairing
 * as the kernel's futex_hb_waiters_pending.
 *
 * Wake, and who may touch a record: a waker unlinks a record (its next
 * becomes NULL) and calls fs_unpark while holding the bucket lock. A
 * fiber that timed out or was interrupted takes the lock before it leaves,
 * so its record stays valid while a waker holds the lock; once fs_unpark
 * succeeded the fiber may run and return at once, so a waker reads what it
 * needs (fiber, token, the next link) before the unpark. An unpark that
 * fails hit a fiber that timed out meanwhile: it is not counted, and the
 * waker goes on to the next waiter, as if that one had left first.
 *
 * Requeue moves records between buckets: it holds both bucket locks and
 * rewrites q->key. A waiter that leaves on its own therefore locks the
 * bucket of the key it reads, and retries if the key changed meanwhile.
 *
 * The kernel's share: the table holds only fibers. Plain threads, spare
 * threads and calls the runtime does not see wait in the kernel, so every
 * wake passes the part of its count the table did not use on to the
 * kernel, with the caller's flags.
 *
 * Lock order: two bucket locks in address order (requeue only); a bucket
 * lock -> anything fs_unpark takes (internal.h's order).
 */
#include "internal.h"
#include "sys.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <string.h>
#include <time.h>

#define FS_FUTEX_BUCKETS 1024 /* power of two */
#define FS_FUTEX_KEY_SHARED 1u

/* One waiting fiber, on its stack. Fields other than key are written
 * before it is queued and read by wakers under the bucket lock. */
struct fs__futex_q {
    struct fs__futex_q *next, *prev; /* bucket list, circular; next NULL: not queued */
    _Atomic uintptr_t key;           /* address | FS_FUTEX_KEY_SHARED; requeue rewrites it */
    uint32_t bitset;                 /* FUTEX_WAIT_BITSET's mask */
    fs_fiber *fiber;
    fs_park_token tok; /* its current park */
};

struct fs__futex_bucket {
    fs_spinlock lock;         /* protects head and every queued record's links */
    _Atomic uint32_t waiters; /* queued + comparing; read by wakers without the lock */
    struct fs__futex_q *head; /* oldest waiter, or NULL */
} __attribute__((aligned(64)));

static struct fs__futex_bucket fs__futex_table[FS_FUTEX_BUCKETS];

static inline uintptr_t fs__futex_key(const uint32_t *uaddr, unsigned flags)
{
    return (uintptr_t)uaddr | ((flags & FS_FUTEX_SHARED) ? FS_FUTEX_KEY_SHARED : 0);
}

static inline struct fs__futex_bucket *fs__futex_bucket(uintptr_t key)
{
    /* Fibonacci hashing of the word index: neighbouring words spread. */
    uint64_t h = (uint64_t)(key >> 2) * 0x9E3779B97F4A7C15ull;
    return &fs__futex_table[h >> (64 - 10)];
}
_Static_assert(FS_FUTEX_BUCKETS == 1 << 10, "hash shift matches the table size");

static inline int fs__futex_op_flags(unsigned flags)
{
    return ((flags & FS_FUTEX_SHARED) ? 0 : FUTEX_PRIVATE_FLAG) |
           ((flags & FS_FUTEX_REALTIME) ? FUTEX_CLOCK_REALTIME : 0);
}

/* Whether a waker must look at b: behind a full fence, so that the word
 * change the caller made before is ordered before this read (see the file
 * comment). */
static inline bool fs__futex_has_waiters(struct fs__futex_bucket *b)
{
    atomic_thread_fence(memory_order_seq_cst);
    return atomic_load_explicit(&b->waiters, memory_order_relaxed) != 0;
}

static void fs__futex_push_locked(struct fs__futex_bucket *b, struct fs__futex_q *q)
{
    if (!b->head) {
        q->next = q->prev = q;
        b->head = q;
        return;
    }
    struct fs__futex_q *h = b->head;
    q->next = h;
    q->prev = h->prev;
    h->prev->next = q;
    h->prev = q;
}

/* Unlinks q and uncounts it (it stops being a waiter of b). */
static void fs__futex_unlink_locked(struct fs__futex_bucket *b, struct fs__futex_q *q)
{
    if (q->next == q) {
        b->head = NULL;
    } else {
        q->prev->next = q->next;
        q->next->prev = q->prev;
        if (b->head == q)
            b->head = q->next;
    }
    q->next = q->prev = NULL;
    atomic_fetch_sub_explicit(&b->waiters, 1, memory_order_relaxed);
}

/* Unlinks q and wakes it. Returns whether the wake counts (false: q had
 * timed out or was interrupted meanwhile). q must not be touched after. */
static bool fs__futex_wake_q_locked(struct fs__futex_bucket *b, struct fs__futex_q *q)
{
    fs_fiber *f = q->fiber;
    fs_park_token tok = q->tok;
    fs__futex_unlink_locked(b, q);
    return fs_unpark(f, tok);
}

/* Locks the bucket q is queued on now (requeue may move it while we wait
 * for the lock). Returns it locked. */
static struct fs__futex_bucket *fs__futex_lock_q(struct fs__futex_q *q)
{
    for (;;) {
        uintptr_t key = atomic_load_explicit(&q->key, memory_order_acquire);
        struct fs__futex_bucket *b = fs__futex_bucket(key);
        fs__spin_lock(&b->lock);
        if (atomic_load_explicit(&q->key, memory_order_relaxed) == key)
            return b;
        fs__spin_unlock(&b->lock);
    }
}

static bool fs__futex_commit_unlock(void *arg)
{
    fs__spin_unlock(&((struct fs__futex_bucket *)arg)->lock);
    return true;
}

static int64_t fs__realtime_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A CLOCK_REALTIME deadline as an fs_now() one, translated now. */
static int64_t fs__futex_mono_deadline(int64_t deadline, unsigned flags)
{
    if (deadline == FS_NO_DEADLINE || !(flags & FS_FUTEX_REALTIME))
        return deadline;
    int64_t left = deadline - fs__realtime_now();
    int64_t now = fs_now();
    return left > FS_NO_DEADLINE - now ? FS_NO_DEADLINE : now + left;
}

/* A plain thread waits in the kernel, with the same key and clock. */
static int fs__futex_wait_kernel(uint32_t *uaddr, uint32_t val, uint32_t bitset, unsigned flags,
                                 int64_t deadline)
{
    struct timespec ts, *tsp = NULL;
    if (deadline != FS_NO_DEADLINE) {
        if (deadline < 0)
            deadline = 0; /* long past: the kernel's timespec cannot be negative */
        ts.tv_sec = deadline / 1000000000;
        ts.tv_nsec = deadline % 1000000000;
        tsp = &ts;
    }
    return (int)fs__sys6(SYS_futex, uaddr, FUTEX_WAIT_BITSET | fs__futex_op_flags(flags), val, tsp,
                         NULL, bitset);
}

int fs_futex_wait(uint32_t *uaddr, uint32_t val, uint32_t bitset, unsigned flags, int64_t deadline)
{
    if (((uintptr_t)uaddr & 3) || !bitset)
        return -EINVAL;
    fs_fiber *self = fs_self();
    if (!self)
        return fs__futex_wait_kernel(uaddr, val, bitset, flags, deadline);

    uintptr_t key = fs__futex_key(uaddr, flags);
    struct fs__futex_q q = {.bitset = bitset, .fiber = self};
    atomic_init(&q.key, key);
    struct fs__futex_bucket *b = fs__futex_bucket(key);
    q.tok = fs_park_prepare();
    fs__spin_lock(&b->lock);
    /* seq_cst: counted before the word is read, the other half of the
     * waker's fence (fs__futex_has_waiters). */
    atomic_fetch_add_explicit(&b->waiters, 1, memory_order_seq_cst);
    if (atomic_load_explicit((_Atomic uint32_t *)uaddr, memory_order_seq_cst) != val) {
        atomic_fetch_sub_explicit(&b->waiters, 1, memory_order_relaxed);
        fs__spin_unlock(&b->lock);
        return -EAGAIN;
    }
    fs__futex_push_locked(b, &q);
    for (;;) {
        int rc = fs_park(q.tok, FS_PARK_FUTEX, uaddr, fs__futex_mono_deadline(deadline, flags),
                         fs__futex_commit_unlock, b);
        if (rc == 0)
            return 0; /* the waker unlinked us */
        b = fs__futex_lock_q(&q);
        if (!q.next) {
            /* A waker unlinked us but its unpark lost to our timer or
             * interrupt: it woke another waiter instead. */
            fs__spin_unlock(&b->lock);
            return rc;
        }
        if (rc == -ETIMEDOUT && (flags & FS_FUTEX_REALTIME) && deadline != FS_NO_DEADLINE &&
            fs__realtime_now() < deadline) {
            /* The realtime clock was set back since the translation: wait
             * on, still queued. A waker reads the token under the lock we
             * hold, so it sees the new one. */
            q.tok = fs_park_prepare();
            continue;
        }
        fs__futex_unlink_locked(b, &q);
        fs__spin_unlock(&b->lock);
        return rc;
    }
}

/* Wakes up to n table waiters of key whose bitset meets bitset. */
static int fs__futex_wake_table(uintptr_t key, int n, uint32_t bitset)
{
    struct fs__futex_bucket *b = fs__futex_bucket(key);
    if (!fs__futex_has_waiters(b))
        return 0;
    int woken = 0;
    fs__spin_lock(&b->lock);
    struct fs__futex_q *q = b->head;
    while (q && woken < n) {
        struct fs__futex_q *next = q->next;
        bool last = next == b->head;
        if (atomic_load_explicit(&q->key, memory_order_relaxed) == key && (q->bitset & bitset)) {
            if (fs__futex_wake_q_locked(b, q))
                woken++;
            if (!b->head)
                break;
        }
        q = last ? NULL : next;
    }
    fs__spin_unlock(&b->lock);
    return woken;
}

int fs_futex_wake(uint32_t *uaddr, int n, uint32_t bitset, unsigned flags)
{
    if (((uintptr_t)uaddr & 3) || !bitset)
        return -EINVAL;
    if (n <= 0)
        n = 1; /* the kernel's loop wakes one before it compares */
    int woken = fs__futex_wake_table(fs__futex_key(uaddr, flags), n, bitset);
    if (woken >= n)
        return woken;
    long k = fs__sys6(SYS_futex, uaddr, FUTEX_WAKE_BITSET | fs__futex_op_flags(flags), n - woken,
                      NULL, NULL, bitset);
    if (k < 0)
        return woken ? woken : (int)k;
    return woken + (int)k;
}

static void fs__futex_lock2(struct fs__futex_bucket *a, struct fs__futex_bucket *b)
{
    if (a == b) {
        fs__spin_lock(&a->lock);
    } else if (a < b) {
        fs__spin_lock(&a->lock);
        fs__spin_lock(&b->lock);
    } else {
        fs__spin_lock(&b->lock);
        fs__spin_lock(&a->lock);
    }
}

static void fs__futex_unlock2(struct fs__futex_bucket *a, struct fs__futex_bucket *b)
{
    fs__spin_unlock(&a->lock);
    if (a != b)
        fs__spin_unlock(&b->lock);
}

int fs_futex_requeue(uint32_t *uaddr, int nr_wake, int nr_requeue, uint32_t *uaddr2,
                     const uint32_t *cmpval, unsigned flags)
{
    if (((uintptr_t)uaddr & 3) || ((uintptr_t)uaddr2 & 3) || nr_wake < 0 || nr_requeue < 0)
        return -EINVAL;
    int op = (cmpval ? FUTEX_CMP_REQUEUE : FUTEX_REQUEUE) | fs__futex_op_flags(flags);
    uint32_t cmp = cmpval ? *cmpval : 0;
    uintptr_t key1 = fs__futex_key(uaddr, flags), key2 = fs__futex_key(uaddr2, flags);
    struct fs__futex_bucket *b1 = fs__futex_bucket(key1), *b2 = fs__futex_bucket(key2);
    if (!fs__futex_has_waiters(b1)) /* the kernel's alone: exact, one call */
        return (int)fs__sys6(SYS_futex, uaddr, op, nr_wake, (long)nr_requeue, uaddr2, cmp);

    int woken = 0, moved = 0;
    fs__futex_lock2(b1, b2);
    if (cmpval && atomic_load_explicit((_Atomic uint32_t *)uaddr, memory_order_relaxed) != cmp) {
        fs__futex_unlock2(b1, b2);
        return -EAGAIN;
    }
    struct fs__futex_q *q = b1->head;
    while (q && (woken < nr_wake || moved < nr_requeue)) {
        struct fs__futex_q *next = q->next;
        bool last = next == b1->head;
        if (atomic_load_explicit(&q->key, memory_order_relaxed) == key1) {
            if (woken < nr_wake) {
                if (fs__futex_wake_q_locked(b1, q))
                    woken++;
            } else {
                /* Within one bucket the record keeps its place, as in the
                 * kernel (and is not met again further on). */
                if (b1 != b2) {
                    fs__futex_unlink_locked(b1, q);
                    atomic_fetch_add_explicit(&b2->waiters, 1, memory_order_relaxed);
                    fs__futex_push_locked(b2, q);
                }
                /* release: a waiter leaving on its own reads the key
                 * before it knows which bucket to lock */
                atomic_store_explicit(&q->key, key2, memory_order_release);
                moved++;
            }
            if (!b1->head)
                break;
        }
        q = last ? NULL : next;
    }
    fs__futex_unlock2(b1, b2);

    int done = woken + moved;
    if (woken == nr_wake && moved == nr_requeue)
        return done;
    long k =
        fs__sys6(SYS_futex, uaddr, op, nr_wake - woken, (long)(nr_requeue - moved), uaddr2, cmp);
    if (k == -EAGAIN && done) {
        /* The word changed after our compare: the table's part is done,
         * so wake the kernel's share rather than leave it behind. */
        long n = (long)(nr_wake - woken) + (nr_requeue - moved);
        k = fs__sys6(SYS_futex, uaddr, FUTEX_WAKE | (op & ~FUTEX_CMD_MASK),
                     n > INT_MAX ? INT_MAX : n, NULL, NULL, 0);
    }
    if (k < 0)
        return done ? done : (int)k;
    return done + (int)k;
}

/* The operation of FUTEX_WAKE_OP on *uaddr, atomically, as the kernel
 * does it. Returns the comparison's result (0 or 1), or -ENOSYS. */
static int fs__futex_atomic_op(uint32_t *uaddr, uint32_t encoded)
{
    unsigned op = (encoded >> 28) & 7, cmp = (encoded >> 24) & 15;
    int oparg = (int)(encoded << 8) >> 20; /* sign-extended 12 bits */
    int cmparg = (int)(encoded << 20) >> 20;
    if (encoded & ((uint32_t)FUTEX_OP_OPARG_SHIFT << 28))
        oparg = (int)(1u << (oparg & 31)); /* the kernel masks a bad shift (and logs it) */
    _Atomic uint32_t *w = (_Atomic uint32_t *)uaddr;
    uint32_t arg = (uint32_t)oparg, old;
    switch (op) {
    case FUTEX_OP_SET:
        old = atomic_exchange(w, arg);
        break;
    case FUTEX_OP_ADD:
        old = atomic_fetch_add(w, arg);
        break;
    case FUTEX_OP_OR:
        old = atomic_fetch_or(w, arg);
        break;
    case FUTEX_OP_ANDN:
        old = atomic_fetch_and(w, ~arg);
        break;
    case FUTEX_OP_XOR:
        old = atomic_fetch_xor(w, arg);
        break;
    default:
        return -ENOSYS;
    }
    int o = (int)old;
    switch (cmp) {
    case FUTEX_OP_CMP_EQ:
        return o == cmparg;
    case FUTEX_OP_CMP_NE:
        return o != cmparg;
    case FUTEX_OP_CMP_LT:
        return o < cmparg;
    case FUTEX_OP_CMP_LE:
        return o <= cmparg;
    case FUTEX_OP_CMP_GT:
        return o > cmparg;
    case FUTEX_OP_CMP_GE:
        return o >= cmparg;
    default:
        return -ENOSYS;
    }
}

/* The operation runs here, not in the kernel: a fiber could otherwise
 * queue on uaddr2 between a look at the table and the kernel's change of
 * the word, and miss its wake. The atomic RMW (seq_cst) comes before the
 * look at the buckets, as any waker's store does. */
int fs_futex_wake_op(uint32_t *uaddr, int nr_wake, uint32_t *uaddr2, int nr_wake2, uint32_t op,
                     unsigned flags)
{
    if (((uintptr_t)uaddr & 3) || ((uintptr_t)uaddr2 & 3))
        return -EINVAL;
    int cmp = fs__futex_atomic_op(uaddr2, op);
    if (cmp < 0)
        return cmp;
    int n1 = nr_wake > 0 ? nr_wake : 1, n2 = nr_wake2 > 0 ? nr_wake2 : 1;
    int w1 = fs__futex_wake_table(fs__futex_key(uaddr, flags), n1, FUTEX_BITSET_MATCH_ANY);
    int w2 =
        cmp ? fs__futex_wake_table(fs__futex_key(uaddr2, flags), n2, FUTEX_BITSET_MATCH_ANY) : 0;
    int kop = FUTEX_WAKE | fs__futex_op_flags(flags);
    long k1 = w1 < n1 ? fs__sys3(SYS_futex, uaddr, kop, n1 - w1) : 0;
    long k2 = cmp && w2 < n2 ? fs__sys3(SYS_futex, uaddr2, kop, n2 - w2) : 0;
    int total = w1 + w2 + (k1 > 0 ? (int)k1 : 0) + (k2 > 0 ? (int)k2 : 0);
    if (!total && (k1 < 0 || k2 < 0))
        return (int)(k1 < 0 ? k1 : k2);
    return total;
}

/* fork child: the other fibers are gone; so are their records. */
void fs__futex_atfork_child(void)
{
    memset(fs__futex_table, 0, sizeof fs__futex_table);
}
