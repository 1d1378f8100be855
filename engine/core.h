/*
 * core.h — the engine's internal objects: goroutines (G), processors (P),
 * waiter records, timers and the scheduler singleton. Only engine/ and
 * bindings/ include this; users see weft.h.
 *
 * The protocols that use these objects are described where they live:
 * proc.c (scheduling, parking, stealing), runq.c (run queues), chan.c and
 * select.c (channels), timer.c (timers).
 */
#ifndef WEFT_CORE_H
#define WEFT_CORE_H

#include "ctx.h"
#include "lock.h"
#include "stack.h"
#include "weft.h"

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct weft_proc weft_proc;
typedef struct weft_g weft_g;
typedef struct weft_waiter weft_waiter;

#define WEFT_RUNQ_SIZE 256 /* local run queue ring; a power of two */
#define WEFT_GFREE_LOCAL 128 /* free goroutines a processor keeps; even */
#define WEFT_SHOT_LOCAL 16    /* free native stacks a processor last ran on; even */
#define WEFT_SCOLD_LOCAL 128  /* other free native stacks a processor keeps; even */
#define WEFT_SFREE_GLOBAL 4096 /* free native stacks kept globally */
#define WEFT_MAX_PROCS 256
#define WEFT_CACHE_LINE 64 /* assumed for layout (x86-64 and most arm64 cores) */

/* ---- goroutines ---------------------------------------------------------- */

enum weft_gstate {
    WEFT_G_IDLE,     /* on a free list */
    WEFT_G_RUNNABLE, /* in a run queue, an inbox, or about to be */
    WEFT_G_RUNNING,  /* a processor is executing it */
    WEFT_G_WAITING,  /* parked: something must weft_ready() it */
    WEFT_G_DEAD
};

enum weft_gkind {
    WEFT_G_NATIVE, /* C code on its own stack; runs on any processor */
    WEFT_G_HOSTED  /* run by the host (a Lua coroutine); bound to one processor */
};

/* What a native goroutine asks its processor's scheduler context to do
 * after switching to it. */
enum weft_parkop { WEFT_PARK_WAIT, WEFT_PARK_YIELD, WEFT_PARK_EXIT };

/* A goroutine waiting on a channel (Go's sudog). It lives in its goroutine
 * (g->w1 for a single operation, g->wbuf for select) and is linked into a
 * channel's send or receive queue under that channel's lock. */
struct weft_waiter {
    weft_g *g;
    weft_chan *c;
    weft_sema *sema;          /* or the semaphore it waits on (sema.c; val.u.i: units) */
    weft_waiter *next, *prev; /* channel queue links (c->lock) */
    weft_val val;             /* send: the value offered; recv: the value received */
    int case_index;           /* select: the case it stands for */
    int dir;                  /* WEFT_CASE_SEND or WEFT_CASE_RECV: which queue */
    bool is_select;           /* must win g->selectdone before being woken */
    bool queued;              /* linked in c's queue (c->lock) */
    bool success;             /* set by the waker: communicated (true) or closed (false) */
    bool retry;               /* select: won, but the buffer was taken meanwhile: select again */
};

/* A FIFO of waiters, linked through next/prev (a channel's send or receive
 * queue, a semaphore's queue). The owner's lock protects it; whether a
 * queued waiter holds a reference on the owner is the owner's rule (a
 * semaphore's do, a channel's do not: chan.c). */
typedef struct weft_waitq {
    weft_waiter *first, *last;
} weft_waitq;

static inline void weft_waitq_push(weft_waitq *q, weft_waiter *w) {
    w->next = NULL;
    w->prev = q->last;
    if (q->last)
        q->last->next = w;
    else
        q->first = w;
    q->last = w;
    w->queued = true;
}

static inline void weft_waitq_remove(weft_waitq *q, weft_waiter *w) {
    if (w->prev)
        w->prev->next = w->next;
    else
        q->first = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        q->last = w->prev;
    w->next = w->prev = NULL;
    w->queued = false;
}

/* ---- timers -------------------------------------------------------------- */

enum weft_timer_kind {
    WEFT_TIMER_SLEEP,  /* wakes t->g; embedded in the goroutine */
    WEFT_TIMER_CHAN,   /* one-shot: sends now() to t->c (t holds a reference) */
    WEFT_TIMER_TICKER, /* periodic: sends now() to t->c, drops ticks when full */
    WEFT_TIMER_AFTER,  /* one-shot for weft_after: t->c is weak (the channel owns t) */
    WEFT_TIMER_FUNC    /* runs fn(arg) in a new goroutine */
};

