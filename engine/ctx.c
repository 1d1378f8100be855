/*
 * ctx.c — native contexts: initial frames per architecture and the
 * sanitizer-aware switch (DESIGN rule 7). The register save/restore itself is
 * in ctx_<arch>.S.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ctx.h"
#include "sanitizer.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>

#if WEFT_ASAN
#include <sanitizer/asan_interface.h>
#endif
#if WEFT_TSAN
#include <sanitizer/tsan_interface.h>
#endif

/* A reused stack may still carry ASAN's poisoned redzones from the frames
 * of the goroutine that died on it (its last switch never returned). */
static void unpoison(weft_ctx *ctx) {
#if WEFT_ASAN
    __asan_unpoison_memory_region(ctx->stack_lo, ctx->stack_size);
#else
    (void)ctx;
#endif
}

#if defined(__x86_64__)
void weft_ctx_trampoline(void);

void weft_ctx_init(weft_ctx *ctx, void (*entry)(void *), void *arg) {
    unpoison(ctx);
    uintptr_t top = ((uintptr_t)ctx->stack_lo + ctx->stack_size) & ~(uintptr_t)15;
    uint64_t *frame = (uint64_t *)(top - 64); /* see ctx_x86_64.S for the layout */
    uint32_t mxcsr = 0x1F80;                  /* all exceptions masked, round to nearest */
    uint16_t fpucw = 0x037F;
    memset(frame, 0, 64);
    memcpy((char *)frame, &mxcsr, 4);
    memcpy((char *)frame + 4, &fpucw, 2);
    frame[3] = (uint64_t)(uintptr_t)arg;   /* r13 */
    frame[4] = (uint64_t)(uintptr_t)entry; /* r12 */
    frame[7] = (uint64_t)(uintptr_t)weft_ctx_trampoline;
    ctx->sp = frame;
}
#elif defined(__aarch64__)
void weft_ctx_trampoline(void);

void weft_ctx_init(weft_ctx *ctx, void (*entry)(void *), void *arg) {
    unpoison(ctx);
    /* See ctx_aarch64.S for the layout: 176 bytes, x19.. first. */
    uintptr_t top = ((uintptr_t)ctx->stack_lo + ctx->stack_size) & ~(uintptr_t)15;
    uint64_t *frame = (uint64_t *)(top - 176);
    memset(frame, 0, 176);
    frame[0] = (uint64_t)(uintptr_t)entry;                /* x19 */
    frame[1] = (uint64_t)(uintptr_t)arg;                  /* x20 */
    frame[11] = (uint64_t)(uintptr_t)weft_ctx_trampoline; /* x30 (lr) */
    ctx->sp = frame;
}
#else
#error "weft: no context switch for this architecture (x86-64 and aarch64 are supported)"
#endif

void weft_ctx_init_thread(weft_ctx *ctx) {
    memset(ctx, 0, sizeof *ctx);
    ctx->is_thread = 1;
#if WEFT_ASAN
    {
        /* ASAN needs the bounds of every stack it is switched to. */
        pthread_attr_t attr;
        void *lo = NULL;
        size_t size = 0;
        if (pthread_getattr_np(pthread_self(), &attr) == 0) {
            pthread_attr_getstack(&attr, &lo, &size);
            pthread_attr_destroy(&attr);
        }
        ctx->stack_lo = lo;
        ctx->stack_size = size;
    }
#endif
#if WEFT_TSAN
    ctx->tsan_fiber = __tsan_get_current_fiber();
#endif
}

void weft_ctx_switch(weft_ctx *from, weft_ctx *to, int from_dying) {
#if WEFT_TSAN
    if (!to->tsan_fiber)
        to->tsan_fiber = __tsan_create_fiber(0);
    __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
#if WEFT_ASAN
    __sanitizer_start_switch_fiber(from_dying ? NULL : &from->asan_fake, to->stack_lo, to->stack_size);
#else
    (void)from_dying;
#endif
    weft_ctx_swap(&from->sp, to->sp);
#if WEFT_ASAN
    /* Back in `from`. A thread stack learns its bounds here the first time. */
    {
        const void *lo = NULL;
        size_t size = 0;
        __sanitizer_finish_switch_fiber(from->asan_fake, &lo, &size);
        from->asan_fake = NULL;
        (void)lo;
        (void)size;
    }
#endif
}

void weft_ctx_entered(weft_ctx *self) {
#if WEFT_ASAN
    __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
#endif
    (void)self;
}

void weft_ctx_destroy(weft_ctx *ctx) {
#if WEFT_TSAN
    if (ctx->tsan_fiber && !ctx->is_thread) {
        __tsan_destroy_fiber(ctx->tsan_fiber);
        ctx->tsan_fiber = NULL;
    }
#else
    (void)ctx;
#endif
}
