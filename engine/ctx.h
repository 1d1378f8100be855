/*
 * ctx.h — native execution contexts: stack switching for native goroutines.
 *
 * A context is a saved stack pointer. weft_ctx_swap() pushes the callee-saved
 * registers and the floating-point control words (x86-64: MXCSR and the x87
 * control word; aarch64: FPCR) on the current stack, stores the stack pointer
 * in *from_sp, loads to_sp and pops the same frame from there. Nothing is ever
 * stored below the stack pointer, so a signal arriving mid-switch is safe.
 *
 * weft_ctx_init() lays out such a frame at the top of a fresh stack so that
 * the first swap to it calls entry(arg). entry must never return: it leaves
 * by swapping away for good.
 *
 * The sanitizer hooks (DESIGN rule 7) live in weft_ctx_switch(): ASAN is told
 * about every stack change (start/finish_switch_fiber), TSAN about every fiber.
 */
#ifndef WEFT_CTX_H
#define WEFT_CTX_H

#include <stddef.h>

typedef struct weft_ctx {
    void *sp;          /* saved stack pointer while not running */
    void *stack_lo;    /* lowest usable address (above the guard page) */
    size_t stack_size; /* usable bytes */
    void *asan_fake;   /* ASAN fake-stack handle while switched out */
    void *tsan_fiber;  /* TSAN fiber (NULL when not built with TSAN) */
    int is_thread;     /* a thread's own stack (a processor's g0) */
} weft_ctx;

/* Assembly (ctx_<arch>.S). */
void weft_ctx_swap(void **from_sp, void *to_sp);

/* Prepares ctx (whose stack_lo/stack_size are set) to run entry(arg). */
void weft_ctx_init(weft_ctx *ctx, void (*entry)(void *), void *arg);
/* Makes ctx describe the calling thread's own stack (a processor's g0). */
void weft_ctx_init_thread(weft_ctx *ctx);
/* Switches from the running context `from` to `to`. `from_dying` says that
 * `from` will never be resumed (its fake stack can be dropped). Returns when
 * something switches back to `from`. */
void weft_ctx_switch(weft_ctx *from, weft_ctx *to, int from_dying);
/* First thing a new context does: completes the switch that started it. */
void weft_ctx_entered(weft_ctx *self);
/* Releases sanitizer state of a context that will not run again. */
void weft_ctx_destroy(weft_ctx *ctx);

#endif
