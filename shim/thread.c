/*
 * thread.c - pthreads become fibers: create, join, detach, exit, identity,
 * scheduling attributes, affinity, names and CPU-time clocks,
 * thread-specific data. Cancellation, pthread_exit's unwinding and the C
 * cleanup handlers are cancel.c's.
 *
 * Handles, with per-fiber TLS (fs_fiber_tls(), the default). A fiber's
 * pthread_t is its thread control block's address (fs_fiber_tcb), as a
 * glibc thread's is: what glibc's own THREAD_SELF (%fs:0x10) reads on it,
 * what pthread_self() returns, and what pthread_create stores (before the
 * fiber can run). Calls that take a pthread_t never dereference one: they
 * look it up in a table keyed by TCB address (shim__tcb_lookup) and pass
 * only addresses the table does not know to glibc, which are glibc's own
 * threads (carriers, threads glibc started itself, main before the first
 * pthread_create; the adopted main fiber kept main's TCB, so the value a
 * program saved then is in the table and names main's fiber). A TCB
 * address stays in the table for good, naming the record of the last
 * thread that ran on it: fiber stacks are never unmapped and TCB blocks
 * of caller-owned stacks never go back to malloc (runtime/tls.c), so no
 * glibc thread can ever have such an address. So the handle of an ended
 * thread keeps answering as glibc answers for its ended threads until a
 * new thread is created on the same stack, which then takes the address
 * over: the old handle names the new thread, exactly as glibc's does when
 * it hands a cached stack (and so the same struct pthread) to a new
 * thread. glibc 2.36 reuses the most recently freed cached stack that
 * fits, and so does the runtime (stack.c, LIFO per size class).
 *
 * Handles without per-fiber TLS (FIBERSHIM_FIBER_TLS=0, sanitizer builds,
 * a glibc the runtime did not check): fibers share their carrier's TCB,
 * so there is no address of their own to give. A fiber's pthread_t is
 * then SHIM_HANDLE_TAG | generation << 32 | index: the index of its
 * struct shim_thread in a pool of records that is never given back, and
 * the generation that record had when the thread was created. A glibc
 * pthread_t is the address of glibc's struct pthread, a user-space
 * pointer, whose bit 63 (set only in kernel addresses) is always clear.
 * Calls that take a pthread_t tell the two apart by that bit, without
 * reading memory, and pass real threads to glibc. The adopted main thread
 * keeps the pthread_t glibc gave it, so a value saved before the first
 * pthread_create stays valid. In this mode a handle never names a later
 * thread (the records' quarantine, below), which is more than glibc
 * promises.
 *
 * Lifetime. A record has two references, the running thread's and the
 * handle's (dropped by join or detach); a call on another thread's handle
 * holds a third while it runs (shim__thread_get). Whoever drops the last
 * releases the fiber, unless a join already did, and marks the record
 * released; with per-fiber TLS the record also stays bound to its TCB
 * address until a new thread takes that address (holds, below). Once
 * both are over the record goes to the tail of a FIFO quarantine; a record
 * is reused only once SHIM_QUARANTINE others have died after it, with its
 * generation bumped. So a handle of an ended thread names a dead record
 * (its index with an older generation, once reused; or its TCB address,
 * until a new thread takes it), never glibc's code and never memory
 * given back: calls on it answer what glibc answers for its own ended
 * threads (join and detach: ESRCH once joined, EINVAL once detached;
 * pthread_kill and pthread_cancel: 0; names: ENOENT; the others: ESRCH).
 *
 * Attributes. Scheduling policy and priority, affinity and the name of a
 * fiber are stored in its record and reported back, never applied to a
 * carrier, which runs many fibers (see the README). They are inherited by
 * the threads it creates, as the kernel has a new thread inherit them.
 * shim__attr_lock makes each read or update of them whole.
 */
#include "shim.h"
#include "spinlock.h"

#include <limits.h>
#include <linux/capability.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define SHIM_TSD_BLOCK 32
#define SHIM_TSD_BLOCKS (PTHREAD_KEYS_MAX / SHIM_TSD_BLOCK)

struct shim_tsd_slot {
    uintptr_t seq;  /* key generation the value belongs to */
    void *value;
};

struct shim_tsd {
    struct shim_tsd_slot *block[SHIM_TSD_BLOCKS];
};

/* Handles and records: see the header comment. */
#define SHIM_HANDLE_TAG (1ull << 63)
#define SHIM_GEN_MASK 0x7fffffffu
#define SHIM_SLAB 256u               /* records per slab */
#define SHIM_MAX_RECORDS (1u << 22)  /* what a CPU clock id can name */
#define SHIM_QUARANTINE 256u

/* Handle state, the low bits of shim_thread.word. */
enum {
    SHIM_H_JOINABLE, /* nobody joined or detached it yet */
    SHIM_H_JOINING,  /* a join owns the handle while it waits */
    SHIM_H_DETACHED, /* created detached, or pthread_detach'ed */
    SHIM_H_JOINED,   /* joined: its fiber is freed */
};
#define SHIM_H_MASK 3u
#define SHIM_LIVE 4u /* not yet released: the fields below are this thread's */

struct shim_thread {
    /* Identity: kept across reuse (never zeroed), read by any thread. */
    _Atomic uint64_t word;      /* generation << 32 | SHIM_LIVE | SHIM_H_* */
    _Atomic int refs;           /* see the header comment; 0 while released */
    /* Until the record may be reused: one for "not released yet", one for
     * "bound to its TCB address" (per-fiber TLS only). */
    _Atomic int holds;
    /* The TCB address whose handle this record answers for (per-fiber TLS
     * only): written before the word is published. */
    _Atomic uintptr_t tcb;
    uint32_t index;             /* place in the pool */
    struct shim_thread *q_next; /* quarantine link, under shim__pool_lock */

    fs_fiber *fiber;            /* freed by a join, or by the last reference */
    void *(*start)(void *);
    void *arg;
    pthread_t real_id;          /* glibc's id for the adopted thread, else 0 */
    _Atomic bool ended;         /* its start routine returned or it exited */
    struct shim_tsd tsd;
    struct shim_cancel cancel;  /* cancel.c */
    int64_t cpu_offset_ns;      /* added to its fiber's CPU time (adoption, fork) */
    /* Under shim__attr_lock: */
    bool explicit_sched;        /* created with PTHREAD_EXPLICIT_SCHED */
    int sched_policy;           /* as set, SCHED_RESET_ON_FORK included */
    struct sched_param sched_param;
    cpu_set_t affinity;         /* as the kernel would report it */
    char name[16];              /* as prctl(PR_GET_NAME) would report it */
    struct shim_sigstate sig;   /* signal.c */
    struct shim_robust_set robust; /* robust mutexes it holds (robust.c) */
};

struct shim_robust_set *shim__robust_set(void)
{
    fs_fiber *f = fs_self();
    struct shim_thread *st = f ? fs_fiber_local(f) : NULL;
    return st ? &st->robust : NULL;
}

/* ---- keys ---------------------------------------------------------------- */

/* A key is in use while its seq is odd; delete bumps it, so values stored
 * under the old key read as NULL afterwards, as POSIX requires. */
static struct {
    _Atomic uintptr_t seq;
    void (*dtor)(void *);
} shim__keys[PTHREAD_KEYS_MAX];
static fs_spinlock shim__keys_lock = FS_SPINLOCK_INIT;

static struct shim_thread *shim__main_thread;
static _Atomic long shim__threads_alive; /* for "the last thread exits" */

/* TSD of plain threads (not fibers) lives in their own TLS. A real key's
 * destructor runs our destructors when such a thread exits. */
static __thread struct shim_tsd *shim__tls_tsd;
static pthread_key_t shim__plain_key;
static pthread_once_t shim__plain_once = PTHREAD_ONCE_INIT;

static inline struct shim_thread *shim__cur(void)
{
    fs_fiber *f = fs_self();
    return f ? fs_fiber_local(f) : NULL;
}

struct shim_sigstate *shim__sigstate(fs_fiber *f)
{
    struct shim_thread *st = f ? fs_fiber_local(f) : NULL;
    return st ? &st->sig : NULL;
}

struct shim_cancel *shim__cancel_of(fs_fiber *f)
{
    struct shim_thread *st = f ? fs_fiber_local(f) : NULL;
    return st ? &st->cancel : NULL;
}

/* ---- records: a type-stable pool ------------------------------------------ */

/* Slabs of records, never unmapped; shim__slabs[i] is set before
 * shim__nrecords passes i * SHIM_SLAB, so an index below shim__nrecords
 * always has its slab. */
static struct shim_thread *_Atomic shim__slabs[SHIM_MAX_RECORDS / SHIM_SLAB];
static _Atomic uint32_t shim__nrecords;
/* The quarantine: released records, oldest first. Lock order: last (no
 * other lock is taken under it). */
