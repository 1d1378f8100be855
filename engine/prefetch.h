/*
 * prefetch.h — weft_prefetch_w(p): asks the CPU to fetch the cache line of
 * p for writing, ahead of a store to it.
 *
 * Why. A value sent between processors is written by one core into memory
 * that the other core read last (a recycled pool block). The store then
 * waits for the line to come over, and the next locked instruction (the
 * CAS that claims a slot of the channel's ring) waits for the store: a
 * line transfer per message, 45 to 200 ns on the 2-vCPU machines of
 * bench/RESULTS.md. Fetching the line for the next message while this one
 * is being made takes that wait off the sender's path.
 *
 * x86-64: PREFETCHW, used only where CPUID reports it (on CPUs without it
 * the opcode may fault); otherwise, and on other GCC/Clang targets,
 * __builtin_prefetch(p, 1) (PREFETCHT0 on x86, a store prefetch on arm64);
 * elsewhere nothing. A prefetch never faults and changes no value.
 */
#ifndef WEFT_PREFETCH_H
#define WEFT_PREFETCH_H

#include <stdatomic.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>

/* 1 if the CPU has PREFETCHW (CPUID 0x80000001, ECX bit 8); found once per
 * file that uses it. */
static inline int weft_prefetchw_ok(void) {
    static atomic_int ok = -1;
    int v = atomic_load_explicit(&ok, memory_order_relaxed);
    if (v < 0) {
        unsigned a, b, c, d;
        v = __get_cpuid(0x80000001u, &a, &b, &c, &d) && (c & (1u << 8));
        atomic_store_explicit(&ok, v, memory_order_relaxed);
    }
    return v;
}
#endif

static inline void weft_prefetch_w(const void *p) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (weft_prefetchw_ok()) {
        __asm__ __volatile__("prefetchw (%0)" : : "r"(p));
        return;
    }
#endif
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(p, 1);
#else
    (void)p;
#endif
}

#endif
