-- weft.transfer: moves a function and its arguments into another LuaJIT VM,
-- for weft.spawn.
--
-- pack(fn, ...) encodes, with the codec of weft_core, one table
--   { fn, n, arg1, ..., argn, <name> = <value of each captured global> }
-- where:
--   * fn travels as bytecode plus its upvalues (Lua functions it reaches are
--     copied the same way);
--   * the user globals it reads are captured: the global names read by its
--     bytecode (GGET), through the prototypes nested in it and through the
--     Lua functions it reaches (upvalues, captured globals, and any function
--     the copy takes along, in tables or arguments), whose value in fn's
--     environment is not nil and is not the standard global of that name;
--   * values reachable from loaded modules (module values, and the fields of
--     module tables: string.format, lpeg.match, io.stdout, ...) and the
--     standard globals (pairs, print, ...) travel by name and are looked up
--     again on the other side (`require`); the globals table (_G) travels as
--     "_G" and becomes the isolate's environment there.
-- unpack(packed, env) rebuilds that in the destination VM: every Lua function
-- gets env as its environment, the captured globals are set in env, and it
-- returns fn and the arguments. An isolate's env is a table whose __index is
-- the VM's base globals: reads fall through, writes stay in the isolate.
--
-- What cannot be copied fails at pack, naming the path:
--   cannot copy upvalue 'pattern' (userdata) of function at x.lua:12
--   cannot copy global 'co' (thread) of function at x.lua:3
--   cannot copy argument 2 (userdata)
--   cannot copy userdata at field 'sock' in global 'cfg' of function at x.lua:3
--
-- Also: globals(fn) lists the global names fn reads (as pack finds them);
-- names() is the map value -> path of what travels by name (cached, rebuilt
-- when package.loaded changes).
--
-- Limits: globals reached other than by name (_G.x, rawget(_G, "x"),
-- getfenv().x, load of a string) are not seen; every copied function gets
-- env on the other side, whatever its environment was; a value reachable
-- from a module (a module's own state table, say) is that module's value in
-- the destination VM, not a copy of the sender's.

local core = require "weft_core"
local jutil = require "jit.util"
local bit = require "bit"

local funcinfo, funcbc, funck = jutil.funcinfo, jutil.funcbc, jutil.funck
local band, rshift = bit.band, bit.rshift
local getupvalue = debug.getupvalue
local next, type, select, error, pcall, require = next, type, select, error, pcall, require
local rawequal, rawget, rawset, getfenv = rawequal, rawget, rawset, getfenv
local find, match, sub, byte = string.find, string.match, string.sub, string.byte
local unpack = unpack or table.unpack
local core_pack, core_unpack, pack_free = core.pack, core.unpack, core.pack_free

local G = _G
local loaded = package.loaded

local transfer = {}

-- ---- the base globals -----------------------------------------------------------

-- The standard globals, with their values when this module was first loaded:
-- names that a fresh VM has too. A global whose value is still this one is
-- read from the destination's own base globals, not copied. (A fixed list
-- rather than all of _G, so that user globals set before weft was required
-- are still captured.)
local STANDARD = {
  "_G", "_VERSION", "assert", "collectgarbage", "dofile", "error", "gcinfo", "getfenv",
  "getmetatable", "ipairs", "load", "loadfile", "loadstring", "module", "newproxy", "next",
  "pairs", "pcall", "print", "rawequal", "rawget", "rawlen", "rawset", "require", "select",
  "setfenv", "setmetatable", "tonumber", "tostring", "type", "unpack", "xpcall",
  "bit", "coroutine", "debug", "io", "jit", "math", "os", "package", "string", "table",
}
local base = {}
for i = 1, #STANDARD do
  local name = STANDARD[i]
  base[name] = rawget(G, name)
end

-- ---- global names read by functions -------------------------------------------------

-- The opcode of GGET in this LuaJIT: the first instruction of this probe.
local GGET = band(funcbc(function() return weft_transfer_probe end, 1), 0xff)

-- chunkname as debug.getinfo's short_src has it (LuaJIT, LUA_IDSIZE 60).
local function short_src(source)
  local c = sub(source, 1, 1)
  if c == "=" then return sub(source, 2, 60) end
  if c == "@" then
    if #source - 1 >= 60 then return "..." .. sub(source, -56) end
    return sub(source, 2)
  end
  local len = 0
  while len < 48 and (byte(source, len + 1) or 0) >= 32 do len = len + 1 end
  if len < #source then
    return '[string "' .. sub(source, 1, len > 45 and 45 or len) .. '..."]'
  end
  return '[string "' .. source .. '"]'
