/*
 * chan.c — channels.
 *
 * A channel is a lock, an optional ring buffer of weft_val slots, and two
 * FIFO queues of waiter records (goroutines blocked sending / receiving).
 *
 * Invariants (all under c->lock)
 *  - At most one of sendq and recvq holds waiters that can still be woken:
 *    a sender only queues when no receiver is waiting and the buffer is full,
 *    and a receiver only when no sender is waiting and the buffer is empty.
 *    (Select waiters whose goroutine was already claimed by another case may
 *    linger in either queue; dequeue skips them.)
 *  - count > 0 implies recvq has no live waiter; count < cap implies sendq
 *    has no live waiter (an unbuffered channel has count == cap == 0).
 *  - Once closed, a channel is never reopened, and no waiter is queued on it
 *    (close wakes all of them; send and recv check closed first).
 *  - FIFO: buffered values leave in the order they entered; a receive from a
 *    full buffer takes the head and moves the first blocked sender's value to
 *    the tail, so order is kept across blocked senders too.
 *  - A value (weft_val) is moved, never duplicated: on every path it ends in
 *    exactly one of the buffer, a waiter's val, or the caller's hands.
 *  - count, nrecvw and nsendw (the waiters in recvq and sendq, live or not)
 *    and closed are written under c->lock and also read without it, as
 *    hints, one field at a time: by the non-blocking forms, which fail
 *    without locking when the operation cannot proceed on an open channel
 *    (looks_full, looks_empty: closed is read last, and a closed channel
 *    always takes the lock), and by select's first pass
 *    (weft_chan_case_idle). A failing non-blocking form takes effect at
 *    the moment it read the hints, when they held together (as Go's do);
 *    everything else that decides is done under the lock, so a stale hint
 *    costs time, not a wrong result.
 *
 * Layout: what every operation writes (lock, counts, indices, the waiter
 * queues) comes first, in the first cache line but for the send queue's
 * end, which spills into the second; what only the creator writes (cap,
 * buf, timer) starts the third, so that no operation takes it away from
 * the other side's cache. The struct and the buffer are allocated aligned
 * to the line. A buffered send prefetches the slot the next send fills
 * (prefetch.h): the receiver's core touched it last.
 *
 * Waking: a waker unlinks the waiter under c->lock, writes the value and
 * `success` into it, and calls weft_ready() after unlocking; a select waiter
 * must first be claimed with a CAS on its goroutine's selectdone (the first
 * claimer wins and writes g->param; losers are skipped).
 *
 * Parking: a blocking operation queues its waiter while holding c->lock and
 * parks with c->lock as the unlock function, so the lock is released only
 * once the goroutine is off its stack (proc.c).
 *
 * Lock order: channel locks in address order (select.c), then timer and
 * scheduler locks may be taken by weft_ready(). An after-channel's release
 * takes its timer's lock before freeing (timer.c).
 */
#include "core.h"
#include "prefetch.h"

#include <stdlib.h>
#include <string.h>

struct weft_chan {
    /* What every operation writes first (see Layout above), the fields that
     * only the creator writes from a cache line of their own. */
    weft_mutex lock;
    atomic_int closed;
    atomic_int refs;
    _Atomic size_t count; /* written under lock; read lock-free by len() */
    /* Waiters queued in recvq and sendq: written under lock, read lock-free
     * by the non-blocking forms and select's first pass. */
    atomic_int nrecvw, nsendw;
    size_t sendx, recvx;
    weft_waitq recvq, sendq;
    _Alignas(WEFT_CACHE_LINE) size_t cap;
    weft_val *buf;
    struct weft_timer *timer; /* an after-channel's timer (strong) */
};

enum { DIR_RECV = WEFT_CASE_RECV, DIR_SEND = WEFT_CASE_SEND };

/* ---- waiter queues --------------------------------------------------------- */

