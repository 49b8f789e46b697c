/*
 * stack.h - fiber stacks: lazily committed, guard below, reused.
 *
 * Stacks are carved out of large MAP_NORESERVE reservations ("arenas"), so
 * a million stacks cost a handful of mappings, never one VMA each. The
 * guard below each stack is installed with MADV_GUARD_INSTALL (Linux
 * 6.13+), which does not split the mapping; on older kernels it falls back
 * to mprotect(PROT_NONE), which does (and so is capped by
 * vm.max_map_count). Only touched pages are resident.
 *
 * A guard is what pthread_attr_setguardsize asked for, rounded up to
 * pages and to at least FS_STACK_GUARD_MIN, so that a frame of up to that
 * size that jumps over the guard still faults instead of landing in the
 * stack below; a guard of 0 is none at all, as with glibc.
 *
 * Freed stacks go to a per-class free list and are reused LIFO (their top
 * pages are likely still resident and hot). Thread-safe.
 */
#ifndef FS_STACK_H
#define FS_STACK_H

#include <stdbool.h>
#include <stddef.h>

/* Smallest guard installed below a stack that has one: 64 KiB, as glibc
 * enforces on aarch64 (ARCH_MIN_GUARD_SIZE) for the same reason. Below
 * the guard lies the top of the next stack down, its most live part. */
#define FS_STACK_GUARD_MIN ((size_t)64 << 10)

struct fs_stack {
    void *lo;     /* lowest usable byte (just above the guard) */
    size_t size;  /* usable bytes; a multiple of the page size */
    void *guard;  /* lowest byte of the guard, or NULL when there is none */
    size_t guard_size; /* bytes of guard; 0: none */
};

/* Returns a stack of at least size bytes (rounded up to whole pages, at
 * least FS_MIN_STACK_SIZE) with guard bytes of guard directly below it:
 * guard is rounded up to pages and to at least FS_STACK_GUARD_MIN, and 0
 * means no guard. Returns 0, or -EAGAIN when no address space or mapping
 * can be had (pthread_create reports EAGAIN for that too). Any thread. */
int fs__stack_alloc_guard(size_t size, size_t guard, struct fs_stack *out);

/* The same, except that a guard that must be installed afresh (a newly
 * carved slot, with MADV_GUARD_INSTALL) is left to the caller: *pending
 * then says so, and fs__stack_guard_finish(out) must run before anything
 * runs deep on the stack or frees it. The fiber's first run does it, on
 * whichever carrier runs it, so that a spawner of many fibers does not
 * pay every guard's system call itself. The deferred install can fail
 * only where the kernel has no page for a page table, where the fiber's
 * first stack page could not be had either. */
int fs__stack_alloc_guard_lazy(size_t size, size_t guard, struct fs_stack *out, bool *pending);

/* Installs the guard of st that fs__stack_alloc_guard_lazy left pending.
 * Out of memory for it, panics with a message (a stack without its guard
 * would let an overflow corrupt the stack below unnoticed). Any thread. */
void fs__stack_guard_finish(const struct fs_stack *st);

/* fs__stack_alloc_guard(size, one page, out): glibc's default guard. */
int fs__stack_alloc(size_t size, struct fs_stack *out);

/* Returns st to the free list. st must come from fs__stack_alloc. */
void fs__stack_free(struct fs_stack *st);

/* If addr lies in the guard of a stack handed out by fs__stack_alloc*,
 * returns that stack's lo (the byte just above the guard), else NULL. For
 * the SIGSEGV handler, to name an overflow and whose stack it ran off.
 * Async-signal-safe: takes no lock and does not allocate. */
void *fs__stack_guard_owner(const void *addr);

/* fs__stack_guard_owner(addr) != NULL. */
bool fs__stack_is_guard(const void *addr);

/* What glibc gives a new thread with default attributes (config.c): its
 * stack size and guard size (0: none), as pthread_getattr_default_np
 * reports them. Any thread. */
void fs__thread_stack_defaults(size_t *size, size_t *guard);

/* Held across fork() by fork.c (see there). */
void fs__stack_fork_lock(void);
void fs__stack_fork_unlock(void);

/* Which guard mechanism is in use: "madv_guard" or "mprotect". */
const char *fs__stack_guard_kind(void);

#endif
