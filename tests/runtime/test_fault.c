/*
 * test_fault.c - a fiber that overflows its stack (fault.c): the process
 * dies of SIGSEGV, as without the runtime, and stderr names the fiber, its
 * stack size and FIBERSHIM_STACK_SIZE first; a SIGSEGV handler the
 * program installed before gets the fault, as without the runtime; a
 * frame that jumps over a page below the stack still faults (the guard is
 * at least 64 KiB), and one that lands in another stack's guard is named
 * as such.
 *
 * Criterion cannot read the stderr of a test that crashes, so each case
 * forks a child of its own, which starts the runtime, runs the scenario
 * with stderr on a pipe, and dies; the parent checks how it died and what
 * it wrote.
 */
#include <criterion/criterion.h>

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fibershim.h"

/* ~1 KiB per frame; the volatile buffer and the use after the call keep
 * each frame and stop tail-call optimisation. The limit is never reached
 * (the stack runs out first); being volatile, it tells the compiler the
 * recursion may end. */
static volatile int depth_limit = 1 << 30;

static __attribute__((noinline)) int recurse(int depth)
{
    if (depth >= depth_limit)
        return depth;
    volatile char pad[1024];
    pad[0] = (char)depth;
    pad[sizeof pad - 1] = (char)depth;
    return recurse(depth + 1) + pad[0] + pad[sizeof pad - 1];
}

static void *overflow(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)recurse(0);
}

static void *named_overflow(void *arg)
{
    fs_fiber_set_name(fs_self(), arg);
    return (void *)(intptr_t)recurse(0);
}

static void *null_deref(void *arg)
{
    return (void *)(intptr_t) * (volatile int *)arg;
}

/* Writes one byte (uintptr_t)arg bytes below the fiber's stack: the first
 * touch of a frame that large, made when the stack is nearly full. */
static void *write_below(void *arg)
{
    void *lo;
    size_t size;
    fs_fiber_stack(fs_self(), &lo, &size);
    ((volatile char *)lo)[-(intptr_t)arg] = 1;
    return NULL;
}

static void *sleep_long(void *arg)
{
    (void)arg;
    fs_sleep_until(fs_now() + 60 * (int64_t)1000000000);
    return NULL;
}

static void on_segv_exit_42(int sig)
{
    (void)sig;
    static const char m[] = "program handler ran\n";
    (void)!write(2, m, sizeof m - 1);
    _exit(42);
}

struct outcome {
    int status;
    char err[4096];
};

/* Scenario options for run_child. */
enum {
    CHILD_NEIGHBOUR = 1, /* first a sleeping fiber whose stack lies right below */
    CHILD_HANDLER = 2,   /* a SIGSEGV handler of the program's, before fs_init */
};

/* Runs fn(arg) in a fiber of a forked child (one carrier, stack
 * stack_size) and collects how the child ended and its stderr. */
static void run_child_opts(void *(*fn)(void *), void *arg, size_t stack_size, int opts,
                           struct outcome *out)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        /* No core file: a dump of the reserved stack arenas is slow. */
        setrlimit(RLIMIT_CORE, &(struct rlimit){0, 0});
        dup2(p[1], 2);
        close(p[0]);
        close(p[1]);
        if (opts & CHILD_HANDLER)
            signal(SIGSEGV, on_segv_exit_42);
        if (fs_init(&(struct fs_config){.carriers = 1}) != 0)
            _exit(10);
        fs_fiber *f;
        struct fs_spawn_attr attr = {.stack_size = stack_size};
        /* Slots are carved upwards: the next stack of that size lies
         * right above this one. */
        if ((opts & CHILD_NEIGHBOUR) && fs_spawn(NULL, sleep_long, NULL, &attr) != 0)
            _exit(11);
        if (fs_spawn(&f, fn, arg, &attr) != 0)
            _exit(11);
        fs_join(f, NULL, FS_NO_DEADLINE);
        _exit(12); /* the fiber was supposed to crash */
    }
    close(p[1]);
    size_t n = 0;
    ssize_t r;
    while (n < sizeof out->err - 1 && (r = read(p[0], out->err + n, sizeof out->err - 1 - n)) > 0)
        n += (size_t)r;
    out->err[n] = 0;
    close(p[0]);
    cr_assert_eq(waitpid(pid, &out->status, 0), pid);
}

