/*
 * lock.h — the engine's mutex: a three-state futex lock (0 free, 1 locked,
 * 2 locked with waiters) built on C11 atomics.
 *
 * Why not pthread_mutex_t: a parking goroutine takes a channel lock on its own
 * stack and the lock is released by the processor's scheduler context after
 * the switch (gopark's unlock function). That is legal for this lock, which
 * has no notion of an owner, and sanitizers see acquire/release on atomics.
 * Critical sections are short, so the lock spins a little before sleeping.
 * Off Linux it falls back to yielding the thread instead of a futex.
 *
 * Beside it, the two CPU primitives that lock-free code builds on: the
 * spin-wait hint (weft_cpu_relax) and a full fence (weft_fence_sc).
 */
#ifndef WEFT_LOCK_H
#define WEFT_LOCK_H

#include "sanitizer.h"

#include <stdatomic.h>

typedef struct weft_mutex {
    atomic_int state;
} weft_mutex;

#define WEFT_MUTEX_INIT {0}

void weft_mutex_lock_slow(weft_mutex *m);
void weft_mutex_wake(weft_mutex *m);

/* A hint to the CPU inside a spin-wait loop. */
static inline void weft_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __asm__ __volatile__("pause");
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* A full fence, for chan.c's handshake (a store, then a load of another
 * location, that must not pass each other). On x86-64 a locked add of zero
 * to the stack is one, cheaper than mfence; under TSAN, which does not
 * model fences (and gcc warns of them), a seq_cst read-modify-write; else
 * the C11 fence. */
static inline void weft_fence_sc(void) {
#if defined(WEFT_TSAN)
    static _Atomic int weft_fence_cell;
    atomic_fetch_add_explicit(&weft_fence_cell, 0, memory_order_seq_cst);
#elif defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __asm__ __volatile__("lock; addl $0,-8(%%rsp)" ::: "memory", "cc");
#else
    atomic_thread_fence(memory_order_seq_cst);
#endif
}

static inline void weft_mutex_init(weft_mutex *m) {
    atomic_init(&m->state, 0);
}

static inline void weft_mutex_lock(weft_mutex *m) {
    int expect = 0;
    if (atomic_compare_exchange_weak_explicit(&m->state, &expect, 1, memory_order_acquire,
                                              memory_order_relaxed))
        return;
    weft_mutex_lock_slow(m);
}

static inline int weft_mutex_trylock(weft_mutex *m) {
    int expect = 0;
    return atomic_compare_exchange_strong_explicit(&m->state, &expect, 1, memory_order_acquire,
                                                   memory_order_relaxed);
}

static inline void weft_mutex_unlock(weft_mutex *m) {
    if (atomic_exchange_explicit(&m->state, 0, memory_order_release) == 2)
        weft_mutex_wake(m);
}

#endif
