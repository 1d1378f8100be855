/*
 * poll.c — the netpoller: goroutines parked on fd readiness.
 *
 * A goroutine waiting for an fd parks with an ev_io (and, for a timeout, an
 * ev_timer) in its wait record (g->iow, made on its first wait and kept with
 * the goroutine struct, so that goroutines that never wait on an fd do not
 * carry it), started on the libev loop of the
 * processor it is running on when it parks. Only that processor's thread
 * ever touches the watchers: it starts them (the goroutine runs there), its
 * scheduler runs their callbacks (in ev_run, called only from g0: when the
 * processor sleeps, and between goroutines while it has fd waiters, see
 * find_runnable in proc.c), and it stops them (in a callback, or in
 * weft_io_wake_closed called by a goroutine running there). A hosted
 * goroutine is bound to its processor, so all of its waits are on one loop.
 *
 * Invariants:
 *  - iow->p != NULL exactly while the watchers are started; the goroutine is
 *    then linked in p->iowaiters and counted in p->niowait and in
 *    weft_S.npollwait, which keeps counting it after the wait finished
 *    until the goroutine is readied (a processor finishing it in its sleep
 *    still counts as idle: see the deadlock check in diag.c).
 *  - The first of {fd ready, timeout, close} disarms the wait (stops both
 *    watchers, which also clears a pending event of the other, unlinks,
 *    uncounts) and only then weft_ready()s the goroutine: it is woken once.
 *  - libev applies a watcher stop to the kernel (epoll_ctl) lazily, at the
 *    start of its next loop iteration. A goroutine woken from a callback
 *    may then run on another processor and close its fd, racing with that
 *    epoll_ctl. So callbacks only collect finished waits in p->iowoken, and
 *    weft_io_flush, after each ev_run of the scheduler, runs the loop once
 *    more without blocking (applying the stops) before it readies them:
 *    the stop happens-before anything the woken goroutine does.
 *  - Callbacks run on g0, so a native goroutine's stack is no longer in use
 *    when it is woken, and a hosted one has returned to the scheduler.
 *  - At engine stop (all processors joined), weft_io_teardown stops the
 *    watchers of goroutines still parked, before the loops are destroyed.
 *
 * Locks: none of its own; weft_ready() may take inboxlock or sched.lock.
 */
#include "core.h"

#include <math.h>
#include <stdlib.h>

static void io_disarm(weft_iowait *w) {
    weft_proc *p = w->p;
    ev_io_stop(p->loop, &w->io);
    ev_timer_stop(p->loop, &w->tm);
    if (w->prev)
        w->prev->next = w->next;
    else
        p->iowaiters = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->next = w->prev = NULL;
    p->niowait--;
    w->p = NULL;
}

/* The wait no longer counts in npollwait: only once g is runnable, so that
 * the deadlock check (diag.c) always sees one or the other. */
static void io_ready_g(weft_g *g) {
    weft_ready(g, false);
    atomic_fetch_sub(&weft_S.npollwait, 1);
}

static void io_done(weft_iowait *w, int result) {
    weft_g *g = w->io.data;
    io_disarm(w);
    w->result = result;
    io_ready_g(g);
}

/* From a callback: readied by weft_io_flush, once the stop is applied. */
static void io_done_later(weft_iowait *w, int result) {
    weft_g *g = w->io.data;
    weft_proc *p = w->p;
    io_disarm(w);
    w->result = result;
    g->schedlink = p->iowoken;
    p->iowoken = g;
}

static void io_ready_cb(struct ev_loop *loop, ev_io *io, int revents) {
    (void)loop;
    (void)revents;
    weft_g *g = io->data;
    io_done_later(g->iow, WEFT_OK);
}

static void io_timeout_cb(struct ev_loop *loop, ev_timer *tm, int revents) {
    (void)loop;
    (void)revents;
    weft_g *g = tm->data;
    /* The fd became ready in the same loop iteration: ready wins. */
    io_done_later(g->iow, ev_is_pending(&g->iow->io) ? WEFT_OK : WEFT_EAGAIN);
}

