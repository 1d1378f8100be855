/*
 * diag.c — goroutine dumps and deadlock detection.
 *
 * Requests to processors. A Lua goroutine's stack can only be read by its
 * own processor's thread, between two goroutine runs (DESIGN rule 1). A
 * request (weft_diag_onall) is posted in each processor's p->diagreq and
 * announced with its ev_async; the processor answers it at the top of its
 * scheduler loop (weft_diag_poll), also when it was sleeping. The caller
 * answers for its own processor at once, waits at most REQ_WAIT_NS for the
 * others, then withdraws the request from those that did not take it (they
 * are busy in a goroutine that does not yield) and waits for those that
 * took it to finish (they are between runs: soon).
 *
 * Invariants and lock order: one request at a time (reqlock, taken before
 * sched.lock and alllock; a processor waiting for reqlock keeps answering
 * requests meanwhile, so two processors asking at once cannot wait for each
 * other). `live` (under reqlock) is true between weft_diag_start and
 * weft_diag_stop: teardown takes reqlock, so no request is under way when
 * goroutine structs and loops are freed. Goroutine structs are never freed
 * while the engine runs (allgs), so a snapshot of allgs may be read without
 * locks; the states read are racy by nature and only reported.
 *
 * Deadlock: checked under sched.lock by the processor whose going idle made
 * every processor idle: no processor running, nothing in any run queue,
 * inbox or the global queue, no timer pending, no goroutine parked on an fd
 * (npollwait), no goroutine RUNNABLE or RUNNING, and a main goroutine (an
 * engine started with weft_start is driven by outside threads). Nothing but
 * a processor can make a goroutine runnable then, so nothing ever will. It
 * is reported once (`reported`), with a dump, and the engine stops.
 */
#include "diag.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

weft_diag_hooks weft_diag_host;

enum { REQ_WAIT_NS = 250 * 1000 * 1000 };

static weft_mutex reqlock = WEFT_MUTEX_INIT;
static bool live;               /* reqlock */
static atomic_int reported;     /* a deadlock was reported */

typedef struct diag_req {
    void (*fn)(weft_proc *p, void *arg);
    void *arg;
    bool *answered;
    atomic_int pending; /* posted and not yet withdrawn or answered */
} diag_req;

/* ---- text buffers ------------------------------------------------------------ */

static bool dbuf_room(weft_dbuf *b, size_t n) {
    if (b->len + n + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
        cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s)
        return false;
    b->s = s;
    b->cap = cap;
    return true;
}

