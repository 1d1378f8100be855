/*
 * proc.c — processors and the scheduler: running, parking and waking
 * goroutines, work stealing, idling in the ev loop, engine start and stop.
 *
 * Model. There are nprocs processors (P), each an OS thread that owns a libev
 * loop. A P's thread runs the scheduler on its own stack (g0) and switches to
 * a native goroutine's stack to run it; the goroutine switches back to g0 to
 * park, yield or exit. Hosted goroutines (Lua coroutines, bindings/) are run
 * by a host hook from g0 and are bound to one P: the creator's, or, for a
 * portable one (an isolate not yet started), the P with the fewest hosted
 * goroutines when it is first taken to run (least_hosted); until then it
 * sits in run queues like a native goroutine and may be stolen.
 *
 * Goroutine states (g->state):
 *   IDLE -> RUNNABLE (created) -> RUNNING (execute) -> WAITING (parked)
 *   -> RUNNABLE (weft_ready) -> ... -> DEAD (exited) -> IDLE (free list)
 *
 * Parking (gopark). A native goroutine sets parkop/unlockf and switches to
 * g0; g0 marks it WAITING and only then calls unlockf (e.g. releases the
 * channel lock under which the goroutine queued a waiter). So a waker, which
 * needs that lock to find the goroutine, can only weft_ready() it after its
 * stack is no longer in use, and may then run it on any processor at once.
 *
 * Waking. weft_ready() puts a native goroutine in the current P's runnext
 * (or the global queue from a thread that is no P) and calls wakep(); a
 * hosted goroutine goes to its own P: the bound queue if that is the current
 * P, else the P's inbox.
 *
 * Spinning and idling (after Go's findrunnable/wakep):
 *  - A P with nothing to run may spin (steal from others) if fewer than half
 *    of the busy Ps are spinning. nspinning counts spinning Ps.
 *  - wakep() wakes an idle P (one sleeping in its ev loop) only when there is
 *    no spinning P already; the woken P starts out spinning (nspinning was
 *    incremented for it by the waker: no thundering herd). That credit is
 *    handed over under sched.lock with the removal from the idle list, and
 *    every way off the idle list (idle_leave) collects it, so nspinning never
 *    counts a P that is not spinning.
 *  - A spinning P that finds work stops spinning and, if it was the last
 *    spinner, calls wakep() so that new work keeps finding hands.
 *  - A P going idle puts itself on the idle list and then re-checks every
 *    run queue: a goroutine readied while it was giving up is then not
 *    stranded (the waker saw nspinning > 0, or npidle without this P, and
 *    did not wake anyone).
 *  - A P that found nothing, before it goes idle, polls for a while for
 *    work (idle_poll) if some other P is running: waking a sleeping P costs
 *    the waker a system call and, in a virtual machine, an interrupt to a
 *    halted vCPU (an eventfd write that wakes a sleeping thread took the
 *    writer 18-24 us on the 2-vCPU KVM guest of bench/RESULTS.md), where
 *    handing work to a polling P costs a memory write. A spinning P stays
 *    counted in nspinning while it polls, so wakep() leaves the idle Ps
 *    alone meanwhile. It does not take other Ps' runnext (their own next
 *    goroutine, which they are about to run). A P that polls without
 *    spinning is not idle either, so wakep() does not wake it: while no P
 *    spins it watches the other Ps' queues itself (work readied then found
 *    no idle P to wake and no spinner to find it), and starts spinning.
 *    The window adapts the way guest halt polling does: it grows when work
 *    came soon after the P gave up and slept, and shrinks when the P then
 *    slept long, so a P that is idle for good stops using its CPU after a
 *    few rounds.
 *  - Before blocking in ev_run a P sets `sleeping` and re-checks its inbox;
 *    inbox pushers set inboxn then read `sleeping` (both seq_cst), and send
 *    the ev_async if it is set: one of the two always sees the other.
 *
 * Fd waiters (poll.c): their ev_io watchers are on their processor's loop;
 * the callbacks (which weft_ready() the goroutine) run in ev_run, on g0:
 * in proc_sleep, and, while the processor has fd waiters, in a
 * non-blocking poll when it finds nothing local and every 61 ticks.
 *
 * Lock order: a channel lock (chan.c) or timer lock (timer.c) may be held
 * while weft_ready() takes p->inboxlock or sched.lock; sched.lock and
 * inboxlock are leaves. g0 never holds a lock across a goroutine switch.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "core.h"
#include "prefetch.h"
#include "tls.h"
#include "diag.h"
#include "sanitizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

weft_sched weft_S;

static _Thread_local weft_proc *tls_proc WEFT_TLS_FAST;

#if defined(__GNUC__)
#define WEFT_NOINLINE __attribute__((noinline))
#else
#define WEFT_NOINLINE
#endif

/* A goroutine may resume on another thread after parking, so the thread's
 * processor is always re-read through this function (never inlined, so no
 * caller can keep a stale TLS address across a switch). */
WEFT_NOINLINE weft_proc *weft_proc_self(void) {
    return tls_proc;
}

/* Never inlined either; it reads the TLS itself (one call, not two, on
 * every operation's path). */
WEFT_NOINLINE weft_g *weft_g_self(void) {
    weft_proc *p = tls_proc;
    return p ? p->curg : NULL;
}

