/*
 * test_config.c - configuration from the environment (config.c): what
 * FIBERSHIM_CARRIERS, FIBERSHIM_STACK_SIZE and FIBERSHIM_MIGRATE accept,
 * the one-line errors for what they do not, and the default carrier count.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fibershim.h"

static void clear_env(void)
{
    unsetenv("FIBERSHIM_CARRIERS");
    unsetenv("FIBERSHIM_STACK_SIZE");
    unsetenv("FIBERSHIM_MIGRATE");
    unsetenv("FIBERSHIM_IDLE_SPIN_NS");
}

/* Parses with only `var` set to `value`; returns fs_config_from_env's
 * result and leaves the config and message in *cfg and err. */
static int parse(const char *var, const char *value, struct fs_config *cfg, char *err,
                 size_t errlen)
{
    clear_env();
    if (var)
        cr_assert_eq(setenv(var, value, 1), 0);
    err[0] = 0;
    return fs_config_from_env(cfg, err, errlen);
}

static void expect_ok(const char *var, const char *value, struct fs_config *cfg)
{
    char err[256];
    int rc = parse(var, value, cfg, err, sizeof err);
    cr_assert_eq(rc, 0, "%s=\"%s\" refused: %s", var, value, err);
}

static void expect_bad(const char *var, const char *value)
{
    char err[256];
    struct fs_config cfg;
    int rc = parse(var, value, &cfg, err, sizeof err);
    cr_assert_eq(rc, -EINVAL, "%s=\"%s\" accepted", var, value);
    /* One line naming the variable and the value as given. */
    char want[128];
    snprintf(want, sizeof want, "%s=\"%s\"", var, value);
    cr_assert_not_null(strstr(err, want), "message for %s: \"%s\"", want, err);
    cr_assert_null(strchr(err, '\n'), "message is not one line: \"%s\"", err);
}

Test(config, nothing_set_means_defaults)
{
    struct fs_config cfg;
    expect_ok(NULL, NULL, &cfg);
    cr_assert_eq(cfg.carriers, 0);
    cr_assert_eq(cfg.stack_size, 0);
    cr_assert_eq(cfg.migrate, FS_MIGRATE_AUTO);
}

Test(config, carriers)
{
    struct fs_config cfg;
    expect_ok("FIBERSHIM_CARRIERS", "1", &cfg);
    cr_assert_eq(cfg.carriers, 1);
    expect_ok("FIBERSHIM_CARRIERS", "4", &cfg);
    cr_assert_eq(cfg.carriers, 4);
    expect_ok("FIBERSHIM_CARRIERS", "1024", &cfg);
    cr_assert_eq(cfg.carriers, 1024);
    expect_ok("FIBERSHIM_CARRIERS", "", &cfg); /* empty: as if unset */
    cr_assert_eq(cfg.carriers, 0);

    expect_bad("FIBERSHIM_CARRIERS", "0");
    expect_bad("FIBERSHIM_CARRIERS", "1025");
    expect_bad("FIBERSHIM_CARRIERS", "abc");
    expect_bad("FIBERSHIM_CARRIERS", "4x");
    expect_bad("FIBERSHIM_CARRIERS", "-1");
    expect_bad("FIBERSHIM_CARRIERS", "+4");
    expect_bad("FIBERSHIM_CARRIERS", " 4");
    expect_bad("FIBERSHIM_CARRIERS", "99999999999999999999999");
}

Test(config, stack_size)
{
    struct fs_config cfg;
    expect_ok("FIBERSHIM_STACK_SIZE", "256K", &cfg);
    cr_assert_eq(cfg.stack_size, 256 * 1024);
    expect_ok("FIBERSHIM_STACK_SIZE", "8M", &cfg);
    cr_assert_eq(cfg.stack_size, 8 * 1024 * 1024);
    expect_ok("FIBERSHIM_STACK_SIZE", "1G", &cfg);
    cr_assert_eq(cfg.stack_size, 1024 * 1024 * 1024);
    expect_ok("FIBERSHIM_STACK_SIZE", "16K", &cfg); /* the minimum */
    cr_assert_eq(cfg.stack_size, 16 * 1024);
    expect_ok("FIBERSHIM_STACK_SIZE", "65536", &cfg); /* plain bytes */
    cr_assert_eq(cfg.stack_size, 65536);
    expect_ok("FIBERSHIM_STACK_SIZE", "512k", &cfg); /* case-insensitive */
    cr_assert_eq(cfg.stack_size, 512 * 1024);
    expect_ok("FIBERSHIM_STACK_SIZE", "2MiB", &cfg);
    cr_assert_eq(cfg.stack_size, 2 * 1024 * 1024);
    expect_ok("FIBERSHIM_STACK_SIZE", "1MB", &cfg);
    cr_assert_eq(cfg.stack_size, 1024 * 1024);

    expect_bad("FIBERSHIM_STACK_SIZE", "1Q");
    expect_bad("FIBERSHIM_STACK_SIZE", "4K");  /* below 16K */
    expect_bad("FIBERSHIM_STACK_SIZE", "2G");  /* above 1G */
    expect_bad("FIBERSHIM_STACK_SIZE", "K");
    expect_bad("FIBERSHIM_STACK_SIZE", "8M8");
    expect_bad("FIBERSHIM_STACK_SIZE", "-8M");
    expect_bad("FIBERSHIM_STACK_SIZE", "99999999999999999999G");
    expect_bad("FIBERSHIM_STACK_SIZE", "17179869184G"); /* 2^34 G: overflows when scaled */
}

