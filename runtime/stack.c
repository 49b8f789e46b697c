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
 * so every stack has its own guard page directly below it, and the top
 * (first touched) page of every stack is a distinct page. Slots are carved
 * in address order by a bump counter ("carved"); arenas are never unmapped,
 * which is what lets fs__stack_is_guard() read them without a lock.
 *
 * Why MAP_NORESERVE: a million default stacks need ~260 GiB of address
 * space. Under vm.overcommit_memory = 0 the kernel refuses a single private
 * writable mapping larger than RAM + swap unless it is MAP_NORESERVE (which
 * skips commit accounting); only touched pages ever cost memory. Under mode
 * 2 the flag is ignored and large reservations fail, so a failed mmap is
 * retried with halved lengths down to a single slot before -EAGAIN.
 *
 * Arena growth. A class's first arena is 64 MiB, each next one twice the
 * previous, capped at 64 GiB: a program with a few fibers reserves little,
 * and a million stacks take about 13 arenas. Adjacent arenas usually merge
 * into one VMA, so /proc/self/maps stays short.
 *
 * Guards. MADV_GUARD_INSTALL (Linux 6.13+) writes guard markers into the
 * page tables without changing the VMA, so a million guards cost no VMAs.
 * If the kernel rejects it with EINVAL we fall back to mprotect(PROT_NONE),
 * which splits the arena VMA around every guard: two VMAs per stack, so
 * vm.max_map_count (default 65530) caps the fallback at roughly 32,000
 * live stacks; past that mprotect fails with ENOMEM and alloc returns
 * -EAGAIN. FIBERSHIM_STACK_GUARD=mprotect forces the fallback (for testing
 * it, or for tools that do not understand guard markers).
 *
 * Size classes. Requests are rounded up to whole pages (at least
 * FS_MIN_STACK_SIZE); each distinct rounded size is a class with its own
 * arenas and LIFO free list. Sizes other than the default are rare, so the
 * table is a small array searched linearly. Once FS_STACK_EXACT_CLASSES
 * sizes exist, further new sizes are rounded up to a power of two so that
 * the table (and the arena record array) cannot be exhausted by a program
 * that asks for many odd sizes.
 *
 * Free lists. A freed stack is pushed on its class's list; the link lives
 * in the stack's top word, so freeing never allocates. Reuse is LIFO: the
 * most recently freed stack has the hottest top pages. Beyond
 * FS_STACK_CACHE_HOT cached stacks in a class, a freed stack's body (all but
 * its top page, which holds the link) is released with MADV_DONTNEED so
 * that a burst of fibers does not pin its peak memory forever.
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
/* Exact-size classes before new sizes are rounded to powers of two. */
#define FS_STACK_EXACT_CLASSES 64u
/* Largest request honoured; keeps every size computation far from overflow
 * (and is more than the address space can hold anyway). */
#define FS_STACK_SIZE_LIMIT ((size_t)1 << 46)
/* Power-of-two classes from FS_MIN_STACK_SIZE (2^14) to the limit (2^46)
 * number at most 33; the table has room for all of them on top of the
 * exact classes. */
#define FS_STACK_MAX_CLASSES (FS_STACK_EXACT_CLASSES + 40u)
/* Cached stacks per class whose memory is kept resident. */
#define FS_STACK_CACHE_HOT 1024u

enum guard_mode { GUARD_UNKNOWN, GUARD_MADV, GUARD_MPROTECT };

/* An arena record. All fields but carved are written once, before the
 * record is published by the release store to arena_count; carved only
 * grows. fs__stack_is_guard() reads them from signal handlers. */
struct arena {
    uintptr_t base;
    size_t len;
    size_t stride;     /* guard_size + stack size */
    size_t guard_size;
    size_t nslots;     /* len / stride */
    _Atomic size_t carved; /* slots handed out at least once */
};

struct size_class {
    size_t size;       /* usable bytes; 0: table slot unused */
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

static struct size_class *class_find(size_t size)
{
    for (unsigned i = 0; i < class_count; i++) {
        if (classes[i].size == size)
            return &classes[i];
    }
    return NULL;
}

static struct size_class *class_new(size_t size)
{
    if (class_count == FS_STACK_MAX_CLASSES)
        return NULL;
    struct size_class *c = &classes[class_count++];
    c->size = size;
    c->free_head = NULL;
    c->nfree = 0;
    c->arena = -1;
    c->next_len = FS_STACK_ARENA_MIN;
    return c;
}

/* The class for a page-rounded size: the exact one if it exists or may be
 * created, else the power-of-two class at or above it. Under stack_mutex. */
static struct size_class *class_get(size_t size)
{
    struct size_class *c = class_find(size);
    if (c)
        return c;
    if (class_count < FS_STACK_EXACT_CLASSES)
        return class_new(size);

    size_t pow2 = FS_MIN_STACK_SIZE;
    while (pow2 < size)
        pow2 <<= 1;
    c = class_find(pow2);
    return c ? c : class_new(pow2);
}

/* Reserves a new arena for class c and makes it c's carving arena.
 * Returns 0 or -EAGAIN. Under stack_mutex. */
static int arena_new(struct size_class *c)
{
    unsigned n = atomic_load_explicit(&arena_count, memory_order_relaxed);
    if (n == FS_STACK_MAX_ARENAS)
        return -EAGAIN;

    size_t stride = page_size + c->size;
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
    a->guard_size = page_size;
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

int fs__stack_alloc(size_t size, struct fs_stack *out)
{
    int saved_errno = errno;
    int rc = 0;
    char *lo = NULL;
    bool fresh = false;

    if (size > FS_STACK_SIZE_LIMIT)
        return -EAGAIN;
    if (size < FS_MIN_STACK_SIZE)
        size = FS_MIN_STACK_SIZE;

    stack_lock();
    stack_init_locked();
    struct size_class *c = class_get(round_pages(size));
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
    stack_unlock();

    if (rc == 0 && fresh) {
        /* On failure the slot stays carved and unused: it costs address
         * space only, and failure here means the system is out of memory
         * or mappings anyway. */
        rc = guard_install(lo - page_size, page_size);
    }
    if (rc == 0) {
        out->lo = lo;
        out->size = csize;
        out->guard = lo - page_size;
        out->guard_size = page_size;
    }
    errno = saved_errno;
    return rc;
}

void fs__stack_free(struct fs_stack *st)
{
    int saved_errno = errno;
    char *lo = st->lo;

    stack_lock();
    struct size_class *c = class_find(st->size);
    if (c && c->nfree >= FS_STACK_CACHE_HOT) {
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

bool fs__stack_is_guard(const void *addr)
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
        return off % a->stride < a->guard_size;
    }
    return false;
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
