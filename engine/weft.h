/*
 * weft.h — the public C API of the weft engine.
 *
 * weft runs goroutines on a fixed set of processors (OS threads, one libev
 * loop each) with Go-style work stealing. From C, a goroutine is a *native*
 * goroutine: a C function running on its own mmap'd stack. Native goroutines
 * communicate over channels, wait in select, sleep and use timers; every
 * blocking call parks the goroutine, never the processor's thread.
 *
 * Threading rules
 *  - The engine is a process-wide singleton: one weft_run()/weft_start() at a
 *    time; it may be started again after it stopped.
 *  - Blocking calls (weft_chan_send/recv, weft_select without nonblock,
 *    weft_sleep, weft_yield) must be made from a goroutine. Made elsewhere
 *    they return WEFT_ENOTG (or do nothing, for weft_yield/weft_sleep).
 *  - Non-blocking calls (weft_chan_try*, weft_chan_close, weft_go, timers)
 *    may be made from any thread while the engine runs.
 *  - Channels and timers are reference counted and outlive the engine.
 *
 * Values
 *  Channels carry weft_val: 16 bytes holding either up to 8 bytes inline or
 *  a buffer the value owns (WEFT_VAL_HEAP: malloc'd, or a recycled block
 *  with WEFT_VAL_POOLED). A send moves the value
 *  into the channel; a receive moves it out to the receiver, which then owns
 *  it (release with weft_val_free). Nothing is copied twice: an encoder
 *  writes straight into the buffer weft_val_alloc returns, and that buffer
 *  travels by pointer through buffers and hand-offs.
 */
#ifndef WEFT_H
#define WEFT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WEFT_VERSION "0.1.0"

/* Result codes. */
enum {
    WEFT_OK = 0,
    WEFT_ECLOSED = -1, /* channel closed (send on closed, close of closed) */
    WEFT_EAGAIN = -2,  /* a non-blocking call would block */
    WEFT_ENOMEM = -3,
    WEFT_EINVAL = -4,  /* bad argument */
    WEFT_ENOTG = -5,   /* blocking call made outside a goroutine */
    WEFT_ESTATE = -6,  /* engine not running / already running */
    WEFT_EDEADLOCK = -7 /* weft_run: every goroutine was asleep (reported on stderr) */
};

/* ---- engine -------------------------------------------------------------- */

typedef struct weft_config {
    int procs;         /* processors; 0: $WEFT_PROCS, else the CPU count */
    size_t stack_size; /* native goroutine stack; 0: $WEFT_STACK_SIZE, else 64 KiB */
} weft_config;

/* Runs main_fn(arg) as the main goroutine on a fresh engine. The calling
 * thread becomes processor 0. Returns when main_fn returns; goroutines still
 * alive then are discarded (their stacks freed, their waits withdrawn from
 * channels). Called from inside a goroutine it just calls main_fn(arg).
 * Returns WEFT_OK, WEFT_ESTATE if another engine is running, WEFT_ENOMEM,
 * WEFT_EDEADLOCK when every goroutine was asleep (the report, with a dump,
 * went to stderr). */
int weft_run(const weft_config *cfg, void (*main_fn)(void *), void *arg);

/* Starts the engine with every processor on a thread of its own and returns
 * at once; weft_stop() stops it. Returns WEFT_OK or WEFT_ESTATE/WEFT_ENOMEM. */
int weft_start(const weft_config *cfg);
/* Stops a started engine: processors finish the goroutine they are running,
 * then exit; the rest are discarded as in weft_run. Not from a goroutine. */
int weft_stop(void);
/* Blocks the calling (non-goroutine) thread until no goroutine is left alive
 * or `timeout` seconds passed (timeout < 0: no limit). 1 if none is left. */
int weft_wait_idle(double timeout);

/* ---- goroutines ---------------------------------------------------------- */

/* Starts a native goroutine running fn(arg). Returns its id (> 0), or a
 * negative WEFT_E* code. */
int64_t weft_go(void (*fn)(void *), void *arg);
void weft_yield(void);
void weft_sleep(double seconds);
void weft_sleep_ns(int64_t ns);
int64_t weft_nanotime(void); /* monotonic clock, ns */
double weft_now(void);       /* monotonic clock, seconds */
int64_t weft_id(void);       /* current goroutine id, 0 outside goroutines */
int64_t weft_count(void);    /* live goroutines */
int weft_procs(void);        /* number of processors (0 when stopped) */
int weft_proc_id(void);      /* current processor index, -1 outside */

/* ---- values -------------------------------------------------------------- */

enum { WEFT_VAL_HEAP = 1, WEFT_VAL_POOLED = 2 };

