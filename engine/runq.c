/*
 * runq.c — run queues: each processor's local ring and the global queue.
 *
 * Local run queue (after Go's runq): a ring of WEFT_RUNQ_SIZE goroutine
 * pointers with a head and a tail counter, plus a `runnext` slot.
 *
 * Invariants
 *  - Only the owning processor writes `runqtail` and the slots between tail
 *    and head + SIZE (it puts); anyone may advance `runqhead` with a CAS
 *    (the owner to get one goroutine, a thief to take a batch).
 *  - tail - head is the number of queued goroutines, 0..SIZE; both counters
 *    only grow (they wrap as uint32).
 *  - A slot is read before the CAS on head that claims it, and written by
 *    the owner only after a load-acquire of head showed it free; the
 *    store-release of tail publishes the goroutine (and its contents) to
 *    thieves, whose load-acquire of tail pairs with it.
 *  - `runnext` holds at most one goroutine, exchanged atomically. Only the
 *    owner puts into it; the owner and thieves take it with a CAS.
 *  - Only portable goroutines (native ones) enter these queues; hosted
 *    goroutines are bound to a processor and use its bound queue/inbox
 *    (proc.c), which no one steals from.
 *
 * Global run queue: a FIFO list under sched.lock, used when a local ring is
 * full (half of it moves here, so puts stay O(1) amortised), for goroutines
 * made runnable by threads that are not processors, and checked by every
 * processor now and then so nothing starves.
 *
 * Lock order: sched.lock is a leaf here (no other lock is taken under it).
 */
#include "core.h"

#define RUNQ_MASK (WEFT_RUNQ_SIZE - 1)

static inline uint32_t load_acq(_Atomic uint32_t *x) {
    return atomic_load_explicit(x, memory_order_acquire);
}

/* Moves half of p's ring plus g to the global queue. False if a thief
 * emptied the ring meanwhile (then the caller retries the fast path). */
static bool runq_put_slow(weft_proc *p, weft_g *g, uint32_t h, uint32_t t) {
    enum { N = WEFT_RUNQ_SIZE / 2 };
    weft_g *batch[N + 1];
    uint32_t n = (t - h) / 2;
    if (n != N)
        return false;
    for (uint32_t i = 0; i < n; i++)
        batch[i] = atomic_load_explicit(&p->runq[(h + i) & RUNQ_MASK], memory_order_relaxed);
    if (!atomic_compare_exchange_strong_explicit(&p->runqhead, &h, h + n, memory_order_release,
                                                 memory_order_relaxed))
        return false;
    batch[n] = g;
    for (uint32_t i = 0; i < n; i++)
        batch[i]->schedlink = batch[i + 1];
    g->schedlink = NULL;
    weft_globrunq_put_batch(batch[0], g, (int)n + 1);
    return true;
}

void weft_runq_put(weft_proc *p, weft_g *g, bool next) {
    if (next) {
        weft_g *old = atomic_exchange_explicit(&p->runnext, g, memory_order_acq_rel);
        if (!old)
            return;
        g = old; /* kick the previous runnext to the tail */
    }
    for (;;) {
        uint32_t h = load_acq(&p->runqhead);
        uint32_t t = atomic_load_explicit(&p->runqtail, memory_order_relaxed);
        if (t - h < WEFT_RUNQ_SIZE) {
            atomic_store_explicit(&p->runq[t & RUNQ_MASK], g, memory_order_relaxed);
            atomic_store_explicit(&p->runqtail, t + 1, memory_order_release);
            return;
        }
        if (runq_put_slow(p, g, h, t))
            return;
    }
}

weft_g *weft_runq_get(weft_proc *p) {
    weft_g *next = atomic_load_explicit(&p->runnext, memory_order_relaxed);
    if (next && atomic_compare_exchange_strong_explicit(&p->runnext, &next, NULL,
                                                        memory_order_acquire,
                                                        memory_order_relaxed))
        return next;
    for (;;) {
        uint32_t h = load_acq(&p->runqhead);
        uint32_t t = atomic_load_explicit(&p->runqtail, memory_order_relaxed);
        if (t == h)
            return NULL;
        weft_g *g = atomic_load_explicit(&p->runq[h & RUNQ_MASK], memory_order_relaxed);
        if (atomic_compare_exchange_weak_explicit(&p->runqhead, &h, h + 1, memory_order_acq_rel,
                                                  memory_order_relaxed))
            return g;
    }
}

/* Takes half of victim's goroutines into batch[bh..] (a ring indexed like
 * runq). Returns how many. */
