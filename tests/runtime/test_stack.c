/*
 * test_stack.c - fiber stack allocator: sizes, reuse, guards, threads,
 * mapping count, memory return, and large reservations.
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
    cr_assert_geq(st->guard_size, page());
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

    cr_assert_eq(fs__stack_alloc(FS_DEFAULT_STACK_SIZE, &a), 0);
    cr_assert_eq(fs__stack_alloc(FS_DEFAULT_STACK_SIZE, &b), 0);
    cr_assert_eq(fs__stack_alloc(FS_DEFAULT_STACK_SIZE, &c), 0);
    check_stack(&a, FS_DEFAULT_STACK_SIZE);
    cr_assert_eq(a.size, (size_t)FS_DEFAULT_STACK_SIZE);
    cr_assert_neq(a.lo, b.lo);
    cr_assert_neq(b.lo, c.lo);
    cr_assert_neq(a.lo, c.lo);

    fs__stack_free(&a);
    fs__stack_free(&b);
    /* Last freed comes back first. */
    cr_assert_eq(fs__stack_alloc(FS_DEFAULT_STACK_SIZE, &x), 0);
    cr_assert_eq(x.lo, b.lo);
    cr_assert_eq(x.size, b.size);
    cr_assert_eq(x.guard, b.guard);
    cr_assert_eq(fs__stack_alloc(FS_DEFAULT_STACK_SIZE, &y), 0);
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
        100000, FS_DEFAULT_STACK_SIZE - 1, FS_DEFAULT_STACK_SIZE,
        FS_DEFAULT_STACK_SIZE + 1, 3u << 20,
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
    cr_assert_eq(fs__stack_alloc(FS_DEFAULT_STACK_SIZE, &st), 0);
    fs__stack_free(&st);
    (void)fs__stack_guard_kind();
    cr_assert_eq(errno, 1234);
}

Test(stack, whole_stack_writable)
{
    static const size_t sizes[] = { FS_MIN_STACK_SIZE, FS_DEFAULT_STACK_SIZE, 1u << 20 };
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
    cr_assert_eq(fs__stack_alloc(FS_DEFAULT_STACK_SIZE, &st), 0);
    ((char *)st.lo)[st.size - 1] = 1; /* top is fine */
    ((char *)st.lo)[0] = 1;           /* bottom is fine */
    ((volatile char *)st.lo)[-1] = 1; /* one below: the guard */
}

Test(stack, read_guard_bottom_faults, .signal = SIGSEGV)
{
    struct fs_stack st, next;
    cr_assert_eq(fs__stack_alloc(FS_DEFAULT_STACK_SIZE, &st), 0);
    cr_assert_eq(fs__stack_alloc(FS_DEFAULT_STACK_SIZE, &next), 0);
    /* The lowest byte of a guard that is not the first in its arena. */
    (void)*(volatile char *)next.guard;
}

Test(stack, reused_stack_keeps_guard, .signal = SIGSEGV)
{
    struct fs_stack st, again;
    cr_assert_eq(fs__stack_alloc(FS_DEFAULT_STACK_SIZE, &st), 0);
    fs__stack_free(&st);
    cr_assert_eq(fs__stack_alloc(FS_DEFAULT_STACK_SIZE, &again), 0);
    cr_assert_eq(again.lo, st.lo);
    ((volatile char *)again.lo)[-1] = 1;
}

Test(stack, is_guard_addresses)
{
    struct fs_stack a, b, other;
    int local = 0;
    void *heap = malloc(64);

    cr_assert_not(fs__stack_is_guard(&local), "before any allocation");
    cr_assert_eq(fs__stack_alloc(FS_DEFAULT_STACK_SIZE, &a), 0);
    cr_assert_eq(fs__stack_alloc(FS_DEFAULT_STACK_SIZE, &b), 0);
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
    cr_assert_eq(fs__stack_alloc(FS_DEFAULT_STACK_SIZE, &st), 0);
    install_segv_handler();
    ((volatile char *)st.lo)[-100] = 1;
}

Test(stack, sigsegv_handler_other_fault, .exit_code = 43)
{
    struct fs_stack st;
    cr_assert_eq(fs__stack_alloc(FS_DEFAULT_STACK_SIZE, &st), 0);
    char *none = mmap(NULL, page(), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(none, MAP_FAILED);
    install_segv_handler();
    *(volatile char *)none = 1;
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
    static const size_t sizes[] = { FS_DEFAULT_STACK_SIZE, FS_DEFAULT_STACK_SIZE,
                                    FS_DEFAULT_STACK_SIZE, 32u << 10 };

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
        cr_assert_eq(fs__stack_alloc(FS_DEFAULT_STACK_SIZE, &st[i]), 0, "stack %d", i);
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
    cr_assert_eq(fs__stack_alloc(FS_DEFAULT_STACK_SIZE, &a), 0);
    cr_assert_eq(fs__stack_alloc(FS_DEFAULT_STACK_SIZE, &b), 0);
    check_stack(&a, FS_DEFAULT_STACK_SIZE);
    memset(a.lo, 1, a.size);
    memset(b.lo, 2, b.size);
    cr_assert(fs__stack_is_guard(a.guard));
    cr_assert(fs__stack_is_guard(b.guard));
    cr_assert_not(fs__stack_is_guard(a.lo));
    fs__stack_free(&a);
    cr_assert_eq(fs__stack_alloc(FS_DEFAULT_STACK_SIZE, &x), 0);
    cr_assert_eq(x.lo, a.lo);
    fs__stack_free(&x);
    fs__stack_free(&b);
}

Test(stack_mprotect, guard_faults, .init = force_mprotect, .signal = SIGSEGV)
{
    struct fs_stack st;
    cr_assert_eq(fs__stack_alloc(FS_DEFAULT_STACK_SIZE, &st), 0);
    ((volatile char *)st.lo)[-1] = 1;
}

Test(stack_mprotect, sigsegv_handler_sees_guard, .init = force_mprotect, .exit_code = 42)
{
    struct fs_stack a, b;
    cr_assert_eq(fs__stack_alloc(FS_DEFAULT_STACK_SIZE, &a), 0);
    cr_assert_eq(fs__stack_alloc(FS_DEFAULT_STACK_SIZE, &b), 0);
    install_segv_handler();
    (void)*(volatile char *)b.guard;
}
