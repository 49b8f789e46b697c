/*
 * sigaltstack.c - an alternate signal stack per fiber.
 *
 * The kernel keeps one alternate signal stack per kernel thread, and a
 * carrier's kernel thread runs many fibers. A thread's alternate stack is
 * its own (Rust, Go and SBCL give every thread one, for the SIGSEGV of a
 * stack overflow), so the shim keeps one per fiber (struct shim_sigstate
 * alt) and makes the carrier's the running fiber's:
 *
 *  - sigaltstack() from a fiber reads and sets the fiber's, as the kernel
 *    does a thread's: the old one comes back with SS_ONSTACK while the
 *    caller runs on it (SS_DISABLE without one, SS_AUTODISARM kept),
 *    setting one while on it fails with EPERM, a bad mode with EINVAL, one
 *    below the kernel's MINSIGSTKSZ with ENOMEM (the kernel checks the new
 *    one on the carrier itself, so its own rules and EFAULT apply).
 *
 *  - The kernel uses a carrier's alternate stack when it delivers a
 *    signal whose action has SA_ONSTACK. The signals the shim delivers to
 *    a fiber (the carrier unblocking them: signal.c) get the fiber's own
 *    installed first (none for a fiber without one), so their handlers
 *    run on it, nested ones further down, exactly as a thread's. Between
 *    deliveries a carrier keeps the runtime's own (fs_carrier_altstack),
 *    on which the runtime reports a stack overflow; a fiber that resumes
 *    while it runs on its own (a handler there that blocked) gets its own
 *    back (the interrupt hook, at every switch once some fiber has set
 *    one). So a switch costs no system call, but around a handler that
 *    blocks on its alternate stack; and a fault (SIGSEGV, SIGBUS...),
 *    which the kernel delivers directly, runs an SA_ONSTACK handler on
 *    the runtime's stack, unless the fiber already runs on its own. Each
 *    carrier remembers what it has (fs_carrier_local words).
 *
 *  - The handler trampoline (signal.c) mirrors what the kernel does to a
 *    thread's setting around a handler: SS_AUTODISARM disarms it at
 *    delivery, and sigreturn installs what the frame's uc_stack says
 *    (which undoes a change made inside a handler, unless the handler runs
 *    on the alternate stack). The handler sees the fiber's setting in
 *    uc_stack, not the carrier's; the frame gets back the carrier's
 *    setting the interrupted code needs, which sigreturn installs.
 *
 * A handler that blocks is pinned to its carrier (signal.c): while it is
 * parked its carrier runs other fibers, each with its own alternate stack,
 * and when it resumes its own is installed again before it runs on. */
#include "shim.h"

#include <signal.h>
#include <string.h>
#include <sys/ucontext.h>

#include "sys.h"

#ifndef SS_AUTODISARM /* the kernel's (linux/signal.h), not in glibc's headers */
#define SS_AUTODISARM ((int)(1u << 31))
#endif

/* fs_carrier_local() words: the carrier's kernel setting as last set by
 * us: sp, size, flags with SHIM_ALT_KNOWN (0: unknown). */
#define SHIM_CL_ALT_SP 2
#define SHIM_CL_ALT_SIZE 3
#define SHIM_CL_ALT_FLAGS 4
#define SHIM_ALT_KNOWN (1ull << 40)

/* The kernel's MINSIGSTKSZ (x86-64 uapi), which it checks; glibc's
 * macro may name a larger, run-time value. */
#define SHIM_KERNEL_MINSIGSTKSZ 2048

/* Whether sp lies on alternate stack a, by the kernel's on_sig_stack():
 * never for one that disarms itself. */
static bool shim__alt_on(const void *a_sp, size_t a_size, int a_flags, uintptr_t sp)
{
    if (a_flags & SS_AUTODISARM)
        return false;
    uintptr_t lo = (uintptr_t)a_sp;
    return sp > lo && sp - lo <= a_size;
}

/* The flags the kernel reports for alternate stack a at sp. */
static int shim__alt_report(const struct shim_altstack *a, uintptr_t sp)
{
    int f = !a->size ? SS_DISABLE : shim__alt_on(a->sp, a->size, a->flags, sp) ? SS_ONSTACK : 0;
    return f | (a->flags & SS_AUTODISARM);
}

