/*
 * test_stack.c - fiber stack allocator: sizes, reuse, guards, threads,
 * mapping count, memory return, and large reservations; and the stacks
 * fs_spawn gives fibers: glibc's default size, the guard asked for,
 * bounds reported exactly, page tables shared with guards.
 *
 * Criterion runs each test in a fresh process, so every test starts with
 * an empty allocator; tests rely on that for exact LIFO and size-class
 * expectations. The "mprotect" suite forces the fallback guard mechanism
 * through FIBERSHIM_STACK_GUARD before the allocator initialises.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "fibershim.h"
#include "stack.h"

/* A size most tests use: what FIBERSHIM_STACK_SIZE=256K asks for. */
#define SZ (256u << 10)

static size_t page(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

static size_t round_up_pages(size_t n)
{
    return (n + page() - 1) / page() * page();
}

static long count_maps_lines(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    cr_assert_not_null(f);
    long lines = 0;
    int ch;
    while ((ch = fgetc(f)) != EOF) {
        if (ch == '\n')
            lines++;
    }
    fclose(f);
    return lines;
}

/* Resident pages of this process. */
static long rss_pages(void)
{
    long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    cr_assert_not_null(f);
    cr_assert_eq(fscanf(f, "%ld %ld", &size, &resident), 2);
    fclose(f);
    return resident;
}

/* Checks the struct invariants every allocation must satisfy. */
static void check_stack(const struct fs_stack *st, size_t requested)
{
    size_t want = requested < FS_MIN_STACK_SIZE ? FS_MIN_STACK_SIZE : requested;
    cr_assert_not_null(st->lo);
    cr_assert_eq((uintptr_t)st->lo % page(), 0, "lo %p not page aligned", st->lo);
    cr_assert_eq(st->size % page(), 0, "size %zu not whole pages", st->size);
    cr_assert_geq(st->size, round_up_pages(want));
    cr_assert_geq(st->size, (size_t)FS_MIN_STACK_SIZE);
    cr_assert_geq(st->guard_size, FS_STACK_GUARD_MIN);
    cr_assert_eq(st->guard_size % page(), 0);
    cr_assert_eq((char *)st->guard + st->guard_size, (char *)st->lo,
                 "guard must sit directly below the stack");
}

static bool kernel_at_least(int major, int minor)
{
    struct utsname u;
    int ma = 0, mi = 0;
    if (uname(&u) != 0 || sscanf(u.release, "%d.%d", &ma, &mi) != 2)
        return false;
    return ma > major || (ma == major && mi >= minor);
}

/* ---- basics ----------------------------------------------------------- */

Test(stack, guard_kind)
{
    const char *kind = fs__stack_guard_kind();
    cr_assert(strcmp(kind, "madv_guard") == 0 || strcmp(kind, "mprotect") == 0,
              "unexpected kind %s", kind);
    if (kernel_at_least(6, 13))
        cr_assert_str_eq(kind, "madv_guard", "Linux 6.13+ has MADV_GUARD_INSTALL");
    cr_log_info("guard kind: %s", kind);
}

Test(stack, alloc_free_reuse_lifo)
{
    struct fs_stack a, b, c, x, y;

    cr_assert_eq(fs__stack_alloc(SZ, &a), 0);
    cr_assert_eq(fs__stack_alloc(SZ, &b), 0);
    cr_assert_eq(fs__stack_alloc(SZ, &c), 0);
    check_stack(&a, SZ);
    cr_assert_eq(a.size, (size_t)SZ);
    cr_assert_neq(a.lo, b.lo);
    cr_assert_neq(b.lo, c.lo);
    cr_assert_neq(a.lo, c.lo);

    fs__stack_free(&a);
    fs__stack_free(&b);
    /* Last freed comes back first. */
    cr_assert_eq(fs__stack_alloc(SZ, &x), 0);
    cr_assert_eq(x.lo, b.lo);
    cr_assert_eq(x.size, b.size);
    cr_assert_eq(x.guard, b.guard);
    cr_assert_eq(fs__stack_alloc(SZ, &y), 0);
    cr_assert_eq(y.lo, a.lo);

    /* Another size never gets these back. */
    fs__stack_free(&x);
    struct fs_stack small;
    cr_assert_eq(fs__stack_alloc(FS_MIN_STACK_SIZE, &small), 0);
    cr_assert_neq(small.lo, x.lo);
    cr_assert_eq(small.size, (size_t)FS_MIN_STACK_SIZE);
    fs__stack_free(&small);
    fs__stack_free(&y);
    fs__stack_free(&c);
}

Test(stack, sizes_rounded_to_pages)
{
    static const size_t req[] = {
        0, 1, 4095, FS_MIN_STACK_SIZE - 1, FS_MIN_STACK_SIZE, FS_MIN_STACK_SIZE + 1,
        100000, SZ - 1, SZ, SZ + 1, 3u << 20,
    };
    for (size_t i = 0; i < sizeof(req) / sizeof(req[0]); i++) {
        struct fs_stack st;
        cr_assert_eq(fs__stack_alloc(req[i], &st), 0, "size %zu", req[i]);
        check_stack(&st, req[i]);
        size_t want = req[i] < FS_MIN_STACK_SIZE ? FS_MIN_STACK_SIZE : req[i];
        /* Few classes exist here, so each one is exact. */
        cr_assert_eq(st.size, round_up_pages(want), "size %zu -> %zu", req[i], st.size);
        fs__stack_free(&st);
    }
}

Test(stack, too_large_is_eagain)
{
    struct fs_stack st;
    cr_assert_eq(fs__stack_alloc(SIZE_MAX, &st), -EAGAIN);
    cr_assert_eq(fs__stack_alloc(SIZE_MAX / 2, &st), -EAGAIN);
}

Test(stack, errno_untouched)
{
    struct fs_stack st;
    errno = 1234;
    cr_assert_eq(fs__stack_alloc(SZ, &st), 0);
    fs__stack_free(&st);
    (void)fs__stack_guard_kind();
    cr_assert_eq(errno, 1234);
}

Test(stack, whole_stack_writable)
{
    static const size_t sizes[] = { FS_MIN_STACK_SIZE, SZ, 1u << 20 };
    struct fs_stack st[3][3];

    /* Several per size: neighbours must not overlap. */
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) {
            cr_assert_eq(fs__stack_alloc(sizes[i], &st[i][j]), 0);
            memset(st[i][j].lo, 0x10 * i + j + 1, st[i][j].size);
        }
    }
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) {
            const unsigned char *p = st[i][j].lo;
            for (size_t k = 0; k < st[i][j].size; k++) {
                if (p[k] != 0x10 * i + j + 1)
                    cr_assert_fail("stack %d/%d byte %zu clobbered", i, j, k);
            }
            fs__stack_free(&st[i][j]);
        }
    }
}

