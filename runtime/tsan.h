/*
 * tsan.h - telling ThreadSanitizer about fiber switches.
 *
 * TSan keeps, per thread, a vector clock (what that thread has seen
 * happen) and a shadow call stack. A fiber switch changes both under its
 * feet: without annotations, TSan takes every fiber a carrier runs for
 * the carrier thread itself, so two fibers' unsynchronised accesses on
 * one carrier are never reported, a fiber resumed on another carrier
 * appears to race with its own past, and the shadow call stack, pushed by
 * one fiber and popped by another, goes wrong.
 *
 * So under TSan each fiber is a TSan fiber (its own clock and shadow
 * stack), and every fs__context_switch is preceded by
 * fs__tsan_switch_to(<the target's TSan fiber>). The switch synchronises
 * (flags 0): everything the old context did happens before what the new
 * one does, as on the real carrier.
 *
 * Which TSan fiber runs what (fields in internal.h):
 *  - a spawned fiber: its own, created in fs__fiber_init and destroyed
 *    in fs__fiber_free;
 *  - the idle loop of a carrier thread the runtime started: the thread's
 *    own (the loop runs on the thread's stack, with the thread's call
 *    chain below it);
 *  - an adopted thread (fs_adopt_thread, and the forker in a fork child):
 *    the other way round. Its fiber keeps running on the thread's own
 *    stack, so it keeps the thread's own TSan state, and the idle loop,
 *    which gets a stack of its own (fs__sched_make_idle_stack), gets a new
 *    TSan fiber.
 * Either way a TSan fiber's shadow stack matches the machine stack it
 * runs on.
 *
 * Without TSan these are empty inline functions and the fields do not
 * exist, so the normal build's switch path is unchanged.
 */
#ifndef FS_TSAN_H
#define FS_TSAN_H

#if defined(__SANITIZE_THREAD__) /* GCC */
#define FS_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) /* Clang */
#define FS_TSAN 1
#endif
#endif

#ifdef FS_TSAN
#include <sanitizer/tsan_interface.h>

/* A new TSan fiber, for a context that has not run yet. */
static inline void *fs__tsan_create(void)
{
    return __tsan_create_fiber(0);
}

/* Frees a TSan fiber from fs__tsan_create. Never the running one. */
static inline void fs__tsan_destroy(void *fiber)
{
    __tsan_destroy_fiber(fiber);
}

/* The TSan fiber (or thread) running now. */
static inline void *fs__tsan_current(void)
{
    return __tsan_get_current_fiber();
}

/* Call right before switching the machine context to the context that
 * runs as `fiber`. */
static inline void fs__tsan_switch_to(void *fiber)
{
    __tsan_switch_to_fiber(fiber, 0);
}
#else
static inline void *fs__tsan_create(void)
{
    return (void *)0;
}
static inline void fs__tsan_destroy(void *fiber)
{
    (void)fiber;
}
static inline void *fs__tsan_current(void)
{
    return (void *)0;
}
static inline void fs__tsan_switch_to(void *fiber)
{
    (void)fiber;
}
#endif

#endif
