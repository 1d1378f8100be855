/*
 * codec_test.c — tests of the value codec (bindings/codec.c).
 *
 * Values are built in one lua_State, encoded, decoded in ANOTHER lua_State
 * (as they will be across VMs) and compared there with a value built by the
 * same code, by a deep-equality function written in Lua that maps objects
 * one to one (so cycles, shared references and shared upvalues are checked
 * too). Each decoded value is also encoded again and decoded back into the
 * first state. Then: error messages, scalars that must not allocate, handle
 * reference counts, decoding of truncated and corrupted encodings, and the
 * transfer variants (values sent by name and resolved by the receiver,
 * environments of decoded functions, labelled root fields in messages).
 *
 * One line per test; the last line is "N passed, N failed".
 */
#include "codec.h"
#include "codec_deepeq.h"
#include "tally.h"
#include "transfer.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


/* snprintf that may truncate (messages of failed checks). */
static void setmsg(char *m, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, n, fmt, ap);
    va_end(ap);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- a fake engine object type ------------------------------------------ */

typedef struct fake {
    int id;
    long refs;
} fake;

#define NFAKES 4
static fake fakes[NFAKES];
static long n_retain, n_release, n_push;

static void *fake_retain(void *p) {
    ((fake *)p)->refs++;
    n_retain++;
    return p;
}
static void fake_release(void *p) {
    ((fake *)p)->refs--;
    n_release++;
}
static void push_fake_ud(lua_State *L, void *obj) {
    void **u = lua_newuserdata(L, sizeof(void *));
    *u = obj;
    luaL_getmetatable(L, "test.fake");
    lua_setmetatable(L, -2);
}
static int fake_push(lua_State *L, void *p) {
    n_push++;
    push_fake_ud(L, p);
    return 1;
}
static int fake_gc(lua_State *L) {
    void **u = luaL_checkudata(L, 1, "test.fake");
    if (*u)
        fake_release(*u);
    *u = NULL;
    return 0;
}
static int fake_id(lua_State *L) {
    void **u = luaL_checkudata(L, 1, "test.fake");
    lua_pushinteger(L, *u ? ((fake *)*u)->id : -1);
    return 1;
}
static int l_mkfake(lua_State *L) {
    int i = (int)luaL_checkinteger(L, 1);
    luaL_argcheck(L, i >= 0 && i < NFAKES, 1, "no such fake");
    push_fake_ud(L, fake_retain(&fakes[i]));
    return 1;
}
static int l_mknullfake(lua_State *L) {
    push_fake_ud(L, NULL);
    return 1;
}
static int l_lightud(lua_State *L) {
    lua_pushlightuserdata(L, &fakes[0]);
    return 1;
}

static lua_State *new_state(int with_setup) {
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "luaL_newstate failed\n");
        exit(2);
    }
    luaL_openlibs(L);
    luaL_newmetatable(L, "test.fake");
    lua_pushcfunction(L, fake_gc);
    lua_setfield(L, -2, "__gc");
    lua_newtable(L);
    lua_pushcfunction(L, fake_id);
    lua_setfield(L, -2, "id");
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    if (weft_codec_register_handle(L, "test.fake", fake_retain, fake_release, fake_push) != 0) {
        fprintf(stderr, "register_handle failed\n");
        exit(2);
    }
    lua_register(L, "mkfake", l_mkfake);
    lua_register(L, "mknullfake", l_mknullfake);
    lua_register(L, "lightud", l_lightud);
    if (with_setup) {
        if (luaL_loadbuffer(L, DEEPEQ_SRC, sizeof DEEPEQ_SRC - 1, "=deepeq") || lua_pcall(L, 0, 0, 0)) {
            fprintf(stderr, "setup: %s\n", lua_tostring(L, -1));
            exit(2);
        }
    }
    return L;
}

static lua_State *A, *B;
static char err[WEFT_CODEC_ERRLEN];

