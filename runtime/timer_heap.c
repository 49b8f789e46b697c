/*
 * timer_heap.c - a 4-ary min-heap of struct fs_timer pointers.
 *
 * Why 4-ary: a timer heap is mostly "insert somewhere, pop the minimum".
 * A 4-ary heap is half as deep as a binary one, so sift-up (insert, the
 * common operation) touches half as many cache lines, while sift-down
 * compares four siblings that sit in one or two adjacent cache lines.
 *
 * Layout: v[0] is the root; the children of slot i are 4i+1 .. 4i+4 and
 * its parent is (i-1)/4. Every node records its own slot in ->index, which
 * is what makes remove (cancel a timed park) O(log n) without a search.
 * An unqueued node has index FS_TIMER_NOT_QUEUED (UINT32_MAX), so the heap
 * holds at most UINT32_MAX - 1 nodes.
 *
 * Equal deadlines are allowed; their relative order is unspecified.
 */
#include "timer_heap.h"

#include <errno.h>
#include <stdlib.h>

#define FS_HEAP_ARITY 4u
#define FS_HEAP_INITIAL_CAP 16u
/* Largest length whose slots never collide with FS_TIMER_NOT_QUEUED. */
#define FS_HEAP_MAX_LEN (UINT32_MAX - 1u)

void fs__timer_init(struct fs_timer *t)
{
    t->index = FS_TIMER_NOT_QUEUED;
}

void fs__timer_heap_init(struct fs_timer_heap *h)
{
    h->v = NULL;
    h->len = 0;
    h->cap = 0;
}

void fs__timer_heap_destroy(struct fs_timer_heap *h)
{
    free(h->v);
    fs__timer_heap_init(h);
}

/* Stores t in slot i and keeps its back-pointer in step. */
static inline void heap_set(struct fs_timer_heap *h, uint32_t i, struct fs_timer *t)
{
    h->v[i] = t;
    t->index = i;
}

/* Moves t up from slot i until its parent is not later. The hole technique
 * (shift parents down, write t once) halves the stores of swap-based code. */
static void sift_up(struct fs_timer_heap *h, uint32_t i, struct fs_timer *t)
{
    while (i > 0) {
        uint32_t parent = (i - 1) / FS_HEAP_ARITY;
        struct fs_timer *p = h->v[parent];
        /* Strict <: an equal deadline stays below, which stops early. */
        if (!(t->deadline < p->deadline))
            break;
        heap_set(h, i, p);
        i = parent;
    }
    heap_set(h, i, t);
}

/* Moves t down from slot i until no child is earlier. */
static void sift_down(struct fs_timer_heap *h, uint32_t i, struct fs_timer *t)
{
    uint32_t len = h->len;

    for (;;) {
        /* 64-bit arithmetic: 4i+1 overflows 32 bits for large i. */
        uint64_t first = (uint64_t)i * FS_HEAP_ARITY + 1;
        if (first >= len)
            break;
        uint64_t end = first + FS_HEAP_ARITY;
        if (end > len)
            end = len;

        uint32_t best = (uint32_t)first;
        for (uint32_t c = (uint32_t)first + 1; c < end; c++) {
            if (h->v[c]->deadline < h->v[best]->deadline)
                best = c;
        }
        if (!(h->v[best]->deadline < t->deadline))
            break;
        heap_set(h, i, h->v[best]);
        i = best;
    }
    heap_set(h, i, t);
}

int fs__timer_heap_reserve(struct fs_timer_heap *h, uint32_t n)
{
    if (n <= h->cap)
        return 0;
    uint64_t cap = (uint64_t)h->cap * 2 > n ? (uint64_t)h->cap * 2 : n;
    if (cap > FS_HEAP_MAX_LEN)
        cap = FS_HEAP_MAX_LEN;
    if (cap < n || cap > SIZE_MAX / sizeof(*h->v))
        return -ENOMEM;
    struct fs_timer **v = realloc(h->v, (size_t)cap * sizeof(*h->v));
    if (!v)
        return -ENOMEM;
    h->v = v;
    h->cap = (uint32_t)cap;
    return 0;
}

/* Makes room for one more node. Returns 0 or -ENOMEM (heap unchanged). */
static int heap_grow(struct fs_timer_heap *h)
{
    if (h->len < h->cap)
        return 0;
    if (h->cap >= FS_HEAP_MAX_LEN)
        return -ENOMEM;
    return fs__timer_heap_reserve(h, h->cap ? h->cap + 1 : FS_HEAP_INITIAL_CAP);
}

int fs__timer_heap_insert(struct fs_timer_heap *h, struct fs_timer *t)
{
    int rc = heap_grow(h);
    if (rc < 0)
        return rc;
    sift_up(h, h->len++, t);
    return 0;
}

/* Contract: t is queued in h (t->index < h->len and h->v[t->index] == t).
 * Fills t's slot with the last node and restores the heap property. */
static void heap_delete(struct fs_timer_heap *h, struct fs_timer *t)
{
    uint32_t i = t->index;
    struct fs_timer *last = h->v[--h->len];

    t->index = FS_TIMER_NOT_QUEUED;
    if (i == h->len)
        return; /* t was the last slot: nothing to refill */

    /* The moved node may belong above or below slot i, never both. */
    if (i > 0 && last->deadline < h->v[(i - 1) / FS_HEAP_ARITY]->deadline)
        sift_up(h, i, last);
    else
        sift_down(h, i, last);
}

void fs__timer_heap_remove(struct fs_timer_heap *h, struct fs_timer *t)
{
    /* The slot check also makes a node queued in another heap a no-op here
     * rather than corrupting this one. */
    if (t->index >= h->len || h->v[t->index] != t)
        return;
    heap_delete(h, t);
}

struct fs_timer *fs__timer_heap_pop(struct fs_timer_heap *h)
{
    if (!h->len)
        return NULL;
    struct fs_timer *t = h->v[0];
    heap_delete(h, t);
    return t;
}
