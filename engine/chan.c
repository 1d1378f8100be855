/*
 * chan.c — channels.
 *
 * A channel is a lock, two FIFO queues of waiter records (goroutines
 * blocked sending / receiving) and, when buffered, a ring of slots that
 * senders and receivers fill and empty without the lock (ring.h). An
 * unbuffered channel does everything under its lock; a buffered one takes
 * the lock only to park, to wake, and to close.
 *
 * Invariants (under c->lock unless said)
 *  - Unbuffered: at most one of sendq and recvq holds waiters that can still
 *    be woken (a sender queues only when no receiver waits, and the other
 *    way round); a value passes from hand to hand under the lock.
 *  - Buffered: values pass through the ring, in order, and a waker moves
 *    them between the ring and a waiter (feed). A receiver queues only
 *    after finding the ring without a value, a sender only after finding
 *    it without a free slot. One shortcut: a sender that finds a receiver
 *    queued (it goes to the lock when nrecvw is not zero) hands its value
 *    over directly, as on an unbuffered channel. That passes no value of
 *    its own: the receiver's last try before parking took every value
 *    reserved before it, and a value reserved after is fed to it by its
 *    sender (the handshake). Only values of different senders can change
 *    places, which Go does not order either.
 *  - No parked waiter is forgotten (the handshake): a goroutine about to
 *    park first counts itself in nrecvw / nsendw (announce), then a
 *    seq_cst fence, then tries the ring once more (waiting out a slot that
 *    another has reserved but not committed), and parks only if that
 *    fails. Whoever fills (empties) a slot without the lock reserves it
 *    with a seq_cst CAS, then reads nrecvw (nsendw), then commits, and if
 *    the count was not zero takes the lock to feed the waiters. Either the
 *    parker's retry sees the reservation (and waits for the commit), or
 *    the other side sees the count.
 *  - Under the lock, ring operations wait out reserved slots, so a feeder
 *    that finds the ring unable to serve a plain waiter leaves it queued:
 *    whoever reserves the next slot sees the count. A select
 *    waiter must be won (CAS on selectdone) before the ring is tried; if
 *    the ring then fails it, it is woken with `retry` and runs its select
 *    again (select.c), as it could otherwise wait on a case it no longer
 *    owns while another case was ready.
 *  - The lock-free forms stay off the ring while the same side has waiters
 *    (nsendw for senders, nrecvw for receivers), so that queued goroutines
 *    are served first; a sender also while receivers are queued (it hands
 *    over directly, above). A stale read, or a slow path's first try under
 *    the lock (which does not look at its own side's queue), may overtake
 *    a queued goroutine in the moment before its feed: that costs
 *    fairness, never a value or one sender's order.
 *  - Once closed, a channel is never reopened. Close sets `closed` and the
 *    ring's CLOSED bit (no sender reserves a slot after it), hands the
 *    values left to queued receivers, and wakes every other waiter: a
 *    receiver is told closed only when the ring has no value left.
 *  - Lifetime: a lock-free commit may be the last moment the channel is
 *    known to live (the other side may take the value and drop the last
 *    reference at once), so nothing touches the channel after it unless
 *    the committer took a reference first; a buffered channel's slow
 *    paths hold one over their critical section for the same reason.
 *  - A queued waiter holds no reference: whoever blocks keeps the channel
 *    alive until it is woken (a C caller by weft.h's rule, a Lua
 *    goroutine through the userdata in its frame, bindings/fast.c). At
 *    engine stop, goroutines may stay queued while their VMs close and
 *    drop the last references: a channel whose last reference goes while
 *    the engine stops keeps its struct (lock and queues) until the
 *    engine's teardown has withdrawn every waiter (weft_chan_hold_frees).
 *  - A value (weft_val) is moved, never duplicated: on every path it ends in
 *    exactly one of the ring, a waiter's val, or the caller's hands.
 *  - nrecvw, nsendw (waiters queued or announced) and closed are written
 *    under the lock and read without it as hints, by the lock-free forms
 *    and by select's first pass (weft_chan_try_case). A failing
 *    non-blocking form takes effect at the moment it read them (as Go's
 *    do); what decides is a ring operation or done under the lock.
 *
 * Layout: the ring's send index and receive index each own a cache line
 * (ring.h); the lock, the queues and the counts share one, which the
 * lock-free paths only read; what only the creator writes (the ring's
 * capacity and slots) has its own.
 *
 * Waking: a waker unlinks the waiter under c->lock, writes the value and
 * `success` into it, and calls weft_ready() after unlocking (or, on the
 * rare path where a sender parks right after feeding others, before). A
 * select waiter must first be claimed with a CAS on its goroutine's
 * selectdone (the first claimer wins and writes g->param; losers are
 * skipped).
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
#include "ring.h"

#include <stdlib.h>
#include <string.h>

struct weft_chan {
    /* The slow paths' state: written under the lock, read by the lock-free
     * paths (the counts, closed) as hints. */
    weft_mutex lock;
    atomic_int closed;
    atomic_int refs;
    /* Waiters queued in (or announced to) recvq and sendq. */
    atomic_int nrecvw, nsendw;
    weft_waitq recvq, sendq;
    union {
        struct weft_timer *timer; /* an after-channel's timer (strong) */
        struct weft_chan *held;   /* released while held (see hold_frees) */
    };
    weft_ring r;              /* r.cap == 0: unbuffered, no slots */
};

