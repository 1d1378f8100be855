/*
 * bindings/core.c — `weft_core`, the seam between the engine and LuaJIT
 * (a C module named so that build/weft_core.so sits beside the build/weft
 * binary).
 *
 * A classic C module (never called through the FFI where it runs Lua or
 * yields: DESIGN rules 2 and 3). It runs the scheduler inside weft.run (the
 * calling thread becomes processor 0) and is the engine's host for Lua
 * goroutines: each is a Lua coroutine of processor 0's VM, anchored in the
 * registry, resumed by host_run() from the scheduler loop.
 *
 * Blocking protocol (lua/weft/init.lua drives it): a blocking operation is
 * core.<op>(..., can_wait). It completes at once (returns 0 and results),
 * or, when it must wait, queues the goroutine with the engine's two-phase
 * *_start call and returns 1; the Lua side then yields WAIT (through any user
 * coroutines, see the coroutine wrappers in init.lua) back to host_run, which
 * reports the goroutine parked. When a waker readies it, host_run resumes it
 * and the Lua side calls core.<op>_finish() for the result. With can_wait
 * false (Lua cannot yield here) an operation that would have to wait raises
 * "cannot block here: ..." instead, having queued nothing.
 *
 * Invariants: only processor 0's thread touches the VM (every hosted
 * goroutine is bound to processor 0 in this version); a goroutine's pending
 * select cases live in its hostg until the select finishes; every value
 * leaving Lua is encoded by the codec and freed exactly once: by the receiver
 * after decoding, by weft_codec_val_free when dropped, or here on error.
 */
#include "codec.h"
#include "core.h"
#include "transfer.h"

#include <dlfcn.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>

#define CHAN_MT "weft.chan"
#define TIMER_MT "weft.timer"

/* Userdata payloads start with the engine object (the codec's handle rule). */
typedef struct lchan {
    weft_chan *c;
} lchan;
typedef struct ltimer {
    weft_timer *t;
} ltimer;

/* A Lua goroutine. */
typedef struct hostg {
    lua_State *co;
    int ref;   /* anchors co in the registry */
    int nargs; /* values to pass to the next resume */
    bool main;
    const char *name;
    weft_case *cases; /* a select in progress */
    int ncases, capcases;
} hostg;

static char wait_marker, yield_marker;

/* State of the running weft.run (one at a time). */
static struct {
    lua_State *L;  /* the thread that called weft.run (processor 0's VM) */
    int err_ref;   /* the first uncaught error, as a message with traceback */
    int nresults;  /* main's results, moved onto L's stack */
} R = {NULL, LUA_NOREF, 0};

/* ---- the host ------------------------------------------------------------- */

static void hostg_free(hostg *h) {
    if (R.L)
        luaL_unref(R.L, LUA_REGISTRYINDEX, h->ref);
    for (int i = 0; i < h->ncases; i++)
        if (h->cases[i].dir == WEFT_CASE_SEND)
            weft_codec_val_free(&h->cases[i].val);
    free(h->cases);
    free(h);
}

static void host_run(weft_proc *p, weft_g *g) {
    (void)p;
    hostg *h = g->host;
    lua_State *co = h->co;
    int nargs = h->nargs;
    h->nargs = 0;
    int rc = lua_resume(co, nargs);
    if (rc == LUA_YIELD) {
        g->parkop = lua_touserdata(co, -1) == &wait_marker ? WEFT_PARK_WAIT : WEFT_PARK_YIELD;
        lua_settop(co, 0);
        return;
    }
    if (rc == 0) {
        if (h->main) {
            int n = lua_gettop(co);
            if (lua_checkstack(R.L, n + 1)) {
                lua_xmove(co, R.L, n);
                R.nresults = n;
            }
        }
    } else if (R.err_ref == LUA_NOREF) {
        if (!lua_isstring(co, -1) && luaL_callmeta(co, -1, "__tostring"))
            lua_replace(co, -2); /* e.g. a luassert failure */
        const char *msg = lua_tostring(co, -1);
        lua_pushfstring(R.L, "error in goroutine %d: %s", (int)g->id,
                        msg ? msg : "(error object is not a string)");
        luaL_traceback(R.L, co, lua_tostring(R.L, -1), 0);
        lua_remove(R.L, -2);
        R.err_ref = luaL_ref(R.L, LUA_REGISTRYINDEX);
        weft_shutdown(); /* an uncaught error is fatal, as a panic is in Go */
    }
    hostg_free(h);
    g->host = NULL;
    g->parkop = WEFT_PARK_EXIT;
}

