/*
 * timer_heap.h - a 4-ary min-heap of deadlines.
 *
 * One heap per carrier scheduler. Nodes are embedded in their owners (a
 * fiber embeds the node for its current timed park), so insert and cancel
 * never allocate except to grow the pointer array. The heap does no
 * locking: the owner serialises access (see sched.c for which lock).
 *
 * Complexities: insert O(log n), remove O(log n), min O(1), pop O(log n).
 */
#ifndef FS_TIMER_HEAP_H
#define FS_TIMER_HEAP_H

#include <stdint.h>

#define FS_TIMER_NOT_QUEUED UINT32_MAX

struct fs_timer {
    int64_t deadline; /* fs_now() nanoseconds */
    uint32_t index;   /* slot in the heap array, or FS_TIMER_NOT_QUEUED */
};

struct fs_timer_heap {
    struct fs_timer **v; /* v[0] is the earliest deadline */
    uint32_t len;
    uint32_t cap;
};

/* Sets t to "not queued". Call once before first use. */
void fs__timer_init(struct fs_timer *t);

void fs__timer_heap_init(struct fs_timer_heap *h);
/* Frees the array. Queued nodes are left marked queued: the owner's problem. */
void fs__timer_heap_destroy(struct fs_timer_heap *h);

/* Queues t (which must not be queued) with t->deadline already set.
 * Returns 0, or -ENOMEM when the array cannot grow (t stays unqueued). */
int fs__timer_heap_insert(struct fs_timer_heap *h, struct fs_timer *t);

/* Makes room for n nodes in all, so that inserts up to n cannot fail.
 * Returns 0 or -ENOMEM (heap unchanged). */
int fs__timer_heap_reserve(struct fs_timer_heap *h, uint32_t n);

/* Removes t if queued; no-op otherwise. */
void fs__timer_heap_remove(struct fs_timer_heap *h, struct fs_timer *t);

/* The earliest node, or NULL when empty. */
static inline struct fs_timer *fs__timer_heap_min(const struct fs_timer_heap *h)
{
    return h->len ? h->v[0] : 0;
}

/* Removes and returns the earliest node, or NULL when empty. */
struct fs_timer *fs__timer_heap_pop(struct fs_timer_heap *h);

#endif
