/*
 * atomic.c — shared 64-bit integers: lock-free C11 atomics on a reference
 * counted cell, so that one cell can be held by goroutines of different
 * processors (and Lua VMs) at once.
 *
 * Every operation is sequentially consistent, like Go's sync/atomic. The
 * reference count is the only other state; the last release frees the cell.
 */
#include "core.h"

#include <stdlib.h>

struct weft_atomic {
    _Atomic int64_t v;
    atomic_int refs;
};

weft_atomic *weft_atomic_new(int64_t v) {
    weft_atomic *a = malloc(sizeof *a);
    if (!a)
        return NULL;
    atomic_init(&a->v, v);
    atomic_init(&a->refs, 1);
    return a;
}

weft_atomic *weft_atomic_retain(weft_atomic *a) {
    if (a)
        atomic_fetch_add_explicit(&a->refs, 1, memory_order_relaxed);
    return a;
}

void weft_atomic_release(weft_atomic *a) {
    if (a && atomic_fetch_sub_explicit(&a->refs, 1, memory_order_acq_rel) == 1)
        free(a);
}

int64_t weft_atomic_load(weft_atomic *a) {
    return atomic_load(&a->v);
}

void weft_atomic_store(weft_atomic *a, int64_t v) {
    atomic_store(&a->v, v);
}

int64_t weft_atomic_add(weft_atomic *a, int64_t d) {
    return atomic_fetch_add(&a->v, d) + d;
}

int64_t weft_atomic_swap(weft_atomic *a, int64_t v) {
    return atomic_exchange(&a->v, v);
}

int weft_atomic_cas(weft_atomic *a, int64_t old, int64_t v) {
    return atomic_compare_exchange_strong(&a->v, &old, v);
}