static void host_discard(weft_g *g) {
    hostg_free(g->host);
    g->host = NULL;
}

static const weft_host lua_host = {host_run, host_discard};

/* A hostg for function at index fidx and the nargs values after it. */
static hostg *hostg_new(lua_State *L, int fidx, int nargs) {
    hostg *h = calloc(1, sizeof *h);
    if (!h)
        luaL_error(L, "out of memory");
    h->co = lua_newthread(L);
    h->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, fidx);
    for (int i = 1; i <= nargs; i++)
        lua_pushvalue(L, fidx + i);
    lua_xmove(L, h->co, nargs + 1);
    h->nargs = nargs;
    return h;
}

/* ---- engine and goroutines ------------------------------------------------- */

/* core.run(procs, main, ...) -> true, main's results | false, the first
 * uncaught error (message and traceback). */
static int l_run(lua_State *L) {
    int procs = (int)luaL_optinteger(L, 1, 0);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (R.L)
        return luaL_error(L, "weft.run: the engine is already running");
    int base = lua_gettop(L);
    hostg *h = hostg_new(L, 2, base - 2);
    h->main = true;
    R.L = L;
    R.err_ref = LUA_NOREF;
    R.nresults = 0;
    weft_config cfg = {procs, 0};
    int rc = weft_run_hosted(&cfg, &lua_host, h);
    R.L = NULL;
    if (rc != WEFT_OK) {
        if (rc == WEFT_ESTATE)
            return luaL_error(L, "weft.run: another engine is running in this process");
        return luaL_error(L, "weft.run: cannot start the engine (%d)", rc);
    }
    if (R.err_ref != LUA_NOREF) {
        /* Reported, not raised from here: init.lua raises it. */
        lua_pushboolean(L, 0);
        lua_rawgeti(L, LUA_REGISTRYINDEX, R.err_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, R.err_ref);
        R.err_ref = LUA_NOREF;
        return 2;
    }
    lua_pushboolean(L, 1);
    lua_insert(L, -1 - R.nresults);
    return 1 + R.nresults;
}

static weft_g *current(lua_State *L, const char *what) {
    weft_g *g = weft_g_self();
    if (!g || g->kind != WEFT_G_HOSTED)
        luaL_error(L, "weft.%s: not inside a goroutine (start one with weft.run)", what);
    return g;
}

/* core.go(fn, ...) -> id */
static int l_go(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    current(L, "go");
    hostg *h = hostg_new(L, 1, lua_gettop(L) - 1);
    int64_t id = weft_go_hosted(h);
    if (id < 0) {
        hostg_free(h);
        return luaL_error(L, "weft.go: cannot start a goroutine (%d)", (int)id);
    }
    lua_pushnumber(L, (lua_Number)id);
    return 1;
}

static int l_id(lua_State *L) {
    lua_pushnumber(L, (lua_Number)weft_id());
    return 1;
}

static int l_count(lua_State *L) {
    lua_pushnumber(L, (lua_Number)weft_count());
    return 1;
}

static int l_procs(lua_State *L) {
    lua_pushinteger(L, weft_procs());
    return 1;
}

static int l_now(lua_State *L) {
    lua_pushnumber(L, weft_now());
    return 1;
}

/* core.sleep(seconds) -> 1 if the goroutine must wait (yield WAIT), 0 if it
 * should just yield (zero or negative time). */
