/*
 * codec.c — the value codec of the Lua layer (see codec.h for the contract
 * and the byte layout). Classic Lua C API only; the little that needs the
 * FFI (cdata type names, sizes and bytes) is a Lua chunk embedded below,
 * loaded once per lua_State and kept in its registry.
 */
#include "codec.h"

#include <lauxlib.h>
#include <lua.h>

#include <math.h>
#include <stddef.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- format -------------------------------------------------------------- */

enum {
    T_NIL = 0x00,
    T_FALSE = 0x01,
    T_TRUE = 0x02,
    T_INT = 0x03,      /* zigzag varint */
    T_NUM = 0x04,      /* 8-byte double */
    T_STR = 0x05,      /* varint length, bytes */
    T_TABLE = 0x06,    /* varint narr, varint nhash, values, pairs */
    T_TABLE_MT = 0x07, /* same, then the metatable */
    T_REF = 0x08,      /* varint object number */
    T_FUNC = 0x09,     /* u32 length, u64 hash, bytecode, varint nups, upvalues */
    T_UPJOIN = 0x0a,   /* varint function object number, varint upvalue index */
    T_CDATA = 0x0b,    /* varint name length, name, varint n+1, varint size, bytes */
    T_I64 = 0x0c,      /* 8 bytes */
    T_U64 = 0x0d,      /* 8 bytes */
    T_HANDLE = 0x0e,   /* varint handle index */
    T_LATER = 0x0f,    /* a table whose contents follow the root value */
    T_NAMED = 0x10,    /* varint length, path: a value sent by name */
    T_SMALLINT = 0x40, /* 0x40 + n, n in 0..63 */
    T_SHORTSTR = 0x80  /* 0x80 + length, length in 0..127 */
};

#define HDR_SIZE 16
#define HENT_SIZE 24
#define BLOB_MAGIC 'w'
#define BLOB_VERSION 1
#define BLOB_F_REFS 1 /* header byte 2: the body refers back to objects */
#define LUA_TCDATA_ 10 /* LuaJIT's lua_type() of cdata */
#define SCRATCH 64     /* cdata up to this size go through an aligned scratch */
#define MAX_NAME 200   /* longest cdata type name */
#define BLOB_MAX 0xffffffffu
/* Tables nested deeper than this (counting tables and functions) are written
 * after the root value instead of inline, so that long chains (linked lists)
 * copy without deep C recursion. Functions still nest up to
 * WEFT_CODEC_MAX_DEPTH. */
#define INLINE_DEPTH 64
/* Keeps big locals of rare paths out of the frames of the recursive ones. */
#define NOINLINE __attribute__((noinline))

static char k_helper, k_handles, k_encfn, k_decfn, k_templates; /* registry keys (addresses) */

/* ---- keyed hash (per-process secret) ------------------------------------- */

static uint64_t g_key0, g_key1;
static pthread_once_t g_key_once = PTHREAD_ONCE_INIT;

static uint64_t mix64(uint64_t x) {
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ull;
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ull;
    x ^= x >> 32;
    return x;
}

static void key_init(void) {
    uint64_t k[2] = {0, 0};
    if (getentropy(k, sizeof k) != 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        k[0] = (uint64_t)ts.tv_nsec ^ (uint64_t)(uintptr_t)&ts;
        k[1] = (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&key_init ^ (uint64_t)getpid();
    }
    g_key0 = mix64(k[0] ^ 0x243f6a8885a308d3ull) | 1;
    g_key1 = mix64(k[1] ^ 0x13198a2e03707344ull);
}

static uint64_t khash(const unsigned char *p, size_t n, uint64_t salt) {
    pthread_once(&g_key_once, key_init);
    uint64_t h = mix64(g_key0 ^ salt ^ ((uint64_t)n * 0x9e3779b97f4a7c15ull));
    uint64_t w;
    for (; n >= 8; n -= 8, p += 8) {
        memcpy(&w, p, 8);
        h = (h ^ w) * 0x9fb21c651e98df25ull;
        h ^= h >> 29;
    }
    w = 0;
    memcpy(&w, p, n);
    h = (h ^ w ^ ((uint64_t)n << 56)) * 0x9fb21c651e98df25ull;
    return mix64(h ^ g_key1);
}

static uint64_t handle_mac(uint32_t type, uint64_t ptr) {
    unsigned char b[16];
    memset(b, 0, 4);
    memcpy(b, &type, 4);
    memset(b + 4, 0, 4);
    memcpy(b + 8, &ptr, 8);
    return khash(b, sizeof b, 0x68616e646c65ull);
}

/* ---- handle types (process-wide) ----------------------------------------- */

typedef struct htype {
    char name[64];
    void *(*retain)(void *);
    void (*release)(void *);
    int (*push)(lua_State *, void *);
} htype;

static htype g_types[WEFT_CODEC_MAX_HANDLE_TYPES];
static atomic_uint g_ntypes;
static pthread_mutex_t g_types_lock = PTHREAD_MUTEX_INITIALIZER;

static const htype *type_get(uint32_t id) {
    if (id >= atomic_load_explicit(&g_ntypes, memory_order_acquire))
        return NULL;
    return &g_types[id];
}

int weft_codec_register_handle(lua_State *L, const char *tname, void *(*retain)(void *),
                               void (*release)(void *), int (*push)(lua_State *L, void *obj)) {
    if (!L || !tname || !retain || !release || !push || strlen(tname) >= sizeof g_types[0].name)
        return -1;
    if (!lua_checkstack(L, 4))
        return -1;
    luaL_getmetatable(L, tname);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return -1;
    }
    pthread_mutex_lock(&g_types_lock);
    unsigned n = atomic_load_explicit(&g_ntypes, memory_order_relaxed), id;
    for (id = 0; id < n; id++)
        if (strcmp(g_types[id].name, tname) == 0)
            break;
    if (id < n) {
        htype *t = &g_types[id];
        if (t->retain != retain || t->release != release || t->push != push)
            id = (unsigned)-1;
    } else if (n >= WEFT_CODEC_MAX_HANDLE_TYPES) {
        id = (unsigned)-1;
    } else {
        htype *t = &g_types[n];
        strcpy(t->name, tname);
        t->retain = retain;
        t->release = release;
        t->push = push;
        atomic_store_explicit(&g_ntypes, n + 1, memory_order_release);
    }
    pthread_mutex_unlock(&g_types_lock);
    if (id == (unsigned)-1) {
        lua_pop(L, 1);
        return -1;
    }
    lua_pushlightuserdata(L, &k_handles);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushlightuserdata(L, &k_handles);
        lua_pushvalue(L, -2);
        lua_rawset(L, LUA_REGISTRYINDEX);
    }
    lua_pushvalue(L, -2);
    lua_pushinteger(L, (lua_Integer)id);
    lua_rawset(L, -3);
    lua_pop(L, 2);
    return 0;
}

/* ---- the FFI helper ------------------------------------------------------ */

/* enc(x, scratch) -> code, name, size, n, in_scratch | nil, name, reason
 *   code 1 int64_t, 2 uint64_t (8 bytes written to scratch), 3 other scalar,
 *   4 aggregate; n: element count of a VLA/VLS, else -1. Bytes of objects
 *   up to 64 bytes are written to scratch, larger ones by store(x, dst, size).
 * dec(name, n, src, size) -> cdata | nil, reason */
