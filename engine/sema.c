/*
 * sema.c — counting semaphores: the one blocking primitive the sync objects
 * (mutexes, wait groups, conditions, ...) are built on, as Go's sync package
 * is built on the runtime's semacquire/semrelease.
 *
 * A semaphore is a lock, a count of available units, an optional limit on
 * that count, and a FIFO queue of waiter records (goroutines blocked in
 * acquire, each asking for k units; the request is kept in w->val.u.i).
 *
 * Policy: strict FIFO with direct hand-off, as golang.org/x/sync/semaphore's
 * Weighted. acquire(k) takes k units at once only when nobody is queued and
 * enough units are available; otherwise it queues at the tail. release(k)
 * adds k units, then hands units to queued waiters from the head for as long
 * as the head's request fits; it stops at the first that does not, even if
 * a later, smaller request would fit. So a waiter asking many units is never
 * starved by a stream of small requests that keep arriving after it (they
 * queue behind it), at the cost of leaving units idle while it waits.
 * tryacquire follows the same rule: it fails while anybody is queued.
 *
 * Invariants (all under s->lock)
 *  - 0 <= count <= limit.
 *  - If the queue is not empty, its head's request exceeds count (release
 *    hands out units until that holds; acquire never queues when it fits).
 *  - Units handed to a waiter are subtracted from count before it is woken:
 *    a woken waiter owns its units; nothing is re-checked after the wake.
 *  - A queued waiter holds a reference on its semaphore (as on a channel),
 *    so a semaphore is never freed under a parked goroutine.
 *
 * Waking: the releaser unlinks the waiters it serves under s->lock, marks
 * them, and calls weft_ready() after unlocking.
 *
 * Parking: as for channels, a blocking acquire queues its waiter while
 * holding s->lock and parks with s->lock as the unlock function (native), or
 * marks the goroutine parked before unlocking (hosted two-phase start).
 *
 * Lock order: a semaphore's lock is a leaf among engine objects (no channel
 * or other semaphore lock is taken under it); weft_ready() may take
 * scheduler locks after it has been released.
 */
#include "core.h"

#include <stdlib.h>
#include <string.h>

struct weft_sema {
    weft_mutex lock;
    atomic_int refs;
    _Atomic int64_t count; /* written under lock; read lock-free by weft_sema_count */
    int64_t limit;
    weft_waitq q;
};

/* ---- life cycle ------------------------------------------------------------ */

weft_sema *weft_sema_new_limit(int64_t count, int64_t limit) {
    if (count < 0 || limit < count)
        return NULL;
    weft_sema *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    weft_mutex_init(&s->lock);
    atomic_init(&s->refs, 1);
    atomic_init(&s->count, count);
    s->limit = limit;
    return s;
}

weft_sema *weft_sema_new(int64_t count) {
    return weft_sema_new_limit(count, INT64_MAX);
}

weft_sema *weft_sema_retain(weft_sema *s) {
    if (s)
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void weft_sema_release_ref(weft_sema *s) {
    if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
        free(s);
}

int64_t weft_sema_count(weft_sema *s) {
    return s ? atomic_load_explicit(&s->count, memory_order_relaxed) : 0;
}

int64_t weft_sema_limit(weft_sema *s) {
    return s ? s->limit : 0;
}

/* ---- the queue (s->lock) ----------------------------------------------------- */

static void enqueue(weft_sema *s, weft_waiter *w) {
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    w->sema = s;
    weft_waitq_push(&s->q, w);
}

/* The caller holds another reference: this one is never the last. */
static void unlink_waiter(weft_sema *s, weft_waiter *w) {
    atomic_fetch_sub_explicit(&s->refs, 1, memory_order_relaxed);
    w->sema = NULL;
    weft_waitq_remove(&s->q, w);
}

static void unlock_cb(void *s) {
    weft_mutex_unlock(&((weft_sema *)s)->lock);
}

/* Teardown (single-threaded): unlinks a waiter still queued. */
void weft_sema_withdraw(weft_waiter *w) {
    weft_sema *s = w->sema;
    if (!s || !w->queued)
        return;
    weft_sema_retain(s);
    weft_mutex_lock(&s->lock);
    unlink_waiter(s, w);
    weft_mutex_unlock(&s->lock);
    weft_sema_release_ref(s);
}

/* ---- acquire ------------------------------------------------------------------- */

/* Takes k units at once (lock released), or queues g's waiter and returns
 * WEFT_PENDING with s->lock held; without g, WEFT_EAGAIN. */
static int acquire_prepare(weft_sema *s, int64_t k, weft_g *g) {
    if (!s || k < 0 || k > s->limit)
        return WEFT_EINVAL;
    weft_mutex_lock(&s->lock);
    int64_t count = atomic_load_explicit(&s->count, memory_order_relaxed);
    if (!s->q.first && count >= k) {
        atomic_store_explicit(&s->count, count - k, memory_order_relaxed);
        weft_mutex_unlock(&s->lock);
        return WEFT_OK;
    }
    if (!g) {
        weft_mutex_unlock(&s->lock);
        return WEFT_EAGAIN;
    }
    weft_waiter *w = &g->w1;
    memset(w, 0, sizeof *w);
    w->g = g;
    w->case_index = -1;
    w->val.u.i = k;
    enqueue(s, w);
    g->waiting = w;
    g->nwaiting = 1;
    return WEFT_PENDING;
}

int weft_sema_tryacquire(weft_sema *s, int64_t k) {
    return acquire_prepare(s, k, NULL);
}

int weft_sema_acquire(weft_sema *s, int64_t k) {
    weft_g *g = weft_g_self();
    if (!weft_is_native(g))
        return WEFT_ENOTG;
    int rc = acquire_prepare(s, k, g);
    if (rc != WEFT_PENDING)
        return rc;
    weft_park("semacquire", unlock_cb, s);
    g->nwaiting = 0;
    return WEFT_OK;
}

int weft_sema_acquire_start(weft_sema *s, int64_t k, const char *reason) {
    weft_g *g = weft_g_self();
    if (!g)
        return WEFT_ENOTG;
    int rc = acquire_prepare(s, k, g);
    if (rc == WEFT_PENDING) {
        weft_park_hosted(g, reason ? reason : "semacquire");
        weft_mutex_unlock(&s->lock);
    }
    return rc;
}

int weft_sema_acquire_finish(void) {
    weft_g *g = weft_g_self();
    if (g)
        g->nwaiting = 0;
    return WEFT_OK;
}

/* ---- release --------------------------------------------------------------------- */

int weft_sema_release(weft_sema *s, int64_t k) {
    if (!s || k < 0)
        return WEFT_EINVAL;
    weft_mutex_lock(&s->lock);
    int64_t count = atomic_load_explicit(&s->count, memory_order_relaxed);
    if (k > s->limit - count) {
        weft_mutex_unlock(&s->lock);
        return WEFT_EINVAL;
    }
    count += k;
    weft_waiter *wake = NULL, **tail = &wake;
    int nwake = 0;
    weft_waiter *w;
    while ((w = s->q.first) && w->val.u.i <= count) {
        count -= w->val.u.i;
        unlink_waiter(s, w);
        w->success = true;
        *tail = w;
        tail = &w->next;
        nwake++;
    }
    atomic_store_explicit(&s->count, count, memory_order_relaxed);
    weft_mutex_unlock(&s->lock);
    while (wake) {
        w = wake;
        wake = w->next;
        w->next = NULL;
        weft_ready(w->g, nwake == 1);
    }
    return WEFT_OK;
}
