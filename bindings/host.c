/*
 * bindings/host.c — the engine's host for Lua goroutines: one LuaJIT VM per
 * processor, and the hook that runs a Lua goroutine (a coroutine of its
 * processor's VM) from the scheduler.
 *
 * VMs. Processor 0's VM is the one that called weft.run (its thread runs
 * processor 0). Every other processor makes its own VM on its own thread
 * when it starts (standard libraries, processor 0's package.path and
 * package.cpath, weft_core preloaded, `weft` required) and closes it when it
 * stops; in between only that thread touches it (DESIGN rule 1).
 *
 * Goroutines. `go` makes a goroutine bound to the caller's processor, in the
 * caller's VM. `spawn` makes a portable one holding its packed function and
 * arguments (the payload, transfer.h); the processor that first runs it
 * binds it, and host_run then makes its coroutine in that processor's VM
 * and starts it with the VM's isolate starter (registered by
 * lua/weft/init.lua) applied to the payload, pushed as a packed value.
 *
 * Running. host_run resumes the coroutine. It yields OP to start the
 * operation it recorded (fast.c: parked, or done at once and resumed
 * again), or anything else to be queued again; when it returns, its hostg
 * and coroutine are kept for reuse by the VM's next `go`; when it raises,
 * the first such error (message and traceback, as a C string: it may come
 * from any VM) is kept for weft.run and the engine stops.
 *
 * Invariants: a hostg belongs to one VM from its start (h->vm) and is only
 * touched on that VM's processor, except at teardown, when the engine has
 * stopped (host_discard frees only C memory for VMs already closed); a
 * pooled hostg has no operation under way and an empty coroutine.
 */
#include "codec.h"
#include "host.h"
#include "transfer.h"
#include "vmalloc.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int luaopen_weft_core(lua_State *L);

char weft_host_op_marker, weft_host_yield_marker, weft_host_cannot_marker;

/* A VM and the hostgs kept for its next goroutines. A coroutine that
 * returned is as good as new (LuaJIT resumes it again once a function is
 * pushed): up to POOL_MAX are kept per VM. */
enum { POOL_MAX = 1024 };
typedef struct vmstate {
    lua_State *L;
    hostg *pool;
    int npool;
} vmstate;

static struct {
    lua_State *L;        /* the thread that called weft.run */
    vmstate vms[WEFT_MAX_PROCS];
    char *path, *cpath;  /* processor 0's package.path and package.cpath */
    _Atomic(char *) err; /* the first uncaught error */
    int nresults;        /* main's results, moved onto L's stack */
} R;

/* ---- hostgs ------------------------------------------------------------------ */

/* Frees the send values of cs[0 .. n-1] except case keep's. */
static void cases_drop(weft_case *cs, int n, int keep) {
    for (int i = 0; i < n; i++)
        if (i != keep && cs[i].dir == WEFT_CASE_SEND)
            weft_codec_val_free(&cs[i].val);
}

/* i if the select took case i's value (a receive, or a send that went), or
 * -1 (none chosen, or a send that a close refused: the value is still
 * there). */
static int case_taken(const weft_case *cs, int i) {
    return i >= 0 && (cs[i].dir == WEFT_CASE_RECV || cs[i].ok) ? i : -1;
}

void weft_cases_drop_unsent(weft_case *cs, int n, int i) {
    cases_drop(cs, n, case_taken(cs, i));
}

/* Frees what h holds for an operation under way: a send's value, and its
 * select's send values except case keep's. */
static void hostg_drop_cases(hostg *h, int keep) {
    if (h->held.flags) /* (an inline value owns nothing) */
        weft_codec_val_free(&h->held);
    cases_drop(h->cases, h->ncases, keep);
    h->ncases = 0;
}

static void hostg_free_spawn(hostg *h) {
    hostg_spawn *sp = h->spawn;
    if (!sp)
        return;
    weft_codec_val_free(&sp->payload);
    free(sp->paths[0]);
    free(sp->paths[1]);
    free(sp);
    h->spawn = NULL;
}

