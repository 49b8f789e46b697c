/*
 * context.c - building the first frame of a new fiber context.
 */
#include "context.h"

#include <stdint.h>
#include <string.h>

void fs__context_entry(void);

/* The stack pointer entry starts with: the ABI wants rsp % 16 == 0 at
 * the call in fs__context_entry; 64 bytes of slack keep the red zone and
 * the unwinder's reads inside the stack. */
static uintptr_t fs__context_top(void *lo, size_t size)
{
    return ((uintptr_t)lo + size - 64) & ~(uintptr_t)15;
}

void fs__context_make_at(struct fs_context *ctx, struct fs_switch_frame *frame, void *lo,
                         size_t size, void (*entry)(void *), void *arg)
{
    /* The switch pops the frame and "returns" into fs__context_entry,
     * which moves to r14, the stack's top, and calls entry(arg) there. */
    memset(frame, 0, sizeof(*frame));
    frame->mxcsr = 0x1f80; /* all SSE exceptions masked, round to nearest */
    frame->fpucw = 0x037f; /* x87: extended precision, all exceptions masked */
    frame->r12 = (uint64_t)(uintptr_t)arg;
    frame->r13 = (uint64_t)(uintptr_t)entry;
    frame->r14 = (uint64_t)fs__context_top(lo, size);
    frame->rip = (uint64_t)(uintptr_t)fs__context_entry;
    ctx->sp = frame;
}

void fs__context_make(struct fs_context *ctx, void *lo, size_t size, void (*entry)(void *),
                      void *arg)
{
    /* Just below the top entry starts from: popped before entry runs. */
    struct fs_switch_frame *f =
        (struct fs_switch_frame *)(fs__context_top(lo, size) - FS_CTX_FRAME);
    fs__context_make_at(ctx, f, lo, size, entry, arg);
}
