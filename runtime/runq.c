/*
 * runq.c - the stealable ring, the owner FIFO and the inbox (see runq.h).
 */
#include "internal.h"
#include "sys.h"

void fs__spin_lock_slow(fs_spinlock *l)
{
    for (unsigned i = 0;; i++) {
        if (fs__spin_trylock(l))
            return;
        if (i < 64)
            __builtin_ia32_pause();
        else
            /* The holder may have been preempted. The raw syscall: inside
             * libfibershim.so, sched_yield() is the shim's, which would
             * switch fibers while we spin inside the runtime. */
            fs__sys0(SYS_sched_yield);
    }
}

/* ---- ring ------------------------------------------------------------- */

bool fs__ring_push(struct fs_ring *r, struct fs_fiber *f)
{
    uint32_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
    /* acquire: a thief's CAS on head must be seen before we reuse its slot */
    uint32_t h = atomic_load_explicit(&r->head, memory_order_acquire);
    if (t - h >= FS_RING_SIZE)
        return false;
    atomic_store_explicit(&r->slot[t % FS_RING_SIZE], f, memory_order_relaxed);
    /* release: publishes the slot before thieves can see the new tail */
    atomic_store_explicit(&r->tail, t + 1, memory_order_release);
    return true;
}

struct fs_fiber *fs__ring_pop(struct fs_ring *r)
{
    for (;;) {
        uint32_t h = atomic_load_explicit(&r->head, memory_order_acquire);
        uint32_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
        if (t == h)
            return NULL;
        struct fs_fiber *f = atomic_load_explicit(&r->slot[h % FS_RING_SIZE], memory_order_relaxed);
        /* Thieves race us for the head; the CAS decides who owns slot h. */
        if (atomic_compare_exchange_weak_explicit(&r->head, &h, h + 1, memory_order_release,
                                                  memory_order_relaxed))
            return f;
    }
}

struct fs_fiber *fs__ring_steal(struct fs_ring *victim, struct fs_ring *into, uint32_t *nstolen)
{
    uint32_t t0 = atomic_load_explicit(&into->tail, memory_order_relaxed);
    for (;;) {
        uint32_t h = atomic_load_explicit(&victim->head, memory_order_acquire);
        /* acquire: pairs with the owner's release of tail, so the slots
         * below tail are visible */
        uint32_t t = atomic_load_explicit(&victim->tail, memory_order_acquire);
        uint32_t n = t - h;
        n = n - n / 2; /* half, rounded up */
        if (n == 0 || n > FS_RING_SIZE / 2) {
            if (n == 0) {
                *nstolen = 0;
                return NULL;
            }
            continue; /* inconsistent snapshot (h read before a wrap); retry */
        }
        for (uint32_t i = 0; i < n; i++) {
            struct fs_fiber *f =
                atomic_load_explicit(&victim->slot[(h + i) % FS_RING_SIZE], memory_order_relaxed);
            atomic_store_explicit(&into->slot[(t0 + i) % FS_RING_SIZE], f, memory_order_relaxed);
        }
        /* The copies are only ours if head did not move meanwhile. */
        if (atomic_compare_exchange_strong_explicit(&victim->head, &h, h + n,
                                                    memory_order_acq_rel, memory_order_relaxed)) {
            /* Run the last one directly; queue the rest. */
            n--;
            struct fs_fiber *run =
                atomic_load_explicit(&into->slot[(t0 + n) % FS_RING_SIZE], memory_order_relaxed);
            if (n)
                atomic_store_explicit(&into->tail, t0 + n, memory_order_release);
            *nstolen = n + 1;
            return run;
        }
    }
}

/* ---- fifo ------------------------------------------------------------- */

void fs__fifo_push(struct fs_fifo *q, struct fs_fiber *f)
{
    f->next = NULL;
    if (q->tail)
        q->tail->next = f;
    else
        q->head = f;
    q->tail = f;
    atomic_store_explicit(&q->len, fs__fifo_len(q) + 1, memory_order_relaxed);
}

struct fs_fiber *fs__fifo_pop(struct fs_fifo *q)
{
    struct fs_fiber *f = q->head;
    if (f) {
        q->head = f->next;
        if (!q->head)
            q->tail = NULL;
        atomic_store_explicit(&q->len, fs__fifo_len(q) - 1, memory_order_relaxed);
        f->next = NULL;
    }
    return f;
}

void fs__fifo_append(struct fs_fifo *q, struct fs_fiber *first, struct fs_fiber *last, uint32_t n)
{
    last->next = NULL;
    if (q->tail)
        q->tail->next = first;
    else
        q->head = first;
    q->tail = last;
    atomic_store_explicit(&q->len, fs__fifo_len(q) + n, memory_order_relaxed);
}

/* ---- inbox ------------------------------------------------------------ */

bool fs__inbox_push(struct fs_inbox *in, struct fs_fiber *f)
{
    struct fs_fiber *top = atomic_load_explicit(&in->top, memory_order_relaxed);
    do {
        f->next = top;
        /* release: f's fields (and its saved context) are visible to the
         * owner that takes the list */
    } while (!atomic_compare_exchange_weak_explicit(&in->top, &top, f, memory_order_release,
                                                    memory_order_relaxed));
    return top == NULL;
}

uint32_t fs__inbox_drain(struct fs_inbox *in, struct fs_fifo *q)
{
    if (fs__inbox_empty(in))
        return 0;
    /* acquire: pairs with the pushers' release */
    struct fs_fiber *l = atomic_exchange_explicit(&in->top, NULL, memory_order_acquire);
    struct fs_fiber *rev = NULL, *last = l;
    uint32_t n = 0;
    while (l) { /* the stack is newest-first; reverse to arrival order */
        struct fs_fiber *nx = l->next;
        l->next = rev;
        rev = l;
        l = nx;
        n++;
    }
    if (n)
        fs__fifo_append(q, rev, last, n);
    return n;
}