static const char HELPER_SRC[] =
    "local ffi = ...\n"
    "local typeof, sizeof, typeinfo, cast, copy, new = ffi.typeof, ffi.sizeof, ffi.typeinfo,"
    " ffi.cast, ffi.copy, ffi.new\n"
    "local tonumber, tostring, pcall, floor = tonumber, tostring, pcall, math.floor\n"
    "local find, match = string.find, string.match\n"
    "local voidp = typeof('void *')\n"
    "local I64, U64 = tonumber(typeof('int64_t')), tonumber(typeof('uint64_t'))\n"
    "local function ti(id)\n"
    "  local t = typeinfo(id)\n"
    "  if not t then return nil end\n"
    "  local info = t.info\n"
    "  if info < 0 then info = info + 4294967296 end\n"
    "  return floor(info / 268435456), info % 65536, info, t\n"
    "end\n"
    "local function flag(info, b) return floor(info / b) % 2 == 1 end\n"
    "local function why_not(id, depth)\n"
    "  if depth > 64 then return 'its C type is nested too deeply' end\n"
    "  local k, cid, info, t = ti(id)\n"
    "  if not k then return 'its C type is unknown' end\n"
    "  if k == 0 or k == 5 then return nil end\n"
    "  if k == 2 then\n"
    "    return depth == 0 and 'pointers cannot be copied' or 'it contains a pointer'\n"
    "  end\n"
    "  if k == 3 or k == 7 or k == 8 then return why_not(cid, depth + 1) end\n"
    "  if k == 1 then\n"
    "    local f = t.sib\n"
    "    while f do\n"
    "      local fk, fcid, _, ft = ti(f)\n"
    "      if not fk then break end\n"
    "      if fk == 9 then\n"
    "        local w = why_not(fcid, depth + 1)\n"
    "        if w then return w end\n"
    "      end\n"
    "      f = ft.sib\n"
    "    end\n"
    "    return nil\n"
    "  end\n"
    "  if k == 6 then return 'C functions cannot be copied' end\n"
    "  return 'its C type cannot be copied'\n"
    "end\n"
    "local function analyze(ct, id)\n"
    "  local name = match(tostring(ct), '^ctype<(.*)>$') or tostring(ct)\n"
    "  local r = { name = name }\n"
    "  local why = why_not(id, 0)\n"
    "  if not why then\n"
    "    if #name > 200 or not find(name, '^[%w_ %[%]%?]+$') then\n"
    "      why = 'its type name cannot be re-created'\n"
    "    else\n"
    "      local ok, ct2 = pcall(typeof, name)\n"
    "      if not ok or tonumber(ct2) ~= id then\n"
    "        if find(name, 'struct %d') or find(name, 'union %d') or find(name, 'enum %d') then\n"
    "          why = 'anonymous C type: declare it with a name, e.g. ffi.cdef\"struct point {...}\",'"
    "..' to copy it'\n"
    "        else\n"
    "          why = 'its type name does not re-create it'\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  if why then r.err = why return r end\n"
    "  local k, cid, info = ti(id)\n"
    "  while k == 7 or k == 8 do id = cid; k, cid, info = ti(id) end\n"
    "  r.ct = ct\n"
    "  if id == I64 or id == U64 then\n"
    "    r.code = id == I64 and 1 or 2; r.ptr = typeof('$ *', ct); r.size = 8\n"
    "  elseif k == 0 or k == 5 or (k == 3 and (flag(info, 0x4000000) or flag(info, 0x8000000))) then\n"
    "    r.code = 3; r.ptr = typeof('$ *', ct); r.box = typeof('$[1]', ct); r.size = sizeof(ct)\n"
    "  else\n"
    "    r.code = 4\n"
    "    if (k == 1 or k == 3) and flag(info, 0x100000) then\n"
    "      r.vla = true; r.base = sizeof(ct, 0); r.elem = sizeof(ct, 1) - r.base\n"
    "    else\n"
    "      r.size = sizeof(ct)\n"
    "    end\n"
    "  end\n"
    "  if not r.vla and not r.size then r.err = 'its C type is incomplete here' end\n"
    "  return r\n"
    "end\n"
    "local ecache, dcache, ndcache = {}, {}, 0\n"
    "local function einfo(ct)\n"
    "  local id = tonumber(ct)\n"
    "  local r = ecache[id]\n"
    "  if not r then r = analyze(ct, id); ecache[id] = r end\n"
    "  return r\n"
    "end\n"
    "local M = {}\n"
    "function M.enc(x, scratch)\n"
    "  local ct = typeof(x)\n"
    "  local r = einfo(ct)\n"
    "  if r.err then return nil, r.name, r.err end\n"
    "  local code = r.code\n"
    "  if code <= 2 then cast(r.ptr, scratch)[0] = x; return code, r.name, 8, -1, true end\n"
    "  local size, n = r.size, -1\n"
    "  if r.vla then\n"
    "    size, n = sizeof(x), 0\n"
    "    if r.elem > 0 then n = floor((size - r.base) / r.elem) end\n"
    "    if n < 0 or sizeof(ct, n) ~= size then\n"
    "      return nil, r.name, 'variable-length object of unexpected size'\n"
    "    end\n"
    "  end\n"
    "  if size > 64 then return code, r.name, size, n, false end\n"
    "  if code == 3 then copy(scratch, new(r.box, x), size) else copy(scratch, x, size) end\n"
    "  return code, r.name, size, n, true\n"
    "end\n"
    "function M.store(x, dst, size)\n"
    "  local r = einfo(typeof(x))\n"
    "  if r.code == 3 then copy(dst, new(r.box, x), size) else copy(dst, x, size) end\n"
    "end\n"
    "local function dinfo(name)\n"
    "  local r = dcache[name]\n"
    "  if r then return r end\n"
    "  if #name > 200 or not find(name, '^[%w_ %[%]%?]+$') then\n"
    "    r = { err = 'bad C type name' }\n"
    "  else\n"
    "    local ok, ct = pcall(typeof, name)\n"
    "    if ok then r = einfo(ct) else r = { err = 'unknown C type' } end\n"
    "  end\n"
    "  if ndcache >= 256 then dcache, ndcache = {}, 0 end\n"
    "  dcache[name] = r; ndcache = ndcache + 1\n"
    "  return r\n"
    "end\n"
    "function M.dec(name, n, src, size)\n"
    "  local r = dinfo(name)\n"
    "  if r.err then return nil, r.err end\n"
    "  if r.vla then\n"
    "    if n < 0 or n > 2147483647 or sizeof(r.ct, n) ~= size then\n"
    "      return nil, 'size does not match the type'\n"
    "    end\n"
    "    local o = new(r.ct, n)\n"
    "    copy(cast(voidp, o), src, size)\n"
    "    return o\n"
    "  end\n"
    "  if n ~= -1 or size ~= r.size then return nil, 'size does not match the type' end\n"
    "  if r.code == 4 then\n"
    "    local o = new(r.ct)\n"
    "    copy(cast(voidp, o), src, size)\n"
    "    return o\n"
    "  end\n"
    "  return new(r.ct, cast(r.ptr, src)[0])\n"
    "end\n"
    "return M\n";

/* Bytecode drops what a function's table constructors need to be fast.
 * For `{ id = i, name = s, ok = true }` LuaJIT's parser builds a template
 * table holding every constant key, the keys of non-constant values with
 * nil values; each run duplicates the template and stores into slots that
 * already exist. string.dump leaves nil-valued entries out, so in a VM that
 * loads the bytecode the duplicate lacks those keys and grows (twice here,
 * and the JIT compiles the stores as key insertions): a constructor of a
 * spawned function took twice as long as the same one in its own VM. This
 * chunk, run on each function the codec loads, finds the constant-key
 * stores (TSETS) into the register of each template duplication (TDUP) that
 * follow it, and puts those keys back into the template with nil values,
 * as the parser had them. A key too many only sizes the template larger:
 * a nil-valued entry is invisible to Lua. What it found is kept per
 * bytecode hash, so loading the same function again (each spawn of it)
 * costs the key insertions only. Without jit.util or jit.vmdef it does
 * nothing. */
static const char TEMPLATES_SRC[] =
    "local okj, ju = pcall(require, 'jit.util')\n"
    "local okv, vmdef = pcall(require, 'jit.vmdef')\n"
    "if not okj or not okv or type(ju) ~= 'table' or type(vmdef) ~= 'table' then return nil end\n"
    "local funcbc, funck, funcinfo = ju.funcbc, ju.funck, ju.funcinfo\n"
    "local band, rshift = bit.band, bit.rshift\n"
    "local names = vmdef.bcnames\n"
    "local TDUP, TSETS, TNEW\n"
    "for i = 0, #names / 6 - 1 do\n"
    "  local n = names:sub(i * 6 + 1, i * 6 + 6):gsub(' ', '')\n"
    "  if n == 'TDUP' then TDUP = i elseif n == 'TSETS' then TSETS = i elseif n == 'TNEW' then TNEW = i end\n"
    "end\n"
    "if not (TDUP and TSETS and TNEW) then return nil end\n"
    "local SCAN, MAX_PLANS = 256, 1024\n"
    "-- What a function needs, as steps {child path, template constant, keys},\n"
    "-- kept per bytecode hash: the same function loaded again (every spawn of\n"
    "-- it) is fixed without scanning its bytecode.\n"
    "local plans, nplans = {}, 0\n"
    "local function scan(fn, depth, path, plan)\n"
    "  local info = funcinfo(fn)\n"
    "  local n = info and info.bytecodes\n"
    "  if not n or depth > 64 then return end\n"
    "  for pc = 1, n - 1 do\n"
    "    local ins = funcbc(fn, pc)\n"
    "    if ins and band(ins, 0xff) == TDUP then\n"
    "      local a, d = band(rshift(ins, 8), 0xff), rshift(ins, 16)\n"
    "      local tpl = funck(fn, -d - 1)\n"
    "      if type(tpl) == 'table' then\n"
    "        local keys, nk = {}, 0\n"
    "        for q = pc + 1, math.min(pc + SCAN, n - 1) do\n"
    "          local i2 = funcbc(fn, q)\n"
    "          local op = band(i2, 0xff)\n"
    "          if op == TSETS and rshift(i2, 24) == a then\n"
    "            local k = funck(fn, -band(rshift(i2, 16), 0xff) - 1)\n"
    "            if type(k) == 'string' and rawget(tpl, k) == nil then nk = nk + 1; keys[nk] = k end\n"
    "          elseif (op == TDUP or op == TNEW) and band(rshift(i2, 8), 0xff) == a then\n"
    "            break\n"
    "          end\n"
    "        end\n"
    "        if nk > 0 then plan[#plan + 1] = { { unpack(path) }, d, keys } end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  for i = 1, math.huge do\n"
    "    local k = funck(fn, -i)\n"
    "    if k == nil then break end\n"
    "    if type(k) == 'proto' then\n"
    "      path[#path + 1] = i\n"
    "      scan(k, depth + 1, path, plan)\n"
    "      path[#path] = nil\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local function apply(fn, plan)\n"
    "  for s = 1, #plan do\n"
    "    local step = plan[s]\n"
    "    local p, path, keys = fn, step[1], step[3]\n"
    "    for i = 1, #path do p = funck(p, -path[i]) end\n"
    "    local tpl = funck(p, -step[2] - 1)\n"
    "    local fresh = type(tpl) == 'table'\n"
    "    for i = 1, #keys do\n"
    "      if fresh and rawget(tpl, keys[i]) ~= nil then fresh = false end\n"
    "    end\n"
    "    if fresh then\n"
    "      for i = 1, #keys do rawset(tpl, keys[i], true) end\n"
    "      for i = 1, #keys do rawset(tpl, keys[i], nil) end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return function(fn, key)\n"
    "  local plan = plans[key]\n"
    "  if not plan then\n"
    "    plan = {}\n"
    "    if not pcall(scan, fn, 0, {}, plan) then return end\n"
    "    if nplans >= MAX_PLANS then plans, nplans = {}, 0 end\n"
    "    plans[key], nplans = plan, nplans + 1\n"
    "  end\n"
    "  pcall(apply, fn, plan)\n"
    "end\n";

/* Runs TEMPLATES_SRC's function on the Lua function at stack index f,
 * whose bytecode has the keyed hash h. */
static void fix_templates(lua_State *L, int f, uint64_t h) {
    lua_pushlightuserdata(L, &k_templates);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        if (luaL_loadbuffer(L, TEMPLATES_SRC, sizeof TEMPLATES_SRC - 1, "=weft.templates") != 0 ||
            lua_pcall(L, 0, 1, 0) != 0 || !lua_isfunction(L, -1)) {
            lua_pop(L, 1);
            lua_pushboolean(L, 0); /* unavailable: remembered as false */
        }
        lua_pushlightuserdata(L, &k_templates);
        lua_pushvalue(L, -2);
        lua_rawset(L, LUA_REGISTRYINDEX);
    }
    if (lua_isfunction(L, -1)) {
        lua_pushvalue(L, f);
        lua_pushlstring(L, (const char *)&h, sizeof h);
        lua_call(L, 2, 0); /* it catches its own errors */
    } else {
        lua_pop(L, 1);
    }
}

/* Pushes the helper table, or nil when the ffi library is not available.
 * May raise (call in protected mode). */
static void push_helper(lua_State *L) {
    lua_pushlightuserdata(L, &k_helper);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_istable(L, -1))
        return;
    lua_pop(L, 1);
    int top = lua_gettop(L);
    lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
    if (!lua_istable(L, -1)) {
        lua_settop(L, top);
        lua_pushnil(L);
        return;
    }
    lua_getfield(L, -1, "ffi");
    if (lua_isnil(L, -1)) { /* preloaded but not required yet: do what require does */
        lua_pop(L, 1);
        lua_getfield(L, LUA_REGISTRYINDEX, "_PRELOAD");
        if (lua_istable(L, -1)) {
            lua_getfield(L, -1, "ffi");
            if (lua_isfunction(L, -1)) {
                lua_pushliteral(L, "ffi");
                lua_call(L, 1, 1);
                if (lua_istable(L, -1)) {
                    lua_pushvalue(L, -1);
                    lua_setfield(L, top + 1, "ffi");
                }
            }
        }
    }
    if (!lua_istable(L, -1)) {
        lua_settop(L, top);
        lua_pushnil(L);
        return;
    }
    if (luaL_loadbuffer(L, HELPER_SRC, sizeof HELPER_SRC - 1, "=weft.codec") != 0)
        lua_error(L);
    lua_insert(L, -2);
    lua_call(L, 1, 1);
    lua_pushlightuserdata(L, &k_helper);
    lua_pushvalue(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
}

