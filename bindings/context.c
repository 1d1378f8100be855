/*
 * bindings/context.c — contexts (weft.context): trees of cancellation with
 * deadlines and request-scoped values, as engine objects shared by every
 * processor's VM.
 *
 * A context is a reference-counted C object. Lua holds it in a full userdata
 * (metatable "weft.context") registered with the codec as a handle, so a
 * context sent over a channel or to weft.spawn is the SAME context in the
 * other VM. Three kinds:
 *   background  one static object; never cancelled; no deadline, no values
 *   cancel      with_cancel / with_deadline: can be cancelled; has a lock,
 *               an error, a cause, a done channel (made on first use), a
 *               deadline timer, and the list of its cancelable children
 *   value       with_value: one key and value; its done, err and cause are
 *               those of its nearest cancelable ancestor (ctx->canc)
 *
 * Cancellation. Every cancelable context registers with its nearest
 * cancelable ancestor (ctx->pcanc), value contexts in between being skipped.
 * Cancelling marks the context (err, cause, closes done, stops its timer)
 * and detaches its children list under its lock, then cancels each detached
 * child the same way with the same error and cause, iteratively (a worklist
 * threaded through ctx->work, so deep chains cost no C stack: the deadline
 * timer runs the cancel on a native goroutine's small stack). A context
 * cancelled through its own cancel function, or by its deadline, then
 * unlinks itself from its ancestor, so a long-lived parent's list holds only
 * live, uncancelled children: a million short-lived children that are
 * cancelled leave it empty. A child's cancel never touches its parent.
 *
 * References. A child holds one on its parent (values are found by walking
 * up, and the parent's lock must outlive the child's membership). A parent's
 * children list is weak: a child whose last reference goes unlinks itself
 * under the parent's lock, and a canceller walking the list only takes
 * children it can still retain (refs > 0). A pending deadline timer holds one
 * on its context, dropped when the timer fires or is stopped by the cancel.
 * Consequence: a context whose engine stops while its timer is pending is
 * never freed (the engine discards pending timers without running them).
 *
 * Invariants
 *  - err goes from 0 to CANCELED or DEADLINE once, under mu, after cause is
 *    set; cause, once err is set, never changes (read without the lock after
 *    an acquire load of err).
 *  - k->linked (k is in k->pcanc's list) and the list links change only
 *    under k->pcanc->mu; a detached child's ->work link belongs to the
 *    canceller that detached it.
 *  - done is closed exactly once: by the cancel that set err, or at its
 *    creation when err was already set (both under mu).
 *  - timer is taken out of the context under mu by the one cancel that set
 *    err, which stops and frees it.
 *
 * Lock order: a parent's mu, then (none held) a child's: cancel never holds
 * two context locks; creation holds the ancestor's mu alone to link.
 * Under a context's mu only a channel lock (closing done) or a timer lock
 * (weft_after_func) is taken; neither calls back into contexts.
 *
 * Values. Keys must be strings, numbers, booleans or engine objects (a
 * channel, a context, ...): they are encoded with the codec and compared by
 * value (strings, numbers, booleans) or by identity (engine objects), which
 * means the same thing in every VM. Tables and functions are refused as
 * keys (a table's identity does not survive a copy to another VM); a fresh
 * channel makes a private key. Values are stored encoded and decoded by each
 * value() call: tables come back as copies, engine objects by reference.
 */
#include "codec.h"
#include "host.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define CTX_MT "weft.context"

enum { KIND_BACKGROUND, KIND_CANCEL, KIND_VALUE };
enum { ERR_NONE, ERR_CANCELED, ERR_DEADLINE };

static const char *const err_text[] = {NULL, "context canceled", "context deadline exceeded"};

/* A cancellation cause, shared by a context and the descendants its cancel
 * reached. */
typedef struct cause {
    atomic_int refs;
    weft_val v;
} cause;

typedef struct wctx {
    atomic_int refs;
    int kind;
    struct wctx *parent; /* strong; NULL for background */
    struct wctx *canc;   /* nearest cancelable context: self, an ancestor, or NULL */
    double deadline;     /* effective, on the weft_now() clock; 0: none */
    /* cancel contexts */
    weft_mutex mu;
    atomic_int err;
    cause *cause;
    weft_chan *done;
    weft_timer *timer;
    struct wctx *kids; /* cancelable children (weak) */
    size_t nkids;
    /* membership in pcanc's list (pcanc->mu) */
    struct wctx *pcanc;
    struct wctx *prev, *next;
    bool linked;
    struct wctx *work; /* the canceller's worklist */
    /* value contexts */
    weft_val key, val;
    bool hasval; /* false: the value is nil */
} wctx;

