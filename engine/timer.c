/*
 * timer.c — timers: sleep, one-shot timers, tickers, after-channels and
 * after_func, kept per processor.
 *
 * Each processor has a 4-ary min-heap of (when, timer) entries under its
 * tlock, and mirrors the earliest deadline in p->timer0. The scheduler checks
 * timer0 between goroutines and fires what is due; a processor about to
 * sleep arms its libev ev_timer (p->alarm) for timer0, so timers run on each
 * processor's libev loop. A heap of our own, rather than one ev_timer per
 * timer, lets any thread stop or reset a timer at once, with a synchronous
 * answer, by removing its entry under that heap's lock.
 *
 * State (t->mu): `armed` (will deliver once due), `when`, `period`, `c`.
 * Heap membership (the heap's tlock): t->p, t->idx. A timer is in at most
 * one heap; it is added to the heap of the processor that arms it.
 *
 * Firing: weft_timers_run pops every due entry under tlock (t->p = NULL),
 * drops tlock, then for each timer takes t->mu and delivers only if the timer
 * is still armed and its `when` has come. Stop and reset take t->mu, clear or
 * re-arm, unlink the heap entry and drain the channel buffer. Because delivery
 * and stop/reset are serialised by t->mu, and a reset moves `when` into the
 * future, no value from before a stop or reset is received after it.
 *
 * Ownership (t->refs): the creator, each heap entry and each firing in
 * progress hold a reference. A CHAN/TICKER timer holds a reference on its
 * channel. An AFTER timer is owned by its channel (weft_after): the channel's
 * release detaches it (t->c = NULL, unarmed, unlinked) under t->mu, which
 * waits for a firing that may be sending to the channel.
 * SLEEP timers are embedded in their goroutine: no references, no mu use;
 * only the processor running the goroutine arms one, and only it fires it.
 *
 * Lock order: t->mu, then a heap's tlock, then channel locks (a delivery is a
 * non-blocking send), then scheduler locks (weft_ready). weft_timers_run
 * holds tlock alone while popping.
 */
#include "core.h"

#include <stdlib.h>
#include <string.h>

/* chan.c: the non-blocking forms, for a caller that keeps the channel alive
 * itself (here: a delivery holds t->mu, which the channel's release waits
 * for), so that they take no reference that could be the last. */
int weft_chan_trysend_pinned(weft_chan *c, weft_val v);
int weft_chan_tryrecv_pinned(weft_chan *c, weft_val *out);

/* ---- the heap -------------------------------------------------------------- */

static void heap_set(weft_proc *p, int i, weft_theap_ent e) {
    p->theap[i] = e;
    e.t->idx = i;
}

static void sift_up(weft_proc *p, int i) {
    weft_theap_ent e = p->theap[i];
    while (i > 0) {
        int parent = (i - 1) / 4;
        if (p->theap[parent].when <= e.when)
            break;
        heap_set(p, i, p->theap[parent]);
        i = parent;
    }
    heap_set(p, i, e);
}

static void sift_down(weft_proc *p, int i) {
    weft_theap_ent e = p->theap[i];
    int n = p->tlen;
    for (;;) {
        int c = 4 * i + 1;
        if (c >= n)
            break;
        int best = c;
        for (int k = c + 1; k < c + 4 && k < n; k++)
            if (p->theap[k].when < p->theap[best].when)
                best = k;
        if (e.when <= p->theap[best].when)
            break;
        heap_set(p, i, p->theap[best]);
        i = best;
    }
    heap_set(p, i, e);
}

static void update_timer0(weft_proc *p) {
    atomic_store_explicit(&p->timer0, p->tlen ? p->theap[0].when : 0, memory_order_relaxed);
}

static void heap_remove_at(weft_proc *p, int i) {
    weft_timer *t = p->theap[i].t;
    int last = --p->tlen;
    if (i != last) {
        heap_set(p, i, p->theap[last]);
        sift_down(p, i);
        sift_up(p, i);
    }
    t->idx = -1;
    /* Release: whoever sees t->p == NULL (acquire, in heap_unlink) may then
     * add t to another heap and write t->idx under that heap's lock. */
    atomic_store_explicit(&t->p, NULL, memory_order_release);
}

static void timer_retain(weft_timer *t) {
    if (t->kind != WEFT_TIMER_SLEEP)
        atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
}

static void timer_release(weft_timer *t) {
    if (t->kind == WEFT_TIMER_SLEEP)
        return;
    if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (t->c && t->kind != WEFT_TIMER_AFTER)
        weft_chan_release(t->c);
    free(t);
}

/* Adds t (not in any heap) to the current processor's heap, or processor 0's
 * from a thread that is no processor, waking that one if it sleeps. */
