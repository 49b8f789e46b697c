/*
 * test_tls.c - per-fiber TLS (tls.c): every fiber has its own glibc thread
 * control block and static TLS, switched with the fs base.
 *
 * Checked: __thread variables start from their init image in every fiber
 * (reused stacks included) and stay the fiber's across parks while fibers
 * migrate between 4 carriers; errno and &errno likewise; the TCB lies at
 * the top of the fiber's reported stack; the canary and pointer guard are
 * the process's; glibc sees the running kernel thread's id (a glibc
 * errorcheck mutex's owner); sched_getcpu() answers; C++ thread_local
 * destructors (registered through __cxa_thread_atexit_impl) run at fiber
 * exit; fibers on caller-owned stacks get TLS too; and malloc's per-thread
 * tcache does not leak per fiber.
 *
 * In a sanitizer build per-fiber TLS is compiled out (tls.c): every test
 * is skipped there.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <link.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "fibershim.h"
#include "util.h"

/* migrate true: the default (FS_MIGRATE_AUTO), which moves started fibers
 * when they have TLS of their own; false: FIBERSHIM_MIGRATE=0. */
static void start(unsigned carriers, bool migrate)
{
    cr_assert_eq(fs_init(&(struct fs_config){
                     .carriers = carriers, .migrate = migrate ? FS_MIGRATE_AUTO : FS_MIGRATE_OFF}),
                 0);
    if (!fs_fiber_tls())
        cr_skip_test("per-fiber TLS is off in this build");
}

static __thread long tls_id = -1;  /* .tdata: an init image */
static __thread char tls_buf[256]; /* .tbss */
static __thread void *tls_self_addr;

static void *thread_pointer(void)
{
    void *tp;
    __asm__ volatile("movq %%fs:0, %0" : "=r"(tp));
    return tp;
}

static uintptr_t fs_word(unsigned off)
{
    uintptr_t v;
    __asm__ volatile("movq %%fs:(%1), %0" : "=r"(v) : "r"((uintptr_t)off));
    return v;
}

/* ---- the stress: migration between 4 carriers ---------------------------- */

enum { STRESS_FIBERS = 200, STRESS_ROUNDS = 150 };
static _Atomic long stress_moves;

/* A forced move: the caller yields while a fiber it spawned spins on their
 * carrier, so the caller can run again only where an idle carrier stole it
 * from the ring. The spinner stops once the caller ran elsewhere (or after
 * 2 s: then the check in the caller fails). Moves by timing alone do not
 * always happen (a fast machine ran the whole stress without one). */
struct mover {
    atomic_bool moved;
};

static void *spin_until_moved(void *arg)
{
    struct mover *m = arg;
    int64_t deadline = fs_now() + 2 * 1000 * 1000 * 1000LL;
    while (!atomic_load(&m->moved) && fs_now() < deadline)
        ;
    return NULL;
}

static bool force_move(void)
{
    /* An idle carrier may steal the spinner before it first runs; then
     * the yield finds nothing to do and returns here. Try again. */
    for (int attempt = 0; attempt < 100; attempt++) {
        struct mover m = {false};
        pid_t before = test_gettid();
        fs_fiber *spinner;
        if (fs_spawn(&spinner, spin_until_moved, &m, NULL) != 0)
            return false;
        fs_yield();
        bool moved = test_gettid() != before;
        atomic_store(&m.moved, true);
        fs_join(spinner, NULL, FS_NO_DEADLINE);
        if (moved)
            return true;
    }
    return false;
}

static void *stress_fiber(void *arg)
{
    long id = (long)arg;
    FCHECK(tls_id == -1 && tls_buf[0] == 0 && tls_self_addr == NULL, "fiber %ld: TLS not fresh",
           id);
    int *(*volatile errloc)(void) = __errno_location;
    int *ep = errloc();
    tls_id = id;
    tls_self_addr = &tls_id;
    snprintf(tls_buf, sizeof tls_buf, "fiber %ld", id);
    pid_t last = test_gettid();
    long moves = 0;
    for (int r = 0; r < STRESS_ROUNDS; r++) {
        *ep = (int)(id * 1000 + r);
        /* Parks of three kinds: a yield, a short sleep, a timed-out wait. */
        if (r == STRESS_ROUNDS / 2 && id % 100 == 0) { /* two spinners at most */
            FCHECK(force_move(), "fiber %ld: a forced move did not move it", id);
        } else if (r % 3 == 0) {
            fs_yield();
        } else if (r % 3 == 1) {
            fs_sleep_until(fs_now() + (r % 7) * US);
        } else {
            struct fs_waiter w;
            fs_waiter_prepare(&w);
            fs_waiter_wait(&w, FS_PARK_OTHER, NULL, fs_now() + 20 * US, NULL, NULL);
        }
        char want[32];
        snprintf(want, sizeof want, "fiber %ld", id);
        FCHECK(tls_id == id && tls_self_addr == &tls_id && strcmp(tls_buf, want) == 0,
               "fiber %ld: __thread changed across a park (round %d)", id, r);
        FCHECK(errloc() == ep && *ep == id * 1000 + r, "fiber %ld: errno changed (round %d)", id,
               r);
        pid_t now = test_gettid();
        moves += now != last;
        last = now;
    }
    atomic_fetch_add(&stress_moves, moves);
    return NULL;
}

