-- Lua twin of bench/go/ctx_cancel: derive a cancelable context from a
-- long-lived parent and cancel it; ns per with_cancel + cancel.
package.path = "bench/lua/?.lua;" .. package.path
local weft, B = require "weft", require "common"
local context = require "weft.context"
B.name = "lua_ctx_cancel"
local n = B.iters(1000000)
local parent, cancel_parent = context.with_cancel(context.background())
local canceled = 0
local t0 = weft.now()
for _ = 1, n do
  local ctx, cancel = context.with_cancel(parent)
  cancel()
  if ctx:err() == "context canceled" then canceled = canceled + 1 end
end
local t1 = weft.now()
if canceled ~= n or parent:err() ~= nil or context.children(parent) ~= 0 then
  B.fail(("%d of %d children canceled, parent err %s"):format(canceled, n, tostring(parent:err())))
end
cancel_parent()
B.print((t1 - t0) * 1e9 / n)