end

-- "x.lua:12", or "x.lua (main chunk)", as the codec names functions.
local function place(info)
  local src = short_src(info.source)
  if info.linedefined == 0 then return src .. " (main chunk)" end
  return src .. ":" .. info.linedefined
end

-- Adds to out (name -> place) the globals read by prototype pt and by the
-- prototypes nested in it, each with the place of the first reader.
local function proto_reads(pt, info, out)
  local where
  for pc = 1, info.bytecodes - 1 do
    local ins = funcbc(pt, pc)
    if band(ins, 0xff) == GGET then
      local name = funck(pt, -rshift(ins, 16) - 1)
      if out[name] == nil then
        where = where or place(info)
        out[name] = where
      end
    end
  end
  if info.children then
    for i = -1, -info.gcconsts, -1 do
      local k = funck(pt, i)
      if type(k) == "proto" then proto_reads(k, funcinfo(k), out) end
    end
  end
end

-- Per function: name -> place of the globals its bytecode reads, or false
-- for a C function.
local scanned = setmetatable({}, { __mode = "k" })
local function reads_of(f)
  local r = scanned[f]
  if r == nil then
    local info = funcinfo(f)
    r = false
    if info.linedefined then
      r = {}
      proto_reads(f, info, r)
    end
    scanned[f] = r
  end
  return r
end

local function index(t, k) return t[k] end

-- The value of global name in env, as the function would read it
-- (metamethods included: environments such as busted's resolve globals
-- with __index functions), or nil where reading it raises (strict mode).
local function global_value(env, name)
  local ok, v = pcall(index, env, name)
  if ok then return v end
  return nil
end

-- Whether global name, whose value is v, travels with the function.
local function is_captured(name, v, env)
  if v == nil then return false end
  if name == "_G" then return rawequal(v, env) or rawequal(v, G) end
  return not rawequal(v, base[name])
end

-- A scan: the environment, the names map, root (the table being packed: its
-- string keys are the captured globals), reads (name -> place of every
-- global read), visited functions, and the count of captured globals.
local function collect(st, f)
  if st.visited[f] or st.names[f] then return end -- by-name functions keep their globals
  st.visited[f] = true
  local r = reads_of(f)
  if not r then return end
  local reads, env = st.reads, st.env
  for name, where in next, r do
    if reads[name] == nil then
      reads[name] = where
      local v = global_value(env, name)
      if is_captured(name, v, env) then
        st.root[name] = v
        st.ncaptured = st.ncaptured + 1
        if type(v) == "function" then collect(st, v) end
      end
    end
  end
  for i = 1, 255 do
    local name, v = getupvalue(f, i)
    if name == nil then break end
    if type(v) == "function" then collect(st, v) end
  end
end

-- ---- the names map ---------------------------------------------------------------

local OBJECT = { table = true, ["function"] = true, userdata = true, cdata = true, thread = true }