static int heap_add(weft_timer *t, int64_t when) {
    weft_proc *p = weft_proc_self();
    bool remote = false;
    if (!p) {
        if (atomic_load(&weft_S.state) != WEFT_SCHED_RUNNING)
            return WEFT_ESTATE;
        p = weft_S.procs[0];
        remote = true;
    }
    weft_mutex_lock(&p->tlock);
    if (p->tlen == p->tcap) {
        int cap = p->tcap ? p->tcap * 2 : 64;
        weft_theap_ent *h = realloc(p->theap, (size_t)cap * sizeof *h);
        if (!h) {
            weft_mutex_unlock(&p->tlock);
            return WEFT_ENOMEM;
        }
        p->theap = h;
        p->tcap = cap;
    }
    timer_retain(t);
    int i = p->tlen++;
    p->theap[i].when = when;
    p->theap[i].t = t;
    t->idx = i;
    atomic_store_explicit(&t->p, p, memory_order_relaxed);
    sift_up(p, i);
    bool earliest = t->idx == 0;
    update_timer0(p);
    weft_mutex_unlock(&p->tlock);
    if (remote && earliest && atomic_load(&p->sleeping))
        ev_async_send(p->loop, &p->wake);
    return WEFT_OK;
}

/* Removes t from whatever heap holds it. 1 if it was in one. */
static int heap_unlink(weft_timer *t) {
    for (;;) {
        weft_proc *p = atomic_load_explicit(&t->p, memory_order_acquire);
        if (!p)
            return 0;
        weft_mutex_lock(&p->tlock);
        if (atomic_load_explicit(&t->p, memory_order_acquire) == p) {
            heap_remove_at(p, t->idx);
            update_timer0(p);
            weft_mutex_unlock(&p->tlock);
            timer_release(t); /* the heap entry's reference */
            return 1;
        }
        weft_mutex_unlock(&p->tlock); /* it moved or fired meanwhile */
    }
}

/* ---- firing ---------------------------------------------------------------- */

static void deliver(weft_timer *t, int64_t now) {
    if (t->kind == WEFT_TIMER_SLEEP) {
        weft_ready(t->g, false);
        return;
    }
    weft_mutex_lock(&t->mu);
    if (t->armed && t->when <= now) {
        /* A reset may have re-added t with an already-due `when`: this
         * delivery serves it, so its entry goes. */
        heap_unlink(t);
        switch (t->kind) {
        case WEFT_TIMER_CHAN:
        case WEFT_TIMER_AFTER:
            t->armed = false;
            if (t->c)
                weft_chan_trysend_pinned(t->c, weft_val_num((double)now / 1e9));
            break;
        case WEFT_TIMER_TICKER: {
            if (t->c)
                weft_chan_trysend_pinned(t->c, weft_val_num((double)now / 1e9)); /* full: tick dropped */
            int64_t next = t->when + t->period;
            if (next <= now)
                next = now + t->period; /* behind: skip the missed ticks */
            t->when = next;
            if (heap_add(t, next) != WEFT_OK)
                t->armed = false;
            break;
        }
        case WEFT_TIMER_FUNC:
            t->armed = false;
            weft_go(t->fn, t->arg);
            break;
        }
    }
    weft_mutex_unlock(&t->mu);
}

void weft_timers_run(weft_proc *p, int64_t now) {
    /* Popped timers are collected in a local batch, not linked through the
     * timer: a timer being fired here may meanwhile be reset into another
     * processor's heap and fired there too. */
    enum { BATCH = 64 };
    weft_timer *fire[BATCH];
    for (;;) {
        int n = 0;
        weft_mutex_lock(&p->tlock);
        while (n < BATCH && p->tlen > 0 && p->theap[0].when <= now) {
            fire[n++] = p->theap[0].t;
            heap_remove_at(p, 0);
        }
        update_timer0(p);
        bool more = p->tlen > 0 && p->theap[0].when <= now;
        weft_mutex_unlock(&p->tlock);
        for (int i = 0; i < n; i++) {
            /* A sleep timer belongs to its goroutine, which deliver() readies:
             * it may be running (and sleeping again) elsewhere at once, so the
             * timer is not touched after delivery. */
            bool sleep = fire[i]->kind == WEFT_TIMER_SLEEP;
            deliver(fire[i], now);
            if (!sleep)
                timer_release(fire[i]); /* the popped entry's reference */
            weft_stat_inc(&p->st_timers);
        }
        if (!more)
            return;
    }
}

void weft_timers_teardown(weft_proc *p) {
    weft_mutex_lock(&p->tlock);
    int n = p->tlen;
    weft_theap_ent *h = p->theap;
    for (int i = 0; i < n; i++) {
        h[i].t->idx = -1;
        atomic_store_explicit(&h[i].t->p, NULL, memory_order_release);
    }
    p->theap = NULL;
    p->tlen = p->tcap = 0;
    update_timer0(p);
    weft_mutex_unlock(&p->tlock);
    for (int i = 0; i < n; i++) {
        weft_timer *t = h[i].t;
        if (t->kind != WEFT_TIMER_SLEEP) {
            weft_mutex_lock(&t->mu);
            t->armed = false;
            weft_mutex_unlock(&t->mu);
        }
        timer_release(t);
    }
    free(h);
}

