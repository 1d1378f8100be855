/*
 * tabkeys.c — counting the keys of tables by reading LuaJIT's table
 * layout, for lua/weft/shape.lua.
 *
 * Why. shape.lua sends a table of a known shape by reading its values by
 * key, which the JIT compiles to a few loads. Reading by key proves that
 * the shape's keys are there, not that no other key is: that takes a count
 * of the table's keys, and LuaJIT offers Lua no way to count them but
 * `next`, one call per key, each hashing its key again (a quarter of a
 * sender's time in the table-message benchmark).
 *
 * How. A table is a GCtab: an array part of `asize` slots (keys 0 to
 * asize-1) and a hash part of hmask+1 nodes, each a value, a key and a chain
 * link. A key is in the table when its slot or node holds a value that is
 * not nil. This file reads those fields at the offsets of LuaJIT 2.1 with
 * 64-bit GC references (the only layout of x86-64 and arm64 LuaJIT 2.1
 * builds with GC64), where nil is the 64-bit pattern of all ones and a
 * reference to a table is its address with the type in the top 17 bits.
 *
 * The tables reach C without a Lua C function call. A call of a Lua C
 * function (lua_CFunction) ends a JIT trace: the interpreter makes the call
 * and a new trace starts after it, which cost a sender about 15% of its
 * time. An FFI call stays inside the trace, but cannot take a table as an
 * argument. So shape.lua keeps a "box": a table whose array part it never
 * grows. The encoder stores the message's tables in the box's slots 1..n and
 * passes weft_tabkeys_count the address of slot 1 (weft_core.tabkeys_slots
 * gives it, once); the function reads each slot's value, checks that it
 * refers to a table and counts that table's keys. The JIT emits the stores
 * before the call, in program order; each table has its own slot, so no
 * store replaces another before the call reads it.
 *
 * Trust. weft_tabkeys_push checks, when the module is opened, that the
 * counts agree with lua_next on tables made through the Lua API (array,
 * hash and mixed, grown, with holes, with keys set to nil afterwards), and
 * that tables stored in a box read back from its slots. If anything
 * differs (another LuaJIT layout), it pushes nil, and shape.lua uses `next`
 * instead. Nothing here writes to a table or allocates.
 */
#include "tabkeys.h"

#include <lauxlib.h>

#include <stdint.h>
#include <string.h>

/* LuaJIT 2.1, LJ_GC64: struct GCtab and struct Node (lj_obj.h). */
typedef struct lj_tab64 {
    uint64_t nextgc;
    uint8_t marked, gct, nomm;
    int8_t colo;
    uint32_t pad;
    uint64_t array, gclist, metatable, node;
    uint32_t asize, hmask;
    uint64_t freetop;
} lj_tab64;

typedef struct lj_node64 {
    uint64_t val, key, next;
} lj_node64;

#define NIL64 UINT64_MAX
/* A value referring to a GC object: its type (~LJ_TTAB for a table) in the
 * top 17 bits, its address in the low 47. */
#define ITYPE_SHIFT 47
#define ITYPE_TAB ((uint64_t)(~(uint32_t)11 & 0x1ffff))
#define GCPTR_MASK ((UINT64_C(1) << ITYPE_SHIFT) - 1)

/* Tables with more slots than this are not counted (shape.lua sends
 * tables of at most 64 keys this way). */
#define MAX_SLOTS 1024
#define TOO_MANY (-1)

static lua_Integer count_keys(const void *p) {
    lj_tab64 t;
    memcpy(&t, p, sizeof t);
    if ((uint64_t)t.asize + t.hmask + 1 > MAX_SLOTS)
        return TOO_MANY;
    lua_Integer n = 0;
    const uint64_t *arr = (const uint64_t *)(uintptr_t)t.array;
    for (uint32_t i = 0; i < t.asize; i++)
        n += arr[i] != NIL64;
    const lj_node64 *node = (const lj_node64 *)(uintptr_t)t.node;
    for (uint32_t i = 0; i <= t.hmask; i++)
        n += node[i].val != NIL64;
    return n;
}

int weft_tabkeys_count(const void *slots, int n) {
    const uint64_t *slot = slots;
    int total = 0;
    for (int i = 0; i < n; i++) {
        uint64_t v = slot[i];
        if (v >> ITYPE_SHIFT != ITYPE_TAB)
            return TOO_MANY;
        lua_Integer k = count_keys((const void *)(uintptr_t)(v & GCPTR_MASK));
        if (k == TOO_MANY)
            return TOO_MANY;
        total += (int)k;
    }
    return total;
}

/* The address of slot 1 of the array part of box (a table), as a light
 * userdata; nil if box has fewer than `n` slots from 1 on. */
static const void *box_slots(lua_State *L, int box, int n) {
    lj_tab64 t;
    memcpy(&t, lua_topointer(L, box), sizeof t);
    if (t.asize < (uint32_t)n + 1)
        return NULL;
    return (const uint64_t *)(uintptr_t)t.array + 1;
}

/* weft_core.tabkeys_slots(box, n): see box_slots. */
static int l_slots(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= 0 && n <= MAX_SLOTS, 2, "slot count out of range");
    const void *p = box_slots(L, 1, (int)n);
    if (p)
        lua_pushlightuserdata(L, (void *)p);
    else
        lua_pushnil(L);
    return 1;
}

