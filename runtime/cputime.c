/*
 * cputime.c - CPU time of fibers, in nanoseconds.
 *
 * The scheduler counts TSC ticks per fiber at its switches (fs__cpu_start
 * and fs__cpu_stop in internal.h); this file turns ticks into time.
 *
 * The TSC's rate is not told to user space everywhere (CPUID leaf 0x15 is
 * empty under most hypervisors), so it is measured against
 * CLOCK_MONOTONIC: from a pair of readings taken when the library is
 * loaded to a pair taken at conversion. Each pair is bracketed by two TSC
 * reads and the tightest of three is kept, so it is good to about 100 ns.
 * A fiber cannot have run longer than the span between the pairs, so a
 * converted time is off by at most about 100 ns whatever the span; once
 * the span reaches a second, the rate is fixed (error below 1e-7) and a
 * conversion is one multiplication.
 */
#include "internal.h"

struct fs_tsc_pair {
    uint64_t tsc; /* TSC at the middle of the reading */
    int64_t ns;   /* fs_now() there */
};

static struct fs_tsc_pair fs__tsc_anchor; /* written once, at load */
/* Nanoseconds per tick in 32.32 fixed point once fixed, else 0. Racing
 * first fixers store values that differ in the last bits only. */
static _Atomic uint64_t fs__tsc_mult;

static struct fs_tsc_pair fs__tsc_pair_read(void)
{
    struct fs_tsc_pair best = {0, 0};
    uint64_t width = UINT64_MAX;
    for (int i = 0; i < 3; i++) {
        uint64_t a = fs__cputicks();
        int64_t ns = fs_now();
        uint64_t b = fs__cputicks();
        if (b - a < width) {
            width = b - a;
            best.tsc = a + (b - a) / 2;
            best.ns = ns;
        }
    }
    return best;
}

/* Before any fiber can have run: the span starts here. */
__attribute__((constructor)) static void fs__cputime_init(void)
{
    fs__tsc_anchor = fs__tsc_pair_read();
}

/* Nanoseconds per tick, 32.32 fixed point (0 at the very first instant). */
static uint64_t fs__tsc_mult_now(void)
{
    uint64_t m = atomic_load_explicit(&fs__tsc_mult, memory_order_relaxed);
    if (FS_LIKELY(m))
        return m;
    struct fs_tsc_pair p = fs__tsc_pair_read();
    uint64_t dt = p.tsc - fs__tsc_anchor.tsc;
    int64_t dn = p.ns - fs__tsc_anchor.ns;
    if (dt == 0 || dn <= 0)
        return 0;
    m = (uint64_t)(((unsigned __int128)dn << 32) / dt);
    if (dn >= 1000000000)
        atomic_store_explicit(&fs__tsc_mult, m, memory_order_relaxed);
    return m;
}

/* A seqlock read: the switch-out of f (fs__cpu_stop, on f's carrier) makes
 * cpu_seq odd while it moves the running part into cpu_ticks, so a reader
 * never counts that part twice or not at all. A switch-in only sets
 * cpu_since, which is consistent with cpu_ticks either way. */
int64_t fs_fiber_cpu_ns(const fs_fiber *f)
{
    uint64_t ticks, since, now;
    uint32_t s1, s2;
    do {
        s1 = atomic_load_explicit(&f->cpu_seq, memory_order_acquire);
        ticks = atomic_load_explicit(&f->cpu_ticks, memory_order_relaxed);
        since = atomic_load_explicit(&f->cpu_since, memory_order_relaxed);
        now = fs__cputicks();
        /* acquire fence: the loads above happen before the recheck */
        atomic_thread_fence(memory_order_acquire);
        s2 = atomic_load_explicit(&f->cpu_seq, memory_order_relaxed);
    } while ((s1 & 1) || s1 != s2);
    if (since && now > since)
        ticks += now - since; /* running now: the current run counts */
    return (int64_t)(((unsigned __int128)ticks * fs__tsc_mult_now()) >> 32);
}
