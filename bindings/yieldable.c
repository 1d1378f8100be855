/*
 * yieldable.c — weft_lua_can_yield(): whether the running Lua code may
 * yield, for the blocking paths of the Lua modules (lua/weft), as an FFI call.
 *
 * Why. A blocking operation records what it waits for (fast.c) and yields
 * to the scheduler; where Lua cannot yield (inside a C function that called
 * back into Lua, such as a table.sort comparator or a __gc metamethod) it
 * must instead drop the operation and raise "cannot block here". Lua's own
 * check, coroutine.isyieldable, is a C function that JIT traces cannot
 * compile: each call stops the trace, runs in the interpreter and starts
 * another trace, and every blocking operation made that call (a fifth of an
 * unbuffered ping-pong between two Lua goroutines). An FFI call stays in
 * the trace.
 *
 * How. The answer is lua_isyieldable() of the running coroutine, which an
 * FFI callee is not given. LuaJIT keeps it in its global state (cur_L; the
 * VM sets it on every resume and on every return from a resume or a C
 * function), and every lua_State links to that global state (glref). Their
 * offsets are LuaJIT's own, so weft_yieldable_probe checks or finds them
 * with the Lua API when a VM opens the weft module (bindings/core.c calls
 * it only where tabkeys.c found LuaJIT 2.1's layout with 64-bit GC
 * references):
 *  - glref: at offset 16 of a lua_State, it must point to a block starting
 *    with the allocator function and its data, as lua_getallocf reports;
 *  - cur_L: the one word of that block that holds, each time, the state
 *    running a C function called as the body of six coroutines and three
 *    times from the opening state (other words that hold one of them at
 *    one time, such as the collector's list of new objects, differ at
 *    another).
 * If either is not found exactly so, the offsets stay unknown and
 * weft_lua_can_yield answers -1: the Lua code then uses
 * coroutine.isyieldable. Nothing here writes to LuaJIT's memory.
 *
 * Threads: the offsets are the same for every VM of the process (one
 * LuaJIT build); each VM that probes writes the same values, atomically.
 */
#include "yieldable.h"

#include "host.h"

#include <lauxlib.h>

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

/* The link to the global state in a lua_State of LuaJIT 2.1 with 64-bit
 * GC references (after the GC header, 8 bytes, and 4 bytes of fields); the
 * only offset tried, and only where tabkeys.c found that layout. */
#define GLREF_OFF 16
/* How much of the global state is searched for cur_L, and how many times
 * two coroutines and the opening state run the probe. */
#define GLOBAL_SCAN 2048
#define PROBE_ROUNDS 3

/* 0 while unknown (the global state starts with the allocator function). */
static _Atomic size_t curl_off;

static uintptr_t word_at(const void *base, size_t off) {
    uintptr_t w;
    memcpy(&w, (const char *)base + off, sizeof w);
    return w;
}

static const void *global_of(lua_State *L) {
    return (const void *)word_at(L, GLREF_OFF);
}

/* Whether the global state of L starts with the allocator function and
 * its data that lua_getallocf reports. */
static int glref_ok(lua_State *L) {
    void *ud;
    lua_Alloc f = lua_getallocf(L, &ud);
    const void *g = global_of(L);
    if (!g || ((uintptr_t)g & (sizeof(void *) - 1)))
        return 0;
    lua_Alloc gf;
    void *gd;
    memcpy(&gf, g, sizeof gf);
    memcpy(&gd, (const char *)g + sizeof gf, sizeof gd);
    return gf == f && gd == ud;
}

/* The probe: marks, in the bitmap passed as upvalue 1, the words of the
 * global state that hold the running state L; clears the others. */
static int probe(lua_State *L) {
    unsigned char *keep = lua_touserdata(L, lua_upvalueindex(1));
    const void *g = global_of(L);
    for (size_t i = 0; i < GLOBAL_SCAN / sizeof(void *); i++)
        if (word_at(g, i * sizeof(void *)) != (uintptr_t)L)
            keep[i] = 0;
    return 0;
}

/* Runs the probe as the body of a new coroutine; 0 on success. */
static int probe_in_coroutine(lua_State *L) {
    lua_State *co = lua_newthread(L);
    lua_pushvalue(L, -2); /* the probe */
    lua_xmove(L, co, 1);
    int rc = lua_resume(co, 0);
    lua_pop(L, 1); /* the coroutine */
    return rc;
}

void weft_yieldable_probe(lua_State *L) {
    if (sizeof(void *) != 8 || atomic_load(&curl_off) || !glref_ok(L))
        return;
    int top = lua_gettop(L);
    unsigned char *keep = lua_newuserdata(L, GLOBAL_SCAN / sizeof(void *));
    memset(keep, 1, GLOBAL_SCAN / sizeof(void *));
    lua_pushcclosure(L, probe, 1);
    /* Coroutines and the state itself, in turn: a word that held each of
     * them when it ran can only be cur_L. */
    int ok = 1;
    for (int round = 0; ok && round < PROBE_ROUNDS; round++) {
        ok = probe_in_coroutine(L) == 0 && probe_in_coroutine(L) == 0;
        lua_pushvalue(L, -1);
        ok = ok && lua_pcall(L, 0, 0, 0) == 0;
    }
    size_t found = 0;
    /* Offset 0 and 1 word: the allocator function and its data. */
    for (size_t i = 2; ok && i < GLOBAL_SCAN / sizeof(void *); i++) {
        if (keep[i]) {
            if (found)
                ok = 0; /* two candidates: not sure */
            found = i * sizeof(void *);
        }
    }
    lua_settop(L, top);
    if (ok && found)
        atomic_store(&curl_off, found);
}

int weft_lua_can_yield(void) {
    hostg *h = weft_hostg_self();
    size_t cur = atomic_load_explicit(&curl_off, memory_order_relaxed);
    if (!h || !h->co || !cur)
        return -1;
    lua_State *running = (lua_State *)word_at(global_of(h->co), cur);
    if (!running)
        return -1;
    return lua_isyieldable(running);
}
