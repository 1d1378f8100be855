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
 * Blocking: channel operations and select go through the FFI (fast.c,
 * which describes the protocol); this file adds the classic functions they
 * need around it: core.encode/core.decode for values the Lua side does not
 * write itself, and sleep. A goroutine that must wait yields WAIT (through
 * any user coroutines, see the coroutine wrappers in init.lua) back to
 * host_run, which reports it parked; once readied, host_run resumes it and
 * the Lua side collects the result.
 *
 * Invariants: only processor 0's thread touches the VM (every hosted
 * goroutine is bound to processor 0 in this version); a goroutine's pending
 * select cases live in its hostg until the select finishes; every value
 * leaving Lua is encoded by the codec and freed exactly once: by the receiver
 * after decoding, by weft_codec_val_free when dropped, or here on error; a
 * hostg in the reuse pool has no pending select and an empty coroutine.
 */
#include "codec.h"
#include "host.h"
#include "tabkeys.h"
#include "transfer.h"
#include "yieldable.h"

#include <dlfcn.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>

#define TIMER_MT "weft.timer"

typedef struct ltimer {
    weft_timer *t;
} ltimer;

/* ---- engine and goroutines ------------------------------------------------- */

/* core.run(procs, main, ...) -> true, main's results | false, the first
 * uncaught error (message and traceback). */
static int l_run(lua_State *L) {
    int procs = (int)luaL_optinteger(L, 1, 0);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (weft_host_running())
        return luaL_error(L, "weft.run: the engine is already running");
    int base = lua_gettop(L);
    weft_host_begin(L);
    hostg *h = weft_hostg_new(L, base - 2);
    h->main = true;
    weft_config cfg = {procs, 0};
    int rc = weft_run_hosted(&cfg, &weft_lua_host, h);
    if (rc != WEFT_OK)
        weft_hostg_free(h);
    int nresults = weft_host_end();
    char *err = weft_host_take_error();
    if (rc != WEFT_OK) {
        free(err);
        if (rc == WEFT_ESTATE)
            return luaL_error(L, "weft.run: another engine is running in this process");
        return luaL_error(L, "weft.run: cannot start the engine (%d)", rc);
    }
    if (err) {
        /* Reported, not raised from here: init.lua raises it. */
        lua_settop(L, base);
        lua_pushboolean(L, 0);
        lua_pushstring(L, err);
        free(err);
        return 2;
    }
    lua_pushboolean(L, 1);
    lua_insert(L, -1 - nresults);
    return 1 + nresults;
}

static weft_g *current(lua_State *L, const char *what) {
    weft_g *g = weft_g_self();
    if (!g || g->kind != WEFT_G_HOSTED)
        luaL_error(L, "weft.%s: not inside a goroutine (start one with weft.run)", what);
    return g;
}

/* Returns the id of a goroutine just started with host data h, or raises
 * (freeing h) when it could not be. */
static int push_started(lua_State *L, hostg *h, int64_t id, const char *what) {
    if (id < 0) {
        weft_hostg_free(h);
        return luaL_error(L, "weft.%s: cannot start a goroutine (%d)", what, (int)id);
    }
    lua_pushnumber(L, (lua_Number)id);
    return 1;
}

/* core.go(fn, ...) -> id (weft.go itself) */
static int l_go(lua_State *L) {
    if (lua_type(L, 1) != LUA_TFUNCTION)
        return luaL_error(L, "weft.go: fn must be a function, got %s", luaL_typename(L, 1));
    current(L, "go");
    hostg *h = weft_hostg_new(L, lua_gettop(L) - 1);
    weft_hdiag_site(L, 1, h);
    return push_started(L, h, weft_go_hosted(h), "go");
}

/* core.spawn(packed, path, cpath) -> id: an isolate whose VM's starter gets
 * packed (the function and its arguments, packed by lua/weft/transfer.lua,
 * moved) and the spawner's package.path and package.cpath. */
static int l_spawn(lua_State *L) {
    current(L, "spawn");
    const char *path = luaL_optstring(L, 2, NULL), *cpath = luaL_optstring(L, 3, NULL);
    weft_val v;
    if (weft_transfer_take(L, 1, &v) != 0)
        return luaL_argerror(L, 1, "packed value expected");
    hostg *h = weft_hostg_isolate(v, path, cpath);
    if (!h) {
        weft_codec_val_free(&v);
        return luaL_error(L, "out of memory");
    }
    weft_hdiag_site(L, 2, h); /* level 1: weft.spawn */
    return push_started(L, h, weft_go_hosted_portable(h), "spawn");
}

/* core.set_isolate_starter(fn): this VM's starter of isolates. */
static int l_set_isolate_starter(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, WEFT_ISOLATE_STARTER);
    return 0;
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