enum { DIR_RECV = WEFT_CASE_RECV, DIR_SEND = WEFT_CASE_SEND };

static bool buffered(const weft_chan *c) {
    return c->r.cap != 0;
}

/* ---- waiter queues --------------------------------------------------------- */

/* A queued waiter points at its channel (w->c, cleared when unlinked) and
 * holds no reference on it (see Lifetime). */
static atomic_int *waitq_count(weft_chan *c, const weft_waitq *q) {
    return q == &c->recvq ? &c->nrecvw : &c->nsendw;
}

static weft_waitq *queue_of(weft_chan *c, int dir) {
    return dir == DIR_SEND ? &c->sendq : &c->recvq;
}

/* Adds k (+1 or -1) to the waiters counted for direction dir (lock held).
 * Stored with release: see looks_full. */
static void announce(weft_chan *c, int dir, int k) {
    atomic_int *n = waitq_count(c, queue_of(c, dir));
    atomic_store_explicit(n, atomic_load_explicit(n, memory_order_relaxed) + k,
                          memory_order_release);
}

/* Queues a waiter already counted by announce. */
static void waitq_push_counted(weft_chan *c, weft_waitq *q, weft_waiter *w) {
    w->c = c;
    weft_waitq_push(q, w);
}

static void waitq_unlink(weft_waitq *q, weft_waiter *w) {
    atomic_int *n = waitq_count(w->c, q);
    atomic_store_explicit(n, atomic_load_explicit(n, memory_order_relaxed) - 1,
                          memory_order_release); /* see looks_full */
    w->c = NULL;
    weft_waitq_remove(q, w);
}

/* Wins w for its waker: always for a plain waiter; for a select waiter, the
 * CAS on its goroutine's selectdone (the loser's waiters are skipped). */
static bool claim(weft_waiter *w) {
    if (!w->is_select)
        return true;
    int zero = 0;
    if (!atomic_compare_exchange_strong(&w->g->selectdone, &zero, 1))
        return false;
    w->g->param = w;
    return true;
}

