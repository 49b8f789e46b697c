/*
 * test_stack_million_slow.c - one million concurrent default-size stacks.
 *
 * The point of the arena design: at glibc's default of 8 MiB, 1,000,000 x
 * (8 MiB + 64 KiB guard) is ~8 TiB of address space, far beyond RAM, and a
 * million guards must not need a million VMAs (vm.max_map_count is
 * 65530). Each stack's top page is touched, as a new fiber would, so ~4
 * GiB becomes resident, plus ~4 GiB of page tables: tops 8 MiB apart need
 * a page-table page each (stack.c, "Page tables"). Needs ~9 GiB of RAM
 * while it runs. Timings and memory go to stderr.
 */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fibershim.h"
#include "stack.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long status_kib(const char *key)
{
    char line[256];
    long kib = -1;
    size_t n = strlen(key);
    FILE *f = fopen("/proc/self/status", "r");
    cr_assert_not_null(f);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, n) == 0 && line[n] == ':') {
            kib = atol(line + n + 1);
            break;
        }
    }
    fclose(f);
    return kib;
}

static long count_maps_lines(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    cr_assert_not_null(f);
    long lines = 0;
    int ch;
    while ((ch = fgetc(f)) != EOF) {
        if (ch == '\n')
            lines++;
    }
    fclose(f);
    return lines;
}

Test(stack_million, one_million_default_stacks, .timeout = 300)
{
    enum { N = 1000000 };
    const size_t size = fs_default_stack_size();
    struct fs_stack *st = malloc(N * sizeof(*st));
    cr_assert_not_null(st);
    long rss0 = status_kib("VmRSS"), pte0 = status_kib("VmPTE");

    double t0 = now_s();
    for (uint32_t i = 0; i < N; i++) {
        int rc = fs__stack_alloc(size, &st[i]);
        if (rc != 0)
            cr_assert_fail("stack %u: alloc returned %d", i, rc);
    }
    double t1 = now_s();

    /* Touch the top page of each, as a fiber's first frame would. */
    for (uint32_t i = 0; i < N; i++) {
        uint32_t *top = (uint32_t *)(void *)((char *)st[i].lo + st[i].size) - 1;
        *top = i;
    }
    double t2 = now_s();

    long rss = status_kib("VmRSS") - rss0, pte = status_kib("VmPTE") - pte0;
    long maps = count_maps_lines();
    for (uint32_t i = 0; i < N; i++) {
        const uint32_t *top = (const uint32_t *)(const void *)((char *)st[i].lo + st[i].size) - 1;
        if (*top != i)
            cr_assert_fail("stack %u: top word %u, stacks overlap", i, *top);
    }
    cr_assert(fs__stack_is_guard(st[N - 1].guard));
    cr_assert_not(fs__stack_is_guard(st[N - 1].lo));

    double t3 = now_s();
    for (uint32_t i = 0; i < N; i++)
        fs__stack_free(&st[i]);
    double t4 = now_s();

    fprintf(stderr,
            "1M stacks of %zu KiB (%s guards): alloc %.2fs, touch %.2fs, free %.2fs, "
            "total %.2fs; RSS %.2f KiB and page tables %.2f KiB per stack; "
            "/proc/self/maps %ld lines\n",
            size >> 10, fs__stack_guard_kind(), t1 - t0, t2 - t1, t4 - t3, t4 - t0,
            (double)rss / N, (double)pte / N, maps);
    if (strcmp(fs__stack_guard_kind(), "madv_guard") == 0)
        cr_assert_lt(maps, 1000);
    /* Tolerance: 120 s, for a loaded 2-core VM (59 s measured beside six
     * concurrent builds; the kernel's page-table and zeroing work for 8
     * KiB per stack is most of it). */
    cr_assert_lt(t4 - t0, 120.0);
    free(st);
}
