/*
 * runq.h - run queues of one carrier.
 *
 * fs_ring: the stealable queue, a bounded ring (Go's runq): the owner
 * pushes at the tail and pops at the head; thieves take half from the head
 * with a CAS. head is shared with thieves, tail is written only by the
 * owner. Only fibers that may move between carriers go here (never-run
 * fibers, or all fibers when migration is on).
 *
 * fs_fifo: an intrusive FIFO owned by one carrier, no atomics.
 *
 * fs_inbox: an intrusive multi-producer stack; the owner takes the whole
 * list at once and restores FIFO order. Fibers pinned to a carrier are
 * sent home through it by other threads.
 */
#ifndef FS_RUNQ_H
#define FS_RUNQ_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct fs_fiber;

#define FS_RING_SIZE 256u

struct fs_ring {
    _Atomic uint32_t head; /* next to pop; advanced by owner and thieves */
    _Atomic uint32_t tail; /* next free slot; advanced by owner only */
    struct fs_fiber *_Atomic slot[FS_RING_SIZE];
};

struct fs_fifo {
    struct fs_fiber *head, *tail;
    /* Written only by the queue's owner (its carrier, or the holder of
     * g.global_lock), with relaxed loads and stores, not read-modify-
     * writes; atomic because fs_carrier_stats reads it from any thread. */
    _Atomic uint32_t len;
};

struct fs_inbox {
    struct fs_fiber *_Atomic top;
};

/* Owner only. Returns false when full (caller spills to the global queue). */
bool fs__ring_push(struct fs_ring *r, struct fs_fiber *f);
/* Owner only. NULL when empty. */
struct fs_fiber *fs__ring_pop(struct fs_ring *r);
/* Any thread: moves up to half of victim's fibers into the owner's ring
 * `into` (which must be empty); returns one more to run directly, or NULL. */
struct fs_fiber *fs__ring_steal(struct fs_ring *victim, struct fs_ring *into, uint32_t *nstolen);
static inline uint32_t fs__ring_len(struct fs_ring *r)
{
    uint32_t t = atomic_load_explicit(&r->tail, memory_order_acquire);
    uint32_t h = atomic_load_explicit(&r->head, memory_order_acquire);
    return t - h;
}

static inline uint32_t fs__fifo_len(struct fs_fifo *q)
{
    return atomic_load_explicit(&q->len, memory_order_relaxed);
}

void fs__fifo_push(struct fs_fifo *q, struct fs_fiber *f);
struct fs_fiber *fs__fifo_pop(struct fs_fifo *q);
/* Appends the singly linked list first..last (n fibers) in order. */
void fs__fifo_append(struct fs_fifo *q, struct fs_fiber *first, struct fs_fiber *last, uint32_t n);

/* Any thread. Returns true if the inbox was empty before (the owner may
 * need a kick). */
bool fs__inbox_push(struct fs_inbox *in, struct fs_fiber *f);
/* Owner only: moves everything into q in arrival order; returns count. */
uint32_t fs__inbox_drain(struct fs_inbox *in, struct fs_fifo *q);
static inline bool fs__inbox_empty(struct fs_inbox *in)
{
    return atomic_load_explicit(&in->top, memory_order_acquire) == 0;
}

#endif
