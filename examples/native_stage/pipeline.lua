-- examples/native_stage/pipeline.lua — Lua goroutines feed strings to a C
-- stage (checksum.c, a native goroutine) and check what comes back.
--
--   build/weft examples/native_stage/pipeline.lua [count]
local ffi = require "ffi"
local weft = require "weft"

ffi.cdef "void checksum_stage(void *arg);"
local here = (arg and arg[0] or ""):match("^(.*)/examples/native_stage/") or "."
local stage = ffi.load(os.getenv("WEFT_NATIVE_STAGE") or (here .. "/build/examples/native_stage.so"))

local function adler32(s)
  local a, b = 1, 0
  for i = 1, #s do
    a = (a + s:byte(i)) % 65521
    b = (b + a) % 65521
  end
  return b * 65536 + a
end

local count = tonumber(arg and arg[1]) or 10000
local input, output = weft.chan(64), weft.chan(64)
weft.go_native(stage.checksum_stage, input, output)

local sent = {}
weft.go(function()
  for i = 1, count do
    local s = ("record %d: %s"):format(i, ("x"):rep(i % 50))
    sent[i] = s
    input:send(s)
  end
  input:close()
end)

local n, bad = 0, 0
for sum in output:range() do
  n = n + 1
  if sum ~= adler32(sent[n]) then bad = bad + 1 end
end
print(("%d checksums from the C stage, %d wrong"):format(n, bad))
if n ~= count or bad ~= 0 then os.exit(1) end