void weft_hostg_free(hostg *h) {
    lua_State *L = h->co && h->vm >= 0 ? R.vms[h->vm].L : NULL;
    if (L)
        luaL_unref(L, LUA_REGISTRYINDEX, h->ref);
    hostg_drop_cases(h, -1);
    hostg_free_spawn(h);
    free(h->cases);
    weft_hdiag_forget(h);
    free(h);
}

/* A goroutine finished normally: keep its hostg (and coroutine) for reuse. */
static void hostg_recycle(hostg *h) {
    vmstate *vs = &R.vms[h->vm];
    if (vs->npool >= POOL_MAX || h->main) {
        weft_hostg_free(h);
        return;
    }
    lua_settop(h->co, 0);
    hostg_drop_cases(h, -1);
    if (h->name)
        weft_hdiag_set_name(h, NULL);
    h->nargs = 0;
    h->op = WEFT_HOSTOP_NONE;
    h->opdone = false;
    h->next = vs->pool;
    vs->pool = h;
    vs->npool++;
}

static void pool_drain(vmstate *vs) {
    while (vs->pool) {
        hostg *h = vs->pool;
        vs->pool = h->next;
        weft_hostg_free(h);
    }
    vs->npool = 0;
}

/* A hostg with a coroutine of processor vm's VM (L: a thread of that VM):
 * h itself (an isolate's, given the coroutine), or when h is NULL a new
 * one. A pooled coroutine when there is one. NULL if out of memory. */