/* The first waiter that can still be woken, unlinked and won. */
static weft_waiter *waitq_dequeue(weft_waitq *q) {
    for (;;) {
        weft_waiter *w = q->first;
        if (!w)
            return NULL;
        waitq_unlink(q, w);
        if (claim(w))
            return w;
    }
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

/* Readies a list of waiters linked through next (after the locks). */
void weft_chan_wake(weft_waiter *list) {
    while (list) {
        weft_waiter *w = list;
        list = w->next;
        w->next = NULL;
        weft_ready(w->g, w->success);
    }
}

static weft_waiter *wake_push(weft_waiter *list, weft_waiter *w) {
    w->next = list;
    return w;
}

/* ---- feeding waiters from the ring (buffered; lock held) ----------------------
 * See the handshake in the invariants. feed serves both queues from their
 * heads while the ring can: a value given to
 * a receiver frees a slot for a queued sender, and a sender's value pushed
 * may be one for a queued receiver, so it goes round until nothing moves.
 * Returns the waiters to ready, added to list. */

/* One waiter of queue q served, or false: a plain waiter the ring cannot
 * serve stays queued; a select waiter is won first, then woken either way
 * (with retry if the ring failed it). */
static bool feed_one(weft_chan *c, weft_waitq *q, weft_waiter **list) {
    weft_waiter *w = q->first;
    bool recv = q == &c->recvq;
    if (w->is_select) {
        waitq_unlink(q, w);
        if (!claim(w))
            return true; /* a leftover: skipped */
    }
    int rc = recv ? weft_ring_pop(&c->r, &w->val) : weft_ring_push(&c->r, &w->val);
    if (rc != WEFT_RING_OK) {
        if (!w->is_select)
            return false;
        if (recv)
            memset(&w->val, 0, sizeof w->val);
        w->retry = true; /* a sender's value stays with its case */
        *list = wake_push(*list, w);
        return false;
    }
    if (!w->is_select)
        waitq_unlink(q, w);
    if (!recv)
        memset(&w->val, 0, sizeof w->val);
    w->success = true;
    *list = wake_push(*list, w);
    return true;
}

static weft_waiter *feed(weft_chan *c, weft_waiter *list) {
    for (;;) {
        bool moved = false;
        while (c->recvq.first && feed_one(c, &c->recvq, &list))
            moved = true;
        while (c->sendq.first && feed_one(c, &c->sendq, &list))
            moved = true;
        if (!moved)
            return list;
    }
}

/* The lock-free forms (buffered): WEFT_OK / 1, WEFT_ECLOSED (send), or
 * WEFT_EAGAIN when the ring cannot serve now or waiters of the same side
 * come first; then the caller decides with the lock, or fails.
 *
 * An operation takes effect when it reserves: a slot reserved by the other
 * side but not yet committed (BUSY) is waited out, a few instructions, so
 * that len, the non-blocking forms and the blocking ones agree.
 *
 * The handshake's other half, in this order: reserve the slot (a seq_cst
 * CAS), read the other side's waiter count, commit. The count is read
 * before the commit because the commit may be the last moment the channel
 * is known to live: a receiver may take the value (or a sender the slot)
 * at once and drop the last reference, as Go's collector never would. So a
 * waker that saw waiters takes a reference before it commits, unless the
 * caller keeps the channel alive by other means (`pinned`: timer.c, whose
 * deliveries hold the timer's lock, which the channel's release waits for,
 * so that a reference dropped there could deadlock). */
static void feed_after_commit(weft_chan *c, bool pinned) {
    weft_mutex_lock(&c->lock);
    weft_waiter *wake = feed(c, NULL);
    weft_mutex_unlock(&c->lock);
    weft_chan_wake(wake);
    if (!pinned)
        weft_chan_release(c);
}

/* Between reserve and commit: whether the other side (its waiter count
 * `others`) must be fed after the commit, holding a reference if so. */
static bool feed_due(weft_chan *c, atomic_int *others, bool pinned) {
    bool waiters = atomic_load_explicit(others, memory_order_seq_cst) != 0;
    if (waiters && !pinned)
        weft_chan_retain(c);
    return waiters;
}

static int send_fast(weft_chan *c, weft_val *v, bool pinned) {
    if (atomic_load_explicit(&c->nsendw, memory_order_relaxed) != 0 ||
        atomic_load_explicit(&c->nrecvw, memory_order_relaxed) != 0)
        return WEFT_EAGAIN; /* queued senders first; parked receivers: hand over */
    uint64_t pos;
    weft_ring_slot *s;
    int rc = weft_ring_reserve_send_settled(&c->r, &pos, &s);
    if (rc != WEFT_RING_OK)
        return rc == WEFT_RING_SHUT ? WEFT_ECLOSED : WEFT_EAGAIN;
    bool feed_them = feed_due(c, &c->nrecvw, pinned);
    weft_ring_commit_send(s, pos, v);
    if (feed_them)
        feed_after_commit(c, pinned);
    return WEFT_OK;
}

static int recv_fast(weft_chan *c, weft_val *out, bool pinned) {
    if (atomic_load_explicit(&c->nrecvw, memory_order_relaxed) != 0)
        return WEFT_EAGAIN;
    uint64_t pos;
    weft_ring_slot *s;
    if (weft_ring_reserve_recv_settled(&c->r, &pos, &s) != WEFT_RING_OK)
        return WEFT_EAGAIN;
    bool feed_them = feed_due(c, &c->nsendw, pinned);
    weft_ring_commit_recv(&c->r, s, pos, out);
    if (feed_them)
        feed_after_commit(c, pinned);
    return 1;
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
        size_t bytes = cap * sizeof *c->r.slots;
        c->r.slots = aligned_alloc(WEFT_CACHE_LINE,
                                   (bytes + WEFT_CACHE_LINE - 1) & ~(size_t)(WEFT_CACHE_LINE - 1));
        if (!c->r.slots) {
            free(c);
            return NULL;
        }
        memset(c->r.slots, 0, bytes);
        for (size_t i = 0; i < cap; i++)
            atomic_init(&c->r.slots[i].seq, 2 * (uint64_t)i);
        c->r.pow2 = (cap & (cap - 1)) == 0;
        c->r.mask = cap - 1;
    }
    c->r.cap = cap;
    atomic_init(&c->r.sendx, 0);
    atomic_init(&c->r.recvx, 0);
    weft_mutex_init(&c->lock);
    atomic_init(&c->refs, 1);
    atomic_init(&c->closed, 0);
    return c;
}

