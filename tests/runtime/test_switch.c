/*
 * test_switch.c - the raw context switch (runtime/context.h and
 * arch/switch_x86_64.S), driven directly without the scheduler: what it
 * preserves, what a new context starts with, stack alignment at entry,
 * and where an unwinder stops.
 *
 * The register test needs exact control of rbx, rbp and r12-r15 across the
 * call, which C cannot express, so a small assembly helper loads known
 * values, calls fs__context_switch and stores what it finds on return.
 */
#include <criterion/criterion.h>

#include <execinfo.h>
#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xmmintrin.h>

#include "context.h"
#include "fibershim.h"

void fs__context_entry(void);

#define STACK_SIZE (64 * 1024)

/* void switch_with_regs(struct fs_context *from, struct fs_context *to,
 *                       const uint64_t in[6], uint64_t out[6])
 * Sets rbx, rbp, r12, r13, r14, r15 to in[0..5], switches from -> to, and
 * when switched back stores those six registers to out[0..5]. Saves and
 * restores the caller's values itself, so it is an ordinary call to C. */
void switch_with_regs(struct fs_context *from, struct fs_context *to, const uint64_t *in,
                      uint64_t *out);
__asm__(".text\n"
        ".globl switch_with_regs\n"
        ".type switch_with_regs, @function\n"
        "switch_with_regs:\n"
        "  pushq %rbp\n"
        "  pushq %rbx\n"
        "  pushq %r12\n"
        "  pushq %r13\n"
        "  pushq %r14\n"
        "  pushq %r15\n"
        "  pushq %rcx\n" /* out; rsp is now 16-byte aligned for the call */
        "  movq 0(%rdx), %rbx\n"
        "  movq 8(%rdx), %rbp\n"
        "  movq 16(%rdx), %r12\n"
        "  movq 24(%rdx), %r13\n"
        "  movq 32(%rdx), %r14\n"
        "  movq 40(%rdx), %r15\n"
        "  call fs__context_switch\n"
        "  popq %rcx\n"
        "  movq %rbx, 0(%rcx)\n"
        "  movq %rbp, 8(%rcx)\n"
        "  movq %r12, 16(%rcx)\n"
        "  movq %r13, 24(%rcx)\n"
        "  movq %r14, 32(%rcx)\n"
        "  movq %r15, 40(%rcx)\n"
        "  popq %r15\n"
        "  popq %r14\n"
        "  popq %r13\n"
        "  popq %r12\n"
        "  popq %rbx\n"
        "  popq %rbp\n"
        "  ret\n"
        ".size switch_with_regs, .-switch_with_regs\n");

static struct fs_context main_ctx, fib_ctx;

static void *new_stack(void)
{
    void *p = aligned_alloc(4096, STACK_SIZE);
    cr_assert_not_null(p);
    return p;
}

static uint16_t get_fpucw(void)
{
    uint16_t cw;
    __asm__ volatile("fnstcw %0" : "=m"(cw));
    return cw;
}

static void set_fpucw(uint16_t cw)
{
    __asm__ volatile("fldcw %0" : : "m"(cw));
}

/* Through memory, so the compiler cannot fold a conversion whose result
 * depends on the run-time rounding mode. */
static volatile float pos = 2.7f, neg = -2.7f;

static int cvt(volatile float *x)
{
    return _mm_cvt_ss2si(_mm_set_ss(*x));
}

/* MXCSR without the sticky exception flags (bits 0-5), which any FP
 * instruction may set. */
static uint32_t mxcsr_control(void)
{
    return _mm_getcsr() & ~0x3fu;
}

/* ---- callee-saved registers ------------------------------------------- */

static const uint64_t main_vals[6] = {0x1111111111111111, 0x2222222222222222, 0x3333333333333333,
                                      0x4444444444444444, 0x5555555555555555, 0x6666666666666666};