void weft_stat_inc(_Atomic uint64_t *counter) {
    atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

int64_t weft_nanotime(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t weft_coarse_now(void) {
#if defined(CLOCK_MONOTONIC_COARSE)
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
#else
    return weft_nanotime();
#endif
}

double weft_now(void) {
    return (double)weft_nanotime() / 1e9;
}

uint32_t weft_fastrand(void) {
    return weft_fastrand_on(weft_proc_self());
}

uint32_t weft_fastrand_on(weft_proc *p) {
    static _Atomic uint64_t shared = 0x9E3779B97F4A7C15ull;
    uint64_t x;
    if (p) {
        x = p->rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p->rng = x;
    } else {
        x = atomic_fetch_add(&shared, 0x9E3779B97F4A7C15ull);
        x ^= x >> 31;
        x *= 0xBF58476D1CE4E5B9ull;
        x ^= x >> 29;
    }
    return (uint32_t)(x >> 32);
}

/* Uniform in [0, n) for n > 0: a multiply and a shift instead of a division
 * (as Go's cheaprandn); the bias is below n / 2^32. */
uint32_t weft_fastrandn(uint32_t n) {
    return weft_rand_scale(weft_fastrand(), n);
}

static void nothing_cb(struct ev_loop *loop, void *w, int revents) {
    (void)loop;
    (void)w;
    (void)revents;
}

/* ---- goroutine allocation ------------------------------------------------ */

static void g_entry(void *arg);

/* Prepares a fresh goroutine: id, stack, entry. It writes the struct's
 * first two lines only (core.h); the first frame goes on the stack when
 * the goroutine first runs (g_start), on the processor that runs it. */
static weft_g *g_new(weft_proc *p, int kind, void (*fn)(void *), void *arg) {
    weft_g *g = weft_gfree_get(p);
    if (!g)
        return NULL;
    g->schedlink = NULL;
    if (kind == WEFT_G_NATIVE) {
        weft_gnative *n = weft_gfree_stack_get(p);
        if (!n) {
            if (p)
                weft_gfree_put(p, g);
            return NULL; /* without p the struct stays in allgs only */
        }
        g->nat = n;
        g->fn = fn;
        g->arg = arg;
        g->fresh = true;
    }
    weft_g *cur = p ? p->curg : NULL;
    g->id = atomic_fetch_add(&weft_S.goidgen, 1) + 1;
    g->kind = kind;
    g->parent_id = cur ? cur->id : 0;
    g->bound = NULL;
    g->host = NULL;
    g->wait_reason = NULL;
    g->waiting = NULL;
    g->nwaiting = 0;
    atomic_store_explicit(&g->state, WEFT_G_RUNNABLE, memory_order_relaxed);
    atomic_fetch_add_explicit(&weft_S.ngoroutines, 1, memory_order_relaxed);
    return g;
}

/* A native goroutine's first run, on p: it runs on the stack p last ran on,
 * if p has one free (gfree.c says why), and its first frame is laid out
 * here, where it will be used. */
static void g_start(weft_proc *p, weft_g *g) {
    g->fresh = false;
    weft_gfree_stack_start(p, g);
    weft_ctx_init(&g->nat->ctx, g_entry, g);
}

/* ---- waking ------------------------------------------------------------- */

static void proc_notify(weft_proc *p) {
    if (atomic_load(&p->sleeping))
        ev_async_send(p->loop, &p->wake);
}

static void inbox_push(weft_proc *p, weft_g *g) {
    g->schedlink = NULL;
    weft_mutex_lock(&p->inboxlock);
    if (p->inboxtail)
        p->inboxtail->schedlink = g;
    else
        p->inboxhead = g;
    p->inboxtail = g;
    atomic_fetch_add(&p->inboxn, 1);
    weft_mutex_unlock(&p->inboxlock);
    proc_notify(p);
}

static void bound_push(weft_proc *p, weft_g *g, bool front) {
    g->schedlink = NULL;
    if (!p->boundhead) {
        p->boundhead = p->boundtail = g;
    } else if (front) {
        g->schedlink = p->boundhead;
        p->boundhead = g;
    } else {
        p->boundtail->schedlink = g;
        p->boundtail = g;
    }
    p->nbound++;
}

static weft_g *bound_pop(weft_proc *p) {
    weft_g *g = p->boundhead;
    if (g) {
        p->boundhead = g->schedlink;
        if (!p->boundhead)
            p->boundtail = NULL;
        g->schedlink = NULL;
        p->nbound--;
    }
    return g;
}

static void inbox_drain(weft_proc *p) {
    weft_mutex_lock(&p->inboxlock);
    weft_g *g = p->inboxhead;
    int n = 0;
    for (weft_g *x = g; x; x = x->schedlink)
        n++;
    p->inboxhead = p->inboxtail = NULL;
    atomic_fetch_sub(&p->inboxn, n);
    weft_mutex_unlock(&p->inboxlock);
    while (g) {
        weft_g *next = g->schedlink;
        bound_push(p, g, false);
        g = next;
    }
}

void weft_wakep(void) {
    /* Dekker with a spinner giving up: it decrements nspinning (a full
     * barrier) and then re-checks every run queue; we published work and now
     * read the counts. Without this fence our earlier store could become
     * visible after these loads, and both sides would miss each other. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load(&weft_S.npidle) == 0)
        return;
    int zero = 0;
    if (atomic_load(&weft_S.nspinning) != 0 ||
        !atomic_compare_exchange_strong(&weft_S.nspinning, &zero, 1))
        return;
    weft_mutex_lock(&weft_S.lock);
    weft_proc *p = weft_S.idlep;
    if (p) {
        /* The spinning credit travels with the removal from the idle list,
         * under the same lock: idle_leave() always collects it. */
        weft_S.idlep = p->idlelink;
        p->idlelink = NULL;
        atomic_store(&p->idle, 0);
        atomic_fetch_sub(&weft_S.npidle, 1);
        atomic_store(&p->wakespin, 1);
    }
    weft_mutex_unlock(&weft_S.lock);
    if (!p) {
        atomic_fetch_sub(&weft_S.nspinning, 1);
        return;
    }
    ev_async_send(p->loop, &p->wake);
}

void weft_ready(weft_g *g, bool next) {
    atomic_store_explicit(&g->state, WEFT_G_RUNNABLE, memory_order_release);
    weft_proc *p = weft_proc_self();
    if (g->bound) {
        if (g->bound == p)
            bound_push(p, g, next);
        else
            inbox_push(g->bound, g);
        return;
    }
    if (p)
        weft_runq_put(p, g, next);
    else
        weft_globrunq_put(g);
    weft_wakep();
}

/* ---- parking (native goroutines) ------------------------------------------ */

/* When a wait starts, to the watchdog's tick (10 ms). */
static int64_t wait_start(void) {
    int64_t t = atomic_load_explicit(&weft_S.ticknow, memory_order_relaxed);
    return t ? t : weft_coarse_now();
}

void weft_park(const char *reason, void (*unlockf)(void *), void *arg) {
    weft_proc *p = weft_proc_self();
    weft_g *g = p->curg;
    g->wait_reason = reason;
    g->wait_since = wait_start();
    g->nat->unlockf = unlockf;
    g->nat->unlockarg = arg;
    g->parkop = WEFT_PARK_WAIT;
    weft_ctx_switch(&g->nat->ctx, &p->g0, 0);
    /* Resumed, possibly on another processor: p is stale here. */
    g->wait_reason = NULL;
}

bool weft_is_native(weft_g *g) {
    return g && g->kind == WEFT_G_NATIVE;
}

void weft_park_hosted(weft_g *g, const char *reason) {
    g->wait_reason = reason;
    g->wait_since = wait_start();
    atomic_store_explicit(&g->state, WEFT_G_WAITING, memory_order_release);
}

void weft_park_forever(const char *reason) {
    for (;;)
        weft_park(reason, NULL, NULL);
}

void weft_yield(void) {
    weft_proc *p = weft_proc_self();
    if (!p || !p->curg || p->curg->kind != WEFT_G_NATIVE)
        return;
    weft_g *g = p->curg;
    g->parkop = WEFT_PARK_YIELD;
    weft_ctx_switch(&g->nat->ctx, &p->g0, 0);
}

static void engine_begin_stop(void);

static void g_entry(void *arg) {
    weft_g *g = arg;
    weft_gnative *n = g->nat;
    weft_ctx_entered(&n->ctx);
    g->fn(g->arg);
    weft_proc *p = weft_proc_self();
    g->parkop = WEFT_PARK_EXIT;
    weft_ctx_switch(&n->ctx, &p->g0, 1);
    abort(); /* a dead goroutine is never resumed */
}

/* ---- the scheduler loop ---------------------------------------------------- */

static void reset_spinning(weft_proc *p) {
    p->spinning = false;
    if (atomic_fetch_sub(&weft_S.nspinning, 1) == 1)
        weft_wakep();
}

/* g0, after a goroutine gave control back (a native one by switching to g0,
 * a hosted one by returning from the host's run hook). */
static void after_switch(weft_proc *p, weft_g *g) {
    bool native = g->kind == WEFT_G_NATIVE;
    switch (g->parkop) {
    case WEFT_PARK_WAIT:
        /* A hosted goroutine marked itself WAITING and released its locks
         * before returning (it may even be runnable again by now). */
        if (native) {
            atomic_store_explicit(&g->state, WEFT_G_WAITING, memory_order_release);
            if (g->nat->unlockf)
                g->nat->unlockf(g->nat->unlockarg);
        }
        break;
    case WEFT_PARK_YIELD:
        atomic_store_explicit(&g->state, WEFT_G_RUNNABLE, memory_order_relaxed);
        if (native)
            weft_runq_put(p, g, false);
        else
            bound_push(p, g, false);
        break;
    case WEFT_PARK_EXIT:
        if (g == weft_S.main_g)
            engine_begin_stop();
        if (!native)
            atomic_fetch_sub_explicit(&g->bound->nhosted, 1, memory_order_relaxed);
        atomic_store_explicit(&g->state, WEFT_G_DEAD, memory_order_relaxed);
        atomic_fetch_sub_explicit(&weft_S.ngoroutines, 1, memory_order_relaxed);
        if (native) {
            weft_gfree_stack_put(p, g->nat);
            g->nat = NULL;
        }
        weft_gfree_put(p, g);
        break;
    }
}

/* Placement of a portable hosted goroutine (an isolate) as it starts: the
 * processor with the fewest live hosted goroutines, this one on a tie. Once
 * started it stays in that processor's VM, so spreading them at start is
 * what lets N CPU-bound isolates use N processors, and a producer and its
 * consumer run side by side. */
static weft_proc *least_hosted(weft_proc *p) {
    weft_proc *best = p;
    int min = atomic_load_explicit(&p->nhosted, memory_order_relaxed);
    for (int i = 0; i < weft_S.nprocs && min > 0; i++) {
        weft_proc *v = weft_S.procs[i];
        int n = atomic_load_explicit(&v->nhosted, memory_order_relaxed);
        if (n < min)
            best = v, min = n;
    }
    return best;
}

static void bind_hosted(weft_g *g, weft_proc *p) {
    g->bound = p;
    atomic_fetch_add_explicit(&p->nhosted, 1, memory_order_relaxed);
}

static void execute(weft_proc *p, weft_g *g) {
    if (p->spinning)
        reset_spinning(p);
    if (g->kind == WEFT_G_HOSTED && !g->bound) {
        weft_proc *to = least_hosted(p);
        bind_hosted(g, to);
        if (to != p) {
            inbox_push(to, g); /* its own processor starts it */
            return;
        }
    }
    p->curg = g;
    atomic_store_explicit(&p->curgid, g->id, memory_order_relaxed);
    atomic_store_explicit(&p->running, 1, memory_order_relaxed);
    atomic_store_explicit(&g->state, WEFT_G_RUNNING, memory_order_relaxed);
    weft_stat_inc(&p->st_switches);
    if (g->kind == WEFT_G_NATIVE) {
        if (g->fresh)
            g_start(p, g);
        weft_ctx_switch(&p->g0, &g->nat->ctx, 0);
    } else
        weft_S.host.run(p, g);
    p->curg = NULL;
    atomic_store_explicit(&p->running, 0, memory_order_relaxed);
    after_switch(p, g);
}

static void check_timers(weft_proc *p) {
    int64_t t0 = atomic_load_explicit(&p->timer0, memory_order_relaxed);
    if (t0 == 0)
        return;
    int64_t now = weft_nanotime();
    if (now >= t0)
        weft_timers_run(p, now);
}

static weft_g *local_get(weft_proc *p) {
    weft_g *g;
    if (p->nbound && (p->schedtick & 1)) {
        if ((g = bound_pop(p)))
            return g;
    }
    if ((g = weft_runq_get(p)))
        return g;
    return bound_pop(p);
}

static bool global_nonempty(void) {
    return atomic_load_explicit(&weft_S.runqsize, memory_order_relaxed) > 0;
}

static weft_g *global_get(weft_proc *p, int max) {
    weft_mutex_lock(&weft_S.lock);
    weft_g *g = weft_globrunq_get(p, max);
    weft_mutex_unlock(&weft_S.lock);
    return g;
}

/* Four rounds over the other processors in a random order; the last round
 * may also take a victim's runnext. */
static weft_g *steal_work(weft_proc *p) {
    int n = weft_S.nprocs;
    for (int round = 0; round < 4; round++) {
        uint32_t start = weft_fastrandn((uint32_t)n);
        for (int i = 0; i < n; i++) {
            weft_proc *v = weft_S.procs[(start + (uint32_t)i) % (uint32_t)n];
            if (v == p)
                continue;
            if (atomic_load_explicit(&weft_S.state, memory_order_relaxed) != WEFT_SCHED_RUNNING)
                return NULL;
            weft_g *g = weft_runq_steal(p, v, round == 3);
            if (g) {
                uint32_t got = weft_runq_len(p) + 1;
                weft_stat_inc(&p->st_steals);
                atomic_store_explicit(&p->st_stolen,
                                      atomic_load_explicit(&p->st_stolen, memory_order_relaxed) + got,
                                      memory_order_relaxed);
                return g;
            }
        }
    }
    return NULL;
}

/* Takes p off the idle list if it is still there. Returns true if wakep()
 * took it off instead and counted it as spinning: the caller then owns that
 * spinning credit. */
static bool idle_leave(weft_proc *p) {
    weft_mutex_lock(&weft_S.lock);
    if (atomic_load(&p->idle)) {
        weft_proc **pp = &weft_S.idlep;
        while (*pp && *pp != p)
            pp = &(*pp)->idlelink;
        if (*pp) {
            *pp = p->idlelink;
            p->idlelink = NULL;
            atomic_fetch_sub(&weft_S.npidle, 1);
        }
        atomic_store(&p->idle, 0);
    }
    weft_mutex_unlock(&weft_S.lock);
    return atomic_exchange(&p->wakespin, 0) != 0;
}

static bool stopping(void) {
    return atomic_load_explicit(&weft_S.state, memory_order_acquire) != WEFT_SCHED_RUNNING;
}

static void proc_sleep(weft_proc *p) {
    atomic_store(&p->sleeping, 1);
    if (!stopping() && atomic_load(&p->inboxn) == 0 && !atomic_load(&p->wakespin)) {
        int64_t t0 = atomic_load(&p->timer0);
        if (t0) {
            ev_now_update(p->loop);
            double delay = (double)(t0 - weft_nanotime()) / 1e9;
            ev_timer_set(&p->alarm, delay > 0 ? delay : 0, 0.);
            ev_timer_start(p->loop, &p->alarm);
        }
        if (!t0 || t0 > weft_nanotime())
            ev_run(p->loop, EVRUN_ONCE);
        ev_timer_stop(p->loop, &p->alarm);
        weft_stat_inc(&p->st_wakeups);
    }
    atomic_store(&p->sleeping, 0);
    weft_io_flush(p); /* fd waits the loop finished (poll.c) */
}

/* idle_poll's window: it starts at POLL_START when work arrives within
 * POLL_MAX of going to sleep, doubles each time that happens again, up to
 * POLL_MAX, and halves (to 0 below POLL_START) after each sleep longer than
 * POLL_MAX. */
enum { POLL_START = 10000, POLL_MAX = 50000 };

/* Whether a P other than p has goroutines queued (in its runnext too, if
 * with_next). */
static bool others_queued(weft_proc *p, bool with_next) {
    for (int i = 0; i < weft_S.nprocs; i++) {
        weft_proc *v = weft_S.procs[i];
        if (v != p && (with_next ? !weft_runq_empty(v) : weft_runq_has_queued(v)))
            return true;
    }
    return false;
}

/* Work in other Ps' run queues that p, polling, should go and take. A
 * spinning P looks at their queues proper (not their runnext). A P that
 * polls without spinning looks only while no P spins, and then at runnext
 * too: wakep() wakes only idle Ps, so work readied meanwhile woke no one,
 * and no spinner will find it; p looks again and starts spinning. */
static bool others_have_work(weft_proc *p) {
    if (!p->spinning && atomic_load(&weft_S.nspinning) != 0)
        return false;
    return others_queued(p, !p->spinning);
}

/* Polls, without sleeping, for up to p->idlepoll ns, for what find_runnable
 * would find (other Ps' queues as others_have_work says).
 * True if something came (the caller looks again). */
static bool idle_poll(weft_proc *p) {
    if (p->idlepoll <= 0 || atomic_load(&weft_S.npidle) >= weft_S.nprocs - 1)
        return false; /* no other P is running: nothing would come soon */
    int64_t start = weft_nanotime();
    for (unsigned i = 1;; i++) {
        if (atomic_load_explicit(&p->inboxn, memory_order_relaxed) ||
            atomic_load_explicit(&p->diagreq, memory_order_relaxed) || global_nonempty() ||
            stopping())
            return true;
        if (i % 64 == 0) {
            int64_t now = weft_nanotime();
            int64_t t0 = atomic_load_explicit(&p->timer0, memory_order_relaxed);
            if ((t0 && t0 <= now) || others_have_work(p) || weft_io_poll(p))
                return true;
            if (now - start >= p->idlepoll)
                return false;
        }
        weft_cpu_relax();
    }
}

static void idle_poll_adapt(weft_proc *p, int64_t slept) {
    if (slept <= POLL_MAX) {
        if (p->idlepoll < POLL_MAX)
            p->idlepoll = p->idlepoll < POLL_START ? POLL_START : 2 * p->idlepoll;
        if (p->idlepoll > POLL_MAX)
            p->idlepoll = POLL_MAX;
    } else if (p->idlepoll > 0) {
        p->idlepoll /= 2;
        if (p->idlepoll < POLL_START)
            p->idlepoll = 0;
    }
}

/* Finds a goroutine to run, sleeping in the ev loop while there is none.
 * NULL when the engine stops. */
static weft_g *find_runnable(weft_proc *p) {
    weft_g *g;
top:
    if (stopping())
        return NULL;
    p->schedtick++;
    if (atomic_load_explicit(&p->diagreq, memory_order_relaxed))
        weft_diag_poll(p);
    check_timers(p);
    /* fd waiters (poll.c): a busy processor never sleeps in ev_run, so it
     * polls its loop without blocking now and then to wake them. */
    if (p->niowait && p->schedtick % 61 == 0)
        weft_io_poll(p);
    if (atomic_load_explicit(&p->inboxn, memory_order_relaxed))
        inbox_drain(p);
    if (p->schedtick % 61 == 0 && global_nonempty() && (g = global_get(p, 1)))
        return g;
    if ((g = local_get(p)))
        return g;
    if (global_nonempty() && (g = global_get(p, 0)))
        return g;
    /* Nothing local: fds that became ready wake their goroutines here. */
    if (weft_io_poll(p))
        goto top;

    if (weft_S.nprocs > 1 &&
        (p->spinning || 2 * atomic_load(&weft_S.nspinning) <
                            weft_S.nprocs - atomic_load(&weft_S.npidle))) {
        if (!p->spinning) {
            p->spinning = true;
            atomic_fetch_add(&weft_S.nspinning, 1);
        }
        if ((g = steal_work(p)))
            return g;
    }

    if (idle_poll(p))
        goto top;

    /* Nothing to do: go idle. */
    weft_mutex_lock(&weft_S.lock);
    if (stopping()) {
        weft_mutex_unlock(&weft_S.lock);
        return NULL;
    }
    if (global_nonempty()) {
        g = weft_globrunq_get(p, 0);
        weft_mutex_unlock(&weft_S.lock);
        if (g)
            return g;
        goto top;
    }
    p->idlelink = weft_S.idlep;
    weft_S.idlep = p;
    atomic_store(&p->idle, 1);
    atomic_fetch_add(&weft_S.npidle, 1);
    bool deadlock = weft_diag_deadlocked_locked();
    weft_mutex_unlock(&weft_S.lock);
    if (deadlock)
        weft_diag_deadlock();

    if (p->spinning) {
        p->spinning = false;
        atomic_fetch_sub(&weft_S.nspinning, 1);
    }
    /* Re-check: work readied while we were giving up must not wait. Its
     * waker saw nspinning > 0 (we were spinning) or npidle not counting us
     * (we were polling, or about to go idle), and woke no one; we counted
     * ourselves idle (a full barrier) before looking, and it published the
     * work before looking at the counts (weft_wakep), so one of us sees the
     * other. */
    if (others_queued(p, true)) {
        if (!idle_leave(p))
            atomic_fetch_add(&weft_S.nspinning, 1);
        p->spinning = true;
        goto top;
    }
    if (!global_nonempty()) {
        int64_t t = weft_nanotime();
        proc_sleep(p);
        idle_poll_adapt(p, weft_nanotime() - t);
    }
    if (idle_leave(p))
        p->spinning = true; /* wakep woke us and counted us as spinning */
    goto top;
}

static void schedule_loop(weft_proc *p) {
    weft_g *g;
    while ((g = find_runnable(p)))
        execute(p, g);
    if (p->spinning) {
        p->spinning = false;
        atomic_fetch_sub(&weft_S.nspinning, 1);
    }
}

/* A processor's thread after its scheduler loop. Goroutines may still be
 * queued on channels whose last references go as the host closes the
 * processor's VM: the channels' structs are kept until the teardown has
 * withdrawn them (chan.c). */
static void proc_stop(weft_proc *p) {
    weft_chan_hold_frees(true);
    if (weft_S.host.proc_stop)
        weft_S.host.proc_stop(p);
}

static void *proc_thread(void *arg) {
    weft_proc *p = arg;
    tls_proc = p;
    weft_ctx_init_thread(&p->g0);
    if (weft_S.host.proc_start)
        weft_S.host.proc_start(p);
    schedule_loop(p);
    proc_stop(p);
    tls_proc = NULL;
    return NULL;
}

/* ---- engine lifecycle ------------------------------------------------------ */

static int env_int(const char *name, long lo, long hi, long dflt) {
    const char *s = getenv(name);
    if (!s || !*s)
        return (int)dflt;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) {
        fprintf(stderr, "weft: ignoring %s=%s (want a number from %ld to %ld)\n", name, s, lo, hi);
        return (int)dflt;
    }
    return (int)v;
}