/* A queued waiter holds a reference on its channel, so a channel is never
 * freed under a parked goroutine; whoever unlinks the waiter (always while
 * holding another reference, so never the last) drops it and clears w->c. */
static atomic_int *waitq_count(weft_chan *c, const weft_waitq *q) {
    return q == &c->recvq ? &c->nrecvw : &c->nsendw;
}

static void waitq_enqueue(weft_chan *c, weft_waitq *q, weft_waiter *w) {
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    atomic_int *n = waitq_count(c, q);
    atomic_store_explicit(n, atomic_load_explicit(n, memory_order_relaxed) + 1,
                          memory_order_release); /* see looks_full */
    w->c = c;
    weft_waitq_push(q, w);
}

static void waitq_unlink(weft_waitq *q, weft_waiter *w) {
    atomic_int *n = waitq_count(w->c, q);
    atomic_store_explicit(n, atomic_load_explicit(n, memory_order_relaxed) - 1,
                          memory_order_release); /* see looks_full */
    atomic_fetch_sub_explicit(&w->c->refs, 1, memory_order_relaxed);
    w->c = NULL;
    weft_waitq_remove(q, w);
}

/* The first waiter that can still be woken, unlinked. A select waiter must
 * win its goroutine first; one that loses stays with its select, which
 * cleans up after itself (it is unlinked here all the same). */
static weft_waiter *waitq_dequeue(weft_waitq *q) {
    for (;;) {
        weft_waiter *w = q->first;
        if (!w)
            return NULL;
        waitq_unlink(q, w);
        if (w->is_select) {
            int zero = 0;
            if (!atomic_compare_exchange_strong(&w->g->selectdone, &zero, 1))
                continue;
            w->g->param = w;
        }
        return w;
    }
}

static weft_waitq *queue_of(weft_chan *c, int dir) {
    return dir == DIR_SEND ? &c->sendq : &c->recvq;
}

weft_waiter *weft_waitq_dequeue_for(weft_chan *c, int dir) {
    return waitq_dequeue(queue_of(c, dir));
}

void weft_chan_lock(weft_chan *c) {
    weft_mutex_lock(&c->lock);
}

void weft_chan_unlock(weft_chan *c) {
    weft_mutex_unlock(&c->lock);
}

static void unlock_cb(void *c) {
    weft_mutex_unlock(&((weft_chan *)c)->lock);
}

/* ---- values the engine drops ------------------------------------------------- */

static void (*_Atomic disposers[256])(weft_val *);

int weft_val_register_disposer(uint16_t tag, void (*dispose)(weft_val *v)) {
    if (tag < WEFT_TAG_USER || tag >= 256)
        return WEFT_EINVAL;
    atomic_store(&disposers[tag], dispose);
    return WEFT_OK;
}

void weft_val_dispose(weft_val *v) {
    void (*dispose)(weft_val *) = v->tag < 256 ? atomic_load(&disposers[v->tag]) : NULL;
    if (dispose)
        dispose(v);
    else
        weft_val_free(v);
}

/* ---- life cycle ------------------------------------------------------------ */

weft_chan *weft_chan_new(size_t cap) {
    if (cap > ((size_t)1 << 40))
        return NULL;
    weft_chan *c = aligned_alloc(WEFT_CACHE_LINE, sizeof *c);
    if (!c)
        return NULL;
    memset(c, 0, sizeof *c);
    if (cap) {
        size_t bytes = cap * sizeof *c->buf;
        c->buf = aligned_alloc(WEFT_CACHE_LINE,
                               (bytes + WEFT_CACHE_LINE - 1) & ~(size_t)(WEFT_CACHE_LINE - 1));
        if (!c->buf) {
            free(c);
            return NULL;
        }
        memset(c->buf, 0, bytes);
    }
    weft_mutex_init(&c->lock);
    atomic_init(&c->refs, 1);
    atomic_init(&c->closed, 0);
    atomic_init(&c->count, 0);
    c->cap = cap;
    return c;
}

