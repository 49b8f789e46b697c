/*
 * sync_bench.c - pthread synchronization micro-benchmarks.
 *
 * A plain pthread program: run it as is for kernel threads, and with
 * LD_PRELOAD=libfibershim.so for fibers. Prints a Markdown table; each
 * number is the median of 5 repetitions.
 *
 *   uncontended   mutex lock + unlock by one thread, ns per pair
 *   ping-pong     condvar round trip between two threads, ns
 *   pool          10,000 consumer threads fed by one producer through a
 *                 mutex + condvar queue, items/s
 *   contention    1,000 threads locking one mutex, lock+unlock pairs/s
 *   futex         raw futex hand-over between two threads: a word passed
 *                 back and forth with syscall(SYS_futex, FUTEX_WAKE) and
 *                 FUTEX_WAIT, as a latch hands itself to its waiter; ns
 *                 from one side's wake to the other side running
 *   broadcast     64 threads meeting at a mutex + condvar barrier (the last
 *                 one broadcasts with the mutex held), rounds/s
 *   gil           CPython's GIL hand-over (timed condvar waits, forced
 *                 switching): main gives it up for a 1 ms sleep and takes
 *                 it back from 4 computing threads, 40 times; seconds
 *
 * Measurements run on created threads (under the shim: fibers), but for
 * gil's, where main is the thread measured.
 *
 *   sync_bench                  the table (medians of 5)
 *   sync_bench ROW [N]          one row, N runs (default 10), each run's
 *                               figure on its own line, then min/median/max;
 *                               ROW: uncontended, pingpong, pool, contention,
 *                               futex, broadcast, gil. The contention target is on the
 *                               worst run, which the medians hide.
 */
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define REPS 5
#define STACK (64 * 1024)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void check(int rc, const char *what)
{
    if (rc) {
        fprintf(stderr, "%s: %s\n", what, strerror(rc));
        exit(1);
    }
}

static pthread_t spawn(void *(*fn)(void *), void *arg)
{
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setstacksize(&a, STACK);
    pthread_t t;
    check(pthread_create(&t, &a, fn, arg), "pthread_create");
    pthread_attr_destroy(&a);
    return t;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v)
{
    qsort(v, REPS, sizeof *v, cmp);
    return v[REPS / 2];
}

/* ---- uncontended ---------------------------------------------------------------- */

#define UNCONTENDED_ITERS 20000000

static void *uncontended(void *out)
{
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    double t0 = now_s();
    for (int i = 0; i < UNCONTENDED_ITERS; i++) {
        pthread_mutex_lock(&m);
        __asm__ volatile("" ::: "memory");
        pthread_mutex_unlock(&m);
    }
    *(double *)out = (now_s() - t0) * 1e9 / UNCONTENDED_ITERS;
    return NULL;
}

/* ---- ping-pong ----------------------------------------------------------------------- */

#define PP_ROUNDS 100000

static pthread_mutex_t pp_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pp_c = PTHREAD_COND_INITIALIZER;
static int pp_turn;

static void *pp_player(void *arg)
{
    int me = (int)(long)arg;
    for (int i = 0; i < PP_ROUNDS; i++) {
        pthread_mutex_lock(&pp_m);
        while (pp_turn != me)
            pthread_cond_wait(&pp_c, &pp_m);
        pp_turn = 1 - me;
        pthread_cond_signal(&pp_c);
        pthread_mutex_unlock(&pp_m);
    }
    return NULL;
}

static double ping_pong(void)
{
    pp_turn = 0;
    double t0 = now_s();
    pthread_t a = spawn(pp_player, (void *)0), b = spawn(pp_player, (void *)1);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    return (now_s() - t0) * 1e9 / PP_ROUNDS;
}

/* ---- pool ------------------------------------------------------------------------------ */

#define POOL_THREADS 10000
#define POOL_ITEMS 200000
#define POOL_CAP 1024

static pthread_mutex_t pool_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_nonempty = PTHREAD_COND_INITIALIZER;
static pthread_cond_t pool_nonfull = PTHREAD_COND_INITIALIZER;
static int pool_q[POOL_CAP], pool_head, pool_len, pool_started;
static int pool_closed;
static long pool_done;

