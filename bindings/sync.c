/*
 * bindings/sync.c — the C side of weft.atomic and of the sync objects of
 * lua/weft/sync.lua (wait groups, mutexes, read/write mutexes, once,
 * conditions, semaphores).
 *
 * As Go's sync package is built on atomics and the runtime's semaphores,
 * each sync object is a small reference counted block of atomic int64 words
 * and engine semaphores (weft_sema); sync.lua runs the algorithms on them
 * through the FFI functions below. A block is shared by every VM that holds
 * it: its Lua object is a userdata handle (payload: the block pointer) that
 * the codec passes by reference, one metatable per kind, so a mutex sent on
 * a channel or captured by weft.spawn is the same mutex on the other side.
 * The metatables' __index is filled by lua/weft/init.lua (lazily loading
 * weft.sync in a VM that has not yet).
 *
 * FFI protocol (fast.c): weft_lua_sema_acquire takes the units at once
 * (DONE), or records the acquire in the goroutine's hostg (WEFT_HOSTOP_SEMA)
 * and returns BLOCK having queued nothing; Lua yields OP, host_run starts it
 * with weft_sema_acquire_start (parked, or done at once), and once resumed
 * Lua calls weft_lua_sema_finish. Words and counts cross as doubles: every
 * value sync.lua keeps in a word is an integer below 2^53 in magnitude, so
 * the conversions are exact and Lua never boxes an int64.
 *
 * Like fast.c, nothing here touches a lua_State except the classic
 * functions at the end (creation, finalizers, registration).
 */
#include "codec.h"
#include "host.h"

#include <lauxlib.h>
#include <stdlib.h>

enum { SYNC_WORDS = 3, SYNC_SEMAS = 3 };

/* The kinds, in the order of sync_kinds below (sync.lua uses the numbers). */
enum { K_MUTEX, K_RWMUTEX, K_WAITGROUP, K_ONCE, K_COND, K_SEMAPHORE, K_NKINDS };

typedef struct syncobj {
    _Atomic int64_t w[SYNC_WORDS];
    weft_sema *s[SYNC_SEMAS];
    atomic_int refs;
    int kind;
    struct syncobj *link; /* a cond's locker (a mutex or rwmutex), retained */
} syncobj;

typedef struct lsync {
    syncobj *o;
} lsync;

typedef struct latomic {
    weft_atomic *a;
} latomic;

static const struct {
    const char *mt;
    int nsemas;
} sync_kinds[K_NKINDS] = {
    {"weft.sync.mutex", 1},   {"weft.sync.rwmutex", 3}, {"weft.sync.waitgroup", 1},
    {"weft.sync.once", 1},    {"weft.sync.cond", 1},    {"weft.sync.semaphore", 1},
};
#define ATOMIC_MT "weft.atomic"

/* Wait reasons (dumps), indexed by the reason argument of acquire. */
static const char *const reasons[] = {
    "semacquire",           "sync.Mutex.Lock",       "sync.RWMutex.RLock",
    "sync.RWMutex.Lock",    "sync.WaitGroup.Wait",   "sync.Cond.Wait",
    "sync.Semaphore.Acquire",
};

/* Entry points for the FFI (declared in lua/weft/init.lua, never static). */
double weft_lua_sync_load(lsync *u, int i);
void weft_lua_sync_store(lsync *u, int i, double v);
double weft_lua_sync_add(lsync *u, int i, double d);
int weft_lua_sync_cas(lsync *u, int i, double old, double v);
int weft_lua_sema_acquire(lsync *u, int i, double k, int reason);
int weft_lua_sema_finish(void);
int weft_lua_sema_release(lsync *u, int i, double k);
int weft_lua_sema_tryacquire(lsync *u, int i, double k);
double weft_lua_atomic_load(latomic *u);
void weft_lua_atomic_store(latomic *u, double v);
double weft_lua_atomic_add(latomic *u, double d);
double weft_lua_atomic_swap(latomic *u, double v);
int weft_lua_atomic_cas(latomic *u, double old, double v);

/* ---- the FFI fast paths ---------------------------------------------------- */

enum { SL_DONE = 0, SL_BLOCK = 2, SL_NOTG = 4, SL_INVAL = 5, SL_AGAIN = 6 };