/* core.sleep(seconds) -> 1 when the goroutine must yield OP to sleep (the
 * sleep is recorded as its operation), 0 when it should just yield (zero or
 * negative time). */
static int l_sleep(lua_State *L) {
    double s = luaL_checknumber(L, 1);
    hostg *h = weft_hostg_self();
    if (!h)
        return luaL_error(L, "weft.sleep: not inside a goroutine (start one with weft.run)");
    if (s != s || s <= 0) {
        lua_pushinteger(L, 0);
        return 1;
    }
    if (weft_sleep_prepare() != WEFT_OK)
        return luaL_error(L, "weft.sleep: out of memory");
    h->op = WEFT_HOSTOP_SLEEP;
    h->opdone = false;
    h->opnd.sleepns = s > 9e9 ? (int64_t)9e18 : (int64_t)(s * 1e9);
    lua_pushinteger(L, 1);
    return 1;
}

/* ---- channels --------------------------------------------------------------- */

static weft_chan *checkchan(lua_State *L, int idx) {
    lchan *lc = luaL_checkudata(L, idx, CHAN_MT);
    return lc->c;
}

static int push_chan(lua_State *L, void *obj) {
    weft_push_object(L, obj, CHAN_MT);
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

/* The weft_val inside a cdata buffer (a weft_val array or a struct whose
 * first member is one: lua_topointer gives the cdata's payload). */
enum { WEFT_LUA_TCDATA = 10 }; /* lua_type() of a cdata in LuaJIT */

static weft_val *valbuf(lua_State *L, int idx) {
    if (lua_type(L, idx) != WEFT_LUA_TCDATA)
        luaL_argerror(L, idx, "value buffer expected");
    return (weft_val *)lua_topointer(L, idx);
}

/* core.encode(v, buf): encodes v into buf, the value that a send then takes
 * (fast.c). Raises "send of nil value" and the codec's errors. */
static int l_encode(lua_State *L) {
    weft_val *out = valbuf(L, 2);
    if (lua_isnoneornil(L, 1))
        return luaL_error(L, "send of nil value");
    char err[WEFT_CODEC_ERRLEN];
    if (weft_codec_encode(L, 1, out, err, sizeof err) != 0)
        return luaL_error(L, "%s", err);
    return 0;
}

/* core.decode(buf) -> v: the value received into buf, which is freed. */
static int l_decode(lua_State *L) {
    weft_val v = *valbuf(L, 1);
    memset(valbuf(L, 1), 0, sizeof v);
    char err[WEFT_CODEC_ERRLEN];
    int rc = weft_codec_decode(L, &v, err, sizeof err);
    weft_codec_val_free(&v);
    if (rc != 0)
        return luaL_error(L, "%s", err);
    return 1;
}

/* core.name(str): names the calling goroutine (for dumps). */
static int l_name(lua_State *L) {
    const char *s = luaL_checkstring(L, 1);
    hostg *h = weft_hostg_self();
    if (!h)
        return luaL_error(L, "weft.name: not inside a goroutine (start one with weft.run)");
    char *copy = strdup(s);
    if (!copy)
        return luaL_error(L, "out of memory");
    weft_hdiag_set_name(h, copy);
    return 0;
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
    weft_push_object(L, t, TIMER_MT);
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
        {"spawn", l_spawn},
        {"set_isolate_starter", l_set_isolate_starter},
        {"id", l_id},
        {"count", l_count},
        {"procs", l_procs},
        {"now", l_now},
        {"sleep", l_sleep},
        {"chan", l_chan},
        {"encode", l_encode},
        {"decode", l_decode},
        {"name", l_name},
        {"len", l_len},
        {"cap", l_cap},
        {"close", l_close},
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
    lua_pushlightuserdata(L, &weft_host_op_marker);
    lua_setfield(L, -2, "OP");
    lua_pushlightuserdata(L, &weft_host_cannot_marker);
    lua_setfield(L, -2, "CANNOT");
    lua_pushlightuserdata(L, &weft_host_yield_marker);
    lua_setfield(L, -2, "YIELD");
    luaL_getmetatable(L, CHAN_MT);
    lua_setfield(L, -2, "chan_mt");
    lua_pushstring(L, WEFT_VERSION);
    lua_setfield(L, -2, "version");
    weft_tabkeys_push(L);
    if (!lua_isnil(L, -1)) /* LuaJIT 2.1's layout with 64-bit GC references */
        weft_yieldable_probe(L);
    lua_setfield(L, -2, "tabkeys_slots");
    weft_transfer_register(L);
    weft_context_register(L);
    weft_sync_register(L);
    weft_diag_register(L);
    return 1;
}
