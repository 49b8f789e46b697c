/*
 * test_offload_slow.c - shim/offload.c: an idle spare thread retires
 * after about 10 s (SHIM_SPARE_IDLE_NS), and the pool starts a new one
 * for the next call.
 */
#include "offload_util.h"

#include <unistd.h>

SHIM_DECL(fsync)

static void *one_call(void *unused)
{
    (void)unused;
    errno = 0;
    FCHECK_EQ(shim__fsync(-1), -1);
    FCHECK_EQ(errno, EBADF);
    return NULL;
}

static void *nothing(void *unused)
{
    return unused;
}

Test(offload_slow, idle_spare_retires_after_10s)
{
    start_runtime(1);
    join(spawn(nothing, NULL)); /* the carrier is up */
    int base = task_count();
    /* The spare reads its idle deadline's clock after it has run the
     * call, so after this read; read it after join instead and the spare
     * may have read it first (it did: "retired after 9996 ms" in CI). */
    int64_t idle_since = fs_now();
    join(spawn(one_call, NULL));
    cr_assert_eq(task_count(), base + 1);
    while (task_count() > base && fs_now() - idle_since < 60 * 1000000000LL)
        sleep_ns(50 * 1000000LL);
    int64_t waited = fs_now() - idle_since;
    cr_assert_eq(task_count(), base, "the idle spare never retired");
    cr_assert_geq(waited, 10 * 1000000000LL, "retired after %lld ms", (long long)(waited / 1000000));
    /* The next call gets a fresh spare. */
    join(spawn(one_call, NULL));
    cr_assert_eq(task_count(), base + 1);
}