/* ---- guards ----------------------------------------------------------- */

Test(stack, write_below_stack_faults, .signal = SIGSEGV)
{
    struct fs_stack st;
    cr_assert_eq(fs__stack_alloc(SZ, &st), 0);
    ((char *)st.lo)[st.size - 1] = 1; /* top is fine */
    ((char *)st.lo)[0] = 1;           /* bottom is fine */
    ((volatile char *)st.lo)[-1] = 1; /* one below: the guard */
}

Test(stack, read_guard_bottom_faults, .signal = SIGSEGV)
{
    struct fs_stack st, next;
    cr_assert_eq(fs__stack_alloc(SZ, &st), 0);
    cr_assert_eq(fs__stack_alloc(SZ, &next), 0);
    /* The lowest byte of a guard that is not the first in its arena. */
    (void)*(volatile char *)next.guard;
}

Test(stack, reused_stack_keeps_guard, .signal = SIGSEGV)
{
    struct fs_stack st, again;
    cr_assert_eq(fs__stack_alloc(SZ, &st), 0);
    fs__stack_free(&st);
    cr_assert_eq(fs__stack_alloc(SZ, &again), 0);
    cr_assert_eq(again.lo, st.lo);
    ((volatile char *)again.lo)[-1] = 1;
}

Test(stack, is_guard_addresses)
{
    struct fs_stack a, b, other;
    int local = 0;
    void *heap = malloc(64);

    cr_assert_not(fs__stack_is_guard(&local), "before any allocation");
    cr_assert_eq(fs__stack_alloc(SZ, &a), 0);
    cr_assert_eq(fs__stack_alloc(SZ, &b), 0);
    cr_assert_eq(fs__stack_alloc(64u << 10, &other), 0);

    const struct fs_stack *all[] = { &a, &b, &other };
    for (int i = 0; i < 3; i++) {
        const char *g = all[i]->guard, *lo = all[i]->lo;
        cr_assert(fs__stack_is_guard(g));
        cr_assert(fs__stack_is_guard(g + all[i]->guard_size / 2));
        cr_assert(fs__stack_is_guard(g + all[i]->guard_size - 1));
        cr_assert_not(fs__stack_is_guard(lo));
        cr_assert_not(fs__stack_is_guard(lo + all[i]->size / 2));
        cr_assert_not(fs__stack_is_guard(lo + all[i]->size - 1));
    }
    /* Slots are carved upwards: b sits right above a, so the byte above a's
     * top is b's guard; above b is a slot not carved yet. */
    if ((char *)a.lo + a.size == (char *)b.guard)
        cr_assert(fs__stack_is_guard((char *)a.lo + a.size));
    cr_assert_not(fs__stack_is_guard((char *)b.lo + b.size + 1));

    cr_assert_not(fs__stack_is_guard(NULL));
    cr_assert_not(fs__stack_is_guard(&local));
    cr_assert_not(fs__stack_is_guard(heap));
    cr_assert_not(fs__stack_is_guard((void *)&count_maps_lines));
    cr_assert_not(fs__stack_is_guard((void *)UINTPTR_MAX));

    /* Freed stacks keep their guards. */
    fs__stack_free(&a);
    cr_assert(fs__stack_is_guard(a.guard));
    free(heap);
}