typedef struct lctx {
    wctx *c;
} lctx;

static wctx background = {.kind = KIND_BACKGROUND};
static atomic_long live; /* contexts allocated and not yet freed */

/* ---- references ------------------------------------------------------------------- */

static void *ctx_retain(void *obj) {
    wctx *c = obj;
    if (c->kind != KIND_BACKGROUND)
        atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

/* A reference on c if it is still alive (a weak pointer's upgrade). */
static bool ctx_try_retain(wctx *c) {
    int r = atomic_load_explicit(&c->refs, memory_order_relaxed);
    while (r > 0)
        if (atomic_compare_exchange_weak_explicit(&c->refs, &r, r + 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return true;
    return false;
}

static void cause_release(cause *cs) {
    if (cs && atomic_fetch_sub_explicit(&cs->refs, 1, memory_order_acq_rel) == 1) {
        weft_codec_val_free(&cs->v);
        free(cs);
    }
}

static cause *cause_retain(cause *cs) {
    if (cs)
        atomic_fetch_add_explicit(&cs->refs, 1, memory_order_relaxed);
    return cs;
}

/* Takes c out of its ancestor's children list, if it is still there. */
static void unlink_from_parent(wctx *c) {
    wctx *p = c->pcanc;
    if (!p)
        return;
    weft_mutex_lock(&p->mu);
    if (c->linked) {
        if (c->prev)
            c->prev->next = c->next;
        else
            p->kids = c->next;
        if (c->next)
            c->next->prev = c->prev;
        c->prev = c->next = NULL;
        c->linked = false;
        p->nkids--;
    }
    weft_mutex_unlock(&p->mu);
}

/* Drops a reference; the last one frees the context and drops its
 * reference on the parent, and so on up (iteratively). */
static void ctx_release(void *obj) {
    wctx *c = obj;
    while (c && c->kind != KIND_BACKGROUND &&
           atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1) {
        wctx *parent = c->parent;
        unlink_from_parent(c);
        if (c->timer) /* not reached: a pending timer holds a reference */
            weft_timer_free(c->timer);
        if (c->done)
            weft_chan_release(c->done);
        cause_release(c->cause);
        weft_codec_val_free(&c->key);
        weft_codec_val_free(&c->val);
        free(c);
        atomic_fetch_sub_explicit(&live, 1, memory_order_relaxed);
        c = parent;
    }
}

/* ---- cancellation ------------------------------------------------------------------- */

/* Cancels c alone (if it was not) and pushes the children it still has,
 * each retained, onto *work. true if this call cancelled it. */
static bool cancel_one(wctx *c, int err, cause *cs, wctx **work) {
    weft_mutex_lock(&c->mu);
    if (atomic_load_explicit(&c->err, memory_order_relaxed) != ERR_NONE) {
        weft_mutex_unlock(&c->mu);
        return false;
    }
    c->cause = cause_retain(cs);
    atomic_store_explicit(&c->err, err, memory_order_release);
    if (c->done)
        weft_chan_close(c->done);
    for (wctx *k = c->kids; k; k = k->next) {
        k->linked = false;
        if (ctx_try_retain(k)) { /* else it is being freed: it will find itself unlinked */
            k->work = *work;
            *work = k;
        }
    }
    c->kids = NULL;
    c->nkids = 0;
    weft_timer *t = c->timer;
    c->timer = NULL;
    weft_mutex_unlock(&c->mu);
    if (t) {
        if (weft_timer_stop(t))
            ctx_release(c); /* the timer's reference: it will not fire */
        weft_timer_free(t);
    }
    return true;
}

/* Cancels c and every descendant with err and cs; remove: c then leaves
 * its ancestor's list (its own cancel, its deadline). */
static void cancel_tree(wctx *c, int err, cause *cs, bool remove) {
    wctx *work = NULL;
    if (!cancel_one(c, err, cs, &work))
        return;
    while (work) {
        wctx *k = work;
        work = k->work;
        k->work = NULL;
        cancel_one(k, err, cs, &work);
        ctx_release(k);
    }
    if (remove)
        unlink_from_parent(c);
}

static void on_deadline(void *arg) {
    cancel_tree(arg, ERR_DEADLINE, NULL, true);
    ctx_release(arg); /* the timer's reference */
}

/* ---- creation ------------------------------------------------------------------------ */

static wctx *ctx_new(wctx *parent, int kind) {
    wctx *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    atomic_init(&c->refs, 1);
    atomic_init(&c->err, ERR_NONE);
    weft_mutex_init(&c->mu);
    c->kind = kind;
    c->parent = ctx_retain(parent);
    c->canc = kind == KIND_CANCEL ? c : parent->canc;
    c->deadline = parent->deadline;
    atomic_fetch_add_explicit(&live, 1, memory_order_relaxed);
    return c;
}

/* Registers a new cancelable c with its nearest cancelable ancestor, or
 * cancels it at once when that one is cancelled already. */
static void propagate(wctx *c) {
    wctx *p = c->parent->canc;
    if (!p)
        return; /* under background only: nothing can cancel it from above */
    c->pcanc = p;
    weft_mutex_lock(&p->mu);
    int err = atomic_load_explicit(&p->err, memory_order_relaxed);
    if (err == ERR_NONE) {
        c->next = p->kids;
        if (p->kids)
            p->kids->prev = c;
        p->kids = c;
        c->linked = true;
        p->nkids++;
        weft_mutex_unlock(&p->mu);
        return;
    }
    cause *cs = cause_retain(p->cause);
    weft_mutex_unlock(&p->mu);
    cancel_tree(c, err, cs, false);
    cause_release(cs);
}

/* ---- Lua ----------------------------------------------------------------------------- */

static wctx *checkctx(lua_State *L, int idx) {
    lctx *lc = luaL_checkudata(L, idx, CTX_MT);
    return lc->c;
}

static int push_ctx(lua_State *L, void *obj) {
    weft_push_object(L, obj, CTX_MT);
    return 1;
}

static int l_gc(lua_State *L) {
    lctx *lc = luaL_checkudata(L, 1, CTX_MT);
    ctx_release(lc->c);
    lc->c = NULL;
    return 0;
}

static int l_eq(lua_State *L) {
    lua_pushboolean(L, checkctx(L, 1) == checkctx(L, 2));
    return 1;
}

static int l_tostring(lua_State *L) {
    wctx *c = checkctx(L, 1);
    static const char *const kinds[] = {"background", "cancel", "value"};
    lua_pushfstring(L, "weft.context: %p (%s)", (void *)c, kinds[c->kind]);
    return 1;
}

/* core.ctx_background() -> ctx */
static int l_background(lua_State *L) {
    return push_ctx(L, &background);
}

static int push_new(lua_State *L, wctx *c) {
    if (!c)
        return luaL_error(L, "out of memory");
    push_ctx(L, c);
    return 1;
}

/* core.ctx_with_cancel(parent) -> ctx */
static int l_with_cancel(lua_State *L) {
    wctx *c = ctx_new(checkctx(L, 1), KIND_CANCEL);
    if (c)
        propagate(c);
    return push_new(L, c);
}

/* core.ctx_with_deadline(parent, t) -> ctx: t on the weft_now() clock. A
 * parent's earlier deadline wins (the child is then a plain cancel
 * context with the parent's deadline). */
static int l_with_deadline(lua_State *L) {
    wctx *parent = checkctx(L, 1);
    double t = luaL_checknumber(L, 2);
    if (t != t)
        return luaL_argerror(L, 2, "deadline is NaN");
    if (parent->deadline > 0 && parent->deadline <= t)
        return l_with_cancel(L);
    wctx *c = ctx_new(parent, KIND_CANCEL);
    if (!c)
        return luaL_error(L, "out of memory");
    c->deadline = t;
    push_ctx(L, c); /* owns the creation reference from here on */
    propagate(c);
    double delay = t - weft_now();
    if (delay <= 0) {
        cancel_tree(c, ERR_DEADLINE, NULL, true);
        return 1;
    }
    bool failed = false;
    weft_mutex_lock(&c->mu);
    if (atomic_load_explicit(&c->err, memory_order_relaxed) == ERR_NONE) {
        ctx_retain(c); /* the timer's */
        c->timer = weft_after_func(delay, on_deadline, c);
        if (!c->timer) {
            atomic_fetch_sub_explicit(&c->refs, 1, memory_order_relaxed); /* not the last */
            failed = true;
        }
    }
    weft_mutex_unlock(&c->mu);
    if (failed) {
        cancel_tree(c, ERR_CANCELED, NULL, true);
        return luaL_error(L, "weft.context: a deadline needs a running engine (inside weft.run)");
    }
    return 1;
}

/* Encodes the key at idx into *out, or raises. */
static void encode_key(lua_State *L, int idx, weft_val *out) {
    int t = lua_type(L, idx);
    if (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TBOOLEAN && t != LUA_TUSERDATA)
        luaL_error(L, "weft.context: key must be a string, number, boolean or engine object, got %s",
                   luaL_typename(L, idx));
    char err[WEFT_CODEC_ERRLEN];
    if (weft_codec_encode(L, idx, out, err, sizeof err) != 0)
        luaL_error(L, "weft.context: key: %s", err);
}

static bool key_equal(const weft_val *a, const weft_val *b) {
    if (a->tag != b->tag || a->len != b->len)
        return false;
    if (a->tag == WEFT_TAG_NUMBER)
        return a->u.d == b->u.d;
    return memcmp(weft_val_data(a), weft_val_data(b), a->len) == 0;
}

/* core.ctx_with_value(parent, key, value) -> ctx */
static int l_with_value(lua_State *L) {
    wctx *parent = checkctx(L, 1);
    weft_val key, val;
    encode_key(L, 2, &key);
    char err[WEFT_CODEC_ERRLEN];
    if (lua_isnil(L, 3)) {
        memset(&val, 0, sizeof val);
    } else if (weft_codec_encode(L, 3, &val, err, sizeof err) != 0) {
        weft_codec_val_free(&key);
        return luaL_error(L, "weft.context: value: %s", err);
    }
    wctx *c = ctx_new(parent, KIND_VALUE);
    if (!c) {
        weft_codec_val_free(&key);
        weft_codec_val_free(&val);
        return luaL_error(L, "out of memory");
    }
    c->key = key;
    c->val = val;
    c->hasval = !lua_isnil(L, 3);
    return push_new(L, c);
}

/* ctx:value(key) -> the value of the nearest context on the way up that
 * was given key, or nil. */
static int l_value(lua_State *L) {
    wctx *c = checkctx(L, 1);
    weft_val key;
    encode_key(L, 2, &key);
    for (; c; c = c->parent) {
        if (c->kind == KIND_VALUE && key_equal(&c->key, &key)) {
            weft_codec_val_free(&key);
            if (!c->hasval) {
                lua_pushnil(L);
                return 1;
            }
            char err[WEFT_CODEC_ERRLEN];
            if (weft_codec_decode(L, &c->val, err, sizeof err) != 0)
                return luaL_error(L, "weft.context: value: %s", err);
            return 1;
        }
    }
    weft_codec_val_free(&key);
    lua_pushnil(L);
    return 1;
}

/* ctx:done() -> a channel closed when ctx is cancelled; nil for a context
 * that can never be (background and values directly under it). */
static int l_done(lua_State *L) {
    wctx *c = checkctx(L, 1)->canc;
    if (!c) {
        lua_pushnil(L);
        return 1;
    }
    weft_mutex_lock(&c->mu);
    if (!c->done) {
        c->done = weft_chan_new(0);
        if (c->done && atomic_load_explicit(&c->err, memory_order_relaxed) != ERR_NONE)
            weft_chan_close(c->done);
    }
    weft_chan *ch = c->done ? weft_chan_retain(c->done) : NULL;
    weft_mutex_unlock(&c->mu);
    if (!ch)
        return luaL_error(L, "out of memory");
    weft_push_object(L, ch, CHAN_MT);
    return 1;
}

static int ctx_err(wctx *c) {
    return c->canc ? atomic_load_explicit(&c->canc->err, memory_order_acquire) : ERR_NONE;
}

/* ctx:err() -> nil | "context canceled" | "context deadline exceeded" */
static int l_err(lua_State *L) {
    int err = ctx_err(checkctx(L, 1));
    if (err == ERR_NONE)
        lua_pushnil(L);
    else
        lua_pushstring(L, err_text[err]);
    return 1;
}

/* ctx:deadline() -> t | nil */
static int l_deadline(lua_State *L) {
    wctx *c = checkctx(L, 1);
    if (c->deadline > 0)
        lua_pushnumber(L, c->deadline);
    else
        lua_pushnil(L);
    return 1;
}

/* core.ctx_cancel(ctx, cause): cancels ctx (a cancelable context) and its
 * descendants; the first cancel's cause (any copyable value, or nil) is
 * kept. Idempotent. */
static int l_cancel(lua_State *L) {
    wctx *c = checkctx(L, 1);
    if (c->kind != KIND_CANCEL)
        return luaL_argerror(L, 1, "not a cancelable context");
    if (atomic_load_explicit(&c->err, memory_order_acquire) != ERR_NONE)
        return 0;
    cause *cs = NULL;
    if (!lua_isnoneornil(L, 2)) {
        cs = calloc(1, sizeof *cs);
        if (!cs)
            return luaL_error(L, "out of memory");
        atomic_init(&cs->refs, 1);
        char err[WEFT_CODEC_ERRLEN];
        if (weft_codec_encode(L, 2, &cs->v, err, sizeof err) != 0) {
            free(cs);
            return luaL_error(L, "weft.context: cause: %s", err);
        }
    }
    cancel_tree(c, ERR_CANCELED, cs, true);
    cause_release(cs);
    return 0;
}

/* core.ctx_cause(ctx) -> the cause given to the cancel that cancelled ctx
 * (or its ancestor), else its err(); nil while not cancelled. */
static int l_cause(lua_State *L) {
    wctx *c = checkctx(L, 1);
    int err = ctx_err(c);
    if (err == ERR_NONE) {
        lua_pushnil(L);
        return 1;
    }
    cause *cs = c->canc->cause;
    if (!cs) {
        lua_pushstring(L, err_text[err]);
        return 1;
    }
    char msg[WEFT_CODEC_ERRLEN];
    if (weft_codec_decode(L, &cs->v, msg, sizeof msg) != 0)
        return luaL_error(L, "weft.context: cause: %s", msg);
    return 1;
}

/* core.ctx_children(ctx) -> the live, uncancelled cancelable children
 * registered with ctx (diagnostics). */
static int l_children(lua_State *L) {
    wctx *c = checkctx(L, 1);
    size_t n = 0;
    if (c->kind == KIND_CANCEL) {
        weft_mutex_lock(&c->mu);
        n = c->nkids;
        weft_mutex_unlock(&c->mu);
    }
    lua_pushnumber(L, (lua_Number)n);
    return 1;
}

/* core.ctx_live() -> contexts allocated in the process and not yet freed. */
static int l_live(lua_State *L) {
    lua_pushnumber(L, (lua_Number)atomic_load(&live));
    return 1;
}

void weft_context_register(lua_State *L) {
    static const luaL_Reg mt[] = {
        {"__gc", l_gc}, {"__eq", l_eq}, {"__tostring", l_tostring}, {NULL, NULL}};
    static const luaL_Reg methods[] = {
        {"done", l_done}, {"err", l_err}, {"deadline", l_deadline}, {"value", l_value}, {NULL, NULL}};
    static const luaL_Reg fns[] = {
        {"ctx_background", l_background},
        {"ctx_with_cancel", l_with_cancel},
        {"ctx_with_deadline", l_with_deadline},
        {"ctx_with_value", l_with_value},
        {"ctx_cancel", l_cancel},
        {"ctx_cause", l_cause},
        {"ctx_children", l_children},
        {"ctx_live", l_live},
        {NULL, NULL},
    };
    luaL_newmetatable(L, CTX_MT);
    luaL_register(L, NULL, mt);
    lua_newtable(L);
    luaL_register(L, NULL, methods);
    lua_setfield(L, -2, "__index");
    lua_setfield(L, -2, "ctx_mt"); /* core.ctx_mt */
    luaL_register(L, NULL, fns);
    weft_codec_register_handle(L, CTX_MT, ctx_retain, ctx_release, push_ctx);
}
