/*
 * host.h — what the binding's files share: the Lua objects that wrap engine
 * objects, and a Lua goroutine's host data (core.c runs it, fast.c keeps
 * its pending select here).
 */
#ifndef WEFT_HOST_H
#define WEFT_HOST_H

#include "core.h"

#include <lua.h>

/* Userdata payloads start with the engine object (the codec's handle rule).
 * The FFI sees a channel userdata as a pointer to its lchan payload. */
typedef struct lchan {
    weft_chan *c;
} lchan;

#define CHAN_MT "weft.chan" /* the registry name of channels' metatable */

/* Pushes a new full userdata holding the engine object obj (whose reference
 * it takes over) with the metatable registered as tname. */
static inline void weft_push_object(lua_State *L, void *obj, const char *tname) {
    void **payload = lua_newuserdata(L, sizeof *payload);
    *payload = obj;
    lua_getfield(L, LUA_REGISTRYINDEX, tname);
    lua_setmetatable(L, -2);
}

/* A Lua goroutine: a coroutine of its processor's VM. Finished goroutines'
 * hostgs, coroutine included, are kept for reuse (core.c). */
/* What an isolate brings until it starts: its function and arguments,
 * encoded, and its spawner's package.path and package.cpath. */
typedef struct hostg_spawn {
    weft_val payload;
    char *paths[2];
} hostg_spawn;

/* Kept small: a blocked Lua goroutine is its coroutine, its weft_g and this. */
typedef struct hostg {
    lua_State *co; /* NULL: an isolate not started yet */
    int vm;        /* the processor whose VM co belongs to (-1: none yet) */
    int ref;       /* anchors co in the registry */
    int nargs;     /* values to pass to the next resume */
    int op;        /* WEFT_HOSTOP_*: the operation under way (fast.c) */
    int oprc;
    bool opdone;   /* it completed as it started: oprc (and held) tell */
    bool main;
    int ncases, capcases;
    hostg_spawn *spawn; /* an isolate not started yet */
    char *name;         /* weft.name, malloc'd (replaced under diag.c's lock) */
    const char *site;   /* where it was created: file (interned, diag.c) ... */
    int site_line;      /* ... and line (0: none) */
    weft_val held;      /* a send's value, or an early receive's */
    weft_case *cases;   /* a select in progress */
    union {             /* the operand of op */
        weft_chan *chan; /* SEND, RECV */
        int64_t sleepns; /* SLEEP */
        struct {         /* SEMA: a semaphore acquire (sync.c) */
            weft_sema *s;
            int64_t k;
            const char *reason;
        } sema;
        struct {         /* IO: an fd readiness wait (io.c) */
            int fd, events;
            int64_t timeout; /* ns, < 0: none */
        } io;
    } opnd;
    struct hostg *next; /* free list */
} hostg;

enum {
    WEFT_HOSTOP_NONE,
    WEFT_HOSTOP_SEND,
    WEFT_HOSTOP_RECV,
    WEFT_HOSTOP_SELECT,
    WEFT_HOSTOP_SLEEP,
    WEFT_HOSTOP_SEMA,
    WEFT_HOSTOP_IO
};

/* The calling goroutine's hostg, NULL outside a Lua goroutine. */
static inline hostg *weft_hostg_self(void) {
    weft_g *g = weft_g_self();
    return g && g->kind == WEFT_G_HOSTED ? (hostg *)g->host : NULL;
}

/* ---- host.c ---- */

/* The engine's host for Lua goroutines (weft_run_hosted). */
extern const weft_host weft_lua_host;

/* What goroutines yield to the scheduler (lightuserdata): OP to start the
 * operation they recorded, YIELD to be queued again; CANNOT is what the Lua
 * side resumes an inner coroutine with when its OP cannot be passed up. */
extern char weft_host_op_marker, weft_host_yield_marker, weft_host_cannot_marker;

/* The registry field where init.lua puts each VM's isolate starter:
 * starter(packed payload, package.path, package.cpath) runs the isolate. */
#define WEFT_ISOLATE_STARTER "weft.isolate_start"

/* weft.run: begin (L: the calling thread, processor 0's VM), then
 * weft_run_hosted, then end, which returns how many results main left on
 * L's stack; take_error gives the first uncaught error (malloc'd) or NULL. */
void weft_host_begin(lua_State *L);
int weft_host_end(void);
char *weft_host_take_error(void);
bool weft_host_running(void);

/* A goroutine running the function on L's stack below its top nargs values
 * (all moved, not copied), in L's VM (the current processor's); raises if
 * out of memory. */
hostg *weft_hostg_new(lua_State *L, int nargs);
/* An isolate not started yet, owning payload, to be started with the
 * spawner's package.path and package.cpath (copied; either may be NULL);
 * NULL if out of memory. */
hostg *weft_hostg_isolate(weft_val payload, const char *path, const char *cpath);
void weft_hostg_free(hostg *h);

/* The VM of processor pid (NULL: none); on that processor's thread only. */
lua_State *weft_host_vm(int pid);
/* Keeps msg (malloc'd, taken over) as weft.run's error if it is the first,
 * and stops the engine. */
void weft_host_fail(char *msg);

/* ---- diag.c ---- */

/* Records in h where the goroutine is created: the function at `level` of
 * L's stack (1: the caller of the C function). */
void weft_hdiag_site(lua_State *L, int level, hostg *h);
/* Processor pid runs goroutine gid, whose hostg is h (host_run). */
void weft_hdiag_running(int pid, int64_t gid, hostg *h);
/* Replaces h's name (malloc'd, taken over; NULL: none). */
void weft_hdiag_set_name(hostg *h, char *name);
/* Before h is freed: forgets it and frees its name. */
void weft_hdiag_forget(hostg *h);
/* Adds core.dump, core.stats, core.run_timeout, core.fail and
 * core.diag_libdir to the table on top of L's stack; sets the engine's
 * diagnostics hooks. */
void weft_diag_register(lua_State *L);

/* ---- fast.c ---- */

/* Starts h's recorded operation for the goroutine (which must be the
 * calling one: host_run calls it after the goroutine yielded OP). PENDING:
 * queued and parked; OK: done at once, the result kept for its finish. */
int weft_hostg_start(hostg *h);

/* Makes room for n select cases in h->cases; false if out of memory. */
bool weft_hostg_reserve_cases(hostg *h, int n);

/* Reports the chosen case i (-1: none) of h's pending select: frees the
 * send values not taken, and moves case i into *res (h->ncases becomes 0;
 * res may be NULL when i is -1). */
void weft_hostg_select_done(hostg *h, int i, weft_case *res);

/* After a select over cs[0 .. n-1] chose case i (-1: none): frees the send
 * values it did not take (a send case that a close refused keeps its value,
 * which is freed too). */
void weft_cases_drop_unsent(weft_case *cs, int n, int i);

/* ---- context.c ---- */

/* Adds the context functions (ctx_*) and metatable to the table on top of
 * L's stack (the weft_core module) and registers contexts with the codec. */
void weft_context_register(lua_State *L);

/* ---- sync.c ---- */

/* Registers the sync objects' and atomics' metatables and codec handle
 * types in L, and puts their functions and metatables in the table on top
 * of L's stack (the weft_core module). */
void weft_sync_register(lua_State *L);

#endif
