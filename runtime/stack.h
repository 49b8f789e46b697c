/*
 * stack.h - fiber stacks: lazily committed, guard page below, reused.
 *
 * Stacks are carved out of large MAP_NORESERVE reservations ("arenas"), so
 * a million stacks cost a handful of mappings, never one VMA each. The
 * guard page below each stack is installed with MADV_GUARD_INSTALL (Linux
 * 6.13+), which does not split the mapping; on older kernels it falls back
 * to mprotect(PROT_NONE), which does (and so is capped by
 * vm.max_map_count). Only touched pages are resident.
 *
 * Freed stacks go to a per-size free list and are reused LIFO (their top
 * pages are likely still resident and hot). Thread-safe.
 */
#ifndef FS_STACK_H
#define FS_STACK_H

#include <stdbool.h>
#include <stddef.h>

struct fs_stack {
    void *lo;     /* lowest usable byte (just above the guard page) */
    size_t size;  /* usable bytes; a multiple of the page size */
    void *guard;  /* the guard page(s), or NULL for a caller-owned stack */
    size_t guard_size;
};

/* Rounds size up to whole pages (at least FS_MIN_STACK_SIZE) and returns a
 * stack of at least that size. Returns 0, or -EAGAIN when no address space
 * or mapping can be had (pthread_create reports EAGAIN for that too). */
int fs__stack_alloc(size_t size, struct fs_stack *out);

/* Returns st to the free list. st must come from fs__stack_alloc. */
void fs__stack_free(struct fs_stack *st);

/* True if addr lies in the guard page of any stack handed out by
 * fs__stack_alloc (used by the SIGSEGV handler to name an overflow).
 * Async-signal-safe: takes no lock and does not allocate. */
bool fs__stack_is_guard(const void *addr);

/* Held across fork() by fork.c (see there). */
void fs__stack_fork_lock(void);
void fs__stack_fork_unlock(void);

/* Which guard mechanism is in use: "madv_guard" or "mprotect". */
const char *fs__stack_guard_kind(void);

#endif