static int l_sleep(lua_State *L) {
    double s = luaL_checknumber(L, 1);
    current(L, "sleep");
    int64_t ns = s != s || s <= 0 ? 0 : s > 9e9 ? (int64_t)9e18 : (int64_t)(s * 1e9);
    lua_pushinteger(L, weft_sleep_start(ns) == WEFT_PENDING ? 1 : 0);
    return 1;
}

/* ---- channels --------------------------------------------------------------- */

static weft_chan *checkchan(lua_State *L, int idx) {
    lchan *lc = luaL_checkudata(L, idx, CHAN_MT);
    return lc->c;
}

static int push_chan(lua_State *L, void *obj) {
    lchan *lc = lua_newuserdata(L, sizeof *lc);
    lc->c = obj;
    luaL_getmetatable(L, CHAN_MT);
    lua_setmetatable(L, -2);
    return 1;
}

static int l_chan(lua_State *L) {
    lua_Number cap = luaL_optnumber(L, 1, 0);
    if (cap < 0 || cap != (lua_Number)(size_t)cap || cap > 1e9)
        return luaL_error(L, "weft.chan: capacity must be a whole number from 0 to 1e9, got %f",
                          (double)cap);
    weft_chan *c = weft_chan_new((size_t)cap);
    if (!c)
        return luaL_error(L, "weft.chan: out of memory");
    return push_chan(L, c);
}

static int l_chan_gc(lua_State *L) {
    lchan *lc = luaL_checkudata(L, 1, CHAN_MT);
    weft_chan_release(lc->c);
    lc->c = NULL;
    return 0;
}

static int l_len(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)weft_chan_len(checkchan(L, 1)));
    return 1;
}

static int l_cap(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)weft_chan_cap(checkchan(L, 1)));
    return 1;
}

static int l_close(lua_State *L) {
    if (weft_chan_close(checkchan(L, 1)) == WEFT_ECLOSED)
        return luaL_error(L, "close of closed channel");
    return 0;
}

static int l_tostring(lua_State *L) {
    weft_chan *c = checkchan(L, 1);
    lua_pushfstring(L, "weft.chan: %p (cap %d)", (void *)c, (int)weft_chan_cap(c));
    return 1;
}

static void encode(lua_State *L, int idx, weft_val *v) {
    char err[256];
    if (weft_codec_encode(L, idx, v, err, sizeof err) != 0)
        luaL_error(L, "%s", err);
}

static int decode(lua_State *L, weft_val *v) {
    char err[256];
    int rc = weft_codec_decode(L, v, err, sizeof err);
    weft_codec_val_free(v);
    if (rc != 0)
        return luaL_error(L, "%s", err);
    return 1;
}

/* Pushes a receive's results: the decoded value and true, or nil and false
 * for a closed channel. */
static int push_received(lua_State *L, int got, weft_val *v) {
    if (got == 1) {
        decode(L, v);
        lua_pushboolean(L, 1);
    } else {
        lua_pushnil(L);
        lua_pushboolean(L, 0);
    }
    return 2;
}

static int can_wait(lua_State *L, int idx) {
    return lua_toboolean(L, idx);
}

/* core.send(ch, v, can_wait) -> 0 done | 1 wait; raises on closed. */
static int l_send(lua_State *L) {
    weft_chan *c = checkchan(L, 1);
    if (lua_isnoneornil(L, 2))
        return luaL_error(L, "send of nil value");
    current(L, "send");
    weft_val v;
    encode(L, 2, &v);
    int rc = can_wait(L, 3) ? weft_chan_send_start(c, &v) : weft_chan_trysend(c, v);
    if (rc == WEFT_OK) {
        lua_pushinteger(L, 0);
        return 1;
    }
    if (rc == WEFT_PENDING) {
        lua_pushinteger(L, 1);
        return 1;
    }
    weft_codec_val_free(&v);
    if (rc == WEFT_ECLOSED)
        return luaL_error(L, "send on closed channel");
    lua_pushinteger(L, 2); /* would block where Lua cannot yield */
    return 1;
}