static fs_spinlock shim__pool_lock = FS_SPINLOCK_INIT;
static struct shim_thread *shim__q_head, *shim__q_tail;
static uint32_t shim__q_len;
/* Makes the stored attributes of every record read and change whole. */
static fs_spinlock shim__attr_lock = FS_SPINLOCK_INIT;

/* A record never used before, or NULL when the pool is full or out of
 * memory. Lock-free: racing callers take consecutive indexes. */
static struct shim_thread *shim__record_new(void)
{
    for (;;) {
        uint32_t n = atomic_load(&shim__nrecords);
        if (n >= SHIM_MAX_RECORDS)
            return NULL;
        struct shim_thread *slab = atomic_load_explicit(&shim__slabs[n / SHIM_SLAB],
                                                        memory_order_acquire);
        if (!slab) {
            size_t len = SHIM_SLAB * sizeof *slab;
            void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED)
                return NULL;
            struct shim_thread *none = NULL;
            /* release: the zeroed slab before its address */
            if (!atomic_compare_exchange_strong_explicit(&shim__slabs[n / SHIM_SLAB], &none, p,
                                                         memory_order_release,
                                                         memory_order_relaxed))
                munmap(p, len); /* a racing caller installed it first */
            continue;
        }
        if (atomic_compare_exchange_weak(&shim__nrecords, &n, n + 1)) {
            struct shim_thread *st = &slab[n % SHIM_SLAB];
            st->index = n;
            return st;
        }
    }
}

/* A record for a new thread: the quarantine's oldest once it holds more
 * than SHIM_QUARANTINE, else a new one. Its word is still "released";
 * everything after the identity fields is zero. */
static struct shim_thread *shim__record_alloc(void)
{
    struct shim_thread *st = NULL;
    fs__spin_lock(&shim__pool_lock);
    if (shim__q_len > SHIM_QUARANTINE) {
        st = shim__q_head;
        shim__q_head = st->q_next;
        if (!shim__q_head)
            shim__q_tail = NULL;
        shim__q_len--;
    }
    fs__spin_unlock(&shim__pool_lock);
    if (!st && !(st = shim__record_new()))
        return NULL;
    memset(&st->fiber, 0, sizeof *st - offsetof(struct shim_thread, fiber));
    return st;
}

/* Whether pthread_t values are TCB addresses (see the header comment).
 * False until the runtime starts, when no fiber exists yet; fixed after. */
static inline bool shim__tcb_ids(void)
{
    return fs_fiber_tls();
}

/* Makes st name a new thread: next generation, live, refs references.
 * The word is published before refs, so that shim__thread_get, which
 * takes a reference only while refs is non-zero and then checks the
 * word, never takes one on a record still being set up. st->tcb, if it
 * has one, is set before. */
static void shim__record_publish(struct shim_thread *st, int refs, bool detached)
{
    uint64_t gen = ((atomic_load(&st->word) >> 32) + 1) & SHIM_GEN_MASK;
    atomic_store(&st->holds, shim__tcb_ids() ? 2 : 1);
    atomic_store(&st->word, gen << 32 | SHIM_LIVE | (detached ? SHIM_H_DETACHED : SHIM_H_JOINABLE));
    atomic_store(&st->refs, refs);
}

/* Puts a released record at the tail of the quarantine. */
static void shim__record_free(struct shim_thread *st)
{
    st->q_next = NULL;
    fs__spin_lock(&shim__pool_lock);
    if (shim__q_tail)
        shim__q_tail->q_next = st;
    else
        shim__q_head = st;
    shim__q_tail = st;
    shim__q_len++;
    fs__spin_unlock(&shim__pool_lock);
}

/* Drops one of st's holds; the last puts it in the quarantine. */
static void shim__record_drop(struct shim_thread *st)
{
    if (atomic_fetch_sub(&st->holds, 1) == 1)
        shim__record_free(st);
}

/* ---- TCB addresses (per-fiber TLS): the table of handles ------------------ */

/*
 * Open addressing, linear probing, at most half full. A slot's key is a
 * TCB address, set once and never removed; its rec is the record of the
 * last thread created on that TCB. Lookups take no lock: a key is
 * published after its rec, a rec replaced with a release store. Changes
 * and growth are made under shim__tcb_lock. A full table is copied into
 * one twice its size, which is then published; the old one stays mapped
 * (a lookup may still probe it), so the tables cost at most twice the
 * last one: 16 bytes a slot, 64 MiB for 1,000,000 threads' TCBs.
 *
 * A lookup sees every change made before the call that looks up (the
 * table it loads is the one changed, or a copy made after the change,
 * under the same lock); a change racing with it is the program's race,
 * as glibc's reuse of a cached struct pthread is.
 */
struct shim_tcb_slot {
    _Atomic uintptr_t key;             /* a TCB address; 0: free */
    struct shim_thread *_Atomic rec;
};

struct shim_tcb_table {
    unsigned shift;                    /* 64 - log2(slots) */
    size_t mask;                       /* slots - 1 */
    _Atomic size_t used;               /* changed under shim__tcb_lock */
    size_t bytes;                      /* of the mapping */
    struct shim_tcb_slot slot[];
};

#define SHIM_TCB_MIN_SLOTS 1024u

__attribute__((noreturn, cold)) void fs__panic(const char *file, int line, const char *what);

static struct shim_tcb_table *_Atomic shim__tcbs;
/* Lock order: after shim__attr_lock, before shim__pool_lock. */
static fs_spinlock shim__tcb_lock = FS_SPINLOCK_INIT;

static inline size_t shim__tcb_hash(const struct shim_tcb_table *tab, uintptr_t t)
{
    /* TCBs are 64-byte aligned; Fibonacci hashing of the rest. */
    return (size_t)(((uint64_t)t >> 6) * 0x9e3779b97f4a7c15ull >> tab->shift);
}

/* The slot of t in tab, or the free slot where it would go. */
static struct shim_tcb_slot *shim__tcb_probe(struct shim_tcb_table *tab, uintptr_t t)
{
    for (size_t i = shim__tcb_hash(tab, t);; i = (i + 1) & tab->mask) {
        uintptr_t k = atomic_load_explicit(&tab->slot[i].key, memory_order_acquire);
        if (k == t || k == 0)
            return &tab->slot[i];
    }
}

/* The record bound to the TCB address t, or NULL when t was never a
 * fiber's TCB. Any thread; lock-free. */
static struct shim_thread *shim__tcb_lookup(uintptr_t t)
{
    struct shim_tcb_table *tab = atomic_load_explicit(&shim__tcbs, memory_order_acquire);
    if (!tab || !t)
        return NULL;
    struct shim_tcb_slot *s = shim__tcb_probe(tab, t);
    return atomic_load_explicit(&s->key, memory_order_relaxed) == t
               ? atomic_load_explicit(&s->rec, memory_order_acquire)
               : NULL;
}

/* A table twice the size of old (or the first one) holding its slots, or
 * NULL without memory. Under shim__tcb_lock. */
static struct shim_tcb_table *shim__tcb_grow(struct shim_tcb_table *old)
{
    size_t n = old ? (old->mask + 1) * 2 : SHIM_TCB_MIN_SLOTS;
    size_t bytes = sizeof *old + n * sizeof old->slot[0];
    struct shim_tcb_table *tab =
        mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (tab == MAP_FAILED)
        return NULL;
    tab->shift = 64 - (unsigned)__builtin_ctzll(n);
    tab->mask = n - 1;
    tab->bytes = bytes;
    for (size_t i = 0; old && i <= old->mask; i++) {
        uintptr_t k = atomic_load_explicit(&old->slot[i].key, memory_order_relaxed);
        if (!k)
            continue;
        struct shim_tcb_slot *d = shim__tcb_probe(tab, k);
        atomic_store_explicit(&d->rec, atomic_load_explicit(&old->slot[i].rec, memory_order_relaxed),
                              memory_order_relaxed);
        atomic_store_explicit(&d->key, k, memory_order_relaxed);
        tab->used++;
    }
    /* release: the copied slots before the table's address */
    atomic_store_explicit(&shim__tcbs, tab, memory_order_release);
    return tab;
}

/* Room for `more` new TCB addresses without growing: 0, or EAGAIN
 * without memory. Called before a spawn, whose ready hook then binds
 * without failing. Any thread. */
static int shim__tcb_reserve(size_t more)
{
    struct shim_tcb_table *tab = atomic_load_explicit(&shim__tcbs, memory_order_acquire);
    if (tab && (atomic_load_explicit(&tab->used, memory_order_relaxed) + more) * 2 <= tab->mask + 1)
        return 0; /* the common case: no lock (a racing bind may take the room: see there) */
    int rc = 0;
    fs__spin_lock(&shim__tcb_lock);
    tab = atomic_load_explicit(&shim__tcbs, memory_order_relaxed);
    if ((!tab || (tab->used + more) * 2 > tab->mask + 1) && !shim__tcb_grow(tab))
        rc = EAGAIN;
    fs__spin_unlock(&shim__tcb_lock);
    return rc;
}