/* Pushes a C function cached in the registry under key. */
static void push_cached(lua_State *L, void *key, lua_CFunction fn) {
    lua_pushlightuserdata(L, key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_type(L, -1) == LUA_TFUNCTION)
        return;
    lua_pop(L, 1);
    lua_pushcfunction(L, fn);
    lua_pushlightuserdata(L, key);
    lua_pushvalue(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
}

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- a bounded string builder for messages -------------------------------- */

typedef struct sbuf {
    char *b;
    size_t cap, n;
} sbuf;

static void sb_add(sbuf *s, const char *p, size_t len) {
    if (!s->cap)
        return;
    if (s->n + 1 >= s->cap)
        return;
    size_t room = s->cap - 1 - s->n;
    if (len > room)
        len = room;
    memcpy(s->b + s->n, p, len);
    s->n += len;
    s->b[s->n] = 0;
}
static void sb_puts(sbuf *s, const char *p) { sb_add(s, p, strlen(p)); }
static void sb_printf(sbuf *s, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k > 0)
        sb_add(s, tmp, (size_t)k < sizeof tmp ? (size_t)k : sizeof tmp - 1);
}

/* ---- pointer map ---------------------------------------------------------- */

enum { K_OBJ = 1, K_UPVAL = 2, K_LIGHT = 3 };

typedef struct pent {
    const void *p;
    uint64_t v;
    uint32_t kind;
} pent;

/* Open addressing; starts in `small` (no allocation for small values). */
typedef struct pmap {
    pent *t;
    size_t cap, n;
    pent small[16];
} pmap;

static void pm_init(pmap *m) {
    memset(m->small, 0, sizeof m->small);
    m->t = m->small;
    m->cap = sizeof m->small / sizeof m->small[0];
    m->n = 0;
}

static void pm_free(pmap *m) {
    if (m->t != m->small)
        free(m->t);
}

static size_t pm_hash(const void *p, uint32_t kind) {
    uint64_t x = ((uint64_t)(uintptr_t)p ^ ((uint64_t)kind << 61)) * 0x9e3779b97f4a7c15ull;
    return (size_t)(x ^ (x >> 31));
}

static int pm_grow(pmap *m) {
    size_t ncap = m->cap * 4;
    pent *nt = calloc(ncap, sizeof *nt);
    if (!nt)
        return -1;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->t[i].kind)
            continue;
        size_t j = pm_hash(m->t[i].p, m->t[i].kind) & (ncap - 1);
        while (nt[j].kind)
            j = (j + 1) & (ncap - 1);
        nt[j] = m->t[i];
    }
    pm_free(m);
    m->t = nt;
    m->cap = ncap;
    return 0;
}

/* Finds (p, kind); if absent inserts it with value v. Returns the entry and
 * sets *found, or NULL when out of memory. */
static pent *pm_lookup(pmap *m, const void *p, uint32_t kind, uint64_t v, int *found) {
    if ((m->n + 1) * 2 > m->cap && pm_grow(m))
        return NULL;
    size_t j = pm_hash(p, kind) & (m->cap - 1);
    while (m->t[j].kind) {
        if (m->t[j].p == p && m->t[j].kind == kind) {
            *found = 1;
            return &m->t[j];
        }
        j = (j + 1) & (m->cap - 1);
    }
    m->t[j].p = p;
    m->t[j].kind = kind;
    m->t[j].v = v;
    m->n++;
    *found = 0;
    return &m->t[j];
}

NOINLINE static int lua_nups(lua_State *L, int idx) {
    lua_Debug ar;
    lua_pushvalue(L, idx);
    lua_getinfo(L, ">u", &ar);
    return ar.nups;
}

/* ---- encoder -------------------------------------------------------------- */

enum { SEG_ARR = 1, SEG_FIELD, SEG_KEY, SEG_META, SEG_UPVAL, SEG_LATER };

typedef struct seg {
    int kind;
    int a; /* ARR: index (as long as it fits) FIELD/KEY: key slot; UPVAL: function slot */
    int b; /* UPVAL: upvalue number */
    size_t i;
} seg;

typedef struct hent {
    uint32_t type;
    void *obj;
} hent;

/* Stack slots of the protected encoder frame. */
enum { ES_CTX = 1, ES_VAL, ES_NAMES, ES_LABELS, ES_FUNCS, ES_HENC, ES_HSTORE, ES_HANDLES, ES_LATER };

typedef struct enc {
    lua_State *L;
    weft_val *out;
    unsigned char *b;
    size_t n, cap;
    uint32_t nobjs;
    uint32_t nrefs; /* references written (T_REF, T_UPJOIN) */
    int nlater;     /* deferred tables, in ES_LATER[1..nlater] */
    int names;      /* ES_NAMES is a table: values sent by name */
    int labels;     /* ES_LABELS is a table: labels of the root's fields */
    int funcs;      /* ES_FUNCS is a table: encoded Lua functions go there */
    int nfuncs;     /* entries in ES_FUNCS */
    hent *hs;
    size_t nh, hcap;
    int depth, nseg;
    int failed;
    char *err;
    size_t errlen;
    /* not zeroed: */
    pmap map;
    seg segs[WEFT_CODEC_MAX_DEPTH + 4];
    _Alignas(16) unsigned char scratch[SCRATCH];
} enc;

static int enc_value(enc *e, int idx);

NOINLINE static int enc_fail(enc *e, const char *fmt, ...) {
    if (e->err && e->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->err, e->errlen, fmt, ap);
        va_end(ap);
    }
    e->failed = 1;
    return -1;
}

static int w_grow(enc *e, size_t k) {
    if (k > BLOB_MAX || e->n > BLOB_MAX - k)
        return enc_fail(e, "cannot copy value: its encoding exceeds 4 GiB");
    size_t need = e->n + k, ncap = e->cap ? e->cap : 128;
    while (ncap < need)
        ncap = ncap > BLOB_MAX / 2 ? BLOB_MAX : ncap * 2;
    unsigned char *nb = realloc(e->b, ncap);
    if (!nb)
        return enc_fail(e, "cannot copy value: out of memory");
    e->b = nb;
    e->cap = ncap;
    return 0;
}
#define W_NEED(e, k) ((e)->cap - (e)->n >= (size_t)(k) ? 0 : w_grow((e), (k)))

static int put_byte(enc *e, unsigned c) {
    if (W_NEED(e, 1))
        return -1;
    e->b[e->n++] = (unsigned char)c;
    return 0;
}
static int put_bytes(enc *e, const void *p, size_t len) {
    if (W_NEED(e, len))
        return -1;
    if (len)
        memcpy(e->b + e->n, p, len);
    e->n += len;
    return 0;
}
static size_t varint_len(uint64_t x) {
    size_t k = 1;
    while (x >= 0x80)
        x >>= 7, k++;
    return k;
}
static void varint_write(unsigned char *p, uint64_t x) {
    while (x >= 0x80) {
        *p++ = (unsigned char)(x | 0x80);
        x >>= 7;
    }
    *p = (unsigned char)x;
}
static int put_varint(enc *e, uint64_t x) {
    if (W_NEED(e, 10))
        return -1;
    varint_write(e->b + e->n, x);
    e->n += varint_len(x);
    return 0;
}
static int put_typed_varint(enc *e, unsigned type, uint64_t x) {
    if (W_NEED(e, 11))
        return -1;
    e->b[e->n++] = (unsigned char)type;
    varint_write(e->b + e->n, x);
    e->n += varint_len(x);
    return 0;
}

static int put_number(enc *e, double d) {
    if (d == floor(d) && d >= -9007199254740992.0 && d <= 9007199254740992.0 &&
        !(d == 0 && signbit(d))) {
        if (d >= 0 && d < 64)
            return put_byte(e, T_SMALLINT + (unsigned)d);
        uint64_t z = d < 0 ? (((uint64_t)(-d) - 1) << 1) | 1 : (uint64_t)d << 1;
        return put_typed_varint(e, T_INT, z);
    }
    if (W_NEED(e, 9))
        return -1;
    e->b[e->n++] = T_NUM;
    memcpy(e->b + e->n, &d, 8);
    e->n += 8;
    return 0;
}

static int put_string(enc *e, const char *s, size_t len) {
    if (len < 128) {
        if (W_NEED(e, len + 1))
            return -1;
        e->b[e->n++] = (unsigned char)(T_SHORTSTR + len);
    } else if (put_typed_varint(e, T_STR, len))
        return -1;
    return put_bytes(e, s, len);
}

/* -- messages -- */

