/*
 * test_sema.c — semaphores and atomics: counts and limits, FIFO hand-off
 * (a large request is not overtaken by later small ones), mutual exclusion
 * across processors, a weighted stress checking that units are never
 * over-admitted, and waiters discarded at engine stop.
 */
#include "ctest.h"

#include <stdlib.h>

/* ---- counts, limits, bad calls ------------------------------------------------ */

static void test_basics(void) {
    weft_sema *s = weft_sema_new_limit(2, 3);
    CHECK_EQ(weft_sema_count(s), 2);
    CHECK_EQ(weft_sema_limit(s), 3);
    CHECK_EQ(weft_sema_tryacquire(s, 1), WEFT_OK);
    CHECK_EQ(weft_sema_tryacquire(s, 2), WEFT_EAGAIN);
    CHECK_EQ(weft_sema_tryacquire(s, 0), WEFT_OK);
    CHECK_EQ(weft_sema_tryacquire(s, -1), WEFT_EINVAL);
    CHECK_EQ(weft_sema_tryacquire(s, 4), WEFT_EINVAL);
    CHECK_EQ(weft_sema_count(s), 1);
    CHECK_EQ(weft_sema_release(s, 2), WEFT_OK);
    CHECK_EQ(weft_sema_release(s, 1), WEFT_EINVAL); /* beyond the limit */
    CHECK_EQ(weft_sema_count(s), 3);
    CHECK_EQ(weft_sema_release(s, -1), WEFT_EINVAL);
    CHECK_EQ(weft_sema_acquire(s, 1), WEFT_ENOTG); /* not a goroutine */
    CHECK(weft_sema_new_limit(3, 2) == NULL);
    CHECK(weft_sema_new(-1) == NULL);
    weft_sema_release_ref(weft_sema_retain(s));
    weft_sema_release_ref(s);

    weft_atomic *a = weft_atomic_new(5);
    CHECK_EQ(weft_atomic_load(a), 5);
    CHECK_EQ(weft_atomic_add(a, 3), 8);
    CHECK_EQ(weft_atomic_swap(a, -1), 8);
    CHECK(!weft_atomic_cas(a, 0, 7));
    CHECK(weft_atomic_cas(a, -1, 7));
    weft_atomic_store(a, 42);
    CHECK_EQ(weft_atomic_load(a), 42);
    weft_atomic_release(weft_atomic_retain(a));
    weft_atomic_release(a);
}

/* ---- FIFO: a big request is not starved by later small ones ---------------------- */

typedef struct fifo_arg {
    weft_sema *s;
    int64_t k;
    int id;
    atomic_int *order; /* next slot in got[] */
    int *got;
} fifo_arg;

static void fifo_waiter(void *p) {
    fifo_arg *a = p;
    CHECK_EQ(weft_sema_acquire(a->s, a->k), WEFT_OK);
    a->got[atomic_fetch_add(a->order, 1)] = a->id;
}

static void fifo_main(void *arg) {
    (void)arg;
    weft_sema *s = weft_sema_new(0);
    atomic_int order = 0;
    int got[3] = {-1, -1, -1};
    fifo_arg big = {s, 3, 0, &order, got}, small1 = {s, 1, 1, &order, got},
             small2 = {s, 1, 2, &order, got};
    /* One processor: each goroutine runs up to its park before main goes on. */
    weft_go(fifo_waiter, &big);
    weft_yield();
    weft_go(fifo_waiter, &small1);
    weft_yield();
    weft_go(fifo_waiter, &small2);
    weft_yield();
    CHECK_EQ(atomic_load(&order), 0);
    CHECK_EQ(weft_sema_release(s, 2), WEFT_OK); /* fits small1, not big: nobody */
    weft_yield();
    CHECK_EQ(atomic_load(&order), 0);
    CHECK_EQ(weft_sema_tryacquire(s, 1), WEFT_EAGAIN); /* no barging either */
    CHECK_EQ(weft_sema_count(s), 2);
    CHECK_EQ(weft_sema_release(s, 2), WEFT_OK); /* big (3), then small1 (1) */
    while (atomic_load(&order) < 2)
        weft_yield();
    CHECK_EQ(got[0], 0);
    CHECK_EQ(got[1], 1);
    CHECK_EQ(weft_sema_count(s), 0);
    CHECK_EQ(weft_sema_release(s, 1), WEFT_OK);
    while (atomic_load(&order) < 3)
        weft_yield();
    CHECK_EQ(got[2], 2);
    CHECK_EQ(weft_sema_count(s), 0);
    weft_sema_release_ref(s);
}

static void test_fifo(void) {
    ctest_run(1, fifo_main, NULL);
}

/* ---- mutual exclusion across processors ------------------------------------------- */

typedef struct excl {
    weft_sema *s, *done;
    long counter; /* only touched while holding s */
    int iters;
} excl;

static void excl_worker(void *p) {
    excl *e = p;
    for (int i = 0; i < e->iters; i++) {
        CHECK_EQ(weft_sema_acquire(e->s, 1), WEFT_OK);
        long c = e->counter;
        if (i % 7 == 0)
            weft_yield(); /* hold it across a switch now and then */
        e->counter = c + 1;
        CHECK_EQ(weft_sema_release(e->s, 1), WEFT_OK);
    }
    weft_sema_release(e->done, 1);
}

