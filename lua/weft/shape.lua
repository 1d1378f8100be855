-- weft.shape: small plain tables sent as a shape id and their bare values.
--
-- Messages between goroutines are mostly small records built by the same
-- constructor again and again ({id = i, name = s, pos = {x, y, z}}). Their
-- keys and value types (the shape) repeat; only the values change. The sender
-- first tries the encoder compiled for the shape it last sent (straight-line
-- code: see "compiled encoders" below); if the table differs, it walks it
-- once with `next`, writing each value into a scratch buffer and following a
-- trie of (value type, key) steps to the shape's id. The receiver runs a
-- constructor compiled once per shape and VM, which builds the table from a
-- template (LuaJIT duplicates a constructor's template, key slots included)
-- and fills it from the bytes. Both sides are plain Lua that the JIT
-- compiles.
--
-- Ids are process-wide (bindings/shape.c): the first sender of a shape
-- registers its descriptor (the keys and value types, in string.buffer
-- format); a VM that meets an unknown id fetches it.
--
-- Layout of a value: a table is its shape id (uint32) followed by its
-- values in walk order: a number as a double, a string as a uint32 length
-- and its bytes, a boolean as one byte, a table as a nested table. Native
-- byte order; only this process reads it.
--
-- What takes this path: tables with no metatable, at most MAX_TABLES tables
-- (none reached twice), MAX_DEPTH deep, MAX_ENTRIES entries each, keys that
-- are strings or 32-bit integers, values that are numbers, strings, booleans
-- or such tables, MAX_BYTES in all. encode() says false for anything else,
-- and the caller uses a general format.
--
-- The scratch buffer, the trie and the walk state are this VM's. encode()
-- allocates nothing on its fast path; when it meets a new shape it makes
-- trie nodes and compiles code, and a finalizer run then must not call
-- encode() (init.lua gives finalizers a path of their own). decode() saves and restores its
-- cursor, so a finalizer may decode inside a decode.

local ffi = require "ffi"
local sbuf = require "string.buffer"
local tabkeys_slots = require("weft_core").tabkeys_slots

ffi.cdef [[
int weft_shape_intern(const char *desc, size_t len);
const char *weft_shape_desc(int id, size_t *len);
int weft_tabkeys_count(const void *slots, int n);
]]

local C, ffi_cast, ffi_copy, ffi_string = ffi.C, ffi.cast, ffi.copy, ffi.string
local type, next, getmetatable, floor = type, next, getmetatable, math.floor
local format, concat = string.format, table.concat

local MAX_TABLES, MAX_DEPTH, MAX_ENTRIES, MAX_BYTES = 8, 4, 64, 16384
-- The trie of this VM is dropped and started again when it has MAX_NODES
-- nodes (keys that are data fill it with one-off paths): shape ids are the
-- process's and stay; encoders are compiled again as tables need them.
local MAX_NODES = 1024
-- A shape gets an id (and compiled code on both sides) only once MIN_HITS
-- tables have ended their walk at its node: tables whose keys are data
-- (a key per user, say) would otherwise register and compile a shape each.
-- And after MAX_MISSES walks in a row that found no shape, the next
-- SKIP_AFTER_MISSES tables go straight to the other formats.
local MIN_HITS, MAX_MISSES, SKIP_AFTER_MISSES = 4, 64, 1024
local VT_NUM, VT_STR, VT_BOOL, VT_TAB = 1, 2, 3, 4
-- A trie node: [VT_*] = { [key] = child } (made on first use), and:
local ID, PARENT, KEY, VT = 5, 6, 7, 8 -- id (-1: cannot have one), the step that led here
local ENC = 9 -- the compiled encoder of tables whose walk ends here (false: none)
local HITS = 10 -- walks that ended here before the node had an id

local u8p, u32p, dblp = ffi.typeof("uint8_t *"), ffi.typeof("uint32_t *"), ffi.typeof("double *")
local uptr = ffi.typeof("uintptr_t")
local buf = ffi.new("uint8_t[?]", MAX_BYTES)
-- Typed reads and writes at a byte offset go through the buffer's address as
-- a number: ffi_cast(u32p, addr + o)[0], never ffi_cast(u32p, ptr + o)[0].
-- When the JIT knows ptr as a constant (the receive buffer of init.lua is
-- one), it records ptr + o as an add of a 64-bit pointer constant, and its
-- indexing of the cast pointer (crec_reassoc_ofs in lj_crecord.c) folds that
-- constant into the offset as if it were a 32-bit integer: the load then
-- reads address o. Seen as a crash decoding small shaped tables on Debian's
-- LuaJIT 2.1 (GC64); the same code in upstream LuaJIT's v2.1 branch. Byte
-- reads (ptr[o]) and pointers passed to ffi.copy/ffi.string are not affected.
local bufa = tonumber(ffi_cast(uptr, buf))
-- A trie node reached from parent by a value of type vt under key k.
local function trie_node(parent, k, vt)
  return { nil, nil, nil, nil, nil, parent, k, vt, nil, 0 }
end
local root = trie_node(nil, nil, nil)
local nnodes, full = 0, false
local seen, nseen = {}, 0

-- ---- sending -------------------------------------------------------------------

local function valid_key(k)
  local tk = type(k)
  if tk == "string" then return true end
  return tk == "number" and k == floor(k) and k >= -2147483648 and k <= 2147483647
end

-- The node reached from node by a value of type vt under key k, made now.
local function new_node(node, vt, k)
  if nnodes >= MAX_NODES then
    full = true
    return nil
  end
  if not valid_key(k) then return nil end
  local kids = node[vt]
  if not kids then
    kids = {}
    node[vt] = kids
  end
  local child = trie_node(node, k, vt)
  kids[k] = child
  nnodes = nnodes + 1
  return child
end

-- Registers the shape ending at node: its (key, value type) steps, root
-- first, in string.buffer format.
local function register(node)
  local steps, n = {}, 0
  local x = node
  while x[PARENT] do
    n = n + 2
    x = x[PARENT]
  end
  local i = n
  x = node
  while x[PARENT] do
    steps[i - 1], steps[i] = x[KEY], x[VT]
    i = i - 2
    x = x[PARENT]
  end
  local desc = sbuf.encode(steps)
  local id = C.weft_shape_intern(desc, #desc)
  node[ID] = id
  return id
end

-- Writes table t at offset o of buf; the offset after it and the trie node
-- of t's shape, or nil.
local function walk(t, o, depth)
  if getmetatable(t) ~= nil then return nil end
  local start = o
  o = o + 4
  if o > MAX_BYTES then return nil end
  local node, n = root, 0
  -- `next` called, not a `for ... in next, t` loop: LuaJIT's compiled
  -- iterator (ITERN) can end such a loop early once it is despecialized
  -- (LuaJIT issue #827, in the 2.1 snapshots that Debian ships), and here
  -- the walk is the message. A call carries its whole state in k.
  local k, v = next(t)
  while k ~= nil do
    n = n + 1
    if n > MAX_ENTRIES then return nil end
    local tv, vt = type(v), nil
    if tv == "number" then
      if o + 8 > MAX_BYTES then return nil end
      ffi_cast(dblp, bufa + o)[0] = v
      o, vt = o + 8, VT_NUM
    elseif tv == "string" then
      local len = #v
      if o + 4 + len > MAX_BYTES then return nil end
      ffi_cast(u32p, bufa + o)[0] = len
      ffi_copy(buf + o + 4, v, len)
      o, vt = o + 4 + len, VT_STR
    elseif tv == "boolean" then
      if o + 1 > MAX_BYTES then return nil end
      buf[o] = v and 1 or 0
      o, vt = o + 1, VT_BOOL
    elseif tv == "table" then
      if depth >= MAX_DEPTH or nseen >= MAX_TABLES then return nil end
      for i = 1, nseen do
        if seen[i] == v then return nil end
      end
      nseen = nseen + 1
      seen[nseen] = v
      o = walk(v, o, depth + 1)
      if not o then return nil end
      vt = VT_TAB
    else
      return nil
    end
    local kids = node[vt]
    local child = kids and kids[k]
    if not child then
      child = new_node(node, vt, k)
      if not child then return nil end
    end
    node = child
    k, v = next(t, k)
  end
  local id = node[ID]
  if not id then
    local hits = node[HITS] + 1
    node[HITS] = hits
    if hits < MIN_HITS then return nil end
    id = register(node)
  end
  if id < 0 then return nil end
  ffi_cast(u32p, bufa + start)[0] = id
  return o, node
end

local function key_literal(k)
  if type(k) == "string" then return format("%q", k) end
  return format("%d", k)
end

-- ---- compiled encoders ----------------------------------------------------------
-- walk() is a loop, and a loop inside the sender's own loop keeps LuaJIT
-- from compiling the sender as one trace. So once a table has been walked,
-- the code that writes a table of exactly that shape (nested tables
-- included) is generated and compiled: straight-line code that reads each
-- of the shape's keys, checks its value's type and writes the value. That
-- proves the keys are there; that no other key is, it proves by counting
-- the keys of all the message's tables in one FFI call (the tables go in
-- the slots of `box`, which bindings/tabkeys.c reads: see there why). Where
-- that is not available (a LuaJIT whose table layout tabkeys.c does not
-- know), the code instead follows the keys with `next` calls,
-- checking each key in turn and that none follows. Either way it returns
-- nil at the first difference (and walk() does the work instead), so a
-- wrong guess costs time, never a wrong value.
-- The last one used is tried first: a stream of one shape never walks.

local FIXED_BYTES = { 8, 4, 1, 0 } -- by value type; a string's bytes come on top
local MAX_ENCODERS = 256
local nencoders, current = 0, nil
local misses, skip = 0, 0
-- The box: its array part holds MAX_TABLES slots from 1 on and is never
-- grown (only false and tables are stored in slots 1..MAX_TABLES).
local box = { false, false, false, false, false, false, false, false }
assert(#box == MAX_TABLES)
local slots = tabkeys_slots and tabkeys_slots(box, MAX_TABLES)
-- A cdata pointer: the JIT does not compile a light userdata passed to C.
slots = slots and ffi_cast("const void *", slots)
local nkeys = slots and C.weft_tabkeys_count

-- The shape tree of t, which walk() has just accepted (so every trie node
-- on its path exists and has an id): { id, {key, vt, subtree or false}... }.
-- nil if t is no longer what walk() saw (a finalizer may change it).
local function tree(t, depth)
  if depth > MAX_DEPTH then return nil end
  local node, d = root, { false }
  local k, v = next(t)
  while k ~= nil do
    local tv = type(v)
    local vt = tv == "number" and VT_NUM or tv == "string" and VT_STR or
      tv == "boolean" and VT_BOOL or tv == "table" and VT_TAB
    local kids = vt and node[vt]
    node = kids and kids[k]
    if not node then return nil end
    local sub = vt == VT_TAB and tree(v, depth + 1)
    if vt == VT_TAB and not sub then return nil end
    d[#d + 1] = { k, vt, sub }
    k, v = next(t, k)
  end
  d[1] = node[ID]
  if not d[1] or d[1] < 0 then return nil end
  return d
end

local function fixed_size(d)
  local n = 4
  for i = 2, #d do
    local step = d[i]
    n = n + FIXED_BYTES[step[2]] + (step[3] and fixed_size(step[3]) or 0)
  end
  return n
end

-- Lua source of the code that writes value v (of type vt) at o. A nested
-- table is a new local t<n>, written by table_code.
local function value_code(emit, vt)
  if vt == VT_NUM then
    emit("if type(v) ~= 'number' then return nil end")
    emit("ffi_cast(dblp, bufa + o)[0] = v")
    emit("o = o + 8")
  elseif vt == VT_STR then
    emit("if type(v) ~= 'string' then return nil end")
    emit("len = #v")
    emit("if o + 4 + len + FIXED > MAX_BYTES then return nil end")
    emit("ffi_cast(u32p, bufa + o)[0] = len")
    emit("ffi_copy(buf + o + 4, v, len)")
    emit("o = o + 4 + len")
  elseif vt == VT_BOOL then
    emit("if type(v) ~= 'boolean' then return nil end")
    emit("buf[o] = v and 1 or 0")
    emit("o = o + 1")
  else
    emit("if type(v) ~= 'table' then return nil end")
  end
end

-- Lua source of the encoder of shape tree d.
local function encoder_source(d)
  local out, ntab, nkey = {}, 0, 0
  local function emit(fmt, ...) out[#out + 1] = format(fmt, ...) end
  local function table_code(d)
    local j = ntab
    ntab = ntab + 1
    emit("if getmetatable(t%d) ~= nil then return nil end", j)
    for i = 0, j - 1 do emit("if t%d == t%d then return nil end", j, i) end
    emit("local s%d = o", j)
    emit("o = o + 4")
    if not nkeys then
      emit("local k%d", j)
      emit("k%d, v = next(t%d)", j, j)
    end
    for i = 2, #d do
      local key, vt, sub = d[i][1], d[i][2], d[i][3]
      nkey = nkey + 1
      if nkeys then
        emit("v = t%d[%s]", j, key_literal(key))
      else
        if i > 2 then emit("k%d, v = next(t%d, k%d)", j, j, j) end
        emit("if k%d ~= %s then return nil end", j, key_literal(key))
      end
      value_code(emit, vt)
      if vt == VT_TAB then
        emit("local t%d = v", ntab)
        table_code(sub)
      end
    end
    if not nkeys then
      emit("if next(t%d, k%d) ~= nil then return nil end", j, j)
      if #d == 1 then out[#out] = format("if next(t%d) ~= nil then return nil end", j) end
    end
    emit("ffi_cast(u32p, bufa + s%d)[0] = %d", j, d[1])
  end
  emit("local next, type, getmetatable, ffi_cast, ffi_copy, buf, bufa, dblp, u32p, MAX_BYTES, nkeys, box, slots = ...")
  emit("local FIXED = %d", fixed_size(d))
  emit("return function(t0)")
  -- Locals per table, not per value: a function may have 200 at most.
  emit("local o, v, len = 0")
  emit("if FIXED > MAX_BYTES then return nil end")
  table_code(d)
  if nkeys then
    -- Each table in a slot of its own, the count checked before the slots
    -- are cleared (the check, a guard, keeps the JIT from dropping a store);
    -- cleared on both ways out, so the box keeps no message alive.
    local bs, ts, fs = {}, {}, {}
    for j = 0, ntab - 1 do
      bs[#bs + 1], ts[#ts + 1], fs[#fs + 1] = format("box[%d]", j + 1), "t" .. j, "false"
    end
    emit("%s = %s", concat(bs, ", "), concat(ts, ", "))
    emit("local n = nkeys(slots, %d)", ntab)
    local clear = format("%s = %s", concat(bs, ", "), concat(fs, ", "))
    emit("if n ~= %d then %s return nil end", nkey, clear)
    emit(clear)
  end
  emit("return o")
  emit("end")
  return concat(out, "\n")
end

-- The compiled encoder for t, which walk() has just accepted and whose walk
-- ended at trie node `node`: the one made for the first table that ended
-- there (nested tables included; if t's nested shapes differ, that encoder
-- refuses t and walk() does the work), or nil once MAX_ENCODERS exist or
-- when it cannot be made (false is kept).
local function encoder_for(t, node)
  local e = node[ENC]
  if e == nil then
    if nencoders >= MAX_ENCODERS then
      node[ENC] = false
      return nil
    end
    local d = tree(t, 1)
    if not d then return nil end -- t changed since its walk: another time
    local chunk = loadstring(encoder_source(d), "=weft.shape")
    e = chunk and chunk(next, type, getmetatable, ffi_cast, ffi_copy, buf, bufa, dblp, u32p,
      MAX_BYTES, nkeys, box, slots) or false
    nencoders = nencoders + 1
    node[ENC] = e
  end
  return e or nil
end

-- Writes t into sv (a weft_lua_val[1]) with tag `tag` if it has a shape:
-- true; false (sv untouched) if not, or if out of memory.
local function encode(t, sv, tag)
  local e = current
  local o = e and e(t)
  if not o then
    if skip > 0 then
      skip = skip - 1
      return false
    end
    nseen = 1
    seen[1] = t
    local node
    o, node = walk(t, 0, 1)
    for i = 1, nseen do seen[i] = nil end
    if not o then
      if full then
        root, nnodes, full = trie_node(nil, nil, nil), 0, false
        current, nencoders = nil, 0
      end
      misses = misses + 1
      if misses >= MAX_MISSES then misses, skip = 0, SKIP_AFTER_MISSES end
      return false
    end
    misses = 0
    current = encoder_for(t, node)
  end
  return C.weft_lua_val_bytes(sv, buf, o, tag) == 0
end

-- ---- receiving -----------------------------------------------------------------

-- srca: the address of the bytes being decoded, as a number (see bufa; and
-- a cdata kept in an upvalue would be allocated at every decode).
local srca, pos, lim, bad = 0, 0, 0, false
local decoders = {}
local compile

local function num()
  local v = ffi_cast(dblp, srca + pos)[0]
  pos = pos + 8
  return v
end

local function str()
  local len = ffi_cast(u32p, srca + pos)[0]
  if pos + 4 + len > lim then
    bad, pos = true, lim
    return ""
  end
  local s = ffi_string(ffi_cast(u8p, srca + pos + 4), len)
  pos = pos + 4 + len
  return s
end

local function bool()
  local b = ffi_cast(u8p, srca + pos)[0]
  pos = pos + 1
  return b ~= 0
end

local function tab()
  if pos + 4 > lim then
    bad = true
    return false
  end
  local id = ffi_cast(u32p, srca + pos)[0]
  pos = pos + 4
  local d = decoders[id] or compile(id)
  if not d then
    bad, pos = true, lim
    return false
  end
  return d()
end

local READERS = { "num()", "str()", "bool()", "tab()" }
local FIXED = { 8, 4, 1, 4 } -- bytes each value type takes at least

-- The constructor of shape id for this VM, or nil for an unknown shape.
function compile(id)
  local lenp = ffi.new("size_t[1]")
  local p = C.weft_shape_desc(id, lenp)
  if p == nil then return nil end
  local steps = sbuf.decode(ffi_string(p, lenp[0]))
  local slots, sets, fixed = {}, {}, 0
  for i = 2, #steps, 2 do fixed = fixed + FIXED[steps[i]] end
  -- Checked at the start: the bytes that the values take at least. The
  -- readers of numbers and booleans check nothing, so after each value of
  -- variable size (a string, a table) what the rest takes is checked again.
  -- Keys 1, 2, ... met in that order go in the template's list part (the
  -- table then has an array part, as the sender's {x, y, z} has: one
  -- block, read by index without hashing); other keys as [key] = false.
  local rest, narr = fixed, 0
  for i = 1, #steps, 2 do
    local key, vt = key_literal(steps[i]), steps[i + 1]
    if steps[i] == narr + 1 then
      narr = narr + 1
      slots[#slots + 1] = "false"
    else
      slots[#slots + 1] = "[" .. key .. "] = false"
    end
    sets[#sets + 1] = "  t[" .. key .. "] = " .. READERS[vt] .. "\n"
    rest = rest - FIXED[vt]
    if (vt == VT_STR or vt == VT_TAB) and rest > 0 then
      sets[#sets + 1] = "  if fail(" .. rest .. ") then return false end\n"
    end
  end
  local code = "local num, str, bool, tab, fail = ...\n" ..
    "return function()\n" ..
    "  if fail(" .. fixed .. ") then return false end\n" ..
    "  local t = { " .. concat(slots, ", ") .. " }\n" ..
    concat(sets) ..
    "  return t\n" ..
    "end\n"
  local chunk = assert(loadstring(code, "=weft.shape"))
  local d = chunk(num, str, bool, tab, function(n)
    if pos + n > lim then
      bad, pos = true, lim
      return true
    end
    return false
  end)
  decoders[id] = d
  return d
end

-- The table in p[0..len) (a cdata pointer, or a lightuserdata from C), or
-- nil and an error message.
local function decode(p, len)
  local a0, p0, l0, b0 = srca, pos, lim, bad
  srca, pos, lim, bad = tonumber(ffi_cast(uptr, p)), 0, len, false
  local v = tab()
  local ok = not bad and pos == lim
  srca, pos, lim, bad = a0, p0, l0, b0
  if ok then return v end
  return nil, "cannot decode value: bad shaped table"
end

return { encode = encode, decode = decode }