static int is_ident(const char *s, size_t len) {
    if (!len || len > 64 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') || s[0] == '_'))
        return 0;
    for (size_t i = 1; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    return 1;
}

/* Renders the key in slot k as it would appear inside [...] (or as .name). */
static void render_key(enc *e, sbuf *s, int k, int first) {
    lua_State *L = e->L;
    switch (lua_type(L, k)) {
    case LUA_TSTRING: {
        size_t len;
        const char *p = lua_tolstring(L, k, &len);
        if (is_ident(p, len)) {
            if (!first)
                sb_puts(s, ".");
            sb_add(s, p, len);
            return;
        }
        sb_puts(s, "[\"");
        for (size_t i = 0; i < len && i < 40; i++) {
            unsigned char c = (unsigned char)p[i];
            if (c == '"' || c == '\\')
                sb_printf(s, "\\%c", c);
            else if (c < 32 || c >= 127)
                sb_printf(s, "\\%u", c);
            else
                sb_add(s, (const char *)&c, 1);
        }
        sb_puts(s, len > 40 ? "...\"]" : "\"]");
        return;
    }
    case LUA_TNUMBER:
        sb_printf(s, "[%.14g]", lua_tonumber(L, k));
        return;
    case LUA_TBOOLEAN:
        sb_puts(s, lua_toboolean(L, k) ? "[true]" : "[false]");
        return;
    default:
        sb_printf(s, "[<%s>]", lua_typename(L, lua_type(L, k)));
        return;
    }
}

static void render_upname(enc *e, sbuf *s, const seg *g) {
    const char *name = lua_getupvalue(e->L, g->a, g->b);
    if (name) {
        if (*name)
            sb_printf(s, "'%s'", name);
        else
            sb_printf(s, "#%d", g->b);
        lua_pop(e->L, 1);
    } else
        sb_printf(s, "#%d", g->b);
}

/* Renders segments [from, to) as a Lua-like path. */
static void render_path(enc *e, sbuf *s, int from, int to) {
    char buf[1024];
    sbuf t = {buf, sizeof buf, 0};
    buf[0] = 0;
    for (int i = from; i < to; i++) {
        if (to - from > 16 && i == from + 6) {
            sb_puts(&t, "...");
            i = to - 9;
            continue;
        }
        const seg *g = &e->segs[i];
        switch (g->kind) {
        case SEG_ARR:
            sb_printf(&t, "[%zu]", g->i);
            break;
        case SEG_FIELD:
            render_key(e, &t, g->a, t.n == 0);
            break;
        case SEG_KEY:
            sb_puts(&t, t.n ? ".<key>" : "<key>");
            break;
        case SEG_LATER:
            sb_puts(&t, "(...)");
            break;
        case SEG_UPVAL:
            sb_puts(&t, "<upvalue ");
            render_upname(e, &t, g);
            sb_puts(&t, ">");
            break;
        case SEG_META: {
            char inner[1024];
            memcpy(inner, buf, t.n + 1);
            t.n = 0;
            buf[0] = 0;
            sb_printf(&t, "getmetatable(%s)", inner[0] ? inner : "value");
            break;
        }
        }
    }
    sb_puts(s, buf);
}

/* " at field 'x'" / " at [3].co" / " used as a key in ..." for [from, to). */
static void render_where(enc *e, sbuf *s, int from, int to, int prefix) {
    if (from >= to)
        return;
    if (e->segs[to - 1].kind == SEG_KEY) {
        sb_puts(s, prefix ? " used as a table key" : "a table key");
        if (to - 1 > from) {
            sb_puts(s, " in ");
            render_where(e, s, from, to - 1, 0);
        }
        return;
    }
    if (prefix)
        sb_puts(s, " at ");
    const seg *g = &e->segs[from];
    if (to - from == 1 && g->kind == SEG_FIELD && lua_type(e->L, g->a) == LUA_TSTRING) {
        size_t len;
        const char *p = lua_tolstring(e->L, g->a, &len);
        if (is_ident(p, len)) {
            sb_printf(s, "field '%s'", p);
            return;
        }
    }
    render_path(e, s, from, to);
}

static void render_func(enc *e, sbuf *s, int fidx) {
    lua_State *L = e->L;
    lua_Debug ar;
    lua_pushvalue(L, fidx);
    if (!lua_getinfo(L, ">S", &ar)) {
        sb_puts(s, "?");
        return;
    }
    if (ar.what && strcmp(ar.what, "main") == 0)
        sb_printf(s, "%s (main chunk)", ar.short_src);
    else
        sb_printf(s, "%s:%d", ar.short_src, ar.linedefined);
}


/* -- labelled root fields (weft_codec_opts.labels) --
 * A labelled field of the root table is named in messages by its label, the
 * way an upvalue is named by "upvalue 'x' of function at f.lua:3"; segment 0
 * is then an anchor like SEG_UPVAL. An empty label makes the field
 * transparent: paths inside it read as if it were the root value. */

typedef struct anchors {
    int label; /* stack index of the label of segment 0, or 0 */
    int base;  /* first segment of the path (1 when segment 0 is transparent) */
} anchors;

/* Looks up the label of the root field entered by segment 0 (stack: may
 * push one value, which stays until the message is built). */
static anchors find_label(enc *e) {
    lua_State *L = e->L;
    anchors a = {0, 0};
    if (!e->labels || e->nseg == 0)
        return a;
    const seg *g = &e->segs[0];
    if (g->kind == SEG_ARR)
        lua_pushnumber(L, (double)g->i);
    else if (g->kind == SEG_FIELD)
        lua_pushvalue(L, g->a);
    else
        return a;
    lua_rawget(L, ES_LABELS);
    int t = lua_type(L, -1);
    if (t == LUA_TSTRING && lua_objlen(L, -1) == 0)
        a.base = 1;
    else if (t == LUA_TSTRING || t == LUA_TTABLE)
        a.label = lua_gettop(L);
    if (!a.label)
        lua_pop(L, 1);
    return a;
}

static int is_anchor(const enc *e, const anchors *a, int i) {
    return e->segs[i].kind == SEG_UPVAL || (i == 0 && a->label);
}

/* Part 1 ("what") or 2 ("where") of the label at lbl: a string is its own
 * "what"; a table is {what, where}. */
static void render_label_part(enc *e, sbuf *s, int lbl, int part) {
    lua_State *L = e->L;
    if (lua_type(L, lbl) == LUA_TSTRING) {
        if (part == 1)
            sb_puts(s, lua_tostring(L, lbl));
        return;
    }
    lua_rawgeti(L, lbl, part);
    if (lua_type(L, -1) == LUA_TSTRING && lua_objlen(L, -1)) {
        if (part == 2)
            sb_puts(s, " ");
        sb_puts(s, lua_tostring(L, -1));
    }
    lua_pop(L, 1);
}

/* "upvalue 'f' (subject) of function at x.lua:12" or, for the label,
 * "global 'co' (subject) of function at x.lua:3"; "(subject)" when given. */
static void render_anchor(enc *e, sbuf *s, const anchors *a, int i, const char *subject) {
    const seg *g = &e->segs[i];
    if (g->kind == SEG_UPVAL) {
        sb_puts(s, "upvalue ");
        render_upname(e, s, g);
        if (subject)
            sb_printf(s, " (%s)", subject);
        sb_puts(s, " of function at ");
        render_func(e, s, g->a);
        return;
    }
    render_label_part(e, s, a->label, 1);
    if (subject)
        sb_printf(s, " (%s)", subject);
    render_label_part(e, s, a->label, 2);
}

/* Fails with "cannot copy <subject> <where>" built from the current path. */
NOINLINE static int enc_refuse(enc *e, const char *subject) {
    sbuf s = {e->err, e->errlen, 0};
    if (s.cap)
        s.b[0] = 0;
    e->failed = 1;
    lua_checkstack(e->L, 8);
    anchors a = find_label(e);
    int n = e->nseg, u = -1;
    for (int i = n - 1; i >= a.base; i--)
        if (is_anchor(e, &a, i)) {
            u = i;
            break;
        }
    if (u >= 0 && u == n - 1) {
        sb_puts(&s, "cannot copy ");
        render_anchor(e, &s, &a, u, subject);
    } else {
        sb_printf(&s, "cannot copy %s", subject);
        render_where(e, &s, u >= 0 ? u + 1 : a.base, n, 1);
        if (u >= 0) {
            sb_puts(&s, " in ");
            render_anchor(e, &s, &a, u, NULL);
        }
    }
    if (u > a.base) { /* how the innermost anchor was reached */
        sb_puts(&s, " (reached through ");
        int start = a.base, sep = 0;
        for (int i = a.base; i <= u; i++) {
            if (i < u && !is_anchor(e, &a, i))
                continue;
            if (i > start) {
                if (sep)
                    sb_puts(&s, ", ");
                render_where(e, &s, start, i, 0);
                sep = 1;
            }
            if (i < u) {
                if (sep)
                    sb_puts(&s, ", ");
                render_anchor(e, &s, &a, i, NULL);
                sep = 1;
            }
            start = i + 1;
        }
        sb_puts(&s, ")");
    }
    return -1;
}

static void seg_push(enc *e, int kind, int a, int b, size_t i) {
    seg *g = &e->segs[e->nseg++];
    g->kind = kind;
    g->a = a;
    g->b = b;
    g->i = i;
}

/* 1: already encoded (a reference was written); 0: newly numbered; -1: error */
static int enc_seen(enc *e, int idx) {
    int found;
    /* a light userdata is a bare pointer, which may equal an object's address */
    uint32_t kind = lua_type(e->L, idx) == LUA_TLIGHTUSERDATA ? K_LIGHT : K_OBJ;
    pent *p = pm_lookup(&e->map, lua_topointer(e->L, idx), kind, e->nobjs, &found);
    if (!p)
        return enc_fail(e, "cannot copy value: out of memory");
    if (found) {
        e->nrefs++;
        return put_typed_varint(e, T_REF, p->v) ? -1 : 1;
    }
    e->nobjs++;
    return 0;
}

/* "cannot copy table nested more than 200 levels deep at [1][1]...": the
 * whole path in one expression (upvalues as <upvalue 'name'>), middle elided. */
NOINLINE static int enc_too_deep(enc *e, const char *what) {
    sbuf s = {e->err, e->errlen, 0};
    if (s.cap)
        s.b[0] = 0;
    e->failed = 1;
    lua_checkstack(e->L, 8);
    sb_printf(&s, "cannot copy %s nested more than %d levels deep", what, WEFT_CODEC_MAX_DEPTH);
    anchors a = find_label(e);
    int from = a.base + (a.label ? 1 : 0);
    if (e->nseg > from) {
        sb_puts(&s, " at ");
        render_path(e, &s, from, e->nseg);
    }
    if (a.label) {
        sb_puts(&s, " in ");
        render_anchor(e, &s, &a, 0, NULL);
    }
    return -1;
}

static int enc_enter(enc *e, const char *what) {
    if (e->depth >= WEFT_CODEC_MAX_DEPTH)
        return enc_too_deep(e, what);
    if (!lua_checkstack(e->L, 8))
        return enc_fail(e, "cannot copy value: Lua stack overflow");
    e->depth++;
    return 0;
}

/* Deep tables: numbered now, their contents written after the root. */
NOINLINE static int enc_later(enc *e, int idx) {
    lua_State *L = e->L;
    if (!lua_checkstack(L, 4))
        return enc_fail(e, "cannot copy value: Lua stack overflow");
    if (lua_isnil(L, ES_LATER)) {
        lua_newtable(L);
        lua_replace(L, ES_LATER);
    }
    lua_pushvalue(L, idx);
    lua_rawseti(L, ES_LATER, ++e->nlater);
    return put_byte(e, T_LATER);
}

static int enc_table_body(enc *e, int idx);

static int enc_table(enc *e, int idx) {
    int r = enc_seen(e, idx);
    if (r)
        return r < 0 ? -1 : 0;
    if (e->depth >= INLINE_DEPTH)
        return enc_later(e, idx);
    return enc_table_body(e, idx);
}

static int enc_table_body(enc *e, int idx) {
    lua_State *L = e->L;
    int r;
    if (enc_enter(e, "table"))
        return -1;
    int mt = lua_getmetatable(L, idx) ? lua_gettop(L) : 0;
    size_t narr = lua_objlen(L, idx);
    if (put_typed_varint(e, mt ? T_TABLE_MT : T_TABLE, narr) || put_byte(e, 0))
        return -1;
    size_t hpos = e->n - 1; /* nhash, patched below */
    for (size_t i = 1; i <= narr; i++) {
        lua_rawgeti(L, idx, (int)i);
        seg_push(e, SEG_ARR, 0, 0, i);
        r = enc_value(e, lua_gettop(L));
        if (r)
            return -1;
        e->nseg--;
        lua_pop(L, 1);
    }
    uint64_t nhash = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int k = lua_gettop(L) - 1;
        if (narr && lua_type(L, k) == LUA_TNUMBER) {
            double d = lua_tonumber(L, k);
            if (d >= 1 && d <= (double)narr && d == floor(d)) {
                lua_pop(L, 1);
                continue;
            }
        }
        seg_push(e, SEG_KEY, k, 0, 0);
        if (enc_value(e, k))
            return -1;
        e->segs[e->nseg - 1].kind = SEG_FIELD;
        if (enc_value(e, k + 1))
            return -1;
        e->nseg--;
        lua_pop(L, 1);
        nhash++;
    }
    if (nhash < 0x80) {
        e->b[hpos] = (unsigned char)nhash;
    } else {
        size_t k = varint_len(nhash), tail = e->n - hpos - 1;
        if (W_NEED(e, k - 1))
            return -1;
        memmove(e->b + hpos + k, e->b + hpos + 1, tail);
        varint_write(e->b + hpos, nhash);
        e->n += k - 1;
    }
    if (mt) {
        seg_push(e, SEG_META, 0, 0, 0);
        if (enc_value(e, mt))
            return -1;
        e->nseg--;
        lua_pop(L, 1);
    }
    e->depth--;
    return 0;
}

static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud) {
    (void)L;
    return put_bytes(ud, p, sz) ? 1 : 0;
}