-- Keeps for v the best of the paths offered: module values (rank 1) before
-- standard globals (2) before module fields (3); then the shorter path;
-- then the first in byte order, so that the choice does not depend on the
-- order of traversal.
local function offer(best, rank, v, path, r)
  if not OBJECT[type(v)] then return end
  local p = best[v]
  if p == nil or r < rank[v] or (r == rank[v] and (#path < #p or (#path == #p and path < p))) then
    best[v], rank[v] = path, r
  end
end

local IDENT = "^[%a_][%w_]*$"

-- value -> path for everything one level deep in package.loaded, and the
-- globals table as "_G". Returns the map, a copy of package.loaded, its
-- number of entries, and whether the map is complete (no module was being
-- loaded: its entry is a placeholder until its chunk returns).
local function build_names()
  local best, rank, seen, count, complete = {}, {}, {}, 0, true
  for modname, m in next, loaded do
    seen[modname] = m
    count = count + 1
    if type(modname) == "string" then
      if type(m) == "userdata" then complete = false end
      offer(best, rank, m, modname, 1)
      if rawequal(m, G) then
        for name, v in next, base do offer(best, rank, v, name, 2) end
      elseif type(m) == "table" then
        for k, v in next, m do
          if type(k) == "string" and find(k, IDENT) then
            offer(best, rank, v, modname .. "." .. k, 3)
          end
        end
      end
    end
  end
  best[G] = "_G"
  return best, seen, count, complete
end

local names_map, names_seen, names_count, names_complete = nil, {}, -1, false

-- The names map, rebuilt when package.loaded gained, lost or changed
-- entries (module tables gaining fields later go unnoticed).
local function names()
  local same, n = names_complete, 0
  for modname, m in next, loaded do
    n = n + 1
    if not rawequal(names_seen[modname], m) then same = false end
  end
  if not same or n ~= names_count then
    names_map, names_seen, names_count, names_complete = build_names()
  end
  return names_map
end

-- ---- pack ------------------------------------------------------------------------------

-- Encodes root again with labels, to name what failed the way spawn's caller
-- sees it: fn, "argument i", "global 'x' of function at f.lua:3".
local function explain(st, n, err)
  local labels = { [1] = "" }
  for i = 1, n do labels[i + 2] = "argument " .. i end
  for name, where in next, st.reads do
    if st.root[name] ~= nil then
      labels[name] = { "global '" .. name .. "'", "of function at " .. where }
    end
  end
  local packed, msg = core_pack(st.names, st.root, labels)
  if packed then
    pack_free(packed)
    return err
  end
  return msg
end

-- Packs fn and its arguments into a packed value (a userdata freed by its
-- __gc unless unpacked). Raises at level 3 when something cannot be copied:
-- the caller of the function that called pack, i.e. spawn's caller (spawn
-- must call pack as a plain call, not a tail call).
function transfer.pack(fn, ...)
  if type(fn) ~= "function" then
    error("fn must be a function, got " .. type(fn), 3)
  end
  local map = names()
  local env = getfenv(fn)
  local n = select("#", ...)
  local st = {
    env = env, names = map, root = { fn, n, ... }, reads = {}, visited = {}, ncaptured = 0,
  }
  -- an isolate's environment travels as "_G" too
  local own_env = map[env] == nil
  if own_env then map[env] = "_G" end
  collect(st, fn)
  local funcs, packed, err = {}, nil, nil
  while true do
    packed, err = core_pack(map, st.root, nil, funcs)
    if not packed then break end
    -- the globals of functions the copy took along that the scan did not
    -- reach (in tables, in arguments); new captures need another pass
    local before = st.ncaptured
    for i = #funcs, 1, -1 do
      collect(st, funcs[i])
      funcs[i] = nil
    end
    if st.ncaptured == before then break end
    pack_free(packed)
  end
  if not packed then err = explain(st, n, err) end
  if own_env then map[env] = nil end
  if not packed then error(err, 3) end
  return packed
end

-- ---- unpack ----------------------------------------------------------------------------

local unpack_env -- the env of the unpack in progress, for "_G"

-- path -> value in this VM: "_G" is the isolate's env; a standard global;
-- a loaded module; a field of a module (required if need be); a module.
local function resolve(path)
  if path == "_G" then return unpack_env end
  local v = base[path]
  if v ~= nil then return v end
  v = loaded[path]
  if v ~= nil then return v end
  local mod, field = match(path, "^(.+)%.([^.]+)$")
  if mod then
    local ok, m = pcall(require, mod)
    if ok then
      if type(m) == "table" then
        v = m[field]
        if v ~= nil then return v end
      end
      return require(path)
    end
    local ok2, whole = pcall(require, path) -- perhaps a module named so
    if ok2 then return whole end
    error(m, 0)
  end
  return require(path)
end

local function finish(env, root)
  for k, v in next, root do
    if type(k) == "string" then rawset(env, k, v) end
  end
  return root[1], unpack(root, 3, root[2] + 2)
end

-- Unpacks (and consumes) what pack made, into the environment table env:
-- returns fn and its arguments.
function transfer.unpack(packed, env)
  if type(env) ~= "table" then
    error("env must be a table, got " .. type(env), 2)
  end
  local saved = unpack_env
  unpack_env = env
  local ok, root = pcall(core_unpack, packed, resolve, env)
  unpack_env = saved
  if not ok then error(root, 0) end -- the codec's message says it all
  return finish(env, root)
end

-- The global names fn reads, through the prototypes nested in it and the Lua
-- functions it reaches through upvalues and through the globals it captures
-- (as pack sees them): { name = true, ... }.
function transfer.globals(fn)
  if type(fn) ~= "function" then
    error("fn must be a function, got " .. type(fn), 2)
  end
  local st = {
    env = getfenv(fn), names = names(), root = {}, reads = {}, visited = {}, ncaptured = 0,
  }
  collect(st, fn)
  local set = {}
  for name in next, st.reads do set[name] = true end
  return set
end

transfer.names = names

return transfer