weft_chan *weft_chan_retain(weft_chan *c) {
    if (c)
        atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

void weft_chan_release(weft_chan *c) {
    if (!c || atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (c->timer)
        weft_timer_detach(c->timer); /* waits out a firing that may be sending to c */
    size_t n = atomic_load_explicit(&c->count, memory_order_relaxed);
    for (size_t i = 0; i < n; i++)
        weft_val_dispose(&c->buf[(c->recvx + i) % c->cap]);
    free(c->buf);
    free(c);
}

void weft_chan_set_timer(weft_chan *c, struct weft_timer *t) {
    c->timer = t;
}

/* ---- operations under the lock ------------------------------------------------
 * Each returns with c->lock released, except when the operation must block:
 * then it returns WEFT_EAGAIN with the lock still held. */

static void count_op(void) {
    weft_proc *p = weft_proc_self();
    if (p)
        weft_stat_inc(&p->st_chanops);
}

static int send_locked(weft_chan *c, weft_val *v) {
    if (atomic_load_explicit(&c->closed, memory_order_relaxed)) {
        weft_mutex_unlock(&c->lock);
        return WEFT_ECLOSED;
    }
    weft_waiter *w = waitq_dequeue(&c->recvq);
    if (w) {
        w->val = *v;
        w->success = true;
        weft_mutex_unlock(&c->lock);
        weft_ready(w->g, true);
        return WEFT_OK;
    }
    size_t count = atomic_load_explicit(&c->count, memory_order_relaxed);
    if (count < c->cap) {
        c->buf[c->sendx] = *v;
        if (++c->sendx == c->cap)
            c->sendx = 0;
        weft_prefetch_w(&c->buf[c->sendx]); /* the next send's slot */
        atomic_store_explicit(&c->count, count + 1, memory_order_release);
        weft_mutex_unlock(&c->lock);
        return WEFT_OK;
    }
    return WEFT_EAGAIN;
}

/* 1 with *out, 0 closed (out zeroed), or WEFT_EAGAIN with the lock held. */
static int recv_locked(weft_chan *c, weft_val *out) {
    size_t count = atomic_load_explicit(&c->count, memory_order_relaxed);
    weft_waiter *w = waitq_dequeue(&c->sendq);
    if (w) {
        if (c->cap == 0) {
            *out = w->val;
        } else {
            /* Buffer full: take its head, the sender's value goes to the tail. */
            *out = c->buf[c->recvx];
            c->buf[c->recvx] = w->val;
            if (++c->recvx == c->cap)
                c->recvx = 0;
            c->sendx = c->recvx;
        }
        memset(&w->val, 0, sizeof w->val);
        w->success = true;
        weft_mutex_unlock(&c->lock);
        weft_ready(w->g, true);
        return 1;
    }
    if (count > 0) {
        *out = c->buf[c->recvx];
        memset(&c->buf[c->recvx], 0, sizeof *out);
        if (++c->recvx == c->cap)
            c->recvx = 0;
        atomic_store_explicit(&c->count, count - 1, memory_order_release);
        weft_mutex_unlock(&c->lock);
        return 1;
    }
    if (atomic_load_explicit(&c->closed, memory_order_relaxed)) {
        weft_mutex_unlock(&c->lock);
        memset(out, 0, sizeof *out);
        return 0;
    }
    return WEFT_EAGAIN;
}

/* Exported for select.c: one attempt at a case, lock held by the caller
 * (and not released). Returns 1 if the case proceeded; *wake is a waiter
 * whose goroutine must be readied once the locks are dropped. */
int weft_chan_try_case_locked(weft_chan *c, weft_case *cs, weft_waiter **wake) {
    *wake = NULL;
    size_t count = atomic_load_explicit(&c->count, memory_order_relaxed);
    if (cs->dir == DIR_RECV) {
        weft_waiter *w = waitq_dequeue(&c->sendq);
        if (w) {
            if (c->cap == 0) {
                cs->val = w->val;
            } else {
                cs->val = c->buf[c->recvx];
                c->buf[c->recvx] = w->val;
                if (++c->recvx == c->cap)
                    c->recvx = 0;
                c->sendx = c->recvx;
            }
            memset(&w->val, 0, sizeof w->val);
            w->success = true;
            *wake = w;
            cs->ok = 1;
            return 1;
        }
        if (count > 0) {
            cs->val = c->buf[c->recvx];
            memset(&c->buf[c->recvx], 0, sizeof cs->val);
            if (++c->recvx == c->cap)
                c->recvx = 0;
            atomic_store_explicit(&c->count, count - 1, memory_order_release);
            cs->ok = 1;
            return 1;
        }
        if (atomic_load_explicit(&c->closed, memory_order_relaxed)) {
            memset(&cs->val, 0, sizeof cs->val);
            cs->ok = 0;
            return 1;
        }
        return 0;
    }
    if (atomic_load_explicit(&c->closed, memory_order_relaxed)) {
        cs->ok = 0;
        return 1;
    }
    weft_waiter *w = waitq_dequeue(&c->recvq);
    if (w) {
        w->val = cs->val;
        w->success = true;
        *wake = w;
        memset(&cs->val, 0, sizeof cs->val);
        cs->ok = 1;
        return 1;
    }
    if (count < c->cap) {
        c->buf[c->sendx] = cs->val;
        if (++c->sendx == c->cap)
            c->sendx = 0;
        atomic_store_explicit(&c->count, count + 1, memory_order_release);
        memset(&cs->val, 0, sizeof cs->val);
        cs->ok = 1;
        return 1;
    }
    return 0;
}

/* Queues w on c for direction dir (lock held). */
void weft_chan_enqueue_locked(weft_chan *c, int dir, weft_waiter *w) {
    w->dir = dir;
    waitq_enqueue(c, queue_of(c, dir), w);
}

/* Unlinks w if it is still queued (lock held). */
void weft_chan_dequeue_locked(weft_chan *c, int dir, weft_waiter *w) {
    if (w->queued)
        waitq_unlink(queue_of(c, dir), w);
}

/* Teardown (single-threaded): unlinks a waiter still queued, dropping its
 * reference properly since it may be the channel's last. */
void weft_waiter_withdraw(weft_waiter *w) {
    weft_chan *c = w->c;
    if (!c || !w->queued)
        return;
    weft_chan_retain(c);
    weft_mutex_lock(&c->lock);
    waitq_unlink(queue_of(c, w->dir), w);
    weft_mutex_unlock(&c->lock);
    weft_chan_release(c);
    /* A discarded plain sender's value is dropped here; a select's send
     * values stay with its cases, which their owner frees. */
    if (w->dir == DIR_SEND && !w->is_select)
        weft_val_dispose(&w->val);
}

/* ---- public operations ----------------------------------------------------- */

static void waiter_init(weft_waiter *w, weft_g *g) {
    memset(w, 0, sizeof *w);
    w->g = g;
    w->case_index = -1;
}

/* Both kinds of goroutine: completes at once (lock released), or queues g's
 * waiter and returns WEFT_PENDING with c->lock still held (g NULL: the
 * caller cannot wait, WEFT_ENOTG). */
static int send_prepare(weft_chan *c, weft_val *v, weft_g *g) {
    count_op();
    weft_mutex_lock(&c->lock);
    int rc = send_locked(c, v);
    if (rc != WEFT_EAGAIN)
        return rc;
    if (!g) {
        weft_mutex_unlock(&c->lock);
        return WEFT_ENOTG;
    }
    weft_waiter *w = &g->w1;
    waiter_init(w, g);
    w->val = *v;
    weft_chan_enqueue_locked(c, DIR_SEND, w);
    g->waiting = w;
    g->nwaiting = 1;
    return WEFT_PENDING;
}

static int send_result(weft_g *g, weft_val *v) {
    g->nwaiting = 0;
    if (g->w1.success)
        return WEFT_OK;
    if (v)
        *v = g->w1.val; /* closed: the value is the sender's again */
    return WEFT_ECLOSED;
}

static int recv_prepare(weft_chan *c, weft_val *out, weft_g *g) {
    count_op();
    weft_mutex_lock(&c->lock);
    int rc = recv_locked(c, out);
    if (rc != WEFT_EAGAIN)
        return rc;
    if (!g) {
        weft_mutex_unlock(&c->lock);
        return WEFT_ENOTG;
    }
    weft_waiter *w = &g->w1;
    waiter_init(w, g);
    weft_chan_enqueue_locked(c, DIR_RECV, w);
    g->waiting = w;
    g->nwaiting = 1;
    return WEFT_PENDING;
}

static int recv_result(weft_g *g, weft_val *out) {
    g->nwaiting = 0;
    *out = g->w1.val;
    return g->w1.success ? 1 : 0;
}

int weft_chan_send(weft_chan *c, weft_val v) {
    weft_g *g = weft_g_self();
    bool native = weft_is_native(g);
    if (!c) {
        if (!native)
            return WEFT_ENOTG;
        weft_park_forever("chan send (nil chan)");
    }
    int rc = send_prepare(c, &v, native ? g : NULL);
    if (rc != WEFT_PENDING)
        return rc;
    weft_park("chan send", unlock_cb, c);
    return send_result(g, NULL);
}

int weft_chan_recv(weft_chan *c, weft_val *out) {
    weft_g *g = weft_g_self();
    bool native = weft_is_native(g);
    if (!c) {
        if (!native)
            return WEFT_ENOTG;
        weft_park_forever("chan receive (nil chan)");
    }
    int rc = recv_prepare(c, out, native ? g : NULL);
    if (rc != WEFT_PENDING)
        return rc;
    weft_park("chan receive", unlock_cb, c);
    return recv_result(g, out);
}

/* Hosted goroutines (core.h): the same operations in two halves. */

int weft_chan_send_start(weft_chan *c, weft_val *v) {
    weft_g *g = weft_g_self();
    if (!g)
        return WEFT_ENOTG;
    if (!c) {
        weft_park_hosted(g, "chan send (nil chan)"); /* never readied */
        return WEFT_PENDING;
    }
    int rc = send_prepare(c, v, g);
    if (rc == WEFT_PENDING) {
        weft_park_hosted(g, "chan send");
        weft_mutex_unlock(&c->lock);
    }
    return rc;
}

int weft_chan_send_finish(weft_val *v) {
    return send_result(weft_g_self(), v);
}

int weft_chan_recv_start(weft_chan *c, weft_val *out) {
    weft_g *g = weft_g_self();
    if (!g)
        return WEFT_ENOTG;
    if (!c) {
        weft_park_hosted(g, "chan receive (nil chan)");
        return WEFT_PENDING;
    }
    int rc = recv_prepare(c, out, g);
    if (rc == WEFT_PENDING) {
        weft_park_hosted(g, "chan receive");
        weft_mutex_unlock(&c->lock);
    }
    return rc;
}

int weft_chan_recv_finish(weft_val *out) {
    return recv_result(weft_g_self(), out);
}

/* The non-blocking forms first look without the lock, as Go's do: a send
 * to a full buffer (or, unbuffered, with no receiver queued) or a receive
 * from an empty one (no sender queued) on an open channel fails at once.
 * The emptiness or fullness is read first (acquire) and `closed` after it:
 * closed is never undone, so seeing it clear means that the channel was
 * open when the rest was read, and the operation could not proceed at that
 * moment. The counts are stored with release: a close sets `closed` and
 * then unlinks the waiters, and a reader that sees a waiter count the close
 * lowered must also see `closed` set (on arm64 two plain stores may become
 * visible in either order); likewise a count lowered by a receive after a
 * close. Only a waiter that the lock would show to be a finished select's
 * leftover sends them to the lock. A blocking Lua send or receive starts
 * with these, so it locks once (to queue its waiter), not twice; select's
 * first pass uses them too (weft_chan_case_idle). */
static bool looks_full(weft_chan *c) {
    size_t count = atomic_load_explicit(&c->count, memory_order_acquire);
    if (c->cap == 0)
        return atomic_load_explicit(&c->nrecvw, memory_order_acquire) == 0;
    return count >= c->cap; /* no receiver is queued while count > 0 */
}

static bool looks_empty(weft_chan *c) {
    size_t count = atomic_load_explicit(&c->count, memory_order_acquire);
    if (c->cap == 0)
        return atomic_load_explicit(&c->nsendw, memory_order_acquire) == 0;
    return count == 0; /* no sender is queued while count < cap */
}

/* Whether an operation in direction dir cannot proceed on c now, read
 * without the lock as above. */
static bool looks_blocked(weft_chan *c, int dir) {
    return (dir == DIR_RECV ? looks_empty(c) : looks_full(c)) &&
           !atomic_load_explicit(&c->closed, memory_order_relaxed);
}

/* For select's first pass (select.c): 1 if case cs looks unable to proceed,
 * 0 if it may. Select only passes over such cases to try the next one, and
 * decides with every lock held when none of them proceeds. */
int weft_chan_case_idle(weft_chan *c, const weft_case *cs) {
    return looks_blocked(c, cs->dir);
}

int weft_chan_trysend(weft_chan *c, weft_val v) {
    if (!c)
        return WEFT_EAGAIN;
    count_op();
    if (looks_blocked(c, DIR_SEND))
        return WEFT_EAGAIN;
    weft_mutex_lock(&c->lock);
    int rc = send_locked(c, &v);
    if (rc == WEFT_EAGAIN)
        weft_mutex_unlock(&c->lock);
    return rc;
}

int weft_chan_tryrecv(weft_chan *c, weft_val *out) {
    if (!c)
        return WEFT_EAGAIN;
    count_op();
    if (looks_blocked(c, DIR_RECV))
        return WEFT_EAGAIN;
    weft_mutex_lock(&c->lock);
    int rc = recv_locked(c, out);
    if (rc == WEFT_EAGAIN)
        weft_mutex_unlock(&c->lock);
    return rc;
}

int weft_chan_close(weft_chan *c) {
    if (!c)
        return WEFT_EINVAL;
    weft_mutex_lock(&c->lock);
    if (atomic_load_explicit(&c->closed, memory_order_relaxed)) {
        weft_mutex_unlock(&c->lock);
        return WEFT_ECLOSED;
    }
    atomic_store_explicit(&c->closed, 1, memory_order_relaxed);
    weft_waiter *wake = NULL, *w;
    while ((w = waitq_dequeue(&c->recvq))) {
        memset(&w->val, 0, sizeof w->val);
        w->success = false;
        w->next = wake;
        wake = w;
    }
    while ((w = waitq_dequeue(&c->sendq))) {
        w->success = false; /* the sender keeps its value */
        w->next = wake;
        wake = w;
    }
    weft_mutex_unlock(&c->lock);
    while (wake) {
        w = wake;
        wake = w->next;
        w->next = NULL;
        weft_ready(w->g, false);
    }
    return WEFT_OK;
}

size_t weft_chan_len(weft_chan *c) {
    return c ? atomic_load_explicit(&c->count, memory_order_relaxed) : 0;
}

size_t weft_chan_cap(weft_chan *c) {
    return c ? c->cap : 0;
}

int weft_chan_closed(weft_chan *c) {
    return c ? atomic_load_explicit(&c->closed, memory_order_relaxed) : 0;
}
