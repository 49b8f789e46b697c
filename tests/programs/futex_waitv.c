// fibershim-carriers: 1 2
/* futex_waitv (Linux 5.16): one thread waits on several words at once and
 * learns which one woke it; a word that does not match fails the call
 * with EAGAIN; an absolute deadline ends it with ETIMEDOUT. Under the
 * shim at one carrier, the waker runs on the carrier the waiter left. */
#include "common.h"

#include <linux/futex.h>
#include <stdatomic.h>
#include <sys/syscall.h>

static uint32_t words[3];

static long waitv(struct futex_waitv *v, unsigned n, const struct timespec *abs)
{
    return syscall(SYS_futex_waitv, v, n, 0, abs, CLOCK_MONOTONIC);
}

static void fill(struct futex_waitv *v, uint32_t expect1)
{
    for (int i = 0; i < 3; i++)
        v[i] = (struct futex_waitv){.val = i == 1 ? expect1 : 0,
                                    .uaddr = (uintptr_t)&words[i],
                                    .flags = FUTEX_32 | FUTEX_PRIVATE_FLAG};
}

static _Atomic int waiting;
static long woken_rc; /* 2, or -1 (EAGAIN) if the word changed first */

static void *waiter(void *arg)
{
    (void)arg;
    struct futex_waitv v[3];
    fill(v, 0);
    atomic_store(&waiting, 1);
    do
        woken_rc = waitv(v, 3, NULL);
    while (woken_rc < 0 && errno == EAGAIN && __atomic_load_n(&words[2], __ATOMIC_SEQ_CST) == 0);
    return NULL;
}

int main(void)
{
    struct futex_waitv v[3];
    fill(v, 0);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (waitv(v, 3, &now) < 0 && errno == ENOSYS) {
        printf("futex_waitv: not in this kernel\n");
        return 77;
    }

    fill(v, 5);
    EXPECT_ERRNO(waitv(v, 3, NULL), EAGAIN);
    printf("a word that does not match: EAGAIN\n");

    fill(v, 0);
    int64_t t0 = clock_ns(CLOCK_MONOTONIC);
    struct timespec dl = ns_to_ts(t0 + 20000000);
    EXPECT_ERRNO(waitv(v, 3, &dl), ETIMEDOUT);
    printf("absolute deadline: ETIMEDOUT, not before it: %s\n",
           yesno(clock_ns(CLOCK_MONOTONIC) >= t0 + 20000000));

    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, waiter, NULL));
    while (!atomic_load(&waiting))
        usleep(1000);
    usleep(50000);
    __atomic_store_n(&words[2], 1, __ATOMIC_SEQ_CST);
    long n = syscall(SYS_futex, &words[2], FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    CHECK(n == 0 || n == 1);
    CHECK_RC(pthread_join(t, NULL));
    /* EAGAIN: it came to wait only after the word changed (a slow start). */
    printf("woken by the third word: %s\n", woken_rc == 2 || woken_rc == -1 ? "yes" : "no");
    return 0;
}
