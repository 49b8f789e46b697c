/*
 * context.c - building the first frame of a new fiber context.
 */
#include "context.h"

#include <stdint.h>
#include <string.h>

void fs__context_entry(void);

void fs__context_make(struct fs_context *ctx, void *lo, size_t size, void (*entry)(void *),
                      void *arg)
{
    /* The switch pops FS_CTX_FRAME bytes and "returns" into
     * fs__context_entry, which then calls entry with rsp as it found it.
     * The ABI wants rsp % 16 == 0 at that call, so the address just past
     * the frame must be 16-byte aligned; 64 more bytes of slack keep the
     * red zone and the unwinder's reads inside the stack. */
    uintptr_t top = ((uintptr_t)lo + size - 64) & ~(uintptr_t)15;
    struct fs_switch_frame *f = (struct fs_switch_frame *)(top - FS_CTX_FRAME);

    memset(f, 0, sizeof(*f));
    f->mxcsr = 0x1f80; /* all SSE exceptions masked, round to nearest */
    f->fpucw = 0x037f; /* x87: extended precision, all exceptions masked */
    f->r12 = (uint64_t)(uintptr_t)arg;
    f->r13 = (uint64_t)(uintptr_t)entry;
    f->rip = (uint64_t)(uintptr_t)fs__context_entry;
    ctx->sp = f;
}