static int l_send_finish(lua_State *L) {
    weft_val v;
    if (weft_chan_send_finish(&v) == WEFT_ECLOSED) {
        weft_codec_val_free(&v);
        return luaL_error(L, "send on closed channel");
    }
    return 0;
}

/* core.recv(ch, can_wait) -> 0, v, ok | 1 (wait) | 2 (would block) */
static int l_recv(lua_State *L) {
    weft_chan *c = checkchan(L, 1);
    current(L, "recv");
    weft_val v;
    int rc = can_wait(L, 2) ? weft_chan_recv_start(c, &v) : weft_chan_tryrecv(c, &v);
    if (rc == WEFT_PENDING || rc == WEFT_EAGAIN) {
        lua_pushinteger(L, rc == WEFT_PENDING ? 1 : 2);
        return 1;
    }
    lua_pushinteger(L, 0);
    return 1 + push_received(L, rc, &v);
}

static int l_recv_finish(lua_State *L) {
    weft_val v;
    return push_received(L, weft_chan_recv_finish(&v), &v);
}

/* ---- select ------------------------------------------------------------------ */

/* Reports the chosen case i of h's select: returns i (1-based), v, ok for a
 * receive; frees the values of send cases not taken. */
static int select_report(lua_State *L, hostg *h, int i) {
    int n = h->ncases;
    h->ncases = 0;
    for (int k = 0; k < n; k++)
        if (h->cases[k].dir == WEFT_CASE_SEND && (k != i || !h->cases[k].ok))
            weft_codec_val_free(&h->cases[k].val);
    if (i < 0) {
        lua_pushinteger(L, 0);
        return 1;
    }
    weft_case *cs = &h->cases[i];
    if (cs->dir == WEFT_CASE_SEND && !cs->ok)
        return luaL_error(L, "send on closed channel");
    lua_pushinteger(L, i + 1);
    if (cs->dir == WEFT_CASE_SEND)
        return 1;
    return 1 + push_received(L, cs->ok, &cs->val);
}

/* core.select(n, nonblock, can_wait, dir1, ch1, v1, dir2, ch2, v2, ...)
 * dir: 1 recv, 2 send; ch may be nil. Returns 1 (wait), 2 (would block), or
 * the chosen case's index (0 for none with nonblock) and its results. */
static int l_select(lua_State *L) {
    int n = (int)luaL_checkinteger(L, 1);
    int nonblock = lua_toboolean(L, 2);
    int wait = can_wait(L, 3);
    weft_g *g = current(L, "select");
    hostg *h = g->host;
    if (n > h->capcases) {
        weft_case *cs = realloc(h->cases, (size_t)n * sizeof *cs);
        if (!cs)
            return luaL_error(L, "out of memory");
        h->cases = cs;
        h->capcases = n;
    }
    h->ncases = 0;
    for (int i = 0; i < n; i++) {
        int b = 4 + 3 * i;
        int dir = (int)lua_tointeger(L, b);
        weft_chan *c = lua_isnil(L, b + 1) ? NULL : checkchan(L, b + 1);
        h->cases[i] = dir == WEFT_CASE_SEND ? weft_case_send(c, weft_val_int(0)) : weft_case_recv(c);
        h->ncases = i + 1;
        if (dir == WEFT_CASE_SEND) {
            if (lua_isnil(L, b + 2)) {
                select_report(L, h, -1);
                return luaL_error(L, "send of nil value");
            }
            encode(L, b + 2, &h->cases[i].val);
        }
    }
    int rc = weft_select_start(h->cases, n, nonblock || !wait);
    if (rc == WEFT_PENDING) {
        lua_pushinteger(L, 1);
        return 1;
    }
    if (rc == -1 && !nonblock) { /* had to wait where Lua cannot yield */
        select_report(L, h, -1);
        lua_pushinteger(L, 2);
        return 1;
    }
    if (rc < -1) {
        select_report(L, h, -1);
        return luaL_error(L, "weft.select: bad cases (%d)", rc);
    }
    lua_pushinteger(L, 0);
    return 1 + select_report(L, h, rc);
}