/* Makes the TCB address t name st, whose word is published. Returns the
 * record t named before (its bound hold is now the caller's to drop), or
 * NULL. Never fails: the table grows past half full only when racing
 * spawns all reserved the same room, and a table with a free slot works. */
static struct shim_thread *shim__tcb_bind(uintptr_t t, struct shim_thread *st)
{
    fs__spin_lock(&shim__tcb_lock);
    struct shim_tcb_table *tab = atomic_load_explicit(&shim__tcbs, memory_order_relaxed);
    if ((tab->used + 1) * 2 > tab->mask + 1) {
        struct shim_tcb_table *bigger = shim__tcb_grow(tab);
        if (bigger)
            tab = bigger;
    }
    struct shim_tcb_slot *s = shim__tcb_probe(tab, t);
    struct shim_thread *old = NULL;
    if (atomic_load_explicit(&s->key, memory_order_relaxed) == t) {
        old = atomic_load_explicit(&s->rec, memory_order_relaxed);
        atomic_store_explicit(&s->rec, st, memory_order_release);
    } else {
        if (tab->used + 1 > tab->mask)
            fs__panic(__FILE__, __LINE__, "thread handle table full");
        atomic_store_explicit(&s->rec, st, memory_order_relaxed);
        atomic_store_explicit(&s->key, t, memory_order_release); /* after its rec */
        tab->used++;
    }
    fs__spin_unlock(&shim__tcb_lock);
    return old;
}

/* Splits a pthread_t. Returns false for a glibc thread (pass it on); else
 * *st is the record it names, or NULL for a value that never named one,
 * and *gen the generation it was made with (a TCB handle: the generation
 * of the thread it names now, the last one created on that TCB). */
static bool shim__decode(pthread_t t, struct shim_thread **st, uint32_t *gen)
{
    if (shim__tcb_ids()) {
        for (;;) {
            struct shim_thread *r = shim__tcb_lookup(t);
            if (!r) {
                /* Not a fiber's TCB: glibc's thread, unless bit 63 says it
                 * can be no address at all (a handle from another mode). */
                *st = NULL;
                return (t & SHIM_HANDLE_TAG) != 0;
            }
            /* The word, then the TCB it belongs to: a record reused for
             * another TCB since the lookup (its tcb is written before its
             * new word) reads as not t's, and t's slot names another. */
            uint64_t w = atomic_load_explicit(&r->word, memory_order_acquire);
            if (atomic_load_explicit(&r->tcb, memory_order_acquire) == t) {
                *st = r;
                *gen = (uint32_t)(w >> 32);
                return true;
            }
        }
    }
    struct shim_thread *m = shim__main_thread;
    if (m && t == m->real_id) {
        *st = m; /* never reused: its generation is the one it has */
        *gen = (uint32_t)(atomic_load(&m->word) >> 32);
        return true;
    }
    if (!(t & SHIM_HANDLE_TAG))
        return false;
    uint32_t i = (uint32_t)t;
    *gen = (uint32_t)(t >> 32) & SHIM_GEN_MASK;
    *st = NULL;
    if (i < atomic_load_explicit(&shim__nrecords, memory_order_acquire))
        *st = &atomic_load_explicit(&shim__slabs[i / SHIM_SLAB], memory_order_acquire)[i % SHIM_SLAB];
    return true;
}

static pthread_t shim__id_of(struct shim_thread *st)
{
    if (st->real_id)
        return st->real_id;
    if (shim__tcb_ids())
        return atomic_load_explicit(&st->tcb, memory_order_relaxed);
    return SHIM_HANDLE_TAG | (atomic_load(&st->word) >> 32) << 32 | st->index;
}

/* Drops a reference. The last one frees the thread's fiber (unless a join
 * did), its TSD blocks and robust set, marks the record released and
 * drops its "not released" hold (the adopted main thread's record keeps
 * it: its glibc id keeps naming it). Any thread; by the thread itself as
 * it exits, before fs_exit. */
static void shim__thread_put(struct shim_thread *st)
{
    if (atomic_fetch_sub(&st->refs, 1) != 1)
        return;
    uint64_t w = atomic_load(&st->word);
    /* Detaching a fiber that still runs (the thread's own put as it
     * exits) makes the runtime free it when it is switched out for good. */
    if ((w & SHIM_H_MASK) != SHIM_H_JOINED && st->fiber)
        fs_detach(st->fiber);
    for (int i = 0; i < SHIM_TSD_BLOCKS; i++)
        free(st->tsd.block[i]);
    free(st->robust.v);
    atomic_store(&st->word, w & ~(uint64_t)SHIM_LIVE);
    if (st != shim__main_thread)
        shim__record_drop(st);
}

/*
 * The record of a live thread for a call on it, with a reference the
 * caller drops with shim__thread_put. NULL with *err 0: t is a glibc
 * thread, pass it on. NULL with *err ESRCH: t names a thread whose record
 * was released (or never a thread). The reference keeps the fiber from
 * being freed by its exit; a join racing with the call is the program's
 * race, as with glibc. Any thread.
 */
static struct shim_thread *shim__thread_get(pthread_t t, int *err)
{
    struct shim_thread *st;
    uint32_t gen;
retry:
    *err = 0;
    if (!shim__decode(t, &st, &gen))
        return NULL;
    *err = ESRCH;
    if (!st)
        return NULL;
    int r = atomic_load(&st->refs);
    do {
        if (r == 0)
            return NULL; /* released: it may be in the quarantine or reused */
    } while (!atomic_compare_exchange_weak(&st->refs, &r, r + 1));
    /* The record may have been released and reused between our load of
     * refs and the increment: then the reference is on a new thread. */
    uint64_t w = atomic_load(&st->word);
    if ((uint32_t)(w >> 32) != gen || !(w & SHIM_LIVE)) {
        shim__thread_put(st);
        /* With TCB handles, a record reused since the lookup may be t's
         * new thread, or another's: look t up again. */
        if ((uint32_t)(w >> 32) != gen && shim__tcb_ids())
            goto retry;
        return NULL;
    }
    *err = 0;
    return st;
}

/* ---- what a new thread starts with ----------------------------------------- */

/* Scheduling, affinity and name, as a thread has them. */
struct shim_attrs {
    int policy; /* SCHED_RESET_ON_FORK included */
    struct sched_param param;
    cpu_set_t affinity;
    char name[16];
};

/* The calling kernel thread's own attributes, from the kernel (a plain
 * thread's, or the main thread's as it is adopted). */
static void shim__attrs_of_kernel_thread(struct shim_attrs *a)
{
    int e = errno;
    memset(a, 0, sizeof *a);
    a->policy = sched_getscheduler(0);
    if (a->policy < 0 || sched_getparam(0, &a->param) != 0) {
        a->policy = SCHED_OTHER;
        a->param.sched_priority = 0;
    }
    if (sched_getaffinity(0, sizeof a->affinity, &a->affinity) != 0)
        CPU_ZERO(&a->affinity);
    REAL(prctl)(PR_GET_NAME, a->name, 0, 0, 0);
    errno = e;
}

/* What a thread created by the caller inherits, as clone() copies it: a
 * fiber's stored attributes, a plain thread's real ones. A policy marked
 * SCHED_RESET_ON_FORK is passed on as it is, mark included: glibc reports
 * to the new thread the creator's policy as it cached it (the kernel's
 * reset of the new thread is never seen through pthread_getschedparam). */
static void shim__attrs_inherited(struct shim_attrs *a)
{
    struct shim_thread *me = shim__cur();
    if (me) {
        fs__spin_lock(&shim__attr_lock);
        a->policy = me->sched_policy;
        a->param = me->sched_param;
        a->affinity = me->affinity;
        memcpy(a->name, me->name, sizeof a->name);
        fs__spin_unlock(&shim__attr_lock);
    } else {
        shim__attrs_of_kernel_thread(a);
    }
}

/* What decides whether the kernel lets the caller change a scheduling
 * policy (sched(7)), read before shim__attr_lock is taken. */
struct shim_sched_priv {
    bool cap_sys_nice; /* the calling kernel thread's effective capability */
    rlim_t rtprio;     /* RLIMIT_RTPRIO, soft */
    rlim_t nice_lim;   /* RLIMIT_NICE, soft */
    int nice;          /* the calling kernel thread's nice value */
};

/* glibc exports capget without declaring it (libcap's header does). */
extern int capget(cap_user_header_t hdr, cap_user_data_t data);

static void shim__sched_priv_read(struct shim_sched_priv *pv)
{
    int e = errno;
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];
    pv->cap_sys_nice = capget(&h, d) == 0 &&
                       (d[CAP_TO_INDEX(CAP_SYS_NICE)].effective & CAP_TO_MASK(CAP_SYS_NICE));
    struct rlimit rl;
    pv->rtprio = getrlimit(RLIMIT_RTPRIO, &rl) == 0 ? rl.rlim_cur : 0;
    pv->nice_lim = getrlimit(RLIMIT_NICE, &rl) == 0 ? rl.rlim_cur : 0;
    errno = 0;
    pv->nice = getpriority(PRIO_PROCESS, 0);
    if (errno)
        pv->nice = 0;
    errno = e;
}

