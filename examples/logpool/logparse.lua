-- examples/logpool/logparse.lua — access-log lines in the common log format,
-- parsed with lpeg, and their aggregates:
--
--   10.1.2.3 - alice [14/Nov/2023:22:13:20 +0000] "GET /index.html HTTP/1.1" 200 5120
--
-- (bytes may be "-", read as 0). The patterns are built once, when the
-- module is loaded: once per LuaJIT VM, so a worker started with weft.spawn
-- requires this module inside its function rather than capturing it.
local lpeg = require "lpeg"
local P, R, S, C, Cc, Cp = lpeg.P, lpeg.R, lpeg.S, lpeg.C, lpeg.Cc, lpeg.Cp
local match, find = lpeg.match, string.find
local sort = table.sort

local M = {}

local digit, sp = R "09", P " "
local octet = digit * digit ^ -2
local ip = octet * ("." * octet) ^ 3
local name = (1 - S " \r\n") ^ 1 -- ident and user, "-" when unknown
local two = digit * digit
local timestamp = two * "/" * R "AZ" * R "az" * R "az" * "/" * digit * digit * two
    * (":" * two) ^ 3 * sp * S "+-" * two * two
local method = R "AZ" ^ 1
local path = (1 - S " \"\r\n") ^ 1
local protocol = "HTTP/" * digit * "." * digit
local status = (digit * digit * digit) / tonumber
local bytes = digit ^ 1 / tonumber + "-" * Cc(0)

-- One record; c(pattern) is either lpeg.C (capture the field) or skip.
-- path, status and bytes are always captured.
local function record(c)
  return c(ip) * sp * name * sp * name * sp * "[" * c(timestamp) * "]" * sp
      * '"' * c(method) * sp * C(path) * sp * protocol * '"' * sp * status * sp * bytes
end
local function skip(patt) return patt end

local cr = P "\r" ^ -1
-- A whole line: ip, time, method, path, status, bytes.
local line = record(C) * cr * -1
-- A line inside a batch, and the position after its newline.
local in_batch = record(skip) * cr * (P "\n" + -1) * Cp()

-- Parses one line (without its newline). Returns ip, time, method, path,
-- status (number), bytes (number); nil for a malformed line.
function M.parse(s)
  return match(line, s)
end

function M.new_stats()
  return { lines = 0, errors = 0, bytes = 0, status = {}, paths = {} }
end

-- Adds a batch, lines separated by "\n", to stats: lines, errors (the
-- malformed lines), bytes, status[code] and paths[path] counts.
function M.add(stats, batch)
  local lines, errors, total = stats.lines, stats.errors, stats.bytes
  local status, paths = stats.status, stats.paths
  local pos, len = 1, #batch
  while pos <= len do
    local p, code, size, after = match(in_batch, batch, pos)
    lines = lines + 1
    if p then
      paths[p] = (paths[p] or 0) + 1
      status[code] = (status[code] or 0) + 1
      total = total + size
      pos = after
    else
      errors = errors + 1
      pos = (find(batch, "\n", pos, true) or len) + 1
    end
  end
  stats.lines, stats.errors, stats.bytes = lines, errors, total
  return stats
end

local function add_counts(into, from)
  for k, n in pairs(from) do into[k] = (into[k] or 0) + n end
end

-- Adds the aggregate from into into.
function M.merge(into, from)
  into.lines = into.lines + from.lines
  into.errors = into.errors + from.errors
  into.bytes = into.bytes + from.bytes
  add_counts(into.status, from.status)
  add_counts(into.paths, from.paths)
  return into
end

local function by_count(a, b)
  if a[2] ~= b[2] then return a[2] > b[2] end
  return a[1] < b[1]
end

-- The n most frequent keys of counts as {key, count} pairs, most frequent
-- first, ties in key order.
function M.top(counts, n)
  local all = {}
  for k, c in pairs(counts) do all[#all + 1] = { k, c } end
  sort(all, by_count)
  for i = #all, n + 1, -1 do all[i] = nil end
  return all
end

return M