double weft_lua_sync_load(lsync *u, int i) {
    return (double)atomic_load(&u->o->w[i]);
}

void weft_lua_sync_store(lsync *u, int i, double v) {
    atomic_store(&u->o->w[i], (int64_t)v);
}

double weft_lua_sync_add(lsync *u, int i, double d) {
    return (double)(atomic_fetch_add(&u->o->w[i], (int64_t)d) + (int64_t)d);
}

int weft_lua_sync_cas(lsync *u, int i, double old, double v) {
    int64_t expect = (int64_t)old;
    return atomic_compare_exchange_strong(&u->o->w[i], &expect, (int64_t)v);
}

int weft_lua_sema_acquire(lsync *u, int i, double k, int reason) {
    weft_sema *s = u->o->s[i];
    int rc = weft_sema_tryacquire(s, (int64_t)k);
    if (rc == WEFT_OK)
        return SL_DONE;
    if (rc != WEFT_EAGAIN)
        return SL_INVAL;
    hostg *h = weft_hostg_self();
    if (!h)
        return SL_NOTG;
    h->op = WEFT_HOSTOP_SEMA;
    h->opdone = false;
    h->opnd.sema.s = s;
    h->opnd.sema.k = (int64_t)k;
    h->opnd.sema.reason =
        reason >= 0 && reason < (int)(sizeof reasons / sizeof *reasons) ? reasons[reason] : reasons[0];
    return SL_BLOCK;
}

int weft_lua_sema_finish(void) {
    hostg *h = weft_hostg_self();
    bool early = h->opdone;
    h->op = WEFT_HOSTOP_NONE;
    h->opdone = false;
    h->opnd.sema.s = NULL;
    if (!early)
        weft_sema_acquire_finish();
    return SL_DONE;
}

int weft_lua_sema_release(lsync *u, int i, double k) {
    return weft_sema_release(u->o->s[i], (int64_t)k) == WEFT_OK ? SL_DONE : SL_INVAL;
}

int weft_lua_sema_tryacquire(lsync *u, int i, double k) {
    int rc = weft_sema_tryacquire(u->o->s[i], (int64_t)k);
    return rc == WEFT_OK ? SL_DONE : rc == WEFT_EAGAIN ? SL_AGAIN : SL_INVAL;
}

double weft_lua_atomic_load(latomic *u) {
    return (double)weft_atomic_load(u->a);
}

void weft_lua_atomic_store(latomic *u, double v) {
    weft_atomic_store(u->a, (int64_t)v);
}

double weft_lua_atomic_add(latomic *u, double d) {
    return (double)weft_atomic_add(u->a, (int64_t)d);
}

double weft_lua_atomic_swap(latomic *u, double v) {
    return (double)weft_atomic_swap(u->a, (int64_t)v);
}

int weft_lua_atomic_cas(latomic *u, double old, double v) {
    return weft_atomic_cas(u->a, (int64_t)old, (int64_t)v);
}

/* ---- sync objects ------------------------------------------------------------- */

static void *sync_retain(void *p) {
    atomic_fetch_add_explicit(&((syncobj *)p)->refs, 1, memory_order_relaxed);
    return p;
}

