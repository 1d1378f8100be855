/*
 * transfer.c — packed values (see transfer.h): a full userdata holding one
 * codec value (weft_val) from pack to unpack. Classic Lua C API; the value
 * is freed exactly once: by unpack, by pack_free or by __gc.
 */
#include "transfer.h"

#include "codec.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdbool.h>
#include <string.h>

#define PACKED_MT "weft.packed"

/* Room for messages with long paths. */
#define TRANSFER_ERRLEN 512

typedef struct packed {
    weft_val v;
    bool live; /* v is held and not yet unpacked or freed */
} packed;

static int l_packed_free(lua_State *L) {
    packed *p = luaL_checkudata(L, 1, PACKED_MT);
    if (p->live) {
        p->live = false;
        weft_codec_val_free(&p->v);
    }
    return 0;
}

static int l_packed_tostring(lua_State *L) {
    packed *p = luaL_checkudata(L, 1, PACKED_MT);
    lua_pushfstring(L, "weft.packed (%s): %p", p->live ? "held" : "consumed", (void *)p);
    return 1;
}

/* Pushes a new, empty packed value. */
static packed *packed_new(lua_State *L) {
    packed *p = lua_newuserdata(L, sizeof *p);
    memset(p, 0, sizeof *p);
    if (luaL_newmetatable(L, PACKED_MT)) {
        lua_pushcfunction(L, l_packed_free);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_packed_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushliteral(L, "weft.packed");
        lua_setfield(L, -2, "__metatable");
    }
    lua_setmetatable(L, -2);
    return p;
}

static int opt_table(lua_State *L, int idx, const char *what) {
    if (lua_isnoneornil(L, idx))
        return 0;
    if (!lua_istable(L, idx))
        return luaL_argerror(L, idx, what);
    return idx;
}

/* pack(names, value [, labels [, funcs]]) -> packed | nil, message */
static int l_pack(lua_State *L) {
    luaL_checkany(L, 2);
    weft_codec_opts o = {
        .names = opt_table(L, 1, "names must be a table or nil"),
        .labels = opt_table(L, 3, "labels must be a table or nil"),
        .funcs = opt_table(L, 4, "funcs must be a table or nil"),
    };
    char err[TRANSFER_ERRLEN];
    packed *p = packed_new(L); /* first: nothing can fail once the value is made */
    if (weft_codec_encode_named(L, 2, &o, &p->v, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    p->live = true;
    return 1;
}

/* unpack(packed, resolver, env) -> value */
static int l_unpack(lua_State *L) {
    packed *p = luaL_checkudata(L, 1, PACKED_MT);
    int resolver = lua_isnoneornil(L, 2) ? 0 : 2;
    int env = opt_table(L, 3, "env must be a table or nil");
    if (!p->live)
        return luaL_error(L, "packed value already unpacked");
    weft_val v = p->v;
    memset(&p->v, 0, sizeof p->v);
    p->live = false;
    char err[TRANSFER_ERRLEN];
    int r = weft_codec_decode_named(L, &v, resolver, env, err, sizeof err);
    weft_codec_val_free(&v);
    if (r != 0)
        return luaL_error(L, "%s", err);
    return 1;
}

int weft_transfer_take(lua_State *L, int idx, weft_val *out) {
    memset(out, 0, sizeof *out);
    packed *p = lua_touserdata(L, idx);
    if (!p || !lua_getmetatable(L, idx))
        return -1;
    luaL_getmetatable(L, PACKED_MT);
    int is = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (!is || !p->live)
        return -1;
    *out = p->v;
    memset(&p->v, 0, sizeof p->v);
    p->live = false;
    return 0;
}

void weft_transfer_push(lua_State *L, weft_val *v) {
    packed *p = packed_new(L);
    p->v = *v;
    p->live = true;
    memset(v, 0, sizeof *v);
}

void weft_transfer_register(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"pack", l_pack},
        {"unpack", l_unpack},
        {"pack_free", l_packed_free},
        {NULL, NULL},
    };
    luaL_register(L, NULL, fns);
}
