/*
 * stack.c - fiber stacks carved from large lazily committed reservations.
 *
 * Layout. Address space is reserved in "arenas": one mmap each, PROT_READ |
 * PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE. An arena serves
 * exactly one size class (it is that class's slab) and is cut into equal
 * slots of stride = guard + size:
 *
 *     base                                                     base + len
 *     | guard | stack ...... | guard | stack ...... | guard | ...  |
 *
 * so every stack has its own guard directly below it, and the top (first
 * touched) page of every stack is a distinct page. Slots are carved in
 * address order by a bump counter ("carved"); arenas are never unmapped,
 * which is what lets fs__stack_guard_owner() read them without a lock.
 *
 * Guards. A stack's guard is what its thread asked for (glibc's default:
 * one page) rounded up to pages and to at least FS_STACK_GUARD_MIN (64
 * KiB); a guard of 0 is none. The minimum is for frames larger than a
 * page: code built without -fstack-clash-protection moves the stack
 * pointer past a whole frame before touching it, and a frame bigger than
 * the guard lands below it, in the top of the next stack down (its live
 * frames and its fiber struct), without a fault. glibc's separately
 * mapped stacks are adjacent too (mmap places them back to back), so
 * there a 300 KiB array below a one-page guard corrupts the neighbour the
 * same way; with 64 KiB every frame up to 64 KiB faults in the guard.
 *
 * Page tables. One page-table page maps an aligned 2 MiB. An idle fiber
 * touches only its stack's top page (its struct and first frames), and
 * the tops of two stacks of 2 MiB or more can never share a 2 MiB region
 * without the stacks overlapping: at glibc's default 8 MiB every fiber
 * costs a page-table page (4 KiB) besides its top page. Guards add almost
 * nothing to that: MADV_GUARD_INSTALL writes markers into page-table
 * entries, and a stack's guard lies directly above the top of the stack
 * below, in the page-table page that top already needs; only when a 2 MiB
 * boundary falls between the two (about (guard + top) / 2 MiB of slots)
 * does a guard need a page of its own. Measured on 100,000 slots of 8 MiB
 * with the top page touched: page tables of 4.04 KiB per slot with a 4 KiB
 * guard, 4.16 with 64 KiB, 4.53 with 256 KiB and 6.04 with 1 MiB, hence
 * the 64 KiB minimum. Stacks smaller than 2 MiB share page-table pages.
 *
 * Why MAP_NORESERVE: a million stacks of glibc's default 8 MiB need 8 TiB
 * of address space (the x86-64 user space holds 128 TiB). Under
 * vm.overcommit_memory = 0 the kernel refuses a single private writable
 * mapping larger than RAM + swap unless it is MAP_NORESERVE (which skips
 * commit accounting); only touched pages ever cost memory. Under mode 2
 * the flag is ignored and large reservations fail, so a failed mmap is
 * retried with halved lengths down to a single slot before -EAGAIN.
 *
 * Arena growth. A class's first arena is 64 MiB, each next one twice the
 * previous, capped at 64 GiB: a program with a few fibers reserves little,
 * and a million 8 MiB stacks take about 140 arenas. Adjacent arenas
 * usually merge into one VMA, so /proc/self/maps stays short.
 *
 * Guard mechanism. MADV_GUARD_INSTALL (Linux 6.13+) writes guard markers
 * into the page tables without changing the VMA, so a million guards cost
 * no VMAs.
 * If the kernel rejects it with EINVAL we fall back to mprotect(PROT_NONE),
 * which splits the arena VMA around every guard: two VMAs per stack, so
 * vm.max_map_count (default 65530) caps the fallback at roughly 32,000
 * live stacks; past that mprotect fails with ENOMEM and alloc returns
 * -EAGAIN. FIBERSHIM_STACK_GUARD=mprotect forces the fallback (for testing
 * it, or for tools that do not understand guard markers).
 *
 * Size classes. Requests are rounded up to whole pages (at least
 * FS_MIN_STACK_SIZE); each distinct pair of rounded size and guard is a
 * class with its own arenas and LIFO free list. Sizes and guards other
 * than the default are rare, so the table is a small array searched
 * linearly. Once FS_STACK_EXACT_CLASSES classes exist, further new sizes
 * and guards are rounded up to powers of two so that the table (and the
 * arena record array) cannot be exhausted by a program that asks for many
 * odd sizes.
 *
 * Free lists. A freed stack is pushed on its class's list; the link lives
 * in the stack's top word, so freeing never allocates. Reuse is LIFO: the
 * most recently freed stack has the hottest top pages. Once a class caches
 * FS_STACK_CACHE_HOT stacks, or FS_STACK_CACHE_HOT_BYTES of them, a freed
 * stack's body (all but its top page, which holds the link) is released
 * with MADV_DONTNEED so that a burst of fibers does not pin its peak memory
 * forever: a byte bound, since 1,024 cached 8 MiB stacks that each once
 * ran deep could pin 8 GiB (glibc bounds its stack cache at 40 MiB).
 *
 * Locking. One mutex covers the class table, free lists and arena creation;
 * stack_lock()/stack_unlock() are the only places that know what it is.
 * System calls that concern one stack (guard install, MADV_DONTNEED) run
 * outside it.
 */