/* Tags 0..15 are the engine's; a codec uses 16 and up. */
enum {
    WEFT_TAG_RAW = 0,    /* bytes */
    WEFT_TAG_BOOL = 1,   /* u.i = 0/1 */
    WEFT_TAG_NUMBER = 2, /* u.d */
    WEFT_TAG_INT64 = 3,  /* u.i */
    WEFT_TAG_UINT64 = 4, /* u.u */
    WEFT_TAG_PTR = 5,    /* u.p, not owned */
    WEFT_TAG_USER = 16
};

typedef struct weft_val {
    union {
        int64_t i;
        uint64_t u;
        double d;
        void *p;
        unsigned char b[8];
    } u;
    uint32_t len;   /* payload length in bytes */
    uint16_t tag;   /* what the payload is (WEFT_TAG_*) */
    uint16_t flags; /* WEFT_VAL_HEAP: u.p owns a malloc'd buffer of len bytes;
                       with WEFT_VAL_POOLED, a block of weft_pool_alloc */
} weft_val;

static inline weft_val weft_val_int(int64_t i) {
    weft_val v;
    v.u.i = i;
    v.len = 8;
    v.tag = WEFT_TAG_INT64;
    v.flags = 0;
    return v;
}
static inline weft_val weft_val_num(double d) {
    weft_val v;
    v.u.d = d;
    v.len = 8;
    v.tag = WEFT_TAG_NUMBER;
    v.flags = 0;
    return v;
}
static inline weft_val weft_val_ptr(void *p) {
    weft_val v;
    v.u.p = p;
    v.len = sizeof(void *);
    v.tag = WEFT_TAG_PTR;
    v.flags = 0;
    return v;
}
/* Prepares v to hold len bytes with the given tag and returns where to write
 * them: inline for len <= 8, else a fresh buffer owned by v (NULL if out of
 * memory). */
static inline void *weft_val_alloc(weft_val *v, uint32_t len, uint16_t tag) {
    v->len = len;
    v->tag = tag;
    v->u.u = 0;
    if (len <= sizeof v->u) {
        v->flags = 0;
        return v->u.b;
    }
    v->flags = WEFT_VAL_HEAP;
    v->u.p = malloc(len);
    return v->u.p;
}
static inline const void *weft_val_data(const weft_val *v) {
    return (v->flags & WEFT_VAL_HEAP) ? (const void *)v->u.p : (const void *)v->u.b;
}
/* A value holding a copy of len bytes. On out of memory, len is 0. */
static inline weft_val weft_val_bytes(const void *data, uint32_t len) {
    weft_val v;
    void *dst = weft_val_alloc(&v, len, WEFT_TAG_RAW);
    if (dst)
        memcpy(dst, data, len);
    else
        v.len = 0, v.flags = 0;
    return v;
}
/* Blocks for values of up to WEFT_POOL_MAX bytes, recycled between the
 * threads that allocate and free them (engine/pool.c): cheaper than malloc
 * when one thread sends and another receives. weft_pool_alloc returns NULL
 * for a larger len or when out of memory; weft_pool_free takes what
 * weft_pool_alloc returned, from any thread. A value holding such a block
 * has WEFT_VAL_HEAP | WEFT_VAL_POOLED, and weft_val_free releases it. */
enum { WEFT_POOL_MAX = 240 };
void *weft_pool_alloc(size_t len);
void weft_pool_free(void *p);

/* weft_val_alloc for a value mostly freed by another thread: a buffer of
 * more than 8 bytes comes from the pool when it fits a block. */
static inline void *weft_val_alloc_pooled(weft_val *v, uint32_t len, uint16_t tag) {
    if (len <= sizeof v->u || len > WEFT_POOL_MAX)
        return weft_val_alloc(v, len, tag);
    v->len = len;
    v->tag = tag;
    v->flags = WEFT_VAL_HEAP | WEFT_VAL_POOLED;
    v->u.p = weft_pool_alloc(len);
    return v->u.p;
}
/* Frees a value's buffer p, given the value's flags (nothing if inline). */
static inline void weft_val_buffer_free(void *p, uint16_t flags) {
    if (flags & WEFT_VAL_POOLED)
        weft_pool_free(p);
    else if (flags & WEFT_VAL_HEAP)
        free(p);
}

static inline void weft_val_free(weft_val *v) {
    weft_val_buffer_free(v->u.p, v->flags);
    v->flags = 0;
    v->len = 0;
    v->u.u = 0;
}

/* Values with a tag of their own may need more than free() when the engine
 * drops them (a channel freed with values buffered, a blocked sender
 * discarded at stop): a codec registers a disposer for its tags (>=
 * WEFT_TAG_USER). weft_val_dispose frees any value that way. */
