/*
 * cancel.c - thread cancellation and pthread_exit for fibers, as glibc
 * does them: pthread_cancel, pthread_testcancel, pthread_setcancelstate,
 * pthread_setcanceltype, the C cleanup chain of pthread_cleanup_push
 * (__pthread_register_cancel and friends), and the forced unwinding of a
 * fiber's stack that pthread_exit and an acted-on cancel start.
 *
 * The model. pthread_cancel of a fiber marks it (struct shim_cancel,
 * pending) and interrupts it as a signal would (fs_interrupt): a park in
 * a cancellation point (I/O, poll, sleeps, condition and semaphore waits,
 * join, sigwait, sigsuspend) ends at once with -EINTR. Every wrapper of a
 * cancellation point calls shim__cancel_point() at its entry and again
 * when its wait was interrupted, at a place where it holds nothing (no
 * queued waiter on its stack, no lock); a pending, enabled cancel is
 * acted on there: the call does not return. A wait that completed (data
 * moved, a wake-up taken) returns normally; the next cancellation point
 * acts. That is glibc's rule (since 2.41, BZ #12683): cancellation acts
 * only on a call that had not completed. pthread_cond_wait reacquires the
 * mutex first, as POSIX requires. A cancelled call that a spare thread
 * was making for the fiber (offload.c) is interrupted there when it can
 * be (see shim__offload_blocking).
 *
 * Asynchronous cancellation (PTHREAD_CANCEL_ASYNCHRONOUS) reaches a
 * running fiber through the poke of signal.c: the poke handler, on the
 * fiber's stack, acts on the cancel from the interrupted instruction, as
 * glibc's SIGCANCEL handler does, unless the fiber was inside the shim or
 * the runtime, where it is poked again 20 us to 1 ms later.
 *
 * Acting: like glibc's __do_cancel, pthread_exit(PTHREAD_CANCELED). It
 * unwinds the fiber's stack with _Unwind_ForcedUnwind of libgcc_s, loaded
 * as glibc loads it (at the first pthread_cancel or pthread_exit): C++
 * destructors run, catch (abi::__forced_unwind &) and catch (...) blocks
 * that rethrow see it, cleanup handlers pushed with the exception-based
 * pthread_cleanup_push (C++, or C with -fexceptions) run. The stop
 * function (shim__unwind_stop, after glibc's nptl/unwind.c unwind_stop)
 * runs the setjmp-based C cleanup buffers in their place among those
 * frames: when the frame about to be unwound is the one that pushed the
 * innermost buffer (its CFA has reached the buffer's saved stack
 * pointer), it longjmps there; the handler runs and calls
 * __pthread_unwind_next, which starts the forced unwind again from that
 * frame. The unwind ends at the fiber's entry: shim__thread_start's
 * buffer (set with setjmp before the start routine), reached the same
 * way, or the end of the stack (fs__context_entry marks rip undefined;
 * the adopted main fiber has glibc's _start), from where the thread's
 * exit path runs: thread_local destructors, then TSD destructors,
 * glibc's order. Without libgcc_s, the C cleanup handlers run in order,
 * without unwinding (the shim's behaviour before).
 */
#include "shim.h"

#include <dlfcn.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "asan.h"
#include "offload.h"
#include "sys.h"

/* state, type and exiting are written by the fiber only, and read by
 * other threads too (the dispatcher's repoke, shim__cancel_async_due):
 * relaxed atomics, each read on its own. */
#define SHIM_LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define SHIM_STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

/* glibc's longjmp, declared on an untyped buffer: the cancel buffer of
 * pthread_cleanup_push is a jmp_buf without the saved signal mask, which
 * is never read because __sigsetjmp(buf, 0) did not save one. */
extern void shim__cancel_longjmp(void *buf, int val) __asm__("longjmp") __attribute__((noreturn));

/* ---- the unwinder (libgcc_s), loaded on first need ------------------------ */

static struct {
    _Atomic int state; /* 0 not tried, 1 loaded, -1 unavailable */
    _Unwind_Reason_Code (*forced)(struct _Unwind_Exception *, _Unwind_Stop_Fn, void *);
    _Unwind_Word (*cfa)(struct _Unwind_Context *);
} shim__uw;

/* Loads libgcc_s's unwinder, as glibc's __libgcc_s_init does at the first
 * pthread_cancel or pthread_exit. Returns whether it is there. Any
 * thread; racing first calls load the same library. */
static bool shim__unwinder(void)
{
    int s = atomic_load_explicit(&shim__uw.state, memory_order_acquire);
    if (SHIM_LIKELY(s))
        return s > 0;
    void *h = dlopen("libgcc_s.so.1", RTLD_NOW | RTLD_NODELETE);
    void *f = h ? dlsym(h, "_Unwind_ForcedUnwind") : NULL;
    void *c = h ? dlsym(h, "_Unwind_GetCFA") : NULL;
    if (f && c) {
        shim__uw.forced = (__typeof__(shim__uw.forced))f;
        shim__uw.cfa = (__typeof__(shim__uw.cfa))c;
    }
    /* release: the pointers before the state that says they are set */
    atomic_store_explicit(&shim__uw.state, f && c ? 1 : -1, memory_order_release);
    return f && c;
}