weft_chan *weft_chan_retain(weft_chan *c) {
    if (c)
        atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

/* Channels released while their structs are held (Lifetime): linked
 * through `held` until the teardown has withdrawn the waiters still queued
 * on them. `on` is set by each processor's thread before its host closes
 * its VM (so that thread's releases see it) and cleared by the teardown,
 * once every processor's thread has ended. Lock order: a channel's last
 * release takes this lock and nothing else while holding it. */
static struct {
    weft_mutex lock;
    atomic_bool on;
    weft_chan *list;
} holding;

void weft_chan_hold_frees(bool on) {
    weft_mutex_lock(&holding.lock);
    atomic_store_explicit(&holding.on, on, memory_order_relaxed);
    weft_chan *list = on ? NULL : holding.list;
    if (!on)
        holding.list = NULL;
    weft_mutex_unlock(&holding.lock);
    while (list) {
        weft_chan *c = list;
        list = c->held;
        free(c);
    }
}

/* Whether c's struct is kept for the teardown (see holding). */
static bool hold_free(weft_chan *c) {
    if (!atomic_load_explicit(&holding.on, memory_order_relaxed))
        return false;
    weft_mutex_lock(&holding.lock);
    bool hold = atomic_load_explicit(&holding.on, memory_order_relaxed);
    if (hold) {
        c->held = holding.list;
        holding.list = c;
    }
    weft_mutex_unlock(&holding.lock);
    return hold;
}

void weft_chan_release(weft_chan *c) {
    if (!c || atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (c->timer)
        weft_timer_detach(c->timer); /* waits out a firing that may be sending to c */
    if (buffered(c)) {
        /* No operation is under way (they hold references): every position
         * between the indices holds a published value. */
        uint64_t end = atomic_load_explicit(&c->r.sendx, memory_order_relaxed) & ~WEFT_RING_CLOSED;
        for (uint64_t pos = atomic_load_explicit(&c->r.recvx, memory_order_relaxed); pos < end; pos++)
            weft_val_dispose(&weft_ring_slot_at(&c->r, pos)->val);
    }
    free(c->r.slots);
    c->r.slots = NULL;
    if (!hold_free(c))
        free(c);
}

void weft_chan_set_timer(weft_chan *c, struct weft_timer *t) {
    c->timer = t;
}

/* ---- operations under the lock ------------------------------------------------
 * weft_chan_try_case_locked is the one attempt at an operation with the lock
 * held, for select's cases and (through try_locked) the plain operations. */

static void count_op(void) {
    weft_proc *p = weft_proc_self();
    if (p)
        weft_stat_inc(&p->st_chanops);
}

/* Exported for select.c: one attempt at a case, lock held by the caller
 * (and not released). Returns 1 if the case proceeded; *wake is a list of
 * waiters to ready once the locks are dropped (weft_chan_wake). */
int weft_chan_try_case_locked(weft_chan *c, weft_case *cs, weft_waiter **wake) {
    *wake = NULL;
    bool closed = atomic_load_explicit(&c->closed, memory_order_relaxed);
    if (cs->dir == DIR_RECV) {
        if (buffered(c)) {
            if (weft_ring_pop(&c->r, &cs->val) == WEFT_RING_OK) {
                *wake = feed(c, NULL);
                cs->ok = 1;
                return 1;
            }
        } else {
            weft_waiter *w = waitq_dequeue(&c->sendq);
            if (w) {
                cs->val = w->val;
                memset(&w->val, 0, sizeof w->val);
                w->success = true;
                *wake = wake_push(NULL, w);
                cs->ok = 1;
                return 1;
            }
        }
        if (closed) { /* and no value left: pop waited out one reserved before */
            memset(&cs->val, 0, sizeof cs->val);
            cs->ok = 0;
            return 1;
        }
        return 0;
    }
    if (closed) {
        cs->ok = 0;
        return 1;
    }
    weft_waiter *w = waitq_dequeue(&c->recvq); /* buffered too: see the invariants */
    if (w) {
        w->val = cs->val;
        w->success = true;
        *wake = wake_push(NULL, w);
    } else {
        if (!buffered(c) || weft_ring_push(&c->r, &cs->val) != WEFT_RING_OK)
            return 0;
        *wake = feed(c, NULL);
    }
    memset(&cs->val, 0, sizeof cs->val);
    cs->ok = 1;
    return 1;
}

/* The plain operations' attempt under the lock, through the same code as a
 * select's case: WEFT_OK / WEFT_ECLOSED (send; *v stays the caller's when
 * closed) or 1 with *v / 0 closed with *v zeroed (receive), the lock
 * released and the waiters it served readied; or WEFT_EAGAIN with the
 * lock still held. */
static int try_locked(weft_chan *c, int dir, weft_val *v) {
    weft_case cs = {c, dir, {{0}, 0, 0, 0}, 0};
    if (dir == DIR_SEND)
        cs.val = *v;
    weft_waiter *wake;
    if (!weft_chan_try_case_locked(c, &cs, &wake))
        return WEFT_EAGAIN;
    weft_mutex_unlock(&c->lock);
    weft_chan_wake(wake);
    if (dir == DIR_RECV) {
        *v = cs.val;
        return cs.ok;
    }
    return cs.ok ? WEFT_OK : WEFT_ECLOSED;
}

static bool looks_blocked(weft_chan *c, int dir);

/* For select's first pass: one attempt at a case, without the lock when a
 * buffered channel's lock-free form proceeds or the case looks unable to
 * proceed (looks_blocked), else with it. As weft_chan_try_case_locked. */
int weft_chan_try_case(weft_chan *c, weft_case *cs, weft_waiter **wake) {
    *wake = NULL;
    if (buffered(c)) {
        if (cs->dir == DIR_RECV ? recv_fast(c, &cs->val, false) == 1 : send_fast(c, &cs->val, false) == WEFT_OK) {
            if (cs->dir == DIR_SEND)
                memset(&cs->val, 0, sizeof cs->val);
            cs->ok = 1;
            return 1;
        }
    }
    if (looks_blocked(c, cs->dir))
        return 0;
    bool ref = buffered(c); /* see send_prepare */
    if (ref)
        weft_chan_retain(c);
    weft_mutex_lock(&c->lock);
    int done = weft_chan_try_case_locked(c, cs, wake);
    weft_mutex_unlock(&c->lock);
    if (ref)
        weft_chan_release(c);
    return done;
}

/* Select's side of the handshake (lock held): counts a waiter about to be
 * queued (k = +1) before its last try, or takes the count back (k = -1). */
void weft_chan_announce_locked(weft_chan *c, int dir, int k) {
    announce(c, dir, k);
}

/* Queues w on c for direction dir (lock held), already announced. */
void weft_chan_enqueue_locked(weft_chan *c, int dir, weft_waiter *w) {
    w->dir = dir;
    waitq_push_counted(c, queue_of(c, dir), w);
}

/* Unlinks w if it is still queued (lock held). */
void weft_chan_dequeue_locked(weft_chan *c, int dir, weft_waiter *w) {
    if (w->queued)
        waitq_unlink(queue_of(c, dir), w);
}

/* Teardown (single-threaded): unlinks a waiter still queued. Its channel
 * may have lost its last reference meanwhile: its struct is then held
 * (weft_chan_hold_frees) and only the lock and the queues are touched. */
void weft_waiter_withdraw(weft_waiter *w) {
    weft_chan *c = w->c;
    if (!c || !w->queued)
        return;
    weft_mutex_lock(&c->lock);
    waitq_unlink(queue_of(c, w->dir), w);
    weft_mutex_unlock(&c->lock);
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
static int send_slow(weft_chan *c, weft_val *v, weft_g *g) {
    weft_mutex_lock(&c->lock);
    int rc = try_locked(c, DIR_SEND, v);
    if (rc != WEFT_EAGAIN)
        return rc;
    if (!g) {
        weft_mutex_unlock(&c->lock);
        return WEFT_ENOTG;
    }
    weft_waiter *w = &g->w1;
    waiter_init(w, g);
    announce(c, DIR_SEND, 1);
    if (buffered(c)) {
        /* Senders already queued get the free slots first (feed), then the
         * handshake's last try. */
        if (c->sendq.first)
            weft_chan_wake(feed(c, NULL)); /* scheduler locks after this one */
        weft_fence_sc();
        if (!c->sendq.first && weft_ring_push(&c->r, v) == WEFT_RING_OK) {
            announce(c, DIR_SEND, -1);
            weft_waiter *wake = feed(c, NULL);
            weft_mutex_unlock(&c->lock);
            weft_chan_wake(wake);
            return WEFT_OK;
        }
    }
    w->val = *v;
    weft_chan_enqueue_locked(c, DIR_SEND, w);
    g->waiting = w;
    g->nwaiting = 1;
    return WEFT_PENDING;
}

/* A buffered channel's slow paths hold a reference of their own: what they
 * push or pop under the lock can be seen by the lock-free side at once, and
 * the channel dropped before the unlock (see feed_after_commit). An
 * unbuffered channel's need none: what they do is seen only by a partner
 * they wake after the unlock, and they touch the channel no more after
 * that (try_plain and select's first pass included). A queued
 * waiter holds none (see Lifetime). */
static int send_prepare(weft_chan *c, weft_val *v, weft_g *g) {
    count_op();
    if (!buffered(c))
        return send_slow(c, v, g);
    int rc = send_fast(c, v, false);
    if (rc != WEFT_EAGAIN)
        return rc;
    weft_chan_retain(c);
    rc = send_slow(c, v, g);
    weft_chan_release(c);
    return rc;
}

static int send_result(weft_g *g, weft_val *v) {
    g->nwaiting = 0;
    if (g->w1.success)
        return WEFT_OK;
    if (v)
        *v = g->w1.val; /* closed: the value is the sender's again */
    return WEFT_ECLOSED;
}

static int recv_slow(weft_chan *c, weft_val *out, weft_g *g) {
    weft_mutex_lock(&c->lock);
    int rc = try_locked(c, DIR_RECV, out);
    if (rc != WEFT_EAGAIN)
        return rc;
    if (!g) {
        weft_mutex_unlock(&c->lock);
        return WEFT_ENOTG;
    }
    weft_waiter *w = &g->w1;
    waiter_init(w, g);
    announce(c, DIR_RECV, 1);
    if (buffered(c)) {
        weft_fence_sc(); /* the handshake's last try */
        if (weft_ring_pop(&c->r, out) == WEFT_RING_OK) {
            announce(c, DIR_RECV, -1);
            weft_waiter *wake = feed(c, NULL);
            weft_mutex_unlock(&c->lock);
            weft_chan_wake(wake);
            return 1;
        }
    }
    weft_chan_enqueue_locked(c, DIR_RECV, w);
    g->waiting = w;
    g->nwaiting = 1;
    return WEFT_PENDING;
}

static int recv_prepare(weft_chan *c, weft_val *out, weft_g *g) {
    count_op();
    if (!buffered(c))
        return recv_slow(c, out, g);
    if (recv_fast(c, out, false) == 1)
        return 1;
    weft_chan_retain(c);
    int rc = recv_slow(c, out, g);
    weft_chan_release(c);
    return rc;
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

/* The non-blocking forms: a buffered channel's lock-free form first; then
 * both kinds look without the lock, as Go's do: a send to a full buffer
 * (or, unbuffered, with no receiver queued) or a receive from an empty one
 * (no sender queued) on an open channel fails at once. The emptiness or
 * fullness is read first (acquire) and `closed` after it: closed is never
 * undone, so seeing it clear means that the channel was open when the rest
 * was read, and the operation could not proceed at that moment. The counts
 * are stored with release: a close sets `closed` and then unlinks the
 * waiters, and a reader that sees a waiter count the close lowered must
 * also see `closed` set (on arm64 two plain stores may become visible in
 * either order). Only a waiter that the lock would show to be a finished
 * select's leftover sends them to the lock. A blocking Lua send or receive
 * starts with these, so it locks only to queue its waiter; select's first
 * pass uses them too (weft_chan_try_case). */
static bool looks_full(weft_chan *c) {
    if (buffered(c))
        return weft_ring_looks_full(&c->r);
    return atomic_load_explicit(&c->nrecvw, memory_order_acquire) == 0;
}

static bool looks_empty(weft_chan *c) {
    if (buffered(c))
        return weft_ring_looks_empty(&c->r);
    return atomic_load_explicit(&c->nsendw, memory_order_acquire) == 0;
}

/* Whether an operation in direction dir cannot proceed on c now, read
 * without the lock as above. */
static bool looks_blocked(weft_chan *c, int dir) {
    return (dir == DIR_RECV ? looks_empty(c) : looks_full(c)) &&
           !atomic_load_explicit(&c->closed, memory_order_relaxed);
}

/* The non-blocking send and receive (dir): WEFT_OK / WEFT_ECLOSED for a
 * send, 1 / 0 for a receive, as try_locked, or WEFT_EAGAIN. pinned: the
 * caller keeps the channel alive itself (timer.c), so no reference is
 * taken. */
static int try_plain(weft_chan *c, int dir, weft_val *v, bool pinned) {
    if (!c)
        return WEFT_EAGAIN;
    count_op();
    if (buffered(c)) {
        if (dir == DIR_SEND) {
            int rc = send_fast(c, v, pinned);
            if (rc != WEFT_EAGAIN)
                return rc;
        } else if (recv_fast(c, v, pinned) == 1) {
            return 1;
        }
    }
    if (looks_blocked(c, dir))
        return WEFT_EAGAIN;
    bool ref = !pinned && buffered(c); /* see send_prepare */
    if (ref)
        weft_chan_retain(c);
    weft_mutex_lock(&c->lock);
    int rc = try_locked(c, dir, v);
    if (rc == WEFT_EAGAIN)
        weft_mutex_unlock(&c->lock);
    if (ref)
        weft_chan_release(c);
    return rc;
}

int weft_chan_trysend(weft_chan *c, weft_val v) {
    return try_plain(c, DIR_SEND, &v, false);
}

int weft_chan_tryrecv(weft_chan *c, weft_val *out) {
    return try_plain(c, DIR_RECV, out, false);
}

/* timer.c's deliveries and drains (see feed_after_commit). */
int weft_chan_trysend_pinned(weft_chan *c, weft_val v) {
    return try_plain(c, DIR_SEND, &v, true);
}

int weft_chan_tryrecv_pinned(weft_chan *c, weft_val *out) {
    return try_plain(c, DIR_RECV, out, true);
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
    if (buffered(c)) {
        /* No sender reserves a slot from here on; the values reserved
         * before go to queued receivers first. */
        atomic_fetch_or_explicit(&c->r.sendx, WEFT_RING_CLOSED, memory_order_relaxed);
        wake = feed(c, NULL);
    }
    while ((w = waitq_dequeue(&c->recvq))) {
        memset(&w->val, 0, sizeof w->val);
        w->success = false;
        wake = wake_push(wake, w);
    }
    while ((w = waitq_dequeue(&c->sendq))) {
        w->success = false; /* the sender keeps its value */
        wake = wake_push(wake, w);
    }
    weft_mutex_unlock(&c->lock);
    weft_chan_wake(wake);
    return WEFT_OK;
}

size_t weft_chan_len(weft_chan *c) {
    return c && buffered(c) ? (size_t)weft_ring_len(&c->r) : 0;
}

size_t weft_chan_cap(weft_chan *c) {
    return c ? c->r.cap : 0;
}

int weft_chan_closed(weft_chan *c) {
    return c ? atomic_load_explicit(&c->closed, memory_order_relaxed) : 0;
}
