// fibershim-carriers: 1 2
/* Stacks of threads created with default attributes are glibc's default
 * size (RLIMIT_STACK when the process started, 2 MiB if unlimited), and
 * pthread_setattr_default_np changes that default.
 *  - 4 threads with default attributes each use, one after the other, a
 *    300 KiB local array, a 1 MiB alloca and a recursion half the default
 *    size deep (4 MiB at the usual 8 MiB), all 4 at once: each fills its
 *    memory with a pattern of its own, reads a token from its pipe into
 *    the lowest byte (a read into the array, as a server reads into a
 *    buffer), blocks until every thread is blocked, then checks every byte.
 *    A stack smaller than the default overflows or overlaps its
 *    neighbour's; the checks see it (or the program dies).
 *  - pthread_getattr_np in such a thread: size == the default, guard one
 *    page, its own locals inside [lo, hi).
 *  - pthread_setattr_default_np with twice the size and a 64 KiB guard: a
 *    thread created with a fresh pthread_attr_init attr gets the new size
 *    and a one-page guard, as glibc gives it; one created with default
 *    attributes gets both (and uses 1.5x the old default).
 *  - guard sizes: what pthread_attr_setguardsize set is what
 *    pthread_getattr_np reports, in whole pages (0 stays 0).
 * Sizes are printed relative to the default, so the output does not
 * depend on RLIMIT_STACK. Skipped (77) if the default is under 2 MiB. */
#include "common.h"
#include <alloca.h>
#include <stdatomic.h>

#define NTHREADS 4
#define ARRAY (300 * 1024)
#define ALLOCA (1024 * 1024)
#define FRAME 1024

static size_t def_size, def_guard, page;
static atomic_int blocked;
static int pipes[NTHREADS][2];

static unsigned char pattern(int id, size_t k)
{
    return (unsigned char)(id * 37 + k * 7 + (k >> 12));
}

/* Fills buf with id's pattern, except its first byte, which comes from a
 * read of the thread's pipe once all threads are here: main writes it. */
static void fill_and_block(int id, volatile unsigned char *buf, size_t n)
{
    for (size_t k = 1; k < n; k++)
        buf[k] = pattern(id, k);
    atomic_fetch_add(&blocked, 1);
    if (read(pipes[id][0], (unsigned char *)buf, 1) != 1)
        FAIL("thread %d: read: %s", id, errname(errno));
}

static size_t count_bad(int id, volatile unsigned char *buf, size_t n)
{
    size_t bad = 0;
    for (size_t k = 0; k < n; k++)
        bad += buf[k] != pattern(id, k);
    return bad;
}

static __attribute__((noinline)) size_t use_array(int id)
{
    volatile unsigned char a[ARRAY];
    fill_and_block(id, a, sizeof a);
    return count_bad(id, a, sizeof a);
}

static __attribute__((noinline)) size_t use_alloca(int id)
{
    volatile unsigned char *a = alloca(ALLOCA);
    fill_and_block(id, a, ALLOCA);
    return count_bad(id, a, ALLOCA);
}

/* depth frames of a FRAME-byte buffer each; the deepest one blocks. */
static __attribute__((noinline)) size_t recurse(int id, int depth)
{
    volatile unsigned char pad[FRAME];
    size_t bad;
    if (depth == 0) {
        fill_and_block(id, pad, sizeof pad);
        bad = 0;
    } else {
        for (size_t k = 1; k < sizeof pad; k++)
            pad[k] = pattern(id + depth, k);
        pad[0] = pattern(id + depth, 0);
        bad = recurse(id, depth - 1);
        for (size_t k = 0; k < sizeof pad; k++)
            bad += pad[k] != pattern(id + depth, k);
        return bad;
    }
    return bad + count_bad(id, pad, sizeof pad);
}

static size_t (*phase_fn)(int id);
static int recurse_depth;

static size_t use_recursion(int id)
{
    return recurse(id, recurse_depth);
}

static void *user(void *arg)
{
    int id = (int)(intptr_t)arg;
    return (void *)(uintptr_t)phase_fn(id);
}

/* Runs fn in NTHREADS default-attribute threads at once; prints how many
 * bytes were wrong in all. */
static void phase(const char *what, size_t (*fn)(int))
{
    pthread_t t[NTHREADS];
    phase_fn = fn;
    atomic_store(&blocked, 0);
    for (int i = 0; i < NTHREADS; i++)
        CHECK_RC(pthread_create(&t[i], NULL, user, (void *)(intptr_t)i));
    while (atomic_load(&blocked) < NTHREADS)
        sleep_ms(1);
    sleep_ms(20); /* let the last ones reach their read */
    for (int i = 0; i < NTHREADS; i++) {
        unsigned char b = pattern(i, 0);
        CHECK(write(pipes[i][1], &b, 1) == 1);
    }
    size_t bad = 0;
    for (int i = 0; i < NTHREADS; i++) {
        void *ret;
        CHECK_RC(pthread_join(t[i], &ret));
        bad += (uintptr_t)ret;
    }
    printf("%s, %d threads at once, blocked in read: %zu bytes wrong\n", what, NTHREADS, bad);
}

