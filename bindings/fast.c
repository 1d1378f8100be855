/*
 * bindings/fast.c — the FFI fast paths of Lua goroutines: channel send,
 * receive and select, called from lua/weft/init.lua through ffi.C.
 *
 * These functions never touch a lua_State, never call back into Lua and
 * never switch stacks (DESIGN rules 2 and 3): a JIT trace may be running
 * them. Values cross as weft_val: scalars and short strings are written and
 * read by Lua itself, anything else is encoded or decoded by the classic
 * functions of core.c around the call.
 *
 * Protocol. An operation first runs without waiting: it completes
 * (DONE/CLOSED, or a select's case index) or reports BLOCK, having queued
 * nothing, and records in the goroutine's hostg what it was (h->op, the
 * channel, the value to send in h->held, a select's cases in h->cases). The
 * Lua side then yields OP to the scheduler under pcall: where Lua cannot
 * yield, that fails at once and Lua drops the operation (weft_lua_drop) and
 * raises "cannot block here". Otherwise host_run (core.c), back on the
 * scheduler, starts the recorded operation with weft_hostg_start (the
 * engine's *_start calls, core.h), which queues the goroutine (PENDING: it
 * is parked) or completes at once (the result is kept in the hostg and the
 * goroutine resumed at once). Resumed, Lua calls the matching *_finish for
 * the result. So a blocked operation costs one yield and no check of
 * whether Lua may yield. A select's finish may answer SEL_BLOCK once more:
 * the goroutine was woken to select anew (chan.c), and Lua yields again
 * with the cases still held.
 *
 * Ownership of send values: the first call takes the value out of the
 * caller's buffer (which Lua may reuse at once, even from a finalizer run
 * in between). On BLOCK the hostg holds it (h->held, or h->cases for a
 * select) until the operation starts or is dropped. The channel takes it
 * when it is sent or queued; on CLOSED it is freed here. Of a select's send
 * values the one sent is moved, the others freed; on SEL_NOTG and SEL_BAD
 * they are all still the caller's.
 *
 * Lifetime: a queued waiter holds no reference on its channel (chan.c), so
 * the Lua side keeps the channel's userdata alive while it waits: a send's
 * or receive's finish takes the channel (and does nothing with it), so
 * that the userdata is live across the yield and stays in the parked
 * coroutine's frame even where a JIT trace would otherwise drop a slot it
 * no longer reads; a select reads its case tables, which hold the channels,
 * after its finish.
 *
 * Invariants: a goroutine has at most one operation under way (h->op), so
 * the held value, a pending select's cases and an early result live in its
 * hostg until the operation is finished or dropped. The Lua side allocates
 * nothing between a BLOCK and its yield, nor between the resume and the
 * finish: so no finalizer (which could start an operation of its own in
 * this goroutine and overwrite h->op) can run while one is recorded.
 */
#include "codec.h"
#include "host.h"

#include <stdlib.h>
#include <string.h>

enum { WL_DONE = 0, WL_BLOCK = 2, WL_CLOSED = 3, WL_NOTG = 4 };
enum { SEL_NONE = -1, SEL_NOTG = -3, SEL_BAD = -4, SEL_BLOCK = -5 };

/* Entry points for the FFI (declared in lua/weft/init.lua, never static). */
int weft_lua_send(lchan *uc, weft_val *v);
int weft_lua_send_finish(const lchan *uc);
int weft_lua_recv(lchan *uc, weft_val *out);
int weft_lua_recv_finish(const lchan *uc, weft_val *out);
int weft_lua_select(weft_case *cs, int n, int nonblock);
int weft_lua_select_finish(weft_case *res);
void weft_lua_drop(void);
int weft_lua_val_bytes(weft_val *v, const void *p, size_t len, int tag);
void weft_lua_free(void *p, int flags);
void weft_lua_val_free(weft_val *v);

static void op_block(hostg *h, int op, weft_chan *c) {
    h->op = op;
    h->opnd.chan = c;
    h->opdone = false;
}

int weft_lua_send(lchan *uc, weft_val *v) {
    hostg *h = weft_hostg_self();
    if (!h) {
        weft_codec_val_free(v);
        return WL_NOTG;
    }
    int rc = weft_chan_trysend(uc->c, *v);
    if (rc == WEFT_OK)
        return WL_DONE;
    if (rc == WEFT_ECLOSED) {
        weft_codec_val_free(v);
        return WL_CLOSED;
    }
    h->held = *v;
    op_block(h, WEFT_HOSTOP_SEND, uc->c);
    return WL_BLOCK;
}

int weft_lua_recv(lchan *uc, weft_val *out) {
    hostg *h = weft_hostg_self();
    if (!h)
        return WL_NOTG;
    int rc = weft_chan_tryrecv(uc->c, out);
    if (rc == 1)
        return WL_DONE;
    if (rc == 0)
        return WL_CLOSED;
    op_block(h, WEFT_HOSTOP_RECV, uc->c);
    return WL_BLOCK;
}

/* cs: the caller's cases (cs[i].ch the engine's channel, or NULL), tried
 * where they are: when a case proceeds at once its result is in cs[i] and
 * the send values not taken are freed; when none does and the select may
 * wait, the cases move to the hostg, which holds them until the select
 * starts (and after, while it waits). */
