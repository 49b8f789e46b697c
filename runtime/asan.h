/*
 * asan.h - telling AddressSanitizer about fiber switches.
 *
 * ASan knows, per thread, the bounds of the thread's stack and its fake
 * stack (for use-after-return), and it keeps stack redzones poisoned in
 * shadow memory. A fiber switch moves the stack pointer to a stack ASan
 * knows nothing about. Its handling of a noreturn call (unpoison the
 * thread's stack from the stack pointer up) then acts on the wrong range,
 * redzones of frames a fiber left behind stay poisoned, and a later frame
 * on a reused stack trips over them: false stack-buffer-underflow reports
 * (seen in test_sched's spawn tree once fs_spawn_attr grew and moved its
 * frames). Reports would also name the wrong stack.
 *
 * So under ASan every fs__context_switch is wrapped, as ASan's fiber
 * interface asks:
 *   fs__asan_start(save, lo, size)  right before, in the context that
 *       leaves: save is where its fake stack is kept (its asan_fake slot),
 *       or NULL when it leaves for good (a fiber's last switch, fs_exit:
 *       ASan frees its fake stack); [lo, lo + size) is the stack of the
 *       context switched to;
 *   fs__asan_finish(saved)  first thing in the context that arrives, with
 *       what its own last fs__asan_start saved (NULL for a fiber's first
 *       run).
 * The stacks: a spawned fiber's is fiber.stack; an adopted fiber's is its
 * thread's (fiber.stack, from pthread_getattr_np); a carrier's idle loop
 * runs on the carrier thread's stack (sched.asan_idle_lo/size, read at
 * its start) or, for an adopted thread, on sched.idle_stack.
 *
 * Without ASan these are empty inline functions and the fields do not
 * exist, so the normal build's switch path is unchanged.
 */
#ifndef FS_ASAN_H
#define FS_ASAN_H

#include <stddef.h>

#if defined(__SANITIZE_ADDRESS__) /* GCC */
#define FS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) /* Clang */
#define FS_ASAN 1
#endif
#endif

#ifdef FS_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>

static inline void fs__asan_start(void **save, const void *lo, size_t size)
{
    __sanitizer_start_switch_fiber(save, lo, size);
}

static inline void fs__asan_finish(void *saved)
{
    __sanitizer_finish_switch_fiber(saved, NULL, NULL);
}
/* Clears stale redzones from [lo, lo + size), a stack about to be reused. */
static inline void fs__asan_unpoison(const void *lo, size_t size)
{
    __asan_unpoison_memory_region(lo, size);
}
#define FS_ASAN_SLOT(p) (&(p)->asan_fake)
#define FS_ASAN_SAVED(p) ((p)->asan_fake)
#else
static inline void fs__asan_start(void **save, const void *lo, size_t size)
{
    (void)save;
    (void)lo;
    (void)size;
}
static inline void fs__asan_finish(void *saved)
{
    (void)saved;
}
static inline void fs__asan_unpoison(const void *lo, size_t size)
{
    (void)lo;
    (void)size;
}
#define FS_ASAN_SLOT(p) ((void **)0)
#define FS_ASAN_SAVED(p) ((void *)0)
#endif

#endif
