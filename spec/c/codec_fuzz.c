/*
 * codec_fuzz.c — libFuzzer target for the value codec (`make fuzz-codec`).
 *
 * Each input is used three ways:
 *  1. decoded as a blob as it is (header included), and as the body of a blob
 *     with a valid header (decoded with a resolver for by-name values and
 *     an environment), in a second lua_State: must fail cleanly or give a
 *     value;
 *  2. run as a little program that builds a Lua value in the first state
 *     (numbers, strings, booleans, tables, shared references and cycles,
 *     metatables, tables as keys, closures and shared upvalues, int64 and
 *     struct cdata, handles); the value is encoded, decoded into the same
 *     state and compared with deepeq, decoded into the second state,
 *     encoded there again, decoded back into the first and compared again.
 * Any difference, or an encode failure other than the nesting limit, aborts.
 *
 * Handles here are plain integers disguised as pointers and never
 * dereferenced, so a decoded handle entry can do no harm.
 *
 * Every object the builder makes carries a unique label (a "\1id" field, an
 * upvalue, a cdata field or value, a handle number), so that deepeq, which
 * matches objects used as table keys greedily, never has to choose between
 * look-alikes; symmetric look-alikes are covered by the unit tests.
 */
#include "codec.h"
#include "codec_deepeq.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static lua_State *L1, *L2;
static unsigned long runs, label;

static void new_table(lua_State *L, int narr) {
    lua_createtable(L, narr, 1);
    lua_pushnumber(L, (double)++label);
    lua_setfield(L, -2, "\1id");
}
static char err[WEFT_CODEC_ERRLEN];

static void *h_retain(void *p) { return p; }
static void h_release(void *p) { (void)p; }
static void push_h(lua_State *L, void *obj) {
    void **u = lua_newuserdata(L, sizeof(void *));
    *u = obj;
    luaL_getmetatable(L, "test.fake");
    lua_setmetatable(L, -2);
}
static int h_push(lua_State *L, void *obj) {
    push_h(L, obj);
    return 1;
}
static int h_id(lua_State *L) {
    void **u = luaL_checkudata(L, 1, "test.fake");
    lua_pushinteger(L, (lua_Integer)(uintptr_t)*u);
    return 1;
}

static const char BUILDERS[] =
    "local ffi = require 'ffi'\n"
    "function mk_closure(v, id) return function() return v, id end end\n"
    "function mk_pair(v, id) local function get() return v, id end local function set(x) v = x return id end\n"
    "  return {get = get, set = set, ['\\1id'] = id} end\n"
    "function mk_i64(n, id) return ffi.new('int64_t', n) * 1000000 + id end\n"
    "function mk_u64(n, id) return ffi.new('uint64_t', n) * 1000000 + id end\n"
    "function mk_pt(x, id) return ffi.new('struct pt', x, id) end\n"
    "function dumpv(v)\n" /* for reports: the value with object numbers */
    "  local ids, n, out = {}, 0, {}\n"
    "  local function d(x, ind)\n"
    "    if type(x) == 'string' then return string.format('%q', x) end\n"
    "    if type(x) == 'function' and not ids[x] then\n"
    "      n = n + 1; ids[x] = n; local id = n\n"
    "      local ups = {}\n"
    "      for i = 1, debug.getinfo(x, 'u').nups do local nm, w = debug.getupvalue(x, i)\n"
    "        ups[#ups + 1] = nm .. '=' .. d(w, ind .. '  ') end\n"
    "      return 'fn#' .. id .. '<' .. table.concat(ups, ', ') .. '>'\n"
    "    end\n"
    "    if type(x) ~= 'table' then return (ids[x] and '@' .. ids[x] .. ' ' or '') .. tostring(x) end\n"
    "    if ids[x] then return '@' .. ids[x] end\n"
    "    n = n + 1; ids[x] = n; local id = n\n"
    "    local parts = {}\n"
    "    for k, w in next, x do parts[#parts + 1] = ind .. '  [' .. d(k, ind .. '  ') .. '] = ' .. d(w, ind .. '  ') end\n"
    "    local mt = debug.getmetatable(x)\n"
    "    if mt then parts[#parts + 1] = ind .. '  <mt> = ' .. d(mt, ind .. '  ') end\n"
    "    return '#' .. id .. ' {\\n' .. table.concat(parts, ',\\n') .. '\\n' .. ind .. '}'\n"
    "  end\n"
    "  return d(v, '')\n"
    "end\n";

static lua_State *new_state(void) {
    lua_State *L = luaL_newstate();
    if (!L)
        abort();
    luaL_openlibs(L);
    if (getenv("CODEC_FUZZ_GCSTRESS")) { /* collect all the time */
        lua_gc(L, LUA_GCSETPAUSE, 0);
        lua_gc(L, LUA_GCSETSTEPMUL, 1000);
    }
    luaL_newmetatable(L, "test.fake");
    lua_newtable(L);
    lua_pushcfunction(L, h_id);
    lua_setfield(L, -2, "id");
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    if (weft_codec_register_handle(L, "test.fake", h_retain, h_release, h_push))
        abort();
    if (luaL_loadbuffer(L, DEEPEQ_SRC, sizeof DEEPEQ_SRC - 1, "=deepeq") || lua_pcall(L, 0, 0, 0) ||
        luaL_loadbuffer(L, BUILDERS, sizeof BUILDERS - 1, "=builders") || lua_pcall(L, 0, 0, 0)) {
        fprintf(stderr, "setup: %s\n", lua_tostring(L, -1));
        abort();
    }
    return L;
}