/* The stack pointer a jmp_buf saved (index 6 on x86-64), demangled as
 * glibc's PTR_DEMANGLE does with the pointer guard of the calling
 * thread's TCB (%fs:0x30), which the fiber that called setjmp also had:
 * every TCB of a process carries the same guard. */
static uintptr_t shim__jmpbuf_sp(const long *jb)
{
    uintptr_t v = (uintptr_t)jb[6], guard;
    __asm__("movq %%fs:0x30, %0" : "=r"(guard));
    v = (v >> 0x11) | (v << (64 - 0x11));
    return v ^ guard;
}

#ifdef FS_ASAN
/* Under ASan: the fiber's stack below `top`, where frames the unwind left
 * (the unwinder's, and those a longjmp to a C cleanup buffer skipped)
 * keep their redzones poisoned, is cleared before code runs there again:
 * ASan's own clearing at longjmp and noreturn calls does not know fiber
 * stacks, and would report the stale redzones as overflows. Its locals
 * are not on the stack being cleared. */
__attribute__((no_sanitize_address, noinline)) static void shim__asan_clear_to(uintptr_t top)
{
    static __thread void *lo;
    static __thread size_t size;
    fs_fiber_stack(fs_self(), &lo, &size);
    if (top > (uintptr_t)lo && top - (uintptr_t)lo <= size)
        __asan_unpoison_memory_region(lo, top - (uintptr_t)lo);
}
#define shim__asan_clear_below() shim__asan_clear_to((uintptr_t)__builtin_frame_address(0))
#else
#define shim__asan_clear_to(top) ((void)(top))
#define shim__asan_clear_below() ((void)0)
#endif

/* ---- acting on a cancel, pthread_exit -------------------------------------- */

static void shim__unwind_cleanup(_Unwind_Reason_Code rc, struct _Unwind_Exception *exc)
{
    (void)rc;
    (void)exc;
    /* What glibc says when a catch (...) swallows the forced unwind. */
    static const char msg[] = "FATAL: exception not rethrown\n";
    fs__sys3(SYS_write, 2, msg, sizeof msg - 1);
    abort();
}

static _Unwind_Reason_Code shim__unwind_stop(int version, _Unwind_Action actions,
                                             _Unwind_Exception_Class cls,
                                             struct _Unwind_Exception *exc,
                                             struct _Unwind_Context *ctx, void *param)
{
    (void)version;
    (void)cls;
    (void)exc;
    struct shim_cancel *c = param;
    bool end = actions & _UA_END_OF_STACK;
    /* The CFA the context holds is the one of the frame unwound last, the
     * stack pointer of the frame about to be (glibc's unwind_stop reads
     * it the same way): once it reaches a buffer's saved stack pointer,
     * that frame is the one that called setjmp. */
    uintptr_t cfa = end ? UINTPTR_MAX : (uintptr_t)shim__uw.cfa(ctx);
    __pthread_unwind_buf_t *b = c->cleanup;
    if (b && cfa >= shim__jmpbuf_sp((const long *)b->__cancel_jmp_buf[0].__cancel_jmp_buf)) {
        c->cleanup = b->__pad[0];
        shim__asan_clear_to(shim__jmpbuf_sp((const long *)b->__cancel_jmp_buf[0].__cancel_jmp_buf));
        shim__cancel_longjmp(b->__cancel_jmp_buf, 1);
    }
    if (c->entry_set && cfa >= shim__jmpbuf_sp((const long *)c->entry[0].__jmpbuf)) {
        shim__asan_clear_to(shim__jmpbuf_sp((const long *)c->entry[0].__jmpbuf));
        shim__cancel_longjmp(c->entry, 1);
    }
    if (end)
        shim__thread_finish(c->result); /* the adopted main fiber: glibc's _start */
    return _URC_NO_REASON;
}

/* Unwinds the calling fiber toward its entry (see the header); never
 * returns. c->result holds the thread's value. */
__attribute__((noreturn)) static void shim__unwind(struct shim_cancel *c)
{
    shim__asan_clear_below();
    if (shim__unwinder()) {
        memset(&c->exc, 0, sizeof c->exc);
        c->exc.exception_cleanup = shim__unwind_cleanup;
        shim__uw.forced(&c->exc, shim__unwind_stop, c);
        /* Only a broken unwind table comes back: fall through. */
    }
    /* No unwinder: the C cleanup handlers in order, each at its push
     * site; __pthread_unwind_next brings us back here. */
    if (c->cleanup) {
        __pthread_unwind_buf_t *b = c->cleanup;
        c->cleanup = b->__pad[0];
        shim__cancel_longjmp(b->__cancel_jmp_buf, 1);
    }
    shim__thread_finish(c->result);
}

void shim__cancel_exit(struct shim_cancel *c, void *ret)
{
    /* glibc's EXITING bit: no cancellation acts from here on. */
    SHIM_STORE(c->exiting, true);
    c->result = ret;
    shim__unwind(c);
}

