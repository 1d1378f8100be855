/*
 * Context switch for x86-64 (System V). See ctx.h for the contract.
 * Frame, from the saved stack pointer up:
 *   [0] MXCSR (4 bytes)  [4] x87 control word (2 bytes)  [8] r15  [16] r14
 *   [24] r13  [32] r12  [40] rbx  [48] rbp  [56] return address
 */
#if defined(__x86_64__)
#if defined(__CET__)
#define WEFT_ENDBR endbr64
#else
#define WEFT_ENDBR
#endif
        .text
        .globl  weft_ctx_swap
        .hidden weft_ctx_swap
        .type   weft_ctx_swap, @function
        .p2align 4
weft_ctx_swap:
        .cfi_startproc
        WEFT_ENDBR
        pushq   %rbp
        pushq   %rbx
        pushq   %r12
        pushq   %r13
        pushq   %r14
        pushq   %r15
        subq    $8, %rsp
        stmxcsr (%rsp)
        fnstcw  4(%rsp)
        movq    %rsp, (%rdi)
        movq    %rsi, %rsp
        ldmxcsr (%rsp)
        fldcw   4(%rsp)
        addq    $8, %rsp
        popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
        popq    %rbx
        popq    %rbp
        ret
        .cfi_endproc
        .size   weft_ctx_swap, .-weft_ctx_swap

/* First code run on a new stack: r12 = entry, r13 = arg. The stack is
 * 16-byte aligned here, so the call gives entry the ABI's alignment. */
        .globl  weft_ctx_trampoline
        .hidden weft_ctx_trampoline
        .type   weft_ctx_trampoline, @function
        .p2align 4
weft_ctx_trampoline:
        .cfi_startproc
        .cfi_undefined rip
        WEFT_ENDBR
        movq    %r13, %rdi
        callq   *%r12
        ud2
        .cfi_endproc
        .size   weft_ctx_trampoline, .-weft_ctx_trampoline
#endif
        .section .note.GNU-stack,"",@progbits
