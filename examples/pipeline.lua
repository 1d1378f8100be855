-- examples/pipeline.lua — a small real pipeline on weft:
-- a generator feeds words to several workers, which count letters;
-- a collector merges the counts, a ticker prints progress, and a select
-- with a timeout bounds the whole run.
--
--   build/weft examples/pipeline.lua [words] [workers]
local weft = require "weft"

local nwords = tonumber(arg[1]) or 200000
local nworkers = tonumber(arg[2]) or 4

local syllables = { "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "we", "zu" }

local function generate(out)
  local seed = 12345
  for _ = 1, nwords do
    local parts = {}
    for k = 1, 1 + math.floor(seed / 65536) % 4 do
      seed = (seed * 1103515245 + 12345) % 2147483648
      parts[k] = syllables[1 + math.floor(seed / 65536) % #syllables] -- high bits
    end
    out:send(table.concat(parts))
  end
  out:close()
end

local function work(input, results)
  local counts, words = {}, 0
  for word in input:range() do
    for ch in word:gmatch(".") do counts[ch] = (counts[ch] or 0) + 1 end
    words = words + 1
    if words % 1000 == 0 then
      results:send({ words = 1000, counts = counts }) -- tables are copied
      counts = {}
    end
  end
  results:send({ words = words % 1000, counts = counts })
end

local started = weft.now()
local words_done, letters = 0, {}

local words = weft.chan(256)
local results = weft.chan(64)
weft.go(generate, words)
local finished = weft.chan()
for _ = 1, nworkers do
  weft.go(function() work(words, results); finished:send(true) end)
end
weft.go(function()
  for _ = 1, nworkers do finished:recv() end
  results:close()
end)

local progress = weft.ticker(0.1)
local deadline = weft.after(30)
local done = false
while not done do
  weft.select(
    weft.recv(results, function(r, ok)
      if not ok then done = true return end
      words_done = words_done + r.words
      for ch, n in pairs(r.counts) do letters[ch] = (letters[ch] or 0) + n end
    end),
    weft.recv(progress.c, function()
      io.stderr:write(("  ... %d words\n"):format(words_done))
    end),
    weft.recv(deadline, function()
      print("timed out: partial result")
      done = true
    end))
end
progress:stop()

local keys = {}
for ch in pairs(letters) do keys[#keys + 1] = ch end
table.sort(keys)
local line = {}
for _, ch in ipairs(keys) do line[#line + 1] = ch .. "=" .. letters[ch] end
print(("%d words by %d workers on %d processors in %.2f s"):format(
  words_done, nworkers, weft.procs(), weft.now() - started))
print("letters: " .. table.concat(line, " "))
