/*
 * switch_x86_64.S - fiber context switch for x86-64 System V (ELF).
 *
 * Only what the ABI says a callee must preserve is saved: rbx, rbp,
 * r12-r15, the MXCSR control bits and the x87 control word. Everything
 * else is caller-saved, so the C compiler has already spilled it around
 * the call. The fs base (TLS) is the carrier's and is not switched here;
 * if fibers ever get their own TLS block, the wrfsbase goes next to the
 * stack-pointer exchange below, and nowhere else.
 *
 * Frame saved on the suspended stack (offsets in context.h):
 *
 *   higher addresses
 *   +----------------+ <- sp + 64
 *   | return address |  +56  FS_CTX_RIP  (pushed by the caller's `call`)
 *   | rbp            |  +48  FS_CTX_RBP
 *   | rbx            |  +40  FS_CTX_RBX
 *   | r12            |  +32  FS_CTX_R12
 *   | r13            |  +24  FS_CTX_R13
 *   | r14            |  +16  FS_CTX_R14
 *   | r15            |  +8   FS_CTX_R15
 *   | pad | fpucw | mxcsr | +0 FS_CTX_MXCSR, +4 FS_CTX_FPUCW
 *   +----------------+ <- sp, stored in from->sp
 *   lower addresses
 */
#include "../context.h"

    .text

/* void fs__context_switch(struct fs_context *from %rdi, struct fs_context *to %rsi) */
    .globl  fs__context_switch
    .hidden fs__context_switch
    .type   fs__context_switch, @function
    .p2align 4
fs__context_switch:
    .cfi_startproc
    pushq   %rbp                        /* callee-saved GPRs, in frame order */
    .cfi_adjust_cfa_offset 8
    pushq   %rbx
    .cfi_adjust_cfa_offset 8
    pushq   %r12
    .cfi_adjust_cfa_offset 8
    pushq   %r13
    .cfi_adjust_cfa_offset 8
    pushq   %r14
    .cfi_adjust_cfa_offset 8
    pushq   %r15
    .cfi_adjust_cfa_offset 8
    subq    $8, %rsp                    /* room for mxcsr + fpucw */
    .cfi_adjust_cfa_offset 8
    stmxcsr FS_CTX_MXCSR(%rsp)          /* SSE rounding mode and masks */
    fnstcw  FS_CTX_FPUCW(%rsp)          /* x87 precision/rounding control */

    movq    %rsp, FS_CTX_SP(%rdi)       /* from->sp = our frame */
    movq    FS_CTX_SP(%rsi), %rsp       /* switch stacks: now on `to` */

    ldmxcsr FS_CTX_MXCSR(%rsp)
    fldcw   FS_CTX_FPUCW(%rsp)
    addq    $8, %rsp
    .cfi_adjust_cfa_offset -8
    popq    %r15
    .cfi_adjust_cfa_offset -8
    popq    %r14
    .cfi_adjust_cfa_offset -8
    popq    %r13
    .cfi_adjust_cfa_offset -8
    popq    %r12
    .cfi_adjust_cfa_offset -8
    popq    %rbx
    .cfi_adjust_cfa_offset -8
    popq    %rbp
    .cfi_adjust_cfa_offset -8
    ret                                 /* into `to`'s caller, or fs__context_entry */
    .cfi_endproc
    .size   fs__context_switch, .-fs__context_switch

/*
 * First frame of every fiber. fs__context_make_at leaves a switch frame
 * whose r12 holds the argument, r13 the entry function, r14 the top of
 * the fiber's stack (16-byte aligned) and whose return address is this
 * label. The first switch pops that frame wherever it lies (at the top of
 * the stack, or in the fiber's record) and "returns" here; rsp moves to
 * r14, so entry runs on the fiber's stack with the ABI's alignment:
 *
 *   r14 -> +----------------+  16-byte aligned; 64 bytes of slack above
 *          | return address |  pushed by the call below (into this code)
 *          +----------------+  <- entry's rsp on entry: 8 mod 16
 *          | entry's frames |
 *
 * rip is marked undefined in the CFI: gdb, libunwind and the C++
 * unwinder stop here, at the fiber's first frame, instead of walking into
 * whatever bytes lie above the stack.
 */
    .globl  fs__context_entry
    .hidden fs__context_entry
    .type   fs__context_entry, @function
    .p2align 4
fs__context_entry:
    .cfi_startproc
    .cfi_undefined rip
    movq    %r14, %rsp                  /* onto the fiber's own stack */
    xorl    %ebp, %ebp                  /* end of the frame-pointer chain */
    movq    %r12, %rdi                  /* entry(arg) */
    callq   *%r13
    ud2                                 /* entry must not return */
    .cfi_endproc
    .size   fs__context_entry, .-fs__context_entry

    .section .note.GNU-stack,"",@progbits