static void decode_bytes(const uint8_t *data, size_t size, int with_header) {
    weft_val v;
    size_t len = size + (with_header ? 16 : 0);
    if (len > 0xffffffffu)
        return;
    unsigned char *b = weft_val_alloc(&v, (uint32_t)len, WEFT_CODEC_TAG_BLOB);
    if (!b)
        return;
    if (with_header) {
        uint32_t nobjs = (uint32_t)(size < 64 ? size : 64), zero = 0, off = (uint32_t)len;
        memset(b, 0, 16);
        b[0] = 'w';
        b[1] = 1;
        memcpy(b + 4, &nobjs, 4);
        memcpy(b + 8, &zero, 4);
        memcpy(b + 12, &off, 4);
    }
    if (size)
        memcpy(b + (with_header ? 16 : 0), data, size);
    int top = lua_gettop(L2), r;
    if (with_header) { /* with a resolver for by-name values, and an environment */
        lua_getglobal(L2, "fuzz_resolve");
        lua_getglobal(L2, "fuzz_env");
        r = weft_codec_decode_named(L2, &v, top + 1, top + 2, err, sizeof err);
        if (lua_gettop(L2) != top + 2 + (r == 0))
            abort();
    } else {
        r = weft_codec_decode(L2, &v, err, sizeof err);
        if (lua_gettop(L2) != top + (r == 0))
            abort();
    }
    lua_settop(L2, top);
    weft_val_free(&v); /* a copy that owns no references */
}

/* Builds a value from the bytes; leaves it on L1's stack. */
static void build(const uint8_t *d, size_t n) {
    lua_State *L = L1;
    int base = lua_gettop(L);
    size_t i = 0;
#define NEXT() (i < n ? d[i++] : 0)
#define DEPTH() (lua_gettop(L) - base)
    new_table(L, 0); /* the root */
    while (i < n) {
        unsigned op = NEXT();
        int depth = DEPTH();
        if (depth > 40) {
            lua_settop(L, base + 1);
            depth = 1;
        }
        switch (op % 20) {
        case 0: { /* any double */
            double x;
            unsigned char b[8];
            for (int k = 0; k < 8; k++)
                b[k] = NEXT();
            memcpy(&x, b, 8);
            lua_pushnumber(L, x);
            break;
        }
        case 1:
            lua_pushnumber(L, (double)((int)NEXT() - 128));
            break;
        case 2: { /* integer-valued numbers of any size */
            int e = NEXT() % 60;
            double sign = NEXT() & 1 ? -1.0 : 1.0;
            double low = NEXT();
            lua_pushnumber(L, sign * (double)(1ull << e) + low);
            break;
        }
        case 3: { /* string */
            size_t len = NEXT() % 40;
            if (len > n - i)
                len = n - i;
            lua_pushlstring(L, (const char *)d + i, len);
            i += len;
            break;
        }
        case 4:
            new_table(L, 0);
            break;
        case 5:
            lua_pushboolean(L, NEXT() & 1);
            break;
        case 6:
        case 7: /* t[k] = v with t, k, v taken from the stack */
            if (depth >= 3) {
                int t = base + 1 + NEXT() % depth, k = lua_gettop(L) - 1;
                int kt = lua_type(L, k);
                if (lua_istable(L, t) && kt != LUA_TNIL &&
                    !(kt == LUA_TNUMBER && lua_tonumber(L, k) != lua_tonumber(L, k))) {
                    lua_rawset(L, t);
                    break;
                }
                lua_pop(L, 2);
            }
            break;
        case 8:
        case 9: /* append the top to a table */
            if (depth >= 2) {
                int t = base + 1 + NEXT() % (depth - 1);
                if (lua_istable(L, t)) {
                    lua_rawseti(L, t, (int)lua_objlen(L, t) + 1);
                    break;
                }
                lua_pop(L, 1);
            }
            break;
        case 10: /* push an earlier slot again: shared references, cycles */
            lua_pushvalue(L, base + 1 + NEXT() % depth);
            break;
        case 11: /* setmetatable */
            if (depth >= 2) {
                int t = base + 1 + NEXT() % depth;
                if (lua_istable(L, t) && lua_istable(L, -1) && t != lua_gettop(L)) {
                    lua_setmetatable(L, t);
                    break;
                }
            }
            break;
        case 12:
            if (depth >= 2)
                lua_pop(L, 1);
            break;
        case 13:
        case 14: { /* closure over the top / two closures sharing it */
            if (depth < 2)
                break;
            lua_getglobal(L, op % 20 == 13 ? "mk_closure" : "mk_pair");
            lua_insert(L, -2);
            lua_pushnumber(L, (double)++label);
            lua_call(L, 2, 1);
            break;
        }
        case 15:
            lua_getglobal(L, "mk_i64");
            lua_pushnumber(L, (double)((int)NEXT() - 128) * 1e9);
            lua_pushnumber(L, (double)(++label % 1000000));
            lua_call(L, 2, 1);
            break;
        case 16:
            lua_getglobal(L, "mk_u64");
            lua_pushnumber(L, (double)NEXT() * 1e12);
            lua_pushnumber(L, (double)(++label % 1000000));
            lua_call(L, 2, 1);
            break;
        case 17:
            lua_getglobal(L, "mk_pt");
            lua_pushnumber(L, (double)NEXT() / 7);
            lua_pushnumber(L, (double)++label);
            lua_call(L, 2, 1);
            break;
        case 18:
            push_h(L, (void *)(uintptr_t)++label);
            break;
        case 19: { /* nest: wrap the top in n tables */
            int k = NEXT() % 64;
            for (int j = 0; j < k; j++) {
                new_table(L, 1);
                lua_insert(L, -2);
                lua_rawseti(L, -2, 1);
            }
            break;
        }
        }
    }
    lua_settop(L, base + 1);
#undef NEXT
#undef DEPTH
}