#include "stack.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fibershim.h"
#include "spinlock.h"

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#define FS_STACK_ARENA_MIN ((size_t)64 << 20)
#define FS_STACK_ARENA_MAX ((size_t)64 << 30)
/* Records are never reused; 1024 arenas of up to 64 GiB exceed the 128 TiB
 * x86-64 user address space, so the array is never the limit in practice. */
#define FS_STACK_MAX_ARENAS 1024u
/* Exact classes before new sizes and guards are rounded to powers of two. */
#define FS_STACK_EXACT_CLASSES 64u
/* Largest request honoured; keeps every size computation far from overflow
 * (and is more than the address space can hold anyway). */
#define FS_STACK_SIZE_LIMIT ((size_t)1 << 46)
/* Power-of-two classes: sizes from FS_MIN_STACK_SIZE (2^14) to the limit
 * (2^46), 33 of them, times guards of none or 2^16 to 2^46, 32 of them,
 * number at most 33 * 32; the table has room for all of them on top of the
 * exact classes. */
#define FS_STACK_MAX_CLASSES (FS_STACK_EXACT_CLASSES + 33u * 32u)
/* Cached stacks per class whose memory is kept resident: at most this
 * many, and at most this many bytes of them. */
#define FS_STACK_CACHE_HOT 1024u
#define FS_STACK_CACHE_HOT_BYTES ((size_t)64 << 20)

enum guard_mode { GUARD_UNKNOWN, GUARD_MADV, GUARD_MPROTECT };

/* An arena record. All fields but carved are written once, before the
 * record is published by the release store to arena_count; carved only
 * grows. fs__stack_guard_owner() reads them from signal handlers. */
struct arena {
    uintptr_t base;
    size_t len;
    size_t stride;     /* guard_size + stack size */
    size_t guard_size; /* 0: the class has no guards */
    size_t nslots;     /* len / stride */
    _Atomic size_t carved; /* slots handed out at least once */
};

struct size_class {
    size_t size;       /* usable bytes; 0: table slot unused */
    size_t guard;      /* guard bytes below each stack; 0: none */
    char *free_head;   /* lo of the most recently freed stack, or NULL */
    size_t nfree;
    int arena;         /* index of the arena being carved, or -1 */
    size_t next_len;   /* length to ask for when a new arena is needed */
};

/* A spinlock, not a pthread mutex: inside libfibershim.so the pthread
 * mutex functions are the shim's fiber-aware ones, which themselves may
 * allocate stacks. Holders do bounded work (an mmap at worst). */
static fs_spinlock stack_mutex = FS_SPINLOCK_INIT;

static struct arena arenas[FS_STACK_MAX_ARENAS];
static _Atomic unsigned arena_count;