int weft_timer_sleep_prepare(weft_g *g) {
    if (!g->sleept) {
        weft_timer *t = calloc(1, sizeof *t);
        if (!t)
            return WEFT_ENOMEM;
        atomic_init(&t->p, NULL);
        t->idx = -1;
        g->sleept = t;
    }
    return WEFT_OK;
}

void weft_timer_sleep_arm(weft_g *g, int64_t when) {
    weft_timer *t = g->sleept;
    t->kind = WEFT_TIMER_SLEEP;
    t->g = g;
    t->when = when;
    t->armed = true;
    heap_add(t, when);
}

/* ---- the API --------------------------------------------------------------- */

static int64_t to_ns(double seconds) {
    if (seconds != seconds || seconds <= 0)
        return 0;
    if (seconds > 9e9)
        seconds = 9e9;
    return (int64_t)(seconds * 1e9);
}

/* A new armed timer in the current processor's heap; FUNC timers run
 * fn(arg), the others get a channel of capacity 1. */
static weft_timer *timer_new(int kind, double seconds, double period, void (*fn)(void *),
                             void *arg) {
    if (atomic_load(&weft_S.state) != WEFT_SCHED_RUNNING)
        return NULL;
    weft_timer *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    weft_mutex_init(&t->mu);
    atomic_init(&t->refs, 1);
    atomic_init(&t->p, NULL);
    t->idx = -1;
    t->kind = kind;
    t->fn = fn;
    t->arg = arg;
    if (kind != WEFT_TIMER_FUNC) {
        t->c = weft_chan_new(1);
        if (!t->c) {
            free(t);
            return NULL;
        }
    }
    t->period = to_ns(period);
    t->when = weft_nanotime() + to_ns(seconds);
    t->armed = true;
    weft_mutex_lock(&t->mu);
    int rc = heap_add(t, t->when);
    weft_mutex_unlock(&t->mu);
    if (rc != WEFT_OK) {
        if (t->c)
            weft_chan_release(t->c);
        free(t);
        return NULL;
    }
    return t;
}

weft_timer *weft_timer_new(double seconds) {
    return timer_new(WEFT_TIMER_CHAN, seconds, 0, NULL, NULL);
}

weft_timer *weft_ticker_new(double period) {
    if (to_ns(period) <= 0)
        return NULL; /* also a positive period that rounds to 0 ns */
    return timer_new(WEFT_TIMER_TICKER, period, period, NULL, NULL);
}

weft_timer *weft_after_func(double seconds, void (*fn)(void *), void *arg) {
    if (!fn)
        return NULL;
    return timer_new(WEFT_TIMER_FUNC, seconds, 0, fn, arg);
}

weft_chan *weft_after(double seconds) {
    weft_timer *t = timer_new(WEFT_TIMER_AFTER, seconds, 0, NULL, NULL);
    if (!t)
        return NULL;
    weft_chan *c = t->c;
    weft_chan_set_timer(c, t); /* the creator's reference passes to the channel */
    return c;
}

weft_chan *weft_timer_chan(weft_timer *t) {
    return t ? t->c : NULL;
}

/* Drains a stale value from t's channel (t->mu held). */
static void drain(weft_timer *t) {
    weft_val v;
    if (t->c && weft_chan_tryrecv_pinned(t->c, &v) == 1)
        weft_val_dispose(&v);
}

int weft_timer_stop(weft_timer *t) {
    if (!t)
        return 0;
    weft_mutex_lock(&t->mu);
    int was = t->armed;
    t->armed = false;
    heap_unlink(t);
    drain(t);
    weft_mutex_unlock(&t->mu);
    return was;
}

int weft_timer_reset(weft_timer *t, double seconds) {
    if (!t)
        return 0;
    weft_mutex_lock(&t->mu);
    int was = t->armed;
    heap_unlink(t);
    drain(t);
    if (t->kind == WEFT_TIMER_TICKER) {
        if (to_ns(seconds) > 0)
            t->period = to_ns(seconds); /* else the period stays */
        t->when = weft_nanotime() + t->period;
    } else {
        t->when = weft_nanotime() + to_ns(seconds);
    }
    t->armed = heap_add(t, t->when) == WEFT_OK;
    weft_mutex_unlock(&t->mu);
    return was;
}

void weft_timer_free(weft_timer *t) {
    if (!t)
        return;
    weft_timer_stop(t);
    timer_release(t);
}

void weft_timer_detach(weft_timer *t) {
    weft_mutex_lock(&t->mu);
    t->armed = false;
    t->c = NULL;
    heap_unlink(t);
    weft_mutex_unlock(&t->mu);
    timer_release(t); /* the channel's reference */
}