Test(config, migrate)
{
    struct fs_config cfg;
    expect_ok("FIBERSHIM_MIGRATE", "0", &cfg);
    cr_assert_eq(cfg.migrate, FS_MIGRATE_OFF);
    expect_ok("FIBERSHIM_MIGRATE", "1", &cfg);
    cr_assert_eq(cfg.migrate, FS_MIGRATE_ON);
    expect_bad("FIBERSHIM_MIGRATE", "2");
    expect_bad("FIBERSHIM_MIGRATE", "yes");
    expect_bad("FIBERSHIM_MIGRATE", "10");
}

Test(config, handoff_max)
{
    struct fs_config cfg;
    expect_ok("FIBERSHIM_HANDOFF_MAX", "0", &cfg);
    cr_assert(cfg.handoff_off);
    expect_ok("FIBERSHIM_HANDOFF_MAX", "3", &cfg);
    cr_assert_not(cfg.handoff_off);
    cr_assert_eq(cfg.handoff_max, 3);
    expect_ok("FIBERSHIM_HANDOFF_MAX", "1024", &cfg);
    cr_assert_eq(cfg.handoff_max, 1024);
    expect_bad("FIBERSHIM_HANDOFF_MAX", "1025");
    expect_bad("FIBERSHIM_HANDOFF_MAX", "-1");
    expect_bad("FIBERSHIM_HANDOFF_MAX", "two");
}

Test(config, idle_spin)
{
    struct fs_config cfg;
    expect_ok(NULL, NULL, &cfg);
    cr_assert_eq(cfg.idle_spin_ns, 0); /* unset: fs_init applies the default */
    expect_ok("FIBERSHIM_IDLE_SPIN_NS", "0", &cfg);
    cr_assert_eq(cfg.idle_spin_ns, FS_IDLE_SPIN_OFF);
    expect_ok("FIBERSHIM_IDLE_SPIN_NS", "5000", &cfg);
    cr_assert_eq(cfg.idle_spin_ns, 5000);
    expect_ok("FIBERSHIM_IDLE_SPIN_NS", "1000000", &cfg);
    cr_assert_eq(cfg.idle_spin_ns, FS_MAX_IDLE_SPIN_NS);
    expect_bad("FIBERSHIM_IDLE_SPIN_NS", "1000001");
    expect_bad("FIBERSHIM_IDLE_SPIN_NS", "-1");
    expect_bad("FIBERSHIM_IDLE_SPIN_NS", "5us");
    unsetenv("FIBERSHIM_IDLE_SPIN_NS");
}

Test(config, all_three_together)
{
    clear_env();
    setenv("FIBERSHIM_CARRIERS", "3", 1);
    setenv("FIBERSHIM_STACK_SIZE", "1M", 1);
    setenv("FIBERSHIM_MIGRATE", "1", 1);
    struct fs_config cfg;
    char err[256];
    cr_assert_eq(fs_config_from_env(&cfg, err, sizeof err), 0);
    cr_assert_eq(cfg.carriers, 3);
    cr_assert_eq(cfg.stack_size, 1024 * 1024);
    cr_assert_eq(cfg.migrate, FS_MIGRATE_ON);
}

Test(config, small_error_buffer_is_not_overrun)
{
    char err[16];
    memset(err, 'z', sizeof err);
    struct fs_config cfg;
    cr_assert_eq(parse("FIBERSHIM_CARRIERS", "abc", &cfg, err, 8), -EINVAL);
    cr_assert_eq(strlen(err), 7);
    cr_assert_eq(err[8], 'z');
}

Test(config, default_carriers_within_cpu_count)
{
    cpu_set_t set;
    cr_assert_eq(sched_getaffinity(0, sizeof set, &set), 0);
    unsigned cpus = (unsigned)CPU_COUNT(&set);
    unsigned n = fs_default_carriers();
    cr_assert_geq(n, 1);
    cr_assert_leq(n, cpus, "%u carriers for %u CPUs in the affinity mask", n, cpus);
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    cr_assert_leq(n, (unsigned)online);
}

Test(config, default_carriers_follow_affinity)
{
    cpu_set_t one;
    CPU_ZERO(&one);
    cpu_set_t set;
    cr_assert_eq(sched_getaffinity(0, sizeof set, &set), 0);
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set)) {
            CPU_SET(c, &one);
            break;
        }
    cr_assert_eq(sched_setaffinity(0, sizeof one, &one), 0);
    cr_assert_eq(fs_default_carriers(), 1);
}

Test(config, runtime_starts_from_environment)
{
    clear_env();
    setenv("FIBERSHIM_CARRIERS", "3", 1);
    setenv("FIBERSHIM_STACK_SIZE", "64K", 1);
    cr_assert_eq(fs_init(NULL), 0);
    cr_assert_eq(fs_init(NULL), -EALREADY);
    struct fs_stats st;
    fs_stats_get(&st);
    cr_assert_eq(st.carriers, 3);
}

static void *nothing(void *arg)
{
    return arg;
}

Test(config, bad_environment_stops_the_runtime)
{
    clear_env();
    setenv("FIBERSHIM_CARRIERS", "abc", 1);
    /* Started on demand by the first spawn: the error is returned, and
     * stays (the runtime does not retry and report it again). */
    fs_fiber *f;
    cr_assert_eq(fs_spawn(&f, nothing, NULL, NULL), -EINVAL);
    unsetenv("FIBERSHIM_CARRIERS");
    cr_assert_eq(fs_spawn(&f, nothing, NULL, NULL), -EINVAL);
}

Test(config, explicit_config_is_checked)
{
    cr_assert_eq(fs_init(&(struct fs_config){.carriers = 2, .stack_size = 4096}), -EINVAL);
}
