/*
 * context.h - the machine context of a fiber, shared between C and the
 * assembly in arch/switch_x86_64.S. Every offset the assembly uses is
 * defined here and checked with _Static_assert.
 */
#ifndef FS_CONTEXT_H
#define FS_CONTEXT_H

/* Offsets into the frame that fs__context_switch pushes, from the saved
 * stack pointer upwards (see the diagram in arch/switch_x86_64.S). */
#define FS_CTX_MXCSR 0
#define FS_CTX_FPUCW 4
#define FS_CTX_R15 8
#define FS_CTX_R14 16
#define FS_CTX_R13 24
#define FS_CTX_R12 32
#define FS_CTX_RBX 40
#define FS_CTX_RBP 48
#define FS_CTX_RIP 56
#define FS_CTX_FRAME 64 /* bytes popped by a switch, return address included */

/* Offset of the saved stack pointer in struct fs_context. */
#define FS_CTX_SP 0

#ifndef __ASSEMBLER__
#include <stddef.h>
#include <stdint.h>

struct fs_context {
    void *sp; /* top of the saved frame; NULL while the context runs */
};

/* The frame fs__context_switch leaves on a suspended stack. */
struct fs_switch_frame {
    uint32_t mxcsr;     /* SSE control/status: rounding, exception masks */
    uint16_t fpucw;     /* x87 control word: precision, rounding, masks */
    uint16_t pad;
    uint64_t r15, r14, r13, r12, rbx, rbp;
    uint64_t rip;       /* where the switch returns to */
};

_Static_assert(offsetof(struct fs_context, sp) == FS_CTX_SP, "sp offset");
_Static_assert(offsetof(struct fs_switch_frame, mxcsr) == FS_CTX_MXCSR, "mxcsr offset");
_Static_assert(offsetof(struct fs_switch_frame, fpucw) == FS_CTX_FPUCW, "fpucw offset");
_Static_assert(offsetof(struct fs_switch_frame, r15) == FS_CTX_R15, "r15 offset");
_Static_assert(offsetof(struct fs_switch_frame, r14) == FS_CTX_R14, "r14 offset");
_Static_assert(offsetof(struct fs_switch_frame, r13) == FS_CTX_R13, "r13 offset");
_Static_assert(offsetof(struct fs_switch_frame, r12) == FS_CTX_R12, "r12 offset");
_Static_assert(offsetof(struct fs_switch_frame, rbx) == FS_CTX_RBX, "rbx offset");
_Static_assert(offsetof(struct fs_switch_frame, rbp) == FS_CTX_RBP, "rbp offset");
_Static_assert(offsetof(struct fs_switch_frame, rip) == FS_CTX_RIP, "rip offset");
_Static_assert(sizeof(struct fs_switch_frame) == FS_CTX_FRAME, "frame size");

/* Saves the callee-saved registers, MXCSR and the x87 control word of the
 * caller on its stack, stores the stack pointer in from->sp, and resumes
 * `to`. Returns when something switches back to `from`. Caller-saved state
 * is the compiler's business (this is a normal function call to it). */
void fs__context_switch(struct fs_context *from, struct fs_context *to);

/* Prepares ctx so that the first switch to it calls entry(arg) on the
 * stack [lo, lo + size). entry must never return. The new context starts
 * with the default MXCSR (0x1f80) and x87 control word (0x037f). The frame
 * the first switch pops lies at the top of the stack. */
void fs__context_make(struct fs_context *ctx, void *lo, size_t size, void (*entry)(void *),
                      void *arg);

/* The same, with the first frame in *frame (8-byte aligned), which must
 * stay untouched until the first switch to ctx has popped it. The stack
 * itself is not written: its pages are first touched by whichever carrier
 * runs the context (a new fiber's record lies on a page its spawner
 * touches anyway; the stack below it then costs that spawner nothing). */
void fs__context_make_at(struct fs_context *ctx, struct fs_switch_frame *frame, void *lo,
                         size_t size, void (*entry)(void *), void *arg);
#endif

#endif