/*
 * What sched_setscheduler(2) answers when a thread running (cur_policy,
 * cur_prio) is asked to take (policy, prio) by a caller with privileges
 * pv, without applying anything. EINVAL: a policy it does not know
 * (SCHED_DEADLINE too: it needs sched_setattr), a priority outside
 * sched_get_priority_min/max of the policy. EPERM: what the kernel refuses
 * a caller without CAP_SYS_NICE, whatever its uid: a real-time policy,
 * or a real-time priority raised, beyond RLIMIT_RTPRIO; leaving
 * SCHED_IDLE beyond RLIMIT_NICE; dropping SCHED_RESET_ON_FORK. Not
 * modelled: a cgroup v1 real-time bandwidth of 0, which refuses real-time
 * policies even to root.
 */
static int shim__sched_check(const struct shim_sched_priv *pv, int cur_policy, int cur_prio,
                             int policy, int prio)
{
    int base = policy & ~SCHED_RESET_ON_FORK, cur = cur_policy & ~SCHED_RESET_ON_FORK;
    bool rt = base == SCHED_FIFO || base == SCHED_RR;
    if (policy < 0 || !(rt || base == SCHED_OTHER || base == SCHED_BATCH || base == SCHED_IDLE))
        return EINVAL;
    if (prio < sched_get_priority_min(base) || prio > sched_get_priority_max(base))
        return EINVAL;
    if (pv->cap_sys_nice)
        return 0;
    if (rt && ((base != cur && pv->rtprio == 0) ||
               (prio > cur_prio && (rlim_t)prio > pv->rtprio)))
        return EPERM;
    if (cur == SCHED_IDLE && base != SCHED_IDLE && (rlim_t)(20 - pv->nice) > pv->nice_lim)
        return EPERM;
    if ((cur_policy & SCHED_RESET_ON_FORK) && !(policy & SCHED_RESET_ON_FORK))
        return EPERM;
    return 0;
}

/*
 * The affinity the kernel would give a thread asked to take set: the same
 * request is made of the calling kernel thread, the result read back (the
 * kernel keeps the CPUs its cpuset allows and that are online) and the
 * thread's own mask restored, so that the answer, errors included, is the
 * kernel's. The caller may run on another CPU for that moment; nothing
 * else changes. Any thread.
 */
static int shim__affinity_check(size_t size, const cpu_set_t *set, cpu_set_t *out)
{
    int e = errno, rc = 0;
    cpu_set_t own;
    if (sched_getaffinity(0, sizeof own, &own) != 0 || sched_setaffinity(0, size, set) != 0) {
        rc = errno;
    } else {
        if (sched_getaffinity(0, sizeof *out, out) != 0)
            rc = errno;
        sched_setaffinity(0, sizeof own, &own);
    }
    errno = e;
    return rc;
}

/* The attributes of a thread created with attr (NULL: defaults): the
 * inherited ones, or with PTHREAD_EXPLICIT_SCHED attr's policy and
 * priority, and attr's affinity if it has one. Returns 0, or the error
 * pthread_create returns for them (EINVAL, EPERM), as glibc, which applies
 * them to the new thread with sched_setscheduler and sched_setaffinity. */
static int shim__attrs_for_new(const pthread_attr_t *attr, struct shim_attrs *a, bool *explicit_sched)
{
    shim__attrs_inherited(a);
    int inherit = PTHREAD_INHERIT_SCHED;
    *explicit_sched = attr && pthread_attr_getinheritsched(attr, &inherit) == 0 &&
                      inherit == PTHREAD_EXPLICIT_SCHED;
    if (*explicit_sched) {
        int policy;
        struct sched_param p;
        struct shim_sched_priv pv;
        pthread_attr_getschedpolicy(attr, &policy);
        pthread_attr_getschedparam(attr, &p);
        shim__sched_priv_read(&pv);
        /* glibc applies them to the new kernel thread, which clone() gave
         * the creator's policy, reset and unmarked if it was marked
         * SCHED_RESET_ON_FORK. */
        int cur = a->policy & ~SCHED_RESET_ON_FORK, cur_prio = a->param.sched_priority;
        if ((a->policy & SCHED_RESET_ON_FORK) && (cur == SCHED_FIFO || cur == SCHED_RR)) {
            cur = SCHED_OTHER;
            cur_prio = 0;
        }
        int rc = shim__sched_check(&pv, cur, cur_prio, policy, p.sched_priority);
        if (rc)
            return rc;
        a->policy = policy;
        a->param = p;
    }
    /* An attr without a CPU set reports every CPU: that, and only that,
     * reads as "none". */
    cpu_set_t set, all;
    memset(&all, 0xff, sizeof all);
    if (attr && pthread_attr_getaffinity_np(attr, sizeof set, &set) == 0 &&
        memcmp(&set, &all, sizeof set) != 0)
        return shim__affinity_check(sizeof set, &set, &a->affinity);
    return 0;
}

/* ---- activation: the calling thread becomes carrier 0 ------------------- */

static void shim__thread_start_hook(struct shim_thread *st)
{
    st->fiber = fs_self();
    fs_fiber_set_local(st->fiber, st);
}

/* fork() while another thread holds a lock of this file must not leave it
 * held in the child (nor the quarantine half linked). */
void shim__thread_fork_prepare(void)
{
    fs__spin_lock(&shim__attr_lock);
    fs__spin_lock(&shim__tcb_lock);
    fs__spin_lock(&shim__pool_lock);
}

void shim__thread_fork_done(void)
{
    fs__spin_unlock(&shim__pool_lock);
    fs__spin_unlock(&shim__tcb_lock);
    fs__spin_unlock(&shim__attr_lock);
}

int shim__adopt_current(void)
{
    struct shim_thread *st = shim__record_alloc();
    if (!st)
        return ENOMEM;
    if (shim__tcb_ids() && shim__tcb_reserve(1)) {
        shim__record_free(st); /* never published */
        return ENOMEM;
    }
    fs_fiber *f;
    int rc = fs_adopt_thread(&f);
    if (rc) {
        shim__record_free(st); /* never published: still the released record it was */
        return rc == -EBUSY || rc == -EALREADY ? 0 : -rc;
    }
    struct shim_attrs a;
    shim__attrs_of_kernel_thread(&a);
    st->sched_policy = a.policy;
    st->sched_param = a.param;
    st->affinity = a.affinity;
    memcpy(st->name, a.name, sizeof st->name);
    /* Its CPU time as a thread so far; the fiber counts the rest. */
    struct timespec ts;
    if (REAL(clock_gettime)(CLOCK_THREAD_CPUTIME_ID, &ts) == 0)
        st->cpu_offset_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    st->real_id = REAL(pthread_self)();
    shim__sigstate_init(&st->sig, NULL);
    shim__adopt_pending(&st->sig);
    st->fiber = f;
    fs_fiber_set_local(f, st);
    /* The thread's TSD so far was kept as a plain thread's: carry it. */
    if (shim__tls_tsd) {
        st->tsd = *shim__tls_tsd;
        memset(shim__tls_tsd, 0, sizeof *shim__tls_tsd);
    }
    /* Its fiber kept the thread's own TCB, glibc's id for it, which now
     * names the fiber (room reserved above). */
    atomic_store(&st->tcb, (uintptr_t)st->real_id);
    shim__record_publish(st, 2, false);
    if (shim__tcb_ids()) {
        struct shim_thread *old = shim__tcb_bind((uintptr_t)st->real_id, st);
        if (old) /* none: glibc's TCBs are never fibers' */
            shim__record_drop(old);
    }
    shim__main_thread = st;
    atomic_fetch_add(&shim__threads_alive, 1);
    return 0;
}

/* ---- create / exit / join ------------------------------------------------ */

/* The fiber's first frame of ours. pthread_exit's unwind (cancel.c) ends
 * here: its stop function longjmps to st->cancel.entry once the frame
 * about to be unwound is this one, as glibc's ends in start_thread. */
static void *shim__thread_start(void *p)
{
    struct shim_thread *st = p;
    shim__thread_start_hook(st);
    if (_setjmp(st->cancel.entry) == 0) {
        st->cancel.entry_set = true;
        shim__thread_finish(st->start(st->arg));
    }
    shim__thread_finish(st->cancel.result);
}

struct shim_create {
    struct shim_thread *st;
    pthread_t *thread;
    bool detached;
};

/* fs_spawn's ready hook: the new fiber exists, with its TCB, and cannot
 * run yet. Its record is published, bound to its TCB address (per-fiber
 * TLS), and its id stored where pthread_create's caller asked, before it
 * can run, as glibc stores it. */