static void procs_free(void) {
    for (int i = 0; i < weft_S.nprocs; i++) {
        weft_proc *p = weft_S.procs ? weft_S.procs[i] : NULL;
        if (!p)
            continue;
        weft_timers_teardown(p);
        weft_gfree_proc_teardown(p);
        if (p->loop) {
            ev_async_stop(p->loop, &p->wake);
            ev_loop_destroy(p->loop);
        }
        free(p);
    }
    free(weft_S.procs);
    weft_S.procs = NULL;
    weft_S.nprocs = 0;
}

static int engine_init(const weft_config *cfg) {
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1)
        ncpu = 1;
    int n = cfg && cfg->procs > 0 ? cfg->procs : env_int("WEFT_PROCS", 1, WEFT_MAX_PROCS, ncpu);
    if (n > WEFT_MAX_PROCS)
        n = WEFT_MAX_PROCS;
    size_t dflt_stack = 64 * 1024;
#if WEFT_ASAN
    dflt_stack = 256 * 1024; /* instrumented frames are larger */
#endif
    size_t ss = cfg && cfg->stack_size
                    ? cfg->stack_size
                    : (size_t)env_int("WEFT_STACK_SIZE", 16 * 1024, 1 << 30, (long)dflt_stack);

    weft_mutex_init(&weft_S.lock);
    weft_mutex_init(&weft_S.alllock);
    weft_S.runqhead = weft_S.runqtail = NULL;
    atomic_store(&weft_S.runqsize, 0);
    weft_S.idlep = NULL;
    atomic_store(&weft_S.npidle, 0);
    atomic_store(&weft_S.nspinning, 0);
    weft_S.gfree = NULL;
    weft_S.ngfree = 0;
    weft_S.capgfree = 0;
    atomic_store(&weft_S.nsfree, 0);
    atomic_store(&weft_S.ngoroutines, 0);
    atomic_store(&weft_S.goidgen, 0); /* main is goroutine 1, as in Go */
    atomic_store(&weft_S.npollwait, 0);
    weft_S.main_g = NULL;
    weft_S.stack_size = ss;
    weft_S.procs = calloc((size_t)n, sizeof *weft_S.procs);
    if (!weft_S.procs)
        return WEFT_ENOMEM;
    weft_S.nprocs = n;
    uint64_t seed = (uint64_t)weft_nanotime() ^ ((uint64_t)getpid() << 32);
    for (int i = 0; i < n; i++) {
        weft_proc *p = aligned_alloc(WEFT_CACHE_LINE, sizeof *p); /* see struct weft_proc */
        if (!p)
            goto fail;
        memset(p, 0, sizeof *p);
        weft_S.procs[i] = p;
        p->id = i;
        p->rng = (seed + (uint64_t)i * 0x9E3779B97F4A7C15ull) | 1;
        weft_mutex_init(&p->inboxlock);
        weft_mutex_init(&p->tlock);
        p->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
        if (!p->loop)
            goto fail;
        ev_async_init(&p->wake, (void (*)(struct ev_loop *, ev_async *, int))nothing_cb);
        ev_async_start(p->loop, &p->wake);
        ev_timer_init(&p->alarm, (void (*)(struct ev_loop *, ev_timer *, int))nothing_cb, 0., 0.);
    }
    return WEFT_OK;