static hostg *hostg_take(lua_State *L, int vm, hostg *h) {
    vmstate *vs = &R.vms[vm];
    hostg *pooled = vs->pool;
    if (pooled) {
        vs->pool = pooled->next;
        vs->npool--;
        pooled->next = NULL;
        if (!h)
            return pooled;
        h->co = pooled->co; /* adopt its coroutine, drop the rest */
        h->ref = pooled->ref;
        pooled->co = NULL;
        weft_hostg_free(pooled);
    } else {
        if (!h && !(h = calloc(1, sizeof *h)))
            return NULL;
        h->co = lua_newthread(L);
        h->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    h->vm = vm;
    return h;
}

hostg *weft_hostg_new(lua_State *L, int nargs) {
    int vm = weft_proc_id();
    hostg *h = hostg_take(L, vm < 0 ? 0 : vm, NULL);
    if (!h)
        luaL_error(L, "out of memory");
    lua_checkstack(h->co, nargs + 1);
    lua_xmove(L, h->co, nargs + 1);
    h->nargs = nargs;
    return h;
}

hostg *weft_hostg_isolate(weft_val payload, const char *path, const char *cpath) {
    hostg *h = calloc(1, sizeof *h);
    hostg_spawn *sp = calloc(1, sizeof *sp);
    if (!h || !sp) {
        free(h);
        free(sp);
        return NULL;
    }
    h->vm = -1;
    h->spawn = sp;
    sp->paths[0] = path ? strdup(path) : NULL;
    sp->paths[1] = cpath ? strdup(cpath) : NULL;
    if ((path && !sp->paths[0]) || (cpath && !sp->paths[1])) {
        weft_hostg_free(h);
        return NULL;
    }
    sp->payload = payload;
    return h;
}


bool weft_hostg_reserve_cases(hostg *h, int n) {
    if (n <= h->capcases)
        return true;
    weft_case *cs = realloc(h->cases, (size_t)n * sizeof *cs);
    if (!cs)
        return false;
    h->cases = cs;
    h->capcases = n;
    return true;
}

void weft_hostg_select_done(hostg *h, int i, weft_case *res) {
    int keep = case_taken(h->cases, i);
    if (i >= 0)
        *res = h->cases[i];
    hostg_drop_cases(h, keep);
}

/* ---- errors ------------------------------------------------------------------- */

/* Keeps msg (malloc'd) as the engine's error if it is the first; stops the
 * engine: an uncaught error is fatal, as a panic is in Go. */
static void fatal(char *msg) {
    char *none = NULL;
    if (!msg || !atomic_compare_exchange_strong(&R.err, &none, msg))
        free(msg);
    weft_shutdown();
}

void weft_host_fail(char *msg) {
    fatal(msg);
}

lua_State *weft_host_vm(int pid) {
    return R.vms[pid].L;
}

/* err_message(e) -> e as a string, run protected: __tostring may raise. */
static int err_message(lua_State *L) {
    if (!lua_isstring(L, 1) && !(luaL_callmeta(L, 1, "__tostring") && lua_isstring(L, -1)))
        lua_pushliteral(L, "(error object is not a string)");
    lua_pushstring(L, lua_tostring(L, -1)); /* a number becomes a string */
    return 1;
}

/* The error on top of co (a goroutine that raised), with its traceback; L
 * is a thread of the same VM that is not running. */
static void goroutine_failed(lua_State *L, lua_State *co, int64_t id) {
    int top = lua_gettop(L);
    lua_pushcfunction(L, err_message);
    lua_xmove(co, L, 1);
    if (lua_pcall(L, 1, 1, 0) != 0) {
        lua_pop(L, 1);
        lua_pushliteral(L, "(error object is not a string)");
    }
    lua_pushfstring(L, "error in goroutine %d: %s", (int)id, lua_tostring(L, -1));
    luaL_traceback(L, co, lua_tostring(L, -1), 0);
    fatal(strdup(lua_tostring(L, -1)));
    lua_settop(L, top);
}

/* ---- isolates ------------------------------------------------------------------- */

/* Starts isolate h on processor p: a coroutine of p's VM running the VM's
 * isolate starter on the payload. False (and the engine stops) on error. */
static bool isolate_start(weft_proc *p, weft_g *g, hostg *h) {
    vmstate *vs = &R.vms[p->id];
    if (!vs->L) {
        fatal(strdup("weft.spawn: a processor has no Lua VM"));
        return false;
    }
    hostg_take(vs->L, p->id, h);
    lua_State *co = h->co;
    lua_getfield(co, LUA_REGISTRYINDEX, WEFT_ISOLATE_STARTER);
    if (!lua_isfunction(co, -1)) {
        lua_settop(co, 0);
        lua_pushstring(co, "weft: no isolate starter in this VM");
        goroutine_failed(vs->L, co, g->id);
        return false;
    }
    weft_transfer_push(co, &h->spawn->payload);
    for (int i = 0; i < 2; i++) {
        if (h->spawn->paths[i])
            lua_pushstring(co, h->spawn->paths[i]);
        else
            lua_pushnil(co);
    }
    hostg_free_spawn(h);
    h->nargs = 3;
    return true;
}

/* ---- the hooks ------------------------------------------------------------------- */

static void host_run(weft_proc *p, weft_g *g) {
    hostg *h = g->host;
    if (!h->co && !isolate_start(p, g, h)) {
        weft_hostg_free(h);
        g->host = NULL;
        g->parkop = WEFT_PARK_EXIT;
        return;
    }
    weft_hdiag_running(p->id, g->id, h);
    lua_State *co = h->co;
    int rc;
    for (;;) {
        int nargs = h->nargs;
        h->nargs = 0;
        rc = lua_resume(co, nargs);
        if (rc != LUA_YIELD)
            break;
        void *mark = lua_touserdata(co, -1);
        lua_settop(co, 0);
        if (mark != &weft_host_op_marker) {
            g->parkop = WEFT_PARK_YIELD;
            return;
        }
        if (weft_hostg_start(h) == WEFT_PENDING) {
            g->parkop = WEFT_PARK_WAIT;
            return;
        }
        /* Completed as it started: run on. */
    }
    if (rc == 0) {
        if (h->main) {
            int n = lua_gettop(co);
            if (lua_checkstack(R.L, n + 1)) {
                lua_xmove(co, R.L, n);
                R.nresults = n;
            }
        }
        hostg_recycle(h);
    } else {
        goroutine_failed(R.vms[h->vm].L, co, g->id);
        weft_hostg_free(h);
    }
    g->host = NULL;
    g->parkop = WEFT_PARK_EXIT;
}

/* At engine stop, the values a waker already moved in or out of g's
 * pending operation: a receive's value never collected is freed; a select's
 * send value that a receiver took is no longer h's to free. (A send that
 * was taken has its waiter's copy zeroed by the receiver; one still queued
 * or refused by a close is the sender's: freed.) */
static void discard_pending(weft_g *g, hostg *h) {
    if (g->nwaiting == 0)
        return;
    if (h->ncases == 0) {
        weft_codec_val_free(&g->w1.val);
        return;
    }
    weft_waiter *win = atomic_load(&g->selectdone) ? g->param : NULL;
    if (!win || !win->success)
        return;
    weft_case *cs = &h->cases[win->case_index];
    if (cs->dir == WEFT_CASE_SEND)
        memset(&cs->val, 0, sizeof cs->val);
    else
        weft_codec_val_free(&win->val);
}

static void host_discard(weft_g *g) {
    discard_pending(g, g->host);
    weft_hostg_free(g->host);
    g->host = NULL;
}

/* Sets package[field] of L to s, if s. */
static void set_package_field(lua_State *L, const char *field, const char *s) {
    if (!s)
        return;
    lua_getglobal(L, "package");
    lua_pushstring(L, s);
    lua_setfield(L, -2, field);
    lua_pop(L, 1);
}

static void host_proc_start(weft_proc *p) {
    vmstate *vs = &R.vms[p->id];
    if (p->id == 0) {
        vs->L = R.L;
        return;
    }
    lua_State *L = weft_vm_new();
    if (!L) {
        fatal(strdup("weft: cannot make a Lua VM for a processor (out of memory)"));
        return;
    }
    luaL_openlibs(L);
    set_package_field(L, "path", R.path);
    set_package_field(L, "cpath", R.cpath);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_weft_core);
    lua_setfield(L, -2, "weft_core");
    lua_pop(L, 2);
    lua_getglobal(L, "require");
    lua_pushstring(L, "weft");
    if (lua_pcall(L, 1, 0, 0) != 0) {
        const char *msg = lua_tostring(L, -1);
        size_t len = strlen(msg ? msg : "?") + 64;
        char *s = malloc(len);
        if (s)
            snprintf(s, len, "weft: processor %d cannot load weft: %s", p->id, msg ? msg : "?");
        fatal(s);
        weft_vm_close(L);
        return;
    }
    vs->L = L;
}