static void shim__create_ready(fs_fiber *f, void *p)
{
    struct shim_create *c = p;
    struct shim_thread *st = c->st;
    st->fiber = f;
    uintptr_t tcb = (uintptr_t)fs_fiber_tcb(f);
    if (tcb)
        atomic_store_explicit(&st->tcb, tcb, memory_order_release); /* before the word */
    shim__record_publish(st, c->detached ? 1 : 2, c->detached);
    if (tcb) {
        /* The previous thread on this stack, if any, is now unnamed. */
        struct shim_thread *old = shim__tcb_bind(tcb, st);
        if (old)
            shim__record_drop(old);
    }
    *c->thread = shim__id_of(st);
}

int shim__pthread_create(pthread_t *thread, const pthread_attr_t *attr,
                         void *(*start)(void *), void *arg)
{
    if (!fs_self()) {
        int rc = shim__activate();
        if (rc)
            return rc;
    }
    struct fs_spawn_attr sa = {0};
    if (attr) {
        int ds;
        size_t sz, defsz = 0;
        pthread_attr_t def;
        if (pthread_attr_getdetachstate(attr, &ds) == 0)
            sa.detached = ds == PTHREAD_CREATE_DETACHED;
        /* glibc reports its default size for an attr whose size was never
         * set; only a size that differs is the caller's choice. */
        if (pthread_getattr_default_np(&def) == 0) {
            pthread_attr_getstacksize(&def, &defsz);
            pthread_attr_destroy(&def);
        }
        if (pthread_attr_getstacksize(attr, &sz) == 0 && sz != defsz)
            sa.stack_size = sz;
        /* An attr's guard is always its own: pthread_attr_init gives one
         * page whatever the default attributes say, as glibc uses it. */
        size_t guard;
        if (pthread_attr_getguardsize(attr, &guard) == 0) {
            sa.guard_size = guard;
            sa.no_guard = guard == 0;
        }
        void *lo;
        /* glibc stores the top of a caller-provided stack and returns
         * top - size; with none set, top is NULL and lo + size wraps to 0. */
        if (pthread_attr_getstack(attr, &lo, &sz) == 0 && (uintptr_t)lo + sz != 0) {
            sa.stack_addr = lo;
            sa.stack_size = sz;
        }
    }
    bool detached = sa.detached;
    sa.detached = false; /* the last reference detaches the fiber (shim__thread_put) */
    struct shim_attrs a;
    bool explicit_sched;
    int rc = shim__attrs_for_new(attr, &a, &explicit_sched);
    if (rc)
        return rc;
    struct shim_thread *st = shim__record_alloc();
    if (!st)
        return EAGAIN;
    st->start = start;
    st->arg = arg;
    st->explicit_sched = explicit_sched;
    st->sched_policy = a.policy;
    st->sched_param = a.param;
    st->affinity = a.affinity;
    memcpy(st->name, a.name, sizeof st->name);
    /* A new thread inherits its creator's mask, unless attr has one. */
    sigset_t attr_mask;
    bool has_mask = attr && pthread_attr_getsigmask_np(attr, &attr_mask) == 0;
    shim__sigstate_init(&st->sig, has_mask ? &attr_mask : NULL);
    if (shim__tcb_ids() && shim__tcb_reserve(1)) {
        shim__record_free(st); /* never published */
        return EAGAIN;
    }
    atomic_fetch_add(&shim__threads_alive, 1);
    /* Its record is its local word before it runs: a pthread_kill right
     * after create finds its signal state, and the runtime's first-start
     * hook delivers what is pending then. */
    sa.local = st;
    struct shim_create c = {st, thread, detached};
    sa.ready = shim__create_ready;
    sa.ready_arg = &c;
    fs_fiber *f;
    rc = fs_spawn(&f, shim__thread_start, st, &sa);
    if (rc) {
        /* Never published: no handle names it. */
        atomic_fetch_sub(&shim__threads_alive, 1);
        shim__record_free(st);
        return rc == -ENOMEM ? EAGAIN : -rc;
    }
    return 0;
}
SHIM_ALIAS(pthread_create)

static void shim__plain_tsd_dtor(void *p);

/* Runs the TSD destructors of tsd, as glibc does: up to
 * PTHREAD_DESTRUCTOR_ITERATIONS rounds while values remain. */
static void shim__tsd_run_dtors(struct shim_tsd *tsd)
{
    for (int round = 0; round < PTHREAD_DESTRUCTOR_ITERATIONS; round++) {
        bool any = false;
        for (int b = 0; b < SHIM_TSD_BLOCKS; b++) {
            struct shim_tsd_slot *blk = tsd->block[b];
            if (!blk)
                continue;
            for (int i = 0; i < SHIM_TSD_BLOCK; i++) {
                int k = b * SHIM_TSD_BLOCK + i;
                void *v = blk[i].value;
                uintptr_t seq = atomic_load(&shim__keys[k].seq);
                if (!v || blk[i].seq != seq || !(seq & 1))
                    continue;
                blk[i].value = NULL;
                void (*dtor)(void *) = shim__keys[k].dtor;
                if (dtor) {
                    dtor(v);
                    any = true;
                }
            }
        }
        if (!any)
            break;
    }
}

__attribute__((noreturn)) void shim__thread_finish(void *ret)
{
    struct shim_thread *st = shim__cur();
    shim__sig_safe_point();
    /* C++ thread_local destructors, then TSD destructors: glibc's order
     * (start_thread). */
    fs_tls_run_dtors();
    shim__tsd_run_dtors(&st->tsd);
    /* What the kernel does for a thread that exits holding robust mutexes. */
    shim__robust_owner_died(&st->robust);
    shim__sig_fiber_exit(); /* a handler that exits leaves its mask behind */
    atomic_store(&st->ended, true);
    if (atomic_fetch_sub(&shim__threads_alive, 1) == 1)
        exit(0); /* the last thread is gone: the process ends, as with glibc */
    shim__thread_put(st);
    fs_exit(ret);
}

__attribute__((noreturn)) void shim__thread_exit(void *ret)
{
    shim__cancel_exit(&shim__cur()->cancel, ret);
}

void shim__pthread_exit(void *ret)
{
    if (shim__cur())
        shim__thread_exit(ret);
    REAL(pthread_exit)(ret);
    __builtin_unreachable();
}
SHIM_ALIAS(pthread_exit)

/* Converts an absolute time on `clock` into a runtime deadline. */
static int64_t shim__abs_to_deadline(clockid_t clock, const struct timespec *abs)
{
    struct timespec now;
    clock_gettime(clock, &now);
    int64_t d = (int64_t)(abs->tv_sec - now.tv_sec) * 1000000000 + (abs->tv_nsec - now.tv_nsec);
    return d <= 0 ? 0 : shim__deadline_after(d);
}

/*
 * Claims the handle t for a join (to SHIM_H_JOINING) or a detach (to
 * SHIM_H_DETACHED), with one compare-and-swap on the record's word, so
 * that two claims never both win and a claim never lands on a record
 * reused for another thread. Returns 0 with *out set, else the error glibc
 * gives for its own threads: ESRCH for a thread already joined (EBUSY
 * from pthread_tryjoin_np, which looks at the kernel tid first), EINVAL
 * for one detached (running or ended) or being joined, ESRCH for a
 * tagged handle reused since or that never named a thread (a TCB handle
 * reused since names the new thread: the claim is then on that one).
 * -1: t is a glibc thread.
 */
static int shim__claim(pthread_t t, unsigned to, bool try, struct shim_thread **out)
{
    struct shim_thread *st;
    uint32_t gen;
retry:
    if (!shim__decode(t, &st, &gen))
        return -1;
    if (!st)
        return ESRCH;
    uint64_t w = atomic_load(&st->word);
    for (;;) {
        if ((uint32_t)(w >> 32) != gen) {
            if (shim__tcb_ids())
                goto retry; /* reused since the lookup: see shim__thread_get */
            return ESRCH;
        }
        switch (w & SHIM_H_MASK) {
        case SHIM_H_JOINED:
            return try ? EBUSY : ESRCH;
        case SHIM_H_JOINING:
        case SHIM_H_DETACHED:
            return EINVAL;
        }
        if (!(w & SHIM_LIVE))
            return ESRCH;
        if (to == SHIM_H_JOINING && st == shim__cur())
            return EDEADLK;
        if (atomic_compare_exchange_weak(&st->word, &w, (w & ~(uint64_t)SHIM_H_MASK) | to))
            break;
    }
    *out = st;
    return 0;
}

