// fibershim-carriers: 2
/* A raw priority-inheritance futex (FUTEX_LOCK_PI / FUTEX_UNLOCK_PI, as a
 * PI mutex of one's own uses them): the kernel records the owner's thread
 * id in the word, and only that thread may unlock it. One thread takes it
 * and gives up the CPU while holding it, beside threads that compute
 * (under the shim, idle carriers may steal it meanwhile); every unlock
 * must succeed, and the word names the holder while it is held.
 *
 * Not covered: two holders at once. Under the shim, fibers on one carrier
 * share its thread id, so the kernel answers the second LOCK_PI EDEADLK. */
#include "common.h"

#include <linux/futex.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/syscall.h>

#define SPINNERS 2
#define ROUNDS 3000

static _Atomic uint32_t pi_word;
static _Atomic int done;

static void *holder(void *arg)
{
    (void)arg;
    for (int r = 0; r < ROUNDS; r++) {
        if (syscall(SYS_futex, &pi_word, FUTEX_LOCK_PI_PRIVATE, 0, NULL, NULL, 0) != 0)
            FAIL("FUTEX_LOCK_PI: %s", errname(errno));
        for (int i = 0; i < 3; i++) {
            if ((atomic_load(&pi_word) & FUTEX_TID_MASK) != (uint32_t)syscall(SYS_gettid))
                FAIL("round %d: the word does not name the holder", r);
            sched_yield();
        }
        if (syscall(SYS_futex, &pi_word, FUTEX_UNLOCK_PI_PRIVATE, 0, NULL, NULL, 0) != 0)
            FAIL("round %d: FUTEX_UNLOCK_PI: %s", r, errname(errno));
        sched_yield();
    }
    atomic_store(&done, 1);
    return NULL;
}

/* Computes for a while between short sleeps: a carrier busy with it
 * leaves the holder's yields in its queue, where an idle carrier may take
 * it (under the shim). */
static void *spinner(void *arg)
{
    (void)arg;
    while (!atomic_load(&done)) {
        int64_t end = clock_ns(CLOCK_MONOTONIC) + 200000;
        while (clock_ns(CLOCK_MONOTONIC) < end)
            ;
        usleep(100);
    }
    return NULL;
}

int main(void)
{
    pthread_t h, y[SPINNERS];
    for (int i = 0; i < SPINNERS; i++)
        CHECK_RC(pthread_create(&y[i], NULL, spinner, NULL));
    CHECK_RC(pthread_create(&h, NULL, holder, NULL));
    CHECK_RC(pthread_join(h, NULL));
    for (int i = 0; i < SPINNERS; i++)
        CHECK_RC(pthread_join(y[i], NULL));
    printf("PI futex: %d lock/unlock rounds, each unlocked by its holder\n", ROUNDS);
    return 0;
}