struct weft_timer {
    weft_mutex mu;                /* armed, when, period, c (see timer.c) */
    atomic_int refs;              /* owners: user, channel, heap entries, firings */
    int kind;
    bool armed;                   /* mu: will deliver once due */
    int64_t when, period;         /* mu: ns on weft_nanotime()'s clock */
    weft_chan *c;                 /* mu */
    weft_g *g;                    /* SLEEP */
    void (*fn)(void *);           /* FUNC */
    void *arg;
    _Atomic(weft_proc *) p;       /* heap it is in, NULL if none (that heap's lock) */
    int idx;                      /* index in p's heap (p->tlock) */
};

typedef struct weft_theap_ent {
    int64_t when;
    struct weft_timer *t;
} weft_theap_ent;

/* ---- fd readiness waits (poll.c) -------------------------------------------
 * A goroutine parked on an fd: an ev_io (and an optional ev_timer) on the
 * loop of the processor it parked on, touched only by that processor's
 * thread; linked in that processor's list so a close can wake it. */
typedef struct weft_iowait {
    ev_io io;
    ev_timer tm;
    weft_proc *p;                   /* the loop holding the watchers; NULL: idle */
    struct weft_iowait *next, *prev; /* p->iowaiters (owner only) */
    int result;                     /* WEFT_OK, WEFT_EAGAIN (timeout), WEFT_ECLOSED */
} weft_iowait;

/* ---- goroutine ----------------------------------------------------------- */

/* What only a native goroutine needs: its C stack and saved context. A
 * goroutine gets one when it is made and gives it up when it ends; free
 * ones wait in per-processor caches (gfree.c), so that a hosted goroutine
 * (most of them, in Lua programs) does not carry one. */
typedef struct weft_gnative {
    weft_ctx ctx;
    weft_stack stack;
    /* Parking: set by the goroutine, acted upon by its processor's scheduler
     * context once the goroutine's stack is no longer in use. */
    void (*unlockf)(void *);
    void *unlockarg;
} weft_gnative;

/* Layout. Structs start on a cache line (gfree.c cuts them from aligned
 * blocks). A goroutine is often made on one core and run, and ended, on
 * another. The first line holds all that starting it, running it (until it
 * waits) and ending it write (state, parkop, nat, ...); the second, the
 * rest of what making it writes. Ending a goroutine writes nothing beyond
 * the first line, where a line the runner wrote would be one more to take
 * from the maker's core: clearing host at exit made spawn+exit on 2
 * processors about 50 ns slower per goroutine, and structs that did not
 * start on a line (plain calloc) about 50 ns too (bench/bounds.md, spawn).
 * What only some goroutines use is made on first use and kept (the sleep
 * timer, the fd wait, select's waiters), which keeps the struct, and so a
 * blocked Lua goroutine, small. */
struct weft_g {
    int64_t id;
    atomic_int state;     /* enum weft_gstate */
    int kind;             /* enum weft_gkind */
    weft_gnative *nat;    /* NATIVE: stack and context while it lives */
    weft_g *schedlink;    /* global run queue, inbox, bound queue, free list */
    void (*fn)(void *);   /* NATIVE: entry */
    void *arg;
    int64_t parent_id;    /* creator */
    int parkop;           /* enum weft_parkop: what the scheduler does next */
    bool fresh;           /* NATIVE: not started yet (no frame on its stack) */

    _Alignas(WEFT_CACHE_LINE) weft_proc *bound; /* HOSTED: the processor that owns it */
    void *host;               /* HOSTED: host data (the host clears it before exit) */
    const char *wait_reason;
    weft_waiter *waiting;     /* waiters now queued on channels (teardown) */
    int nwaiting;
    int64_t wait_since;       /* weft_nanotime() */

    /* Waiting. */
    weft_waiter w1;           /* single channel operation */
    weft_waiter *wbuf;        /* select: one waiter per case */
    int wbuf_cap;
    atomic_int selectdone;    /* select: 0 until a waker claims the goroutine */
    weft_waiter *param;       /* the waiter that won (written before weft_ready) */
    struct weft_timer *sleept; /* weft_sleep: made on first use, kept */
    weft_iowait *iow;         /* fd readiness wait (poll.c): made on first use, kept */
};

/* ---- processors ---------------------------------------------------------- */

/* The fields come in groups by who writes them, each group starting a cache
 * line (weft_proc is allocated aligned to one): what the owner writes at
 * every switch (curg; running, which thieves read, on a line of its own) is
 * not on the lines that other processors poll (the run queue's ends,
 * runnext) or write (the inbox), so that polling and stealing do not take
 * the owner's lines away from it at every switch. */