static void *pool_consumer(void *arg)
{
    pthread_mutex_lock(&pool_m);
    pool_started++;
    for (;;) {
        while (pool_len == 0 && !pool_closed)
            pthread_cond_wait(&pool_nonempty, &pool_m);
        if (pool_len == 0)
            break;
        pool_head = (pool_head + 1) % POOL_CAP;
        pool_len--;
        pool_done++;
        pthread_cond_signal(&pool_nonfull);
        pthread_mutex_unlock(&pool_m);
        for (volatile int i = 0; i < 100; i++) /* the "work" */
            ;
        pthread_mutex_lock(&pool_m);
    }
    pthread_mutex_unlock(&pool_m);
    return NULL;
}

static double pool(void)
{
    static pthread_t t[POOL_THREADS];
    pool_head = pool_len = pool_started = pool_closed = 0;
    pool_done = 0;
    for (int i = 0; i < POOL_THREADS; i++)
        t[i] = spawn(pool_consumer, NULL);
    for (;;) { /* all waiting before the clock starts */
        pthread_mutex_lock(&pool_m);
        int s = pool_started;
        pthread_mutex_unlock(&pool_m);
        if (s == POOL_THREADS)
            break;
        sched_yield();
    }
    double t0 = now_s();
    for (int i = 0; i < POOL_ITEMS; i++) {
        pthread_mutex_lock(&pool_m);
        while (pool_len == POOL_CAP)
            pthread_cond_wait(&pool_nonfull, &pool_m);
        pool_q[(pool_head + pool_len) % POOL_CAP] = i;
        pool_len++;
        pthread_cond_signal(&pool_nonempty);
        pthread_mutex_unlock(&pool_m);
    }
    pthread_mutex_lock(&pool_m);
    while (pool_done < POOL_ITEMS) {
        pthread_mutex_unlock(&pool_m);
        sched_yield();
        pthread_mutex_lock(&pool_m);
    }
    double dt = now_s() - t0;
    pool_closed = 1;
    pthread_cond_broadcast(&pool_nonempty);
    pthread_mutex_unlock(&pool_m);
    for (int i = 0; i < POOL_THREADS; i++)
        pthread_join(t[i], NULL);
    return POOL_ITEMS / dt;
}

/* ---- contention -------------------------------------------------------------------------- */

#define CONT_THREADS 1000
#define CONT_ITERS 1000

static pthread_mutex_t cont_m = PTHREAD_MUTEX_INITIALIZER;
static long cont_counter;

static void *cont_worker(void *arg)
{
    for (int i = 0; i < CONT_ITERS; i++) {
        pthread_mutex_lock(&cont_m);
        cont_counter++;
        pthread_mutex_unlock(&cont_m);
    }
    return NULL;
}

static double contention(void)
{
    static pthread_t t[CONT_THREADS];
    cont_counter = 0;
    double t0 = now_s();
    for (int i = 0; i < CONT_THREADS; i++)
        t[i] = spawn(cont_worker, NULL);
    for (int i = 0; i < CONT_THREADS; i++)
        pthread_join(t[i], NULL);
    double dt = now_s() - t0;
    if (cont_counter != (long)CONT_THREADS * CONT_ITERS) {
        fprintf(stderr, "contention: counter %ld\n", cont_counter);
        exit(1);
    }
    return cont_counter / dt;
}

/* ---- broadcast: a mutex + condvar barrier ------------------------------------------- */

/* BC_THREADS threads meet BC_ROUNDS times at a barrier built the usual
 * way: the last to arrive bumps the generation and broadcasts, with the
 * mutex held, and every other one waits for the generation to change. Each
 * broadcast wakes BC_THREADS - 1 waiters that all need the mutex the
 * broadcaster holds (what wait morphing is for). Rounds per second. */
#define BC_THREADS 64
#define BC_ROUNDS 2000

static pthread_mutex_t bc_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t bc_c = PTHREAD_COND_INITIALIZER;
static int bc_arrived;
static unsigned bc_gen;

static void *bc_worker(void *arg)
{
    (void)arg;
    for (int r = 0; r < BC_ROUNDS; r++) {
        pthread_mutex_lock(&bc_m);
        unsigned gen = bc_gen;
        if (++bc_arrived == BC_THREADS) {
            bc_arrived = 0;
            bc_gen++;
            pthread_cond_broadcast(&bc_c);
        } else {
            while (bc_gen == gen)
                pthread_cond_wait(&bc_c, &bc_m);
        }
        pthread_mutex_unlock(&bc_m);
    }
    return NULL;
}