static uint32_t runq_grab(weft_proc *victim, _Atomic(weft_g *) *batch, uint32_t bh,
                          bool steal_runnext) {
    for (;;) {
        uint32_t h = load_acq(&victim->runqhead);
        uint32_t t = load_acq(&victim->runqtail);
        uint32_t n = t - h;
        n = n - n / 2;
        if (n == 0) {
            if (!steal_runnext)
                return 0;
            weft_g *next = atomic_load_explicit(&victim->runnext, memory_order_relaxed);
            if (!next)
                return 0;
            /* The victim is probably about to run it (a goroutine that just
             * readied another and is parking): give it a moment, as Go
             * does, so a ping-pong pair is not torn across processors. */
            if (atomic_load_explicit(&victim->running, memory_order_relaxed)) {
                for (int i = 0; i < 1000; i++) {
                    weft_cpu_relax();
                    if (atomic_load_explicit(&victim->runnext, memory_order_relaxed) != next)
                        return 0;
                }
            }
            if (!atomic_compare_exchange_strong_explicit(&victim->runnext, &next, NULL,
                                                         memory_order_acquire,
                                                         memory_order_relaxed))
                continue;
            atomic_store_explicit(&batch[bh & RUNQ_MASK], next, memory_order_relaxed);
            return 1;
        }
        if (n > WEFT_RUNQ_SIZE / 2)
            continue; /* read an inconsistent h/t pair */
        for (uint32_t i = 0; i < n; i++) {
            weft_g *g = atomic_load_explicit(&victim->runq[(h + i) & RUNQ_MASK], memory_order_relaxed);
            atomic_store_explicit(&batch[(bh + i) & RUNQ_MASK], g, memory_order_relaxed);
        }
        if (atomic_compare_exchange_strong_explicit(&victim->runqhead, &h, h + n,
                                                    memory_order_acq_rel, memory_order_relaxed))
            return n;
    }
}

weft_g *weft_runq_steal(weft_proc *p, weft_proc *victim, bool steal_runnext) {
    uint32_t t = atomic_load_explicit(&p->runqtail, memory_order_relaxed);
    uint32_t n = runq_grab(victim, p->runq, t, steal_runnext);
    if (n == 0)
        return NULL;
    n--;
    weft_g *g = atomic_load_explicit(&p->runq[(t + n) & RUNQ_MASK], memory_order_relaxed);
    if (n > 0)
        atomic_store_explicit(&p->runqtail, t + n, memory_order_release);
    return g;
}

bool weft_runq_empty(weft_proc *p) {
    uint32_t h = load_acq(&p->runqhead);
    uint32_t t = load_acq(&p->runqtail);
    return t == h && atomic_load_explicit(&p->runnext, memory_order_relaxed) == NULL;
}

bool weft_runq_has_queued(weft_proc *p) {
    return load_acq(&p->runqtail) != load_acq(&p->runqhead);
}

uint32_t weft_runq_len(weft_proc *p) {
    uint32_t h = load_acq(&p->runqhead);
    uint32_t t = load_acq(&p->runqtail);
    return (t - h) + (atomic_load_explicit(&p->runnext, memory_order_relaxed) != NULL);
}

void weft_globrunq_put_batch(weft_g *head, weft_g *tail, int n) {
    tail->schedlink = NULL;
    weft_mutex_lock(&weft_S.lock);
    if (weft_S.runqtail)
        weft_S.runqtail->schedlink = head;
    else
        weft_S.runqhead = head;
    weft_S.runqtail = tail;
    atomic_fetch_add(&weft_S.runqsize, n);
    weft_mutex_unlock(&weft_S.lock);
}

void weft_globrunq_put(weft_g *g) {
    weft_globrunq_put_batch(g, g, 1);
}

/* Takes a fair share of the global queue: returns one goroutine and moves
 * up to max-1 more (max <= 0: no limit but half a ring) into p's ring.
 * sched.lock is held. */
weft_g *weft_globrunq_get(weft_proc *p, int max) {
    int size = atomic_load_explicit(&weft_S.runqsize, memory_order_relaxed);
    if (size == 0)
        return NULL;
    int n = size / weft_S.nprocs + 1;
    if (n > size)
        n = size;
    if (max > 0 && n > max)
        n = max;
    if (n > WEFT_RUNQ_SIZE / 2)
        n = WEFT_RUNQ_SIZE / 2;
    atomic_fetch_sub(&weft_S.runqsize, n);
    weft_g *g = weft_S.runqhead;
    weft_S.runqhead = g->schedlink;
    for (int i = 1; i < n; i++) {
        weft_g *x = weft_S.runqhead;
        weft_S.runqhead = x->schedlink;
        weft_runq_put(p, x, false);
    }
    if (!weft_S.runqhead)
        weft_S.runqtail = NULL;
    g->schedlink = NULL;
    return g;
}