static int shim__join(pthread_t t, void **ret, clockid_t clock, const struct timespec *abs,
                      bool try)
{
    struct shim_thread *st;
    int rc = shim__claim(t, SHIM_H_JOINING, try, &st);
    if (rc < 0) {
        if (try)
            return REAL(pthread_tryjoin_np)(t, ret);
        if (abs)
            return REAL(pthread_clockjoin_np)(t, ret, clock, abs);
        return REAL(pthread_join)(t, ret);
    }
    if (rc)
        return rc;
    /* The claim owns the handle's reference: nobody else frees the fiber. */
    uint64_t w = atomic_load(&st->word) & ~(uint64_t)SHIM_H_MASK;
    if (abs && (abs->tv_nsec < 0 || abs->tv_nsec >= 1000000000)) {
        atomic_store(&st->word, w | SHIM_H_JOINABLE);
        return EINVAL;
    }
    for (;;) {
        /* A cancellation point (not tryjoin) while the thread runs, as
         * glibc's, whose wait for it is cancellable: the handle stays
         * joinable. */
        if (!try && !atomic_load(&st->ended) && shim__cancel_due()) {
            atomic_store(&st->word, w | SHIM_H_JOINABLE);
            shim__cancel_point();
        }
        int64_t dl = try ? 0 : abs ? shim__abs_to_deadline(clock, abs) : FS_NO_DEADLINE;
        rc = fs_join(st->fiber, ret, dl);
        if (rc == -EINTR)
            continue; /* a signal handler ran, or a cancel came: look again */
        if (rc == -ETIMEDOUT && abs) {
            /* Never report a timeout before the absolute time has come on
             * the caller's clock (REALTIME may have been stepped back). */
            struct timespec now;
            clock_gettime(clock, &now);
            if (now.tv_sec < abs->tv_sec ||
                (now.tv_sec == abs->tv_sec && now.tv_nsec < abs->tv_nsec))
                continue;
        }
        if (rc) {
            atomic_store(&st->word, w | SHIM_H_JOINABLE); /* not joined: give the handle back */
            return -rc;
        }
        atomic_store(&st->word, w | SHIM_H_JOINED);
        shim__thread_put(st);
        return 0;
    }
}

int shim__pthread_join(pthread_t t, void **ret)
{
    return shim__join(t, ret, CLOCK_REALTIME, NULL, false);
}
SHIM_ALIAS(pthread_join)

int shim__pthread_tryjoin_np(pthread_t t, void **ret)
{
    return shim__join(t, ret, CLOCK_REALTIME, NULL, true);
}
SHIM_ALIAS(pthread_tryjoin_np)

int shim__pthread_timedjoin_np(pthread_t t, void **ret, const struct timespec *abs)
{
    return shim__join(t, ret, CLOCK_REALTIME, abs, false);
}
SHIM_ALIAS(pthread_timedjoin_np)

int shim__pthread_clockjoin_np(pthread_t t, void **ret, clockid_t clock,
                               const struct timespec *abs)
{
    if (clock != CLOCK_REALTIME && clock != CLOCK_MONOTONIC)
        return EINVAL;
    return shim__join(t, ret, clock, abs, false);
}
SHIM_ALIAS(pthread_clockjoin_np)

int shim__pthread_detach(pthread_t t)
{
    struct shim_thread *st;
    int rc = shim__claim(t, SHIM_H_DETACHED, false, &st);
    if (rc < 0)
        return REAL(pthread_detach)(t);
    if (rc)
        return rc;
    shim__thread_put(st); /* the handle's: if the thread has ended, it is freed now */
    return 0;
}
SHIM_ALIAS(pthread_detach)

pthread_t shim__pthread_self(void)
{
    if (shim__tcb_ids()) {
        /* THREAD_SELF, glibc's own pthread_self(): the fiber's TCB, or the
         * kernel thread's off a fiber. */
        pthread_t self;
        __asm__("movq %%fs:0x10, %0" : "=r"(self));
        return self;
    }
    struct shim_thread *st = shim__cur();
    return st ? shim__id_of(st) : REAL(pthread_self)();
}
SHIM_ALIAS(pthread_self)

int shim__pthread_equal(pthread_t a, pthread_t b)
{
    return a == b;
}
SHIM_ALIAS(pthread_equal)

int shim__sched_yield(void)
{
    if (!fs_self())
        return REAL(sched_yield)();
    fs_yield();
    return 0;
}
SHIM_ALIAS(sched_yield)

/* ---- attributes, names, scheduling ---------------------------------------- */

/* The scheduling and affinity of st's thread, into attr as glibc's
 * pthread_getattr_np reports them (SCHED_BATCH and SCHED_IDLE, which
 * pthread_attr_setschedpolicy refuses, read as SCHED_OTHER). */
static void shim__attrs_to_attr(struct shim_thread *st, pthread_attr_t *attr)
{
    fs__spin_lock(&shim__attr_lock);
    int policy = st->sched_policy & ~SCHED_RESET_ON_FORK;
    struct sched_param p = st->sched_param;
    cpu_set_t aff = st->affinity;
    bool explicit_sched = st->explicit_sched;
    fs__spin_unlock(&shim__attr_lock);
    pthread_attr_setinheritsched(attr, explicit_sched ? PTHREAD_EXPLICIT_SCHED
                                                      : PTHREAD_INHERIT_SCHED);
    if (pthread_attr_setschedpolicy(attr, policy) == 0)
        pthread_attr_setschedparam(attr, &p);
    pthread_attr_setaffinity_np(attr, sizeof aff, &aff);
}

int shim__pthread_getattr_np(pthread_t t, pthread_attr_t *attr)
{
    int err;
    struct shim_thread *st = shim__thread_get(t, &err);
    if (!st || st->real_id) {
        if (st)
            shim__thread_put(st); /* glibc knows the main thread's stack */
        return err ? err : REAL(pthread_getattr_np)(t, attr);
    }
    int rc = pthread_attr_init(attr);
    if (rc) {
        shim__thread_put(st);
        return rc;
    }
    void *lo;
    size_t size;
    fs_fiber_stack(st->fiber, &lo, &size);
    pthread_attr_setstack(attr, lo, size);
    pthread_attr_setguardsize(attr, fs_fiber_stack_guard(st->fiber));
    pthread_attr_setdetachstate(attr, (atomic_load(&st->word) & SHIM_H_MASK) == SHIM_H_DETACHED
                                          ? PTHREAD_CREATE_DETACHED
                                          : PTHREAD_CREATE_JOINABLE);
    shim__attrs_to_attr(st, attr);
    shim__thread_put(st);
    return 0;
}
SHIM_ALIAS(pthread_getattr_np)

/* Stores a thread's name (the first 15 bytes of name), and gives it to
 * the fiber for dumps. */
static void shim__name_store(struct shim_thread *st, const char *name)
{
    fs__spin_lock(&shim__attr_lock);
    memset(st->name, 0, sizeof st->name);
    memcpy(st->name, name, strnlen(name, sizeof st->name - 1));
    fs__spin_unlock(&shim__attr_lock);
    if (st->fiber)
        fs_fiber_set_name(st->fiber, name);
}

int shim__pthread_setname_np(pthread_t t, const char *name)
{
    if (strlen(name) > 15)
        return ERANGE;
    int err;
    struct shim_thread *st = shim__thread_get(t, &err);
    if (!st)
        return err ? ENOENT : REAL(pthread_setname_np)(t, name);
    int rc = 0;
    if (atomic_load(&st->ended))
        rc = ENOENT; /* glibc finds no /proc/self/task/<tid>/comm */
    else if (st->real_id)
        rc = REAL(pthread_setname_np)(st->real_id, name); /* see shim__prctl */
    if (!rc)
        shim__name_store(st, name);
    shim__thread_put(st);
    return rc;
}
SHIM_ALIAS(pthread_setname_np)

int shim__pthread_getname_np(pthread_t t, char *buf, size_t len)
{
    if (len < 16)
        return ERANGE; /* glibc: whatever the name's length */
    int err;
    struct shim_thread *st = shim__thread_get(t, &err);
    if (!st)
        return err ? ENOENT : REAL(pthread_getname_np)(t, buf, len);
    int rc = 0;
    if (atomic_load(&st->ended)) {
        rc = ENOENT;
    } else if (st->real_id) {
        rc = REAL(pthread_getname_np)(st->real_id, buf, len);
    } else {
        fs__spin_lock(&shim__attr_lock);
        memcpy(buf, st->name, sizeof st->name);
        fs__spin_unlock(&shim__attr_lock);
    }
    shim__thread_put(st);
    return rc;
}
SHIM_ALIAS(pthread_getname_np)

/*
 * prctl(PR_SET_NAME) and prctl(PR_GET_NAME) name the calling thread: for
 * a fiber, its stored name (PR_SET_NAME keeps the first 15 bytes, as the
 * kernel does; PR_GET_NAME writes all 16). The adopted main thread still
 * owns its kernel thread's name, which is the process's in ps and top: for
 * it the kernel answers, through its own glibc id when it runs on another
 * carrier. Every other option, and every call off a fiber, goes to the C
 * library untouched. prctl is variadic: the four further arguments are
 * read whatever the option, as glibc's own wrapper reads them.
 */