fail:
    procs_free();
    return WEFT_ENOMEM;
}

static void engine_begin_stop(void) {
    int running = WEFT_SCHED_RUNNING;
    if (!atomic_compare_exchange_strong(&weft_S.state, &running, WEFT_SCHED_STOPPING))
        return;
    for (int i = 0; i < weft_S.nprocs; i++)
        ev_async_send(weft_S.procs[i]->loop, &weft_S.procs[i]->wake);
}

/* After every processor stopped: withdraw the waits of goroutines that are
 * still parked (channels outlive the engine), then free everything. */
static void engine_teardown(void) {
    weft_diag_stop();
    for (int i = 0; i < weft_S.nprocs; i++)
        weft_timers_teardown(weft_S.procs[i]);
    for (size_t i = 0; i < weft_S.nallgs; i++) {
        weft_g *g = weft_S.allgs[i];
        int st = atomic_load(&g->state);
        bool alive = st != WEFT_G_IDLE && st != WEFT_G_DEAD;
        for (int k = 0; alive && k < g->nwaiting; k++) {
            if (g->waiting[k].sema)
                weft_sema_withdraw(&g->waiting[k]);
            else
                weft_waiter_withdraw(&g->waiting[k]);
        }
        weft_io_teardown(g); /* its watchers, before the loops go */
        if (alive && g->kind == WEFT_G_HOSTED && g->host && weft_S.host.discard)
            weft_S.host.discard(g);
        if (g->nat)
            weft_gfree_stack_destroy(g->nat);
        free(g->sleept);
        free(g->wbuf); /* the struct itself goes with its block (gfree.c) */
    }
    weft_chan_hold_frees(false);
    free(weft_S.allgs);
    weft_S.allgs = NULL;
    weft_S.nallgs = weft_S.capallgs = 0;
    weft_gfree_teardown();
    procs_free();
    atomic_store(&weft_S.ngoroutines, 0);
}