static void sync_release(void *p) {
    syncobj *o = p;
    if (!o || atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (int i = 0; i < SYNC_SEMAS; i++)
        weft_sema_release_ref(o->s[i]);
    sync_release(o->link);
    free(o);
}

/* Takes over one reference to o. */
static int push_sync(lua_State *L, void *p) {
    syncobj *o = p;
    weft_push_object(L, o, sync_kinds[o->kind].mt);
    return 1;
}

static int l_sync_gc(lua_State *L) {
    lsync *u = lua_touserdata(L, 1);
    if (u && u->o) {
        sync_release(u->o);
        u->o = NULL;
    }
    return 0;
}

/* The sync object at idx if it is of one of the kinds in mask, else NULL. */
static syncobj *tosync(lua_State *L, int idx, unsigned mask) {
    lsync *u = lua_touserdata(L, idx);
    if (!u || !lua_getmetatable(L, idx))
        return NULL;
    for (int k = 0; k < K_NKINDS; k++) {
        if (!(mask & (1u << k)))
            continue;
        luaL_getmetatable(L, sync_kinds[k].mt);
        int same = lua_rawequal(L, -1, -2);
        lua_pop(L, 1);
        if (same) {
            lua_pop(L, 1);
            return u->o;
        }
    }
    lua_pop(L, 1);
    return NULL;
}

/* core.sync_new(kind, n | locker) -> object. n: a semaphore's size; locker:
 * a cond's mutex or rwmutex. */
static int l_sync_new(lua_State *L) {
    int kind = (int)luaL_checkinteger(L, 1);
    luaL_argcheck(L, kind >= 0 && kind < K_NKINDS, 1, "bad kind");
    syncobj *link = NULL;
    int64_t size = 0;
    if (kind == K_COND) {
        link = tosync(L, 2, 1u << K_MUTEX | 1u << K_RWMUTEX);
        if (!link)
            return luaL_error(L, "sync.cond: the locker must be a sync.mutex or sync.rwmutex");
    } else if (kind == K_SEMAPHORE) {
        size = (int64_t)luaL_checknumber(L, 2);
    }
    syncobj *o = calloc(1, sizeof *o);
    if (!o)
        return luaL_error(L, "out of memory");
    atomic_init(&o->refs, 1);
    o->kind = kind;
    for (int i = 0; i < sync_kinds[kind].nsemas; i++) {
        o->s[i] = kind == K_SEMAPHORE ? weft_sema_new_limit(size, size) : weft_sema_new(0);
        if (!o->s[i]) {
            sync_release(o);
            return luaL_error(L, "out of memory");
        }
    }
    o->link = link ? sync_retain(link) : NULL;
    return push_sync(L, o);
}

/* core.sync_link(cond) -> its locker, as a new Lua object of this VM. */
static int l_sync_link(lua_State *L) {
    syncobj *o = tosync(L, 1, 1u << K_COND);
    luaL_argcheck(L, o != NULL, 1, "sync.cond expected");
    return push_sync(L, sync_retain(o->link));
}

/* core.sync_count(semaphore) -> units available now. */
static int l_sync_count(lua_State *L) {
    syncobj *o = tosync(L, 1, 1u << K_SEMAPHORE);
    luaL_argcheck(L, o != NULL, 1, "sync.semaphore expected");
    lua_pushnumber(L, (lua_Number)weft_sema_count(o->s[0]));
    return 1;
}

/* ---- atomics --------------------------------------------------------------------- */

static void *atomic_retain(void *p) {
    return weft_atomic_retain(p);
}

static void atomic_release(void *p) {
    weft_atomic_release(p);
}

static int push_atomic(lua_State *L, void *p) {
    weft_push_object(L, p, ATOMIC_MT);
    return 1;
}

/* core.atomic(n) -> a cell holding n (an integer: init.lua checks). */
static int l_atomic(lua_State *L) {
    weft_atomic *a = weft_atomic_new((int64_t)luaL_checknumber(L, 1));
    if (!a)
        return luaL_error(L, "out of memory");
    return push_atomic(L, a);
}

static int l_atomic_gc(lua_State *L) {
    latomic *u = luaL_checkudata(L, 1, ATOMIC_MT);
    weft_atomic_release(u->a);
    u->a = NULL;
    return 0;
}

/* ---- registration ------------------------------------------------------------------ */

void weft_sync_register(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"sync_new", l_sync_new},
        {"sync_link", l_sync_link},
        {"sync_count", l_sync_count},
        {"atomic", l_atomic},
        {NULL, NULL},
    };
    luaL_register(L, NULL, fns);
    lua_newtable(L); /* core.sync_mts: kind number -> metatable */
    for (int k = 0; k < K_NKINDS; k++) {
        luaL_newmetatable(L, sync_kinds[k].mt);
        lua_pushcfunction(L, l_sync_gc);
        lua_setfield(L, -2, "__gc");
        weft_codec_register_handle(L, sync_kinds[k].mt, sync_retain, sync_release, push_sync);
        lua_rawseti(L, -2, k);
    }
    lua_setfield(L, -2, "sync_mts");
    luaL_newmetatable(L, ATOMIC_MT);
    lua_pushcfunction(L, l_atomic_gc);
    lua_setfield(L, -2, "__gc");
    weft_codec_register_handle(L, ATOMIC_MT, atomic_retain, atomic_release, push_atomic);
    lua_setfield(L, -2, "atomic_mt");
}