void shim__alt_init(struct shim_altstack *a, bool adopted)
{
    a->sp = NULL;
    a->size = 0;
    a->flags = SS_DISABLE;
    if (!adopted)
        return; /* a new thread has none (the kernel's clone) */
    /* The adopted thread (main): the one it set before it became a fiber,
     * unless that is the runtime's own (fault.c installs it where there
     * was none). */
    stack_t cur;
    void *rt_sp;
    size_t rt_size;
    fs_carrier_altstack(&rt_sp, &rt_size);
    if (fs__sys2(SYS_sigaltstack, NULL, &cur) != 0 || (cur.ss_flags & SS_DISABLE) ||
        cur.ss_sp == rt_sp)
        return;
    a->sp = cur.ss_sp;
    a->size = cur.ss_size;
    a->flags = cur.ss_flags & SS_AUTODISARM;
    fs_hook_every_switch();
}

/* What the carrier's kernel setting must be while a fiber with setting a
 * (NULL: none, between fibers) runs at sp: its own while it runs on it,
 * else the runtime's. */
static void shim__alt_want(const struct shim_altstack *a, uintptr_t sp, stack_t *w)
{
    if (a && a->size && shim__alt_on(a->sp, a->size, a->flags, sp)) {
        w->ss_sp = a->sp;
        w->ss_size = a->size;
        w->ss_flags = a->flags;
        return;
    }
    fs_carrier_altstack(&w->ss_sp, &w->ss_size);
    w->ss_flags = w->ss_sp ? 0 : SS_DISABLE;
}

static bool shim__cl_is(const uint64_t *cl, const stack_t *w)
{
    return (cl[SHIM_CL_ALT_FLAGS] & SHIM_ALT_KNOWN) && cl[SHIM_CL_ALT_SP] == (uintptr_t)w->ss_sp &&
           cl[SHIM_CL_ALT_SIZE] == w->ss_size &&
           (uint32_t)cl[SHIM_CL_ALT_FLAGS] == (uint32_t)w->ss_flags;
}

static void shim__cl_set(uint64_t *cl, const stack_t *w)
{
    cl[SHIM_CL_ALT_SP] = (uintptr_t)w->ss_sp;
    cl[SHIM_CL_ALT_SIZE] = w->ss_size;
    cl[SHIM_CL_ALT_FLAGS] = (uint32_t)w->ss_flags | SHIM_ALT_KNOWN;
}

/* Installs w on the calling carrier unless it has it already. */
static void shim__alt_install(const stack_t *w)
{
    uint64_t *cl = fs_carrier_local();
    if (!cl || shim__cl_is(cl, w))
        return;
    if (fs__sys2(SYS_sigaltstack, w, NULL) == 0)
        shim__cl_set(cl, w);
    else
        cl[SHIM_CL_ALT_FLAGS] = 0; /* on the carrier's current one: later */
}

void shim__alt_follow(const struct shim_altstack *a)
{
    stack_t w;
    shim__alt_want(a, (uintptr_t)__builtin_frame_address(0), &w);
    shim__alt_install(&w);
}

void shim__alt_for_delivery(const struct shim_altstack *a)
{
    stack_t w = {.ss_sp = a->sp, .ss_size = a->size, .ss_flags = a->flags};
    if (!a->size)
        w = (stack_t){.ss_sp = NULL, .ss_size = 0, .ss_flags = SS_DISABLE};
    shim__alt_install(&w);
}

void shim__alt_rearm(const struct shim_altstack *a)
{
    uint64_t *cl = fs_carrier_local();
    if (cl && ((uint32_t)cl[SHIM_CL_ALT_FLAGS] & SS_AUTODISARM))
        cl[SHIM_CL_ALT_FLAGS] = 0; /* the delivery disarmed it */
    shim__alt_follow(a);
}

void shim__alt_handler_enter(struct shim_altstack *a, ucontext_t *uc)
{
    /* The handler sees the fiber's setting as it was at delivery. */
    uc->uc_stack.ss_sp = a->sp;
    uc->uc_stack.ss_size = a->size;
    uc->uc_stack.ss_flags = a->flags;
    /* The kernel disarmed the carrier's (signal_delivered()) if it was a
     * self-disarming one: the fiber's too. */
    uint64_t *cl = fs_carrier_local();
    if (cl && ((uint32_t)cl[SHIM_CL_ALT_FLAGS] & SS_AUTODISARM)) {
        stack_t off = {.ss_sp = NULL, .ss_size = 0, .ss_flags = SS_DISABLE};
        shim__cl_set(cl, &off);
    }
    if (a->flags & SS_AUTODISARM) {
        a->sp = NULL;
        a->size = 0;
        a->flags = SS_DISABLE;
    }
}

