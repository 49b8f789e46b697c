/* Barriers, pthread_once and spinlocks.
 *  - barrier: 16 threads x 100 cycles; PTHREAD_BARRIER_SERIAL_THREAD is
 *    returned to exactly one thread per cycle and nobody leaves a cycle
 *    before everyone arrived; count 0 is EINVAL; count 1 never blocks.
 *  - pthread_once with an init routine that blocks (sleeps 100 ms), called
 *    from 50 threads: runs once, every caller returns only after it has
 *    finished; a second once_control runs its routine again once.
 *  - spinlocks: counter correctness under contention, trylock EBUSY.
 */
#include "common.h"
#include <stdatomic.h>

/* ---- barrier ---- */

#define BT 16
#define CYCLES 100
static pthread_barrier_t bar;
static atomic_int arrived[CYCLES], serial[CYCLES], early_leave;

static void *barrier_thread(void *unused)
{
    for (int c = 0; c < CYCLES; c++) {
        atomic_fetch_add(&arrived[c], 1);
        int rc = pthread_barrier_wait(&bar);
        if (rc == PTHREAD_BARRIER_SERIAL_THREAD)
            atomic_fetch_add(&serial[c], 1);
        else if (rc != 0)
            FAIL("pthread_barrier_wait: %s", errname(rc));
        if (atomic_load(&arrived[c]) != BT)
            atomic_fetch_add(&early_leave, 1);
    }
    return NULL;
}

/* ---- once ---- */

static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_once_t once2 = PTHREAD_ONCE_INIT;
static atomic_int init_runs, init_done, saw_done, init2_runs;

static void slow_init(void)
{
    atomic_fetch_add(&init_runs, 1);
    sleep_ms(100);
    atomic_store(&init_done, 1);
}
static void init2(void) { atomic_fetch_add(&init2_runs, 1); }

static void *once_thread(void *unused)
{
    CHECK_RC(pthread_once(&once, slow_init));
    atomic_fetch_add(&saw_done, atomic_load(&init_done));
    CHECK_RC(pthread_once(&once2, init2));
    return NULL;
}

/* ---- spin ---- */

#define ST 4
#define SITERS 50000
static pthread_spinlock_t spin;
static long spin_counter;

static void *spin_thread(void *unused)
{
    for (int i = 0; i < SITERS; i++) {
        CHECK_RC(pthread_spin_lock(&spin));
        spin_counter++;
        CHECK_RC(pthread_spin_unlock(&spin));
    }
    return NULL;
}

static int other_trylock_rc;
static void *spin_try(void *unused)
{
    other_trylock_rc = pthread_spin_trylock(&spin);
    if (other_trylock_rc == 0)
        pthread_spin_unlock(&spin);
    return NULL;
}

int main(void)
{
    tp_setup(60);

    /* barrier */
    CHECK_RC(pthread_barrier_init(&bar, NULL, BT));
    pthread_t t[BT];
    for (int i = 0; i < BT; i++)
        CHECK_RC(pthread_create(&t[i], NULL, barrier_thread, NULL));
    for (int i = 0; i < BT; i++)
        CHECK_RC(pthread_join(t[i], NULL));
    int exactly_one = 0;
    for (int c = 0; c < CYCLES; c++)
        exactly_one += serial[c] == 1;
    printf("barrier %d threads x %d cycles: one SERIAL_THREAD per cycle: %d/%d, left early: %d\n",
           BT, CYCLES, exactly_one, CYCLES, (int)early_leave);
    CHECK_RC(pthread_barrier_destroy(&bar));
    pthread_barrier_t b0;
    printf("barrier_init count 0: %s\n", errname(pthread_barrier_init(&b0, NULL, 0)));
    pthread_barrier_t b1;
    CHECK_RC(pthread_barrier_init(&b1, NULL, 1));
    int r1 = pthread_barrier_wait(&b1), r2 = pthread_barrier_wait(&b1);
    printf("barrier count 1: both waits SERIAL_THREAD: %s\n",
           yesno(r1 == PTHREAD_BARRIER_SERIAL_THREAD && r2 == PTHREAD_BARRIER_SERIAL_THREAD));
    CHECK_RC(pthread_barrier_destroy(&b1));

    /* once */
    pthread_t o[50];
    for (int i = 0; i < 50; i++)
        CHECK_RC(pthread_create(&o[i], NULL, once_thread, NULL));
    for (int i = 0; i < 50; i++)
        CHECK_RC(pthread_join(o[i], NULL));
    CHECK_RC(pthread_once(&once, slow_init));
    printf("pthread_once with a sleeping init from 50 threads: ran %d time(s), callers that "
           "returned after it finished: %d/50\n",
           (int)init_runs, (int)saw_done);
    printf("second once_control: ran %d time(s)\n", (int)init2_runs);

    /* spin */
    CHECK_RC(pthread_spin_init(&spin, PTHREAD_PROCESS_PRIVATE));
    pthread_t s[ST];
    for (int i = 0; i < ST; i++)
        CHECK_RC(pthread_create(&s[i], NULL, spin_thread, NULL));
    for (int i = 0; i < ST; i++)
        CHECK_RC(pthread_join(s[i], NULL));
    printf("spinlock %d threads x %d: counter %ld\n", ST, SITERS, spin_counter);
    CHECK_RC(pthread_spin_lock(&spin));
    pthread_t st;
    CHECK_RC(pthread_create(&st, NULL, spin_try, NULL));
    CHECK_RC(pthread_join(st, NULL));
    int own_try = pthread_spin_trylock(&spin);
    CHECK_RC(pthread_spin_unlock(&spin));
    printf("spin_trylock while held: other thread %s, owner %s\n", errname(other_trylock_rc),
           errname(own_try));
    CHECK_RC(pthread_create(&st, NULL, spin_try, NULL));
    CHECK_RC(pthread_join(st, NULL));
    printf("spin_trylock when free: %s\n", errname(other_trylock_rc));
    CHECK_RC(pthread_spin_destroy(&spin));

    printf("sync_barrier_once_spin: ok\n");
    return 0;
}