static int start_threads(int first) {
    for (int i = first; i < weft_S.nprocs; i++) {
        weft_proc *p = weft_S.procs[i];
        if (pthread_create(&p->thread, NULL, proc_thread, p) != 0) {
            engine_begin_stop();
            return WEFT_ENOMEM;
        }
        p->has_thread = true;
    }
    return WEFT_OK;
}

static void join_threads(void) {
    for (int i = 0; i < weft_S.nprocs; i++) {
        weft_proc *p = weft_S.procs[i];
        if (p->has_thread) {
            pthread_join(p->thread, NULL);
            p->has_thread = false;
        }
    }
}

static int engine_claim(void) {
    int stopped = WEFT_SCHED_STOPPED;
    if (!atomic_compare_exchange_strong(&weft_S.state, &stopped, WEFT_SCHED_RUNNING))
        return 0;
    atomic_store(&weft_S.ticknow, 0); /* no tick yet in this run */
    return 1;
}

/* weft_run and weft_run_hosted: the calling thread becomes processor 0 and
 * runs the scheduler until the main goroutine exits. */
static int run_main(const weft_config *cfg, const weft_host *host, void (*main_fn)(void *),
                    void *arg) {
    if (!engine_claim())
        return WEFT_ESTATE;
    int rc = engine_init(cfg);
    if (rc != WEFT_OK) {
        atomic_store(&weft_S.state, WEFT_SCHED_STOPPED);
        return rc;
    }
    if (host)
        weft_S.host = *host;
    else
        memset(&weft_S.host, 0, sizeof weft_S.host);
    weft_proc *p0 = weft_S.procs[0];
    weft_g *g = g_new(p0, host ? WEFT_G_HOSTED : WEFT_G_NATIVE, main_fn, arg);
    if (!g) {
        engine_teardown();
        atomic_store(&weft_S.state, WEFT_SCHED_STOPPED);
        return WEFT_ENOMEM;
    }
    weft_S.main_g = g;
    if (host) {
        g->host = arg;
        bind_hosted(g, p0);
        bound_push(p0, g, false);
    } else {
        weft_runq_put(p0, g, true);
    }
    tls_proc = p0;
    if (weft_S.host.proc_start)
        weft_S.host.proc_start(p0);
    weft_diag_start();
    rc = start_threads(1);
    if (rc != WEFT_OK && host)
        g->host = NULL; /* main never runs: its host data is the caller's again */
    weft_ctx_init_thread(&p0->g0);
    schedule_loop(p0);
    proc_stop(p0);
    tls_proc = NULL;
    join_threads();
    engine_teardown();
    if (rc == WEFT_OK && !host && weft_diag_was_deadlock())
        rc = WEFT_EDEADLOCK;
    atomic_store(&weft_S.state, WEFT_SCHED_STOPPED);
    return rc;
}