static const uint64_t fib_vals[6] = {0xa1a1a1a1a1a1a1a1, 0xb2b2b2b2b2b2b2b2, 0xc3c3c3c3c3c3c3c3,
                                     0xd4d4d4d4d4d4d4d4, 0xe5e5e5e5e5e5e5e5, 0xf6f6f6f6f6f6f6f6};
static uint64_t fib_seen[6];
static int fib_rounds;

static void regs_entry(void *arg)
{
    (void)arg;
    for (;;) {
        /* Clobber all six with our own values, switch back to main, and
         * check ours survived main's use of the same registers. */
        switch_with_regs(&fib_ctx, &main_ctx, fib_vals, fib_seen);
        fib_rounds++;
    }
}

Test(switch, callee_saved_registers_round_trip)
{
    void *stack = new_stack();
    fs__context_make(&fib_ctx, stack, STACK_SIZE, regs_entry, NULL);
    uint64_t seen[6];
    for (int round = 0; round < 100; round++) {
        memset(seen, 0, sizeof seen);
        switch_with_regs(&main_ctx, &fib_ctx, main_vals, seen);
        for (int i = 0; i < 6; i++)
            cr_assert_eq(seen[i], main_vals[i], "round %d: main register %d is %#lx", round, i,
                         (unsigned long)seen[i]);
        if (round > 0) {
            cr_assert_eq(fib_rounds, round);
            for (int i = 0; i < 6; i++)
                cr_assert_eq(fib_seen[i], fib_vals[i], "round %d: fiber register %d is %#lx",
                             round, i, (unsigned long)fib_seen[i]);
        }
    }
    free(stack);
}

/* ---- MXCSR and x87 control word ---------------------------------------- */

static uint32_t fib_first_mxcsr, fib_later_mxcsr;
static uint16_t fib_first_cw, fib_later_cw;
static int fib_first_cvt, fib_later_pos, fib_later_neg;

static void fp_entry(void *arg)
{
    (void)arg;
    fib_first_mxcsr = mxcsr_control();
    fib_first_cw = get_fpucw();
    fib_first_cvt = cvt(&pos); /* to nearest: 3 */
    /* Our own modes: round down (MXCSR RC=01, x87 RC=01). */
    _mm_setcsr((_mm_getcsr() & ~0x6000u) | 0x2000u);
    set_fpucw((uint16_t)((get_fpucw() & ~0x0c00u) | 0x0400u));
    for (;;) {
        fs__context_switch(&fib_ctx, &main_ctx);
        fib_later_mxcsr = mxcsr_control();
        fib_later_cw = get_fpucw();
        fib_later_pos = cvt(&pos); /* round down: 2 and -3 */
        fib_later_neg = cvt(&neg);
    }
}

Test(switch, fp_control_is_per_context)
{
    uint32_t saved_mxcsr = _mm_getcsr();
    uint16_t saved_cw = get_fpucw();

    /* Main: round toward zero in both units. */
    _mm_setcsr((saved_mxcsr & ~0x6000u) | 0x6000u);
    set_fpucw((uint16_t)(saved_cw | 0x0c00u));
    uint32_t main_mx = mxcsr_control();
    uint16_t main_cw = get_fpucw();

    void *stack = new_stack();
    fs__context_make(&fib_ctx, stack, STACK_SIZE, fp_entry, NULL);
    fs__context_switch(&main_ctx, &fib_ctx);

    /* A new context starts from the defaults, not from its creator. */
    cr_assert_eq(fib_first_mxcsr, 0x1f80u, "new context MXCSR %#x", fib_first_mxcsr);
    cr_assert_eq(fib_first_cw, 0x037fu, "new context x87 CW %#x", fib_first_cw);
    cr_assert_eq(fib_first_cvt, 3);

    /* The fiber's round-down did not leak into main. */
    cr_assert_eq(mxcsr_control(), main_mx, "main MXCSR %#x", mxcsr_control());
    cr_assert_eq(get_fpucw(), main_cw, "main x87 CW %#x", get_fpucw());
    cr_assert_eq(cvt(&pos), 2); /* toward zero: 2 and -2 */
    cr_assert_eq(cvt(&neg), -2);

    for (int round = 0; round < 10; round++) {
        fs__context_switch(&main_ctx, &fib_ctx);
        cr_assert_eq(fib_later_mxcsr, 0x1f80u | 0x2000u, "fiber MXCSR %#x", fib_later_mxcsr);
        cr_assert_eq(fib_later_cw, 0x037fu | 0x0400u, "fiber x87 CW %#x", fib_later_cw);
        cr_assert_eq(fib_later_pos, 2);
        cr_assert_eq(fib_later_neg, -3);
        cr_assert_eq(cvt(&pos), 2, "main rounds toward zero");
        cr_assert_eq(cvt(&neg), -2, "main rounds toward zero");
        cr_assert_eq(mxcsr_control(), main_mx);
        cr_assert_eq(get_fpucw(), main_cw);
    }

    _mm_setcsr(saved_mxcsr);
    set_fpucw(saved_cw);
    free(stack);
}