static inline struct shim_cancel *shim__cancel_self(void)
{
    fs_fiber *f = fs_self();
    return f ? shim__cancel_of(f) : NULL;
}

static inline bool shim__cancel_acts(struct shim_cancel *c)
{
    return atomic_load_explicit(&c->pending, memory_order_relaxed) &&
           SHIM_LOAD(c->state) == PTHREAD_CANCEL_ENABLE && !SHIM_LOAD(c->exiting);
}

bool shim__cancel_due(void)
{
    struct shim_cancel *c = shim__cancel_self();
    return c && SHIM_UNLIKELY(shim__cancel_acts(c));
}

void shim__cancel_point(void)
{
    struct shim_cancel *c = shim__cancel_self();
    if (c && SHIM_UNLIKELY(shim__cancel_acts(c)))
        shim__cancel_exit(c, PTHREAD_CANCELED);
}

bool shim__cancel_async_due(fs_fiber *f)
{
    struct shim_cancel *c = shim__cancel_of(f);
    return c && SHIM_LOAD(c->type) == PTHREAD_CANCEL_ASYNCHRONOUS && shim__cancel_acts(c);
}

void shim__cancel_async_act(void)
{
    struct shim_cancel *c = shim__cancel_self();
    if (c && SHIM_LOAD(c->type) == PTHREAD_CANCEL_ASYNCHRONOUS && shim__cancel_acts(c))
        shim__cancel_exit(c, PTHREAD_CANCELED);
}

/* ---- the calls ------------------------------------------------------------ */

void shim__cancel_post(fs_fiber *f)
{
    struct shim_cancel *c = shim__cancel_of(f);
    /* glibc loads the unwinder here, before the target can need it. */
    (void)shim__unwinder();
    /* seq_cst: before the interrupt, which the target's park reads. */
    atomic_store(&c->pending, 1);
    if (f == fs_self()) {
        /* glibc acts at once on itself only with asynchronous type. */
        shim__cancel_async_act();
        return;
    }
    fs_interrupt(f);
    shim__sig_poke(f); /* if it runs: an asynchronous cancel acts now */
    shim__offload_cancel(f);
}

void shim__pthread_testcancel(void)
{
    if (!fs_self()) {
        REAL(pthread_testcancel)();
        return;
    }
    shim__cancel_point();
}
SHIM_ALIAS(pthread_testcancel)

int shim__pthread_setcancelstate(int state, int *old)
{
    struct shim_cancel *c = shim__cancel_self();
    if (!c)
        return REAL(pthread_setcancelstate)(state, old);
    if (state != PTHREAD_CANCEL_ENABLE && state != PTHREAD_CANCEL_DISABLE)
        return EINVAL;
    if (old)
        *old = c->state;
    SHIM_STORE(c->state, state);
    /* glibc: enabling with a cancel pending in asynchronous mode acts. */
    shim__cancel_async_act();
    return 0;
}
SHIM_ALIAS(pthread_setcancelstate)

int shim__pthread_setcanceltype(int type, int *old)
{
    struct shim_cancel *c = shim__cancel_self();
    if (!c)
        return REAL(pthread_setcanceltype)(type, old);
    if (type != PTHREAD_CANCEL_DEFERRED && type != PTHREAD_CANCEL_ASYNCHRONOUS)
        return EINVAL;
    if (old)
        *old = c->type;
    SHIM_STORE(c->type, type);
    shim__cancel_async_act();
    return 0;
}
SHIM_ALIAS(pthread_setcanceltype)

/* glibc's C cleanup handlers (pthread_cleanup_push without exceptions)
 * keep their chain in the kernel thread's struct pthread, which fibers
 * sharing a carrier would corrupt; for fibers the chain lives in the
 * fiber's struct shim_cancel. __pad[0] links a buffer to the outer one. */
void shim____pthread_register_cancel(__pthread_unwind_buf_t *buf)
{
    struct shim_cancel *c = shim__cancel_self();
    if (!c) {
        REAL(__pthread_register_cancel)(buf);
        return;
    }
    buf->__pad[0] = c->cleanup;
    c->cleanup = buf;
}
SHIM_ALIAS(__pthread_register_cancel)

void shim____pthread_unregister_cancel(__pthread_unwind_buf_t *buf)
{
    struct shim_cancel *c = shim__cancel_self();
    if (!c) {
        REAL(__pthread_unregister_cancel)(buf);
        return;
    }
    c->cleanup = buf->__pad[0];
}
SHIM_ALIAS(__pthread_unregister_cancel)

/* After a C cleanup handler ran at its push site: go on unwinding from
 * there (the stop function already took buf off the chain). */
void shim____pthread_unwind_next(__pthread_unwind_buf_t *buf)
{
    struct shim_cancel *c = shim__cancel_self();
    if (!c)
        REAL(__pthread_unwind_next)(buf);
    shim__asan_clear_below();
    shim__unwind(c);
}
SHIM_ALIAS(__pthread_unwind_next)