static double broadcast(void)
{
    static pthread_t t[BC_THREADS];
    bc_arrived = 0;
    bc_gen = 0;
    double t0 = now_s();
    for (int i = 0; i < BC_THREADS; i++)
        t[i] = spawn(bc_worker, NULL);
    for (int i = 0; i < BC_THREADS; i++)
        pthread_join(t[i], NULL);
    if (bc_gen != BC_ROUNDS) {
        fprintf(stderr, "broadcast: %u rounds\n", bc_gen);
        exit(1);
    }
    return BC_ROUNDS / (now_s() - t0);
}

/* ---- raw futex hand-over ------------------------------------------------------- */

#define FX_ROUNDS 200000

static _Atomic uint32_t fx_turn;

/* Waits for its turn on the word, hands it over, wakes the other. */
static void *fx_player(void *arg)
{
    uint32_t me = (uint32_t)(uintptr_t)arg;
    for (int i = 0; i < FX_ROUNDS; i++) {
        uint32_t t;
        while ((t = atomic_load(&fx_turn)) != me)
            syscall(SYS_futex, &fx_turn, FUTEX_WAIT_PRIVATE, t, NULL, NULL, 0);
        atomic_store(&fx_turn, 1 - me);
        syscall(SYS_futex, &fx_turn, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    }
    return NULL;
}

static double futex_handover(void)
{
    atomic_store(&fx_turn, 0);
    double t0 = now_s();
    pthread_t a = spawn(fx_player, (void *)0), b = spawn(fx_player, (void *)1);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    return (now_s() - t0) * 1e9 / (2.0 * FX_ROUNDS);
}

/* ---- GIL hand-back -------------------------------------------------------------- */

/* CPython's GIL (Python/ceval_gil.h, FORCE_SWITCHING): a mutex, a flag and
 * a condvar; a waiter times out every 5 ms and then asks the holder to
 * drop it; a holder that drops on request waits until another thread has
 * taken it. GIL_SPINNERS threads compute holding it; main (CPython's
 * main thread, doing I/O) gives it up for a 1 ms sleep GIL_ROUNDS times
 * and takes it back. Result: seconds for the rounds. Run by main, unlike
 * the other rows: main is where CPython does it, and under the shim main
 * keeps a kernel thread of its own. The switch condvar is signalled under
 * its mutex (CPython 3.11 signals it without), so that no wake is lost
 * when a run ends. */
#define GIL_SPINNERS 4
#define GIL_ROUNDS 40

static pthread_mutex_t gil_m = PTHREAD_MUTEX_INITIALIZER, gil_sw_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gil_c, gil_sw_c = PTHREAD_COND_INITIALIZER;
static atomic_int gil_locked, gil_drop, gil_stop;
static atomic_long gil_holder;
static unsigned long gil_switches; /* under gil_m */

static void gil_take(long me)
{
    pthread_mutex_lock(&gil_m);
    while (atomic_load(&gil_locked)) {
        unsigned long saved = gil_switches;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 5000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        if (pthread_cond_timedwait(&gil_c, &gil_m, &ts) == ETIMEDOUT &&
            atomic_load(&gil_locked) && gil_switches == saved)
            atomic_store(&gil_drop, 1);
    }
    atomic_store(&gil_locked, 1);
    if (atomic_load(&gil_holder) != me) {
        atomic_store(&gil_holder, me);
        gil_switches++;
    }
    pthread_mutex_lock(&gil_sw_m);
    pthread_cond_signal(&gil_sw_c);
    pthread_mutex_unlock(&gil_sw_m);
    atomic_store(&gil_drop, 0);
    pthread_mutex_unlock(&gil_m);
}

static void gil_give(long me)
{
    pthread_mutex_lock(&gil_m);
    atomic_store(&gil_locked, 0);
    pthread_cond_signal(&gil_c);
    pthread_mutex_unlock(&gil_m);
    if (atomic_load(&gil_drop)) {
        pthread_mutex_lock(&gil_sw_m);
        if (atomic_load(&gil_holder) == me) {
            atomic_store(&gil_drop, 0);
            pthread_cond_wait(&gil_sw_c, &gil_sw_m);
        }
        pthread_mutex_unlock(&gil_sw_m);
    }
}

static void *gil_spinner(void *arg)
{
    long me = (long)arg;
    volatile unsigned long x = 0;
    gil_take(me);
    while (!atomic_load(&gil_stop)) {
        for (int i = 0; i < 1000; i++)
            x++;
        if (atomic_load(&gil_drop)) {
            gil_give(me);
            gil_take(me);
        }
    }
    gil_give(me);
    return NULL;
}

static double gil_handback(void)
{
    static bool once;
    if (!once) {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&gil_c, &ca);
        once = true;
    }
    atomic_store(&gil_stop, 0);
    atomic_store(&gil_drop, 0);
    pthread_t t[GIL_SPINNERS];
    gil_take(0);
    for (long i = 0; i < GIL_SPINNERS; i++) {
        gil_give(0);
        t[i] = spawn(gil_spinner, (void *)(i + 1));
        gil_take(0);
    }
    double t0 = now_s();
    for (int r = 0; r < GIL_ROUNDS; r++) {
        gil_give(0);
        usleep(1000);
        gil_take(0);
    }
    double s = now_s() - t0;
    atomic_store(&gil_stop, 1);
    gil_give(0);
    for (int i = 0; i < GIL_SPINNERS; i++)
        pthread_join(t[i], NULL);
    return s;
}