int weft_lua_select(weft_case *cs, int n, int nonblock) {
    hostg *h = weft_hostg_self();
    if (!h)
        return SEL_NOTG;
    if (n < 0)
        return SEL_BAD;
    int rc = weft_select_start(cs, n, 1);
    if (rc < -1)
        return SEL_BAD; /* nothing taken: the caller frees its send values */
    if (rc == -1 && !nonblock) {
        if (!weft_hostg_reserve_cases(h, n))
            return SEL_BAD;
        if (n)
            memcpy(h->cases, cs, (size_t)n * sizeof *cs);
        h->ncases = n;
        op_block(h, WEFT_HOSTOP_SELECT, NULL);
        return SEL_BLOCK;
    }
    weft_cases_drop_unsent(cs, n, rc);
    return rc;
}

int weft_hostg_start(hostg *h) {
    int rc = WEFT_PENDING;
    switch (h->op) {
    case WEFT_HOSTOP_SEND:
        rc = weft_chan_send_start(h->opnd.chan, &h->held);
        if (rc != WEFT_ECLOSED)
            memset(&h->held, 0, sizeof h->held); /* the channel has it */
        if (rc != WEFT_PENDING)
            h->oprc = rc == WEFT_OK ? WL_DONE : WL_CLOSED;
        break;
    case WEFT_HOSTOP_RECV:
        rc = weft_chan_recv_start(h->opnd.chan, &h->held);
        if (rc != WEFT_PENDING)
            h->oprc = rc == 1 ? WL_DONE : WL_CLOSED;
        break;
    case WEFT_HOSTOP_SELECT:
        rc = weft_select_start(h->cases, h->ncases, 0);
        if (rc != WEFT_PENDING)
            h->oprc = rc;
        break;
    case WEFT_HOSTOP_SEMA: /* sync.c: acquire cannot fail once recorded */
        rc = weft_sema_acquire_start(h->opnd.sema.s, h->opnd.sema.k, h->opnd.sema.reason);
        if (rc != WEFT_PENDING)
            h->oprc = WL_DONE;
        break;
    case WEFT_HOSTOP_IO: /* io.c: arguments checked when recorded */
        rc = weft_io_wait_start(h->opnd.io.fd, h->opnd.io.events, h->opnd.io.timeout);
        if (rc != WEFT_PENDING)
            h->oprc = rc;
        break;
    case WEFT_HOSTOP_SLEEP: /* no finish: done here */
        rc = weft_sleep_start(h->opnd.sleepns);
        h->op = WEFT_HOSTOP_NONE;
        return rc == WEFT_PENDING ? WEFT_PENDING : WEFT_OK;
    }
    h->opdone = rc != WEFT_PENDING;
    return rc == WEFT_PENDING ? WEFT_PENDING : WEFT_OK;
}

/* The finishes: the early result if the operation completed as it started. */
static bool op_finish(hostg *h) {
    bool early = h->opdone;
    h->op = WEFT_HOSTOP_NONE;
    h->opdone = false;
    return early;
}

int weft_lua_send_finish(const lchan *uc) {
    (void)uc; /* see Lifetime */
    hostg *h = weft_hostg_self();
    if (op_finish(h)) {
        weft_codec_val_free(&h->held); /* closed: the value came back */
        return h->oprc;
    }
    weft_val v;
    if (weft_chan_send_finish(&v) == WEFT_OK)
        return WL_DONE;
    weft_codec_val_free(&v);
    return WL_CLOSED;
}

int weft_lua_recv_finish(const lchan *uc, weft_val *out) {
    (void)uc; /* see Lifetime */
    hostg *h = weft_hostg_self();
    if (op_finish(h)) {
        *out = h->held;
        memset(&h->held, 0, sizeof h->held);
        return h->oprc;
    }
    return weft_chan_recv_finish(out) == 1 ? WL_DONE : WL_CLOSED;
}

int weft_lua_select_finish(weft_case *res) {
    hostg *h = weft_hostg_self();
    int i = op_finish(h) ? h->oprc : weft_select_finish(h->cases, h->ncases);
    if (i == WEFT_EAGAIN) { /* woken to select again (chan.c): the cases stay held */
        op_block(h, WEFT_HOSTOP_SELECT, NULL);
        return SEL_BLOCK;
    }
    weft_hostg_select_done(h, i, res);
    return i;
}

/* Frees what the calling goroutine holds for an operation that will not
 * start after all (Lua cannot yield here). */
void weft_lua_drop(void) {
    hostg *h = weft_hostg_self();
    if (h) {
        weft_hostg_select_done(h, -1, NULL);
        h->op = WEFT_HOSTOP_NONE;
        h->opdone = false;
    }
}

/* len bytes at p as a value with the given tag (WEFT_TAG_RAW for a string's
 * bytes, WEFT_CODEC_TAG_PLAIN for serialized plain data). -1 if out of
 * memory. */
int weft_lua_val_bytes(weft_val *v, const void *p, size_t len, int tag) {
    /* mostly received, and freed, on another processor's thread */
    void *dst = len <= UINT32_MAX ? weft_val_alloc_pooled(v, (uint32_t)len, (uint16_t)tag) : NULL;
    if (!dst) {
        v->len = 0, v->flags = 0, v->tag = WEFT_TAG_RAW;
        return -1;
    }
    memcpy(dst, p, len);
    return 0;
}

/* Frees a value's heap buffer once Lua has read it (the value itself may
 * have been reused meanwhile); flags: the value's. */
void weft_lua_free(void *p, int flags) {
    weft_val_buffer_free(p, (uint16_t)flags);
}

void weft_lua_val_free(weft_val *v) {
    weft_codec_val_free(v);
}