void shim__alt_handler_leave(struct shim_altstack *a, ucontext_t *uc)
{
    /* restore_altstack() at sigreturn, on the fiber's setting: the frame's
     * uc_stack, as the handler left it, unless sigreturn runs on the
     * current alternate stack (the frame is on it); a bad one is ignored. */
    uintptr_t sp = (uintptr_t)uc;
    stack_t r = uc->uc_stack;
    int mode = r.ss_flags & ~SS_AUTODISARM;
    if (!shim__alt_on(a->sp, a->size, a->flags, sp) &&
        (mode == 0 || mode == SS_ONSTACK || mode == SS_DISABLE)) {
        if (mode == SS_DISABLE) {
            a->sp = NULL;
            a->size = 0;
            a->flags = r.ss_flags;
        } else if (r.ss_size >= SHIM_KERNEL_MINSIGSTKSZ) {
            a->sp = r.ss_sp;
            a->size = r.ss_size;
            a->flags = r.ss_flags;
            fs_hook_every_switch();
        }
    }
    /* The frame gets the carrier's setting the interrupted code needs;
     * sigreturn installs it unless the frame is on the carrier's current
     * one. */
    stack_t w;
    shim__alt_want(a, (uintptr_t)uc->uc_mcontext.gregs[REG_RSP], &w);
    uc->uc_stack = w;
    uint64_t *cl = fs_carrier_local();
    if (!cl)
        return;
    if (!(cl[SHIM_CL_ALT_FLAGS] & SHIM_ALT_KNOWN))
        return;
    if (shim__alt_on((void *)(uintptr_t)cl[SHIM_CL_ALT_SP], cl[SHIM_CL_ALT_SIZE],
                     (int)(uint32_t)cl[SHIM_CL_ALT_FLAGS], sp)) {
        if (!shim__cl_is(cl, &w))
            cl[SHIM_CL_ALT_FLAGS] = 0; /* kept by the kernel: set it later */
        return;
    }
    shim__cl_set(cl, &w);
}

void shim__alt_frame_set(const struct shim_altstack *a, ucontext_t *uc)
{
    stack_t w;
    shim__alt_want(a, (uintptr_t)uc->uc_mcontext.gregs[REG_RSP], &w);
    uc->uc_stack = w;
    uint64_t *cl = fs_carrier_local();
    if (cl && (cl[SHIM_CL_ALT_FLAGS] & SHIM_ALT_KNOWN) &&
        !shim__alt_on((void *)(uintptr_t)cl[SHIM_CL_ALT_SP], cl[SHIM_CL_ALT_SIZE],
                      (int)(uint32_t)cl[SHIM_CL_ALT_FLAGS], (uintptr_t)uc))
        shim__cl_set(cl, &w);
    else if (cl)
        cl[SHIM_CL_ALT_FLAGS] = 0;
}

void shim__alt_carrier_reset(void)
{
    shim__alt_follow(NULL);
}

/* sigaltstack(2) for a fiber (see the header); the real one elsewhere. */
int shim__sigaltstack(const stack_t *ss, stack_t *old)
{
    fs_fiber *self = fs_self();
    struct shim_sigstate *st = self ? shim__sigstate(self) : NULL;
    if (!st || !fs_carrier_local())
        return REAL(sigaltstack)(ss, old);
    struct shim_altstack *a = &st->alt;
    uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
    stack_t o = {.ss_sp = a->sp, .ss_size = a->size, .ss_flags = shim__alt_report(a, sp)};
    if (ss && shim__alt_on(a->sp, a->size, a->flags, sp)) {
        errno = EPERM;
        return -1;
    }
    /* The kernel checks the new setting (EFAULT, EINVAL, ENOMEM) and the
     * old one's address, on the carrier, which has the fiber's setting
     * (or the runtime's, for a fiber without one) and which the follow
     * below puts right. No switch can come between: raw system calls. */
    long rc = fs__sys2(SYS_sigaltstack, ss, old);
    uint64_t *cl = fs_carrier_local();
    cl[SHIM_CL_ALT_FLAGS] = 0;
    if (rc == 0 && ss) {
        int mode = ss->ss_flags & ~SS_AUTODISARM;
        a->sp = mode == SS_DISABLE ? NULL : ss->ss_sp;
        a->size = mode == SS_DISABLE ? 0 : ss->ss_size;
        a->flags = ss->ss_flags;
        if (a->size)
            fs_hook_every_switch();
    }
    shim__alt_follow(a);
    if (rc < 0) {
        errno = (int)-rc;
        return -1;
    }
    if (old)
        *old = o;
    return 0;
}
SHIM_ALIAS(sigaltstack)