Test(tls, stress_migrating_fibers_keep_their_tls)
{
    start(4, true);
    static fs_fiber *f[STRESS_FIBERS];
    for (long i = 0; i < STRESS_FIBERS; i++)
        cr_assert_eq(fs_spawn(&f[i], stress_fiber, (void *)i, NULL), 0);
    for (int i = 0; i < STRESS_FIBERS; i++)
        cr_assert_eq(fs_join(f[i], NULL, FS_NO_DEADLINE), 0);
    FCHECK_REPORT();
    cr_assert_gt(atomic_load(&stress_moves), 0, "no fiber ever moved between carriers");
    cr_assert_eq(tls_id, -1, "the test thread's own __thread changed");
}

/* ---- a fresh TLS on every spawn, reused stacks included -------------------- */

static void *dirty_tls(void *arg)
{
    long *seen = arg;
    *seen = tls_id * 1000 + tls_buf[0];
    tls_id = 7;
    memset(tls_buf, 'x', sizeof tls_buf);
    return NULL;
}

Test(tls, every_fiber_starts_from_the_init_image)
{
    start(1, false);
    for (int i = 0; i < 1000; i++) {
        long seen = 0;
        fs_fiber *f;
        cr_assert_eq(fs_spawn(&f, dirty_tls, &seen, NULL), 0);
        cr_assert_eq(fs_join(f, NULL, FS_NO_DEADLINE), 0);
        cr_assert_eq(seen, -1000, "spawn %d saw a previous fiber's TLS (%ld)", i, seen);
    }
}

/* ---- where the TCB is, and what it holds ---------------------------------- */

struct tcb_facts {
    uintptr_t canary, guard;
    void *tp, *lo;
    size_t size;
    int errno_moved;
};

static void *tcb_fiber(void *arg)
{
    struct tcb_facts *t = arg;
    t->canary = fs_word(0x28);
    t->guard = fs_word(0x30);
    t->tp = thread_pointer();
    fs_fiber_stack(fs_self(), &t->lo, &t->size);
    return NULL;
}

Test(tls, tcb_at_the_top_of_the_stack_with_the_process_guards)
{
    start(1, false);
    struct tcb_facts t = {0};
    run_in_fiber(tcb_fiber, &t);
    cr_assert_eq(t.canary, fs_word(0x28), "stack-protector canary differs");
    cr_assert_eq(t.guard, fs_word(0x30), "pointer guard differs");
    cr_assert_neq(t.tp, thread_pointer());
    cr_assert((uintptr_t)t.tp > (uintptr_t)t.lo && (uintptr_t)t.tp < (uintptr_t)t.lo + t.size,
              "the TCB is not inside the reported stack");
    cr_assert_lt((uintptr_t)t.lo + t.size - (uintptr_t)t.tp, 8192,
                 "the TCB is not at the top of the stack");
}

/* The highest TLS module id loaded (dl_iterate_phdr), and the running
 * fiber's dtv capacity: glibc's dtv_t is 16 bytes, dtv[-1].counter its
 * capacity, and the TCB header's second word points at dtv[0]. */
static int max_modid_cb(struct dl_phdr_info *info, size_t n, void *arg)
{
    (void)n;
    size_t *max = arg;
    if (info->dlpi_tls_modid > *max)
        *max = info->dlpi_tls_modid;
    return 0;
}

struct dtv_facts {
    size_t capacity, modules;
    long tls_id;
};

static void *dtv_fiber(void *arg)
{
    struct dtv_facts *d = arg;
    const size_t *dtv = (const size_t *)fs_word(8);
    d->capacity = dtv[-2];
    dl_iterate_phdr(max_modid_cb, &d->modules);
    tls_id = 7; /* the static blocks still work through the trimmed dtv */
    d->tls_id = tls_id;
    return NULL;
}

/* An idle fiber's dtv has room for the modules loaded, not 14 more
 * (glibc's DTV_SURPLUS): glibc grows it when a module loaded later needs
 * it (tests/programs/tls_dlopen loads one while fibers run), and its 320
 * bytes were what an idle fiber took beyond its two pages. */
Test(tls, dtv_holds_the_modules_loaded)
{
    start(1, false);
    struct dtv_facts d = {0};
    run_in_fiber(dtv_fiber, &d);
    cr_log_info("dtv capacity %zu, highest module id %zu", d.capacity, d.modules);
    cr_assert_eq(d.tls_id, 7);
    cr_assert_geq(d.capacity, d.modules);
    cr_assert_eq(d.capacity, d.modules, "dtv capacity %zu for %zu modules", d.capacity,
                 d.modules);
}