/* ---- stack alignment at entry ------------------------------------------- */

static uintptr_t entry_frame;
static uintptr_t entry_local;

static __attribute__((noinline)) void align_entry(void *arg)
{
    (void)arg;
    /* With a frame pointer, rbp = rsp at entry - 8: 16-byte aligned iff the
     * ABI's (rsp + 8) % 16 == 0 held at entry. */
    entry_frame = (uintptr_t)__builtin_frame_address(0);
    alignas(16) float v[4];
    /* movaps: faults if the compiler's alignment assumption was wrong. */
    _mm_store_ps(v, _mm_set1_ps(1.0f));
    __asm__ volatile("" : : "r"(v) : "memory");
    entry_local = (uintptr_t)v;
    for (;;)
        fs__context_switch(&fib_ctx, &main_ctx);
}

Test(switch, entry_stack_is_abi_aligned)
{
#ifdef __SANITIZE_ADDRESS__
    cr_skip_test("AddressSanitizer moves locals to its own redzoned frames");
#endif
    char *stack = new_stack();
    /* Odd bases and sizes: make must align whatever it is given. */
    static const size_t offs[] = {0, 8, 1, 24, 40, 15};
    static const size_t cut[] = {0, 8, 3, 56, 100, 1};
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
        entry_frame = entry_local = 1;
        fs__context_make(&fib_ctx, stack + offs[i], STACK_SIZE - offs[i] - cut[i], align_entry,
                         NULL);
        fs__context_switch(&main_ctx, &fib_ctx);
        cr_assert_eq(entry_frame % 16, 0, "case %zu: frame %#lx", i, (unsigned long)entry_frame);
        cr_assert_eq(entry_local % 16, 0, "case %zu: local %#lx", i, (unsigned long)entry_local);
        cr_assert(entry_frame > (uintptr_t)stack + offs[i] &&
                  entry_frame < (uintptr_t)stack + STACK_SIZE - cut[i]);
    }
    free(stack);
}

/* The first frame may lie outside the stack (fs_spawn puts it in the
 * fiber's record): entry still runs on the stack, ABI-aligned, and the
 * stack is not written before the switch. */
Test(switch, first_frame_outside_the_stack)
{
#ifdef __SANITIZE_ADDRESS__
    cr_skip_test("AddressSanitizer moves locals to its own redzoned frames");
#endif
    char *stack = new_stack();
    static const size_t offs[] = {0, 8, 1, 40};
    static const size_t cut[] = {0, 8, 3, 100};
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
        struct fs_switch_frame frame;
        memset(stack, 0xa5, STACK_SIZE);
        entry_frame = entry_local = 1;
        fs__context_make_at(&fib_ctx, &frame, stack + offs[i], STACK_SIZE - offs[i] - cut[i],
                            align_entry, NULL);
        for (size_t b = 0; b < STACK_SIZE; b++)
            cr_assert_eq((unsigned char)stack[b], 0xa5, "case %zu: byte %zu written", i, b);
        fs__context_switch(&main_ctx, &fib_ctx);
        cr_assert_eq(entry_frame % 16, 0, "case %zu: frame %#lx", i, (unsigned long)entry_frame);
        cr_assert_eq(entry_local % 16, 0, "case %zu: local %#lx", i, (unsigned long)entry_local);
        cr_assert(entry_frame > (uintptr_t)stack + offs[i] &&
                  entry_frame < (uintptr_t)stack + STACK_SIZE - cut[i],
                  "case %zu: frame %#lx off the stack", i, (unsigned long)entry_frame);
    }
    free(stack);
}