/* Runs src (chunk name `chunk`) in L, leaving its first result on the stack. */
static int build(lua_State *L, const char *src, const char *chunk, char *msg, size_t msglen) {
    if (luaL_loadbuffer(L, src, strlen(src), chunk) || lua_pcall(L, 0, 1, 0)) {
        setmsg(msg, msglen, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

/* deepeq(L[a], L[b]): 1 equal; 0 with the reason in msg. */
static int deepeq(lua_State *L, int a, int b, char *msg, size_t msglen) {
    a = a < 0 ? lua_gettop(L) + a + 1 : a;
    b = b < 0 ? lua_gettop(L) + b + 1 : b;
    lua_getglobal(L, "deepeq");
    lua_pushvalue(L, a);
    lua_pushvalue(L, b);
    if (lua_pcall(L, 2, 2, 0)) {
        setmsg(msg, msglen, "deepeq raised: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return 0;
    }
    int ok = lua_toboolean(L, -2);
    if (!ok)
        setmsg(msg, msglen, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "differs");
    lua_pop(L, 2);
    return ok;
}

/* The full round trip of one value built by src:
 * A builds -> encode -> B decodes; B builds the expected value; deepeq;
 * B re-encodes got -> A decodes; deepeq in A; then the optional check(got)
 * in B (last, since it may change got). */
static void rt_chunk(const char *name, const char *src, const char *chunk, const char *check) {
    char msg[512] = "";
    int topA = lua_gettop(A), topB = lua_gettop(B), ok = 0;
    weft_val v, v2;
    memset(&v, 0, sizeof v);
    memset(&v2, 0, sizeof v2);
    if (build(A, src, chunk, msg, sizeof msg))
        goto out;
    if (weft_codec_encode(A, -1, &v, err, sizeof err)) {
        setmsg(msg, sizeof msg, "encode: %s", err);
        goto out;
    }
    if (weft_codec_decode(B, &v, err, sizeof err)) {
        setmsg(msg, sizeof msg, "decode: %s", err);
        goto out;
    }
    if (build(B, src, chunk, msg, sizeof msg))
        goto out;
    if (!deepeq(B, -1, -2, msg, sizeof msg))
        goto out;
    lua_pop(B, 1);
    if (weft_codec_encode(B, -1, &v2, err, sizeof err)) {
        setmsg(msg, sizeof msg, "re-encode: %s", err);
        goto out;
    }
    if (weft_codec_decode(A, &v2, err, sizeof err)) {
        setmsg(msg, sizeof msg, "decode back: %s", err);
        goto out;
    }
    if (!deepeq(A, -2, -1, msg, sizeof msg)) {
        char m2[600];
        snprintf(m2, sizeof m2, "after the way back: %s", msg);
        setmsg(msg, sizeof msg, "%s", m2);
        goto out;
    }
    if (check) {
        if (luaL_loadbuffer(B, check, strlen(check), "=check")) {
            setmsg(msg, sizeof msg, "check: %s", lua_tostring(B, -1));
            goto out;
        }
        lua_pushvalue(B, -2);
        if (lua_pcall(B, 1, 1, 0)) {
            setmsg(msg, sizeof msg, "check raised: %s", lua_tostring(B, -1));
            goto out;
        }
        if (lua_toboolean(B, -1) != 1 || lua_type(B, -1) != LUA_TBOOLEAN) {
            setmsg(msg, sizeof msg, "check: %s", lua_tostring(B, -1) ? lua_tostring(B, -1) : "false");
            goto out;
        }
        lua_pop(B, 1);
    }
    ok = 1;
out:
    weft_codec_val_free(&v);
    weft_codec_val_free(&v2);
    lua_settop(A, topA);
    lua_settop(B, topB);
    result(ok, name, "%s", msg);
}

static void rt(const char *name, const char *src, const char *check) { rt_chunk(name, src, "=case", check); }

/* Encoding the value built by src must fail with exactly `want` (or, when
 * want starts with '~', with a message containing the rest). */
static void refuse_chunk(const char *name, const char *src, const char *chunk, const char *want) {
    char msg[512] = "";
    int top = lua_gettop(A), ok = 0;
    long r0 = n_retain, rel0 = n_release;
    weft_val v;
    memset(&v, 0, sizeof v);
    if (build(A, src, chunk, msg, sizeof msg))
        goto out;
    int top1 = lua_gettop(A);
    if (weft_codec_encode(A, -1, &v, err, sizeof err) == 0) {
        setmsg(msg, sizeof msg, "encode succeeded");
        weft_codec_val_free(&v);
        goto out;
    }
    if (lua_gettop(A) != top1) {
        setmsg(msg, sizeof msg, "stack changed");
        goto out;
    }
    if (v.flags || v.len || v.tag || v.u.u) {
        setmsg(msg, sizeof msg, "out not zeroed");
        goto out;
    }
    if (want[0] == '~' ? !strstr(err, want + 1) : strcmp(err, want) != 0) {
        setmsg(msg, sizeof msg, "got \"%s\", want \"%s\"", err, want);
        goto out;
    }
    ok = 1;
out:
    lua_settop(A, top);
    lua_gc(A, LUA_GCCOLLECT, 0);
    if (ok && n_retain - r0 != n_release - rel0) {
        ok = 0;
        setmsg(msg, sizeof msg, "handle references leaked by the failed encode (%ld retains, %ld releases)",
                 n_retain - r0, n_release - rel0);
    }
    result(ok, name, "%s", msg);
}

static void refuse(const char *name, const char *src, const char *want) {
    refuse_chunk(name, src, "=case", want);
}

/* ---- scalars ---------------------------------------------------------------- */

static void scalar(const char *name, const char *src, uint16_t tag, int heap) {
    char msg[300] = "";
    int ok = 0, top = lua_gettop(A);
    weft_val v;
    memset(&v, 0, sizeof v);
    if (build(A, src, "=scalar", msg, sizeof msg))
        goto out;
    if (weft_codec_encode(A, -1, &v, err, sizeof err)) {
        setmsg(msg, sizeof msg, "encode: %s", err);
        goto out;
    }
    if (v.tag != tag || !!(v.flags & WEFT_VAL_HEAP) != heap) {
        setmsg(msg, sizeof msg, "tag %u flags %u, want tag %u %s", v.tag, v.flags, tag,
                 heap ? "heap" : "inline");
        goto out;
    }
    ok = 1;
out:
    weft_codec_val_free(&v);
    lua_settop(A, top);
    result(ok, name, "%s", msg);
}

static void test_scalars(void) {
    scalar("scalar true is inline", "return true", WEFT_TAG_BOOL, 0);
    scalar("scalar false is inline", "return false", WEFT_TAG_BOOL, 0);
    scalar("scalar 0 is inline", "return 0", WEFT_TAG_NUMBER, 0);
    scalar("scalar -0.0 is inline", "return -0.0", WEFT_TAG_NUMBER, 0);
    scalar("scalar NaN is inline", "return 0/0", WEFT_TAG_NUMBER, 0);
    scalar("scalar 2^53 is inline", "return 2^53", WEFT_TAG_NUMBER, 0);
    scalar("scalar empty string is inline", "return ''", WEFT_TAG_RAW, 0);
    scalar("scalar 8-byte string is inline", "return '12345678'", WEFT_TAG_RAW, 0);
    scalar("scalar 8 zero bytes are inline", "return ('\\0'):rep(8)", WEFT_TAG_RAW, 0);
    scalar("9-byte string is one heap buffer", "return '123456789'", WEFT_TAG_RAW, 1);
    scalar("scalar int64 1LL is inline", "return 1LL", WEFT_TAG_INT64, 0);
    scalar("scalar uint64 2ULL is inline", "return 2ULL", WEFT_TAG_UINT64, 0);
    scalar("table is a blob", "return {}", WEFT_CODEC_TAG_BLOB, 1);
    scalar("struct cdata is a blob", "return require('ffi').new('struct pt', 1, 2)", WEFT_CODEC_TAG_BLOB, 1);

    /* values as the engine delivers them */
    const char *what[] = {"true", "false", "-0.0", "1/0", "-1/0", "0/0", "2^53", "-2^53", "2^53 + 2",
                          "1e308", "5e-324", "-1.5", "''", "'abc'", "'12345678'", "'123456789'",
                          "'a\\0b'", "1LL", "-1LL", "0x7fffffffffffffffLL", "-0x8000000000000000LL",
                          "2ULL", "0xffffffffffffffffULL"};
    for (size_t i = 0; i < sizeof what / sizeof what[0]; i++) {
        char src[64], name[96];
        snprintf(src, sizeof src, "return %s", what[i]);
        snprintf(name, sizeof name, "round trip of %s", what[i]);
        rt(name, src, NULL);
    }

    /* values made by C stages */
    {
        int ok = 1, top = lua_gettop(B);
        char msg[200] = "";
        weft_val v = weft_val_int(-42);
        if (weft_codec_decode(B, &v, err, sizeof err) || lua_type(B, -1) != 10) {
            ok = 0;
            setmsg(msg, sizeof msg, "int: %s", err);
        } else {
            lua_getglobal(B, "tostring");
            lua_pushvalue(B, -2);
            lua_call(B, 1, 1);
            if (strcmp(lua_tostring(B, -1), "-42LL") != 0)
                ok = 0, setmsg(msg, sizeof msg, "int: %s", lua_tostring(B, -1));
        }
        lua_settop(B, top);
        v = weft_val_bytes("hello, world", 12);
        if (weft_codec_decode(B, &v, err, sizeof err) || !lua_isstring(B, -1) ||
            strcmp(lua_tostring(B, -1), "hello, world") != 0)
            ok = 0, setmsg(msg, sizeof msg, "bytes");
        weft_codec_val_free(&v);
        lua_settop(B, top);
        v = weft_val_ptr(&fakes[1]);
        if (weft_codec_decode(B, &v, err, sizeof err) || lua_touserdata(B, -1) != &fakes[1])
            ok = 0, setmsg(msg, sizeof msg, "ptr");
        lua_settop(B, top);
        v = weft_val_num(2.5);
        v.tag = 99;
        if (weft_codec_decode(B, &v, err, sizeof err) == 0 || lua_gettop(B) != top ||
            strcmp(err, "cannot decode value with tag 99") != 0)
            ok = 0, setmsg(msg, sizeof msg, "tag 99: %s", err);
        lua_settop(B, top);
        result(ok, "decodes values made in C (int64, bytes, pointer, unknown tag)", "%s", msg);
    }
    {
        /* a state where nobody required ffi yet: int64 still decodes */
        lua_State *C = new_state(0);
        weft_val v = weft_val_int(7);
        int ok = weft_codec_decode(C, &v, err, sizeof err) == 0 && lua_type(C, -1) == 10;
        lua_close(C);
        result(ok, "int64 decodes in a state that never required ffi", "%s", err);
    }
}

/* ---- the comparator itself ------------------------------------------------ */

static void test_deepeq(void) {
    static const char src[] =
        "local ffi = require 'ffi'\n"
        "local function ne(a, b) return not deepeq(a, b) end\n"
        "local s = {}\n"
        "local c1 = {} c1.x = c1\n"
        "local c2 = {} c2.x = {x = c2}\n"
        "local function mk() local n = 0 return function() return n end, function() return n end end\n"
        "local a1, b1 = mk() local a2, b2 = mk() local a3, b3 = mk() local a4, b4 = mk()\n"
        "debug.upvaluejoin(b4, 1, a3, 1)\n"
        "local k1, k2 = {1}, {1}\n"
        "local checks = {\n"
        "  deepeq({1, {2}, x = 'y'}, {1, {2}, x = 'y'}), ne({1}, {2}), ne({1}, {1, 2}), ne({a = 1}, {b = 1}),\n"
        "  ne({s, s}, {{}, {}}), ne({{}, {}}, {s, s}), deepeq({s, s}, {k1 and {} or 0, 0}) == false,\n"
        "  ne(c1, c2), deepeq(c1, (function() local c = {} c.x = c return c end)()),\n"
        "  ne(0.0, -0.0), deepeq(0/0, 0/0), ne(1, '1'),\n"
        "  ne(setmetatable({}, {}), {}), ne(setmetatable({}, {a = 1}), setmetatable({}, {a = 2})),\n"
        "  ne({[{1}] = 1}, {[{2}] = 1}), deepeq({[k1] = k1}, {[k2] = k2}), ne({[k1] = k1}, {[k2] = k1}),\n"
        "  deepeq({a1, b1}, {a2, b2}), ne({a1, b1}, {a4, b4}), deepeq({a1, b1}, {a3, b4}),\n"
        "  ne(function() return 1 end, function() return 2 end),\n"
        "  ne(ffi.new('struct pt', 1, 2), ffi.new('struct pt', 1, 3)), ne(1LL, 1ULL), ne(1LL, 2LL),\n"
        "  deepeq(ffi.new('struct pt', 1, 2), ffi.new('struct pt', 1, 2)),\n"
        "  ne(mkfake(1), mkfake(2)), deepeq(mkfake(1), mkfake(1)),\n"
        "}\n"
        "for i = 1, 27 do if checks[i] ~= true then return 'check ' .. i end end\n"
        "return true\n";
    char msg[200] = "";
    int top = lua_gettop(B), ok = 0;
    if (build(B, src, "=deepeq_test", msg, sizeof msg) == 0) {
        ok = lua_type(B, -1) == LUA_TBOOLEAN && lua_toboolean(B, -1);
        if (!ok)
            setmsg(msg, sizeof msg, "%s", lua_tostring(B, -1));
    }
    lua_settop(B, top);
    lua_gc(B, LUA_GCCOLLECT, 0);
    result(ok, "the comparator tells equal from different values", "%s", msg);
}

/* ---- round trips ---------------------------------------------------------- */

static void test_tables(void) {
    rt("empty table", "return {}", NULL);
    rt("array", "return {1, 2, 3, 'four', 5.5, true, false}", NULL);
    rt("record", "return {a = 1, b = 'two', c = {d = {e = 'deep'}}}", NULL);
    rt("array with holes", "return {1, nil, 3, nil, nil, 6}", NULL);
    rt("holes made by assignment",
       "local t = {} for i = 1, 100 do t[i] = i end for i = 2, 99 do t[i] = nil end return t", NULL);
    rt("number keys of every kind",
       "return {[0] = 'z', [-1] = 'm', [1.5] = 'h', [2^53] = 'big', [-2^53] = 'nbig', [1/0] = 'inf',"
       " [-1/0] = 'ninf', [1e300] = 'e', [2^31] = 'i', [4294967296] = 'u'}",
       NULL);
    rt("boolean keys", "return {[true] = 'yes', [false] = 'no'}", NULL);
    rt("numbers inside tables",
       "return {0, -0.0, 0/0, 1/0, -1/0, 2^53, -2^53, 2^53 - 1, 0.1, 1e-310, 63, 64, -1, 127, 128,"
       " 2^31, -2^31, 2^32 + 1, 1e15, 3.14159}",
       "local t = ... return 1/t[2] < 0 and t[3] ~= t[3] and t[6] == 2^53");
    rt("strings with any bytes",
       "local all = {} for i = 0, 255 do all[#all + 1] = string.char(i) end"
       " return {'', '\\0', 'a\\0b', table.concat(all), ('x'):rep(127), ('y'):rep(128),"
       " ('z'):rep(70000), ['\\0key'] = '\\255'}",
       "local t = ... return #t[4] == 256 and t[2] == '\\0' and #t[7] == 70000");
    rt("mixed array and hash parts", "local t = {1, 2, 3, x = 1, y = {2}} t[10] = 10 t[4] = 4 return t",
       NULL);
    rt("table keys", "local k1, k2 = {1}, {2} return {[k1] = 'one', [k2] = 'two', [{}] = k1}", NULL);
    rt("the same table as key and value", "local k = {'k'} return {[k] = k, other = k}",
       "local t = ... local k = t.other return t[k] == k");
    rt("nested depth 200",
       "local root = {} local t = root for i = 2, 200 do local n = {} t[1] = n t = n end"
       " t.bottom = true return root",
       NULL);
    rt("nested depth 1000 with keys and metatables on the way",
       "local root = {} local t = root for i = 2, 1000 do local n = {i = i} t[1] = n"
       " if i % 7 == 0 then setmetatable(n, {depth = i}) end if i % 11 == 0 then n[{i}] = t end t = n end"
       " t.bottom = true return root",
       "local t = ... for i = 2, 1000 do t = t[1] end return t.bottom and t.i == 1000");
    rt("linked list of 100000 nodes",
       "local head = nil for i = 100000, 1, -1 do head = {v = i, next = head} end return head",
       "local n, p = 0, ... while p do n = n + 1 p = p.next end return n == 100000");
}

static void test_cycles(void) {
    rt("t.self = t", "local t = {} t.self = t return t", "local t = ... return t.self == t");
    rt("two-table cycle", "local a, b = {}, {} a.b = b b.a = a return a",
       "local a = ... return a.b.a == a");
    rt("shared reference kept", "local s = {n = 1} return {s, s, {s}, x = s}",
       "local t = ... return t[1] == t[2] and t[3][1] == t[1] and t.x == t[1]");
    rt("distinct equal tables stay distinct", "return {{}, {}}", "local t = ... return t[1] ~= t[2]");
    rt("table as its own key", "local t = {} t[t] = t return t", "local t = ... return t[t] == t");
    rt("cycle of 5000 tables",
       "local first = {} local t = first for i = 1, 4999 do t.next = {i = i} t = t.next end t.next = first"
       " return first",
       "local t = ... local p = t for i = 1, 5000 do p = p.next end return p == t and t.next.next.i == 2");
    rt("metatable kept", "return setmetatable({x = 1}, {__index = {y = 2}})",
       "local t = ... return t.y == 2 and rawget(t, 'y') == nil");
    rt("metatable shared by many",
       "local mt = {__index = {kind = 'point'}} local t = {} for i = 1, 10 do t[i] = setmetatable({i}, mt) end"
       " return t",
       "local t = ... return getmetatable(t[1]) == getmetatable(t[10]) and t[5].kind == 'point'");
    rt("table is its own metatable", "local t = {} t.__index = t t.v = 1 return setmetatable(t, t)",
       "local t = ... return getmetatable(t) == t");
    rt("metatable with a function",
       "local mt = {__add = function(a, b) return a.v + b.v end} return {setmetatable({v = 1}, mt),"
       " setmetatable({v = 2}, mt)}",
       "local t = ... return t[1] + t[2] == 3");
    rt("weak table", "return setmetatable({1, 2}, {__mode = 'k'})", NULL);
}

static void test_functions(void) {
    rt("plain function", "return function(a, b) return a + b end", "local f = ... return f(2, 3) == 5");
    rt("closure with upvalues",
       "local n, s, t = 10, 'str', {1, 2} return function(x) return x + n + #s + #t end",
       "local f = ... return f(1) == 1 + 10 + 3 + 2");
    rt("recursive local function",
       "local function fact(n) if n <= 1 then return 1 end return n * fact(n - 1) end return fact",
       "local f = ... return f(10) == 3628800");
    rt("function in a table that it captures",
       "local t = {} t.f = function() return t end return t",
       "local t = ... return t.f() == t");
    rt("function capturing a table that contains the function",
       "local t = {} local function f() return t end t.me = f return f",
       "local f = ... return f().me == f");
    rt("two closures share an upvalue",
       "local n = 0 local function inc() n = n + 1 return n end local function get() return n end"
       " return {inc = inc, get = get}",
       "local t = ... t.inc() t.inc() return t.get() == 2 and debug.upvalueid(t.inc, 1) == "
       "debug.upvalueid(t.get, 1)");
    rt("shared upvalue holding a cycle",
       "local st = {} local function a() return st end local function b() return st end st.a = a st.b = b"
       " return st",
       "local st = ... return st.a() == st and st.b() == st and debug.upvalueid(st.a, 1) == "
       "debug.upvalueid(st.b, 1)");
    rt("upvalue shared through a function reached via an upvalue",
       "local x = 1 local function g() x = x + 1 return x end local function f() return g() + x end"
       " return f",
       "local f = ... local _, g = debug.getupvalue(f, 1) if debug.getupvalue(f, 1) ~= 'g' then "
       "_, g = debug.getupvalue(f, 2) end g() return f() == 3 + 3");
    rt("same closure twice", "local f = function() end return {f, f}", "local t = ... return t[1] == t[2]");
    rt("closures of one prototype stay distinct",
       "local t = {} for i = 1, 3 do t[i] = function() return i end end return t",
       "local t = ... return t[1]() == 1 and t[3]() == 3 and t[1] ~= t[2]");
    rt("vararg function", "return function(...) return select('#', ...), ... end",
       "local f = ... local n, a = f(1, nil, 3) return n == 3 and a == 1");
    rt("function with an int64 constant", "return function(x) return x + 1LL end",
       "local f = ... return f(1) == 2LL");
    rt("function with a cdata upvalue", "local ffi = require 'ffi' local p = ffi.new('struct pt', 3, 4)"
       " return function() return p.x + p.y end",
       "local f = ... return f() == 7");
    rt("function with a handle upvalue", "local h = mkfake(2) return function() return h:id() end",
       "local f = ... return f() == 2");
    rt("function with nil upvalue", "local u return function() return u end",
       "local f = ... return f() == nil");
    rt_chunk("function keeps its source and lines", "local a = 1\n\nreturn function() return a end", "@src.lua",
             "local f = ... local i = debug.getinfo(f, 'S') return i.short_src == 'src.lua' and "
             "i.linedefined == 3");
    rt("coroutine body function", "return function(n) local s = 0 for i = 1, n do s = s + "
       "coroutine.yield(i) end return s end",
       "local co = coroutine.wrap(...) co(3) co(1) co(2) return co(3) == 6");
    rt("function environment is the receiver's globals", "return function() return math.pi end",
       "local f = ... return f() == math.pi and getfenv(f) == _G");
}

static void test_cdata(void) {
    rt("int64 and uint64 in a table",
       "return {1LL, -1LL, 0x7fffffffffffffffLL, -0x8000000000000000LL, 2ULL, 0xffffffffffffffffULL}",
       "local t = ... return t[3] == 0x7fffffffffffffffLL and t[6] == 0xffffffffffffffffULL and "
       "tostring(require('ffi').typeof(t[5])) == 'ctype<uint64_t>'");
    rt("same cdata twice stays one", "local x = 5LL return {x, x, [x] = 1}",
       "local t = ... return t[1] == t[2] and rawequal(t[1], t[2]) and t[t[1]] == 1");
    rt("struct", "return require('ffi').new('struct pt', 1.5, -2)", "local p = ... return p.x == 1.5 and p.y == -2");
    rt("struct with arrays and nested structs",
       "local r = require('ffi').new('struct rec') r.a = -7 r.b[2] = 200 r.c = 0/0 r.p[1].y = 9 return r",
       "local r = ... return r.a == -7 and r.b[2] == 200 and r.c ~= r.c and r.p[1].y == 9");
    rt("union", "local u = require('ffi').new('union num') u.u = 0x7ff8000000000001ULL return u", NULL);
    rt("array", "return require('ffi').new('int[5]', {1, 2, 3, 4, 5})", "local a = ... return a[4] == 5");
    rt("const array", "return require('ffi').new('const int[3]', {7, 8, 9})",
       "local a = ... return a[2] == 9");
    rt("2-d array", "local a = require('ffi').new('uint8_t[2][3]') a[1][2] = 42 return a",
       "local a = ... return a[1][2] == 42");
    rt("variable-length array", "local a = require('ffi').new('double[?]', 7) a[6] = 6.5 return a",
       "local a = ... return require('ffi').sizeof(a) == 56 and a[6] == 6.5");
    rt("variable-length struct", "local v = require('ffi').new('struct vls', 5) v.n = 5 v.d[4] = 65 return v",
       "local v = ... return require('ffi').sizeof(v) == 9 and v.d[4] == 65");
    rt("large struct (512 bytes)",
       "local b = require('ffi').new('struct big') for i = 0, 63 do b.v[i] = i * 1.5 end return b",
       "local b = ... return b.v[63] == 63 * 1.5");
    rt("scalar cdata: int, double, bool, complex, enum",
       "local ffi = require 'ffi' return {ffi.new('int', -3), ffi.new('double', 2.5), ffi.new('bool', true),"
       " ffi.new('complex', 1, 2), ffi.new('enum color', 'BLUE'), ffi.new('uint8_t', 255), ffi.new('float', 0.5)}",
       "local t = ... return t[1] == -3 and t[2] == 2.5 and t[4].im == 2 and t[5] == 6 and t[7] == 0.5");
    rt("1 MB byte array", "local ffi = require 'ffi' local a = ffi.new('uint8_t[?]', 1048576)"
       " for i = 0, 1048575, 4099 do a[i] = i % 251 end return a",
       "local a = ... return a[4099 * 100] == (4099 * 100) % 251");
}

static void test_handles(void) {
    lua_gc(A, LUA_GCCOLLECT, 0);
    lua_gc(B, LUA_GCCOLLECT, 0);
    long r0 = n_retain, rel0 = n_release;
    rt("handle", "return mkfake(1)", "local h = ... return h:id() == 1");
    rt("handles in a table, one shared", "local h = mkfake(1) return {h, h, mkfake(2), mkfake(1)}",
       "local t = ... return t[1] == t[2] and t[1] ~= t[4] and t[4]:id() == 1 and t[3]:id() == 2");
    rt("handle as a key", "return {[mkfake(3)] = 'v'}", NULL);
    lua_gc(A, LUA_GCCOLLECT, 0);
    lua_gc(B, LUA_GCCOLLECT, 0);
    result(n_retain - r0 == n_release - rel0, "handle references balance after round trips",
           "%ld retains, %ld releases", n_retain - r0, n_release - rel0);

    /* dropped without decoding */
    {
        int top = lua_gettop(A);
        weft_val v;
        build(A, "local h = mkfake(0) return {h, h, {mkfake(0)}, f = function() return h end}", "=h", err,
              sizeof err);
        long before = fakes[0].refs;
        int ok = weft_codec_encode(A, -1, &v, err, sizeof err) == 0;
        long held = fakes[0].refs - before;
        weft_codec_val_free(&v);
        long after = fakes[0].refs - before;
        lua_settop(A, top);
        result(ok && held == 2 && after == 0 && v.flags == 0 && v.len == 0,
               "weft_codec_val_free releases the handles of an undecoded value",
               "held %ld, after free %ld", held, after);
    }
    /* decoded twice, then freed: each decode holds its own reference */
    {
        int top = lua_gettop(B);
        weft_val v;
        long before = fakes[3].refs;
        build(A, "return {mkfake(3), mkfake(3)}", "=h", err, sizeof err);
        int ok = weft_codec_encode(A, -1, &v, err, sizeof err) == 0;
        lua_pop(A, 1);
        lua_gc(A, LUA_GCCOLLECT, 0);
        ok = ok && weft_codec_decode(B, &v, err, sizeof err) == 0 && weft_codec_decode(B, &v, err, sizeof err) == 0;
        long mid = fakes[3].refs - before; /* 2 in the blob + 2 per decode */
        weft_codec_val_free(&v);
        lua_settop(B, top);
        lua_gc(B, LUA_GCCOLLECT, 0);
        long after = fakes[3].refs - before;
        result(ok && mid == 6 && after == 0, "decoding takes references of its own; all are dropped",
               "mid %ld (want 6), after %ld", mid, after);
    }
    /* registration rules */
    {
        int ok = weft_codec_register_handle(A, "no.such.type", fake_retain, fake_release, fake_push) == -1 &&
                 weft_codec_register_handle(A, "test.fake", fake_retain, fake_release, fake_push) == 0;
        luaL_newmetatable(A, "test.other");
        lua_pop(A, 1);
        ok = ok && weft_codec_register_handle(A, "test.fake", fake_retain, fake_release, NULL) == -1 &&
             weft_codec_register_handle(A, "test.other", fake_retain, fake_release, fake_push) == 0;
        result(ok, "handle registration rules", NULL);
    }
}

static void test_refusals(void) {
    refuse("top-level nil", "return nil", "send of nil value");
    refuse("userdata at a field", "return {pattern = newproxy()}", "cannot copy userdata at field 'pattern'");
    refuse("thread at a path", "return {1, 2, {co = coroutine.create(function() end)}}",
           "cannot copy thread at [3].co");
    refuse_chunk("builtin upvalue", "local f = print\n\n\n\n\n\n\n\n\n\n\nreturn function() return f() end\n",
                 "@x.lua", "cannot copy upvalue 'f' (function: builtin) of function at x.lua:12");
    refuse("top-level thread", "return coroutine.create(print)", "cannot copy thread");
    refuse("top-level C function", "return print", "cannot copy function: builtin");
    refuse("C function in a table", "return {cb = {string.format}}", "cannot copy function: builtin at cb[1]");
    refuse("light userdata", "return {x = {y = lightud()}}", "cannot copy light userdata at x.y");
    refuse("odd string key", "return {['a b'] = {co = coroutine.create(print)}}",
           "cannot copy thread at [\"a b\"].co");
    refuse("number and boolean keys", "return {[1.5] = {[true] = newproxy()}}",
           "cannot copy userdata at [1.5][true]");
    refuse("userdata as a key", "return {[newproxy()] = 1}", "cannot copy userdata used as a table key");
    refuse("thread as a key deeper", "return {a = {[coroutine.create(print)] = true}}",
           "cannot copy thread used as a table key in field 'a'");
    refuse("inside a table key", "return {[{1, newproxy()}] = true}", "cannot copy userdata at <key>[2]");
    refuse("inside a metatable", "return {m = setmetatable({}, {__index = newproxy()})}",
           "cannot copy userdata at getmetatable(m).__index");
    refuse_chunk("inside an upvalue's table", "local cfg = {sock = newproxy()}\nreturn function() return cfg end",
                 "@x.lua", "cannot copy userdata at field 'sock' in upvalue 'cfg' of function at x.lua:2");
    refuse_chunk("function reached through a field",
                 "local f = print\nreturn {handler = function() return f end}", "@x.lua",
                 "cannot copy upvalue 'f' (function: builtin) of function at x.lua:2 (reached through field "
                 "'handler')");
    refuse_chunk("through two functions",
                 "local co = coroutine.create(print)\nlocal function inner() return co end\n"
                 "return function() return inner end",
                 "@y.lua",
                 "cannot copy upvalue 'co' (thread) of function at y.lua:2 (reached through upvalue 'inner' of "
                 "function at y.lua:3)");
    refuse("pointer cdata", "return {p = require('ffi').cast('int *', 0)}",
           "cannot copy cdata<int *> (pointers cannot be copied) at field 'p'");
    refuse("struct with a pointer", "return require('ffi').new('struct withp')",
           "cannot copy cdata<struct withp> (it contains a pointer)");
    refuse("struct with a nested pointer", "return {require('ffi').new('struct nested')}",
           "cannot copy cdata<struct nested> (it contains a pointer) at [1]");
    refuse("anonymous struct", "return require('ffi').new('struct { double x, y; }')",
           "~(anonymous C type: declare it with a name");
    refuse("typedef of an anonymous struct", "return {require('ffi').new('anon_pt')}",
           "~(anonymous C type");
    refuse("C function cdata", "local ffi = require 'ffi' ffi.cdef 'int printf(const char *, ...);' return ffi.C.printf",
           "~(C functions cannot be copied)");
    refuse("released handle", "return {h = mknullfake()}", "cannot copy released test.fake at field 'h'");
    refuse("handles retained before a failure are released", "return {mkfake(1), mkfake(2), newproxy()}",
           "cannot copy userdata at [3]");
    refuse("functions count as nesting",
           "local f = function() end for i = 1, 201 do local g = f f = function() return g end end return f",
           "~cannot copy function nested more than 200 levels deep at <upvalue 'g'><upvalue 'g'>");
    refuse("unregistered userdata with a metatable", "return io.stdout", "cannot copy userdata");
    refuse("deep inside a long chain",
           "local t = {} local p = t for i = 1, 150 do p.next = {} p = p.next end p.co = coroutine.create(print)"
           " return t",
           "~cannot copy thread at (...).next.next");
}

/* ---- corrupt input ------------------------------------------------------ */

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
static uint64_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Decodes len bytes (a fresh heap copy, so ASAN sees any overread) as a blob.
 * Returns 1 if a value came out, 0 on a clean error; the stack is restored. */
static int try_decode(lua_State *L, const unsigned char *bytes, size_t len) {
    weft_val v;
    unsigned char *dst = weft_val_alloc(&v, (uint32_t)len, WEFT_CODEC_TAG_BLOB);
    if (len)
        memcpy(dst, bytes, len);
    int top = lua_gettop(L);
    int r = weft_codec_decode(L, &v, err, sizeof err);
    int got = lua_gettop(L) - top;
    if ((r == 0 && got != 1) || (r != 0 && got != 0)) {
        fprintf(stderr, "decode left %d values (r=%d)\n", got, r);
        abort();
    }
    lua_settop(L, top);
    weft_val_free(&v); /* a copy: it owns no handle references */
    return r == 0;
}

static const char *CORPUS[] = {
    "return {1, 2.5, 'three', {4}, x = true, [false] = -0.0}",
    "local t = {name = 'a long enough string to be heap', n = 2^40} t.self = t t[t] = {t}"
    " return setmetatable(t, {__index = t})",
    "local n = 0 local t = {} t.inc = function() n = n + 1 return n, t end t.get = function() return n end return t",
    "local ffi = require 'ffi' return {1LL, 2ULL, ffi.new('struct pt', 1, 2), ffi.new('int[?]', 3),"
    " ffi.new('struct big'), ffi.new('complex', 1, 2)}",
    "local h = mkfake(1) return {h, mkfake(2), h, f = function() return h end}",
    "local t = {} for i = 1, 300 do t[i] = {i, tostring(i)} t['k' .. i] = i end return t",
};

static void test_corrupt(void) {
    for (size_t c = 0; c < sizeof CORPUS / sizeof CORPUS[0]; c++) {
        char name[160], msg[300] = "";
        int top = lua_gettop(A);
        weft_val v;
        if (build(A, CORPUS[c], "=corpus", msg, sizeof msg) || weft_codec_encode(A, -1, &v, err, sizeof err)) {
            snprintf(name, sizeof name, "corpus %zu builds", c);
            result(0, name, "%s %s", msg, err);
            lua_settop(A, top);
            continue;
        }
        lua_settop(A, top);
        const unsigned char *b = weft_val_data(&v);
        size_t len = v.len;
        uint32_t off;
        memcpy(&off, b + 12, 4);

        /* every prefix of the whole blob */
        int bad = 0;
        for (size_t k = 0; k < len; k++)
            bad += try_decode(B, b, k);
        snprintf(name, sizeof name, "corpus %zu: all %zu truncated prefixes fail cleanly", c, len);
        result(bad == 0, name, "%d prefixes decoded", bad);

        /* every prefix of the body, with the header made consistent (no handles) */
        /* room for the blob and for the random bodies (up to 80 bytes) below */
        unsigned char *t = malloc(len > 80 ? len : 80);
        int vals = 0;
        for (size_t k = 16; k < off; k++) {
            memcpy(t, b, k);
            uint32_t nk = (uint32_t)k, zero = 0;
            memcpy(t + 8, &zero, 4);
            memcpy(t + 12, &nk, 4);
            vals += try_decode(B, t, k);
        }
        snprintf(name, sizeof name, "corpus %zu: truncated bodies with a consistent header fail cleanly", c);
        result(vals == 0, name, "%d decoded", vals);

        /* random byte flips */
        int n = 4000, ok = 0;
        for (int i = 0; i < n; i++) {
            memcpy(t, b, len);
            int flips = 1 + (int)(rng() % 3);
            for (int f = 0; f < flips; f++) {
                size_t at = (size_t)(rng() % len);
                unsigned char x = (unsigned char)(rng() % 255 + 1);
                /* keep most flips inside the body, where the structure is */
                if (rng() % 4 && off > 16)
                    at = 16 + (size_t)(rng() % (off - 16));
                t[at] ^= x;
            }
            ok += try_decode(B, t, len);
            if (i % 500 == 0)
                lua_gc(B, LUA_GCCOLLECT, 0);
        }
        snprintf(name, sizeof name, "corpus %zu: %d random byte flips decode or fail cleanly (%d decoded)", c, n,
                 ok);
        result(1, name, NULL);

        /* random bytes after a valid header */
        for (int i = 0; i < 2000; i++) {
            size_t k = 16 + (size_t)(rng() % 64);
            for (size_t j = 16; j < k; j++)
                t[j] = (unsigned char)rng();
            memcpy(t, b, 16);
            uint32_t nk = (uint32_t)k, zero = 0, nobjs = (uint32_t)(rng() % 8);
            memcpy(t + 4, &nobjs, 4);
            memcpy(t + 8, &zero, 4);
            memcpy(t + 12, &nk, 4);
            try_decode(B, t, k);
        }
        free(t);
        weft_codec_val_free(&v);
    }
    lua_gc(B, LUA_GCCOLLECT, 0);
    result(1, "random bodies after a valid header decode or fail cleanly", NULL);
}

/* ---- values sent by name, labels, environments ------------------------------ */

/* Runs src in L (chunk name `chunk`), leaving exactly n results. */
static int build_n(lua_State *L, const char *src, const char *chunk, int n, char *msg, size_t msglen) {
    if (luaL_loadbuffer(L, src, strlen(src), chunk) || lua_pcall(L, 0, n, 0)) {
        setmsg(msg, msglen, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

/* Runs the chunk check in L with the n values on top of the stack as its
 * arguments (they stay); 1 when it returns true, else 0 with the reason. */
static int check_n(lua_State *L, const char *check, int n, char *msg, size_t msglen) {
    if (luaL_loadbuffer(L, check, strlen(check), "=check")) {
        setmsg(msg, msglen, "check: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return 0;
    }
    for (int i = 0; i < n; i++)
        lua_pushvalue(L, -1 - n);
    if (lua_pcall(L, n, 1, 0)) {
        setmsg(msg, msglen, "check raised: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return 0;
    }
    int ok = lua_type(L, -1) == LUA_TBOOLEAN && lua_toboolean(L, -1);
    if (!ok)
        setmsg(msg, msglen, "check: %s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "false");
    lua_pop(L, 1);
    return ok;
}

/* Runs src in A, which returns (value, names), and encodes the value with
 * the names into *v; both stay on A's stack. */
static int encode_src_named(const char *src, weft_val *v, char *msg, size_t msglen) {
    int top = lua_gettop(A);
    if (build_n(A, src, "@a.lua", 2, msg, msglen))
        return -1;
    weft_codec_opts o = {.names = top + 2};
    if (weft_codec_encode_named(A, top + 1, &o, v, err, sizeof err)) {
        setmsg(msg, msglen, "encode: %s", err);
        return -1;
    }
    return 0;
}

/* A: src returns (value, names) -> encode_named -> B: bsrc returns
 * (resolver, env) -> decode_named (or plain decode without with_resolver).
 * With want, the decode must fail with exactly that message, pushing
 * nothing; else check(value, env) runs in B and must return true. */
static void named_decode(const char *name, const char *src, const char *bsrc, int with_resolver, const char *want,
                         const char *check) {
    char msg[512] = "";
    int topA = lua_gettop(A), topB = lua_gettop(B), ok = 0;
    weft_val v;
    memset(&v, 0, sizeof v);
    if (encode_src_named(src, &v, msg, sizeof msg))
        goto out;
    if (build_n(B, bsrc, "=resolver", 2, msg, sizeof msg))
        goto out;
    int env = lua_isnil(B, topB + 2) ? 0 : topB + 2;
    int r = with_resolver ? weft_codec_decode_named(B, &v, topB + 1, env, err, sizeof err)
                          : weft_codec_decode(B, &v, err, sizeof err);
    if (want) {
        if (r == 0)
            setmsg(msg, sizeof msg, "decode succeeded");
        else if (lua_gettop(B) != topB + 2)
            setmsg(msg, sizeof msg, "stack changed");
        else if (strcmp(err, want) != 0)
            setmsg(msg, sizeof msg, "got \"%s\", want \"%s\"", err, want);
        else
            ok = 1;
        goto out;
    }
    if (r) {
        setmsg(msg, sizeof msg, "decode: %s", err);
        goto out;
    }
    lua_pushvalue(B, topB + 2);
    ok = lua_gettop(B) == topB + 4 && check_n(B, check, 2, msg, sizeof msg);
out:
    weft_codec_val_free(&v);
    lua_settop(A, topA);
    lua_settop(B, topB);
    result(ok, name, "%s", msg);
}

static void named_rt(const char *name, const char *src, const char *bsrc, const char *check) {
    named_decode(name, src, bsrc, 1, NULL, check);
}

static void named_fails(const char *name, const char *src, const char *bsrc, int with_resolver, const char *want) {
    named_decode(name, src, bsrc, with_resolver, want, NULL);
}

/* Encoding what src returns (value, labels, names) must fail with `want`
 * (a '~' prefix: a message containing the rest). */
static void refuse_labelled(const char *name, const char *src, const char *want) {
    char msg[1200] = "", lerr[1024]; /* room for the longest paths */
    int top = lua_gettop(A), ok = 0;
    weft_val v;
    memset(&v, 0, sizeof v);
    if (build_n(A, src, "@x.lua", 3, msg, sizeof msg))
        goto out;
    weft_codec_opts o = {.labels = top + 2, .names = lua_isnil(A, top + 3) ? 0 : top + 3};
    if (weft_codec_encode_named(A, top + 1, &o, &v, lerr, sizeof lerr) == 0) {
        setmsg(msg, sizeof msg, "encode succeeded");
        weft_codec_val_free(&v);
        goto out;
    }
    if (lua_gettop(A) != top + 3) {
        setmsg(msg, sizeof msg, "stack changed");
        goto out;
    }
    ok = want[0] == '~' ? strstr(lerr, want + 1) != NULL : strcmp(lerr, want) == 0;
    if (!ok)
        setmsg(msg, sizeof msg, "got \"%s\", want \"%s\"", lerr, want);
out:
    lua_settop(A, top);
    result(ok, name, "%s", msg);
}

/* The receiver's resolver: walks the dotted path from its globals and
 * records each call in `calls`. */
static const char WALK_RESOLVER[] =
    "calls = {}\n"
    "return function(path)\n"
    "  calls[#calls + 1] = path\n"
    "  local v = _G\n"
    "  for part in path:gmatch('[^.]+') do v = v[part] end\n"
    "  return v\n"
    "end, nil\n";

static void test_named(void) {
    named_rt("by-name values arrive as the receiver's own objects, wherever they are",
             "local rep = string.rep\n"
             "local v = {fmt = string.format, m = math, p = print, out = io.stdout, [math.floor] = 'key',\n"
             "  mt = setmetatable({}, {__index = string}), f = function(s) return rep(s, 2) end}\n"
             "local names = {[string.format] = 'string.format', [math] = 'math', [print] = 'print',\n"
             "  [io.stdout] = 'io.stdout', [math.floor] = 'math.floor', [string] = 'string',\n"
             "  [string.rep] = 'string.rep'}\n"
             "return v, names",
             WALK_RESOLVER,
             "local v = ...\n"
             "return rawequal(v.fmt, string.format) and rawequal(v.m, math) and rawequal(v.p, print)\n"
             "  and rawequal(v.out, io.stdout) and v[math.floor] == 'key'\n"
             "  and rawequal(getmetatable(v.mt).__index, string) and v.f('ab') == 'abab'\n"
             "  and rawequal(select(2, debug.getupvalue(v.f, 1)), string.rep) and #calls == 7");
    named_rt("identity: one object and one resolver call per path",
             "local t, a, b = {}, {}, {}\n"
             "local deep = {} local p = deep for i = 1, 100 do p.next = {} p = p.next end p.t = t\n"
             "local v = {t, t, {t}, [t] = t, f = function() return t end, a = a, b = b, deep = deep}\n"
             "return v, {[t] = 'shared', [a] = 'same', [b] = 'same'}",
             "calls = {} return function(path) calls[#calls + 1] = path return {path = path} end, nil",
             "local v = ... local t = v[1] local p = v.deep for i = 1, 100 do p = p.next end\n"
             "return t.path == 'shared' and v[2] == t and v[3][1] == t and v[t] == t and v.f() == t\n"
             "  and p.t == t and v.a == v.b and v.a.path == 'same' and #calls == 2");
    named_rt("the root value and non-copyable values by name",
             "local co, ud, x = coroutine.create(print), newproxy(), 5LL\n"
             "return {co, ud, lightud(), x, print, [co] = x},\n"
             "  {[co] = 'co', [ud] = 'ud', [lightud()] = 'light', [x] = 'five', [print] = 'print'}",
             "calls = {} return function(path) calls[#calls + 1] = path return path end, nil",
             "local v = ... return v[1] == 'co' and v[2] == 'ud' and v[3] == 'light' and v[4] == 'five'\n"
             "  and v[5] == 'print' and v.co == 'five' and #calls == 5");
    named_rt("a by-name root, and an int64 root by name",
             "local x = 7LL return {x, print}, {[x] = 'seven', [print] = 'print'}",
             "return function(path) return path end, nil",
             "local v = ... return v[1] == 'seven' and v[2] == 'print'");
    {
        char msg[300] = "";
        int topA = lua_gettop(A), topB = lua_gettop(B), ok = 0;
        weft_val v, w;
        memset(&v, 0, sizeof v);
        memset(&w, 0, sizeof w);
        build_n(A, "return print, {[print] = 'print'}, 3LL, {[3LL] = 'x'}", "=a", 4, msg, sizeof msg);
        weft_codec_opts o1 = {.names = topA + 2}, o2 = {.names = topA + 4};
        build_n(B, "return function() return 42 end", "=b", 1, msg, sizeof msg);
        ok = weft_codec_encode_named(A, topA + 1, &o1, &v, err, sizeof err) == 0 && v.tag == WEFT_CODEC_TAG_BLOB &&
             weft_codec_encode_named(A, topA + 3, &o2, &w, err, sizeof err) == 0 && w.tag == WEFT_TAG_INT64 &&
             weft_codec_decode_named(B, &v, topB + 1, 0, err, sizeof err) == 0 && lua_tonumber(B, -1) == 42;
        if (!ok)
            setmsg(msg, sizeof msg, "tags %u %u: %s", v.tag, w.tag, err);
        weft_codec_val_free(&v);
        weft_codec_val_free(&w);
        lua_settop(A, topA);
        lua_settop(B, topB);
        result(ok, "a C function root by name is a blob; an int64 root not in names stays inline", "%s", msg);
    }
    named_rt("names entries that are not strings are ignored",
             "local t = {1} return {t = t, n = 1}, {[t] = true, [1] = 'one'}",
             "return function(path) error('called for ' .. path) end, nil",
             "local v = ... return v.t[1] == 1 and v.n == 1");
    named_rt("by-name handles take no reference",
             "local h = mkfake(1) return {h, h}, {[h] = 'h'}",
             "return function(path) return mkfake(2) end, nil",
             "local v = ... return v[1]:id() == 2 and v[1] == v[2]");
    named_rt("the environment is given to every decoded function, nested ones too",
             "local function inner() return gv end\n"
             "local function outer() return function() return gv, inner() end end\n"
             "local mt = {__index = function() return gv end}\n"
             "return {outer = outer, data = {g = function() return gv end}, set = function() newg = gv end,\n"
             "  m = setmetatable({}, mt), keep = print}, {[print] = 'print'}",
             "gv = 'global' return function(path) return _G[path] end, setmetatable({gv = 'env'}, {__index = _G})",
             "local v, env = ...\n"
             "local c = v.outer()\n"
             "local a, b = c()\n"
             "v.set()\n"
             "return getfenv(v.outer) == env and getfenv(c) == env and a == 'env' and b == 'env'\n"
             "  and getfenv(select(2, debug.getupvalue(v.outer, 1))) == env and v.data.g() == 'env'\n"
             "  and v.m.anything == 'env' and env.newg == 'env' and rawget(_G, 'newg') == nil\n"
             "  and rawequal(v.keep, print)");
    named_rt("a by-name Lua function keeps its own environment",
             "local f = function() end return {f}, {[f] = 'lf'}",
             "lf = function() return gv end gv = 'global' return function(path) return _G[path] end, {gv = 'env'}",
             "local v, env = ... return rawequal(v[1], lf) and getfenv(v[1]) == _G and v[1]() == 'global'");
    named_fails("a resolver that raises fails the decode",
                "return {string.format}, {[string.format] = 'string.format'}",
                "return function(path) error('no ' .. path, 0) end", 1,
                "cannot resolve 'string.format': no string.format");
    named_fails("a resolver that returns nil fails the decode",
                "return {x = {math}}, {[math] = 'nothing.here'}",
                "return function(path) return nil end", 1,
                "cannot resolve 'nothing.here': the resolver returned nil");
    named_fails("a by-name value without a resolver fails the decode",
                "return {print}, {[print] = 'print'}",
                "return 0", 0,
                "cannot resolve 'print': no resolver was given");
    {
        char msg[300] = "";
        int topA = lua_gettop(A), ok = 0;
        weft_val v;
        memset(&v, 0, sizeof v);
        build_n(A,
                "local function helper() return 1 end\n"
                "local function f() return helper() end\n"
                "local lf = function() end\n"
                "return {f, f, g = function() return f end, p = print, n = lf}, {[print] = 'print', [lf] = 'lf'},\n"
                "  {'already there'}, f, helper",
                "=a", 5, msg, sizeof msg);
        weft_codec_opts o = {.names = topA + 2, .funcs = topA + 3};
        if (weft_codec_encode_named(A, topA + 1, &o, &v, err, sizeof err))
            setmsg(msg, sizeof msg, "encode: %s", err);
        else
            ok = check_n(A,
                         "local r, names, funcs, f, helper = ...\n"
                         "local seen = {} for i = 2, #funcs do seen[funcs[i]] = (seen[funcs[i]] or 0) + 1 end\n"
                         "return funcs[1] == 'already there' and #funcs == 4 and seen[f] == 1 and seen[helper] == 1\n"
                         "  and seen[r.g] == 1",
                         5, msg, sizeof msg);
        weft_codec_val_free(&v);
        lua_settop(A, topA);
        result(ok, "funcs lists each Lua function copied as bytecode once, not by-name ones", "%s", msg);
    }

    /* labelled root fields */
    refuse_labelled("transparent root field: an upvalue of fn",
                    "local co = coroutine.create(print)\nreturn {function() return co end}, {[1] = ''}",
                    "cannot copy upvalue 'co' (thread) of function at x.lua:2");
    refuse_labelled("transparent root field itself", "return {coroutine.create(print)}, {[1] = ''}",
                    "cannot copy thread");
    refuse_labelled("unlabelled root fields keep their paths", "return {1, {coroutine.create(print)}}, {[1] = ''}",
                    "cannot copy thread at [2][1]");
    refuse_labelled("a global",
                    "return {co = coroutine.create(print)}, {co = {\"global 'co'\", 'of function at x.lua:3'}}",
                    "cannot copy global 'co' (thread) of function at x.lua:3");
    refuse_labelled("inside a global",
                    "return {cfg = {sock = newproxy()}}, {cfg = {\"global 'cfg'\", 'of function at x.lua:3'}}",
                    "cannot copy userdata at field 'sock' in global 'cfg' of function at x.lua:3");
    refuse_labelled("an upvalue of a function in a global",
                    "local co = coroutine.create(print)\nlocal function helper() return co end\n"
                    "return {helper = helper}, {helper = {\"global 'helper'\", 'of function at x.lua:9'}}",
                    "cannot copy upvalue 'co' (thread) of function at x.lua:2 (reached through global 'helper' of "
                    "function at x.lua:9)");
    refuse_labelled("an argument", "return {print, 1, newproxy()}, {[1] = '', [3] = 'argument 1'}, {[print] = 'print'}",
                    "cannot copy argument 1 (userdata)");
    refuse_labelled("inside an argument, in its hash part",
                    "return {[5] = {x = {lightud()}}}, {[5] = 'argument 3'}",
                    "cannot copy light userdata at x[1] in argument 3");
    refuse_labelled("an upvalue of a function in an argument",
                    "local ud = newproxy()\nreturn {print, 1, {h = function() return ud end}},"
                    " {[1] = '', [3] = 'argument 1'}, {[print] = 'print'}",
                    "cannot copy upvalue 'ud' (userdata) of function at x.lua:2 (reached through argument 1, field "
                    "'h')");
    refuse_labelled("nested too deep inside an argument",
                    "local f = function() end for i = 1, 201 do local g = f f = function() return g end end\n"
                    "return {[2] = f}, {[2] = 'argument 1'}",
                    "~levels deep at <upvalue 'g'><upvalue 'g'>");
    refuse_labelled("... and the label ends the message",
                    "local f = function() end for i = 1, 201 do local g = f f = function() return g end end\n"
                    "return {[2] = f}, {[2] = 'argument 1'}",
                    "~<upvalue 'g'><upvalue 'g'> in argument 1");
    refuse_labelled("a labelled key is not a label for the key itself",
                    "return {[coroutine.create(print)] = 1}, {}",
                    "cannot copy thread used as a table key");

    /* truncated and corrupted by-name blobs, decoded with a resolver */
    {
        int top = lua_gettop(A), topB = lua_gettop(B);
        weft_val v;
        char msg[200] = "";
        build_n(A, "local t = {} return {string.format, x = math, y = {string.format, t}, t, 'long enough string'},"
                   " {[string.format] = 'string.format', [math] = 'math', [t] = 'a.t'}",
                "=a", 2, msg, sizeof msg);
        weft_codec_opts o = {.names = top + 2};
        int ok = weft_codec_encode_named(A, top + 1, &o, &v, err, sizeof err) == 0;
        lua_settop(A, top);
        build_n(B, "return function(path) if #path > 12 then error('long path', 0) end return {path} end", "=b", 1,
                msg, sizeof msg);
        int decoded = 0;
        const unsigned char *b = weft_val_data(&v);
        size_t len = v.len;
        unsigned char *t = malloc(len);
        for (size_t k = 0; ok && k < len; k++) {
            weft_val c;
            unsigned char *dst = weft_val_alloc(&c, (uint32_t)k, WEFT_CODEC_TAG_BLOB);
            memcpy(dst, b, k);
            int r = weft_codec_decode_named(B, &c, topB + 1, 0, err, sizeof err);
            decoded += r == 0;
            ok = ok && lua_gettop(B) == topB + 1 + (r == 0);
            lua_settop(B, topB + 1);
            weft_val_free(&c);
        }
        for (int i = 0; ok && i < 4000; i++) {
            memcpy(t, b, len);
            t[16 + rng() % (len - 16)] ^= (unsigned char)(rng() % 255 + 1);
            weft_val c;
            memcpy(weft_val_alloc(&c, (uint32_t)len, WEFT_CODEC_TAG_BLOB), t, len);
            int r = weft_codec_decode_named(B, &c, topB + 1, 0, err, sizeof err);
            ok = ok && lua_gettop(B) == topB + 1 + (r == 0);
            lua_settop(B, topB + 1);
            weft_val_free(&c);
        }
        free(t);
        weft_codec_val_free(&v);
        lua_settop(B, topB);
        lua_gc(B, LUA_GCCOLLECT, 0);
        result(ok && decoded == 0, "by-name blobs: truncated ones fail, corrupted ones decode or fail cleanly",
               "%d prefixes decoded; %s", decoded, err);
    }
}

/* ---- packed values (bindings/transfer.c) ---------------------------------- */

static void test_transfer(void) {
    lua_newtable(A);
    weft_transfer_register(A);
    lua_setglobal(A, "tcore");
    lua_newtable(B);
    weft_transfer_register(B);
    lua_setglobal(B, "tcore");
    {
        /* packed in A, moved out in C, pushed into B and unpacked there: how
         * spawn moves a function into another VM */
        char msg[512] = "";
        int topA = lua_gettop(A), topB = lua_gettop(B), ok = 0;
        weft_val v, none;
        memset(&v, 0, sizeof v);
        if (build_n(A,
                    "local t = {1, 2}\n"
                    "return tcore.pack({[string.format] = 'string.format'},\n"
                    "  {fmt = string.format, g = function() return gv, t end, t = t})",
                    "@a.lua", 1, msg, sizeof msg))
            goto out;
        if (weft_transfer_take(A, -1, &v) != 0 || v.tag != WEFT_CODEC_TAG_BLOB) {
            setmsg(msg, sizeof msg, "take failed");
            goto out;
        }
        if (weft_transfer_take(A, -1, &none) != -1 || none.tag || none.len ||
            weft_transfer_take(A, LUA_GLOBALSINDEX, &none) != -1) {
            setmsg(msg, sizeof msg, "took a value twice, or from a table");
            goto out;
        }
        if (!check_n(A,
                     "local p = ... local ok, err = pcall(tcore.unpack, p)\n"
                     "return not ok and err == 'packed value already unpacked'",
                     1, msg, sizeof msg))
            goto out;
        weft_transfer_push(B, &v);
        if (v.tag || v.len || v.u.p) {
            setmsg(msg, sizeof msg, "push left the value with the caller");
            goto out;
        }
        ok = check_n(B,
                     "local p = ... local env = {gv = 'env'}\n"
                     "local x = tcore.unpack(p, function(path) return string[path:match('%.(.*)')] end, env)\n"
                     "local gv, t = x.g()\n"
                     "return rawequal(x.fmt, string.format) and gv == 'env' and getfenv(x.g) == env and t == x.t\n"
                     "  and t[2] == 2 and tostring(p):find('consumed') ~= nil",
                     1, msg, sizeof msg);
    out:
        weft_codec_val_free(&v);
        lua_settop(A, topA);
        lua_settop(B, topB);
        result(ok, "a packed value moves from one state to another (take, push, unpack)", "%s", msg);
    }
    {
        char msg[512] = "";
        int top = lua_gettop(A);
        lua_gc(A, LUA_GCCOLLECT, 0);
        lua_gc(B, LUA_GCCOLLECT, 0);
        long r0 = n_retain, rel0 = n_release;
        int ok = check_n(A,
                         "local p, err = tcore.pack(nil, {co = coroutine.create(print)})\n"
                         "if p ~= nil or err ~= \"cannot copy thread at field 'co'\" then return 'nil ' .. err end\n"
                         "p, err = tcore.pack({[print] = 'print'}, {print, newproxy()}, {'', 'argument 1'})\n"
                         "if p ~= nil or err ~= 'cannot copy argument 1 (userdata)' then return 'labels ' .. err end\n"
                         "local funcs, f = {}, function() end\n"
                         "p = tcore.pack({[print] = 'print'}, {f, print}, nil, funcs)\n"
                         "if #funcs ~= 1 or funcs[1] ~= f then return 'funcs' end\n"
                         "tcore.pack_free(p) tcore.pack_free(p)\n"
                         "p = tcore.pack(nil, {mkfake(1), mkfake(2)}) -- dropped: __gc frees it\n"
                         "return true",
                         0, msg, sizeof msg);
        lua_settop(A, top);
        lua_gc(A, LUA_GCCOLLECT, 0);
        if (ok && n_retain - r0 != n_release - rel0) {
            ok = 0;
            setmsg(msg, sizeof msg, "%ld retains, %ld releases", n_retain - r0, n_release - rel0);
        }
        result(ok, "pack returns nil and the message; labels, funcs, pack_free, __gc", "%s", msg);
    }
}

/* ---- on a small stack ------------------------------------------------------ */

/* The deepest encodes and decodes (and the deepest error message) on a
 * thread with a goroutine-sized stack (64 KiB; more under sanitizers, whose
 * frames are much bigger). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SMALL_STACK (1024 * 1024)
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SMALL_STACK (1024 * 1024)
#endif
#endif
#ifndef SMALL_STACK
#define SMALL_STACK (64 * 1024)
#endif

static void *small_stack_main(void *arg) {
    (void)arg;
    rt("199 functions nested through upvalues",
       "local f = function() return 0 end for i = 1, 198 do local g = f f = function() return g() + 1 end end"
       " return f",
       "local f = ... return f() == 198");
    rt("tables nested 5000 deep", "local t = {} for i = 1, 5000 do t = {t, {x = t}} end return t", NULL);
    refuse("the deepest error message",
           "local f = function() return newproxy() end for i = 1, 250 do local g = f f = function() return g end end"
           " return f",
           "~cannot copy function nested more than 200 levels deep at <upvalue 'g'>");
    return NULL;
}

static void test_small_stack(void) {
    pthread_attr_t attr;
    pthread_t th;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, SMALL_STACK);
    if (pthread_create(&th, &attr, small_stack_main, NULL) != 0)
        result(0, "thread with a small stack", "pthread_create failed");
    else
        pthread_join(th, NULL);
    pthread_attr_destroy(&attr);
}

/* ---- size and speed ------------------------------------------------------ */

static void timed(const char *name, const char *src, const char *check) {
    double t0 = now();
    rt(name, src, check);
    printf("     (%.3f s for build, encode, decode, compare, and back)\n", now() - t0);
}

static void test_big(void) {
    timed("100k-element array", "local t = {} for i = 1, 100000 do t[i] = i * 0.5 end return t",
          "local t = ... return #t == 100000 and t[100000] == 50000");
    timed("100k-entry hash", "local t = {} for i = 1, 100000 do t['key' .. i] = i end return t",
          "local t = ... return t.key77777 == 77777");
    timed("100k records sharing one metatable",
          "local mt = {} local t = {} for i = 1, 100000 do t[i] = setmetatable({id = i, name = 'n' .. i}, mt)"
          " end return t",
          "local t = ... return getmetatable(t[1]) == getmetatable(t[100000]) and t[99].name == 'n99'");
    timed("10 MB string in a table", "return {s = ('0123456789abcdef'):rep(655360)}",
          "local t = ... return #t.s == 10485760");
    {
        /* a 16 MB top-level string: one buffer, encode and decode speed */
        int top = lua_gettop(A);
        weft_val v;
        build(A, "return ('x'):rep(16 * 1048576)", "=big", err, sizeof err);
        double t0 = now();
        int ok = weft_codec_encode(A, -1, &v, err, sizeof err) == 0 && v.len == 16u << 20 &&
                 v.tag == WEFT_TAG_RAW;
        double t1 = now();
        ok = ok && weft_codec_decode(B, &v, err, sizeof err) == 0 && lua_objlen(B, -1) == 16u << 20;
        double t2 = now();
        weft_codec_val_free(&v);
        lua_settop(A, top);
        lua_pop(B, 1);
        result(ok, "16 MB top-level string", "%s", err);
        printf("     (encode %.4f s, decode %.4f s)\n", t1 - t0, t2 - t1);
    }
    {
        /* encoding speed of a big table alone */
        int top = lua_gettop(A);
        weft_val v;
        build(A, "local t = {} for i = 1, 100000 do t[i] = {x = i, y = 'v' .. i, z = {i}} end return t", "=big",
              err, sizeof err);
        double t0 = now();
        int ok = weft_codec_encode(A, -1, &v, err, sizeof err) == 0;
        double t1 = now();
        ok = ok && weft_codec_decode(B, &v, err, sizeof err) == 0;
        double t2 = now();
        size_t len = v.len;
        weft_codec_val_free(&v);
        lua_settop(A, top);
        lua_pop(B, 1);
        result(ok, "100k nested records encode and decode", "%s", err);
        printf("     (%zu bytes; encode %.3f s, decode %.3f s)\n", len, t1 - t0, t2 - t1);
    }
}

int main(void) {
    for (int i = 0; i < NFAKES; i++) {
        fakes[i].id = i;
        fakes[i].refs = 1;
    }
    A = new_state(1);
    B = new_state(1);
    test_deepeq();
    test_scalars();
    test_tables();
    test_cycles();
    test_functions();
    test_cdata();
    test_handles();
    test_refusals();
    test_corrupt();
    test_named();
    test_transfer();
    test_small_stack();
    test_big();
    lua_close(A);
    lua_close(B);
    int balanced = n_retain == n_release;
    for (int i = 0; i < NFAKES; i++)
        balanced = balanced && fakes[i].refs == 1;
    result(balanced, "all handle references released after closing the states",
           "%ld retains, %ld releases, refs %ld %ld %ld %ld", n_retain, n_release, fakes[0].refs, fakes[1].refs,
           fakes[2].refs, fakes[3].refs);
    return tally_end();
}