int weft_run(const weft_config *cfg, void (*main_fn)(void *), void *arg) {
    if (!main_fn)
        return WEFT_EINVAL;
    if (weft_g_self()) {
        main_fn(arg);
        return WEFT_OK;
    }
    return run_main(cfg, NULL, main_fn, arg);
}

int weft_run_hosted(const weft_config *cfg, const weft_host *host, void *main_host) {
    if (!host || !host->run)
        return WEFT_EINVAL;
    if (weft_g_self())
        return WEFT_ESTATE; /* the host runs main itself when nested */
    return run_main(cfg, host, NULL, main_host);
}

void weft_shutdown(void) {
    engine_begin_stop();
}

int weft_start(const weft_config *cfg) {
    if (!engine_claim())
        return WEFT_ESTATE;
    int rc = engine_init(cfg);
    if (rc == WEFT_OK) {
        weft_diag_start();
        rc = start_threads(0);
    }
    if (rc != WEFT_OK) {
        engine_begin_stop();
        if (weft_S.procs) {
            join_threads();
            engine_teardown();
        }
        atomic_store(&weft_S.state, WEFT_SCHED_STOPPED);
    }
    return rc;
}

int weft_stop(void) {
    if (weft_proc_self())
        return WEFT_ESTATE;
    if (atomic_load(&weft_S.state) == WEFT_SCHED_STOPPED)
        return WEFT_ESTATE;
    engine_begin_stop();
    join_threads();
    engine_teardown();
    atomic_store(&weft_S.state, WEFT_SCHED_STOPPED);
    return WEFT_OK;
}