/* The intended use: a SIGSEGV handler on an alternate stack names the
 * overflow. Exit code 42 means "the fault address was a guard". */
static void on_segv(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    _exit(fs__stack_is_guard(si->si_addr) ? 42 : 43);
}

static void install_segv_handler(void)
{
    static char altstack[64 * 1024];
    stack_t ss = { .ss_sp = altstack, .ss_size = sizeof(altstack) };
    struct sigaction sa;

    cr_assert_eq(sigaltstack(&ss, NULL), 0);
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGSEGV, &sa, NULL), 0);
}

Test(stack, sigsegv_handler_sees_guard, .exit_code = 42)
{
    struct fs_stack st;
    cr_assert_eq(fs__stack_alloc(SZ, &st), 0);
    install_segv_handler();
    ((volatile char *)st.lo)[-100] = 1;
}

Test(stack, sigsegv_handler_other_fault, .exit_code = 43)
{
    struct fs_stack st;
    cr_assert_eq(fs__stack_alloc(SZ, &st), 0);
    char *none = mmap(NULL, page(), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(none, MAP_FAILED);
    install_segv_handler();
    *(volatile char *)none = 1;
}

/* ---- guard sizes -------------------------------------------------------- */

Test(stack, default_guard_is_the_minimum)
{
    struct fs_stack st;
    cr_assert_eq(fs__stack_alloc(SZ, &st), 0);
    cr_assert_eq(st.guard_size, FS_STACK_GUARD_MIN);
    cr_assert_eq(st.guard, (char *)st.lo - FS_STACK_GUARD_MIN);
    cr_assert(fs__stack_is_guard((char *)st.lo - FS_STACK_GUARD_MIN));
    fs__stack_free(&st);
}

Test(stack, guard_sizes_rounded_up)
{
    const size_t m = FS_STACK_GUARD_MIN, mib = 1u << 20;
    const struct {
        size_t ask, want;
    } g[] = {{1, m}, {4096, m}, {m - 1, m}, {m, m}, {m + 1, m + page()},
             {mib, mib}, {mib + 5, mib + page()}};
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
        struct fs_stack st;
        cr_assert_eq(fs__stack_alloc_guard(SZ, g[i].ask, &st), 0, "guard %zu", g[i].ask);
        check_stack(&st, SZ);
        cr_assert_eq(st.guard_size, g[i].want, "guard %zu -> %zu", g[i].ask, st.guard_size);
        cr_assert(fs__stack_is_guard(st.guard));
        cr_assert(fs__stack_is_guard((char *)st.lo - 1));
        cr_assert_not(fs__stack_is_guard(st.lo));
        fs__stack_free(&st);
    }
}

/* guardsize 0 asks for none: such stacks lie back to back. */
Test(stack, no_guard_stacks_are_adjacent)
{
    struct fs_stack a, b;
    cr_assert_eq(fs__stack_alloc_guard(SZ, 0, &a), 0);
    cr_assert_eq(fs__stack_alloc_guard(SZ, 0, &b), 0);
    cr_assert_null(a.guard);
    cr_assert_eq(a.guard_size, 0);
    cr_assert_eq((char *)b.lo, (char *)a.lo + a.size, "carved upwards, no gap");
    cr_assert_not(fs__stack_is_guard((char *)b.lo - 1));
    memset(a.lo, 1, a.size);
    memset(b.lo, 2, b.size);
    cr_assert_eq(((unsigned char *)a.lo)[a.size - 1], 1);
    fs__stack_free(&a);
    fs__stack_free(&b);
}

/* A stack freed with one guard never comes back for another. */
Test(stack, guards_are_separate_classes)
{
    struct fs_stack none, big, dflt, again;
    cr_assert_eq(fs__stack_alloc_guard(SZ, 0, &none), 0);
    fs__stack_free(&none);
    cr_assert_eq(fs__stack_alloc_guard(SZ, 1u << 20, &big), 0);
    cr_assert_neq(big.lo, none.lo);
    cr_assert_eq(fs__stack_alloc(SZ, &dflt), 0);
    cr_assert_neq(dflt.lo, none.lo);
    cr_assert_neq(dflt.lo, big.lo);
    fs__stack_free(&big);
    cr_assert_eq(fs__stack_alloc_guard(SZ, 1u << 20, &again), 0);
    cr_assert_eq(again.lo, big.lo);
    cr_assert_eq(again.guard_size, (size_t)1 << 20);
    fs__stack_free(&again);
    fs__stack_free(&dflt);
}

/* The lowest byte of the minimum guard of a stack with another right
 * below it: a frame of FS_STACK_GUARD_MIN bytes still faults. */
