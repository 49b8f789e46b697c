/*
 * test_million_slow.c - one million fibers asleep at once.
 *
 * Each fiber sleeps 2 s on a timer, then, if spawning them all took longer
 * than that, parks at a gate until the test thread has spawned the last
 * one, so all 1,000,000 are parked (on a timer or at the gate) at the same
 * moment. Then every one goes on, counts itself and is joined. Stacks are
 * 256 KiB reserved each and committed lazily; the resident size and
 * timings go to stderr.
 */
#include <criterion/criterion.h>

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fibershim.h"
#include "util.h"

enum { N = 1000000 };

static _Atomic uint64_t asleep, woke;

/* The gate: a lock-free stack of parked fibers, or GATE_OPEN. A fiber
 * pushes a node on its own stack and parks; opening takes the whole stack
 * and unparks each. Parking rather than re-sleeping in a loop matters:
 * half a million fibers polling a flag every 100 ms would keep both
 * carriers busy with nothing but wake-ups. */
struct gate_node {
    struct gate_node *next;
    fs_fiber *f;
    fs_park_token tok;
};
#define GATE_OPEN ((struct gate_node *)1)
static struct gate_node *_Atomic gate;

static void gate_pass(void)
{
    struct gate_node n = {.f = fs_self(), .tok = fs_park_prepare()};
    struct gate_node *head = atomic_load(&gate);
    do {
        if (head == GATE_OPEN) {
            fs_park(n.tok, FS_PARK_OTHER, &gate, 0, NULL, NULL); /* ends the prepared park */
            return;
        }
        n.next = head;
    } while (!atomic_compare_exchange_weak(&gate, &head, &n));
    /* Published: the opener unparks us (possibly before we switch out). */
    fs_park(n.tok, FS_PARK_OTHER, &gate, FS_NO_DEADLINE, NULL, NULL);
}

static uint64_t gate_open(void)
{
    uint64_t n = 0;
    struct gate_node *l = atomic_exchange(&gate, GATE_OPEN);
    while (l) {
        struct gate_node *next = l->next; /* l dies once its fiber runs */
        n += fs_unpark(l->f, l->tok);
        l = next;
    }
    return n;
}

static void *sleeper(void *arg)
{
    atomic_fetch_add_explicit(&asleep, 1, memory_order_relaxed);
    fs_sleep_until(fs_now() + 2000 * MS);
    gate_pass();
    atomic_fetch_add_explicit(&woke, 1, memory_order_relaxed);
    return arg;
}

static long vm_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    cr_assert_not_null(f);
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

Test(million, one_million_sleeping_fibers, .timeout = 300)
{
    cr_assert_eq(fs_init(&(struct fs_config){.carriers = 2}), 0);
    fs_fiber **f = malloc(N * sizeof *f);
    cr_assert_not_null(f);

    int64_t t0 = fs_now();
    for (uintptr_t i = 0; i < N; i++) {
        int rc = fs_spawn(&f[i], sleeper, (void *)i, NULL);
        if (rc != 0)
            cr_assert_fail("spawn %lu: %d", (unsigned long)i, rc);
    }
    int64_t t1 = fs_now();
    /* Every fiber has started and parked on its timer before any may go. */
    WAIT_FOR(atomic_load(&asleep) == N, 120000);
    cr_assert_eq(atomic_load(&asleep), N);
    cr_assert_eq(atomic_load(&woke), 0);
    int64_t t2 = fs_now();
    long rss_asleep = vm_rss_kib();
    struct fs_stats st;
    fs_stats_get(&st);
    cr_assert_geq(st.fibers_peak, N);
    cr_assert_eq(st.fibers_live, N);
    uint64_t gated = gate_open();

    uint64_t good = 0;
    for (uintptr_t i = 0; i < N; i++) {
        void *ret = NULL;
        good += fs_join(f[i], &ret, FS_NO_DEADLINE) == 0 && (uintptr_t)ret == i;
    }
    int64_t t3 = fs_now();
    cr_assert_eq(good, N);
    cr_assert_eq(atomic_load(&woke), N);
    fs_stats_get(&st);
    cr_assert_eq(st.fibers_live, 0);
    cr_assert_geq(st.parks[FS_PARK_SLEEP], N);

    fprintf(stderr,
            "1M sleeping fibers: spawn %.2fs, all asleep at %.2fs, joined at %.2fs "
            "(total %.2fs); VmRSS asleep %ld MiB (%.1f KiB/fiber), after join %ld MiB; "
            "peak %lu live; %lu waited at the gate\n",
            (double)(t1 - t0) / 1e9, (double)(t2 - t0) / 1e9, (double)(t3 - t0) / 1e9,
            (double)(t3 - t0) / 1e9, rss_asleep / 1024, (double)rss_asleep / N,
            vm_rss_kib() / 1024, (unsigned long)st.fibers_peak, (unsigned long)gated);
    /* Tolerance: 120 s, for a loaded 2-core VM (about 8 s when idle). */
    cr_assert_lt(t3 - t0, 120000 * MS);
    free(f);
}