int weft_wait_idle(double timeout) {
    int64_t deadline = timeout < 0 ? INT64_MAX : weft_nanotime() + (int64_t)(timeout * 1e9);
    while (atomic_load(&weft_S.ngoroutines) > 0) {
        if (weft_nanotime() >= deadline)
            return 0;
        struct timespec ts = {0, 200 * 1000};
        nanosleep(&ts, NULL);
    }
    return 1;
}

/* ---- goroutine API --------------------------------------------------------- */

/* Queues a new goroutine that any processor may run (p: the current one, or
 * NULL from a thread that is none) and wakes an idle processor; its id. */
static int64_t queue_portable(weft_proc *p, weft_g *g, bool next) {
    int64_t id = g->id;
    if (p)
        weft_runq_put(p, g, next);
    else
        weft_globrunq_put(g);
    weft_wakep();
    return id;
}

int64_t weft_go(void (*fn)(void *), void *arg) {
    if (!fn)
        return WEFT_EINVAL;
    if (atomic_load(&weft_S.state) != WEFT_SCHED_RUNNING)
        return WEFT_ESTATE;
    weft_proc *p = weft_proc_self();
    weft_g *g = g_new(p, WEFT_G_NATIVE, fn, arg);
    if (!g)
        return WEFT_ENOMEM;
    return queue_portable(p, g, true);
}

