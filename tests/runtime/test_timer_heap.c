/*
 * test_timer_heap.c - the 4-ary timer heap against a sorted reference.
 *
 * The reference is a plain array of queued nodes kept sorted by deadline.
 * After every operation the heap is checked completely: the heap property,
 * every node's ->index, the queued/unqueued state of every node, and that
 * fs__timer_heap_min() has the reference's minimum deadline (ties may pick
 * a different node, so deadlines are compared, not pointers).
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "timer_heap.h"

/* xorshift64*: deterministic across libcs, unlike rand(). */
static uint64_t rng_state;

static void rng_seed(uint64_t seed)
{
    rng_state = seed ? seed : 0x9e3779b97f4a7c15ull;
}

static uint64_t rng_next(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static uint32_t rng_below(uint32_t n)
{
    return (uint32_t)(rng_next() % n);
}

struct ref {
    struct fs_timer **v; /* queued nodes, sorted by deadline */
    uint32_t len;
};

static void ref_insert(struct ref *r, struct fs_timer *t)
{
    uint32_t i = r->len;
    while (i > 0 && r->v[i - 1]->deadline > t->deadline)
        i--;
    memmove(&r->v[i + 1], &r->v[i], (r->len - i) * sizeof(*r->v));
    r->v[i] = t;
    r->len++;
}

static void ref_remove(struct ref *r, struct fs_timer *t)
{
    for (uint32_t i = 0; i < r->len; i++) {
        if (r->v[i] == t) {
            memmove(&r->v[i], &r->v[i + 1], (r->len - i - 1) * sizeof(*r->v));
            r->len--;
            return;
        }
    }
    cr_assert_fail("node %p not in the reference", (void *)t);
}

/* queued[k] mirrors whether nodes[k] should be in the heap. */
static void check(const struct fs_timer_heap *h, const struct ref *r,
                  struct fs_timer *nodes, const bool *queued, uint32_t n)
{
    cr_assert_eq(h->len, r->len);
    cr_assert_leq(h->len, h->cap);

    for (uint32_t i = 0; i < h->len; i++) {
        cr_assert_eq(h->v[i]->index, i, "slot %u holds a node with index %u", i,
                     h->v[i]->index);
        if (i > 0) {
            uint32_t parent = (i - 1) / 4;
            cr_assert_leq(h->v[parent]->deadline, h->v[i]->deadline,
                          "heap property broken at slot %u", i);
        }
    }
    for (uint32_t k = 0; k < n; k++) {
        if (queued[k]) {
            cr_assert_lt(nodes[k].index, h->len);
            cr_assert_eq(h->v[nodes[k].index], &nodes[k]);
        } else {
            cr_assert_eq(nodes[k].index, FS_TIMER_NOT_QUEUED);
        }
    }

    struct fs_timer *min = fs__timer_heap_min(h);
    if (r->len == 0) {
        cr_assert_null(min);
    } else {
        cr_assert_not_null(min);
        cr_assert_eq(min->deadline, r->v[0]->deadline);
    }
}

/* Random insert/remove/pop against the reference. deadline_range small
 * forces many equal deadlines. */
static void random_run(uint64_t seed, uint32_t n, uint32_t ops, int64_t deadline_range)
{
    struct fs_timer *nodes = calloc(n, sizeof(*nodes));
    bool *queued = calloc(n, sizeof(*queued));
    struct ref r = { .v = calloc(n, sizeof(*r.v)), .len = 0 };
    struct fs_timer_heap h;

    cr_assert(nodes && queued && r.v);
    rng_seed(seed);
    fs__timer_heap_init(&h);
    for (uint32_t k = 0; k < n; k++)
        fs__timer_init(&nodes[k]);

    for (uint32_t op = 0; op < ops; op++) {
        uint32_t what = rng_below(10);
        uint32_t k = rng_below(n);

        if (what < 5) {
            /* Insert k if free (a random deadline, possibly negative). */
            if (!queued[k]) {
                nodes[k].deadline = (int64_t)rng_below((uint32_t)deadline_range) -
                                    deadline_range / 4;
                cr_assert_eq(fs__timer_heap_insert(&h, &nodes[k]), 0);
                queued[k] = true;
                ref_insert(&r, &nodes[k]);
            }
        } else if (what < 8) {
            /* Remove k, queued or not: unqueued must be a no-op. */
            fs__timer_heap_remove(&h, &nodes[k]);
            if (queued[k]) {
                queued[k] = false;
                ref_remove(&r, &nodes[k]);
            }
        } else {
            struct fs_timer *t = fs__timer_heap_pop(&h);
            if (r.len == 0) {
                cr_assert_null(t);
            } else {
                cr_assert_not_null(t);
                cr_assert_eq(t->deadline, r.v[0]->deadline);
                cr_assert_eq(t->index, FS_TIMER_NOT_QUEUED);
                uint32_t kk = (uint32_t)(t - nodes);
                cr_assert(queued[kk]);
                queued[kk] = false;
                ref_remove(&r, t);
            }
        }
        check(&h, &r, nodes, queued, n);
    }

    /* Drain: pops come out in non-decreasing deadline order. */
    int64_t prev = INT64_MIN;
    struct fs_timer *t;
    while ((t = fs__timer_heap_pop(&h)) != NULL) {
        cr_assert_geq(t->deadline, prev);
        prev = t->deadline;
        queued[t - nodes] = false;
        ref_remove(&r, t);
    }
    check(&h, &r, nodes, queued, n);

    fs__timer_heap_destroy(&h);
    free(r.v);
    free(queued);
    free(nodes);
}

Test(timer_heap, empty)
{
    struct fs_timer_heap h;
    fs__timer_heap_init(&h);
    cr_assert_null(fs__timer_heap_min(&h));
    cr_assert_null(fs__timer_heap_pop(&h));
    fs__timer_heap_destroy(&h);
    fs__timer_heap_destroy(&h); /* idempotent: init state after destroy */
}

Test(timer_heap, single_node)
{
    struct fs_timer_heap h;
    struct fs_timer t;

    fs__timer_heap_init(&h);
    fs__timer_init(&t);
    cr_assert_eq(t.index, FS_TIMER_NOT_QUEUED);
    t.deadline = 42;
    cr_assert_eq(fs__timer_heap_insert(&h, &t), 0);
    cr_assert_eq(t.index, 0);
    cr_assert_eq(fs__timer_heap_min(&h), &t);
    cr_assert_eq(fs__timer_heap_pop(&h), &t);
    cr_assert_eq(t.index, FS_TIMER_NOT_QUEUED);
    cr_assert_null(fs__timer_heap_min(&h));

    cr_assert_eq(fs__timer_heap_insert(&h, &t), 0);
    fs__timer_heap_remove(&h, &t);
    cr_assert_eq(t.index, FS_TIMER_NOT_QUEUED);
    cr_assert_eq(h.len, 0);
    fs__timer_heap_destroy(&h);
}

Test(timer_heap, remove_unqueued_is_noop)
{
    struct fs_timer_heap h;
    struct fs_timer a, b, c;

    fs__timer_heap_init(&h);
    fs__timer_init(&a);
    fs__timer_init(&b);
    fs__timer_init(&c);

    /* Empty heap, never-queued node. */
    fs__timer_heap_remove(&h, &c);
    cr_assert_eq(c.index, FS_TIMER_NOT_QUEUED);

    a.deadline = 10;
    b.deadline = 5;
    cr_assert_eq(fs__timer_heap_insert(&h, &a), 0);
    cr_assert_eq(fs__timer_heap_insert(&h, &b), 0);

    fs__timer_heap_remove(&h, &c);
    cr_assert_eq(h.len, 2);
    cr_assert_eq(c.index, FS_TIMER_NOT_QUEUED);

    /* Twice removed: the second call must not disturb the heap. */
    fs__timer_heap_remove(&h, &b);
    fs__timer_heap_remove(&h, &b);
    cr_assert_eq(h.len, 1);
    cr_assert_eq(fs__timer_heap_min(&h), &a);
    cr_assert_eq(a.index, 0);

    /* Popped node, then removed. */
    cr_assert_eq(fs__timer_heap_pop(&h), &a);
    fs__timer_heap_remove(&h, &a);
    cr_assert_eq(h.len, 0);
    fs__timer_heap_destroy(&h);
}

Test(timer_heap, remove_node_of_other_heap_is_noop)
{
    struct fs_timer_heap h1, h2;
    struct fs_timer a, b;

    fs__timer_heap_init(&h1);
    fs__timer_heap_init(&h2);
    fs__timer_init(&a);
    fs__timer_init(&b);
    a.deadline = 1;
    b.deadline = 2;
    cr_assert_eq(fs__timer_heap_insert(&h1, &a), 0);
    cr_assert_eq(fs__timer_heap_insert(&h2, &b), 0);

    /* b sits in slot 0 of h2; h1's slot 0 holds a, not b. */
    fs__timer_heap_remove(&h1, &b);
    cr_assert_eq(h1.len, 1);
    cr_assert_eq(h2.len, 1);
    cr_assert_eq(b.index, 0);
    cr_assert_eq(fs__timer_heap_min(&h1), &a);

    fs__timer_heap_destroy(&h1);
    fs__timer_heap_destroy(&h2);
}

Test(timer_heap, equal_deadlines)
{
    enum { N = 1000 };
    static struct fs_timer nodes[N];
    struct fs_timer_heap h;
    bool seen[N] = { false };

    fs__timer_heap_init(&h);
    for (int k = 0; k < N; k++) {
        fs__timer_init(&nodes[k]);
        nodes[k].deadline = 7;
        cr_assert_eq(fs__timer_heap_insert(&h, &nodes[k]), 0);
    }
    /* Remove every third from the middle of the array. */
    for (int k = 0; k < N; k += 3) {
        fs__timer_heap_remove(&h, &nodes[k]);
        cr_assert_eq(nodes[k].index, FS_TIMER_NOT_QUEUED);
        seen[k] = true;
    }
    for (uint32_t i = 0; i < h.len; i++)
        cr_assert_eq(h.v[i]->index, i);

    struct fs_timer *t;
    int popped = 0;
    while ((t = fs__timer_heap_pop(&h)) != NULL) {
        cr_assert_eq(t->deadline, 7);
        cr_assert_eq(t->index, FS_TIMER_NOT_QUEUED);
        cr_assert_not(seen[t - nodes], "node %td popped twice", t - nodes);
        seen[t - nodes] = true;
        popped++;
    }
    cr_assert_eq(popped, N - (N + 2) / 3);
    for (int k = 0; k < N; k++)
        cr_assert(seen[k]);
    fs__timer_heap_destroy(&h);
}

Test(timer_heap, sorted_and_reverse_inserts)
{
    enum { N = 5000 };
    static struct fs_timer nodes[N];
    struct fs_timer_heap h;

    for (int pass = 0; pass < 2; pass++) {
        fs__timer_heap_init(&h);
        for (int k = 0; k < N; k++) {
            fs__timer_init(&nodes[k]);
            nodes[k].deadline = pass ? N - k : k;
            cr_assert_eq(fs__timer_heap_insert(&h, &nodes[k]), 0);
            cr_assert_eq(fs__timer_heap_min(&h)->deadline, pass ? N - k : 0);
        }
        cr_assert_geq(h.cap, (uint32_t)N);
        for (int64_t want = pass ? 1 : 0; h.len; want++) {
            struct fs_timer *t = fs__timer_heap_pop(&h);
            cr_assert_eq(t->deadline, want);
        }
        fs__timer_heap_destroy(&h);
    }
}

Test(timer_heap, extreme_deadlines)
{
    struct fs_timer_heap h;
    struct fs_timer a, b, c;

    fs__timer_heap_init(&h);
    fs__timer_init(&a);
    fs__timer_init(&b);
    fs__timer_init(&c);
    a.deadline = INT64_MAX; /* FS_NO_DEADLINE */
    b.deadline = INT64_MIN;
    c.deadline = 0;
    cr_assert_eq(fs__timer_heap_insert(&h, &a), 0);
    cr_assert_eq(fs__timer_heap_insert(&h, &b), 0);
    cr_assert_eq(fs__timer_heap_insert(&h, &c), 0);
    cr_assert_eq(fs__timer_heap_pop(&h), &b);
    cr_assert_eq(fs__timer_heap_pop(&h), &c);
    cr_assert_eq(fs__timer_heap_pop(&h), &a);
    fs__timer_heap_destroy(&h);
}

/* Small heaps exercise the root and first level; many equal deadlines. */
Test(timer_heap, random_small_many_ties)
{
    for (uint64_t seed = 1; seed <= 200; seed++)
        random_run(seed, 12, 400, 4);
}

Test(timer_heap, random_medium)
{
    for (uint64_t seed = 1000; seed < 1020; seed++)
        random_run(seed, 300, 5000, 1000);
}

Test(timer_heap, random_large)
{
    random_run(0xfeedface, 3000, 30000, 1 << 30);
}

/* Insert failing to grow the array: -ENOMEM, node unqueued, heap intact.
 * RLIMIT_AS pinned at the current size makes every further mmap/brk fail;
 * the array is big enough (512 KiB) that its growth cannot fit in slack. */
Test(timer_heap, insert_enomem_leaves_heap_intact)
{
#if defined(__SANITIZE_ADDRESS__)
    cr_skip_test("RLIMIT_AS cannot be used under AddressSanitizer");
#else
    enum { N = 1u << 16 };
    struct fs_timer *nodes = calloc(N + 1, sizeof(*nodes));
    struct fs_timer_heap h;
    struct rlimit old, tight;

    cr_assert_not_null(nodes);
    fs__timer_heap_init(&h);
    for (uint32_t k = 0; k < N; k++) {
        fs__timer_init(&nodes[k]);
        nodes[k].deadline = (int64_t)((k * 2654435761u) % 100000);
        cr_assert_eq(fs__timer_heap_insert(&h, &nodes[k]), 0);
    }
    cr_assert_eq(h.len, h.cap, "the heap should be exactly full (cap %u)", h.cap);

    long vm_pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    cr_assert_not_null(f);
    cr_assert_eq(fscanf(f, "%ld", &vm_pages), 1);
    fclose(f);

    fs__timer_init(&nodes[N]);
    nodes[N].deadline = -1;
    cr_assert_eq(getrlimit(RLIMIT_AS, &old), 0);
    tight = old;
    tight.rlim_cur = (rlim_t)vm_pages * 4096;
    cr_assert_eq(setrlimit(RLIMIT_AS, &tight), 0);
    int rc = fs__timer_heap_insert(&h, &nodes[N]);
    cr_assert_eq(setrlimit(RLIMIT_AS, &old), 0);

    cr_assert_eq(rc, -ENOMEM);
    cr_assert_eq(nodes[N].index, FS_TIMER_NOT_QUEUED);
    cr_assert_eq(h.len, (uint32_t)N);
    int64_t prev = INT64_MIN;
    for (uint32_t i = 0; i < N; i++) {
        struct fs_timer *t = fs__timer_heap_pop(&h);
        cr_assert_not_null(t);
        cr_assert_geq(t->deadline, prev);
        prev = t->deadline;
    }
    /* And growth works again once memory is back. */
    cr_assert_eq(fs__timer_heap_insert(&h, &nodes[N]), 0);
    fs__timer_heap_destroy(&h);
    free(nodes);
#endif
}