static int enc_function(enc *e, int idx) {
    lua_State *L = e->L;
    if (lua_iscfunction(L, idx))
        return enc_refuse(e, "function: builtin");
    int r = enc_seen(e, idx);
    if (r)
        return r < 0 ? -1 : 0;
    uint32_t fid = e->nobjs - 1;
    if (enc_enter(e, "function"))
        return -1;
    if (e->funcs) {
        lua_pushvalue(L, idx);
        lua_rawseti(L, ES_FUNCS, ++e->nfuncs);
    }
    if (put_byte(e, T_FUNC) || W_NEED(e, 12))
        return -1;
    size_t pos = e->n;
    e->n += 12;
    lua_pushvalue(L, idx);
    int st = lua_dump(L, dump_writer, e);
    lua_pop(L, 1);
    if (e->failed)
        return -1;
    if (st != 0)
        return enc_refuse(e, "function (its bytecode cannot be dumped)");
    size_t len = e->n - pos - 12;
    if (len > BLOB_MAX)
        return enc_fail(e, "cannot copy value: its encoding exceeds 4 GiB");
    uint32_t len32 = (uint32_t)len;
    uint64_t h = khash(e->b + pos + 12, len, 0x66756e63ull);
    memcpy(e->b + pos, &len32, 4);
    memcpy(e->b + pos + 4, &h, 8);
    int nups = lua_nups(L, idx);
    if (put_varint(e, (uint64_t)nups))
        return -1;
    for (int i = 1; i <= nups; i++) {
        int found;
        pent *p = pm_lookup(&e->map, lua_upvalueid(L, idx, i), K_UPVAL,
                            ((uint64_t)fid << 32) | (uint32_t)i, &found);
        if (!p)
            return enc_fail(e, "cannot copy value: out of memory");
        if (found) { /* shared with a function encoded earlier */
            uint64_t v = p->v;
            e->nrefs++;
            if (put_typed_varint(e, T_UPJOIN, v >> 32) || put_varint(e, v & 0xffffffffu))
                return -1;
            continue;
        }
        lua_getupvalue(L, idx, i);
        seg_push(e, SEG_UPVAL, idx, i, 0);
        if (enc_value(e, lua_gettop(L)))
            return -1;
        e->nseg--;
        lua_pop(L, 1);
    }
    e->depth--;
    return 0;
}

NOINLINE static int enc_userdata(enc *e, int idx) {
    lua_State *L = e->L;
    if (lua_isnil(L, ES_HANDLES)) {
        lua_pushlightuserdata(L, &k_handles);
        lua_rawget(L, LUA_REGISTRYINDEX);
        if (!lua_istable(L, -1)) {
            lua_pop(L, 1);
            lua_pushboolean(L, 0);
        }
        lua_replace(L, ES_HANDLES);
    }
    if (!lua_istable(L, ES_HANDLES) || !lua_getmetatable(L, idx))
        return enc_refuse(e, "userdata");
    lua_rawget(L, ES_HANDLES);
    int isnum = lua_type(L, -1) == LUA_TNUMBER;
    lua_Integer id = lua_tointeger(L, -1);
    lua_pop(L, 1);
    const htype *t = isnum && id >= 0 ? type_get((uint32_t)id) : NULL;
    if (!t)
        return enc_refuse(e, "userdata");
    void *obj = NULL;
    if (lua_objlen(L, idx) >= sizeof obj)
        memcpy(&obj, lua_touserdata(L, idx), sizeof obj);
    if (!obj) {
        char subject[96];
        snprintf(subject, sizeof subject, "released %s", t->name);
        return enc_refuse(e, subject);
    }
    int r = enc_seen(e, idx);
    if (r)
        return r < 0 ? -1 : 0;
    if (e->nh == e->hcap) {
        size_t ncap = e->hcap ? e->hcap * 2 : 8;
        hent *nh = realloc(e->hs, ncap * sizeof *nh);
        if (!nh)
            return enc_fail(e, "cannot copy value: out of memory");
        e->hs = nh;
        e->hcap = ncap;
    }
    if (put_typed_varint(e, T_HANDLE, e->nh))
        return -1;
    e->hs[e->nh].type = (uint32_t)id;
    e->hs[e->nh].obj = t->retain(obj);
    e->nh++;
    return 0;
}

/* Calls helper.enc on the cdata at idx: leaves code, name, size, n, in_scratch
 * on the stack (5 values) and returns the code, or refuses. */
NOINLINE static int enc_cdata_describe(enc *e, int idx) {
    lua_State *L = e->L;
    if (lua_isnil(L, ES_HENC)) {
        push_helper(L);
        if (lua_istable(L, -1)) {
            lua_getfield(L, -1, "enc");
            lua_replace(L, ES_HENC);
            lua_getfield(L, -1, "store");
            lua_replace(L, ES_HSTORE);
            lua_pop(L, 1);
        } else {
            lua_pop(L, 1);
            lua_pushboolean(L, 0);
            lua_replace(L, ES_HENC);
        }
    }
    if (!lua_isfunction(L, ES_HENC))
        return enc_refuse(e, "cdata (the ffi library is not available)");
    lua_pushvalue(L, ES_HENC);
    lua_pushvalue(L, idx);
    lua_pushlightuserdata(L, e->scratch);
    lua_call(L, 2, 5);
    int code = (int)lua_tointeger(L, -5);
    if (code < 1 || code > 4) {
        char subject[400];
        snprintf(subject, sizeof subject, "cdata<%s> (%s)", lua_tostring(L, -4) ? lua_tostring(L, -4) : "?",
                 lua_tostring(L, -3) ? lua_tostring(L, -3) : "?");
        return enc_refuse(e, subject);
    }
    return code;
}

/* Writes the cdata at idx, described by the 5 values on top of the stack. */
NOINLINE static int enc_cdata_write(enc *e, int idx, int code) {
    lua_State *L = e->L;
    if (code <= 2) {
        if (put_byte(e, code == 1 ? T_I64 : T_U64) || put_bytes(e, e->scratch, 8))
            return -1;
        lua_pop(L, 5);
        return 0;
    }
    size_t namelen;
    const char *name = lua_tolstring(L, -4, &namelen);
    double size = lua_tonumber(L, -3), n = lua_tonumber(L, -2);
    int in_scratch = lua_toboolean(L, -1);
    if (!name || namelen > MAX_NAME || !(size >= 0 && size < (double)BLOB_MAX) || !(n >= -1 && n < 4294967295.0))
        return enc_refuse(e, "cdata (unexpected type information)");
    if (put_byte(e, T_CDATA) || put_varint(e, namelen) || put_bytes(e, name, namelen) ||
        put_varint(e, (uint64_t)(n + 1)) || put_varint(e, (uint64_t)size))
        return -1;
    size_t sz = (size_t)size;
    if (in_scratch) {
        if (sz > SCRATCH || put_bytes(e, e->scratch, sz))
            return sz > SCRATCH ? enc_refuse(e, "cdata (unexpected size)") : -1;
    } else {
        if (W_NEED(e, sz))
            return -1;
        lua_pushvalue(L, ES_HSTORE);
        lua_pushvalue(L, idx);
        lua_pushlightuserdata(L, e->b + e->n);
        lua_pushnumber(L, size);
        lua_call(L, 3, 0);
        e->n += sz;
    }
    lua_pop(L, 5);
    return 0;
}

NOINLINE static int enc_cdata(enc *e, int idx) {
    int r = enc_seen(e, idx);
    if (r)
        return r < 0 ? -1 : 0;
    int code = enc_cdata_describe(e, idx);
    return code < 0 ? -1 : enc_cdata_write(e, idx, code);
}

/* When the value at idx is in the names table, pushes its path and returns 1;
 * else pushes nothing and returns 0. Only objects (tables, functions,
 * userdata, threads, cdata, light userdata) are looked up, and only a string
 * counts as a path. */
static int enc_name_of(enc *e, int idx) {
    lua_State *L = e->L;
    int t = lua_type(L, idx);
    if (!e->names || (t != LUA_TLIGHTUSERDATA && t < LUA_TTABLE))
        return 0;
    lua_pushvalue(L, idx);
    lua_rawget(L, ES_NAMES);
    if (lua_type(L, -1) == LUA_TSTRING)
        return 1;
    lua_pop(L, 1);
    return 0;
}

/* Writes the value at idx by name; its path is on top of the stack (popped). */
NOINLINE static int enc_named(enc *e, int idx) {
    lua_State *L = e->L;
    int r = enc_seen(e, idx);
    if (r == 0) {
        size_t len;
        const char *path = lua_tolstring(L, -1, &len);
        r = put_typed_varint(e, T_NAMED, len) || put_bytes(e, path, len) ? -1 : 0;
    }
    lua_pop(L, 1);
    return r < 0 ? -1 : 0;
}

