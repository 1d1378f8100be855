/*
 * lock.c — slow paths of the futex mutex (see lock.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "lock.h"

#include <sched.h>
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

static void futex_wait(atomic_int *addr, int val) {
#if defined(__linux__)
    syscall(SYS_futex, (int *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
#else
    (void)addr;
    (void)val;
    sched_yield();
#endif
}

void weft_mutex_wake(weft_mutex *m) {
#if defined(__linux__)
    syscall(SYS_futex, (int *)&m->state, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
#else
    (void)m;
#endif
}

void weft_mutex_lock_slow(weft_mutex *m) {
    for (int spin = 0; spin < 100; spin++) {
        int expect = 0;
        if (atomic_load_explicit(&m->state, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(&m->state, &expect, 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return;
        weft_cpu_relax();
    }
    /* Announce a waiter; whoever unlocks from state 2 wakes one. */
    while (atomic_exchange_explicit(&m->state, 2, memory_order_acquire) != 0)
        futex_wait(&m->state, 2);
}
