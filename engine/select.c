/*
 * select.c — waiting on several channel operations at once.
 *
 * Protocol (after Go's selectgo)
 *  1. Poll order: a uniformly random permutation of the cases with a
 *     channel. Lock order: the same cases sorted by channel address.
 *  2. First pass, one channel at a time (weft_chan_try_case): walk the poll
 *     order, passing over the cases that look unable to proceed (read
 *     without a lock), and try each other case: a buffered channel's
 *     lock-free form first, else with its own channel's lock alone. The
 *     first that proceeds is the select's, and its index is returned. Most
 *     selects with a ready case take one lock, or none, instead of all.
 *  2b. Otherwise lock every channel in lock order (a channel named by several
 *     cases is locked once). If the select will wait, count its waiters
 *     on every channel first (announce, then a fence: chan.c's handshake
 *     with the lock-free forms). Walk the poll order; the first case that
 *     can proceed is performed, the counts taken back, all locks dropped,
 *     and its index returned. In both passes, among ready cases each is
 *     chosen with equal probability (the poll order is random), and only
 *     one runs.
 *  3. None ready: with nonblock, unlock and return -1. Otherwise queue one
 *     waiter per case (in lock order) with is_select set, clear
 *     g->selectdone, and park; the unlock of all channels happens after the
 *     goroutine left its stack (proc.c).
 *  4. A waker on any of those channels must CAS g->selectdone 0 -> 1 before
 *     it may complete a waiter of this goroutine: exactly one waker wins,
 *     writes the value/`success` and g->param (the winning waiter), and
 *     readies the goroutine. Other wakers skip (and unlink) its waiters.
 *  5. Woken, the goroutine locks its channels again (all but the winner's,
 *     which may be freed by now unless another of its waiters is on it),
 *     unlinks its waiters that are still queued, unlocks, and reports the
 *     winning case. If the waker
 *     won it but found the buffer taken meanwhile (`retry`, chan.c), no case
 *     was performed: it starts again from 1 (a hosted goroutine's finish
 *     returns WEFT_EAGAIN and its host starts it again).
 *
 * Invariants: a select performs exactly one case (selectdone goes 0 -> 1 once
 * per wait, and a retry performs none); a case whose channel is NULL is never chosen; while parked, every
 * waiter of the goroutine is either queued on its channel or was unlinked by
 * a waker under that channel's lock.
 *
 * Lock order: channel locks in increasing address order; weft_ready() after
 * all of them are released.
 */
#include "core.h"

#include <stdlib.h>
#include <string.h>

/* chan.c */
int weft_chan_try_case_locked(weft_chan *c, weft_case *cs, weft_waiter **wake);
int weft_chan_try_case(weft_chan *c, weft_case *cs, weft_waiter **wake);
void weft_chan_wake(weft_waiter *list);
void weft_chan_announce_locked(weft_chan *c, int dir, int k);
void weft_chan_enqueue_locked(weft_chan *c, int dir, weft_waiter *w);
void weft_chan_dequeue_locked(weft_chan *c, int dir, weft_waiter *w);

/* The channels of a select in lock order: given by `lockorder` (case
 * indices), or, once queued, by the goroutine's waiters (`ws`, which were
 * queued in lock order). */
typedef struct sel {
    weft_case *cases;
    const int *lockorder;
    const weft_waiter *ws;
    int n;           /* cases with a channel */
    weft_chan *skip; /* a channel not to lock (select_result) */
} sel;

static weft_chan *sel_chan(const sel *s, int k) {
    return s->cases[s->ws ? s->ws[k].case_index : s->lockorder[k]].ch;
}

static void sel_lock(const sel *s) {
    weft_chan *prev = NULL;
    for (int k = 0; k < s->n; k++) {
        weft_chan *c = sel_chan(s, k);
        if (c != prev && c != s->skip)
            weft_chan_lock(c);
        prev = c;
    }
}

static void sel_unlock(const sel *s) {
    for (int k = s->n - 1; k >= 0; k--) {
        weft_chan *c = sel_chan(s, k);
        if ((k == 0 || sel_chan(s, k - 1) != c) && c != s->skip)
            weft_chan_unlock(c);
    }
}

static void sel_unlock_cb(void *arg) {
    sel_unlock(arg);
}

/* A reference on each channel (hold) or its release, around the pass with
 * every lock held: what it pushes or pops can be taken by a lock-free
 * operation, and the channel dropped, before the unlock (chan.c). */