static void compare(lua_State *L, int a, int b, const char *what) {
    a = a < 0 ? lua_gettop(L) + a + 1 : a;
    b = b < 0 ? lua_gettop(L) + b + 1 : b;
    lua_getglobal(L, "deepeq");
    lua_pushvalue(L, a);
    lua_pushvalue(L, b);
    if (lua_pcall(L, 2, 2, 0)) {
        fprintf(stderr, "deepeq raised (%s): %s\n", what, lua_tostring(L, -1));
        abort();
    }
    if (!lua_toboolean(L, -2)) {
        fprintf(stderr, "%s: values differ: %s\n", what, lua_tostring(L, -1));
        luaL_dostring(L, "jit.flush() jit.off()");
        lua_getglobal(L, "deepeq");
        lua_pushvalue(L, a);
        lua_pushvalue(L, b);
        lua_call(L, 2, 1);
        fprintf(stderr, "with the JIT off, deepeq says: %s\n", lua_toboolean(L, -1) ? "equal" : "differ");
        lua_pop(L, 1);
        lua_getglobal(L, "dumpv");
        lua_pushvalue(L, a);
        lua_call(L, 1, 1);
        fprintf(stderr, "original: %s\n", lua_tostring(L, -1));
        lua_getglobal(L, "dumpv");
        lua_pushvalue(L, b);
        lua_call(L, 1, 1);
        fprintf(stderr, "copy: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_pop(L, 2);
}

static void roundtrip(const uint8_t *data, size_t size) {
    int top1 = lua_gettop(L1), top2 = lua_gettop(L2);
    build(data, size);
    int orig = lua_gettop(L1);
    weft_val v, v2;
    if (weft_codec_encode(L1, orig, &v, err, sizeof err)) {
        if (!strstr(err, "nested more than")) {
            fprintf(stderr, "encode failed: %s\n", err);
            abort();
        }
        lua_settop(L1, top1);
        return;
    }
    if (weft_codec_decode(L1, &v, err, sizeof err)) {
        fprintf(stderr, "decode failed: %s\n", err);
        abort();
    }
    compare(L1, orig, -1, "same state");
    lua_pop(L1, 1);
    if (weft_codec_decode(L2, &v, err, sizeof err)) {
        fprintf(stderr, "decode in the other state failed: %s\n", err);
        abort();
    }
    if (weft_codec_encode(L2, -1, &v2, err, sizeof err)) {
        /* Functions nested through upvalues are limited by the depth of the
         * encoder's walk, which depends on the order tables are traversed
         * in, and that differs between a value and its copy. */
        if (!strstr(err, "nested more than")) {
            fprintf(stderr, "re-encode failed: %s\n", err);
            abort();
        }
        weft_codec_val_free(&v);
        lua_settop(L1, top1);
        lua_settop(L2, top2);
        return;
    }
    if (weft_codec_decode(L1, &v2, err, sizeof err)) {
        fprintf(stderr, "decode back failed: %s\n", err);
        abort();
    }
    compare(L1, orig, -1, "via the other state");
    weft_codec_val_free(&v);
    weft_codec_val_free(&v2);
    lua_settop(L1, top1);
    lua_settop(L2, top2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!L1) {
        L1 = new_state();
        L2 = new_state();
        /* paths starting with '!' make the resolver raise */
        if (luaL_dostring(L2, "fuzz_env = setmetatable({}, {__index = _G})\n"
                              "function fuzz_resolve(p) if p:byte(1) == 33 then error('no ' .. p) end"
                              " return {p} end"))
            abort();
    }
    decode_bytes(data, size, 0);
    decode_bytes(data, size, 1);
    roundtrip(data, size);
    if (++runs % 256 == 0) {
        lua_gc(L1, LUA_GCCOLLECT, 0);
        lua_gc(L2, LUA_GCCOLLECT, 0);
    }
    return 0;
}