/* Under stack_mutex. */
static struct size_class classes[FS_STACK_MAX_CLASSES];
static unsigned class_count;
static size_t page_size;

/* Read without the lock by guard_install(); it only ever moves from
 * GUARD_MADV to GUARD_MPROTECT after initialisation. */
static _Atomic int guard_mode = GUARD_UNKNOWN;

static void stack_lock(void)
{
    fs__spin_lock(&stack_mutex);
}

static void stack_unlock(void)
{
    fs__spin_unlock(&stack_mutex);
}

/* Picks the guard mechanism by trying MADV_GUARD_INSTALL on a scratch
 * mapping, so that fs__stack_guard_kind() is right before the first
 * allocation. Under stack_mutex. */
static void stack_init_locked(void)
{
    if (page_size)
        return;
    long ps = sysconf(_SC_PAGESIZE);
    page_size = ps > 0 ? (size_t)ps : 4096;

    int mode = GUARD_MADV;
    const char *force = secure_getenv("FIBERSHIM_STACK_GUARD");
    if (force && strcmp(force, "mprotect") == 0) {
        mode = GUARD_MPROTECT;
    } else {
        void *p = mmap(NULL, 2 * page_size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p != MAP_FAILED) {
            if (madvise(p, page_size, MADV_GUARD_INSTALL) != 0 && errno == EINVAL)
                mode = GUARD_MPROTECT;
            munmap(p, 2 * page_size);
        }
        /* If even the probe mapping failed, stay optimistic: the first real
         * guard install repeats the test. */
    }
    atomic_store_explicit(&guard_mode, mode, memory_order_relaxed);
}

/* Makes [addr, addr + len) fault on any access. Returns 0 or -EAGAIN. */
static int guard_install(void *addr, size_t len)
{
    if (atomic_load_explicit(&guard_mode, memory_order_relaxed) == GUARD_MADV) {
        if (madvise(addr, len, MADV_GUARD_INSTALL) == 0)
            return 0;
        if (errno != EINVAL)
            return -EAGAIN; /* ENOMEM for page tables: out of memory */
        atomic_store_explicit(&guard_mode, GUARD_MPROTECT, memory_order_relaxed);
    }
    /* Splits the VMA; ENOMEM here usually means vm.max_map_count. */
    if (mprotect(addr, len, PROT_NONE) != 0)
        return -EAGAIN;
    return 0;
}

/* The word at the top of a free stack holding the next free stack's lo. */
static char **free_link(char *lo, size_t size)
{
    return (char **)(void *)(lo + size) - 1;
}

static size_t round_pages(size_t size)
{
    return (size + page_size - 1) & ~(page_size - 1);
}

static struct size_class *class_find(size_t size, size_t guard)
{
    for (unsigned i = 0; i < class_count; i++) {
        if (classes[i].size == size && classes[i].guard == guard)
            return &classes[i];
    }
    return NULL;
}

static struct size_class *class_new(size_t size, size_t guard)
{
    if (class_count == FS_STACK_MAX_CLASSES)
        return NULL;
    struct size_class *c = &classes[class_count++];
    c->size = size;
    c->guard = guard;
    c->free_head = NULL;
    c->nfree = 0;
    c->arena = -1;
    c->next_len = FS_STACK_ARENA_MIN;
    return c;
}

static size_t pow2_at_least(size_t from, size_t n)
{
    while (from < n)
        from <<= 1;
    return from;
}

/* The class for a page-rounded size and guard: the exact one if it exists
 * or may be created, else the power-of-two class at or above both (a
 * guard of 0 stays 0). Under stack_mutex. */
static struct size_class *class_get(size_t size, size_t guard)
{
    struct size_class *c = class_find(size, guard);
    if (c)
        return c;
    if (class_count < FS_STACK_EXACT_CLASSES)
        return class_new(size, guard);

    size = pow2_at_least(FS_MIN_STACK_SIZE, size);
    if (guard)
        guard = pow2_at_least(FS_STACK_GUARD_MIN, guard);
    c = class_find(size, guard);
    return c ? c : class_new(size, guard);
}