static void sel_hold(const sel *s, bool hold) {
    for (int k = 0; k < s->n; k++) {
        weft_chan *c = sel_chan(s, k);
        if (k > 0 && sel_chan(s, k - 1) == c)
            continue;
        if (hold)
            weft_chan_retain(c);
        else
            weft_chan_release(c);
    }
}

/* Heap sort of case indices by channel address (no recursion, O(n log n)). */
static void sift(const weft_case *cs, int *a, int root, int n) {
    for (;;) {
        int child = 2 * root + 1;
        if (child >= n)
            return;
        if (child + 1 < n && (uintptr_t)cs[a[child + 1]].ch > (uintptr_t)cs[a[child]].ch)
            child++;
        if ((uintptr_t)cs[a[root]].ch >= (uintptr_t)cs[a[child]].ch)
            return;
        int t = a[root];
        a[root] = a[child];
        a[child] = t;
        root = child;
    }
}

static void sort_by_chan(const weft_case *cs, int *a, int n) {
    for (int i = n / 2 - 1; i >= 0; i--)
        sift(cs, a, i, n);
    for (int end = n - 1; end > 0; end--) {
        int t = a[0];
        a[0] = a[end];
        a[end] = t;
        sift(cs, a, 0, end);
    }
}

static int ensure_wbuf(weft_g *g, int n) {
    if (g->wbuf_cap >= n)
        return 0;
    int cap = g->wbuf_cap ? g->wbuf_cap : 4;
    while (cap < n)
        cap *= 2;
    weft_waiter *w = realloc(g->wbuf, (size_t)cap * sizeof *w);
    if (!w)
        return -1;
    g->wbuf = w;
    g->wbuf_cap = cap;
    return 0;
}

static int check_cases(weft_case *cases, int n) {
    if (n < 0 || (n > 0 && !cases))
        return WEFT_EINVAL;
    for (int i = 0; i < n; i++)
        if (cases[i].dir != WEFT_CASE_RECV && cases[i].dir != WEFT_CASE_SEND)
            return WEFT_EINVAL;
    return WEFT_OK;
}

/* Counts (k = +1) or takes back (k = -1) a waiter per case (locks held). */
static void sel_announce(weft_case *cases, const int *lockorder, int m, int k) {
    for (int j = 0; j < m; j++)
        weft_chan_announce_locked(cases[lockorder[j]].ch, cases[lockorder[j]].dir, k);
}

/* Steps 1-3 of the protocol for goroutine g (NULL: cannot wait). Returns the
 * index performed, -1 (nonblock, none ready), a negative WEFT_E*, or
 * WEFT_PENDING with the waiters queued and every channel still locked.
 * order has room for 2n ints; s is filled for the caller. */
static int select_prepare(weft_g *g, weft_case *cases, int n, int nonblock, int *order, sel *s) {
    int *pollorder = order, *lockorder = order + n;
    /* Random poll order over the cases that have a channel (inside-out
     * Fisher-Yates), drawn from one processor random number stretched by a
     * local LCG (its high bits, scaled by multiply and shift). */
    weft_proc *p = weft_proc_self();
    uint64_t x = weft_fastrand_on(p);
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (!cases[i].ch)
            continue;
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        int j = (int)weft_rand_scale((uint32_t)(x >> 32), (uint32_t)(m + 1));
        pollorder[m] = pollorder[j];
        pollorder[j] = i;
        lockorder[m] = i;
        m++;
    }
    if (p && m)
        weft_stat_inc(&p->st_chanops);
    for (int k = 0; k < m; k++) {
        int i = pollorder[k];
        weft_waiter *wake;
        if (weft_chan_try_case(cases[i].ch, &cases[i], &wake)) {
            *s = (sel){cases, lockorder, NULL, 0, NULL};
            weft_chan_wake(wake);
            return i;
        }
    }

    sort_by_chan(cases, lockorder, m);
    *s = (sel){cases, lockorder, NULL, m, NULL};
    if (m == 0)
        return nonblock ? -1 : WEFT_PENDING; /* no cases: blocks forever */

    sel_hold(s, true);
    sel_lock(s);
    /* About to wait: count the waiters first (chan.c's handshake), so that
     * a buffered channel's lock-free side either is seen by the tries below
     * or sees the counts and comes to the lock. */
    bool wait = !nonblock && g;
    if (wait) {
        sel_announce(cases, lockorder, m, 1);
        weft_fence_sc();
    }
    for (int k = 0; k < m; k++) {
        int i = pollorder[k];
        weft_waiter *wake;
        if (weft_chan_try_case_locked(cases[i].ch, &cases[i], &wake)) {
            if (wait)
                sel_announce(cases, lockorder, m, -1);
            sel_unlock(s);
            sel_hold(s, false);
            weft_chan_wake(wake);
            return i;
        }
    }
    if (!wait) {
        sel_unlock(s);
        sel_hold(s, false);
        return nonblock ? -1 : WEFT_ENOTG;
    }
    if (ensure_wbuf(g, m) != 0) {
        sel_announce(cases, lockorder, m, -1);
        sel_unlock(s);
        sel_hold(s, false);
        return WEFT_ENOMEM;
    }
    atomic_store_explicit(&g->selectdone, 0, memory_order_relaxed);
    g->param = NULL;
    for (int k = 0; k < m; k++) {
        int i = lockorder[k];
        weft_waiter *w = &g->wbuf[k];
        memset(w, 0, sizeof *w);
        w->g = g;
        w->is_select = true;
        w->case_index = i;
        if (cases[i].dir == WEFT_CASE_SEND)
            w->val = cases[i].val;
        weft_chan_enqueue_locked(cases[i].ch, cases[i].dir, w);
    }
    g->waiting = g->wbuf;
    g->nwaiting = m;
    sel_hold(s, false); /* (the caller's references keep the channels: chan.c) */
    return WEFT_PENDING;
}