static void excl_main(void *arg) {
    (void)arg;
    int workers = 16;
    excl e = {weft_sema_new_limit(1, 1), weft_sema_new(0), 0, (int)(2000 * ctest_scale()) + 10};
    for (int i = 0; i < workers; i++)
        weft_go(excl_worker, &e);
    CHECK_EQ(weft_sema_acquire(e.done, workers), WEFT_OK);
    CHECK_EQ(e.counter, (long)workers * e.iters);
    CHECK_EQ(weft_sema_count(e.s), 1);
    weft_sema_release_ref(e.s);
    weft_sema_release_ref(e.done);
}

static void test_exclusion(void) {
    ctest_run(1, excl_main, NULL);
    ctest_run(2, excl_main, NULL);
    ctest_run(4, excl_main, NULL);
}

/* ---- weighted stress: never over-admitted ----------------------------------------- */

enum { CAPACITY = 8 };

typedef struct weighted {
    weft_sema *s, *done;
    atomic_int inuse, peak;
    weft_atomic *ops;
    int iters;
} weighted;

static void weighted_worker(void *p) {
    weighted *w = p;
    uint64_t r = ctest_mix((uint64_t)weft_id());
    for (int i = 0; i < w->iters; i++) {
        r = ctest_mix(r);
        int k = 1 + (int)(r % 4);
        if (r & 16) {
            if (weft_sema_tryacquire(w->s, k) != WEFT_OK)
                continue;
        } else {
            CHECK_EQ(weft_sema_acquire(w->s, k), WEFT_OK);
        }
        int now = atomic_fetch_add(&w->inuse, k) + k;
        CHECKF(now <= CAPACITY, "%d units in use", now);
        int peak = atomic_load(&w->peak);
        while (now > peak && !atomic_compare_exchange_weak(&w->peak, &peak, now))
            ;
        if (r & 32)
            weft_yield();
        atomic_fetch_sub(&w->inuse, k);
        weft_atomic_add(w->ops, 1);
        CHECK_EQ(weft_sema_release(w->s, k), WEFT_OK);
    }
    weft_sema_release(w->done, 1);
}

static void weighted_main(void *arg) {
    (void)arg;
    int workers = 32;
    weighted w = {weft_sema_new_limit(CAPACITY, CAPACITY), weft_sema_new(0), 0, 0,
                  weft_atomic_new(0), (int)(3000 * ctest_scale()) + 10};
    for (int i = 0; i < workers; i++)
        weft_go(weighted_worker, &w);
    CHECK_EQ(weft_sema_acquire(w.done, workers), WEFT_OK);
    CHECK_EQ(weft_sema_count(w.s), CAPACITY);
    CHECK_EQ(atomic_load(&w.inuse), 0);
    CHECK(atomic_load(&w.peak) <= CAPACITY);
    CHECK(weft_atomic_load(w.ops) > 0);
    weft_sema_release_ref(w.s);
    weft_sema_release_ref(w.done);
    weft_atomic_release(w.ops);
}

static void test_weighted_stress(void) {
    ctest_run(2, weighted_main, NULL);
    ctest_run(4, weighted_main, NULL);
}

/* ---- atomics across processors ------------------------------------------------------ */

typedef struct counters {
    weft_atomic *sum, *cas_sum;
    weft_sema *done;
    int iters;
} counters;

static void atomic_worker(void *p) {
    counters *c = p;
    for (int i = 0; i < c->iters; i++) {
        weft_atomic_add(c->sum, 1);
        for (;;) {
            int64_t old = weft_atomic_load(c->cas_sum);
            if (weft_atomic_cas(c->cas_sum, old, old + 2))
                break;
        }
    }
    weft_sema_release(c->done, 1);
}

static void atomic_main(void *arg) {
    (void)arg;
    int workers = 8;
    counters c = {weft_atomic_new(0), weft_atomic_new(0), weft_sema_new(0),
                  (int)(20000 * ctest_scale()) + 10};
    for (int i = 0; i < workers; i++)
        weft_go(atomic_worker, &c);
    CHECK_EQ(weft_sema_acquire(c.done, workers), WEFT_OK);
    CHECK_EQ(weft_atomic_load(c.sum), (int64_t)workers * c.iters);
    CHECK_EQ(weft_atomic_load(c.cas_sum), (int64_t)2 * workers * c.iters);
    weft_atomic_release(c.sum);
    weft_atomic_release(c.cas_sum);
    weft_sema_release_ref(c.done);
}

static void test_atomic_counts(void) {
    ctest_run(2, atomic_main, NULL);
}

/* ---- waiters discarded at stop -------------------------------------------------------- */

static void forever_waiter(void *p) {
    weft_sema_acquire(p, 1);
    CHECK(0); /* never served */
}

static void discard_main(void *arg) {
    weft_sema *s = arg;
    for (int i = 0; i < 3; i++)
        weft_go(forever_waiter, s);
    while (weft_count() < 4)
        weft_yield();
    for (int i = 0; i < 5; i++)
        weft_yield();
}

static void test_discard(void) {
    weft_sema *s = weft_sema_new(0);
    ctest_run(2, discard_main, s);
    /* The engine withdrew the waiters: the semaphore is ours alone again. */
    CHECK_EQ(weft_sema_release(s, 1), WEFT_OK);
    CHECK_EQ(weft_sema_count(s), 1);
    weft_sema_release_ref(s);
}

const ctest_case sema_tests[] = {
    {"basics", test_basics},
    {"fifo", test_fifo},
    {"exclusion", test_exclusion},
    {"weighted_stress", test_weighted_stress},
    {"atomic_counts", test_atomic_counts},
    {"discard", test_discard},
    {NULL, NULL},
};