/* Starts g's wait on p's loop (p: the calling thread's processor, g running
 * on it). False if out of memory. */
static bool io_arm(weft_proc *p, weft_g *g, int fd, int events, int64_t timeout_ns) {
    if (!g->iow && !(g->iow = calloc(1, sizeof *g->iow)))
        return false;
    weft_iowait *w = g->iow;
    ev_io_init(&w->io, io_ready_cb, fd, events & (EV_READ | EV_WRITE));
    w->io.data = g;
    ev_init(&w->tm, io_timeout_cb);
    w->tm.data = g;
    w->result = WEFT_OK;
    w->p = p;
    w->prev = NULL;
    w->next = p->iowaiters;
    if (w->next)
        w->next->prev = w;
    p->iowaiters = w;
    p->niowait++;
    atomic_fetch_add(&weft_S.npollwait, 1);
    ev_io_start(p->loop, &w->io);
    if (timeout_ns >= 0) {
        /* The loop's clock is only updated by ev_run: it may be stale. */
        ev_now_update(p->loop);
        ev_timer_set(&w->tm, (double)timeout_ns / 1e9, 0.);
        ev_timer_start(p->loop, &w->tm);
    }
    return true;
}

static bool io_args_ok(int fd, int events) {
    return fd >= 0 && events > 0 && (events & ~(WEFT_IO_READ | WEFT_IO_WRITE)) == 0;
}

int weft_io_wait_start(int fd, int events, int64_t timeout_ns) {
    weft_proc *p = weft_proc_self();
    weft_g *g = p ? p->curg : NULL;
    if (!g)
        return WEFT_ENOTG;
    if (!io_args_ok(fd, events))
        return WEFT_EINVAL;
    if (!io_arm(p, g, fd, events, timeout_ns))
        return WEFT_ENOMEM;
    weft_park_hosted(g, "IO wait");
    return WEFT_PENDING;
}

int weft_io_wait_finish(void) {
    weft_g *g = weft_g_self();
    return g && g->iow ? g->iow->result : WEFT_ENOTG;
}

int weft_io_wait(int fd, int events, double timeout) {
    weft_proc *p = weft_proc_self();
    weft_g *g = p ? p->curg : NULL;
    if (!g || g->kind != WEFT_G_NATIVE)
        return WEFT_ENOTG;
    if (!io_args_ok(fd, events) || isnan(timeout))
        return WEFT_EINVAL;
    int64_t ns = timeout < 0 ? -1 : timeout > 9e9 ? (int64_t)9e18 : (int64_t)(timeout * 1e9);
    if (!io_arm(p, g, fd, events, ns))
        return WEFT_ENOMEM;
    /* The callbacks run on g0 of this processor, after the switch. */
    weft_park("IO wait", NULL, NULL);
    return g->iow->result;
}

int weft_io_wake_closed(int fd) {
    weft_proc *p = weft_proc_self();
    if (!p)
        return 0;
    int n = 0;
    weft_iowait *w = p->iowaiters;
    while (w) {
        weft_iowait *next = w->next;
        if (w->io.fd == fd) {
            io_done(w, WEFT_ECLOSED);
            n++;
        }
        w = next;
    }
    return n;
}

bool weft_io_poll(weft_proc *p) {
    if (!p->niowait)
        return false;
    int before = p->niowait;
    ev_run(p->loop, EVRUN_NOWAIT);
    weft_io_flush(p);
    return p->niowait < before;
}

void weft_io_flush(weft_proc *p) {
    while (p->iowoken) {
        weft_g *g = p->iowoken;
        p->iowoken = NULL;
        ev_run(p->loop, EVRUN_NOWAIT); /* applies their stops; may finish more */
        while (g) {
            weft_g *next = g->schedlink;
            g->schedlink = NULL;
            io_ready_g(g);
            g = next;
        }
    }
}

void weft_io_teardown(weft_g *g) {
    if (g->iow && g->iow->p) {
        io_disarm(g->iow);
        atomic_fetch_sub(&weft_S.npollwait, 1);
    }
    free(g->iow);
    g->iow = NULL;
}