static int enc_value(enc *e, int idx) {
    lua_State *L = e->L;
    if (e->names && enc_name_of(e, idx))
        return enc_named(e, idx);
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        return put_byte(e, T_NIL);
    case LUA_TBOOLEAN:
        return put_byte(e, lua_toboolean(L, idx) ? T_TRUE : T_FALSE);
    case LUA_TNUMBER:
        return put_number(e, lua_tonumber(L, idx));
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        return put_string(e, s, len);
    }
    case LUA_TTABLE:
        return enc_table(e, idx);
    case LUA_TFUNCTION:
        return enc_function(e, idx);
    case LUA_TUSERDATA:
        return enc_userdata(e, idx);
    case LUA_TCDATA_:
        return enc_cdata(e, idx);
    case LUA_TLIGHTUSERDATA:
        return enc_refuse(e, "light userdata");
    case LUA_TTHREAD:
        return enc_refuse(e, "thread");
    default:
        return enc_refuse(e, lua_typename(L, lua_type(L, idx)));
    }
}

static int enc_protected(lua_State *L) {
    enc *e = lua_touserdata(L, ES_CTX);
    lua_settop(L, ES_FUNCS); /* ES_NAMES, ES_LABELS, ES_FUNCS: tables or nil */
    e->names = lua_istable(L, ES_NAMES);
    e->labels = lua_istable(L, ES_LABELS);
    e->funcs = lua_istable(L, ES_FUNCS);
    e->nfuncs = e->funcs ? (int)lua_objlen(L, ES_FUNCS) : 0;
    lua_pushnil(L); /* ES_HENC */
    lua_pushnil(L); /* ES_HSTORE */
    lua_pushnil(L); /* ES_HANDLES */
    lua_pushnil(L); /* ES_LATER */
    int code = 0, named = e->names && enc_name_of(e, ES_VAL);
    if (named)
        lua_pop(L, 1); /* enc_value writes it */
    if (lua_type(L, ES_VAL) == LUA_TCDATA_ && !named) {
        code = enc_cdata_describe(e, ES_VAL);
        if (code < 0)
            return 0;
        if (code <= 2) { /* int64_t / uint64_t: inline */
            memcpy(e->out->u.b, e->scratch, 8);
            e->out->len = 8;
            e->out->tag = code == 1 ? WEFT_TAG_INT64 : WEFT_TAG_UINT64;
            e->out->flags = 0;
            return 0;
        }
    }
    e->cap = 128;
    e->b = weft_val_alloc(e->out, (uint32_t)e->cap, WEFT_CODEC_TAG_BLOB);
    if (!e->b) {
        e->cap = 0;
        enc_fail(e, "cannot copy value: out of memory");
        return 0;
    }
    memset(e->b, 0, HDR_SIZE);
    e->n = HDR_SIZE;
    if (code) {
        pent *p;
        int found;
        if (!(p = pm_lookup(&e->map, lua_topointer(L, ES_VAL), K_OBJ, 0, &found))) {
            enc_fail(e, "cannot copy value: out of memory");
            return 0;
        }
        e->nobjs = 1;
        if (enc_cdata_write(e, ES_VAL, code))
            return 0;
    } else if (enc_value(e, ES_VAL))
        return 0;
    for (int i = 1; i <= e->nlater; i++) { /* deferred tables, in order */
        lua_rawgeti(L, ES_LATER, i);
        e->depth = 0;
        e->nseg = 0;
        seg_push(e, SEG_LATER, 0, 0, 0);
        if (enc_table_body(e, lua_gettop(L)))
            return 0;
        lua_pop(L, 1);
    }
    size_t body = e->n;
    if (e->nh > (BLOB_MAX - body) / HENT_SIZE) {
        enc_fail(e, "cannot copy value: its encoding exceeds 4 GiB");
        return 0;
    }
    if (W_NEED(e, e->nh * HENT_SIZE))
        return 0;
    for (size_t i = 0; i < e->nh; i++) {
        unsigned char *q = e->b + e->n;
        uint32_t zero = 0;
        uint64_t ptr = (uint64_t)(uintptr_t)e->hs[i].obj, mac = handle_mac(e->hs[i].type, ptr);
        memcpy(q, &e->hs[i].type, 4);
        memcpy(q + 4, &zero, 4);
        memcpy(q + 8, &ptr, 8);
        memcpy(q + 16, &mac, 8);
        e->n += HENT_SIZE;
    }
    uint32_t nobjs = e->nobjs, nh = (uint32_t)e->nh, off = (uint32_t)body;
    e->b[0] = BLOB_MAGIC;
    e->b[1] = BLOB_VERSION;
    e->b[2] = e->nrefs ? BLOB_F_REFS : 0;
    memcpy(e->b + 4, &nobjs, 4);
    memcpy(e->b + 8, &nh, 4);
    memcpy(e->b + 12, &off, 4);
    return 0;
}

static void enc_cleanup(enc *e, int ok) {
    if (!ok) {
        for (size_t i = 0; i < e->nh; i++) {
            const htype *t = type_get(e->hs[i].type);
            if (t)
                t->release(e->hs[i].obj);
        }
        free(e->b);
        memset(e->out, 0, sizeof *e->out);
    } else if (e->b) {
        if (e->cap > 256 && e->cap - e->n > e->cap / 4) { /* give back big slack; usually in place */
            unsigned char *nb = realloc(e->b, e->n);
            if (nb)
                e->b = nb;
        }
        e->out->u.p = e->b;
        e->out->len = (uint32_t)e->n;
        e->out->tag = WEFT_CODEC_TAG_BLOB;
        e->out->flags = WEFT_VAL_HEAP;
    }
    pm_free(&e->map);
    free(e->hs);
}

/* Pushes the value at stack index idx, or nil for 0. */
static void push_opt(lua_State *L, int idx) {
    if (idx)
        lua_pushvalue(L, idx);
    else
        lua_pushnil(L);
}

/* Stack index idx as an absolute one (pseudo-indices and 0 unchanged). */
static int abs_index(lua_State *L, int idx) {
    return idx < 0 && idx > LUA_REGISTRYINDEX ? lua_gettop(L) + idx + 1 : idx;
}

int weft_codec_encode(lua_State *L, int idx, weft_val *out, char *err, size_t errlen) {
    return weft_codec_encode_named(L, idx, NULL, out, err, errlen);
}

/* Each thread keeps one encoder state for its next encode (an encode that
 * runs while another is under way on the same thread, e.g. from a
 * finalizer, gets one of its own); freed when the thread ends. */
static pthread_key_t g_enc_key;
static pthread_once_t g_enc_once = PTHREAD_ONCE_INIT;

static void enc_key_init(void) {
    if (pthread_key_create(&g_enc_key, free) != 0)
        abort();
}

static enc *enc_take(void) {
    pthread_once(&g_enc_once, enc_key_init);
    enc *e = pthread_getspecific(g_enc_key);
    if (!e)
        return malloc(sizeof *e);
    pthread_setspecific(g_enc_key, NULL);
    return e;
}

static void enc_give(enc *e) {
    if (pthread_getspecific(g_enc_key) || pthread_setspecific(g_enc_key, e) != 0)
        free(e);
}

int weft_codec_encode_named(lua_State *L, int idx, const weft_codec_opts *opts, weft_val *out, char *err,
                            size_t errlen) {
    memset(out, 0, sizeof *out);
    if (err && errlen)
        err[0] = 0;
    switch (lua_type(L, idx)) {
    case LUA_TNONE:
    case LUA_TNIL:
        set_err(err, errlen, "send of nil value");
        return -1;
    case LUA_TBOOLEAN:
        out->u.i = lua_toboolean(L, idx) ? 1 : 0;
        out->len = 1;
        out->tag = WEFT_TAG_BOOL;
        return 0;
    case LUA_TNUMBER:
        *out = weft_val_num(lua_tonumber(L, idx));
        return 0;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        if (len > BLOB_MAX) {
            set_err(err, errlen, "cannot copy string of %zu bytes (the limit is 4 GiB - 1)", len);
            return -1;
        }
        void *dst = weft_val_alloc(out, (uint32_t)len, WEFT_TAG_RAW);
        if (!dst) {
            memset(out, 0, sizeof *out);
            set_err(err, errlen, "cannot copy string: out of memory");
            return -1;
        }
        memcpy(dst, s, len);
        return 0;
    }
    default:
        break;
    }
    idx = abs_index(L, idx);
    int names = opts ? abs_index(L, opts->names) : 0, labels = opts ? abs_index(L, opts->labels) : 0,
        funcs = opts ? abs_index(L, opts->funcs) : 0;
    if (!lua_checkstack(L, 8)) {
        set_err(err, errlen, "cannot copy value: Lua stack overflow");
        return -1;
    }
    enc *e = enc_take(); /* ~6 KiB: off small goroutine stacks, reused */
    if (!e) {
        set_err(err, errlen, "cannot copy value: out of memory");
        return -1;
    }
    memset(e, 0, offsetof(enc, map));
    pm_init(&e->map);
    e->L = L;
    e->out = out;
    e->err = err;
    e->errlen = errlen;
    push_cached(L, &k_encfn, enc_protected);
    lua_pushlightuserdata(L, e);
    lua_pushvalue(L, idx);
    push_opt(L, names);
    push_opt(L, labels);
    push_opt(L, funcs);
    int st = lua_pcall(L, 5, 0, 0);
    int ok = st == 0 && !e->failed;
    if (st != 0) {
        const char *msg = lua_tostring(L, -1);
        set_err(err, errlen, "cannot copy value: %s", msg ? msg : "error");
        lua_pop(L, 1);
    }
    enc_cleanup(e, ok);
    enc_give(e);
    return ok ? 0 : -1;
}

/* ---- blob parsing shared by decode and val_free --------------------------- */

typedef struct blob {
    const unsigned char *b;
    size_t len;
    uint32_t nobjs, nh, off;
    int refs; /* BLOB_F_REFS: objects must be kept for references */
} blob;

static const char *blob_parse(const weft_val *v, blob *o) {
    const unsigned char *b = weft_val_data(v);
    size_t len = v->len;
    if (!(v->flags & WEFT_VAL_HEAP) && len > sizeof v->u)
        return "inline value longer than 8 bytes";
    if (!b || len < HDR_SIZE)
        return "truncated header";
    if (b[0] != BLOB_MAGIC || b[1] != BLOB_VERSION || (b[2] & ~BLOB_F_REFS) || b[3])
        return "bad header";
    memcpy(&o->nobjs, b + 4, 4);
    memcpy(&o->nh, b + 8, 4);
    memcpy(&o->off, b + 12, 4);
    if (o->off < HDR_SIZE || o->off > len || (uint64_t)(len - o->off) != (uint64_t)o->nh * HENT_SIZE)
        return "bad handle table";
    if (o->nobjs > o->off - HDR_SIZE)
        return "bad object count";
    o->b = b;
    o->len = len;
    o->refs = b[2] & BLOB_F_REFS;
    return NULL;
}