int64_t weft_go_hosted(void *host) {
    if (atomic_load(&weft_S.state) != WEFT_SCHED_RUNNING || !weft_S.host.run)
        return WEFT_ESTATE;
    weft_proc *p = weft_proc_self();
    weft_proc *home = p ? p : weft_S.procs[0];
    weft_g *g = g_new(p, WEFT_G_HOSTED, NULL, NULL);
    if (!g)
        return WEFT_ENOMEM;
    g->host = host;
    bind_hosted(g, home);
    int64_t id = g->id;
    weft_ready(g, false);
    return id;
}

int64_t weft_go_hosted_portable(void *host) {
    if (atomic_load(&weft_S.state) != WEFT_SCHED_RUNNING || !weft_S.host.run)
        return WEFT_ESTATE;
    weft_proc *p = weft_proc_self();
    weft_g *g = g_new(p, WEFT_G_HOSTED, NULL, NULL);
    if (!g)
        return WEFT_ENOMEM;
    g->host = host;
    g->bound = NULL;
    return queue_portable(p, g, false);
}

int weft_sleep_prepare(void) {
    weft_g *g = weft_g_self();
    return g ? weft_timer_sleep_prepare(g) : WEFT_ENOTG;
}

int weft_sleep_start(int64_t ns) {
    weft_g *g = weft_g_self();
    if (!g)
        return WEFT_ENOTG;
    if (ns <= 0)
        return WEFT_OK;
    if (weft_timer_sleep_prepare(g) != WEFT_OK)
        return WEFT_ENOMEM;
    weft_timer_sleep_arm(g, weft_nanotime() + ns);
    weft_park_hosted(g, "sleep");
    return WEFT_PENDING;
}

void weft_sleep_ns(int64_t ns) {
    weft_g *g = weft_g_self();
    if (!g || g->kind != WEFT_G_NATIVE)
        return;
    if (ns <= 0) {
        weft_yield();
        return;
    }
    int64_t when = weft_nanotime() + ns;
    if (weft_timer_sleep_prepare(g) != WEFT_OK) {
        while (weft_nanotime() < when) /* no memory for a timer: wait by yielding */
            weft_yield();
        return;
    }
    weft_timer_sleep_arm(g, when);
    weft_park("sleep", NULL, NULL);
}

void weft_sleep(double seconds) {
    if (seconds != seconds) /* NaN */
        return;
    if (seconds > 9e9)
        seconds = 9e9;
    weft_sleep_ns((int64_t)(seconds * 1e9));
}

int64_t weft_id(void) {
    weft_g *g = weft_g_self();
    return g ? g->id : 0;
}

int64_t weft_count(void) {
    return atomic_load_explicit(&weft_S.ngoroutines, memory_order_relaxed);
}

int weft_procs(void) {
    return atomic_load(&weft_S.state) == WEFT_SCHED_STOPPED ? 0 : weft_S.nprocs;
}

int weft_proc_id(void) {
    weft_proc *p = weft_proc_self();
    return p ? p->id : -1;
}

/* ---- statistics ------------------------------------------------------------ */

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

int weft_proc_stats_get(int proc, weft_proc_stats *out) {
    if (atomic_load(&weft_S.state) == WEFT_SCHED_STOPPED)
        return WEFT_ESTATE;
    if (!out || proc < 0 || proc >= weft_S.nprocs)
        return WEFT_EINVAL;
    weft_proc *p = weft_S.procs[proc];
    out->switches = LOAD(p->st_switches);
    out->steals = LOAD(p->st_steals);
    out->stolen = LOAD(p->st_stolen);
    out->wakeups = LOAD(p->st_wakeups);
    out->timers_fired = LOAD(p->st_timers);
    out->runq = weft_runq_len(p);
    weft_mutex_lock(&p->tlock);
    out->timers = (uint32_t)p->tlen;
    weft_mutex_unlock(&p->tlock);
    return WEFT_OK;
}

int weft_stats_get(weft_stats *out) {
    if (atomic_load(&weft_S.state) == WEFT_SCHED_STOPPED)
        return WEFT_ESTATE;
    if (!out)
        return WEFT_EINVAL;
    memset(out, 0, sizeof *out);
    out->goroutines = weft_count();
    out->procs = weft_S.nprocs;
    for (int i = 0; i < weft_S.nprocs; i++) {
        weft_proc *p = weft_S.procs[i];
        out->switches += LOAD(p->st_switches);
        out->steals += LOAD(p->st_steals);
        out->stolen += LOAD(p->st_stolen);
        out->chan_ops += LOAD(p->st_chanops);
        out->timers_fired += LOAD(p->st_timers);
    }
    out->global_runq = (uint32_t)atomic_load(&weft_S.runqsize);
    out->idle_procs = atomic_load(&weft_S.npidle);
    out->spinning = atomic_load(&weft_S.nspinning);
    return WEFT_OK;
}