struct weft_proc {
    int id;
    pthread_t thread;
    bool has_thread; /* started by the engine (joined at stop) */
    struct ev_loop *loop;
    ev_async wake;   /* other threads wake a sleeping processor with this */
    ev_timer alarm;  /* armed for the earliest timer before sleeping */
    weft_ctx g0;     /* the scheduler context (the thread's own stack) */
    weft_g *curg;    /* owner only */
    _Alignas(WEFT_CACHE_LINE) atomic_int running; /* running a goroutine now (read by thieves) */
    atomic_int nhosted; /* live hosted goroutines bound here (placement) */

    /* Local run queue (runq.c): the owner puts at the tail, anyone takes at
     * the head (owner gets, thieves steal half). */
    _Alignas(WEFT_CACHE_LINE) _Atomic uint32_t runqhead;
    _Atomic uint32_t runqtail;
    _Atomic(weft_g *) runq[WEFT_RUNQ_SIZE];
    _Alignas(WEFT_CACHE_LINE) _Atomic(weft_g *) runnext; /* run next, inherits the time slice */

    /* Hosted goroutines bound here and runnable; owner only. */
    _Alignas(WEFT_CACHE_LINE) weft_g *boundhead;
    weft_g *boundtail;
    uint32_t nbound;

    /* Inbox: other threads hand back goroutines bound here. */
    _Alignas(WEFT_CACHE_LINE) weft_mutex inboxlock;
    weft_g *inboxhead, *inboxtail;
    atomic_int inboxn;

    /* Timers (timer.c): a 4-ary min-heap under tlock; timer0 mirrors the
     * earliest deadline (0: none) so the scheduler can check it lock-free. */
    weft_mutex tlock;
    weft_theap_ent *theap;
    int tlen, tcap;
    _Atomic int64_t timer0;

    /* Scheduling state (proc.c). */
    atomic_int sleeping; /* waiting in ev_run: needs an ev_async to notice work */
    atomic_int idle;     /* on the idle list (sched.lock) */
    weft_proc *idlelink;
    atomic_int wakespin; /* woken by wakep: spin (already counted in nspinning) */
    bool spinning;
    int64_t idlepoll; /* ns to poll for work before sleeping (proc.c); owner only */
    uint32_t schedtick;
    uint64_t rng;

    /* Goroutines parked on fds with watchers on this loop (poll.c); owner only. */
    weft_iowait *iowaiters;
    int niowait;
    weft_g *iowoken; /* fd waits done in callbacks, readied by weft_io_flush */

    /* Free goroutine structs for reuse: an array of pointers, so that
     * taking one reads nothing of the others (gfree.c). */
    weft_g *gfree[WEFT_GFREE_LOCAL];
    int ngfree;
    /* Free native stacks (gfree.c): hot ones, last run on here, for
     * goroutines to start on; cold ones, for goroutines being made. */
    weft_gnative *shot[WEFT_SHOT_LOCAL];
    int nshot;
    weft_gnative *scold[WEFT_SCOLD_LOCAL];
    int nscold;

    /* Statistics: written by the owner only, read by anyone. */
    _Atomic uint64_t st_switches, st_steals, st_stolen, st_wakeups, st_timers, st_chanops;

    /* Diagnostics (diag.c): a request to answer between two runs; the id
     * of the goroutine it runs (or last ran), for the watchdog. */
    _Atomic(void *) diagreq;
    _Atomic int64_t curgid;
};

/* ---- hosted goroutines ------------------------------------------------------
 * A hosted goroutine is run by the host (the Lua binding: a coroutine in the
 * VM of the processor it is bound to), not on a stack of its own. It cannot
 * switch stacks to park, so every blocking operation has two halves: a
 * *_start call that completes at once or queues the goroutine's waiters,
 * marks it parked (WAITING) and releases every lock, returning WEFT_PENDING;
 * then the host returns to the scheduler with parkop = WEFT_PARK_WAIT (a Lua
 * coroutine yields), and once resumed calls the matching *_finish for the
 * result. A waker may make the goroutine runnable before the host has
 * returned: that is safe, because a hosted goroutine is only ever run by its
 * own processor's thread, which is busy returning. */

enum { WEFT_PENDING = -100 };

