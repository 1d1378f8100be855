-- examples/lines.lua — a line-oriented pipeline reading stdin without
-- blocking its processor: a reader goroutine sends lines into a channel,
-- workers in isolates (weft.spawn, on every processor) count the words of
-- each line, and a collector totals them while a ticker reports progress.
--
--   cat big.log | build/weft examples/lines.lua [workers]
--   build/weft examples/lines.lua < README.md
local weft = require "weft"

local nworkers = tonumber(arg[1]) or weft.procs()
local lines = weft.chan(256)   -- line number and text
local counts = weft.chan(256)  -- line number and word count

-- Stage 1: stdin -> lines. weft.io.lines parks this goroutine while the
-- pipe is empty; the processor runs the other stages meanwhile.
weft.go(function()
  local n = 0
  for line in weft.io.lines(0) do
    n = n + 1
    lines:send({ n, line })
  end
  lines:close()
end)

-- Stage 2: words per line, in parallel.
local finished = weft.chan(nworkers)
for _ = 1, nworkers do
  weft.spawn(function()
    for item in lines:range() do
      local words = 0
      for _ in item[2]:gmatch("%S+") do words = words + 1 end
      counts:send({ item[1], words })
    end
    finished:send(true)
  end)
end
weft.go(function()
  for _ = 1, nworkers do finished:recv() end
  counts:close()
end)

-- Stage 3: totals, with progress on stderr every half second.
local ticker = weft.ticker(0.5)
local nlines, nwords, longest, longest_at = 0, 0, -1, 0
while true do
  local done = weft.select(
    weft.recv(counts, function(item, ok)
      if not ok then return true end
      nlines, nwords = nlines + 1, nwords + item[2]
      if item[2] > longest then longest, longest_at = item[2], item[1] end
    end),
    weft.recv(ticker.c, function()
      io.stderr:write(("... %d lines so far\n"):format(nlines))
    end))
  if done then break end
end
ticker:stop()
print(("%d lines, %d words; the most words (%d) on line %d"):format(
  nlines, nwords, math.max(longest, 0), longest_at))
