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
 *
 * Measurements run on created threads (under the shim: fibers).
 *
 *   sync_bench                  the table (medians of 5)
 *   sync_bench ROW [N]          one row, N runs (default 10), each run's
 *                               figure on its own line, then min/median/max;
 *                               ROW: uncontended, pingpong, pool, contention,
 *                               futex, broadcast. The contention target is on the
 *                               worst run, which the medians hide.
 */
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
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

static int cmp_run(const void *a, const void *b)
{
    return cmp(a, b);
}

/* One row, n runs. */
static int one_row(const char *name, int n)
{
    static const char *const names[] = {"uncontended", "pingpong", "pool",
                                        "contention",  "futex",    "broadcast"};
    static const char *const units[] = {"ns", "ns", "items/s", "ops/s", "ns", "rounds/s"};
    int k = -1;
    for (int i = 0; i < 6; i++)
        if (strcmp(name, names[i]) == 0)
            k = i;
    if (k < 0 || n < 1 || n > 1000) {
        fprintf(stderr, "usage: sync_bench [uncontended|pingpong|pool|contention|futex|broadcast "
                        "[runs]]\n");
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
        default: v[r] = broadcast(); break;
        }
        printf("%s run %d: %.1f %s\n", name, r + 1, v[r], units[k]);
        fflush(stdout);
    }
    qsort(v, (size_t)n, sizeof *v, cmp_run);
    printf("%s: min %.1f median %.1f max %.1f %s (%d runs)\n", name, v[0], v[n / 2], v[n - 1],
           units[k], n);
    free(v);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        return one_row(argv[1], argc > 2 ? atoi(argv[2]) : 10);
    double u[REPS], pp[REPS], pl[REPS], ct[REPS], fx[REPS], bc[REPS];
    for (int r = 0; r < REPS; r++) {
        pthread_join(spawn(uncontended, &u[r]), NULL);
        pp[r] = ping_pong();
        pl[r] = pool();
        ct[r] = contention();
        fx[r] = futex_handover();
        bc[r] = broadcast();
        fprintf(stderr, "rep %d: %.1f ns, %.0f ns, %.0f items/s, %.0f ops/s, %.0f ns, %.0f rounds/s\n",
                r + 1, u[r], pp[r], pl[r], ct[r], fx[r], bc[r]);
    }
    printf("| benchmark | result |\n|---|---|\n");
    printf("| uncontended lock+unlock | %.1f ns |\n", median(u));
    printf("| condvar ping-pong round trip | %.0f ns |\n", median(pp));
    printf("| pool, %d consumers | %.0f items/s |\n", POOL_THREADS, median(pl));
    printf("| %d threads on one mutex | %.0f ops/s |\n", CONT_THREADS, median(ct));
    printf("| raw futex hand-over (FUTEX_WAKE to the waiter running) | %.0f ns |\n", median(fx));
    printf("| %d-thread mutex + condvar barrier (broadcast under the mutex) | %.0f rounds/s |\n",
           BC_THREADS, median(bc));
    return 0;
}