/* ---- the check made when the module is opened ---------------------------- */

static lua_Integer next_count(lua_State *L, int t) {
    lua_Integer n = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        n++;
        lua_pop(L, 1);
    }
    return n;
}

/* Builds test table number `which` on the stack; false when there are no
 * more. */
static int build(lua_State *L, int which) {
    switch (which) {
    case 0:
        lua_createtable(L, 0, 0);
        return 1;
    case 1: /* array */
        lua_createtable(L, 3, 0);
        for (int i = 1; i <= 3; i++) {
            lua_pushnumber(L, i * 0.5);
            lua_rawseti(L, -2, i);
        }
        return 1;
    case 2: /* hash, one key set to nil afterwards (its node keeps the key) */
        lua_createtable(L, 0, 4);
        lua_pushboolean(L, 1), lua_setfield(L, -2, "a");
        lua_pushstring(L, "x"), lua_setfield(L, -2, "b");
        lua_pushnumber(L, 3), lua_setfield(L, -2, "c");
        lua_pushnil(L), lua_setfield(L, -2, "b");
        return 1;
    case 3: /* mixed, with key 0, a hole and a key far past the array */
        lua_createtable(L, 4, 2);
        lua_pushnumber(L, 1), lua_rawseti(L, -2, 0);
        lua_pushnumber(L, 2), lua_rawseti(L, -2, 1);
        lua_pushnumber(L, 4), lua_rawseti(L, -2, 3);
        lua_pushnumber(L, 5), lua_rawseti(L, -2, 1000);
        lua_pushboolean(L, 0), lua_setfield(L, -2, "k");
        return 1;
    case 4: /* grown by inserts, then half of it cleared */
        lua_newtable(L);
        for (int i = 0; i < 100; i++) {
            lua_pushinteger(L, i);
            lua_setfield(L, -2, (char[]){(char)('A' + i % 50), (char)('a' + i / 50), 0});
            lua_pushinteger(L, i);
            lua_rawseti(L, -2, i + 1);
        }
        for (int i = 0; i < 100; i += 2) {
            lua_pushnil(L);
            lua_setfield(L, -2, (char[]){(char)('A' + i % 50), (char)('a' + i / 50), 0});
            lua_pushnil(L);
            lua_rawseti(L, -2, i + 1);
        }
        return 1;
    case 5: /* values of every kind */
        lua_createtable(L, 2, 4);
        lua_pushstring(L, "s"), lua_rawseti(L, -2, 1);
        lua_newtable(L), lua_rawseti(L, -2, 2);
        lua_pushcfunction(L, l_slots), lua_setfield(L, -2, "f");
        lua_pushlightuserdata(L, L), lua_setfield(L, -2, "u");
        lua_pushboolean(L, 0), lua_setfield(L, -2, "no");
        return 1;
    default:
        return 0;
    }
}

/* Before any pointer in a table is followed: the type byte and the sizes of
 * tables made with known sizes read back as expected. */
static int layout_ok(lua_State *L) {
    static const int sizes[][4] = {/* narr, nrec -> asize, hmask */
                                   {0, 4, 0, 3},
                                   {3, 0, 4, 0},
                                   {7, 9, 8, 15}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        lua_createtable(L, sizes[i][0], sizes[i][1]);
        const void *p = lua_topointer(L, -1);
        lj_tab64 t;
        if (p)
            memcpy(&t, p, sizeof t);
        lua_pop(L, 1);
        if (!p || t.gct != 11 /* ~LJ_TTAB */ || t.asize != (uint32_t)sizes[i][2] ||
            t.hmask != (uint32_t)sizes[i][3])
            return 0;
    }
    return 1;
}

void weft_tabkeys_push(lua_State *L) {
    int ok = sizeof(void *) == 8 && layout_ok(L);
    lua_createtable(L, 8, 0); /* the box: test tables go in its slots 1.. */
    int box = lua_gettop(L), which;
    for (which = 0; ok && build(L, which); which++) {
        int t = lua_gettop(L);
        const void *p = lua_topointer(L, t);
        ok = p && count_keys(p) == next_count(L, t);
        lua_pushvalue(L, t);
        lua_rawseti(L, box, which + 1);
        lua_pop(L, 1);
    }
    /* Each slot reads back as its table, and the count of all of them is
     * the sum of their counts. */
    const uint64_t *slots = ok ? box_slots(L, box, which) : NULL;
    lua_Integer sum = 0;
    for (int i = 0; slots && i < which; i++) {
        lua_rawgeti(L, box, i + 1);
        const void *p = lua_topointer(L, -1);
        ok = ok && slots[i] >> ITYPE_SHIFT == ITYPE_TAB &&
             (const void *)(uintptr_t)(slots[i] & GCPTR_MASK) == p;
        sum += ok ? next_count(L, lua_gettop(L)) : 0;
        lua_pop(L, 1);
    }
    ok = ok && slots && weft_tabkeys_count(slots, which) == sum;
    lua_pop(L, 1);
    if (ok)
        lua_pushcfunction(L, l_slots);
    else
        lua_pushnil(L);
}