/* Checks handle entry i; returns its type (and *obj) or NULL. */
static const htype *blob_handle(const blob *bl, uint32_t i, void **obj) {
    const unsigned char *q = bl->b + bl->off + (size_t)i * HENT_SIZE;
    uint32_t type, zero;
    uint64_t ptr, mac;
    memcpy(&type, q, 4);
    memcpy(&zero, q + 4, 4);
    memcpy(&ptr, q + 8, 8);
    memcpy(&mac, q + 16, 8);
    const htype *t = type_get(type);
    if (!t || zero || !ptr || mac != handle_mac(type, ptr))
        return NULL;
    *obj = (void *)(uintptr_t)ptr;
    return t;
}

void weft_codec_val_free(weft_val *v) {
    if (!v)
        return;
    blob bl;
    if (v->tag == WEFT_CODEC_TAG_BLOB && (v->flags & WEFT_VAL_HEAP) && v->u.p && !blob_parse(v, &bl)) {
        for (uint32_t i = 0; i < bl.nh; i++) {
            void *obj;
            const htype *t = blob_handle(&bl, i, &obj);
            if (t)
                t->release(obj);
        }
    }
    weft_val_free(v);
}

/* ---- decoder -------------------------------------------------------------- */

/* Stack slots of the protected decoder frame. */
enum { DS_CTX = 1, DS_RESOLVER, DS_ENV, DS_REFS, DS_HDEC, DS_LATER, DS_NAMED };

typedef struct dec {
    lua_State *L;
    const weft_val *v;
    blob bl;
    const unsigned char *p, *end;
    uint32_t nobjs;
    int nlater; /* deferred tables, in DS_LATER[1..nlater] */
    int env;    /* DS_ENV is the environment of decoded functions */
    int depth;
    int failed;
    char *err;
    size_t errlen;
    _Alignas(16) unsigned char scratch[SCRATCH];
} dec;

NOINLINE static int corrupt(dec *d, const char *fmt, ...) {
    if (d->err && d->errlen) {
        char tmp[200];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(tmp, sizeof tmp, fmt, ap);
        va_end(ap);
        size_t at = d->p ? (size_t)(d->p - d->bl.b) : 0;
        snprintf(d->err, d->errlen, "cannot decode value: %s (at byte %zu)", tmp, at);
    }
    d->failed = 1;
    return -1;
}

static int rd_varint(dec *d, uint64_t *x) {
    uint64_t r = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (d->p >= d->end)
            return corrupt(d, "truncated");
        unsigned c = *d->p++;
        r |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *x = r;
            return 0;
        }
    }
    return corrupt(d, "bad varint");
}
/* A varint that counts items each taking at least `unit` of the bytes left. */
static int rd_count(dec *d, uint64_t *x, size_t unit) {
    if (rd_varint(d, x))
        return -1;
    if (*x > (uint64_t)(d->end - d->p) / unit)
        return corrupt(d, "count %llu exceeds the data", (unsigned long long)*x);
    return 0;
}

static int dec_value(dec *d);

static int dec_register(dec *d) {
    if (d->nobjs >= d->bl.nobjs)
        return corrupt(d, "more objects than declared");
    d->nobjs++;
    if (!d->bl.refs)
        return 0;
    lua_pushvalue(d->L, -1);
    lua_rawseti(d->L, DS_REFS, (int)d->nobjs);
    return 0;
}

static int dec_enter(dec *d) {
    if (d->depth >= WEFT_CODEC_MAX_DEPTH)
        return corrupt(d, "nested more than %d levels deep", WEFT_CODEC_MAX_DEPTH);
    if (!lua_checkstack(d->L, 8))
        return corrupt(d, "Lua stack overflow");
    d->depth++;
    return 0;
}

/* Reads a table's contents; creates it (t == 0) or fills the table at t. */
static int dec_table(dec *d, int with_mt, int t) {
    lua_State *L = d->L;
    uint64_t narr, nhash;
    if (rd_count(d, &narr, 1) || rd_count(d, &nhash, 2))
        return -1;
    if (narr > 0x7ffffff0 || nhash > 0x7ffffff0)
        return corrupt(d, "table too large");
    if (dec_enter(d))
        return -1;
    if (!t) {
        lua_createtable(L, (int)narr, (int)nhash);
        t = lua_gettop(L);
        if (dec_register(d))
            return -1;
    }
    for (uint64_t i = 1; i <= narr; i++) {
        if (dec_value(d))
            return -1;
        if (lua_isnil(L, -1))
            lua_pop(L, 1);
        else
            lua_rawseti(L, t, (int)i);
    }
    for (uint64_t i = 0; i < nhash; i++) {
        if (dec_value(d))
            return -1;
        int kt = lua_type(L, -1);
        if (kt == LUA_TNIL || (kt == LUA_TNUMBER && lua_tonumber(L, -1) != lua_tonumber(L, -1)))
            return corrupt(d, "nil or NaN table key");
        if (dec_value(d))
            return -1;
        lua_rawset(L, t);
    }
    if (with_mt) {
        if (dec_value(d))
            return -1;
        if (!lua_istable(L, -1))
            return corrupt(d, "metatable is not a table");
        lua_setmetatable(L, t);
    }
    d->depth--;
    return 0;
}


static int dec_function(dec *d) {
    lua_State *L = d->L;
    uint32_t len;
    uint64_t h, nups;
    if ((size_t)(d->end - d->p) < 12)
        return corrupt(d, "truncated");
    memcpy(&len, d->p, 4);
    memcpy(&h, d->p + 4, 8);
    d->p += 12;
    if (len > (size_t)(d->end - d->p))
        return corrupt(d, "truncated function");
    const unsigned char *bc = d->p;
    if (h != khash(bc, len, 0x66756e63ull))
        return corrupt(d, "function bytecode fails its check");
    d->p += len;
    if (dec_enter(d))
        return -1;
    if (luaL_loadbufferx(L, (const char *)bc, len, "=(weft)", "b") != 0) {
        const char *msg = lua_tostring(L, -1);
        return corrupt(d, "bad function bytecode: %s", msg ? msg : "?");
    }
    int f = lua_gettop(L);
    fix_templates(L, f, h);
    if (d->env) {
        lua_pushvalue(L, DS_ENV);
        lua_setfenv(L, f);
    }
    if (dec_register(d))
        return -1;
    int have = lua_nups(L, f);
    if (rd_varint(d, &nups))
        return -1;
    if (nups != (uint64_t)have)
        return corrupt(d, "function has %d upvalues, not %llu", have, (unsigned long long)nups);
    for (int i = 1; i <= have; i++) {
        if (d->p < d->end && *d->p == T_UPJOIN) {
            uint64_t obj, up;
            d->p++;
            if (rd_varint(d, &obj) || rd_varint(d, &up))
                return -1;
            if (obj >= d->nobjs || !d->bl.refs)
                return corrupt(d, "bad shared upvalue");
            lua_rawgeti(L, DS_REFS, (int)obj + 1);
            if (!lua_isfunction(L, -1) || lua_iscfunction(L, -1) || up < 1 ||
                up > (uint64_t)lua_nups(L, -1))
                return corrupt(d, "bad shared upvalue");
            lua_upvaluejoin(L, f, i, -1, (int)up);
            lua_pop(L, 1);
            continue;
        }
        if (dec_value(d))
            return -1;
        if (!lua_setupvalue(L, f, i))
            return corrupt(d, "bad upvalue");
    }
    d->depth--;
    return 0;
}

/* Calls helper.dec(name, n, src, size); pushes the cdata. */
NOINLINE static int dec_cdata_call(dec *d, const char *name, size_t namelen, double n, const unsigned char *src,
                          size_t size) {
    lua_State *L = d->L;
    if (lua_isnil(L, DS_HDEC)) {
        push_helper(L);
        if (lua_istable(L, -1)) {
            lua_getfield(L, -1, "dec");
            lua_replace(L, DS_HDEC);
            lua_pop(L, 1);
        } else {
            lua_pop(L, 1);
            lua_pushboolean(L, 0);
            lua_replace(L, DS_HDEC);
        }
    }
    if (!lua_isfunction(L, DS_HDEC))
        return corrupt(d, "cdata needs the ffi library, which is not available");
    if (size <= SCRATCH) { /* aligned for scalar loads */
        memcpy(d->scratch, src, size);
        src = d->scratch;
    }
    lua_pushvalue(L, DS_HDEC);
    lua_pushlstring(L, name, namelen);
    lua_pushnumber(L, n);
    lua_pushlightuserdata(L, (void *)src);
    lua_pushnumber(L, (double)size);
    lua_call(L, 4, 2);
    if (lua_isnil(L, -2)) {
        const char *why = lua_tostring(L, -1);
        int r = corrupt(d, "cannot re-create cdata<%.*s>: %s", (int)(namelen > 80 ? 80 : namelen), name,
                        why ? why : "?");
        return r;
    }
    lua_pop(L, 1);
    return 0;
}

NOINLINE static int dec_cdata(dec *d) {
    uint64_t namelen, n1, size;
    if (rd_count(d, &namelen, 1))
        return -1;
    if (namelen == 0 || namelen > MAX_NAME)
        return corrupt(d, "bad cdata type name");
    const char *name = (const char *)d->p;
    d->p += namelen;
    if (rd_varint(d, &n1) || rd_count(d, &size, 1))
        return -1;
    if (n1 > 0xffffffffull)
        return corrupt(d, "bad cdata element count");
    const unsigned char *src = d->p;
    d->p += size;
    if (dec_cdata_call(d, name, namelen, (double)n1 - 1, src, size))
        return -1;
    return dec_register(d);
}

NOINLINE static int dec_handle(dec *d) {
    lua_State *L = d->L;
    uint64_t i;
    void *obj;
    if (rd_varint(d, &i))
        return -1;
    if (i >= d->bl.nh)
        return corrupt(d, "bad handle index");
    const htype *t = blob_handle(&d->bl, (uint32_t)i, &obj);
    if (!t)
        return corrupt(d, "bad handle");
    int top = lua_gettop(L);
    void *ref = t->retain(obj);
    if (t->push(L, ref) != 1 || lua_gettop(L) != top + 1) {
        lua_settop(L, top);
        t->release(ref);
        return corrupt(d, "cannot re-create a %s", t->name);
    }
    return dec_register(d);
}

/* Fails with "cannot resolve '<path>': <why>" (not a corruption). */
NOINLINE static int resolve_fail(dec *d, const char *path, size_t len, const char *why) {
    set_err(d->err, d->errlen, "cannot resolve '%.*s': %s", (int)(len > 120 ? 120 : len), path, why);
    d->failed = 1;
    return -1;
}