static int l_select_finish(lua_State *L) {
    weft_g *g = current(L, "select");
    hostg *h = g->host;
    int i = weft_select_finish(h->cases, h->ncases);
    return select_report(L, h, i);
}

/* ---- native goroutines ----------------------------------------------------------- */

/* A native goroutine started from Lua: fn(arg), where arg is the caller's
 * pointer, or a NULL-terminated array of the channels given (each retained
 * until fn returns). */
typedef struct native_start {
    void (*fn)(void *);
    void *arg;
    int nchans;
    weft_chan *chans[];
} native_start;

static void native_entry(void *p) {
    native_start *ns = p;
    ns->fn(ns->nchans ? (void *)ns->chans : ns->arg);
    for (int i = 0; i < ns->nchans; i++)
        weft_chan_release(ns->chans[i]);
    free(ns);
}

/* core.go_native(fn_address, arg_address | nil, chan...) -> id */
static int l_go_native(lua_State *L) {
    lua_Number fa = luaL_checknumber(L, 1);
    if (fa <= 0 || fa != (lua_Number)(uintptr_t)fa)
        return luaL_error(L, "weft.go_native: cfunc is not a C function");
    int nchans = lua_gettop(L) - 2;
    if (nchans < 0)
        nchans = 0;
    native_start *ns = calloc(1, sizeof *ns + (size_t)(nchans + 1) * sizeof(weft_chan *));
    if (!ns)
        return luaL_error(L, "out of memory");
    union {
        uintptr_t u;
        void (*fn)(void *);
    } cast = {(uintptr_t)fa};
    ns->fn = cast.fn;
    ns->arg = lua_isnumber(L, 2) ? (void *)(uintptr_t)lua_tonumber(L, 2) : NULL;
    for (int i = 0; i < nchans; i++) {
        lchan *lc = lua_touserdata(L, 3 + i);
        if (!lc || !lua_getmetatable(L, 3 + i)) {
            free(ns);
            return luaL_error(L, "weft.go_native: argument %d is not a channel", 3 + i);
        }
        luaL_getmetatable(L, CHAN_MT);
        int ok = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
        if (!ok) {
            free(ns);
            return luaL_error(L, "weft.go_native: argument %d is not a channel", 3 + i);
        }
        ns->chans[i] = lc->c;
    }
    for (int i = 0; i < nchans; i++)
        weft_chan_retain(ns->chans[i]);
    ns->nchans = nchans;
    int64_t id = weft_go(native_entry, ns);
    if (id < 0) {
        for (int i = 0; i < nchans; i++)
            weft_chan_release(ns->chans[i]);
        free(ns);
        return luaL_error(L, "weft.go_native: the engine is not running");
    }
    lua_pushnumber(L, (lua_Number)id);
    return 1;
}

/* ---- timers -------------------------------------------------------------------- */

static int l_after(lua_State *L) {
    weft_chan *c = weft_after(luaL_checknumber(L, 1));
    if (!c)
        return luaL_error(L, "weft.after: the engine is not running");
    return push_chan(L, c);
}

static weft_timer *checktimer(lua_State *L, int idx) {
    ltimer *lt = luaL_checkudata(L, idx, TIMER_MT);
    if (!lt->t)
        luaL_error(L, "weft: timer already released");
    return lt->t;
}

