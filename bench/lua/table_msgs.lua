-- Small tables between isolated goroutines: a producer started with
-- weft.spawn sends N messages (default 1,000,000)
--   {id = i, name = "item" .. i % 100, pos = {x, y, z}, ok = true}
-- over a channel of 1024 to a spawned consumer, which checks every field
-- and the order and reports to the main goroutine; ns per message (1e9 / ns
-- is messages per second). Every message is deep-copied by the channel.
-- Twin: bench/go/table_msgs (a struct over a chan of 1024).
package.path = "bench/lua/?.lua;" .. package.path
local weft, B = require "weft", require "common"
B.name = "lua_table_msgs"
local n = B.iters(1000000)
local CAPACITY = 1024

-- "item0" .. "item99", made once on each side rather than per message.
local function item_names()
  local names = {}
  for k = 0, 99 do names[k] = "item" .. k end
  return names
end

local function produce(out, count)
  local names = item_names()
  for i = 1, count do
    out:send({ id = i, name = names[i % 100], pos = { i + 0.5, i * 0.25, -i }, ok = true })
  end
  out:close()
end

-- Sends {count, sum} on done, or a string saying what was wrong: the
-- consumer may run in another VM, so the main goroutine does the failing.
local function consume(input, done)
  local names = item_names()
  local count, sum = 0, 0
  for m in input:range() do
    local i, pos = m.id, m.pos
    if i ~= count + 1 then
      return done:send(("message %d has id %s"):format(count + 1, tostring(i)))
    end
    if m.name ~= names[i % 100] or m.ok ~= true or type(pos) ~= "table"
        or pos[1] ~= i + 0.5 or pos[2] ~= i * 0.25 or pos[3] ~= -i then
      return done:send(("message %d has wrong fields"):format(i))
    end
    count, sum = i, sum + i
  end
  done:send({ count = count, sum = sum })
end

local msgs, done = weft.chan(CAPACITY), weft.chan(1)
local t0 = weft.now()
weft.spawn(consume, msgs, done)
weft.spawn(produce, msgs, n)
local r = done:recv()
local t1 = weft.now()
if type(r) == "string" then B.fail(r) end
if r.count ~= n or r.sum ~= n * (n + 1) / 2 then
  B.fail(("%d messages summing to %d, want %d summing to %d"):format(r.count, r.sum, n, n * (n + 1) / 2))
end
B.print((t1 - t0) * 1e9 / n)