Test(stack, min_guard_lowest_byte_faults, .signal = SIGSEGV)
{
    struct fs_stack below, st;
    cr_assert_eq(fs__stack_alloc(SZ, &below), 0);
    cr_assert_eq(fs__stack_alloc(SZ, &st), 0);
    cr_assert_eq((char *)below.lo + below.size, (char *)st.guard);
    ((volatile char *)st.lo)[-(ptrdiff_t)FS_STACK_GUARD_MIN] = 1;
}

/* A guard larger than a page is inaccessible all through. */
Test(stack, large_guard_middle_faults, .signal = SIGSEGV)
{
    struct fs_stack st;
    cr_assert_eq(fs__stack_alloc_guard(SZ, 1u << 20, &st), 0);
    ((volatile char *)st.lo)[-(ptrdiff_t)(512u << 10)] = 1;
}

Test(stack, large_guard_lowest_byte_faults, .signal = SIGSEGV)
{
    struct fs_stack st;
    cr_assert_eq(fs__stack_alloc_guard(SZ, 1u << 20, &st), 0);
    ((volatile char *)st.lo)[-(ptrdiff_t)(1u << 20)] = 1;
}

Test(stack, guard_owner_names_the_stack)
{
    struct fs_stack st[4];
    cr_assert_eq(fs__stack_alloc(SZ, &st[0]), 0);
    cr_assert_eq(fs__stack_alloc(SZ, &st[1]), 0);
    cr_assert_eq(fs__stack_alloc_guard(SZ, 1u << 20, &st[2]), 0);
    cr_assert_eq(fs__stack_alloc(FS_MIN_STACK_SIZE, &st[3]), 0);
    for (int i = 0; i < 4; i++) {
        const char *lo = st[i].lo;
        cr_assert_eq(fs__stack_guard_owner(st[i].guard), st[i].lo);
        cr_assert_eq(fs__stack_guard_owner(lo - 1), st[i].lo);
        cr_assert_eq(fs__stack_guard_owner(lo - st[i].guard_size / 2), st[i].lo);
        cr_assert_null(fs__stack_guard_owner(lo));
        cr_assert_null(fs__stack_guard_owner(lo + st[i].size - 1));
    }
}

/* ---- threads ---------------------------------------------------------- */

#define THREADS 4
#define HOLD 64
#define ITERS 20000
#define SET_CAP 8192 /* power of two, far above the stacks ever carved */

/* lo -> owning thread (0: not handed out). Entries are never deleted. */
static struct {
    void *lo;
    int owner;
} owners[SET_CAP];
static pthread_mutex_t owners_mutex = PTHREAD_MUTEX_INITIALIZER;
static atomic_int failures;

/* Sets lo's owner from `from` to `to`; false if it was not `from`. */
static bool owner_swap(void *lo, int from, int to)
{
    bool ok = false;
    pthread_mutex_lock(&owners_mutex);
    size_t i = ((uintptr_t)lo >> 12) * 0x9e3779b97f4a7c15ull >> 51;
    for (size_t n = 0; n < SET_CAP; n++, i = (i + 1) & (SET_CAP - 1)) {
        if (owners[i].lo == lo || owners[i].lo == NULL) {
            owners[i].lo = lo;
            ok = owners[i].owner == from;
            if (ok)
                owners[i].owner = to;
            break;
        }
    }
    pthread_mutex_unlock(&owners_mutex);
    return ok;
}

struct tag {
    int owner;
    unsigned serial;
};

static void *churn(void *arg)
{
    int me = (int)(intptr_t)arg;
    struct fs_stack held[HOLD];
    unsigned serials[HOLD];
    int n = 0;
    uint64_t rng = 0x1234567u * (uint64_t)me + 1;
    static const size_t sizes[] = { SZ, SZ,
                                    SZ, 32u << 10 };

    for (unsigned it = 0; it < ITERS; it++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        bool do_alloc = n == 0 || (n < HOLD && (rng & 1));
        if (do_alloc) {
            struct fs_stack *st = &held[n];
            if (fs__stack_alloc(sizes[(rng >> 8) & 3], st) != 0 ||
                !owner_swap(st->lo, 0, me)) {
                atomic_fetch_add(&failures, 1);
                continue;
            }
            /* Tag the bottom and near the top; a double hand-out would let
             * another thread overwrite them. */
            struct tag t = { me, it };
            memcpy(st->lo, &t, sizeof(t));
            memcpy((char *)st->lo + st->size - 64, &t, sizeof(t));
            serials[n++] = it;
        } else {
            int k = (int)((rng >> 8) % (uint64_t)n);
            struct fs_stack st = held[k];
            struct tag lo_tag, hi_tag;
            memcpy(&lo_tag, st.lo, sizeof(lo_tag));
            memcpy(&hi_tag, (char *)st.lo + st.size - 64, sizeof(hi_tag));
            if (lo_tag.owner != me || lo_tag.serial != serials[k] ||
                hi_tag.owner != me || hi_tag.serial != serials[k])
                atomic_fetch_add(&failures, 1);
            held[k] = held[n - 1];
            serials[k] = serials[n - 1];
            n--;
            if (!owner_swap(st.lo, me, 0))
                atomic_fetch_add(&failures, 1);
            fs__stack_free(&st);
        }
    }
    while (n > 0) {
        n--;
        if (!owner_swap(held[n].lo, me, 0))
            atomic_fetch_add(&failures, 1);
        fs__stack_free(&held[n]);
    }
    return NULL;
}