int weft_val_register_disposer(uint16_t tag, void (*dispose)(weft_val *v));
void weft_val_dispose(weft_val *v);

/* ---- channels ------------------------------------------------------------ */

typedef struct weft_chan weft_chan;

/* A channel with `cap` buffer slots (0: unbuffered); one reference. */
weft_chan *weft_chan_new(size_t cap);
weft_chan *weft_chan_retain(weft_chan *c);
/* Drops a reference; the last one frees the channel and any buffered values.
 * Goroutines must not be blocked on it then. */
void weft_chan_release(weft_chan *c);

/* Blocks until v is received or buffered. WEFT_OK; WEFT_ECLOSED if the
 * channel is or gets closed (v is then still the caller's). A NULL channel
 * blocks forever. */
int weft_chan_send(weft_chan *c, weft_val v);
/* Blocks until a value arrives: 1 and *out set, or 0 with *out zeroed once
 * the channel is closed and drained. A NULL channel blocks forever. */
int weft_chan_recv(weft_chan *c, weft_val *out);
/* Non-blocking forms: WEFT_OK / WEFT_EAGAIN / WEFT_ECLOSED, and
 * 1 / 0 (closed) / WEFT_EAGAIN. */
int weft_chan_trysend(weft_chan *c, weft_val v);
int weft_chan_tryrecv(weft_chan *c, weft_val *out);
/* WEFT_OK, or WEFT_ECLOSED when already closed. Wakes every waiter:
 * receivers get (0, zero value), blocked senders get WEFT_ECLOSED. */
int weft_chan_close(weft_chan *c);
size_t weft_chan_len(weft_chan *c);
size_t weft_chan_cap(weft_chan *c);
int weft_chan_closed(weft_chan *c);

/* ---- select -------------------------------------------------------------- */

enum { WEFT_CASE_RECV = 1, WEFT_CASE_SEND = 2 };

typedef struct weft_case {
    weft_chan *ch; /* NULL: the case is never ready */
    int dir;       /* WEFT_CASE_RECV or WEFT_CASE_SEND */
    weft_val val;  /* send: the value (moved on success); recv: the value received */
    int ok;        /* out: recv 1 value / 0 closed; send 1 sent / 0 channel closed */
} weft_case;

static inline weft_case weft_case_recv(weft_chan *ch) {
    weft_case c;
    memset(&c, 0, sizeof c);
    c.ch = ch;
    c.dir = WEFT_CASE_RECV;
    return c;
}
static inline weft_case weft_case_send(weft_chan *ch, weft_val v) {
    weft_case c;
    memset(&c, 0, sizeof c);
    c.ch = ch;
    c.dir = WEFT_CASE_SEND;
    c.val = v;
    return c;
}

/* Waits until one case can proceed and performs it (only that one). Among
 * ready cases one is chosen uniformly at random. Returns its index; with
 * nonblock, returns -1 when none is ready. n == 0 without nonblock blocks
 * forever. A send case that finds its channel closed is chosen with ok = 0
 * (its value stays the caller's). Negative WEFT_E* on bad arguments. */
int weft_select(weft_case *cases, int n, int nonblock);

/* ---- timers -------------------------------------------------------------- */

typedef struct weft_timer weft_timer;

/* One-shot timer: after `seconds`, weft_now() (WEFT_TAG_NUMBER) is delivered
 * to weft_timer_chan(t), a channel of capacity 1. */
weft_timer *weft_timer_new(double seconds);
/* Ticker: every `period` seconds; a tick is dropped, not queued, when the
 * receiver has not taken the previous one. NULL unless period >= 1 ns. */
weft_timer *weft_ticker_new(double period);
/* After `seconds`, runs fn(arg) in a new native goroutine. No channel. */
weft_timer *weft_after_func(double seconds, void (*fn)(void *), void *arg);
/* The timer's channel (borrowed: valid while the timer is), NULL for after_func. */
weft_chan *weft_timer_chan(weft_timer *t);
/* Stops the timer. 1 if it was pending (it will not fire), 0 if it had
 * already fired or been stopped. Afterwards no stale value is received from
 * its channel. */
int weft_timer_stop(weft_timer *t);
/* Re-arms the timer (a ticker takes `seconds` as its new period, or keeps
 * its period if `seconds` is under 1 ns); same result as stop; no value from
 * before the reset is received after it. */
int weft_timer_reset(weft_timer *t, double seconds);
/* Stops the timer and drops the caller's reference. */
void weft_timer_free(weft_timer *t);

/* A channel that receives weft_now() once after `seconds`. Its timer is
 * freed when it fires, or when the channel's last reference is released. */
