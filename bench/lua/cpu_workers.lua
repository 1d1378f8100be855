-- CPU-bound isolated workers: weft.procs() goroutines started with
-- weft.spawn share UNITS job units (default 64) and send their results on a
-- channel; ns per job unit. Twin: bench/go/cpu_workers.
--
-- A job unit j runs the Lehmer generator x <- x * 48271 mod (2^31 - 1) for
-- STEPS steps from x = j: pure arithmetic, no allocation, the same in Lua
-- (doubles, every product below 2^47 is exact) and in Go (int64). Worker w
-- of n takes the units w, w + n, w + 2n, ... and sends {units, sum} once.
--
-- Verification, cheap and independent of the loop: after STEPS steps unit j
-- ends at j * 48271^STEPS mod (2^31 - 1), computed by square-and-multiply.
-- Run with the same UNITS under WEFT_PROCS=1 and 2, the ratio of the two
-- numbers is the speedup of spawned workers (the cpu_scaling row).
package.path = "bench/lua/?.lua;" .. package.path
local weft, B = require "weft", require "common"
B.name = "lua_cpu_workers"
local units = B.iters(64)

local STEPS = 1000000
local A, M = 48271, 2147483647

-- The job unit: only locals, so a spawned copy needs nothing but itself.
local function job(x, steps)
  for _ = 1, steps do x = x * 48271 % 2147483647 end
  return x
end

local function worker(w, n, total, steps, out)
  local sum, count = 0, 0
  for j = w, total, n do
    sum = sum + job(j, steps)
    count = count + 1
  end
  out:send({ units = count, sum = sum })
end

-- a * b mod M without losing bits: b is split in 16-bit halves so that no
-- product exceeds 2^47.
local function mulmod(a, b)
  local hi, lo = math.floor(b / 65536), b % 65536
  return ((a * hi % M) * 65536 + a * lo) % M
end

local function powmod(base, e)
  local r = 1
  while e > 0 do
    if e % 2 == 1 then r = mulmod(r, base) end
    base = mulmod(base, base)
    e = math.floor(e / 2)
  end
  return r
end

local n = weft.procs()
local results = weft.chan(n)
local t0 = weft.now()
for w = 1, n do weft.spawn(worker, w, n, units, STEPS, results) end
local sum, count = 0, 0
for _ = 1, n do
  local r = results:recv()
  sum, count = sum + r.sum, count + r.units
end
local t1 = weft.now()

local jump, want = powmod(A, STEPS), 0
for j = 1, units do want = want + mulmod(j, jump) end
if count ~= units then B.fail(("%d job units done, want %d"):format(count, units)) end
if sum ~= want then B.fail(("checksum %d, want %d"):format(sum, want)) end
B.print((t1 - t0) * 1e9 / units)