Test(stack, concurrent_alloc_free_no_double_handout)
{
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, churn, (void *)(intptr_t)(i + 1)), 0);
    for (int i = 0; i < THREADS; i++)
        cr_assert_eq(pthread_join(th[i], NULL), 0);
    cr_assert_eq(atomic_load(&failures), 0, "%d double hand-outs or failed allocs",
                 atomic_load(&failures));

    /* Everything came back: at most THREADS * HOLD distinct stacks were ever
     * needed, and the LIFO lists hand out only known ones now. */
    size_t known = 0;
    for (size_t i = 0; i < SET_CAP; i++) {
        if (owners[i].lo) {
            known++;
            cr_assert_eq(owners[i].owner, 0);
        }
    }
    cr_assert_leq(known, (size_t)THREADS * HOLD * 2);
}

/* ---- scale and memory ------------------------------------------------- */

Test(stack, many_stacks_few_mappings, .timeout = 60)
{
    if (strcmp(fs__stack_guard_kind(), "madv_guard") != 0)
        cr_skip_test("guard kind is mprotect: one VMA per guard is expected");

    enum { N = 200000 };
    long before = count_maps_lines();
    struct fs_stack *st = malloc(N * sizeof(*st));
    cr_assert_not_null(st);
    for (int i = 0; i < N; i++)
        cr_assert_eq(fs__stack_alloc(SZ, &st[i]), 0, "stack %d", i);
    /* Touch a few so the test also covers committed pages in the arenas. */
    for (int i = 0; i < N; i += 997)
        ((char *)st[i].lo)[st[i].size - 1] = 1;
    long after = count_maps_lines();
    cr_log_info("maps lines: %ld before, %ld after %d stacks", before, after, N);
    fprintf(stderr, "many_stacks_few_mappings: /proc/self/maps %ld -> %ld lines\n",
            before, after);
    cr_assert_lt(after, 1000);
    cr_assert_lt(after - before, 50);
    free(st);
}

/* Past FS_STACK_CACHE_HOT (1024) cached stacks per class, freed stacks'
 * bodies go back to the OS; the top page (and the free-list link) stays. */
Test(stack, cache_overflow_returns_memory)
{
    enum { N = 3000, HOT = 1024 };
    const size_t size = 64u << 10;
    static struct fs_stack st[N];

    for (int i = 0; i < N; i++) {
        cr_assert_eq(fs__stack_alloc(size, &st[i]), 0);
        memset(st[i].lo, 0xa5, st[i].size);
    }
    long full = rss_pages();
    for (int i = 0; i < N; i++)
        fs__stack_free(&st[i]);
    long freed = rss_pages();

    long body_pages = (long)((size - page()) / page());
    long expect_drop = (long)(N - HOT) * body_pages;
    fprintf(stderr, "cache_overflow_returns_memory: rss %ld -> %ld pages (expected drop %ld)\n",
            full, freed, expect_drop);
    cr_assert_geq(full - freed, expect_drop * 9 / 10);

    /* LIFO: stacks come back in reverse free order; the ones freed after
     * the cache filled read zero below the top page. */
    for (int i = N - 1; i >= 0; i--) {
        struct fs_stack again;
        cr_assert_eq(fs__stack_alloc(size, &again), 0);
        cr_assert_eq(again.lo, st[i].lo, "LIFO order broken at %d", i);
        const unsigned char *p = again.lo;
        unsigned char want = i >= HOT ? 0 : 0xa5;
        cr_assert_eq(p[0], want, "stack %d body", i);
        cr_assert_eq(p[again.size - page() - 1], want, "stack %d body top", i);
        cr_assert_eq(p[again.size - page()], 0xa5, "stack %d top page kept", i);
    }
}

static long status_kib(const char *key)
{
    char line[256];
    long kib = -1;
    size_t n = strlen(key);
    FILE *f = fopen("/proc/self/status", "r");
    cr_assert_not_null(f);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, n) == 0 && line[n] == ':') {
            kib = atol(line + n + 1);
            break;
        }
    }
    fclose(f);
    return kib;
}

/* glibc's usual default, 8 MiB: a stack whose top page is touched costs
 * that page and a page-table page of its own (tops 8 MiB apart cannot
 * share one), and its guard no more, since it lies in the page-table page
 * of the top below it (stack.c, "Page tables"). */