weft_chan *weft_after(double seconds);

/* ---- semaphores ------------------------------------------------------------
 * Counting semaphores (sema.c): acquire(k) blocks until k units are
 * available, strictly FIFO (a waiter asking many units is not overtaken by
 * later, smaller requests); release(k) hands units to the waiters in order.
 * Reference counted like channels; any thread may release or tryacquire. */

typedef struct weft_sema weft_sema;

/* A semaphore holding `count` units (>= 0), no limit; one reference. */
weft_sema *weft_sema_new(int64_t count);
/* The same with at most `limit` units: releasing beyond it fails. */
weft_sema *weft_sema_new_limit(int64_t count, int64_t limit);
weft_sema *weft_sema_retain(weft_sema *s);
/* Drops a reference (the last frees it). */
void weft_sema_release_ref(weft_sema *s);
/* Blocks until k units are taken: WEFT_OK; WEFT_EINVAL if k < 0 or k is
 * beyond the limit; WEFT_ENOTG outside a native goroutine. */
int weft_sema_acquire(weft_sema *s, int64_t k);
/* Takes k units if that needs no wait (and nobody waits): WEFT_OK, else
 * WEFT_EAGAIN (WEFT_EINVAL on bad k). */
int weft_sema_tryacquire(weft_sema *s, int64_t k);
/* Adds k units and wakes the waiters they serve. WEFT_EINVAL if k < 0 or
 * the count would exceed the limit (nothing is added then). */
int weft_sema_release(weft_sema *s, int64_t k);
int64_t weft_sema_count(weft_sema *s); /* units available now (a snapshot) */
int64_t weft_sema_limit(weft_sema *s);

/* ---- atomics -------------------------------------------------------------------
 * A shared int64 cell (atomic.c), sequentially consistent, lock-free;
 * reference counted. add returns the new value, swap the old one, cas 1 if
 * it stored v (the cell held old). */

typedef struct weft_atomic weft_atomic;

weft_atomic *weft_atomic_new(int64_t v);
weft_atomic *weft_atomic_retain(weft_atomic *a);
void weft_atomic_release(weft_atomic *a);
int64_t weft_atomic_load(weft_atomic *a);
void weft_atomic_store(weft_atomic *a, int64_t v);
int64_t weft_atomic_add(weft_atomic *a, int64_t d);
int64_t weft_atomic_swap(weft_atomic *a, int64_t v);
int weft_atomic_cas(weft_atomic *a, int64_t old, int64_t v);

/* ---- fd readiness (the netpoller) ------------------------------------------
 * A goroutine waits for a non-blocking fd to become readable or writable
 * without blocking its processor: the wait is an ev_io on the loop of the
 * processor it parks on. */

enum { WEFT_IO_READ = 1, WEFT_IO_WRITE = 2 };

/* Parks the calling native goroutine until fd is ready for `events`
 * (WEFT_IO_READ and/or WEFT_IO_WRITE), at most `timeout` seconds (< 0: no
 * limit). WEFT_OK: ready (or an error or hang-up is pending: the next read
 * or write tells); WEFT_EAGAIN: timed out; WEFT_ECLOSED: woken by
 * weft_io_wake_closed; WEFT_EINVAL, WEFT_ENOTG. */
int weft_io_wait(int fd, int events, double timeout);
/* Wakes, with WEFT_ECLOSED, the goroutines parked on fd that parked on the
 * calling processor (all goroutines of a Lua isolate run on one); call it
 * before close(fd). Returns how many were woken. */
int weft_io_wake_closed(int fd);

/* ---- statistics ---------------------------------------------------------- */

typedef struct weft_proc_stats {
    uint64_t switches;    /* goroutines run on this processor */
    uint64_t steals;      /* successful steals by this processor */
    uint64_t stolen;      /* goroutines it took by stealing */
    uint64_t wakeups;     /* times it was woken from sleep */
    uint64_t timers_fired;
    uint32_t runq;        /* current local run queue length */
    uint32_t timers;      /* timers pending on this processor */
} weft_proc_stats;

typedef struct weft_stats {
    int64_t goroutines;
    int procs;
    int idle_procs; /* processors sleeping in their loop with nothing to run */
    int spinning;   /* processors looking for work to steal */
    uint64_t switches, steals, stolen, chan_ops, timers_fired;
    uint32_t global_runq;
} weft_stats;

/* Fills *out; per-processor figures for processor `proc` with
 * weft_proc_stats_get. Both return WEFT_OK or WEFT_ESTATE/WEFT_EINVAL. */
int weft_stats_get(weft_stats *out);
int weft_proc_stats_get(int proc, weft_proc_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_H */