/* Step 5: woken by the waker that won; withdraw the other waiters (their
 * channels locked in the order they were queued) and report the winner. */
static int select_result(weft_g *g, weft_case *cases) {
    weft_waiter *win = g->param;
    /* The waker unlinked the winner: its channel is locked again only if
     * another waiter of this select is queued on it. */
    weft_chan *wc = cases[win->case_index].ch;
    sel qs = {cases, NULL, g->wbuf, g->nwaiting, wc};
    for (int k = 0; k < qs.n; k++)
        if (&g->wbuf[k] != win && cases[g->wbuf[k].case_index].ch == wc)
            qs.skip = NULL;
    const sel *s = &qs;
    sel_lock(s);
    for (int k = 0; k < s->n; k++) {
        weft_waiter *w = &g->wbuf[k];
        if (w != win && w->queued)
            weft_chan_dequeue_locked(cases[w->case_index].ch, w->dir, w);
    }
    sel_unlock(s);
    g->nwaiting = 0;
    if (win->retry)
        return WEFT_EAGAIN; /* the case was won but its buffer taken: again */
    int i = win->case_index;
    cases[i].ok = win->success ? 1 : 0;
    if (cases[i].dir == WEFT_CASE_RECV)
        cases[i].val = win->val;
    else if (win->success)
        memset(&cases[i].val, 0, sizeof cases[i].val);
    return i;
}

/* Both entry points. A native goroutine parks here and gets its result; a
 * hosted one is marked parked, its channels unlocked, and WEFT_PENDING is
 * returned (it calls weft_select_finish once resumed). */
static int select_common(weft_case *cases, int n, int nonblock, bool hosted) {
    int rc = check_cases(cases, n);
    if (rc != WEFT_OK)
        return rc;
    weft_g *g = weft_g_self();
    bool can_wait = hosted ? g != NULL : weft_is_native(g);
    if (!can_wait && (hosted || !nonblock))
        return WEFT_ENOTG;
    int small[2 * 16];
    int *order = n <= 16 ? small : malloc(2 * (size_t)n * sizeof *order);
    if (!order)
        return WEFT_ENOMEM;
    sel s;
    do {
        rc = select_prepare(can_wait ? g : NULL, cases, n, nonblock, order, &s);
        if (rc == WEFT_PENDING) {
            if (hosted) {
                weft_park_hosted(g, s.n ? "select" : "select (no cases)");
                if (s.n)
                    sel_unlock(&s);
            } else if (s.n == 0) {
                weft_park_forever("select (no cases)");
            } else {
                weft_park("select", sel_unlock_cb, &s);
                rc = select_result(g, cases);
            }
        }
    } while (rc == WEFT_EAGAIN && !hosted);
    if (order != small)
        free(order);
    return rc;
}

int weft_select(weft_case *cases, int n, int nonblock) {
    return select_common(cases, n, nonblock, false);
}

/* Hosted goroutines (core.h). */

int weft_select_start(weft_case *cases, int n, int nonblock) {
    return select_common(cases, n, nonblock, true);
}

int weft_select_finish(weft_case *cases, int n) {
    (void)n;
    return select_result(weft_g_self(), cases);
}