int shim__prctl(int option, ...)
{
    va_list ap;
    va_start(ap, option);
    unsigned long a2 = va_arg(ap, unsigned long), a3 = va_arg(ap, unsigned long);
    unsigned long a4 = va_arg(ap, unsigned long), a5 = va_arg(ap, unsigned long);
    va_end(ap);
    struct shim_thread *st;
    if ((option != PR_SET_NAME && option != PR_GET_NAME) || !(st = shim__cur()))
        return REAL(prctl)(option, a2, a3, a4, a5);
    char name[16] = {0};
    if (!a2) {
        errno = EFAULT; /* the kernel's answer; any other bad pointer faults here */
        return -1;
    }
    if (option == PR_SET_NAME) {
        memcpy(name, (const char *)a2, strnlen((const char *)a2, sizeof name - 1));
        if (st->real_id) {
            int rc = REAL(pthread_self)() == st->real_id
                         ? REAL(prctl)(option, a2, a3, a4, a5)
                         : (errno = REAL(pthread_setname_np)(st->real_id, name)) ? -1 : 0;
            if (rc)
                return rc;
        }
        shim__name_store(st, name);
        return 0;
    }
    if (st->real_id) {
        if (REAL(pthread_self)() == st->real_id)
            return REAL(prctl)(option, a2, a3, a4, a5);
        int rc = REAL(pthread_getname_np)(st->real_id, name, sizeof name);
        if (rc) {
            errno = rc;
            return -1;
        }
    } else {
        fs__spin_lock(&shim__attr_lock);
        memcpy(name, st->name, sizeof name);
        fs__spin_unlock(&shim__attr_lock);
    }
    memcpy((char *)a2, name, sizeof name);
    return 0;
}
SHIM_ALIAS(prctl)

/* Scheduling policy and priority: stored, checked as the kernel checks
 * them (shim__sched_check), never applied (see the header comment). */
int shim__pthread_setschedparam(pthread_t t, int policy, const struct sched_param *p)
{
    int err;
    struct shim_thread *st = shim__thread_get(t, &err);
    if (!st)
        return err ? err : REAL(pthread_setschedparam)(t, policy, p);
    struct shim_sched_priv pv;
    shim__sched_priv_read(&pv);
    fs__spin_lock(&shim__attr_lock);
    int rc = atomic_load(&st->ended) ? ESRCH
                                      : shim__sched_check(&pv, st->sched_policy,
                                                          st->sched_param.sched_priority, policy,
                                                          p->sched_priority);
    if (!rc) {
        st->sched_policy = policy;
        st->sched_param = *p;
    }
    fs__spin_unlock(&shim__attr_lock);
    shim__thread_put(st);
    return rc;
}
SHIM_ALIAS(pthread_setschedparam)

int shim__pthread_getschedparam(pthread_t t, int *policy, struct sched_param *p)
{
    int err;
    struct shim_thread *st = shim__thread_get(t, &err);
    if (!st)
        return err ? err : REAL(pthread_getschedparam)(t, policy, p);
    int rc = atomic_load(&st->ended) ? ESRCH : 0;
    if (!rc) {
        fs__spin_lock(&shim__attr_lock);
        *policy = st->sched_policy;
        *p = st->sched_param;
        fs__spin_unlock(&shim__attr_lock);
    }
    shim__thread_put(st);
    return rc;
}
SHIM_ALIAS(pthread_getschedparam)

/* sched_setparam(2): the policy stays, the priority is checked against it. */
int shim__pthread_setschedprio(pthread_t t, int prio)
{
    int err;
    struct shim_thread *st = shim__thread_get(t, &err);
    if (!st)
        return err ? err : REAL(pthread_setschedprio)(t, prio);
    struct shim_sched_priv pv;
    shim__sched_priv_read(&pv);
    fs__spin_lock(&shim__attr_lock);
    int rc = atomic_load(&st->ended)
                 ? ESRCH
                 : shim__sched_check(&pv, st->sched_policy, st->sched_param.sched_priority,
                                     st->sched_policy, prio);
    if (!rc)
        st->sched_param.sched_priority = prio;
    fs__spin_unlock(&shim__attr_lock);
    shim__thread_put(st);
    return rc;
}
SHIM_ALIAS(pthread_setschedprio)

/* Affinity: the mask the kernel would give the thread, stored and
 * reported; the fiber runs wherever its carrier does. */
int shim__pthread_setaffinity_np(pthread_t t, size_t size, const cpu_set_t *set)
{
    int err;
    struct shim_thread *st = shim__thread_get(t, &err);
    if (!st)
        return err ? err : REAL(pthread_setaffinity_np)(t, size, set);
    cpu_set_t eff;
    int rc = atomic_load(&st->ended) ? ESRCH : shim__affinity_check(size, set, &eff);
    if (!rc) {
        fs__spin_lock(&shim__attr_lock);
        st->affinity = eff;
        fs__spin_unlock(&shim__attr_lock);
    }
    shim__thread_put(st);
    return rc;
}
SHIM_ALIAS(pthread_setaffinity_np)

int shim__pthread_getaffinity_np(pthread_t t, size_t size, cpu_set_t *set)
{
    int err;
    struct shim_thread *st = shim__thread_get(t, &err);
    if (!st)
        return err ? err : REAL(pthread_getaffinity_np)(t, size, set);
    int rc = 0, e = errno;
    if (atomic_load(&st->ended))
        rc = ESRCH;
    else if (sched_getaffinity(0, size, set) != 0) /* the kernel's checks of size */
        rc = errno;
    errno = e;
    if (!rc) {
        memset(set, 0, size);
        fs__spin_lock(&shim__attr_lock);
        memcpy(set, &st->affinity, size < sizeof st->affinity ? size : sizeof st->affinity);
        fs__spin_unlock(&shim__attr_lock);
    }
    shim__thread_put(st);
    return rc;
}
SHIM_ALIAS(pthread_getaffinity_np)

/* ---- CPU-time clocks ------------------------------------------------------- */

/*
 * A fiber's CPU-time clock id is ((~v) << 3) | 7, v = index << 6 |
 * generation % 64 (v < 2^28, so the id is negative, as the kernel's are).
 * The kernel's CPU clock ids are ((~pid) << 3) | type, type 0..2, plus 4
 * for a thread's (6: its CPU time), and 3 marks a clock of an fd; it
 * refuses 7 with EINVAL, so these ids can never name a clock of its own.
 */
#define SHIM_CPUCLOCK_TYPE 7

static clockid_t shim__cpuclock_id(struct shim_thread *st)
{
    uint32_t v = st->index << 6 | ((uint32_t)(atomic_load(&st->word) >> 32) & 63);
    return (clockid_t)(~v << 3 | SHIM_CPUCLOCK_TYPE);
}

/* The CPU time of st's thread: its fiber's (see fs_fiber_cpu_ns), plus what
 * it used before it was a fiber (the adopted main thread). */
static void shim__cpu_time(struct shim_thread *st, struct timespec *ts)
{
    fs_fiber *f = st->fiber; /* NULL for the instant before fs_spawn stores it */
    int64_t ns = (f ? fs_fiber_cpu_ns(f) : 0) + st->cpu_offset_ns;
    if (ns < 0)
        ns = 0;
    ts->tv_sec = ns / 1000000000;
    ts->tv_nsec = ns % 1000000000;
}

/* clock_gettime(CLOCK_THREAD_CPUTIME_ID) for time.c: 0 with the calling
 * fiber's CPU time, or -1 off a fiber (the kernel answers). */
int shim__cpuclock_self(struct timespec *ts)
{
    struct shim_thread *st = shim__cur();
    if (!st)
        return -1;
    shim__cpu_time(st, ts);
    return 0;
}

/* clock_gettime on a clock id from pthread_getcpuclockid, for time.c:
 * 0 with that fiber's CPU time, EINVAL once its thread has ended (as the
 * kernel answers for a thread's clock), or -1 for an id that is not a
 * fiber's (the kernel answers). Any thread. */
int shim__cpuclock_gettime(clockid_t clock, struct timespec *ts)
{
    if (clock >= 0 || (clock & 7) != SHIM_CPUCLOCK_TYPE)
        return -1;
    uint32_t v = ~(uint32_t)clock >> 3;
    uint32_t i = v >> 6;
    if (i >= atomic_load_explicit(&shim__nrecords, memory_order_acquire))
        return EINVAL;
    /* As shim__thread_get, with 6 bits of generation. */
    struct shim_thread *st =
        &atomic_load_explicit(&shim__slabs[i / SHIM_SLAB], memory_order_acquire)[i % SHIM_SLAB];
    int r = atomic_load(&st->refs);
    do {
        if (r == 0)
            return EINVAL;
    } while (!atomic_compare_exchange_weak(&st->refs, &r, r + 1));
    uint64_t w = atomic_load(&st->word);
    int rc = ((w >> 32) & 63) != (v & 63) || !(w & SHIM_LIVE) || atomic_load(&st->ended) ? EINVAL : 0;
    if (!rc)
        shim__cpu_time(st, ts);
    shim__thread_put(st);
    return rc;
}