Test(stack, default_size_page_tables, .timeout = 60)
{
#ifdef __SANITIZE_ADDRESS__
    cr_skip_test("AddressSanitizer's shadow memory has page tables of its own");
#endif
    enum { N = 4096 };
    const size_t size = 8u << 20;
    static struct fs_stack st[N];
    long pte0 = status_kib("VmPTE"), rss0 = status_kib("VmRSS");
    for (int i = 0; i < N; i++) {
        cr_assert_eq(fs__stack_alloc(size, &st[i]), 0);
        ((volatile char *)st[i].lo)[size - 1] = 1;
    }
    double pte = (double)(status_kib("VmPTE") - pte0) / N;
    double rss = (double)(status_kib("VmRSS") - rss0) / N;
    fprintf(stderr, "default_size_page_tables: per 8 MiB stack: page tables %.3f KiB, "
                    "RSS %.3f KiB\n", pte, rss);
    cr_assert_geq(pte, 3.9, "page tables %.3f KiB per stack", pte);
    cr_assert_leq(pte, 4.5, "page tables %.3f KiB per stack: guards do not share", pte);
    for (int i = 0; i < N; i++)
        fs__stack_free(&st[i]);
}

/* 8 MiB stacks: the cache keeps FS_STACK_CACHE_HOT_BYTES (64 MiB) of them
 * resident, 8 stacks, and gives back the memory of the rest. */
Test(stack, hot_cache_bounded_in_bytes)
{
    enum { N = 20, HOT = 8, TOUCH = 1 << 20 };
    const size_t size = 8u << 20;
    static struct fs_stack st[N];
    for (int i = 0; i < N; i++) {
        cr_assert_eq(fs__stack_alloc(size, &st[i]), 0);
        memset((char *)st[i].lo + size - TOUCH, 0x5a, TOUCH);
    }
    long full = rss_pages();
    for (int i = 0; i < N; i++)
        fs__stack_free(&st[i]);
    long drop = full - rss_pages();
    long expect = (long)(N - HOT) * (long)((TOUCH - page()) / page());
    fprintf(stderr, "hot_cache_bounded_in_bytes: %ld pages dropped, expected %ld\n", drop,
            expect);
    cr_assert_geq(drop, expect * 9 / 10);
    cr_assert_leq(drop, expect + expect / 10);
    for (int i = N - 1; i >= 0; i--) {
        struct fs_stack again;
        cr_assert_eq(fs__stack_alloc(size, &again), 0);
        cr_assert_eq(again.lo, st[i].lo, "LIFO order broken at %d", i);
        unsigned char want = i < HOT ? 0x5a : 0;
        cr_assert_eq(((unsigned char *)again.lo)[size - TOUCH], want, "stack %d", i);
    }
}

Test(stack, many_distinct_sizes)
{
    enum { N = 150 };
    static struct fs_stack st[N];
    static size_t req[N];

    for (int i = 0; i < N; i++) {
        req[i] = FS_MIN_STACK_SIZE + (size_t)i * 3 * page() + 1;
        cr_assert_eq(fs__stack_alloc(req[i], &st[i]), 0, "size %zu", req[i]);
        check_stack(&st[i], req[i]);
        memset(st[i].lo, i, st[i].size);
        cr_assert(fs__stack_is_guard(st[i].guard));
    }
    for (int i = 0; i < N; i++) {
        const unsigned char *p = st[i].lo;
        cr_assert_eq(p[0], (unsigned char)i);
        cr_assert_eq(p[st[i].size - 1], (unsigned char)i);
    }
    for (int i = 0; i < N; i++)
        fs__stack_free(&st[i]);
    /* Same sizes again: each class hands back its freed stack. */
    for (int i = 0; i < N; i++) {
        struct fs_stack again;
        cr_assert_eq(fs__stack_alloc(req[i], &again), 0);
        cr_assert_eq(again.size, st[i].size);
        check_stack(&again, req[i]);
    }
}

static int overcommit_mode(void)
{
    int mode = -1;
    FILE *f = fopen("/proc/sys/vm/overcommit_memory", "r");
    if (f) {
        if (fscanf(f, "%d", &mode) != 1)
            mode = -1;
        fclose(f);
    }
    return mode;
}

static size_t ram_plus_swap(void)
{
    char line[256];
    size_t total = 0, kb;
    FILE *f = fopen("/proc/meminfo", "r");
    cr_assert_not_null(f);
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "MemTotal: %zu kB", &kb) == 1 ||
            sscanf(line, "SwapTotal: %zu kB", &kb) == 1)
            total += kb * 1024;
    }
    fclose(f);
    return total;
}

/* Under overcommit mode 0 one private writable mapping larger than RAM +
 * swap is refused unless it is MAP_NORESERVE. The allocator's arenas grow
 * to 64 GiB, so it depends on the flag; here 1 GiB stacks reach such an
 * arena quickly and every one of them must still be handed out. */