/* Reserves a new arena for class c and makes it c's carving arena.
 * Returns 0 or -EAGAIN. Under stack_mutex. */
static int arena_new(struct size_class *c)
{
    unsigned n = atomic_load_explicit(&arena_count, memory_order_relaxed);
    if (n == FS_STACK_MAX_ARENAS)
        return -EAGAIN;

    size_t stride = c->guard + c->size;
    size_t nslots = c->next_len / stride;
    if (nslots == 0)
        nslots = 1;

    void *base;
    bool shrunk = false;
    for (;;) {
        base = mmap(NULL, nslots * stride, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (base != MAP_FAILED)
            break;
        /* RLIMIT_AS, overcommit mode 2, or a fragmented address space:
         * settle for less before giving up. */
        if (nslots == 1)
            return -EAGAIN;
        nslots /= 2;
        shrunk = true;
    }
    /* Stacks must not become transparent huge pages: one touched top page
     * would otherwise cost 2 MiB. Failure (THP not built in) is harmless. */
    madvise(base, nslots * stride, MADV_NOHUGEPAGE);

    struct arena *a = &arenas[n];
    a->base = (uintptr_t)base;
    a->len = nslots * stride;
    a->stride = stride;
    a->guard_size = c->guard;
    a->nslots = nslots;
    atomic_store_explicit(&a->carved, 0, memory_order_relaxed);
    atomic_store_explicit(&arena_count, n + 1, memory_order_release);

    c->arena = (int)n;
    if (shrunk)
        c->next_len = a->len; /* do not keep asking for what just failed */
    else if (c->next_len < FS_STACK_ARENA_MAX)
        c->next_len = c->next_len * 2 < FS_STACK_ARENA_MAX ? c->next_len * 2
                                                            : FS_STACK_ARENA_MAX;
    return 0;
}

/* Takes the next never-used slot of class c; *lo is its stack's lowest
 * byte. The guard is not installed yet. Returns 0 or -EAGAIN. Under
 * stack_mutex. */
static int class_carve(struct size_class *c, char **lo)
{
    struct arena *a = c->arena >= 0 ? &arenas[c->arena] : NULL;
    if (!a || atomic_load_explicit(&a->carved, memory_order_relaxed) == a->nslots) {
        int rc = arena_new(c);
        if (rc < 0)
            return rc;
        a = &arenas[c->arena];
    }
    size_t slot = atomic_load_explicit(&a->carved, memory_order_relaxed);
    *lo = (char *)a->base + slot * a->stride + a->guard_size;
    /* Published before the guard exists: fs__stack_is_guard() may then say
     * "guard" for a page nobody can have faulted on yet, which is harmless,
     * and the guard syscall can run outside the lock. */
    atomic_store_explicit(&a->carved, slot + 1, memory_order_release);
    return 0;
}

int fs__stack_alloc_guard(size_t size, size_t guard, struct fs_stack *out)
{
    return fs__stack_alloc_guard_lazy(size, guard, out, NULL);
}

int fs__stack_alloc_guard_lazy(size_t size, size_t guard, struct fs_stack *out, bool *pending)
{
    int saved_errno = errno;
    int rc = 0;
    char *lo = NULL;
    bool fresh = false;

    /* As glibc's mmap of size + guard would fail: no address space. */
    if (size > FS_STACK_SIZE_LIMIT || guard > FS_STACK_SIZE_LIMIT)
        return -EAGAIN;
    if (size < FS_MIN_STACK_SIZE)
        size = FS_MIN_STACK_SIZE;
    if (guard && guard < FS_STACK_GUARD_MIN)
        guard = FS_STACK_GUARD_MIN;

    stack_lock();
    stack_init_locked();
    struct size_class *c = class_get(round_pages(size), round_pages(guard));
    if (!c) {
        rc = -EAGAIN;
    } else if (c->free_head) {
        lo = c->free_head;
        c->free_head = *free_link(lo, c->size);
        c->nfree--;
    } else {
        rc = class_carve(c, &lo);
        fresh = true;
    }
    size_t csize = c ? c->size : 0;
    size_t cguard = c ? c->guard : 0;
    stack_unlock();

    if (pending)
        *pending = false;
    if (rc == 0 && fresh && cguard) {
        if (pending && atomic_load_explicit(&guard_mode, memory_order_relaxed) == GUARD_MADV) {
            /* mprotect's guards stay eager: they fail for want of
             * mappings (vm.max_map_count), which pthread_create must
             * report as EAGAIN. */
            *pending = true;
        } else {
            /* On failure the slot stays carved and unused: it costs
             * address space only, and failure here means the system is
             * out of memory or mappings anyway. */
            rc = guard_install(lo - cguard, cguard);
        }
    }
    if (rc == 0) {
        out->lo = lo;
        out->size = csize;
        out->guard = cguard ? lo - cguard : NULL;
        out->guard_size = cguard;
    }
    errno = saved_errno;
    return rc;
}

void fs__stack_guard_finish(const struct fs_stack *st)
{
    int saved_errno = errno;
    if (guard_install(st->guard, st->guard_size) != 0) {
        static const char msg[] = "fibershim: out of memory installing a thread's stack guard\n";
        (void)!write(2, msg, sizeof msg - 1);
        abort();
    }
    errno = saved_errno;
}

int fs__stack_alloc(size_t size, struct fs_stack *out)
{
    return fs__stack_alloc_guard(size, 1, out); /* rounds up to the minimum */
}

void fs__stack_free(struct fs_stack *st)
{
    int saved_errno = errno;
    char *lo = st->lo;

    stack_lock();
    struct size_class *c = class_find(st->size, st->guard_size);
    if (c && (c->nfree >= FS_STACK_CACHE_HOT ||
              (c->nfree + 1) * c->size > FS_STACK_CACHE_HOT_BYTES)) {
        /* Enough resident stacks cached: give this one's memory back. Done
         * before the push, since once on the list another thread may take
         * it; and outside the lock, since zapping can take a while. The top
         * page stays: it holds the free-list link and is the page a new
         * fiber touches first. */
        stack_unlock();
        madvise(lo, st->size - page_size, MADV_DONTNEED);
        stack_lock();
    }
    if (c) {
        *free_link(lo, c->size) = c->free_head;
        c->free_head = lo;
        c->nfree++;
    }
    stack_unlock();
    errno = saved_errno;
}

void *fs__stack_guard_owner(const void *addr)
{
    uintptr_t p = (uintptr_t)addr;
    unsigned n = atomic_load_explicit(&arena_count, memory_order_acquire);

    for (unsigned i = 0; i < n; i++) {
        const struct arena *a = &arenas[i];
        if (p < a->base)
            continue;
        uintptr_t off = p - a->base;
        size_t carved = atomic_load_explicit(&a->carved, memory_order_acquire);
        if (off >= carved * a->stride)
            continue; /* beyond the carved slots, or another mapping */
        if (off % a->stride >= a->guard_size)
            return NULL; /* inside a stack */
        return (void *)(a->base + off - off % a->stride + a->guard_size);
    }
    return NULL;
}

bool fs__stack_is_guard(const void *addr)
{
    return fs__stack_guard_owner(addr) != NULL;
}

const char *fs__stack_guard_kind(void)
{
    int saved_errno = errno; /* the first call probes the kernel */

    stack_lock();
    stack_init_locked();
    stack_unlock();
    errno = saved_errno;
    return atomic_load_explicit(&guard_mode, memory_order_relaxed) == GUARD_MADV
               ? "madv_guard"
               : "mprotect";
}

/* fork(): the allocator's lock is taken before the fork and released in
 * both processes, so the child never inherits it held by a thread that no
 * longer exists there. */
void fs__stack_fork_lock(void)
{
    stack_lock();
}

void fs__stack_fork_unlock(void)
{
    stack_unlock();
}