typedef struct weft_host {
    /* Runs g on p (its own processor) until it returns control; sets
     * g->parkop: WAIT after a *_start returned WEFT_PENDING, YIELD to be
     * queued again, EXIT when it finished (host data already released). */
    void (*run)(weft_proc *p, weft_g *g);
    /* At engine stop, for each hosted goroutine still alive: release g->host. */
    void (*discard)(weft_g *g);
    /* Optional: on each processor's thread, before its scheduler loop starts
     * and after it ended (processor 0: on the thread that runs the engine,
     * before the other processors start). E.g. a VM per processor. */
    void (*proc_start)(weft_proc *p);
    void (*proc_stop)(weft_proc *p);
} weft_host;

/* Runs a hosted main goroutine (host data `main_host`) on a fresh engine;
 * the calling thread becomes processor 0 and the main goroutine is bound to
 * it. Returns like weft_run when it exits. */
int weft_run_hosted(const weft_config *cfg, const weft_host *host, void *main_host);
/* A new hosted goroutine bound to the current processor (processor 0 from a
 * thread that is none); its id, or a negative WEFT_E*. */
int64_t weft_go_hosted(void *host);
/* A new hosted goroutine bound to no processor yet (e.g. an isolate that
 * has not started): portable work, queued on the current processor's run
 * queue (the global one from a thread that is none) where an idle processor
 * may steal it; the processor that first runs it becomes its own. */
int64_t weft_go_hosted_portable(void *host);
/* Stops the running engine from inside (e.g. on an uncaught error): every
 * processor returns from its scheduler loop after the current goroutine. */
void weft_shutdown(void);

int weft_chan_send_start(weft_chan *c, weft_val *v); /* OK, ECLOSED, PENDING */
int weft_chan_send_finish(weft_val *v);              /* OK, or ECLOSED with *v back */
int weft_chan_recv_start(weft_chan *c, weft_val *out); /* 1, 0, PENDING */
int weft_chan_recv_finish(weft_val *out);              /* 1, 0 */
/* `cases` must stay as they are until weft_select_finish. */
int weft_select_start(weft_case *cases, int n, int nonblock); /* index, -1, PENDING */
int weft_select_finish(weft_case *cases, int n);              /* index, or EAGAIN: start again */
int weft_sleep_prepare(void);     /* OK, or ENOMEM: no timer (call before recording a sleep) */
int weft_sleep_start(int64_t ns); /* PENDING, or OK when ns <= 0 (the host yields) */
/* OK (taken at once), PENDING (parked with wait reason `reason`), EINVAL. */
int weft_sema_acquire_start(weft_sema *s, int64_t k, const char *reason);
int weft_sema_acquire_finish(void); /* OK: the units are the goroutine's */
/* Parks on fd readiness (events: WEFT_IO_READ|WEFT_IO_WRITE) with watchers on
 * the current processor's loop, at most timeout_ns (< 0: no limit); wait
 * reason "IO wait". PENDING, or EINVAL/ENOTG. */
int weft_io_wait_start(int fd, int events, int64_t timeout_ns);
int weft_io_wait_finish(void); /* OK (ready), EAGAIN (timed out), ECLOSED */

/* ---- the scheduler ------------------------------------------------------- */

enum { WEFT_SCHED_STOPPED, WEFT_SCHED_RUNNING, WEFT_SCHED_STOPPING };

/* Grouped like struct weft_proc: what every processor reads all the time
 * (state, the processors) on a line of its own, and each group that some
 * processors write often (the lock and what it guards, the idle and
 * spinning counts, the goroutine count, the id generator) starting a line,
 * so that writing one does not take the others away from their readers. */
typedef struct weft_sched {
    atomic_int state;
    int nprocs;
    weft_proc **procs;
    size_t stack_size;
    weft_g *main_g;
    weft_host host;

    _Alignas(WEFT_CACHE_LINE) weft_mutex lock; /* global run queue, idle list, global free list */
    weft_g *runqhead, *runqtail;
    atomic_int runqsize;
    weft_proc *idlep;
    weft_g **gfree; /* free goroutines, a stack of pointers of capgfree */
    atomic_int ngfree; /* written under lock, peeked without */
    size_t capgfree;
    weft_gnative *sfree[WEFT_SFREE_GLOBAL]; /* free native stacks */
    atomic_int nsfree; /* written under lock, peeked without */

    _Alignas(WEFT_CACHE_LINE) atomic_int npidle;
    atomic_int nspinning;

    _Alignas(WEFT_CACHE_LINE) weft_mutex alllock; /* allgs: every goroutine struct ever made (for teardown, dumps) */
    weft_g **allgs;
    size_t nallgs, capallgs;
    char **gslabs;  /* the blocks goroutine structs are cut from (gfree.c) */
    size_t ngslabs, capgslabs;
    char *gslabnext; /* the next struct of the newest block */
    int gslableft;   /* structs left in it */
    atomic_int npollwait; /* goroutines parked on fds (poll.c): "no fd watched" when 0 */
    /* weft_coarse_now() at the watchdog's last tick (sysmon.c), 0 before the
     * first of this run: parks record it as the start of a wait, which dumps
     * show to the second, instead of reading the clock each time. */
    _Atomic int64_t ticknow;

    _Alignas(WEFT_CACHE_LINE) _Atomic int64_t ngoroutines;
    _Alignas(WEFT_CACHE_LINE) _Atomic int64_t goidgen;
} weft_sched;