Test(stack, noreserve_reservations_beyond_ram, .timeout = 60)
{
    int mode = overcommit_mode();
    if (mode == 2)
        cr_skip_test("vm.overcommit_memory = 2 ignores MAP_NORESERVE");

    size_t limit = ram_plus_swap();
    size_t big = limit + (1ul << 30);
    if (mode == 0) {
        void *p = mmap(NULL, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                       -1, 0);
        cr_assert_eq(p, MAP_FAILED, "mode 0 should refuse %zu bytes without NORESERVE",
                     big);
        if (p != MAP_FAILED)
            munmap(p, big);
    }
    void *q = mmap(NULL, big, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    cr_assert_neq(q, MAP_FAILED, "MAP_NORESERVE reservation of %zu bytes", big);
    munmap(q, big);

    /* 1 GiB stacks: arenas of 64 MiB .. 32 GiB hold 62 of them, the next
     * arena is 64 GiB (more than RAM here); go well into it. */
    enum { N = 100 };
    static struct fs_stack st[N];
    size_t reserved = 0;
    for (int i = 0; i < N; i++) {
        cr_assert_eq(fs__stack_alloc(FS_MAX_STACK_SIZE, &st[i]), 0, "stack %d", i);
        ((char *)st[i].lo)[st[i].size - 1] = 1;
        ((char *)st[i].lo)[0] = 1;
        reserved += st[i].size + st[i].guard_size;
    }
    fprintf(stderr, "noreserve: %zu GiB of stacks, RAM+swap %zu GiB, overcommit mode %d\n",
            reserved >> 30, limit >> 30, mode);
    cr_assert_gt(reserved, limit);
    for (int i = 0; i < N; i++)
        fs__stack_free(&st[i]);
}

/* ---- the stacks of fibers (fs_spawn) ---------------------------------- */

struct seen {
    void *lo;
    size_t size, guard;
    bool inside;
};

static void *record_stack(void *arg)
{
    struct seen *s = arg;
    int local = 0;
    fs_fiber_stack(fs_self(), &s->lo, &s->size);
    s->guard = fs_fiber_stack_guard(fs_self());
    s->inside = (char *)&local >= (char *)s->lo && (char *)&local < (char *)s->lo + s->size;
    *(volatile char *)s->lo = 1; /* the lowest byte is usable */
    return NULL;
}

static struct seen spawn_seen(const struct fs_spawn_attr *attr)
{
    struct seen s;
    fs_fiber *f;
    cr_assert_eq(fs_spawn(&f, record_stack, &s, attr), 0);
    cr_assert_eq(fs_join(f, NULL, FS_NO_DEADLINE), 0);
    return s;
}

static size_t glibc_default_size(void)
{
    pthread_attr_t a;
    size_t size;
    cr_assert_eq(pthread_getattr_default_np(&a), 0);
    cr_assert_eq(pthread_attr_getstacksize(&a, &size), 0);
    pthread_attr_destroy(&a);
    return size;
}

static void set_glibc_default(size_t size, size_t guard)
{
    pthread_attr_t a;
    cr_assert_eq(pthread_attr_init(&a), 0);
    cr_assert_eq(pthread_attr_setstacksize(&a, size), 0);
    cr_assert_eq(pthread_attr_setguardsize(&a, guard), 0);
    cr_assert_eq(pthread_setattr_default_np(&a), 0);
    pthread_attr_destroy(&a);
}

/* The reported stack is exactly the mapping above the guard. */
static void check_bounds(const struct seen *s)
{
    cr_assert(s->inside, "the fiber's locals lie outside [lo, lo + size)");
    cr_assert_eq((uintptr_t)s->lo % page(), 0);
    cr_assert_eq(fs__stack_guard_owner((char *)s->lo - 1), s->lo, "lo - 1 is not its guard");
    cr_assert_null(fs__stack_guard_owner(s->lo));
}

Test(fiber_stack, default_is_glibcs)
{
    cr_assert_eq(fs_init(&(struct fs_config){.carriers = 1}), 0);
    size_t want = glibc_default_size();
    cr_assert_eq(fs_default_stack_size(), want);
    struct seen s = spawn_seen(NULL);
    cr_assert_eq(s.size, want, "default stack %zu, glibc's %zu", s.size, want);
    cr_assert_eq(s.guard, page(), "guard as glibc reports it: one page");
    check_bounds(&s);
    cr_assert(fs__stack_is_guard((char *)s.lo - FS_STACK_GUARD_MIN));
}

Test(fiber_stack, setattr_default_np_takes_effect)
{
    cr_assert_eq(fs_init(&(struct fs_config){.carriers = 1}), 0);
    (void)spawn_seen(NULL); /* the runtime runs before the change */
    set_glibc_default(1u << 20, 3 * page());
    cr_assert_eq(fs_default_stack_size(), (size_t)1 << 20);
    struct seen s = spawn_seen(NULL);
    cr_assert_eq(s.size, (size_t)1 << 20);
    cr_assert_eq(s.guard, 3 * page());
    check_bounds(&s);
    set_glibc_default(1u << 20, 0);
    s = spawn_seen(NULL);
    cr_assert_eq(s.guard, 0);
    cr_assert_null(fs__stack_guard_owner((char *)s.lo - 1), "guard 0 must be none");
}

Test(fiber_stack, configured_size_overrides_the_default)
{
    cr_assert_eq(fs_init(&(struct fs_config){.carriers = 1, .stack_size = 64u << 10}), 0);
    cr_assert_eq(spawn_seen(NULL).size, (size_t)64 << 10);
    set_glibc_default(2u << 20, page());
    cr_assert_eq(spawn_seen(NULL).size, (size_t)64 << 10);
    struct seen s = spawn_seen(&(struct fs_spawn_attr){.stack_size = 1u << 20});
    cr_assert_eq(s.size, (size_t)1 << 20, "an explicit size beats the configured one");
    check_bounds(&s);
}

Test(fiber_stack, guard_asked_for)
{
    cr_assert_eq(fs_init(&(struct fs_config){.carriers = 1}), 0);
    struct seen s = spawn_seen(&(struct fs_spawn_attr){.stack_size = SZ, .guard_size = 10000});
    cr_assert_eq(s.guard, round_up_pages(10000), "reported in whole pages, as glibc does");
    check_bounds(&s);
    cr_assert(fs__stack_is_guard((char *)s.lo - FS_STACK_GUARD_MIN), "the minimum still holds");
    s = spawn_seen(&(struct fs_spawn_attr){.stack_size = SZ, .guard_size = 1u << 20});
    cr_assert_eq(s.guard, (size_t)1 << 20);
    cr_assert(fs__stack_is_guard((char *)s.lo - (1u << 20)));
    s = spawn_seen(&(struct fs_spawn_attr){.stack_size = SZ, .no_guard = true});
    cr_assert_eq(s.guard, 0);
    cr_assert_null(fs__stack_guard_owner((char *)s.lo - 1));
}

Test(fiber_stack, size_in_whole_pages)
{
    cr_assert_eq(fs_init(&(struct fs_config){.carriers = 1}), 0);
    struct seen s = spawn_seen(&(struct fs_spawn_attr){.stack_size = 100000});
    cr_assert_eq(s.size, round_up_pages(100000));
    check_bounds(&s);
    s = spawn_seen(&(struct fs_spawn_attr){.stack_size = FS_MIN_STACK_SIZE});
    cr_assert_eq(s.size, (size_t)FS_MIN_STACK_SIZE);
    check_bounds(&s);
}

static void *write_below_lo(void *arg)
{
    (void)arg;
    void *lo;
    size_t size;
    fs_fiber_stack(fs_self(), &lo, &size);
    ((volatile char *)lo)[-1] = 1;
    return NULL;
}

Test(fiber_stack, write_below_lo_faults, .signal = SIGSEGV)
{
    cr_assert_eq(fs_init(&(struct fs_config){.carriers = 1}), 0);
    fs_fiber *f;
    cr_assert_eq(fs_spawn(&f, write_below_lo, NULL, NULL), 0);
    fs_join(f, NULL, FS_NO_DEADLINE);
}

/* ---- the mprotect fallback -------------------------------------------- */

static void force_mprotect(void)
{
    setenv("FIBERSHIM_STACK_GUARD", "mprotect", 1);
}

Test(stack_mprotect, kind, .init = force_mprotect)
{
    cr_assert_str_eq(fs__stack_guard_kind(), "mprotect");
}

Test(stack_mprotect, alloc_free_reuse, .init = force_mprotect)
{
    struct fs_stack a, b, x;
    cr_assert_eq(fs__stack_alloc(SZ, &a), 0);
    cr_assert_eq(fs__stack_alloc(SZ, &b), 0);
    check_stack(&a, SZ);
    memset(a.lo, 1, a.size);
    memset(b.lo, 2, b.size);
    cr_assert(fs__stack_is_guard(a.guard));
    cr_assert(fs__stack_is_guard(b.guard));
    cr_assert_not(fs__stack_is_guard(a.lo));
    fs__stack_free(&a);
    cr_assert_eq(fs__stack_alloc(SZ, &x), 0);
    cr_assert_eq(x.lo, a.lo);
    fs__stack_free(&x);
    fs__stack_free(&b);
}

Test(stack_mprotect, guard_faults, .init = force_mprotect, .signal = SIGSEGV)
{
    struct fs_stack st;
    cr_assert_eq(fs__stack_alloc(SZ, &st), 0);
    ((volatile char *)st.lo)[-1] = 1;
}

Test(stack_mprotect, sigsegv_handler_sees_guard, .init = force_mprotect, .exit_code = 42)
{
    struct fs_stack a, b;
    cr_assert_eq(fs__stack_alloc(SZ, &a), 0);
    cr_assert_eq(fs__stack_alloc(SZ, &b), 0);
    install_segv_handler();
    (void)*(volatile char *)b.guard;
}
