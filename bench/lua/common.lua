-- bench/lua/common.lua — shared by the Lua benchmarks: iteration count from
-- arg[1], failing without printing a number, and the result line.
local M = {}

function M.iters(default)
  local n = tonumber(arg and arg[1]) or default
  if n < 1 or n % 1 ~= 0 then M.fail("bad iteration count '" .. tostring(arg[1]) .. "'") end
  return n
end

function M.fail(msg)
  io.stderr:write(M.name .. ": FAILED: " .. msg .. "\n")
  os.exit(1)
end

function M.print(ns)
  io.write(("%s %.1f\n"):format(M.name, ns))
end

return M