static void run_child(void *(*fn)(void *), void *arg, size_t stack_size, struct outcome *out)
{
    run_child_opts(fn, arg, stack_size, 0, out);
}

static void expect_overflow_report(const struct outcome *o, unsigned kib)
{
    cr_assert(WIFSIGNALED(o->status), "child did not die of a signal (status %#x), stderr: %s",
              o->status, o->err);
    cr_assert_eq(WTERMSIG(o->status), SIGSEGV, "child died of signal %d", WTERMSIG(o->status));
    cr_assert_not_null(strstr(o->err, "fiber stack overflow"), "stderr: %s", o->err);
    char size[32];
    snprintf(size, sizeof size, " %u KiB stack", kib);
    cr_assert_not_null(strstr(o->err, size), "no \"%s\" in: %s", size, o->err);
    cr_assert_not_null(strstr(o->err, "FIBERSHIM_STACK_SIZE"), "stderr: %s", o->err);
    cr_log_info("%s", o->err);
}

Test(fault, stack_overflow_dies_of_sigsegv_and_says_why)
{
    struct outcome o;
    run_child(overflow, NULL, 64 * 1024, &o);
    expect_overflow_report(&o, 64);
}

Test(fault, overflow_report_names_the_fiber)
{
    struct outcome o;
    run_child(named_overflow, "deep-recursion", 128 * 1024, &o);
    expect_overflow_report(&o, 128);
    cr_assert_not_null(strstr(o.err, "(deep-recursion)"), "stderr: %s", o.err);
}

Test(fault, other_faults_are_not_called_overflows)
{
#ifdef __SANITIZE_ADDRESS__
    cr_skip_test("AddressSanitizer reports a NULL dereference itself and exits");
#endif
    struct outcome o;
    run_child(null_deref, NULL, 64 * 1024, &o);
    cr_assert(WIFSIGNALED(o.status), "status %#x", o.status);
    cr_assert_eq(WTERMSIG(o.status), SIGSEGV);
    cr_assert_null(strstr(o.err, "overflow"), "a NULL dereference was reported as: %s", o.err);
}

/* As without the runtime, the program's own handler gets the fault; the
 * overflow is reported first. */
Test(fault, overflow_reaches_the_programs_handler)
{
    struct outcome o;
    run_child_opts(overflow, NULL, 64 * 1024, CHILD_HANDLER, &o);
    cr_assert(WIFEXITED(o.status) && WEXITSTATUS(o.status) == 42,
              "the program's handler did not run (status %#x), stderr: %s", o.status, o.err);
    cr_assert_not_null(strstr(o.err, "fiber stack overflow"), "stderr: %s", o.err);
    cr_assert_not_null(strstr(o.err, " 64 KiB stack"), "stderr: %s", o.err);
}

/* A 40 KiB frame at the bottom of a stack, with a live stack right below:
 * with a one-page guard it would land in that stack's top, silently. */
Test(fault, large_frame_does_not_reach_the_stack_below)
{
    struct outcome o;
    run_child_opts(write_below, (void *)(uintptr_t)(40 * 1024), 64 * 1024, CHILD_NEIGHBOUR, &o);
    expect_overflow_report(&o, 64);
    cr_assert_not_null(strstr(o.err, "into its guard"), "stderr: %s", o.err);
}

/* 16 KiB stacks: a frame of 88 KiB jumps over the fiber's 64 KiB guard and
 * the 16 KiB stack below into that stack's guard, and is named so. */
Test(fault, frame_into_another_stacks_guard_is_named)
{
    struct outcome o;
    run_child_opts(write_below, (void *)(uintptr_t)(88 * 1024), 16 * 1024, CHILD_NEIGHBOUR, &o);
    expect_overflow_report(&o, 16);
    cr_assert_not_null(strstr(o.err, "jumped 88 KiB below its 16 KiB stack"), "stderr: %s", o.err);
    cr_assert_not_null(strstr(o.err, "into another stack's guard"), "stderr: %s", o.err);
}
