/*
 * Context switch for AArch64 (AAPCS64, Linux). See ctx.h for the contract.
 * Frame, 176 bytes, from the saved stack pointer up (8-byte slots):
 *   [0..9] x19..x28  [10] x29 (fp)  [11] x30 (lr, where swap returns to)
 *   [12..19] d8..d15  [20] FPCR  [21] padding (keeps sp 16-byte aligned)
 * ctx.c's weft_ctx_init() builds the first frame of a new context with this
 * layout: x19 = entry, x20 = arg, x30 = weft_ctx_trampoline, the rest 0.
 * sp is lowered before anything is stored and raised only after everything
 * is loaded, so a signal arriving mid-switch never clobbers the frame.
 */
#if defined(__aarch64__)
#if defined(__ARM_FEATURE_BTI_DEFAULT) && __ARM_FEATURE_BTI_DEFAULT
#define WEFT_BTI_C bti c
#else
#define WEFT_BTI_C
#endif
        .text
        .globl  weft_ctx_swap
        .hidden weft_ctx_swap
        .type   weft_ctx_swap, @function
        .p2align 4
/* void weft_ctx_swap(void **from_sp [x0], void *to_sp [x1]) */
weft_ctx_swap:
        .cfi_startproc
        WEFT_BTI_C
        sub     sp, sp, #176
        .cfi_def_cfa_offset 176
        stp     x19, x20, [sp, #0]
        stp     x21, x22, [sp, #16]
        stp     x23, x24, [sp, #32]
        stp     x25, x26, [sp, #48]
        stp     x27, x28, [sp, #64]
        stp     x29, x30, [sp, #80]
        .cfi_offset x29, -96
        .cfi_offset x30, -88
        stp     d8, d9, [sp, #96]
        stp     d10, d11, [sp, #112]
        stp     d12, d13, [sp, #128]
        stp     d14, d15, [sp, #144]
        mrs     x9, fpcr
        str     x9, [sp, #160]
        mov     x10, sp
        str     x10, [x0]
        /* Same frame layout (and CFI) on the other stack from here on. */
        mov     sp, x1
        ldr     x10, [sp, #160]
        cmp     x9, x10
        b.eq    1f
        msr     fpcr, x10       /* writing FPCR can be slow: only when it differs */
1:
        ldp     x19, x20, [sp, #0]
        ldp     x21, x22, [sp, #16]
        ldp     x23, x24, [sp, #32]
        ldp     x25, x26, [sp, #48]
        ldp     x27, x28, [sp, #64]
        ldp     x29, x30, [sp, #80]
        ldp     d8, d9, [sp, #96]
        ldp     d10, d11, [sp, #112]
        ldp     d12, d13, [sp, #128]
        ldp     d14, d15, [sp, #144]
        add     sp, sp, #176
        .cfi_def_cfa_offset 0
        .cfi_restore x29
        .cfi_restore x30
        ret
        .cfi_endproc
        .size   weft_ctx_swap, .-weft_ctx_swap

/* First code run on a new stack, reached by weft_ctx_swap's ret:
 * x19 = entry, x20 = arg. sp is 16-byte aligned here (the top of the stack).
 * entry must never return; if it does, brk traps. x30 is marked undefined so
 * unwinders stop here, and x29 is 0 (from weft_ctx_init), which ends frame
 * pointer chains. */
        .globl  weft_ctx_trampoline
        .hidden weft_ctx_trampoline
        .type   weft_ctx_trampoline, @function
        .p2align 4
weft_ctx_trampoline:
        .cfi_startproc
        .cfi_undefined x30
        WEFT_BTI_C
        mov     x0, x20
        blr     x19
        brk     #0
        .cfi_endproc
        .size   weft_ctx_trampoline, .-weft_ctx_trampoline

#if (defined(__ARM_FEATURE_BTI_DEFAULT) && __ARM_FEATURE_BTI_DEFAULT) || \
    (defined(__ARM_FEATURE_PAC_DEFAULT) && __ARM_FEATURE_PAC_DEFAULT)
/* GNU property note, so that linking this object does not strip BTI/PAC
 * marking from a binary built with -mbranch-protection. Never GCS: swapping
 * stacks with a plain ret is incompatible with a guarded control stack. */
#if defined(__ARM_FEATURE_BTI_DEFAULT) && __ARM_FEATURE_BTI_DEFAULT
#define WEFT_PROP_BTI 1
#else
#define WEFT_PROP_BTI 0
#endif
#if defined(__ARM_FEATURE_PAC_DEFAULT) && __ARM_FEATURE_PAC_DEFAULT
#define WEFT_PROP_PAC 2
#else
#define WEFT_PROP_PAC 0
#endif
        .pushsection .note.gnu.property, "a"
        .p2align 3
        .long   4                       /* name size */
        .long   16                      /* descriptor size */
        .long   5                       /* NT_GNU_PROPERTY_TYPE_0 */
        .asciz  "GNU"
        .long   0xc0000000              /* GNU_PROPERTY_AARCH64_FEATURE_1_AND */
        .long   4                       /* property data size */
        .long   (WEFT_PROP_BTI | WEFT_PROP_PAC)
        .long   0                       /* padding */
        .popsection
#endif
#endif
        .section .note.GNU-stack,"",@progbits