static uintptr_t spawned_frame;

static __attribute__((noinline)) void *spawned_align(void *arg)
{
    (void)arg;
    spawned_frame = (uintptr_t)__builtin_frame_address(0);
    alignas(16) float v[4];
    _mm_store_ps(v, _mm_set1_ps(2.0f));
    __asm__ volatile("" : : "r"(v) : "memory");
    return (void *)(uintptr_t)((uintptr_t)v % 16);
}

Test(switch, spawned_fiber_stack_is_abi_aligned)
{
    cr_assert_eq(fs_init(&(struct fs_config){.carriers = 1}), 0);
    for (int i = 0; i < 20; i++) {
        fs_fiber *f;
        void *ret = (void *)1;
        cr_assert_eq(fs_spawn(&f, spawned_align, NULL, NULL), 0);
        cr_assert_eq(fs_join(f, &ret, FS_NO_DEADLINE), 0);
        cr_assert_null(ret);
        cr_assert_eq(spawned_frame % 16, 0);
    }
}

/* ---- unwinding stops at the first frame --------------------------------- */

#define MAX_FRAMES 64
static void *frames[MAX_FRAMES];
static int nframes;

static __attribute__((noinline)) void take_backtrace(void)
{
    nframes = backtrace(frames, MAX_FRAMES);
    __asm__ volatile("" ::: "memory"); /* not a tail call */
}

static __attribute__((noinline)) void bt_entry(void *arg)
{
    (void)arg;
    take_backtrace();
    for (;;)
        fs__context_switch(&fib_ctx, &main_ctx);
}

/* The frame of fs__context_entry: its return address lies a few bytes
 * into it (after `call *%r13`). */
static bool in_context_entry(void *pc)
{
    uintptr_t a = (uintptr_t)pc, e = (uintptr_t)fs__context_entry;
    return a > e && a <= e + 16;
}

Test(switch, backtrace_stops_at_first_frame)
{
    /* Fill the stack with pointer-like garbage so an unwinder that walked
     * past the first frame would find plausible-looking return addresses. */
    char *stack = new_stack();
    for (size_t i = 0; i < STACK_SIZE / sizeof(void *); i++)
        ((void **)stack)[i] = (void *)take_backtrace;
    fs__context_make(&fib_ctx, stack, STACK_SIZE, bt_entry, NULL);
    fs__context_switch(&main_ctx, &fib_ctx);

    cr_assert(nframes >= 2 && nframes <= 4, "%d frames", nframes);
    cr_assert(in_context_entry(frames[nframes - 1]), "last frame %p, fs__context_entry %p",
              frames[nframes - 1], (void *)fs__context_entry);
    free(stack);
}

static void *spawned_bt(void *arg)
{
    (void)arg;
    take_backtrace();
    return NULL;
}

Test(switch, backtrace_in_spawned_fiber_stops_at_first_frame)
{
    cr_assert_eq(fs_init(&(struct fs_config){.carriers = 1}), 0);
    fs_fiber *f;
    cr_assert_eq(fs_spawn(&f, spawned_bt, NULL, NULL), 0);
    cr_assert_eq(fs_join(f, NULL, FS_NO_DEADLINE), 0);
    /* take_backtrace, spawned_bt, fs__fiber_entry, fs__context_entry. */
    cr_assert(nframes >= 3 && nframes <= 6, "%d frames", nframes);
    cr_assert(in_context_entry(frames[nframes - 1]), "last frame %p, fs__context_entry %p",
              frames[nframes - 1], (void *)fs__context_entry);
}
