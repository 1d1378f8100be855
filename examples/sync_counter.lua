-- weft.sync across isolates: four isolates on every processor add to one
-- counter under one mutex, a wait group tells main when they are done, and
-- a semaphore lets at most two of them into a "slow" section at a time.
-- Run: build/weft examples/sync_counter.lua
local weft = require "weft"
local sync = require "weft.sync"

local m, wg, slots = sync.mutex(), sync.waitgroup(), sync.semaphore(2)
local total, inside, most = weft.atomic(0), weft.atomic(0), weft.atomic(0)

for _ = 1, 4 do
  wg:add(1)
  weft.spawn(function() -- m, wg, slots and the atomics are shared, not copied
    for i = 1, 10000 do
      m:lock()
      total:store(total:load() + 1) -- a plain read-modify-write, safe under m
      m:unlock()
      if i % 1000 == 0 then
        slots:acquire()
        local now = inside:add(1)
        local seen = most:load()
        while now > seen and not most:cas(seen, now) do seen = most:load() end
        weft.yield()
        inside:add(-1)
        slots:release()
      end
    end
    wg:done()
  end)
end
wg:wait()
print(("total %d (want 40000), at most %d in the slow section"):format(total:load(), most:load()))