/* A caller-owned stack: the TCB goes elsewhere, the stack stays whole. */
static char user_stack[64 * 1024] __attribute__((aligned(64)));

Test(tls, caller_owned_stack)
{
    start(1, false);
    struct tcb_facts t = {0};
    fs_fiber *f;
    struct fs_spawn_attr a = {.stack_addr = user_stack, .stack_size = sizeof user_stack};
    for (int i = 0; i < 3; i++) {
        long seen = 0;
        cr_assert_eq(fs_spawn(&f, dirty_tls, &seen, &a), 0);
        cr_assert_eq(fs_join(f, NULL, FS_NO_DEADLINE), 0);
        cr_assert_eq(seen, -1000);
    }
    cr_assert_eq(fs_spawn(&f, tcb_fiber, &t, &a), 0);
    cr_assert_eq(fs_join(f, NULL, FS_NO_DEADLINE), 0);
    cr_assert(t.tp && ((uintptr_t)t.tp < (uintptr_t)user_stack ||
                       (uintptr_t)t.tp >= (uintptr_t)user_stack + sizeof user_stack),
              "the TCB was carved from a caller-owned stack");
}

/* ---- glibc's view of the thread ------------------------------------------- */

static void *glibc_fiber(void *arg)
{
    int *out = arg;
    pthread_mutexattr_t ma;
    pthread_mutex_t m;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_init(&m, &ma);
    pthread_mutex_lock(&m);
    /* glibc records THREAD_SELF->tid as the owner. */
    out[0] = m.__data.__owner == test_gettid();
    out[1] = pthread_mutex_lock(&m) == EDEADLK;
    pthread_mutex_unlock(&m);
    out[2] = sched_getcpu() >= 0;
    out[3] = pthread_self() == (pthread_t)thread_pointer();
    return NULL;
}

Test(tls, glibc_sees_the_kernel_thread_and_the_fiber)
{
    start(2, false);
    int out[4] = {0};
    run_in_fiber(glibc_fiber, out);
    cr_assert(out[0], "a glibc mutex's owner is not the carrier's thread id");
    cr_assert(out[1], "glibc's errorcheck mutex did not see its owner relock");
    cr_assert(out[2], "sched_getcpu failed in a fiber");
    cr_assert(out[3], "glibc's pthread_self is not the fiber's TCB");
}

/* ---- thread_local destructors at exit ------------------------------------- */

extern int __cxa_thread_atexit_impl(void (*dtor)(void *), void *obj, void *dso);
extern void *__dso_handle;
static _Atomic int dtors_ran;
static __thread int dtor_obj;

static void count_dtor(void *obj)
{
    if (obj == &dtor_obj)
        atomic_fetch_add(&dtors_ran, 1);
}

static void *register_dtor(void *arg)
{
    (void)arg;
    __cxa_thread_atexit_impl(count_dtor, &dtor_obj, __dso_handle);
    fs_sleep_until(fs_now() + 100 * US); /* a park before the end */
    return NULL;
}

static void *register_and_run_early(void *arg)
{
    int *before_exit = arg;
    __cxa_thread_atexit_impl(count_dtor, &dtor_obj, __dso_handle);
    fs_tls_run_dtors();
    *before_exit = atomic_load(&dtors_ran);
    return NULL;
}

Test(tls, thread_local_destructors_run_at_fiber_exit)
{
    start(2, false);
    enum { N = 64 };
    fs_fiber *f[N];
    for (int i = 0; i < N; i++)
        cr_assert_eq(fs_spawn(&f[i], register_dtor, NULL, NULL), 0);
    for (int i = 0; i < N; i++)
        cr_assert_eq(fs_join(f[i], NULL, FS_NO_DEADLINE), 0);
    cr_assert_eq(atomic_load(&dtors_ran), N);
    int before_exit = 0;
    run_in_fiber(register_and_run_early, &before_exit);
    cr_assert_eq(before_exit, N + 1, "fs_tls_run_dtors did not run them");
    cr_assert_eq(atomic_load(&dtors_ran), N + 1, "a destructor ran twice");
}

/* ---- malloc: no tcache per fiber ------------------------------------------ */

static void *mallocs(void *arg)
{
    (void)arg;
    void *p[8];
    for (int i = 0; i < 8; i++)
        p[i] = malloc(16 + 48 * (size_t)i);
    for (int i = 0; i < 8; i++)
        free(p[i]);
    return NULL;
}

Test(tls, malloc_state_does_not_leak_per_fiber)
{
    start(1, false);
    for (int i = 0; i < 100; i++)
        run_in_fiber(mallocs, NULL);
    size_t before = mallinfo2().uordblks;
    for (int i = 0; i < 20000; i++)
        run_in_fiber(mallocs, NULL);
    long grew = (long)mallinfo2().uordblks - (long)before;
    /* A tcache per fiber would keep 20,000 x (576 bytes + 8 chunks). */
    cr_assert_lt(grew, 1L << 20, "in-use heap grew by %ld bytes", grew);
}