/* A value sent by name: resolver(path), once per distinct path. */
NOINLINE static int dec_named(dec *d) {
    lua_State *L = d->L;
    uint64_t len;
    if (rd_count(d, &len, 1))
        return -1;
    const char *path = (const char *)d->p;
    d->p += len;
    if (lua_isnil(L, DS_RESOLVER))
        return resolve_fail(d, path, (size_t)len, "no resolver was given");
    if (!lua_checkstack(L, 4))
        return corrupt(d, "Lua stack overflow");
    if (lua_isnil(L, DS_NAMED)) {
        lua_newtable(L);
        lua_replace(L, DS_NAMED);
    }
    lua_pushlstring(L, path, (size_t)len);
    lua_pushvalue(L, -1);
    lua_rawget(L, DS_NAMED);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushvalue(L, DS_RESOLVER);
        lua_pushvalue(L, -2);
        if (lua_pcall(L, 1, 1, 0) != 0) {
            const char *msg = lua_tostring(L, -1);
            return resolve_fail(d, path, (size_t)len, msg ? msg : "(error object is not a string)");
        }
        if (lua_isnil(L, -1))
            return resolve_fail(d, path, (size_t)len, "the resolver returned nil");
        lua_pushvalue(L, -2);
        lua_pushvalue(L, -2);
        lua_rawset(L, DS_NAMED);
    }
    lua_remove(L, -2);
    return dec_register(d);
}

NOINLINE static int dec_later(dec *d) {
    lua_State *L = d->L;
    if (d->nlater >= 0x7ffffff0)
        return corrupt(d, "too many tables");
    if (lua_isnil(L, DS_LATER)) {
        lua_newtable(L);
        lua_replace(L, DS_LATER);
    }
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawseti(L, DS_LATER, ++d->nlater);
    return dec_register(d);
}

static int dec_value(dec *d) {
    lua_State *L = d->L;
    if (d->p >= d->end)
        return corrupt(d, "truncated");
    unsigned t = *d->p++;
    if (t >= T_SHORTSTR) {
        size_t len = t - T_SHORTSTR;
        if (len > (size_t)(d->end - d->p))
            return corrupt(d, "truncated string");
        lua_pushlstring(L, (const char *)d->p, len);
        d->p += len;
        return 0;
    }
    if (t >= T_SMALLINT) {
        lua_pushnumber(L, (double)(t - T_SMALLINT));
        return 0;
    }
    switch (t) {
    case T_NIL:
        lua_pushnil(L);
        return 0;
    case T_FALSE:
    case T_TRUE:
        lua_pushboolean(L, t == T_TRUE);
        return 0;
    case T_INT: {
        uint64_t z;
        if (rd_varint(d, &z))
            return -1;
        lua_pushnumber(L, (z & 1) ? -(double)(z >> 1) - 1 : (double)(z >> 1));
        return 0;
    }
    case T_NUM: {
        double x;
        if ((size_t)(d->end - d->p) < 8)
            return corrupt(d, "truncated");
        memcpy(&x, d->p, 8);
        d->p += 8;
        lua_pushnumber(L, x);
        return 0;
    }
    case T_STR: {
        uint64_t len;
        if (rd_count(d, &len, 1))
            return -1;
        lua_pushlstring(L, (const char *)d->p, (size_t)len);
        d->p += len;
        return 0;
    }
    case T_TABLE:
    case T_TABLE_MT:
        return dec_table(d, t == T_TABLE_MT, 0);
    case T_LATER:
        return dec_later(d);
    case T_REF: {
        uint64_t id;
        if (rd_varint(d, &id))
            return -1;
        if (id >= d->nobjs || !d->bl.refs)
            return corrupt(d, "bad reference");
        lua_rawgeti(L, DS_REFS, (int)id + 1);
        return 0;
    }
    case T_FUNC:
        return dec_function(d);
    case T_CDATA:
        return dec_cdata(d);
    case T_I64:
    case T_U64: {
        if ((size_t)(d->end - d->p) < 8)
            return corrupt(d, "truncated");
        const unsigned char *src = d->p;
        d->p += 8;
        if (dec_cdata_call(d, t == T_I64 ? "int64_t" : "uint64_t", t == T_I64 ? 7 : 8, -1, src, 8))
            return -1;
        return dec_register(d);
    }
    case T_HANDLE:
        return dec_handle(d);
    case T_NAMED:
        return dec_named(d);
    default:
        d->p--;
        return corrupt(d, "bad type byte 0x%02x", t);
    }
}

static int dec_protected(lua_State *L) {
    dec *d = lua_touserdata(L, DS_CTX);
    lua_settop(L, DS_ENV); /* DS_RESOLVER, DS_ENV: as given, or nil */
    d->env = lua_istable(L, DS_ENV);
    const weft_val *v = d->v;
    if (v->tag == WEFT_TAG_INT64 || v->tag == WEFT_TAG_UINT64) {
        lua_pushnil(L); /* DS_REFS (unused) */
        lua_pushnil(L); /* DS_HDEC */
        int i64 = v->tag == WEFT_TAG_INT64;
        if (dec_cdata_call(d, i64 ? "int64_t" : "uint64_t", i64 ? 7 : 8, -1, v->u.b, 8))
            return 0;
        return 1;
    }
    const char *why = blob_parse(v, &d->bl);
    if (why) {
        corrupt(d, "%s", why);
        return 0;
    }
    if (d->bl.refs)
        lua_createtable(L, (int)(d->bl.nobjs < 1024 ? d->bl.nobjs : 1024), 0); /* DS_REFS */
    else
        lua_pushnil(L);
    lua_pushnil(L); /* DS_HDEC */
    lua_pushnil(L); /* DS_LATER */
    lua_pushnil(L); /* DS_NAMED: path -> resolved value */
    d->p = d->bl.b + HDR_SIZE;
    d->end = d->bl.b + d->bl.off;
    if (dec_value(d))
        return 0;
    int root = lua_gettop(L);
    for (int i = 1; i <= d->nlater; i++) { /* contents of the deferred tables */
        lua_rawgeti(L, DS_LATER, i);
        d->depth = 0;
        if (d->p >= d->end || (*d->p != T_TABLE && *d->p != T_TABLE_MT)) {
            corrupt(d, "missing deferred table");
            return 0;
        }
        int with_mt = *d->p++ == T_TABLE_MT;
        if (dec_table(d, with_mt, root + 1))
            return 0;
        lua_settop(L, root);
    }
    if (d->p != d->end) {
        corrupt(d, "trailing bytes");
        return 0;
    }
    return 1;
}

/* A value whose bytes a Lua module decodes: require(module).decode(bytes)
 * with the bytes as a string (as_string), else decode(pointer, length);
 * the decoder returns the value, or raises or returns nil and a message.
 * what: the kind of data, for messages. */
static int dec_by_module(lua_State *L, const weft_val *v, const char *module, int as_string,
                         const char *what, char *err, size_t errlen) {
    const void *p = weft_val_data(v);
    if ((!(v->flags & WEFT_VAL_HEAP) && v->len > sizeof v->u) || !p) {
        set_err(err, errlen, "cannot decode value: bad %s", what);
        return -1;
    }
    int top = lua_gettop(L);
    lua_getglobal(L, "require");
    lua_pushstring(L, module);
    if (lua_pcall(L, 1, 1, 0) == 0) {
        lua_getfield(L, -1, "decode");
        if (as_string) {
            lua_pushlstring(L, p, v->len);
        } else {
            lua_pushlightuserdata(L, (void *)p);
            lua_pushnumber(L, (lua_Number)v->len);
        }
        if (lua_pcall(L, as_string ? 1 : 2, 2, 0) == 0 && !lua_isnil(L, -2)) {
            lua_pop(L, 1);
            lua_replace(L, top + 1);
            lua_settop(L, top + 1);
            return 0;
        }
    }
    const char *msg = lua_tostring(L, -1);
    static const char prefix[] = "cannot decode value: ";
    if (msg && strncmp(msg, prefix, sizeof prefix - 1) == 0)
        set_err(err, errlen, "%s", msg);
    else
        set_err(err, errlen, "%s%s", prefix, msg ? msg : what);
    lua_settop(L, top);
    return -1;
}

int weft_codec_decode(lua_State *L, const weft_val *v, char *err, size_t errlen) {
    return weft_codec_decode_named(L, v, 0, 0, err, errlen);
}

int weft_codec_decode_named(lua_State *L, const weft_val *v, int resolver, int env, char *err, size_t errlen) {
    if (err && errlen)
        err[0] = 0;
    resolver = abs_index(L, resolver);
    env = abs_index(L, env);
    if (env && !lua_istable(L, env)) {
        set_err(err, errlen, "cannot decode value: the environment is not a table");
        return -1;
    }
    if (!lua_checkstack(L, 8)) {
        set_err(err, errlen, "cannot decode value: Lua stack overflow");
        return -1;
    }
    switch (v->tag) {
    case WEFT_TAG_BOOL:
        lua_pushboolean(L, v->u.i != 0);
        return 0;
    case WEFT_TAG_NUMBER:
        lua_pushnumber(L, v->u.d);
        return 0;
    case WEFT_TAG_RAW: {
        const void *p = weft_val_data(v);
        if ((!(v->flags & WEFT_VAL_HEAP) && v->len > sizeof v->u) || (!p && v->len)) {
            set_err(err, errlen, "cannot decode value: bad string");
            return -1;
        }
        lua_pushlstring(L, p ? (const char *)p : "", v->len);
        return 0;
    }
    case WEFT_TAG_PTR:
        lua_pushlightuserdata(L, v->u.p);
        return 0;
    case WEFT_CODEC_TAG_PLAIN:
        return dec_by_module(L, v, "string.buffer", 1, "plain data", err, errlen);
    case WEFT_CODEC_TAG_SHAPED:
        return dec_by_module(L, v, "weft.shape", 0, "shaped table", err, errlen);
    case WEFT_TAG_INT64:
    case WEFT_TAG_UINT64:
    case WEFT_CODEC_TAG_BLOB:
        break;
    default:
        set_err(err, errlen, "cannot decode value with tag %u", (unsigned)v->tag);
        return -1;
    }
    dec d;
    memset(&d, 0, sizeof d);
    d.L = L;
    d.v = v;
    d.err = err;
    d.errlen = errlen;
    push_cached(L, &k_decfn, dec_protected);
    lua_pushlightuserdata(L, &d);
    push_opt(L, resolver);
    push_opt(L, env);
    int st = lua_pcall(L, 3, 1, 0);
    if (st != 0) {
        const char *msg = lua_tostring(L, -1);
        set_err(err, errlen, "cannot decode value: %s", msg ? msg : "error");
        lua_pop(L, 1);
        return -1;
    }
    if (d.failed) {
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}