extern weft_sched weft_S;

/* proc.c */
weft_proc *weft_proc_self(void); /* never cached across a park: goroutines migrate */
weft_g *weft_g_self(void);
void weft_ready(weft_g *g, bool next);
void weft_park(const char *reason, void (*unlockf)(void *), void *arg);
void weft_park_forever(const char *reason);
void weft_park_hosted(weft_g *g, const char *reason); /* mark parked; caller then unlocks */
bool weft_is_native(weft_g *g);
void weft_wakep(void);
uint32_t weft_fastrand(void);
/* The same for a caller that has its processor p at hand (or NULL). */
uint32_t weft_fastrand_on(weft_proc *p);
uint32_t weft_fastrandn(uint32_t n);

/* A random 32-bit r scaled into [0, n) by a multiply and a shift instead
 * of a division (the bias is below n / 2^32): weft_fastrandn, select's
 * poll order. */
static inline uint32_t weft_rand_scale(uint32_t r, uint32_t n) {
    return (uint32_t)(((uint64_t)r * n) >> 32);
}
void weft_stat_inc(_Atomic uint64_t *counter);
int64_t weft_coarse_now(void);

/* runq.c */
void weft_runq_put(weft_proc *p, weft_g *g, bool next);
weft_g *weft_runq_get(weft_proc *p);
weft_g *weft_runq_steal(weft_proc *p, weft_proc *victim, bool steal_runnext);
bool weft_runq_empty(weft_proc *p);
/* Goroutines in the queue proper (runnext not counted). */
bool weft_runq_has_queued(weft_proc *p);
uint32_t weft_runq_len(weft_proc *p);
void weft_globrunq_put(weft_g *g);
void weft_globrunq_put_batch(weft_g *head, weft_g *tail, int n);
weft_g *weft_globrunq_get(weft_proc *p, int max); /* sched.lock held */

/* gfree.c */
weft_g *weft_gfree_get(weft_proc *p); /* p may be NULL (not a processor's thread) */
void weft_gfree_put(weft_proc *p, weft_g *g);
weft_gnative *weft_gfree_stack_get(weft_proc *p);
void weft_gfree_stack_put(weft_proc *p, weft_gnative *n);
void weft_gfree_stack_start(weft_proc *p, weft_g *g); /* g not started yet */
void weft_gfree_stack_destroy(weft_gnative *n);
void weft_gfree_proc_teardown(weft_proc *p);
void weft_gfree_teardown(void);

/* chan.c */
void weft_waiter_withdraw(weft_waiter *w); /* teardown: unlink if still queued */
/* on: from now, a channel's last release keeps its struct (lock and
 * queues) for weft_waiter_withdraw; off: frees the structs kept. */
void weft_chan_hold_frees(bool on);
weft_waiter *weft_waitq_dequeue_for(weft_chan *c, int dir);
void weft_chan_lock(weft_chan *c);
void weft_chan_unlock(weft_chan *c);
void weft_chan_set_timer(weft_chan *c, struct weft_timer *t);

/* sema.c */
void weft_sema_withdraw(weft_waiter *w); /* teardown: unlink if still queued */

/* poll.c */
bool weft_io_poll(weft_proc *p);     /* owner: runs ready fd callbacks without blocking */
void weft_io_flush(weft_proc *p);    /* owner, after any ev_run: readies finished fd waits */
void weft_io_teardown(weft_g *g);    /* engine stop: drop g's fd wait, if any */

/* timer.c */
void weft_timers_run(weft_proc *p, int64_t now);
void weft_timers_teardown(weft_proc *p);
int weft_timer_sleep_prepare(weft_g *g); /* OK, or ENOMEM: no timer for g */
void weft_timer_sleep_arm(weft_g *g, int64_t when); /* after a prepare */
void weft_timer_detach(struct weft_timer *t);

#endif