static int cmp_run(const void *a, const void *b)
{
    return cmp(a, b);
}

/* One row, n runs. */
static int one_row(const char *name, int n)
{
    static const char *const names[] = {"uncontended", "pingpong",  "pool", "contention",
                                        "futex",       "broadcast", "gil"};
    static const char *const units[] = {"ns", "ns", "items/s", "ops/s", "ns", "rounds/s", "s"};
    int k = -1;
    for (int i = 0; i < 7; i++)
        if (strcmp(name, names[i]) == 0)
            k = i;
    if (k < 0 || n < 1 || n > 1000) {
        fprintf(stderr, "usage: sync_bench [uncontended|pingpong|pool|contention|futex|broadcast|"
                        "gil [runs]]\n");
        return 2;
    }
    double *v = calloc((size_t)n, sizeof *v);
    for (int r = 0; r < n; r++) {
        switch (k) {
        case 0: pthread_join(spawn(uncontended, &v[r]), NULL); break;
        case 1: v[r] = ping_pong(); break;
        case 2: v[r] = pool(); break;
        case 3: v[r] = contention(); break;
        case 4: v[r] = futex_handover(); break;
        case 5: v[r] = broadcast(); break;
        default: v[r] = gil_handback(); break;
        }
        printf("%s run %d: %.*f %s\n", name, r + 1, k == 6 ? 3 : 1, v[r], units[k]);
        fflush(stdout);
    }
    qsort(v, (size_t)n, sizeof *v, cmp_run);
    int d = k == 6 ? 3 : 1;
    printf("%s: min %.*f median %.*f max %.*f %s (%d runs)\n", name, d, v[0], d, v[n / 2], d,
           v[n - 1], units[k], n);
    free(v);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        return one_row(argv[1], argc > 2 ? atoi(argv[2]) : 10);
    double u[REPS], pp[REPS], pl[REPS], ct[REPS], fx[REPS], bc[REPS], gl[REPS];
    for (int r = 0; r < REPS; r++) {
        pthread_join(spawn(uncontended, &u[r]), NULL);
        pp[r] = ping_pong();
        pl[r] = pool();
        ct[r] = contention();
        fx[r] = futex_handover();
        bc[r] = broadcast();
        gl[r] = gil_handback();
        fprintf(stderr,
                "rep %d: %.1f ns, %.0f ns, %.0f items/s, %.0f ops/s, %.0f ns, %.0f rounds/s, %.3f s\n",
                r + 1, u[r], pp[r], pl[r], ct[r], fx[r], bc[r], gl[r]);
    }
    printf("| benchmark | result |\n|---|---|\n");
    printf("| uncontended lock+unlock | %.1f ns |\n", median(u));
    printf("| condvar ping-pong round trip | %.0f ns |\n", median(pp));
    printf("| pool, %d consumers | %.0f items/s |\n", POOL_THREADS, median(pl));
    printf("| %d threads on one mutex | %.0f ops/s |\n", CONT_THREADS, median(ct));
    printf("| raw futex hand-over (FUTEX_WAKE to the waiter running) | %.0f ns |\n", median(fx));
    printf("| %d-thread mutex + condvar barrier (broadcast under the mutex) | %.0f rounds/s |\n",
           BC_THREADS, median(bc));
    printf("| GIL hand-back: main takes a CPython-style GIL back from %d computing threads after a 1 ms "
           "sleep, %d times | %.3f s |\n",
           GIL_SPINNERS, GIL_ROUNDS, median(gl));
    return 0;
}