struct seen {
    size_t size, guard;
    int inside;
};

static void *report(void *arg)
{
    struct seen *s = arg;
    pthread_attr_t a;
    void *lo;
    int local = 0;
    CHECK_RC(pthread_getattr_np(pthread_self(), &a));
    CHECK_RC(pthread_attr_getstack(&a, &lo, &s->size));
    CHECK_RC(pthread_attr_getguardsize(&a, &s->guard));
    CHECK_RC(pthread_attr_destroy(&a));
    s->inside = (char *)&local >= (char *)lo && (char *)&local < (char *)lo + s->size;
    return NULL;
}

static struct seen seen_with(const pthread_attr_t *attr)
{
    struct seen s;
    pthread_t t;
    CHECK_RC(pthread_create(&t, attr, report, &s));
    CHECK_RC(pthread_join(t, NULL));
    return s;
}

/* Touches the lowest byte of an alloca of n bytes. */
static void *deep(void *arg)
{
    size_t n = (size_t)(uintptr_t)arg;
    volatile char *p = alloca(n);
    p[0] = 1;
    p[n - 1] = 1;
    return (void *)(uintptr_t)(p[0] + p[n - 1]);
}

int main(void)
{
    tp_setup(100);
    page = (size_t)sysconf(_SC_PAGESIZE);
    pthread_attr_t def;
    CHECK_RC(pthread_getattr_default_np(&def));
    CHECK_RC(pthread_attr_getstacksize(&def, &def_size));
    CHECK_RC(pthread_attr_getguardsize(&def, &def_guard));
    if (def_size < 2 * 1024 * 1024) {
        printf("SKIP: default stack below 2 MiB (RLIMIT_STACK)\n");
        return 77;
    }
    for (int i = 0; i < NTHREADS; i++)
        CHECK_SYS(pipe(pipes[i]));

    struct seen s = seen_with(NULL);
    printf("default attributes: size == default: %s, guard == one page: %s, "
           "locals inside [lo, hi): %s\n",
           yesno(s.size == def_size), yesno(s.guard == page && def_guard == page), yesno(s.inside));

    phase("300 KiB local array", use_array);
    phase("1 MiB alloca", use_alloca);
    recurse_depth = (int)(def_size / 2 / FRAME);
    phase("recursion half the default size deep", use_recursion);

    /* A new default: twice the size, a 64 KiB guard. */
    pthread_attr_t nd;
    CHECK_RC(pthread_attr_init(&nd));
    CHECK_RC(pthread_attr_setstacksize(&nd, 2 * def_size));
    CHECK_RC(pthread_attr_setguardsize(&nd, 64 * 1024));
    CHECK_RC(pthread_setattr_default_np(&nd));
    CHECK_RC(pthread_attr_destroy(&nd));
    /* Smallest first: glibc reuses a cached stack at least as big as the
     * one asked for, and reports its whole size. */
    pthread_attr_t fresh;
    CHECK_RC(pthread_attr_init(&fresh));
    s = seen_with(&fresh);
    printf("after pthread_setattr_default_np(2x size, 64 KiB guard), a pthread_attr_init attr: "
           "size == 2x default: %s, guard == one page: %s\n",
           yesno(s.size == 2 * def_size), yesno(s.guard == page));
    CHECK_RC(pthread_attr_destroy(&fresh));
    s = seen_with(NULL);
    printf("default attributes: size == 2x default: %s, guard == 64 KiB: %s\n",
           yesno(s.size == 2 * def_size), yesno(s.guard == 64 * 1024));
    pthread_t t;
    void *ret;
    CHECK_RC(pthread_create(&t, NULL, deep, (void *)(uintptr_t)(def_size + def_size / 2)));
    CHECK_RC(pthread_join(t, &ret));
    printf("alloca of 1.5x the old default in such a thread: %s\n", yesno(ret == (void *)2));
    CHECK_RC(pthread_setattr_default_np(&def));
    CHECK_RC(pthread_attr_destroy(&def));
    s = seen_with(NULL);
    /* From here on glibc may hand out cached stacks bigger than asked for
     * (it keeps 40 MiB of them): only lower bounds on sizes. */
    printf("default restored: size >= default: %s, guard == one page: %s\n",
           yesno(s.size >= def_size), yesno(s.guard == page));

    static const size_t guards[] = {0, 1, 4096, 10000, 64 * 1024, 1024 * 1024};
    for (size_t i = 0; i < sizeof guards / sizeof guards[0]; i++) {
        pthread_attr_t a;
        CHECK_RC(pthread_attr_init(&a));
        CHECK_RC(pthread_attr_setguardsize(&a, guards[i]));
        s = seen_with(&a);
        CHECK_RC(pthread_attr_destroy(&a));
        printf("guardsize %zu: reported %zu pages%s\n", guards[i], s.guard / page,
               s.guard % page ? " and a part" : "");
    }
    printf("done\n");
    return 0;
}