/* core.timer(seconds, is_ticker) -> timer, chan */
static int l_timer(lua_State *L) {
    double s = luaL_checknumber(L, 1);
    int ticker = lua_toboolean(L, 2);
    weft_timer *t = ticker ? weft_ticker_new(s) : weft_timer_new(s);
    if (!t) {
        if (ticker && weft_procs() > 0)
            return luaL_error(L, "weft.ticker: period must be positive, got %f", s);
        return luaL_error(L, "weft.timer: the engine is not running");
    }
    ltimer *lt = lua_newuserdata(L, sizeof *lt);
    lt->t = t;
    luaL_getmetatable(L, TIMER_MT);
    lua_setmetatable(L, -2);
    push_chan(L, weft_chan_retain(weft_timer_chan(t)));
    return 2;
}

static int l_timer_stop(lua_State *L) {
    lua_pushboolean(L, weft_timer_stop(checktimer(L, 1)));
    return 1;
}

static int l_timer_reset(lua_State *L) {
    lua_pushboolean(L, weft_timer_reset(checktimer(L, 1), luaL_checknumber(L, 2)));
    return 1;
}

static int l_timer_gc(lua_State *L) {
    ltimer *lt = luaL_checkudata(L, 1, TIMER_MT);
    if (lt->t)
        weft_timer_free(lt->t);
    lt->t = NULL;
    return 0;
}

/* ---- the module ------------------------------------------------------------------ */

static void *chan_retain(void *obj) {
    return weft_chan_retain(obj);
}
static void chan_release(void *obj) {
    weft_chan_release(obj);
}

/* Loaded by require, this library's symbols are local to it; C stages
 * loaded later with ffi.load must link against this very engine, so the
 * library makes its symbols global (in the weft binary they already are). */
static void export_engine_symbols(void) {
    Dl_info info;
    if (dladdr((void *)export_engine_symbols, &info) && info.dli_fname)
        dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
}

int luaopen_weft_core(lua_State *L) {
    export_engine_symbols();
    static const luaL_Reg chan_mt[] = {
        {"__gc", l_chan_gc}, {"__len", l_len}, {"__tostring", l_tostring}, {NULL, NULL}};
    static const luaL_Reg timer_mt[] = {{"__gc", l_timer_gc}, {NULL, NULL}};
    static const luaL_Reg fns[] = {
        {"run", l_run},
        {"go", l_go},
        {"id", l_id},
        {"count", l_count},
        {"procs", l_procs},
        {"now", l_now},
        {"sleep", l_sleep},
        {"chan", l_chan},
        {"len", l_len},
        {"cap", l_cap},
        {"close", l_close},
        {"send", l_send},
        {"send_finish", l_send_finish},
        {"recv", l_recv},
        {"recv_finish", l_recv_finish},
        {"select", l_select},
        {"select_finish", l_select_finish},
        {"after", l_after},
        {"timer", l_timer},
        {"timer_stop", l_timer_stop},
        {"timer_reset", l_timer_reset},
        {"go_native", l_go_native},
        {NULL, NULL},
    };
    luaL_newmetatable(L, CHAN_MT);
    luaL_register(L, NULL, chan_mt);
    lua_pop(L, 1);
    luaL_newmetatable(L, TIMER_MT);
    luaL_register(L, NULL, timer_mt);
    lua_pop(L, 1);
    weft_codec_register_handle(L, CHAN_MT, chan_retain, chan_release, push_chan);
    /* Blobs the engine drops (a channel freed with values buffered) hold
     * references to engine objects: the codec frees them. */
    weft_val_register_disposer(WEFT_CODEC_TAG_BLOB, weft_codec_val_free);

    lua_newtable(L);
    luaL_register(L, NULL, fns);
    lua_pushlightuserdata(L, &wait_marker);
    lua_setfield(L, -2, "WAIT");
    lua_pushlightuserdata(L, &yield_marker);
    lua_setfield(L, -2, "YIELD");
    luaL_getmetatable(L, CHAN_MT);
    lua_setfield(L, -2, "chan_mt");
    lua_pushstring(L, WEFT_VERSION);
    lua_setfield(L, -2, "version");
    weft_transfer_register(L);
    return 1;
}