int shim__pthread_getcpuclockid(pthread_t t, clockid_t *clock)
{
    int err;
    struct shim_thread *st = shim__thread_get(t, &err);
    if (!st)
        return err ? err : REAL(pthread_getcpuclockid)(t, clock);
    int rc = atomic_load(&st->ended) ? ESRCH : 0;
    if (!rc)
        *clock = shim__cpuclock_id(st);
    shim__thread_put(st);
    return rc;
}
SHIM_ALIAS(pthread_getcpuclockid)

/* ---- cancellation (cancel.c) ------------------------------------------------ */

int shim__pthread_cancel(pthread_t t)
{
    int err;
    struct shim_thread *st = shim__thread_get(t, &err);
    if (!st)
        return err ? 0 : REAL(pthread_cancel)(t); /* glibc: 0 for an ended thread */
    /* The adopted main thread too: its kernel thread is a carrier. The
     * reference keeps the fiber alive while it is interrupted. */
    if (!atomic_load(&st->ended))
        shim__cancel_post(st->fiber);
    shim__thread_put(st);
    return 0;
}
SHIM_ALIAS(pthread_cancel)

/* ---- thread-specific data ------------------------------------------------- */

int shim__pthread_key_create(pthread_key_t *key, void (*dtor)(void *))
{
    fs__spin_lock(&shim__keys_lock);
    for (unsigned k = 0; k < PTHREAD_KEYS_MAX; k++) {
        uintptr_t seq = atomic_load(&shim__keys[k].seq);
        if (seq & 1)
            continue;
        if (seq + 1 < seq)
            continue; /* generation space used up: never reuse this key */
        shim__keys[k].dtor = dtor;
        atomic_store(&shim__keys[k].seq, seq + 1);
        fs__spin_unlock(&shim__keys_lock);
        *key = k;
        return 0;
    }
    fs__spin_unlock(&shim__keys_lock);
    return EAGAIN;
}
SHIM_ALIAS(pthread_key_create)

int shim__pthread_key_delete(pthread_key_t key)
{
    if (key >= PTHREAD_KEYS_MAX)
        return EINVAL;
    fs__spin_lock(&shim__keys_lock);
    uintptr_t seq = atomic_load(&shim__keys[key].seq);
    if (!(seq & 1)) {
        fs__spin_unlock(&shim__keys_lock);
        return EINVAL;
    }
    atomic_store(&shim__keys[key].seq, seq + 1);
    fs__spin_unlock(&shim__keys_lock);
    return 0;
}
SHIM_ALIAS(pthread_key_delete)

static void shim__plain_key_init(void)
{
    REAL(pthread_key_create)(&shim__plain_key, shim__plain_tsd_dtor);
}

static void shim__plain_tsd_dtor(void *p)
{
    struct shim_tsd *tsd = p;
    shim__tsd_run_dtors(tsd);
    for (int i = 0; i < SHIM_TSD_BLOCKS; i++)
        free(tsd->block[i]);
    free(tsd);
    shim__tls_tsd = NULL;
}

/* The TSD of the caller; with create, allocates what is missing. */
static struct shim_tsd *shim__tsd(bool create)
{
    struct shim_thread *st = shim__cur();
    if (st)
        return &st->tsd;
    if (!shim__tls_tsd && create) {
        REAL(pthread_once)(&shim__plain_once, shim__plain_key_init);
        shim__tls_tsd = calloc(1, sizeof *shim__tls_tsd);
        if (shim__tls_tsd)
            REAL(pthread_setspecific)(shim__plain_key, shim__tls_tsd);
    }
    return shim__tls_tsd;
}

void *shim__pthread_getspecific(pthread_key_t key)
{
    if (key >= PTHREAD_KEYS_MAX)
        return NULL;
    struct shim_tsd *tsd = shim__tsd(false);
    if (!tsd)
        return NULL;
    struct shim_tsd_slot *blk = tsd->block[key / SHIM_TSD_BLOCK];
    if (!blk)
        return NULL;
    struct shim_tsd_slot *s = &blk[key % SHIM_TSD_BLOCK];
    return s->seq == atomic_load_explicit(&shim__keys[key].seq, memory_order_relaxed) ? s->value
                                                                                    : NULL;
}
SHIM_ALIAS(pthread_getspecific)

int shim__pthread_setspecific(pthread_key_t key, const void *value)
{
    if (key >= PTHREAD_KEYS_MAX)
        return EINVAL;
    uintptr_t seq = atomic_load_explicit(&shim__keys[key].seq, memory_order_relaxed);
    if (!(seq & 1))
        return EINVAL;
    struct shim_tsd *tsd = shim__tsd(true);
    if (!tsd)
        return ENOMEM;
    struct shim_tsd_slot **blk = &tsd->block[key / SHIM_TSD_BLOCK];
    if (!*blk && !(*blk = calloc(SHIM_TSD_BLOCK, sizeof **blk)))
        return ENOMEM;
    (*blk)[key % SHIM_TSD_BLOCK].seq = seq;
    (*blk)[key % SHIM_TSD_BLOCK].value = (void *)value;
    return 0;
}
SHIM_ALIAS(pthread_setspecific)

/* fork child: the forking fiber (or plain thread) is the only thread. */
void shim__thread_atfork_child(void)
{
    struct shim_thread *st = shim__cur();
    atomic_store(&shim__threads_alive, st ? 1 : 0);
    /* The child's only thread is new to the kernel: its CPU time starts
     * at 0, as a forked thread's does. */
    if (st)
        st->cpu_offset_ns = -fs_fiber_cpu_ns(st->fiber);
}

/* For signal.c: the fiber behind a pthread_t of the shim, or NULL (a
 * real thread, or a thread of the shim whose record was released: see
 * shim__kill_ended). The adopted thread counts as real: it has a
 * kernel thread of its own to signal... except that other fibers may be
 * running on it, so it is treated as a fiber too. The fiber is not
 * pinned: a detached thread may end, and its fiber be freed, as the
 * caller uses it (the program's race, as with glibc). */
fs_fiber *shim__fiber_of(pthread_t t)
{
    int err;
    struct shim_thread *st = shim__thread_get(t, &err);
    if (!st)
        return NULL;
    fs_fiber *f = st->fiber;
    shim__thread_put(st);
    return f;
}

/* For signal.c: the fiber of a running thread of the shim, for calls that
 * glibc refuses with ESRCH once the thread ended (pthread_sigqueue).
 * Returns 0 with *f set, ESRCH when t names a thread of the shim that has
 * ended or whose record was released, -1 when t is a glibc thread. The
 * fiber is not pinned (see shim__fiber_of). */
int shim__fiber_running(pthread_t t, fs_fiber **f)
{
    int err;
    struct shim_thread *st = shim__thread_get(t, &err);
    if (!st)
        return err ? err : -1;
    bool ended = atomic_load(&st->ended);
    *f = st->fiber;
    shim__thread_put(st);
    return ended || !*f ? ESRCH : 0;
}

/* For signal.c: pthread_kill(t, sig) when t names a thread of the shim
 * that has ended (joined or not), answered as glibc answers for an exited
 * thread: EINVAL for the signals it keeps for itself (SIGCANCEL,
 * SIGSETXID), else 0 and nothing sent. -1: t is a glibc thread or a
 * running thread of the shim. */
int shim__kill_ended(pthread_t t, int sig)
{
    int err;
    struct shim_thread *st = shim__thread_get(t, &err);
    if (st) {
        bool ended = atomic_load(&st->ended);
        shim__thread_put(st);
        if (!ended)
            return -1;
    } else if (!err) {
        return -1;
    }
    return sig == __SIGRTMIN || sig == __SIGRTMIN + 1 ? EINVAL : 0;
}

/* For signal.c: calls fn(fiber, its signal state, arg) for every thread
 * of the shim that runs and has a fiber, in creation order of their
 * records, each while holding a reference (its fiber is not freed during
 * the call), until fn returns true. Returns whether one did. Any thread. */
bool shim__threads_each(bool (*fn)(fs_fiber *f, struct shim_sigstate *ss, void *arg), void *arg)
{
    uint32_t n = atomic_load_explicit(&shim__nrecords, memory_order_acquire);
    for (uint32_t i = 0; i < n; i++) {
        struct shim_thread *st =
            &atomic_load_explicit(&shim__slabs[i / SHIM_SLAB], memory_order_acquire)[i % SHIM_SLAB];
        int r = atomic_load(&st->refs);
        do {
            if (r == 0)
                break;
        } while (!atomic_compare_exchange_weak(&st->refs, &r, r + 1));
        if (r == 0)
            continue;
        bool hit = false;
        if ((atomic_load(&st->word) & SHIM_LIVE) && !atomic_load(&st->ended) && st->fiber)
            hit = fn(st->fiber, &st->sig, arg);
        shim__thread_put(st);
        if (hit)
            return true;
    }
    return false;
}