void weft_dbuf_printf(weft_dbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !dbuf_room(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void weft_dbuf_puts(weft_dbuf *b, const char *s) {
    size_t n = strlen(s);
    if (!dbuf_room(b, n))
        return;
    memcpy(b->s + b->len, s, n + 1);
    b->len += n;
}

char *weft_dbuf_take(weft_dbuf *b) {
    char *s = b->s ? b->s : calloc(1, 1);
    b->s = NULL;
    b->len = b->cap = 0;
    return s;
}

static void nap(long ns) {
    struct timespec ts = {0, ns};
    nanosleep(&ts, NULL);
}

/* ---- requests to processors -------------------------------------------------- */

void weft_diag_poll(weft_proc *p) {
    diag_req *r = atomic_exchange(&p->diagreq, NULL);
    if (!r)
        return;
    r->fn(p, r->arg);
    r->answered[p->id] = true;
    atomic_fetch_sub_explicit(&r->pending, 1, memory_order_release);
}

/* Takes reqlock; a processor answers requests while it waits. */
static void req_lock(weft_proc *self) {
    while (!weft_mutex_trylock(&reqlock)) {
        if (self)
            weft_diag_poll(self);
        nap(100 * 1000);
    }
}

/* weft_diag_onall with reqlock held and the engine live. */
static void onall_locked(weft_proc *self, void (*fn)(weft_proc *, void *), void *arg,
                         bool *answered) {
    diag_req r = {fn, arg, answered, 0};
    int n = weft_S.nprocs;
    bool posted[WEFT_MAX_PROCS] = {false};
    int64_t now = weft_coarse_now();
    for (int i = 0; i < n; i++) {
        weft_proc *p = weft_S.procs[i];
        answered[i] = false;
        int64_t gid, since = weft_diag_longrun(i, &gid);
        if (p == self || (since && now - since > REQ_WAIT_NS))
            continue; /* busy for a while already: it would not answer */
        posted[i] = true;
        atomic_fetch_add(&r.pending, 1);
        atomic_store(&p->diagreq, &r);
        ev_async_send(p->loop, &p->wake);
    }
    if (self) {
        fn(self, arg);
        answered[self->id] = true;
    }
    int64_t deadline = weft_nanotime() + REQ_WAIT_NS;
    while (atomic_load_explicit(&r.pending, memory_order_acquire) > 0 &&
           weft_nanotime() < deadline)
        nap(50 * 1000);
    for (int i = 0; i < n; i++) {
        void *expect = &r;
        if (posted[i] && atomic_compare_exchange_strong(&weft_S.procs[i]->diagreq, &expect, NULL))
            atomic_fetch_sub(&r.pending, 1); /* never taken */
    }
    while (atomic_load_explicit(&r.pending, memory_order_acquire) > 0)
        nap(20 * 1000); /* taken: being answered between two runs */
}

bool weft_diag_onall(void (*fn)(weft_proc *p, void *arg), void *arg, bool *answered) {
    weft_proc *self = weft_proc_self();
    req_lock(self);
    bool ok = live;
    if (ok)
        onall_locked(self, fn, arg, answered);
    weft_mutex_unlock(&reqlock);
    return ok;
}

/* ---- goroutine states -------------------------------------------------------- */

/* Acquire: a parked goroutine's wait reason and time were written before
 * its state became WAITING (with release). */
const char *weft_diag_state(weft_g *g) {
    switch (atomic_load_explicit(&g->state, memory_order_acquire)) {
    case WEFT_G_RUNNING:
        return "running";
    case WEFT_G_RUNNABLE:
        return "runnable";
    case WEFT_G_WAITING: {
        const char *r = g->wait_reason;
        return r ? r : "waiting";
    }
    case WEFT_G_DEAD:
        return "dead";
    default:
        return "idle";
    }
}

static bool g_alive(weft_g *g) {
    int st = atomic_load_explicit(&g->state, memory_order_relaxed);
    return st != WEFT_G_IDLE && st != WEFT_G_DEAD;
}

void weft_diag_gcounts(int64_t counts[5]) {
    memset(counts, 0, 5 * sizeof *counts);
    weft_mutex_lock(&weft_S.alllock);
    for (size_t i = 0; i < weft_S.nallgs; i++) {
        int st = atomic_load_explicit(&weft_S.allgs[i]->state, memory_order_relaxed);
        if (st >= 0 && st < 5)
            counts[st]++;
    }
    weft_mutex_unlock(&weft_S.alllock);
}

/* ---- dumps ------------------------------------------------------------------------ */

typedef struct dump_ctx {
    weft_g **gs;
    char **texts;
    size_t n;
    weft_g *self;
    int64_t now;
} dump_ctx;

static void header(weft_dbuf *b, weft_g *g, const char *state, int64_t secs) {
    if (secs >= 1)
        weft_dbuf_printf(b, "goroutine %lld [%s, %llds]:\n", (long long)g->id, state,
                         (long long)secs);
    else
        weft_dbuf_printf(b, "goroutine %lld [%s]:\n", (long long)g->id, state);
}

static void std_header(weft_dbuf *b, weft_g *g, int64_t now) {
    int64_t secs = 0;
    if (atomic_load_explicit(&g->state, memory_order_acquire) == WEFT_G_WAITING)
        secs = (now - g->wait_since) / 1000000000;
    header(b, g, weft_diag_state(g), secs);
}

/* On processor p's thread: the entries of the Lua goroutines bound to p. */
static void dump_proc(weft_proc *p, void *arg) {
    dump_ctx *d = arg;
    for (size_t i = 0; i < d->n; i++) {
        weft_g *g = d->gs[i];
        if (g->kind != WEFT_G_HOSTED || g->bound != p || !g_alive(g) || !g->host)
            continue;
        weft_dbuf b = {0};
        bool self = g == d->self;
        if (self)
            header(&b, g, "running", 0);
        else
            std_header(&b, g, d->now);
        if (weft_diag_host.describe)
            weft_diag_host.describe(g, self, &b);
        d->texts[i] = weft_dbuf_take(&b);
    }
}

/* An entry the processors did not give: native goroutines, isolates not
 * started, goroutines of a processor that did not answer. */
static char *other_entry(weft_g *g, int64_t now) {
    weft_dbuf b = {0};
    weft_proc *p = g->bound;
    int64_t gid = 0, since = p ? weft_diag_longrun(p->id, &gid) : 0;
    bool running = atomic_load_explicit(&g->state, memory_order_relaxed) == WEFT_G_RUNNING;
    if (g->kind == WEFT_G_NATIVE) {
        std_header(&b, g, now);
        weft_dbuf_puts(&b, "\t(native goroutine: C code, no Lua traceback)\n");
    } else if (!p) {
        std_header(&b, g, now);
        weft_dbuf_puts(&b, "\t(isolate not started yet)\n");
    } else if (running && p->curgid == g->id) {
        int64_t ran = since && gid == g->id ? weft_coarse_now() - since : 0;
        if (ran < 0)
            ran = 0;
        header(&b, g, "running", ran / 1000000000);
        weft_dbuf_printf(&b,
                         "\t(running on processor %d for %.2fs without yielding: the stack of a "
                         "running Lua goroutine cannot be read)\n",
                         p->id, (double)ran / 1e9);
        if (weft_diag_host.label && weft_S.host.run)
            weft_diag_host.label(p, g->id, &b);
    } else {
        std_header(&b, g, now);
        weft_dbuf_printf(&b,
                         "\t(stack not available: processor %d is busy running goroutine %lld)\n",
                         p->id, (long long)atomic_load(&p->curgid));
    }
    if (g->kind == WEFT_G_NATIVE && g != weft_S.main_g)
        weft_dbuf_printf(&b, "created by native code in goroutine %lld\n",
                         (long long)g->parent_id);
    return weft_dbuf_take(&b);
}

static int by_id(const void *a, const void *b) {
    int64_t x = (*(weft_g *const *)a)->id, y = (*(weft_g *const *)b)->id;
    return (x > y) - (x < y);
}

char *weft_diag_dump(int64_t exclude) {
    weft_proc *self = weft_proc_self();
    req_lock(self);
    if (!live) {
        weft_mutex_unlock(&reqlock);
        return NULL;
    }
    dump_ctx d = {0};
    weft_mutex_lock(&weft_S.alllock);
    d.gs = malloc((weft_S.nallgs + 1) * sizeof *d.gs);
    for (size_t i = 0; d.gs && i < weft_S.nallgs; i++)
        if (g_alive(weft_S.allgs[i]) && weft_S.allgs[i]->id != exclude)
            d.gs[d.n++] = weft_S.allgs[i];
    weft_mutex_unlock(&weft_S.alllock);
    d.texts = calloc(d.n + 1, sizeof *d.texts);
    weft_dbuf out = {0};
    if (d.gs && d.texts) {
        qsort(d.gs, d.n, sizeof *d.gs, by_id);
        d.self = self ? self->curg : NULL;
        d.now = weft_coarse_now();
        bool answered[WEFT_MAX_PROCS];
        if (weft_S.host.run)
            onall_locked(self, dump_proc, &d, answered);
        for (size_t i = 0; i < d.n; i++) {
            if (!d.texts[i])
                d.texts[i] = other_entry(d.gs[i], d.now);
            weft_dbuf_puts(&out, d.texts[i]);
            if (i + 1 < d.n)
                weft_dbuf_puts(&out, "\n");
            free(d.texts[i]);
        }
    }
    weft_mutex_unlock(&reqlock);
    free(d.gs);
    free(d.texts);
    return weft_dbuf_take(&out);
}

/* ---- deadlock ------------------------------------------------------------------------ */

bool weft_diag_deadlocked_locked(void) {
    if (!weft_S.main_g || atomic_load(&reported) ||
        atomic_load(&weft_S.state) != WEFT_SCHED_RUNNING)
        return false;
    if (atomic_load(&weft_S.npidle) != weft_S.nprocs || weft_S.runqhead ||
        atomic_load(&weft_S.npollwait) != 0)
        return false;
    for (int i = 0; i < weft_S.nprocs; i++) {
        weft_proc *p = weft_S.procs[i];
        if (atomic_load(&p->running) || !weft_runq_empty(p) || atomic_load(&p->inboxn) ||
            atomic_load(&p->timer0) || atomic_load(&p->diagreq))
            return false;
    }
    int64_t counts[5];
    weft_diag_gcounts(counts);
    if (counts[WEFT_G_RUNNABLE] || counts[WEFT_G_RUNNING])
        return false;
    atomic_store(&reported, 1);
    return true;
}

void weft_diag_deadlock(void) {
    char *dump = weft_diag_dump(0);
    weft_dbuf b = {0};
    weft_dbuf_puts(&b, "fatal error: all goroutines are asleep - deadlock!\n\n");
    weft_dbuf_puts(&b, dump ? dump : "");
    free(dump);
    char *msg = weft_dbuf_take(&b);
    if (weft_diag_host.fail && weft_S.host.run) {
        weft_diag_host.fail(msg);
    } else {
        fprintf(stderr, "%s\n", msg);
        free(msg);
        weft_shutdown();
    }
}

bool weft_diag_was_deadlock(void) {
    return atomic_load(&reported) != 0;
}

/* ---- lifecycle ------------------------------------------------------------------------ */

void weft_diag_start(void) {
    atomic_store(&reported, 0);
    weft_mutex_lock(&reqlock);
    live = true;
    weft_mutex_unlock(&reqlock);
    weft_sysmon_start();
}

void weft_diag_stop(void) {
    weft_sysmon_stop();
    weft_mutex_lock(&reqlock);
    live = false;
    weft_mutex_unlock(&reqlock);
}