static void host_proc_stop(weft_proc *p) {
    vmstate *vs = &R.vms[p->id];
    if (p->id == 0 || !vs->L)
        return; /* processor 0's VM is the caller's: weft_host_end */
    pool_drain(vs);
    weft_vm_close(vs->L);
    vs->L = NULL;
}

const weft_host weft_lua_host = {host_run, host_discard, host_proc_start, host_proc_stop};

/* ---- weft.run ------------------------------------------------------------------- */

static char *package_field(lua_State *L, const char *field) {
    lua_getglobal(L, "package");
    lua_getfield(L, -1, field);
    const char *s = lua_tostring(L, -1);
    char *copy = s ? strdup(s) : NULL;
    lua_pop(L, 2);
    return copy;
}

bool weft_host_running(void) {
    return R.L != NULL;
}

void weft_host_begin(lua_State *L) {
    R.L = L;
    R.vms[0].L = L;
    R.nresults = 0;
    R.path = package_field(L, "path");
    R.cpath = package_field(L, "cpath");
}

int weft_host_end(void) {
    pool_drain(&R.vms[0]);
    R.vms[0].L = NULL;
    R.L = NULL;
    free(R.path);
    free(R.cpath);
    R.path = R.cpath = NULL;
    return R.nresults;
}

char *weft_host_take_error(void) {
    return atomic_exchange(&R.err, NULL);
}
